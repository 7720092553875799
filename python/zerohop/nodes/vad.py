"""``SileroVADNode``: voice activity detection with Silero VAD v6 on onnxruntime.

The ONNX file comes from the ``silero-vad`` wheel, found without importing the package
(its ``__init__`` imports torch, which the speech extra does not install). The model
runs on 512-sample windows at 16 kHz, with 64 samples of context and its recurrent
state carried from window to window — what ``silero_vad.OnnxWrapper`` does.

What it emits on ``out``, in order (one channel, so order is kept downstream):

- ``Json({"event": "speech_start", "start_s": ...})`` when speech begins,
- the audio of the speech as float32 windows, starting ``speech_pad_ms`` before it,
- ``Json({"event": "speech_end", "start_s", "end_s", "speech_ms"})`` after
  ``min_silence_duration_ms`` of silence, or ``{"event": "speech_discard", ...}``
  instead when the speech was shorter than ``min_speech_duration_ms``;
- with ``pause_events``, also ``Json({"event": "speech_pause", "end_s"})`` the moment
  silence begins within speech (the end of speech it would be, if the silence lasts),
  and ``Json({"event": "speech_resume"})`` if speech comes back before
  ``min_silence_duration_ms``: the accumulator emits the utterance so far as a tentative
  one, which a Whisper node transcribes while the VAD still waits for the silence.

``speech_end`` carries, as its frame timestamp, the time the input chunk holding the
last speech sample was sent: downstream nodes keep it, so the time from the end of
speech to any later output can be read off that output's timestamp.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from pydantic import Field

from ..data import Audio, Frame, Json
from ..node import MultiprocessNode, NodeContext, register_node
from .audio import mono_float32
from .model_paths import ModelPath
from .packaged import check_sha256, packaged_file, require
from .params import NodeParams

__all__ = ["SileroVADNode"]

F = TypeVar("F", bound=Frame)
RATE = 16_000
WINDOW = 512  # samples per model call at 16 kHz
CONTEXT = 64  # samples of the previous window the model sees


@register_node
class SileroVADNode(MultiprocessNode):
    """Silero VAD v6 (ONNX): speech start/end events and the speech audio, 16 kHz mono."""

    accepts = ("audio",)

    class Params(NodeParams):
        threshold: float = Field(0.5, gt=0, lt=1)
        sampling_rate: int = Field(RATE, ge=RATE, le=RATE)
        min_speech_duration_ms: int = Field(250, ge=0)
        min_silence_duration_ms: int = Field(100, ge=0)
        speech_pad_ms: int = Field(30, ge=0)
        pause_events: bool = False
        model_path: ModelPath | None = None
        model_sha256: str | None = None

    def initialize(self, ctx: NodeContext) -> None:
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
        pad = self.params.speech_pad_ms * RATE // 1000
        self.pad_windows = -(-pad // WINDOW)  # whole windows, rounded up
        self.min_silence = self.params.min_silence_duration_ms * RATE // 1000
        self.min_speech = self.params.min_speech_duration_ms * RATE // 1000
        self.reset()
        ctx.progress(1.0, "Silero VAD ready")

    def reset(self) -> None:
        self.state = np.zeros((2, 1, 128), np.float32)
        self.context = np.zeros(CONTEXT, np.float32)
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
            None, {"input": x, "state": self.state, "sr": np.array(RATE, np.int64)}
        )
        self.context = window[-CONTEXT:]
        return float(out[0, 0])

    def process(self, frame: Frame) -> Iterator[Frame]:
        samples = mono_float32(frame, RATE, self.node_type)
        ts = frame.timestamp_ns or time.monotonic_ns()
        self.pending = np.concatenate([self.pending, samples])
        while len(self.pending) >= WINDOW:
            window, self.pending = self.pending[:WINDOW], self.pending[WINDOW:]
            yield from self.step(window, ts)
            self.sample += WINDOW

    def step(self, window: np.ndarray[Any, Any], ts: int) -> Iterator[Frame]:
        p = self.probability(window)
        threshold = self.params.threshold
        if not self.triggered:
            if p < threshold:
                self.preroll.append(window)
                return
            self.triggered, self.silence_from = True, None
            self.start = self.sample - WINDOW * len(self.preroll)
            yield self.stamped(Json({"event": "speech_start", "start_s": self.start / RATE}), ts)
            yield self.stamped(Audio(np.concatenate([*self.preroll, window]), RATE), ts)
            self.preroll.clear()
            return
        yield self.stamped(Audio(window, RATE), ts)
        if p >= threshold:
            if self.silence_from is not None and self.params.pause_events:
                yield self.stamped(Json({"event": "speech_resume"}), ts)
            self.silence_from = None
        elif p < threshold - 0.15 and self.silence_from is None:
            self.silence_from, self.silence_ts = self.sample, ts
            if self.params.pause_events:
                pause = Json({"event": "speech_pause", "end_s": self.sample / RATE})
                yield self.stamped(pause, ts)
        end = self.sample + WINDOW
        if self.silence_from is not None and end - self.silence_from >= self.min_silence:
            yield self.end_of_speech(self.silence_from, self.silence_ts)

    def end_of_speech(self, end: int, ts: int) -> Json:
        speech = end - self.start
        self.triggered, self.silence_from = False, None
        event = "speech_end" if speech >= self.min_speech else "speech_discard"
        return self.stamped(
            Json(
                {
                    "event": event,
                    "start_s": self.start / RATE,
                    "end_s": end / RATE,
                    "speech_ms": round(speech * 1000 / RATE),
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
                yield Audio(self.pending, RATE)
            yield self.end_of_speech(end, time.monotonic_ns())
        self.reset()
