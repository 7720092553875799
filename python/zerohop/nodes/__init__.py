"""Built-in nodes. Importing this package registers them.

- :mod:`zerohop.nodes.testing`: small deterministic nodes for tests, examples, soak
  and chaos runs (echo, text transforms, CPU burners, crash injection, fan-in/out).
- Speech (models from the ``speech`` extra, loaded in ``initialize`` only):
  :mod:`~zerohop.nodes.vad` (``SileroVADNode``), :mod:`~zerohop.nodes.whisper`
  (``WhisperSTTNode``, ``WhisperNode``), :mod:`~zerohop.nodes.intent`
  (``IntentReplyNode``), :mod:`~zerohop.nodes.tts` (``PiperTTSNode``,
  ``EspeakTTSNode``). The utterance assembly between VAD and ASR,
  ``AudioBufferAccumulatorNode``, is a native (Rust) node: rust/nodes/accumulator.rs.
"""

from . import intent, testing, tts, vad, whisper

__all__ = ["intent", "testing", "tts", "vad", "whisper"]
