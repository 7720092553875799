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

import copy
import itertools
import json
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from . import _native
from .cancel import CancelRequested, Discards, Notice, new_id, output_frame
from .data import Frame, from_raw
from .errors import (
    ChannelClosedError,
    NodeError,
    NodeInitError,
    NodeInitTimeout,
    ZerohopTimeoutError,
)
from .node import MultiprocessNode
from .node_loop import NodeFailed, NodeLoop, Stopped, describe
from .registry import NativeNodeType
from .remote import RemoteNodeType
from .session import EventCallback, NodeStatus, Session

if TYPE_CHECKING:
    from .pipeline import Pipeline

__all__ = ["InProcessSession"]

_END: Any = object()  # end of stream on a queue
_NOTICE: Any = object()  # `_Queue.get`: a cancel's notice waits (it overtakes the items)


class _Mark:
    """A cancel's marker on a queue (see :mod:`zerohop.cancel`)."""

    __slots__ = ("cancel",)

    def __init__(self, cancel: int) -> None:
        self.cancel = cancel


class _Queue:
    """A node's inbox (or the session's outputs): what a channel's receiver queue is to
    the multiprocess executor. ``put`` waits while ``capacity`` items are queued — past
    its deadline it raises :class:`~zerohop.errors.ZerohopTimeoutError` having queued
    nothing, as a channel's send does — and both ends raise
    :class:`~zerohop.node_loop.Stopped` once the queue is closed (the session stops)."""

    def __init__(self, capacity: int) -> None:
        self._items: deque[tuple[Any, Any]] = deque()
        self._capacity = capacity
        self._closed = False
        self._changed = threading.Condition()
        #: Cancels for the queue's reader: ``get`` returns ``_NOTICE`` ahead of items.
        self.notices: deque[Notice] = deque()

    def credits(self) -> tuple[int, int]:
        """Items queued (at most the capacity) and the capacity, as a channel's credits."""
        with self._changed:
            return min(len(self._items), self._capacity), self._capacity

    def put(
        self,
        item: tuple[Any, Any],
        deadline: float | None = None,
        *,
        bounded: bool = True,
        cancelled: Callable[[], bool] | None = None,
    ) -> None:
        """Queues ``item``, waiting while the queue is full; a wait ends with
        :class:`~zerohop.cancel.CancelRequested` once ``cancelled()`` (checked every
        20 ms: the sender's cancel comes to another queue than the one it waits on)."""
        with self._changed:
            while bounded and len(self._items) >= self._capacity and not self._closed:
                if cancelled is not None and cancelled():
                    raise CancelRequested
                slice_end = time.monotonic() + 0.02 if cancelled is not None else None
                if deadline is not None and (slice_end is None or deadline < slice_end):
                    slice_end = deadline
                if not self._wait(slice_end) and slice_end == deadline:
                    raise ZerohopTimeoutError("the pipeline is behind: send timed out")
            if self._closed:
                raise Stopped
            self._items.append(item)
            self._changed.notify_all()

    def notify(self, notice: Notice) -> None:
        """Posts a cancel's notice for the reader (waking its ``get``)."""
        with self._changed:
            self.notices.append(notice)
            self._changed.notify_all()

    def get(self, deadline: float | None = None) -> tuple[Any, Any]:
        """The next ``(edge, item)``; ``(None, _NOTICE)`` while a notice waits."""
        with self._changed:
            while not self._items and not self._closed and not self.notices:
                if not self._wait(deadline):
                    raise ZerohopTimeoutError("nothing arrived in time")
            if self._closed:
                raise Stopped
            if self.notices:
                return None, _NOTICE
            item = self._items.popleft()
            self._changed.notify_all()
            return item

    def _wait(self, deadline: float | None) -> bool:
        """Waits for a change; False once ``deadline`` (monotonic) has passed."""
        if deadline is None:
            self._changed.wait()
            return True
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        self._changed.wait(remaining)
        return True

    def close(self) -> None:
        with self._changed:
            self._closed = True
            self._changed.notify_all()


