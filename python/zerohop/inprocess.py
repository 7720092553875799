"""The in-process executor: every node of a pipeline as a thread of this interpreter.

The fallback where processes are not wanted (``[process] multiprocess = false``,
``metadata.multiprocess.enabled: false``), and the baseline the benchmarks measure the
multiprocess executor against: same nodes, same results, but one GIL, so two CPU-bound
Python nodes cannot run at the same time. Native Rust nodes run here too, through
:class:`zerohop._native.NativeNode` (the Rust node releases the GIL while it works), so
a pipeline mixing them gives the same bytes with multiprocess execution on or off.
Bounded queues between the nodes give the same backpressure (``channel.capacity``).

Examples
--------
Chosen per pipeline, or per session (``pipe.session(executor="inprocess")``); the
results are those of the multiprocess executor:

>>> from zerohop import Pipeline, Text
>>> pipe = Pipeline("threads", executor="inprocess").node("upper", "UpperCase")
>>> [frame.text for frame in pipe.run([Text("hi")])]
['HI']
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import json
import queue
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, Protocol

from . import _native
from .data import Frame, from_raw
from .errors import NodeError, NodeInitError, NodeInitTimeout, ZerohopTimeoutError
from .node import MultiprocessNode, NodeContext, iter_outputs, takes_control
from .registry import NativeNodeType
from .session import EventCallback, NodeStatus, Session

if TYPE_CHECKING:
    from .pipeline import Pipeline

__all__ = ["InProcessSession"]

_END = object()  # end of stream on a queue


class _Put(Protocol):
    """Puts an item on a node's inbox, waiting while it is full (until ``deadline``)."""

    def __call__(self, item: Any, deadline: float | None = None) -> None: ...


class _Stop(Exception):
    pass


def _stamp(frame: Frame, sequences: Iterator[int]) -> Frame:
    """What a channel's sender does: the next sequence number unless one is set, the
    send time (``time.monotonic_ns()``) unless a timestamp is. Stamps a copy, as a send
    leaves the caller's frame as it was (it may be sent again)."""
    if frame.sequence is not None and frame.timestamp_ns is not None:
        return frame
    frame = copy.copy(frame)
    if frame.sequence is None:
        frame.sequence = next(sequences)
    if frame.timestamp_ns is None:
        frame.timestamp_ns = time.monotonic_ns()
    return frame


class _NativeNode(MultiprocessNode):
    """A native (Rust) node as a node of this executor. Its output frames are numbered
    per node, as the multiprocess executor's native host numbers them."""

    def __init__(self, node_type: str, params: dict[str, Any], node_id: str) -> None:
        super().__init__(params, node_id=node_id)
        self._node = _native.NativeNode(node_type, json.dumps(params))
        self._sequence = itertools.count()

    def process(self, frame: Frame) -> list[Frame]:
        # A frame that came from a native node is handed over as is; a Python-made one
        # (or one whose metadata was read or changed here) is encoded once (the copy a
        # channel send would make).
        raw = frame.raw if frame.raw is not None and not frame.is_loan else None
        if frame._meta_for_send() is not None:
            raw = None
        return self._frames(self._node.process(raw if raw is not None else frame.to_bytes()))

    def flush(self) -> list[Frame]:
        return self._frames(self._node.flush())

    def _frames(self, raws: list[_native.RawFrame]) -> list[Frame]:
        frames = [from_raw(raw) for raw in raws]
        for frame in frames:
            frame.sequence = next(self._sequence)
        return frames


