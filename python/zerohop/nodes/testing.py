"""Small deterministic nodes used by the tests, the examples and the soak/chaos runs.

They are real nodes (registered, run in their own processes like any other); they just
do little, so that what is tested is zerohop itself.
"""

from __future__ import annotations

import ctypes
import os
import signal
import time
from collections.abc import Iterator
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, Field

from ..data import Audio, Control, Frame, Json, Tensor, Text
from ..node import MultiprocessNode, NodeContext
from ..registry import register_node

__all__ = [
    "BurnCPU",
    "Count",
    "Crash",
    "Echo",
    "Join",
    "Repeat",
    "Scale",
    "Slow",
    "SlowInit",
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
class BurnCPU(MultiprocessNode):
    """Holds the GIL in pure Python until this thread has used ``ms`` milliseconds of
    CPU, then emits a Json with the pid, the wall-clock start/end (monotonic ns) and the
    CPU time used — from which a test can tell whether two burns ran in parallel."""

    class Params(BaseModel):
        ms: float = Field(50.0, ge=0)

    def process(self, frame: Frame) -> Json:
        start, cpu_start = time.monotonic_ns(), time.thread_time_ns()
        budget = int(self.params.ms * 1e6)
        x = 0
        while time.thread_time_ns() - cpu_start < budget:
            for i in range(1000):
                x += i * i
        return Json(
            {
                "pid": os.getpid(),
                "node": self.node_id,
                "start": start,
                "end": time.monotonic_ns(),
                "cpu_ns": time.thread_time_ns() - cpu_start,
                "input": frame.sequence,
            }
        )


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


@register_node
class Slow(MultiprocessNode):
    """Sleeps ``ms`` milliseconds per frame, then sends it on: a node too slow for its
    input, to drive backpressure."""

    class Params(BaseModel):
        ms: float = Field(10.0, ge=0)

    def process(self, frame: Frame) -> Frame:
        time.sleep(self.params.ms / 1000)
        return frame


@register_node
class SlowInit(MultiprocessNode):
    """Takes ``seconds`` to initialize, reporting progress in ``steps``; then echoes."""

    class Params(BaseModel):
        seconds: float = Field(1.0, ge=0)
        steps: int = Field(4, ge=1)

    def initialize(self, ctx: NodeContext) -> None:
        for step in range(self.params.steps):
            ctx.progress(step / self.params.steps, f"loading part {step + 1}/{self.params.steps}")
            time.sleep(self.params.seconds / self.params.steps)
        ctx.progress(1.0, "loaded")

    def process(self, frame: Frame) -> Frame:
        return frame


CrashMode = Literal[
    "none",
    "init_exception",
    "init_hang",
    "init_segfault",
    "process_exception",
    "exit",
    "segfault",
    "sigkill",
    "sigstop",
    "cleanup_exception",
    "cleanup_segfault",
]


@register_node
class Crash(MultiprocessNode):
    """Fails on purpose: at init, at the ``after``-th frame (0-based) by raising,
    ``os._exit(3)``, a segfault, SIGKILL or SIGSTOP (freezing) to itself, or in
    ``cleanup``. Other frames are echoed."""

    class Params(BaseModel):
        mode: CrashMode = "process_exception"
        after: int = Field(0, ge=0)

    def initialize(self, ctx: NodeContext) -> None:
        self.seen = 0
        if self.params.mode == "init_exception":
            raise RuntimeError("boom in initialize")
        if self.params.mode == "init_hang":
            while True:
                time.sleep(1)
        if self.params.mode == "init_segfault":
            ctypes.string_at(0)

    def process(self, frame: Frame) -> Frame:
        index, self.seen = self.seen, self.seen + 1
        if index == self.params.after:
            mode = self.params.mode
            if mode == "process_exception":
                raise ValueError(f"boom at frame {index}")
            if mode == "exit":
                os._exit(3)
            if mode == "segfault":
                ctypes.string_at(0)
            if mode == "sigkill":
                os.kill(os.getpid(), signal.SIGKILL)
            if mode == "sigstop":
                os.kill(os.getpid(), signal.SIGSTOP)
        return frame

    def cleanup(self) -> None:
        if self.params.mode == "cleanup_exception":
            raise RuntimeError("boom in cleanup")
        if self.params.mode == "cleanup_segfault":
            ctypes.string_at(0)