class _Edge:
    """An edge into a queue under ``tag`` (the input port, or the output label): the
    in-process channel. Like a channel's sender it stamps what it sends — the next
    sequence number unless one is set, the send time (``time.monotonic_ns()``) unless a
    timestamp is — on a copy, as a send leaves the caller's frame as it was. It
    queues itself with each item: the reader's cancel book is kept per edge."""

    def __init__(
        self, queue: _Queue, tag: str, source: _NodeThread | None, target: _NodeThread | None
    ) -> None:
        self.queue = queue
        self.tag = tag
        #: The nodes at its ends (None: the session's input or output).
        self.source = source
        self.target = target
        self.sequences = itertools.count()

    def put(self, frame: Frame, deadline: float | None = None) -> int:
        if frame.sequence is None or frame.timestamp_ns is None:
            frame = copy.copy(frame)
            if frame.sequence is None:
                frame.sequence = next(self.sequences)
            if frame.timestamp_ns is None:
                frame.timestamp_ns = time.monotonic_ns()
        source = self.source
        cancelled = None if source is None else source.interruptible
        self.queue.put((self, frame), deadline, cancelled=cancelled)
        return frame.sequence

    def send(self, frame: Frame, first: bool) -> None:
        self.put(frame if first else copy.copy(frame))

    def end(self, deadline: float | None = None) -> None:
        self.queue.put((self, _END), deadline)

    def flush(self) -> None:
        """Nothing to wait for: a queue loses nothing when its sender is done."""

    def mark(self, cancel: int) -> None:
        # Past the capacity: a marker waiting for room behind frames nobody reads yet
        # (the reader is the one cancelling) would hold the cancel up.
        self.queue.put((self, _Mark(cancel)), bounded=False)


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
    """One node of the session: its inbox, its node loop, the thread that runs it."""

    def __init__(
        self,
        session: InProcessSession,
        node_id: str,
        node: MultiprocessNode,
        on_error: str,
        capacity: int,
    ) -> None:
        self.session = session
        self.node_id = node_id
        self.inbox = _Queue(capacity)
        self.book = Discards()  # its inputs' discards, the cancels it handled
        self.open_inputs = 0
        #: Filled with the edges of the validated graph before the thread starts.
        self.edges: dict[str, list[Any]] = {port: [] for port in type(node).outputs}
        self.loop = NodeLoop(
            node_id, node, on_error=on_error, outputs=self.edges, reports=self, cancels=self
        )
        self.state = "initializing"
        self.started_at = time.time()
        self.init_secs: float | None = None
        self.init_error: BaseException | None = None
        self.init_traceback = ""
        self.ready = threading.Event()
        self.thread = threading.Thread(
            target=self._run, name=f"zerohop-node-{node_id}", daemon=True
        )

    def frame_error(self, error: str, traceback: str, sequence: int | None) -> None:
        self.session.frame_error(self.node_id, error, traceback, sequence)

    def node_error(self, error: str, traceback: str, sequence: int | None) -> None:
        self.state = "error"
        self.session.fail(
            NodeError(
                f"node '{self.node_id}' raised: {error}", node_id=self.node_id, traceback=traceback
            )
        )

    # Cancels (`NodeLoop`'s `Cancels`).

    def pending(self) -> bool:
        # A cancel whose marker came before its notice was handled already.
        return bool(self.inbox.notices) and self.book.waiting(list(self.inbox.notices))

    def interruptible(self) -> bool:
        """Whether a cancel cuts the node's send short: one of what ``process`` emits
        (never a marker), with a cancel waiting."""
        loop = self.loop
        return loop.busy and not loop.marking and self.pending()

    def announce(self, cancel: int) -> None:
        self.session.route_cancel(self, cancel)

    def _inputs(self) -> Iterator[Frame | int]:
        """The frames of every input, in arrival order, until each has ended, and the
        id of each cancel that reached the node (the frames it covers dropped)."""
        open_inputs = self.open_inputs
        book = self.book
        while open_inputs:
            edge, item = self.inbox.get()
            if item is _NOTICE:
                notice = self.inbox.notices.popleft()
                if book.notice(notice.id, notice.discard):
                    yield notice.id
            elif item is _END:
                open_inputs -= 1
            elif isinstance(item, _Mark):
                if book.mark(edge, item.cancel):
                    yield item.cancel
            elif not book.discarding(edge):
                item.port = edge.tag
                yield item

    def _run(self) -> None:
        started = time.monotonic()
        try:
            ctx = self.loop.context(
                self.session.id, lambda f, m: self.session.progress(self.node_id, f, m)
            )
            self.loop.node.initialize(ctx)
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
            self.loop.run(self._inputs())
            while True:  # every input ended: wait to be stopped
                if self.inbox.get()[1] is _NOTICE:
                    self.inbox.notices.popleft()
        except (Stopped, NodeFailed):
            pass
        finally:
            if self.state != "error":
                self.state = "stopped"
            self.loop.close()


