"""The node loop: receive → ``process`` → send, and at the end of the input ``flush``
and pass the end of stream on. Both executors run every Python node with this one loop.

The multiprocess runner (``zerohop.runner``) gives it shared-memory ports; the
in-process executor (:mod:`zerohop.inprocess`) gives it queue ports. What the loop
promises — outputs inherit their input's metadata, fan-out sends the frame to the first
edge and a copy to the others, control frames pass a node that does not take them,
``on_error="skip"`` reports a frame and goes on while ``"fail"`` ends the node, the end
of every input flushes the node once and ends every output, a neighbour gone ends the
loop quietly (the session reports the node that failed) — is kept here, once, so the
executors cannot drift apart. The ports keep the promises of a channel: a full
receiver blocks a send (backpressure), a stop request interrupts any wait.

A port is anything with the methods of :class:`Output`; the inputs are an iterable of
frames (their ``port`` set) that ends once every input has ended, with the id (an int)
of each cancel that reached the node among them (:mod:`zerohop.cancel`): the loop calls
``on_cancel`` and sends the cancel's marker on every output. The executor's
:class:`Cancels` says when a cancel waits, so that a ``process`` in progress stops at
its next output.

Examples
--------
A node driven by hand, its one output a list:

>>> from zerohop import Json, Text
>>> from zerohop.node_loop import NodeLoop
>>> from zerohop.nodes.testing import UpperCase
>>> class Collect:
...     def __init__(self):
...         self.sent = []
...     def send(self, frame, first):
...         self.sent.append(frame.text)
...     def end(self):
...         self.sent.append("<end>")
...     def flush(self):
...         pass
>>> class Report:
...     def frame_error(self, error, traceback, sequence):
...         print(f"frame {sequence} skipped: {error}")
...     def node_error(self, error, traceback, sequence):
...         print(f"failed: {error}")
>>> out = Collect()
>>> loop = NodeLoop(
...     "up", UpperCase({}, node_id="up"), on_error="skip", outputs={"out": [out]}, reports=Report()
... )
>>> loop.run([Text("a"), Json({"not": "text"}), Text("c")])
frame None skipped: AttributeError: ...
>>> out.sent
['A', 'C', '<end>']
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import traceback
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from .cancel import CancelRequested, new_id
from .data import Frame
from .errors import ChannelClosedError
from .node import MultiprocessNode, NodeContext, iter_outputs, takes_control

__all__ = ["Cancels", "NodeFailed", "NodeLoop", "Output", "Reports", "Stopped", "describe"]


class Stopped(BaseException):
    """The host asked the node to stop: raised by a port to leave any wait (a
    BaseException, so that node code catching ``Exception`` cannot swallow it)."""


class NodeFailed(BaseException):
    """The node raised under ``on_error="fail"``: reported; its loop has ended."""


class Output(Protocol):
    """One edge out of an output port."""

    def send(self, frame: Frame, first: bool) -> None:
        """Sends ``frame`` (``first``: the port's first edge, which may take the frame
        itself; the others get a copy). Blocks while the receiver is full; raises
        :class:`~zerohop.errors.ChannelClosedError` once it is gone, :class:`Stopped`
        when the host says stop."""

    def end(self) -> None:
        """Sends the end of stream."""

    def flush(self) -> None:
        """Waits until the receiver has taken everything sent."""

    def mark(self, cancel: int) -> None:
        """Sends the marker of ``cancel`` (see :mod:`zerohop.cancel`)."""


class Cancels(Protocol):
    """The executor's side of cancels for one node."""

    def pending(self) -> bool:
        """Whether a cancel has reached the node and waits to be handled."""

    def announce(self, cancel: int) -> None:
        """Tells the executor that this node cancels (its markers follow)."""


class Reports(Protocol):
    """Where the loop reports a frame's failure (``sequence`` of the input frame, or
    ``None`` at flush)."""

    def frame_error(self, error: str, traceback: str, sequence: int | None) -> None: ...

    def node_error(self, error: str, traceback: str, sequence: int | None) -> None: ...


class _DownstreamGone(Exception):
    """A channel this node feeds lost its receiver: the loop ends quietly."""


def describe(err: BaseException) -> str:
    """``"TypeName: message"`` (or the type name alone), as errors are reported."""
    text = str(err)
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


