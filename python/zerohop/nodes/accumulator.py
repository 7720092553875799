"""``AudioBufferAccumulatorNode``: assembles the utterances a VAD marks into one audio
frame each, for a speech recognizer that wants whole utterances.

It reads what :class:`~zerohop.nodes.vad.SileroVADNode` emits on its one output: audio
windows between ``speech_start`` and ``speech_end`` Json events. At ``speech_end`` it
emits the utterance (float32, the input's rate) stamped with the event's timestamp (the
end of speech), unless it is shorter than ``min_utterance_duration_ms``; an utterance
that reaches ``max_utterance_duration_ms`` is emitted at once and a new one begins.

A Python node, not a native one, so that the same manifest also runs on the in-process
executor (which runs no native nodes yet); the work per frame is one append.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
from pydantic import Field

from ..data import Audio, Frame, Json
from ..node import MultiprocessNode, NodeContext, register_node
from .params import NodeParams

__all__ = ["AudioBufferAccumulatorNode"]


@register_node
class AudioBufferAccumulatorNode(MultiprocessNode):
    """Audio between VAD speech_start/speech_end events → one utterance frame each."""

    class Params(NodeParams):
        min_utterance_duration_ms: int = Field(250, ge=0)
        max_utterance_duration_ms: int = Field(30_000, ge=100)

    def initialize(self, ctx: NodeContext) -> None:
        self.parts: list[np.ndarray[Any, Any]] = []
        self.samples = 0
        self.rate = 0

    def process(self, frame: Frame) -> Iterator[Audio]:
        if isinstance(frame, Json):
            event = frame.value.get("event") if isinstance(frame.value, dict) else None
            if event == "speech_end":
                yield from self.utterance(frame.timestamp_ns)
            elif event in ("speech_start", "speech_discard"):
                self.clear()
            return
        if not isinstance(frame, Audio):
            raise TypeError(f"{self.node_type} takes audio and VAD events, got {frame.kind}")
        if self.rate and frame.sample_rate != self.rate:
            raise ValueError(
                f"{self.node_type}: sample rate changed from {self.rate} to "
                f"{frame.sample_rate} Hz within an utterance"
            )
        self.rate = frame.sample_rate
        self.parts.append(np.array(frame.samples, np.float32))  # a copy: views are borrowed
        self.samples += len(frame.samples)
        if self.samples * 1000 >= self.params.max_utterance_duration_ms * self.rate:
            yield from self.utterance(frame.timestamp_ns)

    def utterance(self, timestamp_ns: int | None) -> Iterator[Audio]:
        long_enough = self.samples * 1000 >= self.params.min_utterance_duration_ms * self.rate
        if self.parts and long_enough:
            audio = Audio(np.concatenate(self.parts), self.rate)
            audio.timestamp_ns = timestamp_ns
            yield audio
        self.clear()

    def clear(self) -> None:
        self.parts, self.samples = [], 0

    def flush(self) -> Iterator[Audio]:
        yield from self.utterance(None)
