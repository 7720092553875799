"""The multiprocess executor's session: every node in its own process (its own GIL),
wired by shared-memory channels, run by the Rust executor (``_native.NativeSession``);
and the settings that session takes from the pipeline's runtime configuration (the
``zerohop serve`` planner hands the same to the server).

Examples
--------
The default executor: each Python node in a process of its own. A session can loan
its input frame from the channel's shared memory, so sending it copies nothing:

>>> import os
>>> from zerohop import Pipeline
>>> pipe = Pipeline("double", executor="multiprocess").node("x2", "Scale", factor=2.0)
>>> with pipe.session() as session:
...     len(session.pids()), os.getpid() in session.pids()  # one node process, not this one
...     frame = session.loan_tensor(3, "float32")
...     frame.array[:] = [1, 2, 3]
...     _ = session.send(frame)
...     session.end_input()
...     [out.array.tolist() for out in session.outputs(timeout=10)]
(1, False)
[[2.0, 4.0, 6.0]]
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Any

from . import _native
from .cancel import output_frame
from .channel import Sender
from .data import from_raw
from .session import EventCallback, NodeStatus, Session

if TYPE_CHECKING:
    from .data import Frame
    from .pipeline import Pipeline

__all__ = ["MultiprocessSession", "session_settings"]


class MultiprocessSession(Session):
    """Every node in its own process, wired by shared-memory channels (the default)."""

    @classmethod
    def start(
        cls, pipeline: Pipeline, graph: _native.Graph, on_progress: EventCallback | None
    ) -> MultiprocessSession:
        """Spawns every node of ``graph`` (``pipeline`` validated) at once and returns
        once all are ready."""
        native = _native.NativeSession.start(
            graph, session_settings(pipeline), on_event=on_progress
        )
        return cls(native, graph)

    def __init__(self, native: _native.NativeSession, graph: _native.Graph) -> None:
        super().__init__(
            graph.name, [p.label for p in graph.inputs], [p.label for p in graph.outputs]
        )
        self._native = native
        self.id: str = native.id
        self._inputs = [
            Sender.wrap(native.input(i), label) for i, label in enumerate(self.input_labels)
        ]

    def _send(self, index: int, frame: Frame, timeout: float | None) -> int:
        return self._inputs[index].send(frame, timeout=timeout)

    def _end_inputs(self, timeout: float | None) -> None:
        self._native.end_inputs(timeout)

    def _cancel(self) -> int:
        return self._native.cancel()

    def _next(self, timeout: float | None) -> Frame | _native.SkippedFrame | None:
        item = self._native.recv(timeout)
        if isinstance(item, tuple):
            index, raw = item
            frame = from_raw(raw)
            frame.source = self.output_labels[index]
            return frame
        if isinstance(item, int):
            return output_frame(item, self.output_labels[0])
        return item

    def status(self) -> list[NodeStatus]:
        return self._native.status()

    def metrics(self) -> str:
        return self._native.metrics()

    def pids(self) -> list[int]:
        """Pids of the node processes."""
        return list(self._native.pids())

    def loan_tensor(
        self, shape: tuple[int, ...] | int, dtype: str = "float32", *, to: str | None = None
    ) -> Any:
        """Loans a tensor frame from the input channel's shared memory (zero-copy send)."""
        return self._inputs[self._input_index(to)].loan_tensor(shape, dtype)

    def loan_audio(
        self,
        frames: int,
        *,
        sample_rate: int,
        channels: int = 1,
        dtype: str = "float32",
        to: str | None = None,
    ) -> Any:
        """Loans an audio frame from the input channel's shared memory."""
        return self._inputs[self._input_index(to)].loan_audio(
            frames, sample_rate=sample_rate, channels=channels, dtype=dtype
        )

    def _close(self) -> None:
        for sender in self._inputs:
            sender.close()
        self._native.close()


def _launch_command(pipeline: Pipeline) -> tuple[str, list[str], list[tuple[str, str]]]:
    executable = pipeline.config.process.python_executable or sys.executable
    env = [(k, v) for k, v in os.environ.items()]
    return executable, ["-m", "zerohop.runner"], env


def _sys_path() -> list[str]:
    entries = []
    main = sys.modules.get("__main__")
    main_file = getattr(main, "__file__", None)
    if main_file:
        entries.append(os.path.dirname(os.path.abspath(main_file)))
    entries.extend(p for p in sys.path if p)
    return entries


def session_settings(pipeline: Pipeline) -> _native.SessionSettings:
    """What ``NativeSession.start`` takes besides the graph, from the pipeline's runtime
    configuration (checked as it is made)."""
    cfg = pipeline.config
    program, args, env = _launch_command(pipeline)
    return _native.SessionSettings(
        program=program,
        args=args,
        env=env,
        cwd=os.getcwd(),
        channel=cfg.channel.settings(),
        init_timeout=cfg.process.init_timeout_secs,
        grace=cfg.process.grace_period_secs,
        term_grace=cfg.process.term_grace_secs,
        liveness_timeout=cfg.process.liveness_timeout(),
        max_processes=cfg.process.max_processes(),
        heartbeat_secs=cfg.process.heartbeat_secs,
        imports=pipeline._imports.specs(),
        sys_path=_sys_path(),
        spawn_method=cfg.process.spawn_method,
        hosts=cfg.host_access(),
        session_memory_limit=cfg.process.max_session_memory_bytes or None,
    )
