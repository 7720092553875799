"""``SileroVADNode``: voice activity detection with Silero VAD v6 on onnxruntime.

The ONNX file comes from the ``silero-vad`` wheel, found without importing the package
(its ``__init__`` imports torch, which the speech extra does not install). The model
runs on 512-sample windows at 16 kHz (256 at 8 kHz: ``sampling_rate = 8000``), with 64
(32) samples of context and its recurrent state carried from window to window — what
``silero_vad.OnnxWrapper`` does.

Speech begins at a window whose speech probability is ≥ ``threshold`` and goes on while
it stays ≥ ``neg_threshold`` (default ``threshold - 0.15``): hysteresis, so that a
word's quieter middle does not end it. Speech longer than ``max_speech_duration_s`` is
split: ``speech_end`` there, and a new ``speech_start`` at once.

Params as remotemedia-sdk's SileroVAD documents them; also spelt as manifests in the
wild do: ``sample_rate`` for ``sampling_rate``, ``pre_speech_pad_ms`` for
``speech_pad_ms`` (the padding is before speech: the audio a ``speech_start`` carries
begins that long before it).

What it emits on ``out``, in order (one channel, so order is kept downstream):

- ``Json({"event": "speech_start", "start_s": ...})`` when speech begins,
- the audio of the speech as float32 windows, starting ``speech_pad_ms`` before it
  (rounded up to whole windows),
- ``Json({"event": "speech_end", "start_s", "end_s", "speech_ms"})`` after
  ``min_silence_duration_ms`` of silence, or ``{"event": "speech_discard", ...}``
  instead when the speech was shorter than ``min_speech_duration_ms``;
- with ``pause_events``, also ``Json({"event": "speech_pause", "end_s"})`` the moment
  silence begins within speech (the end of speech it would be, if the silence lasts),
  and ``Json({"event": "speech_resume"})`` if speech comes back before
  ``min_silence_duration_ms``: the accumulator emits the utterance so far as a tentative
  one, which a Whisper node transcribes while the VAD still waits for the silence.

With ``barge_in``, speech beginning also cancels what is in flight downstream
(``ctx.cancel()``, see :mod:`zerohop.cancel`) before ``speech_start`` goes out: the
reply being synthesized stops, the reply audio queued for the player is dropped and the
player is told to stop, while the new utterance is handled as usual — the user talks
over the agent. A sound loud and long enough to start speech (``threshold``, one
window) is enough: raise ``threshold`` where noise would cut replies off.

``speech_end`` carries, as its frame timestamp, the time the input chunk holding the
last speech sample was sent: downstream nodes keep it, so the time from the end of
speech to any later output can be read off that output's timestamp.

Examples
--------
Params in either spelling; a resampler before the node, its target rate left out,
resamples to the node's rate (nothing is loaded until the session starts):

>>> from zerohop import Pipeline
>>> pipe = (Pipeline("listen")
...         .node("resample", "FastResampleNode")
...         .node("vad", "SileroVADNode", threshold=0.6, minSilenceDurationMs=300)
...         .connect("resample", "vad"))
>>> resample, vad = pipe.graph()["nodes"]
>>> resample["params"], vad["params"]["min_silence_duration_ms"]
({'target_rate': 16000}, 300)
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal, TypeVar

import numpy as np
from pydantic import AliasChoices, Field, ValidationInfo, field_validator

from ..data import Audio, Frame, Json
from ..node import MultiprocessNode, NodeContext
from ..registry import register_node
from .audio import mono_float32
from .model_paths import ModelPath
from .packaged import check_sha256, packaged_file, require
from .params import NodeParams

__all__ = ["SileroVADNode"]

F = TypeVar("F", bound=Frame)
RATE = 16_000
#: Per sampling rate: samples per model call, and samples of the previous window the
#: model sees (silero_vad.OnnxWrapper's numbers).
WINDOWS = {16_000: (512, 64), 8_000: (256, 32)}
WINDOW, CONTEXT = WINDOWS[RATE]


@register_node
class SileroVADNode(MultiprocessNode):
    """Silero VAD v6 (ONNX): speech start/end events and the speech audio, 16 or 8 kHz mono."""

    input_rate = RATE

    accepts = ("audio",)

    class Params(NodeParams):
        threshold: float = Field(0.5, gt=0, lt=1)
        #: Speech goes on while the probability is ≥ this; default threshold - 0.15.
        neg_threshold: float | None = Field(None, gt=0, lt=1)
        sampling_rate: Literal[16_000, 8_000] = Field(
            16_000,
            validation_alias=AliasChoices(
                "sampling_rate", "samplingRate", "sample_rate", "sampleRate"
            ),
        )
        min_speech_duration_ms: int = Field(250, ge=0)
        min_silence_duration_ms: int = Field(100, ge=0)
        #: Audio kept before speech begins (``pre_speech_pad_ms`` is the same).
        speech_pad_ms: int = Field(
            30,
            ge=0,
            validation_alias=AliasChoices(
                "speech_pad_ms", "speechPadMs", "pre_speech_pad_ms", "preSpeechPadMs"
            ),
        )
        #: Speech longer than this is split (``speech_end``, then ``speech_start``).
        max_speech_duration_s: float | None = Field(None, gt=0)
        pause_events: bool = False
        #: Cancel what is in flight downstream when speech begins (module docs).
        barge_in: bool = False
        model_path: ModelPath | None = None
        model_sha256: str | None = None

        @field_validator("neg_threshold")
        @classmethod
        def _below_threshold(cls, value: float | None, info: ValidationInfo) -> float | None:
            threshold = info.data.get("threshold")
            if value is not None and threshold is not None and value > threshold:
                raise ValueError(f"must be at most threshold ({threshold}), got {value}")
            return value

    @classmethod
    def needs_input_rate(cls, params: Any) -> int | None:
        rate = params.get("sampling_rate") if isinstance(params, dict) else None
        return int(rate) if rate else RATE

    def initialize(self, ctx: NodeContext) -> None:
        self.ctx = ctx
        ort = require("onnxruntime", self.node_type)
        ctx.progress(0.2, "locating the Silero VAD model")
        if self.params.model_path is None:
            path = packaged_file(
                "silero_vad", "data/silero_vad.onnx", self.node_type, package="silero-vad"
            )
        else:
            path = Path(self.params.model_path)
            if self.params.model_sha256 is not None:
                check_sha256(path, self.params.model_sha256, self.node_type)
        ctx.progress(0.5, f"loading {path.name}")
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1  # a 512-sample window: threads cost more than they save
        options.inter_op_num_threads = 1
        self.model = ort.InferenceSession(
            str(path), sess_options=options, providers=["CPUExecutionProvider"]
        )
        self.rate = rate = self.params.sampling_rate
        self.window, self.context_size = WINDOWS[rate]
        neg = self.params.neg_threshold
        self.neg_threshold = max(self.params.threshold - 0.15, 0.01) if neg is None else neg
        pad = self.params.speech_pad_ms * rate // 1000
        self.pad_windows = -(-pad // self.window)  # whole windows, rounded up
        self.min_silence = self.params.min_silence_duration_ms * rate // 1000
        self.min_speech = self.params.min_speech_duration_ms * rate // 1000
        longest = self.params.max_speech_duration_s
        self.max_speech = None if longest is None else max(1, round(longest * rate))
        self.reset()
        ctx.progress(1.0, "Silero VAD ready")

    def reset(self) -> None:
        self.state = np.zeros((2, 1, 128), np.float32)
        self.context = np.zeros(self.context_size, np.float32)
        self.pending = np.zeros(0, np.float32)
        self.preroll: deque[np.ndarray[Any, Any]] = deque(maxlen=self.pad_windows)
        self.sample = 0  # samples seen before the pending ones
        self.triggered = False
        self.start = 0
        self.silence_from: int | None = None
        self.silence_ts = 0

    def probability(self, window: np.ndarray[Any, Any]) -> float:
        x = np.concatenate([self.context, window])[np.newaxis, :]
        out, self.state = self.model.run(
            None, {"input": x, "state": self.state, "sr": np.array(self.rate, np.int64)}
        )
        self.context = window[-self.context_size :]
        return float(out[0, 0])

    def process(self, frame: Frame) -> Iterator[Frame]:
        samples = mono_float32(frame, self.rate, self.node_type)
        ts = frame.timestamp_ns or time.monotonic_ns()
        self.pending = np.concatenate([self.pending, samples])
        size = self.window
        while len(self.pending) >= size:
            window, self.pending = self.pending[:size], self.pending[size:]
            yield from self.step(window, ts)
            self.sample += size

    def step(self, window: np.ndarray[Any, Any], ts: int) -> Iterator[Frame]:
        p = self.probability(window)
        rate = self.rate
        if not self.triggered:
            if p < self.params.threshold:
                self.preroll.append(window)
                return
            self.triggered, self.silence_from = True, None
            self.start = self.sample - self.window * len(self.preroll)
            if self.params.barge_in:
                self.ctx.cancel()
            yield self.stamped(Json({"event": "speech_start", "start_s": self.start / rate}), ts)
            yield self.stamped(Audio(np.concatenate([*self.preroll, window]), rate), ts)
            self.preroll.clear()
            return
        yield self.stamped(Audio(window, rate), ts)
        if p >= self.neg_threshold:
            if self.silence_from is not None and self.params.pause_events:
                yield self.stamped(Json({"event": "speech_resume"}), ts)
            self.silence_from = None
        elif self.silence_from is None:
            self.silence_from, self.silence_ts = self.sample, ts
            if self.params.pause_events:
                pause = Json({"event": "speech_pause", "end_s": self.sample / rate})
                yield self.stamped(pause, ts)
        end = self.sample + self.window
        if self.silence_from is not None and end - self.silence_from >= self.min_silence:
            yield self.end_of_speech(self.silence_from, self.silence_ts)
        elif self.max_speech is not None and end - self.start >= self.max_speech:
            if self.silence_from is not None:  # already in silence: end where it began
                yield self.end_of_speech(self.silence_from, self.silence_ts)
            else:  # split: this part ends here, the next begins at once
                yield self.end_of_speech(end, ts)
                self.triggered, self.start = True, end
                start = Json({"event": "speech_start", "start_s": end / rate, "split": True})
                yield self.stamped(start, ts)

    def end_of_speech(self, end: int, ts: int) -> Json:
        speech = end - self.start
        self.triggered, self.silence_from = False, None
        event = "speech_end" if speech >= self.min_speech else "speech_discard"
        return self.stamped(
            Json(
                {
                    "event": event,
                    "start_s": self.start / self.rate,
                    "end_s": end / self.rate,
                    "speech_ms": round(speech * 1000 / self.rate),
                }
            ),
            ts,
        )

    @staticmethod
    def stamped(frame: F, ts: int) -> F:
        frame.timestamp_ns = ts
        return frame

    def flush(self) -> Iterator[Frame]:
        """The stream ended: an utterance still open ends here."""
        if self.triggered:
            end = self.sample + len(self.pending)
            if len(self.pending):
                yield Audio(self.pending, self.rate)
            yield self.end_of_speech(end, time.monotonic_ns())
        self.reset()
