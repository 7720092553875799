"""Small deterministic nodes used by the tests and the examples: echo, text
transforms, fan-in/out, counting, tagging.

They are real nodes (registered, run in their own processes like any other); they just
do little, so that what is tested is zerohop itself. The fault injectors (crashes,
CPU burners, slow nodes) are not here but in the opt-in :mod:`zerohop.testing`.

Examples
--------
A generator node feeding one that emits only when the stream ends:

>>> from zerohop import Pipeline, Text
>>> pipe = (Pipeline("count")
...         .node("repeat", "Repeat", times=3)
...         .node("count", "Count")
...         .connect("repeat", "count"))
>>> [frame.value for frame in pipe.run([Text("a"), Text("b")])]
[{'count': 6}]
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
from pydantic import BaseModel, Field

from ..data import Audio, Control, Frame, Json, Tensor, Text
from ..node import MultiprocessNode, NodeContext
from ..registry import register_node

__all__ = [
    "Count",
    "Echo",
    "Join",
    "Repeat",
    "Scale",
    "Split",
    "Suffix",
    "Tag",
    "UpperCase",
]


@register_node
class Echo(MultiprocessNode):
    """Sends every frame on unchanged."""

    def process(self, frame: Frame) -> Frame:
        return frame


@register_node
class UpperCase(MultiprocessNode):
    """Text → upper-case text."""

    accepts = emits = ("text",)

    def process(self, frame: Text) -> Text:
        return Text(frame.text.upper())


@register_node
class Suffix(MultiprocessNode):
    """Text → text with ``suffix`` appended."""

    accepts = emits = ("text",)

    class Params(BaseModel):
        suffix: str = "!"

    def process(self, frame: Text) -> Text:
        return Text(frame.text + self.params.suffix)


@register_node
class Cancellable(MultiprocessNode):
    """Takes control frames itself (``accepts`` names them): a control message is
    answered with a Json naming its action and segment; text passes through."""

    accepts = ("text", "control")

    def process(self, frame: Frame) -> Frame:
        if isinstance(frame, Control):
            return Json({"action": frame.action, "segment": frame.segment_id})
        return frame


@register_node
class Tag(MultiprocessNode):
    """Text → the same text as a new frame whose metadata is its input's plus
    ``key: value``, and whose channel is ``channel`` if given: a node that changes
    metadata."""

    accepts = emits = ("text",)

    class Params(BaseModel):
        key: str = "tagged"
        value: str = "yes"
        channel: str | None = None

    def process(self, frame: Text) -> Text:
        out = Text(frame.text, channel=self.params.channel or frame.channel)
        out.metadata = {**frame.metadata, self.params.key: self.params.value}
        return out


@register_node
class Scale(MultiprocessNode):
    """Multiplies tensor or audio data by ``factor`` (output in a new frame)."""

    class Params(BaseModel):
        factor: float = 2.0

    def process(self, frame: Frame) -> Frame:
        if isinstance(frame, Audio):
            return Audio(
                (frame.samples * self.params.factor).astype(frame.samples.dtype), frame.sample_rate
            )
        if isinstance(frame, Tensor):
            return Tensor(frame.array * self.params.factor)
        raise TypeError(f"Scale takes audio or tensor frames, got {type(frame).__name__}")


@register_node
class Repeat(MultiprocessNode):
    """Streams ``times`` copies of every frame (a generator node)."""

    class Params(BaseModel):
        times: int = Field(3, ge=0)

    def process(self, frame: Frame) -> Iterator[Frame]:
        for _ in range(self.params.times):
            yield frame


@register_node
class Count(MultiprocessNode):
    """Emits nothing per frame; at the end of the stream emits the count it saw."""

    def initialize(self, ctx: NodeContext) -> None:
        self.count = 0

    def process(self, frame: Frame) -> None:
        self.count += 1

    def flush(self) -> Json:
        return Json({"count": self.count})


@register_node
class Split(MultiprocessNode):
    """Routes tensor frames to ``even`` or ``odd`` by their first element."""

    outputs = ("even", "odd")

    def process(self, frame: Tensor) -> tuple[str, Frame]:
        return ("even" if int(frame.array.flat[0]) % 2 == 0 else "odd", frame)


@register_node
class Join(MultiprocessNode):
    """Two inputs, ``left`` and ``right``: emits Json naming the port and first value."""

    inputs = ("left", "right")

    def process(self, frame: Frame) -> Json:
        value: Any = (
            frame.text
            if isinstance(frame, Text)
            else np.asarray(getattr(frame, "array", [])).ravel()[:1].tolist()
        )
        return Json({"port": frame.port, "value": value})