class _NodeThread:
    def __init__(
        self, session: InProcessSession, node_id: str, node: MultiprocessNode, on_error: str
    ) -> None:
        self.session = session
        self.node_id = node_id
        self.node = node
        self.on_error = on_error
        self.inbox: queue.Queue[tuple[str, Any]] = queue.Queue(session.capacity)
        self.open_inputs = 0
        self.targets: dict[str, list[Callable[[Any], None]]] = {p: [] for p in type(node).outputs}
        self.sequences = {p: itertools.count() for p in type(node).outputs}
        self.state = "initializing"
        self.frames_in = 0
        self.frames_out = 0
        self.last_input: Frame | None = None
        self.started_at = time.time()
        self.init_secs: float | None = None
        self.init_error: BaseException | None = None
        self.init_traceback = ""
        self.ready = threading.Event()
        self.thread = threading.Thread(
            target=self._run, name=f"zerohop-node-{node_id}", daemon=True
        )

    def emit(self, frame: Any, port: str | None = None) -> None:
        if isinstance(frame, tuple) and len(frame) == 2 and isinstance(frame[0], str):
            port, frame = frame
        port = port or type(self.node).outputs[0]
        targets = self.targets.get(port)
        if targets is None:
            raise ValueError(f"node '{self.node_id}' has no output port {port!r}")
        if self.last_input is not None:
            # The multiprocess runner's rule: outputs inherit their input's metadata.
            frame._inherit(self.last_input)
        frame = _stamp(frame, self.sequences[port])
        for i, put in enumerate(targets):
            put(frame if i == 0 else copy.copy(frame))
        self.frames_out += 1

    def _emit_result(self, result: Any) -> None:
        for item in iter_outputs(result, lambda: self._loop):
            self.emit(item)

    def _run(self) -> None:
        import asyncio

        self._loop = asyncio.new_event_loop()
        started = time.monotonic()
        ctx = NodeContext(
            self.node_id,
            self.session.id,
            progress=lambda f, m: self.session.progress(self.node_id, f, m),
            emit=self.emit,
        )
        try:
            self.node.initialize(ctx)
        except BaseException as err:
            self.init_error = err
            self.init_traceback = traceback.format_exc()
            self.state = "error"
            self.ready.set()
            return
        self.init_secs = time.monotonic() - started
        self.state = "ready"
        self.ready.set()
        try:
            self._serve()
        except _Stop:
            pass
        finally:
            self.state = "stopped"
            try:
                self.node.cleanup()
            finally:
                self._loop.close()

    def _serve(self) -> None:
        while self.open_inputs > 0:
            port, item = self.inbox.get()
            if self.session.stopping:
                raise _Stop
            if item is _END:
                self.open_inputs -= 1
                continue
            self.frames_in += 1
            self.state = "processing"
            item.port = port
            self.last_input = item
            forward = item.kind == "control" and not takes_control(type(self.node))
            try:
                # A control frame passes a node that does not take them (see node.py).
                self._emit_result([item] if forward else self.node.process(item))
            except _Stop:
                raise
            except Exception as err:
                self.session.node_failed(self, err, traceback.format_exc(), item.sequence)
                if self.on_error != "skip":
                    raise _Stop from None
            finally:
                self.state = "ready"
        self._emit_result(self.node.flush())
        for targets in self.targets.values():
            for put in targets:
                put(_END)
        while not self.session.stopping:
            self.inbox.get()