class InProcessSession(Session):
    """A pipeline whose nodes are threads of this process (``executor="inprocess"``)."""

    def __init__(
        self,
        pipeline: Pipeline,
        graph: _native.Graph,
        *,
        on_progress: EventCallback | None = None,
    ) -> None:
        super().__init__(
            graph.name, [p.label for p in graph.inputs], [p.label for p in graph.outputs]
        )
        capacity = pipeline.config.channel.capacity
        self.id = f"inprocess-{id(self):x}"
        self._on_progress = on_progress
        self._lock = threading.Lock()
        self._failure: BaseException | None = None
        self._threads: dict[str, _NodeThread] = {}
        nodes = {n["id"]: n for n in pipeline.graph("inprocess")["nodes"]}
        for node_id, cls in pipeline.node_classes().items():
            spec = nodes[node_id]
            # Refused by `Pipeline.session` before this executor is picked.
            assert not isinstance(cls, RemoteNodeType), "remote nodes run multiprocess"
            node = (
                _NativeNode(cls.node_type, spec["params"], node_id)
                if isinstance(cls, NativeNodeType)
                else cls(spec["params"], node_id=node_id)
            )
            self._threads[node_id] = _NodeThread(self, node_id, node, spec["on_error"], capacity)
        # The wiring of the validated graph, as the multiprocess executor has it.
        for source, target in graph.edges:
            into, out_of = self._threads[target.node_id], self._threads[source.node_id]
            out_of.edges[source.port].append(_Edge(into.inbox, target.port, out_of, into))
            into.open_inputs += 1
        self._inputs = []
        for port in graph.inputs:
            into = self._threads[port.node_id]
            self._inputs.append(_Edge(into.inbox, port.port, None, into))
            into.open_inputs += 1
        # Each session output holds up to `capacity` frames, as its channel would.
        self._out = _Queue(capacity * max(1, len(graph.outputs)))
        for port in graph.outputs:
            out_of = self._threads[port.node_id]
            out_of.edges[port.port].append(_Edge(self._out, port.label, out_of, None))
        self._open_outputs = len(graph.outputs)
        self._out_book = Discards()
        self._start(pipeline.config.process.init_timeout_secs)

    def progress(self, node_id: str, fraction: float | None, message: str) -> None:
        if self._on_progress is not None:
            with self._lock:
                self._on_progress(_native.Progress(node_id, fraction, message))

    def frame_error(self, node_id: str, error: str, tb: str, sequence: int | None) -> None:
        self._out.put((None, _native.SkippedFrame(node_id, error, tb, sequence)), bounded=False)

    def route_cancel(self, origin: _NodeThread | None, cancel: int) -> None:
        """Posts cancel ``cancel`` from ``origin`` (None: the session's inputs) to every
        node downstream and to the outputs, each with the edges its marker comes on
        (see :mod:`zerohop.cancel`)."""

        def edges_of(thread: _NodeThread) -> list[_Edge]:
            return [e for edges in thread.edges.values() for e in edges]

        starts = self._inputs if origin is None else edges_of(origin)
        reached: list[_NodeThread] = []
        todo = [e.target for e in starts]
        while todo:
            thread = todo.pop()
            if thread is None or thread is origin or thread in reached:
                continue
            reached.append(thread)
            todo.extend(e.target for e in edges_of(thread))
        senders = [origin, *reached]  # None stands for the session's inputs
        for thread in reached:
            into = [
                e
                for source in senders
                for e in (self._inputs if source is None else edges_of(source))
                if e.target is thread
            ]
            thread.inbox.notify(Notice(cancel, tuple(into)))
        outputs = [
            e
            for source in senders
            if source is not None
            for e in edges_of(source)
            if e.target is None
        ]
        if outputs:
            self._out.notify(Notice(cancel, tuple(outputs)))

    def _cancel(self) -> int:
        self._raise_failure()
        cancel = new_id()
        self.route_cancel(None, cancel)
        try:
            for edge in self._inputs:
                edge.mark(cancel)
        except Stopped:
            raise self._stopped() from None
        return cancel

    def fail(self, err: BaseException) -> None:
        """Ends the session with ``err``: every node stops, the next call raises it."""
        with self._lock:
            if self._failure is None:
                self._failure = err
        self._stop_all()

    def _stop_all(self) -> None:
        for t in self._threads.values():
            t.inbox.close()
        self._out.close()

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
                raise NodeInitError(
                    f"node '{t.node_id}' failed to initialize: {describe(t.init_error)}",
                    node_id=t.node_id,
                    traceback=t.init_traceback,
                )
            if self._on_progress is not None:
                self._on_progress(_native.Ready(t.node_id, t.init_secs or 0.0))

    def _raise_failure(self) -> None:
        if self._failure is not None:
            raise self._failure from None  # not "while handling Stopped"

    def _stopped(self) -> ChannelClosedError:
        self._raise_failure()
        return ChannelClosedError(f"session of pipeline '{self.name}' is closed")

    def _send(self, index: int, frame: Frame, timeout: float | None) -> int:
        self._raise_failure()
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            return self._inputs[index].put(frame, deadline)
        except Stopped:
            raise self._stopped() from None
        except ZerohopTimeoutError:
            raise ZerohopTimeoutError(f"send timed out after {timeout} s") from None

    def _end_inputs(self, timeout: float | None) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            for edge in self._inputs:
                edge.end(deadline)
        except Stopped:
            raise self._stopped() from None

    def _next(self, timeout: float | None) -> Frame | _native.SkippedFrame | None:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            self._raise_failure()
            if self._open_outputs == 0:
                return None
            try:
                edge, item = self._out.get(deadline)
            except Stopped:
                raise self._stopped() from None
            except ZerohopTimeoutError:
                raise ZerohopTimeoutError(f"no output within {timeout} s") from None
            if item is _NOTICE:
                notice = self._out.notices.popleft()
                if self._out_book.notice(notice.id, notice.discard):
                    return output_frame(notice.id, self.output_labels[0])
            elif item is _END:
                self._open_outputs -= 1
            elif isinstance(item, _Mark):
                if self._out_book.mark(edge, item.cancel):
                    return output_frame(item.cancel, self.output_labels[0])
            elif isinstance(item, Frame):
                if not self._out_book.discarding(edge):
                    item.source = edge.tag
                    return item
            else:
                return item  # type: ignore[no-any-return]

    def metrics(self) -> str:
        rows = [
            (type(t.loop.node).node_type or "", t.loop.frames_in, t.loop.frames_out, None, False)
            for t in self._threads.values()
        ]
        used, capacity = 0, 0
        for edge in self._inputs:
            queued, most = edge.queue.credits()
            used, capacity = used + queued, capacity + most
        return _native.encode_metrics(rows, used, capacity)

    def status(self) -> list[NodeStatus]:
        return [
            NodeStatus(
                t.node_id,
                "processing" if t.loop.busy else t.state,
                started_at=t.started_at,
                init_secs=t.init_secs,
                frames_in=t.loop.frames_in,
                frames_out=t.loop.frames_out,
            )
            for t in self._threads.values()
        ]

    def _shutdown(self) -> None:
        self._stop_all()
        for t in self._threads.values():
            if t.thread.is_alive():
                t.thread.join(5)

    def _close(self) -> None:
        self._shutdown()
