"""Fault-injection nodes for tests, chaos and soak runs: ``Crash`` (raises, exits,
segfaults, SIGKILLs or SIGSTOPs itself), ``BurnCPU`` (holds the GIL), ``Hog`` (takes
memory), ``MatMul`` (BLAS-heavy), ``Environment`` (reports what its process was given),
``Slow`` and ``SlowInit``; ``Talk`` and ``Interrupt`` for cancels (barge-in).

Not registered by default: a manifest — one sent to ``zerohop serve`` included — can
name them only where the operator asked for them, by importing this module or listing
it in runtime.toml (``[nodes] modules = ["zerohop.testing"]``).

Examples
--------
A node process that dies mid-stream ends the session with an error naming the node
and how it died:

>>> import zerohop.testing  # registers Crash, BurnCPU, Hog, Environment, Slow, SlowInit
>>> from zerohop import NodeCrashedError, Pipeline, Text
>>> pipe = (Pipeline("chaos")
...         .node("echo", "Echo")
...         .node("crash", "Crash", mode="exit", after=1)
...         .connect("echo", "crash"))
>>> try:
...     pipe.run([Text("one"), Text("two")])
... except NodeCrashedError as err:
...     print(err.node_id, err.exit_code)
crash 3
"""

from __future__ import annotations

import ctypes
import os
import signal
import time
from collections.abc import Iterator
from typing import Literal

from pydantic import BaseModel, Field

from .data import Frame, Json, Text
from .node import MultiprocessNode, NodeContext
from .registry import register_node

__all__ = [
    "BurnCPU",
    "Crash",
    "Environment",
    "Hog",
    "Interrupt",
    "MatMul",
    "Slow",
    "SlowInit",
    "Talk",
]


@register_node
class MatMul(MultiprocessNode):
    """For every frame, ``repeats`` products of two ``size`` x ``size`` float32 matrices
    through numpy's BLAS (which uses as many threads as it is allowed), then echoes
    the frame: a CPU-heavy model stand-in whose thread count the budget decides."""

    class Params(BaseModel):
        size: int = Field(384, ge=1)
        repeats: int = Field(4, ge=1)

    def initialize(self, ctx: NodeContext) -> None:
        import numpy as np

        rng = np.random.default_rng(0)
        self.a = rng.standard_normal((self.params.size, self.params.size), dtype=np.float32)

    def process(self, frame: Frame) -> Frame:
        product = self.a
        for _ in range(self.params.repeats):
            product = (self.a @ product) * 0.01
        return frame


@register_node
class Environment(MultiprocessNode):
    """For every frame, a Json of what its process was given: the thread-count and
    device-visibility variables, its CPU affinity, ``ctx.threads`` and the thread count
    of the OpenBLAS numpy loaded."""

    def initialize(self, ctx: NodeContext) -> None:
        self.threads = ctx.threads

    def process(self, frame: Frame) -> Json:
        from .threads import THREAD_VARIABLES, openblas_threads

        names = (*THREAD_VARIABLES, "CUDA_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES")
        return Json(
            {
                "env": {name: os.environ.get(name) for name in names},
                "cpus": sorted(os.sched_getaffinity(0)),
                "threads": self.threads,
                "openblas": openblas_threads(),
            }
        )


@register_node
class Hog(MultiprocessNode):
    """Takes ``mb`` more megabytes of memory (touched, held) for every frame, then echoes
    it: a node that leaks, or loads a model too big for its limit."""

    class Params(BaseModel):
        mb: int = Field(100, ge=0)

    def initialize(self, ctx: NodeContext) -> None:
        self.held: list[bytearray] = []

    def process(self, frame: Frame) -> Frame:
        for _ in range(self.params.mb):
            self.held.append(bytearray(b"x" * (1 << 20)))
        return frame


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
class Slow(MultiprocessNode):
    """Sleeps ``ms`` milliseconds per frame, then sends it on: a node too slow for its
    input, to drive backpressure."""

    class Params(BaseModel):
        ms: float = Field(10.0, ge=0)

    def process(self, frame: Frame) -> Frame:
        time.sleep(self.params.ms / 1000)
        return frame


@register_node
class Talk(MultiprocessNode):
    """A reply that takes a while: for each Text, ``parts`` Json frames ``{"text",
    "part", "cancels"}``, one every ``ms`` milliseconds (a generator, as a TTS node
    streams sentences). ``cancels`` counts the cancels that reached it (``on_cancel``)."""

    accepts = ("text",)

    class Params(BaseModel):
        parts: int = Field(10, ge=1)
        ms: float = Field(20.0, ge=0)

    def initialize(self, ctx: NodeContext) -> None:
        self.cancels = 0

    def process(self, frame: Frame) -> Iterator[Json]:
        assert isinstance(frame, Text)
        for part in range(self.params.parts):
            time.sleep(self.params.ms / 1000)
            yield Json({"text": frame.text, "part": part, "cancels": self.cancels})

    def on_cancel(self) -> None:
        self.cancels += 1


@register_node
class Interrupt(MultiprocessNode):
    """Passes frames on; a Text equal to ``word`` is not passed but cancels what is in
    flight downstream (``ctx.cancel()``), as a VAD does when the user talks over the
    reply."""

    class Params(BaseModel):
        word: str = "stop"

    def initialize(self, ctx: NodeContext) -> None:
        self.ctx = ctx

    def process(self, frame: Frame) -> Frame | None:
        if isinstance(frame, Text) and frame.text == self.params.word:
            self.ctx.cancel()
            return None
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