class InProcessSession(Session):
    """A pipeline whose nodes are threads of this process (``executor="inprocess"``)."""

    def __init__(self, pipeline: Pipeline, *, on_progress: EventCallback | None = None) -> None:
        graph = pipeline.graph("inprocess")
        self.capacity = pipeline.config.channel.capacity
        self.id = f"inprocess-{id(self):x}"
        self.stopping = False
        self._on_progress = on_progress
        self._lock = threading.Lock()
        self._out: queue.Queue[tuple[str, Any, Any]] = queue.Queue()
        self._failure: BaseException | None = None
        self._threads: dict[str, _NodeThread] = {}
        for spec in graph["nodes"]:
            cls = pipeline.node_classes()[spec["id"]]
            node = (
                _NativeNode(cls.node_type, spec["params"], spec["id"])
                if isinstance(cls, NativeNodeType)
                else cls(spec["params"], node_id=spec["id"])
            )
            self._threads[spec["id"]] = _NodeThread(self, spec["id"], node, spec["on_error"])
        fed: set[tuple[str, str]] = set()
        feeding: set[tuple[str, str]] = set()
        for edge in graph["connections"]:
            source, target = self._threads[edge["from"]], self._threads[edge["to"]]
            # The graph was validated in Rust: a port-less connection out of a node with
            # several outputs is its primary one, "out".
            outputs_of = type(source.node).outputs
            out_port = edge["from_port"] or ("out" if "out" in outputs_of else outputs_of[0])
            in_port = edge["to_port"] or type(target.node).inputs[0]
            source.targets[out_port].append(self._putter(target, in_port))
            target.open_inputs += 1
            fed.add((target.node_id, in_port))
            feeding.add((source.node_id, out_port))
        inputs, outputs = [], []
        self._input_queues: list[_Put] = []
        self._input_sequences: list[Iterator[int]] = []
        for node_id, t in self._threads.items():
            ports_in, ports_out = type(t.node).inputs, type(t.node).outputs
            for port in ports_in:
                if (node_id, port) not in fed:
                    inputs.append(node_id if len(ports_in) == 1 else f"{node_id}.{port}")
                    self._input_queues.append(self._putter(t, port))
                    self._input_sequences.append(itertools.count())
                    t.open_inputs += 1
            for port in ports_out:
                if (node_id, port) not in feeding:
                    primary = len(ports_out) == 1 or port == "out"
                    label = node_id if primary else f"{node_id}.{port}"
                    outputs.append(label)
                    t.targets[port].append(self._output(label))
        super().__init__(pipeline.name, inputs, outputs)
        self._open_outputs = len(outputs)
        self._start(pipeline.config.process.init_timeout_secs)

    def _putter(self, target: _NodeThread, port: str) -> _Put:
        def put(item: Any, deadline: float | None = None) -> None:
            """Waits while the queue is full, as a channel's sender does: past
            ``deadline`` (monotonic) it raises ZerohopTimeoutError with nothing queued."""
            while not self.stopping:
                wait = 0.05 if deadline is None else min(0.05, deadline - time.monotonic())
                if wait <= 0:
                    raise ZerohopTimeoutError("the pipeline is behind: send timed out")
                try:
                    target.inbox.put((port, item), timeout=wait)
                    return
                except queue.Full:
                    continue
            raise _Stop

        return put

    def _output(self, label: str) -> Callable[[Any], None]:
        def put(item: Any) -> None:
            self._out.put(("end", None, label) if item is _END else ("frame", item, label))

        return put

    def progress(self, node_id: str, fraction: float | None, message: str) -> None:
        if self._on_progress is not None:
            with self._lock:
                self._on_progress(
                    {
                        "type": "progress",
                        "node_id": node_id,
                        "fraction": fraction,
                        "message": message,
                    }
                )

    def node_failed(self, t: _NodeThread, err: Exception, tb: str, sequence: int | None) -> None:
        message = f"{type(err).__name__}: {err}"
        if t.on_error == "skip":
            self._out.put(
                (
                    "event",
                    {
                        "type": "frame_error",
                        "node_id": t.node_id,
                        "error": message,
                        "traceback": tb,
                        "sequence": sequence,
                    },
                    None,
                )
            )
            return
        t.state = "error"
        self._fail(
            NodeError(f"node '{t.node_id}' raised: {message}", node_id=t.node_id, traceback=tb)
        )

    def _fail(self, err: BaseException) -> None:
        with self._lock:
            if self._failure is None:
                self._failure = err
        self.stopping = True
        self._out.put(("failed", None, None))

    def _start(self, init_timeout: float) -> None:
        for t in self._threads.values():
            t.thread.start()
        deadline = time.monotonic() + init_timeout
        for t in self._threads.values():
            if not t.ready.wait(max(0.0, deadline - time.monotonic())):
                self._shutdown()
                raise NodeInitTimeout(
                    f"node '{t.node_id}' was not ready within {init_timeout} s (init timeout)",
                    node_id=t.node_id,
                )
            if t.init_error is not None:
                self._shutdown()
                error = f"{type(t.init_error).__name__}: {t.init_error}"
                raise NodeInitError(
                    f"node '{t.node_id}' failed to initialize: {error}",
                    node_id=t.node_id,
                    traceback=t.init_traceback,
                )
            if self._on_progress is not None:
                self._on_progress({"type": "ready", "node_id": t.node_id, "init_secs": t.init_secs})

    def _raise_failure(self) -> None:
        if self._failure is not None:
            raise self._failure

    def _send(self, index: int, frame: Frame, timeout: float | None) -> int:
        self._raise_failure()
        deadline = None if timeout is None else time.monotonic() + timeout
        put = self._input_queues[index]
        frame = _stamp(frame, self._input_sequences[index])
        try:
            put(frame, deadline)
        except _Stop:
            self._raise_failure()
            raise
        except ZerohopTimeoutError:
            raise ZerohopTimeoutError(f"send timed out after {timeout} s") from None
        return frame.sequence or 0

    def _end_inputs(self, timeout: float | None) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout
        for put in self._input_queues:
            put(_END, deadline)

    def _next(self, timeout: float | None) -> tuple[str, Any, Any]:
        while True:
            self._raise_failure()
            try:
                kind, value, label = self._out.get(timeout=timeout)
            except queue.Empty:
                raise ZerohopTimeoutError(f"no output within {timeout} s") from None
            if kind == "failed":
                self._raise_failure()
            elif kind == "end":
                self._open_outputs -= 1
                if self._open_outputs == 0:
                    return "end", None, None
            else:
                return kind, value, label

    def status(self) -> list[NodeStatus]:
        return [
            NodeStatus(
                node_id=t.node_id,
                state=t.state,
                pid=None,
                started_at=t.started_at,
                rss_bytes=None,
                init_secs=t.init_secs,
                frames_in=t.frames_in,
                frames_out=t.frames_out,
                exit=None,
            )
            for t in self._threads.values()
        ]

    def _shutdown(self) -> None:
        self.stopping = True
        for t in self._threads.values():
            with contextlib.suppress(queue.Full):
                t.inbox.put_nowait(("", _END))
        for t in self._threads.values():
            if t.thread.is_alive():
                t.thread.join(5)

    def _close(self) -> None:
        self._shutdown()