class NodeLoop:
    """Runs one node: its outputs wired to ``outputs`` (port → edges, in order), its
    failures reported to ``reports``, its policy ``on_error``."""

    def __init__(
        self,
        node_id: str,
        node: MultiprocessNode,
        *,
        on_error: str,
        outputs: dict[str, list[Output]],
        reports: Reports,
        cancels: Cancels | None = None,
    ) -> None:
        self.node_id = node_id
        self.node = node
        self.on_error = on_error
        self.outputs = outputs
        self.reports = reports
        self.default_output = next(iter(outputs), None)
        self.takes_control = takes_control(type(node))
        self.frames_in = 0
        self.frames_out = 0
        self.busy = False
        #: True while the loop sends markers: a cancel must not interrupt those.
        self.marking = False
        self.cancels = cancels
        self.last_input: Frame | None = None
        self._event_loop: asyncio.AbstractEventLoop | None = None

    def context(
        self,
        session_id: str,
        progress: Callable[[float | None, str], None],
        loan: Callable[[str | None], Any] | None = None,
        threads: int | None = None,
    ) -> NodeContext:
        """The context ``initialize`` gets: ``ctx.send`` emits through this loop."""
        cancels = self.cancels
        return NodeContext(
            self.node_id,
            session_id,
            progress=progress,
            emit=self.emit,
            loan=loan,
            threads=threads,
            cancel=None if cancels is None else self.originate,
            cancel_pending=None if cancels is None else cancels.pending,
        )

    # ------------------------------------------------------------------ sending

    def emit(self, frame: Any, port: str | None = None) -> None:
        """Sends one output of the node (a frame, or a ``(port, frame)`` pair) to every
        edge of its port; it inherits the metadata of the input in hand."""
        if isinstance(frame, tuple) and len(frame) == 2 and isinstance(frame[0], str):
            port, frame = frame
        if not isinstance(frame, Frame):
            raise TypeError(
                f"node '{self.node_id}' produced {type(frame).__name__}; nodes must produce "
                "zerohop frames (Audio, Video, Tensor, Text, Json, Bytes) or (port, frame)"
            )
        target = port or self.default_output
        edges = self.outputs.get(target or "")
        if edges is None:
            raise ValueError(f"node '{self.node_id}' has no output port {target!r}")
        if self.last_input is not None:
            frame._inherit(self.last_input)
        # The extra edges get copies first: the first edge may take the frame itself
        # (a loan goes out without a copy, and only once).
        for edge in edges[1:]:
            edge.send(frame, False)
        if edges:
            edges[0].send(frame, True)
        self.frames_out += 1

    def _emit_all(self, result: Any) -> None:
        # A cancel cuts short what `process` emits, not `flush` (every input has
        # ended: nothing after it is left to keep) nor a control frame passed on.
        pending = self.cancels.pending if self.cancels is not None and self.busy else None
        try:
            for item in iter_outputs(result, self._loop):
                self.emit(item)
                if pending is not None and pending():
                    raise CancelRequested
        except CancelRequested:
            # The node's work stops at this output: its generator is closed now, not
            # whenever it is collected.
            if inspect.isgenerator(result):
                result.close()
            elif inspect.isasyncgen(result):
                self._loop().run_until_complete(result.aclose())
            raise

    def _loop(self) -> asyncio.AbstractEventLoop:
        if self._event_loop is None:
            self._event_loop = asyncio.new_event_loop()
        return self._event_loop

    # ------------------------------------------------------------------ running

    def run(self, inputs: Iterable[Frame | int]) -> None:
        """Handles every input frame, then (every input ended) flushes the node, ends
        every output and waits until the receivers took everything. Returns early, quietly,
        when a neighbour is gone; raises :class:`Stopped` when the host says stop and
        :class:`NodeFailed` when the node failed under ``on_error="fail"``."""
        try:
            for frame in inputs:
                if isinstance(frame, int):
                    self.cancel(frame)
                    continue
                # Cut short by a cancel: the inputs bring it next.
                with contextlib.suppress(CancelRequested):
                    self.handle(frame)
            self._run_user(self.node.flush, None)
            for edges in self.outputs.values():
                for edge in edges:
                    edge.end()
            for edges in self.outputs.values():
                for edge in edges:
                    edge.flush()
        except (ChannelClosedError, _DownstreamGone):
            pass

    def cancel(self, cancel: int) -> None:
        """Cancel ``cancel`` reached the node: ``on_cancel``, then its marker on every
        output (the inputs drop what it covers; see :mod:`zerohop.cancel`)."""
        self._run_user(self.node.on_cancel, None)
        self._mark(cancel)

    def originate(self) -> int:
        """The node cancels what is in flight downstream of it (``ctx.cancel()``)."""
        assert self.cancels is not None
        cancel = new_id()
        self.cancels.announce(cancel)
        self._mark(cancel)
        return cancel

    def _mark(self, cancel: int) -> None:
        self.marking = True
        try:
            for edges in self.outputs.values():
                for edge in edges:
                    edge.mark(cancel)
        finally:
            self.marking = False

    def handle(self, frame: Frame) -> None:
        """One input frame: ``process`` (a control frame passes a node that does not
        take them, see :mod:`zerohop.node`), and what it emits sent on."""
        self.frames_in += 1
        self.last_input = frame
        if frame.kind == "control" and not self.takes_control:
            self._run_user(lambda: [frame], frame.sequence)
            return
        self.busy = True
        try:
            self._run_user(lambda: self.node.process(frame), frame.sequence)
        finally:
            self.busy = False

    def _run_user(self, call: Callable[[], Any], sequence: int | None) -> None:
        """Runs node code and sends what it emits; applies the ``on_error`` policy."""
        try:
            self._emit_all(call())
        except ChannelClosedError:
            # A neighbour is gone: the session is ending and reports the node that
            # failed. This one only waits to be stopped.
            raise _DownstreamGone from None
        except Exception as err:
            if self.on_error == "skip":
                self.reports.frame_error(describe(err), traceback.format_exc(), sequence)
                return
            self.reports.node_error(describe(err), traceback.format_exc(), sequence)
            raise NodeFailed from None

    def close(self) -> None:
        """Runs the node's ``cleanup`` (its errors printed, not raised) and closes the
        event loop its ``async`` code ran on."""
        try:
            self.node.cleanup()
        except Exception:
            traceback.print_exc()
        finally:
            if self._event_loop is not None:
                self._event_loop.close()
