"""Built-in nodes. Importing this package registers them.

- :mod:`zerohop.nodes.testing`: small deterministic nodes for tests, examples, soak
  and chaos runs (echo, text transforms, CPU burners, crash injection, fan-in/out).
- Speech (models from the ``speech`` extra, loaded in ``initialize`` only):
  :mod:`~zerohop.nodes.vad` (``SileroVADNode``), :mod:`~zerohop.nodes.whisper`
  (``WhisperSTTNode``, ``WhisperNode``), :mod:`~zerohop.nodes.moonshine`
  (``MoonshineSTTNode``), both recognizers (:mod:`~zerohop.nodes.recognizer`),
  :mod:`~zerohop.nodes.intent` (``IntentReplyNode``), :mod:`~zerohop.nodes.tts`
  (``PiperTTSNode``, ``EspeakTTSNode``); :mod:`~zerohop.nodes.llm` (``LlamaCppNode``,
  the ``llm`` extra). The utterance assembly between VAD and ASR,
  ``AudioBufferAccumulatorNode``, is a native (Rust) node: rust/nodes/accumulator.rs.

Examples
--------
What the speech nodes take and give, and the sample rate they need (a
``FastResampleNode`` before one, its target rate left out, resamples to it):

>>> from zerohop import node_class
>>> for name in ("SileroVADNode", "WhisperSTTNode", "IntentReplyNode", "PiperTTSNode"):
...     cls = node_class(name)
...     print(name, cls.accepts, cls.outputs, cls.input_rate)
SileroVADNode ('audio',) ('out',) 16000
WhisperSTTNode ('audio', 'json') ('out', 'info') 16000
IntentReplyNode ('text',) ('out', 'info') None
PiperTTSNode ('text',) ('out', 'info') None
"""

from . import intent, llm, moonshine, recognizer, testing, tts, vad, whisper

__all__ = ["intent", "llm", "moonshine", "recognizer", "testing", "tts", "vad", "whisper"]
