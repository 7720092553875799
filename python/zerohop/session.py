"""Sessions: a pipeline's nodes running, fed with frames, yielding frames.

A session is started by :meth:`Pipeline.session` and is used as a context manager,
sync or async, so that its nodes stop when you are done. ``send`` blocks when the
pipeline falls behind (backpressure, never drops); ``run(inputs)`` sends everything,
ends the input and returns every output; ``stream(frames)`` sends from a background
thread while it yields outputs, for long or endless inputs. Any node failure ends the
whole session: all nodes are stopped and the next call raises the error that names the
node.

Examples
--------
Frame by frame: send, end the input, read the outputs (``frame.source`` names the
output node):

>>> from zerohop import Pipeline, Text
>>> pipe = Pipeline("shout").node("upper", "UpperCase")
>>> with pipe.session() as session:
...     _ = session.send(Text("hi"))
...     session.end_input()
...     [(frame.source, frame.text) for frame in session.outputs(timeout=10)]
[('upper', 'HI')]

The same with asyncio:

>>> import asyncio
>>> async def shout(words):
...     async with pipe.session() as session:
...         return [frame.text async for frame in session.astream(map(Text, words))]
>>> asyncio.run(shout(["a", "b"]))
['A', 'B']
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Iterator
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

from . import _native
from .channel import Closing
from .errors import ChannelClosedError, ConfigError, ResourceLimitError, ZerohopError

if TYPE_CHECKING:
    from .data import Frame

__all__ = ["Event", "NodeStatus", "Progress", "Ready", "Session", "SkippedFrame"]

EventCallback = Callable[[Any], None]


#: One node of a running session, as :meth:`Session.status` reports it: ``node_id``,
#: ``state``, ``pid`` (None in process), ``started_at``, ``rss_bytes``, ``init_secs``,
#: ``frames_in``, ``frames_out``, ``exit`` (a frozen class of the native core).
NodeStatus = _native.NodeStatus
#: A node's initialization progress: ``node_id``, ``fraction`` (0..1 or None), ``message``.
Progress = _native.Progress
#: A node is ready: ``node_id``, ``init_secs``.
Ready = _native.Ready
#: A frame a node failed on and skipped (``on_error="skip"``): ``node_id``, ``error``,
#: ``traceback``, ``sequence``.
SkippedFrame = _native.SkippedFrame
#: What ``on_progress`` (``Progress``, then ``Ready``) and ``on_frame_error``
#: (``SkippedFrame``) see: frozen classes, matched by position (``case Progress(node,
#: fraction):``). ``event["node_id"]`` and ``event.get(...)`` (``"type"``: the kind)
#: still work as on the dicts they replace.
Event = Progress | Ready | SkippedFrame


class Session(Closing):
    """A running pipeline. Created by :meth:`Pipeline.session`."""

    def __init__(self, name: str, inputs: list[str], outputs: list[str]) -> None:
        self.name = name
        self.input_labels = inputs
        self.output_labels = outputs
        #: Every frame a node skipped (``on_error="skip"``), as it was reported.
        self.frame_errors: list[_native.SkippedFrame] = []
        self._on_frame_error: EventCallback | None = None
        self._ended = False
        self._closed = False
        #: ``(when, seconds)``: the session must be over by then (see :meth:`limit`).
        self._deadline: tuple[float, float] | None = None
        self._max_audio_samples: int | None = None

    def limit(
        self,
        *,
        deadline: float | None = None,
        max_audio_samples: int | None = None,
        since: float | None = None,
    ) -> None:
        """What a gRPC request's ``resource_limits`` ask, for a Python session:
        ``deadline`` seconds after ``since`` (``time.monotonic()``; default: now) the
        session is over (the next send or receive
        stops every node and raises :class:`~zerohop.errors.ResourceLimitError`; a
        receive waiting for a frame wakes for it), and an audio frame of more than
        ``max_audio_samples`` samples is refused before it is sent."""
        if deadline is not None:
            start = time.monotonic() if since is None else since
            self._deadline = (start + deadline, deadline)
        self._max_audio_samples = max_audio_samples

    def _check_deadline(self) -> None:
        if self._deadline is not None and time.monotonic() >= self._deadline[0]:
            self.close()
            raise ResourceLimitError(
                f"session '{self.name}' ran past its deadline of {self._deadline[1]:g} s: "
                "every node was stopped"
            )

    # --------------------------------------------------------------- backend hooks

    def _send(self, index: int, frame: Frame, timeout: float | None) -> int:
        raise NotImplementedError

    def _end_inputs(self, timeout: float | None) -> None:
        raise NotImplementedError

    def _next(self, timeout: float | None) -> Frame | _native.SkippedFrame | None:
        """The next output frame (its ``source`` set), a skipped frame's report, or
        None once every output has ended."""
        raise NotImplementedError

    def _cancel(self) -> int:
        raise NotImplementedError

    def _close(self) -> None:
        raise NotImplementedError

    def status(self) -> list[NodeStatus]:
        """State, pid, start time, RSS, init time and frame counts of every node."""
        raise NotImplementedError

    def metrics(self) -> str:
        """This session's metrics as Prometheus (OpenMetrics) text, in the names
        ``zerohop serve --metrics-port`` exposes for all its sessions: frames in and out
        and resident memory by node type, node processes, and the credits in use in the
        session's input channels (frames sent and not yet taken)."""
        raise NotImplementedError

    # --------------------------------------------------------------- sending

    def _input_index(self, to: str | None) -> int:
        if to is None:
            if len(self.input_labels) != 1:
                raise ConfigError(
                    f"this pipeline has {len(self.input_labels)} inputs "
                    f"({', '.join(self.input_labels)}); say which with to="
                )
            return 0
        try:
            return self.input_labels.index(to)
        except ValueError:
            raise ConfigError(
                f"no session input {to!r}; inputs: {', '.join(self.input_labels)}"
            ) from None

    def send(self, frame: Frame, *, to: str | None = None, timeout: float | None = None) -> int:
        """Sends ``frame`` into the pipeline (to input ``to`` when there are several).
        Blocks while the pipeline is behind; returns the frame's sequence number."""
        self._check_open()
        self._check_deadline()
        index = self._input_index(to)
        if self._max_audio_samples is not None:
            self._check_samples(frame, index)
        return self._send(index, frame, timeout)

    def _check_samples(self, frame: Frame, index: int) -> None:
        from .data import Audio

        limit = self._max_audio_samples
        if isinstance(frame, Audio) and limit is not None and frame.samples.size > limit:
            raise ResourceLimitError(
                f"input '{self.input_labels[index]}': an audio frame of "
                f"{frame.samples.size} samples is more than max_audio_samples ({limit})"
            )

    def cancel(self) -> int:
        """Cancels the work in flight: every node drops what it is doing and the frames
        queued for it, frames not yet read from the outputs are dropped, and what is
        sent after this is handled as usual (barge-in: the user talks over the reply;
        see :mod:`zerohop.cancel`). The outputs then yield a ``cancel_speculation``
        :class:`~zerohop.Control` frame ahead of anything sent later. Returns the
        cancel's id. Blocks, as a send does, while the first nodes are full and the
        outputs unread (the cancel's markers must reach every input). After
        :meth:`end_input` it raises :class:`~zerohop.errors.ChannelClosedError`."""
        self._check_open()
        self._check_deadline()
        if self._ended:
            raise ChannelClosedError(f"session of pipeline '{self.name}': its input has ended")
        return self._cancel()

    def end_input(self, timeout: float | None = None) -> None:
        """Ends the input stream: nodes flush, and ``outputs()`` ends after the last frame."""
        if not self._ended:
            self._ended = True
            self._end_inputs(timeout)

    # --------------------------------------------------------------- receiving

    def recv(self, timeout: float | None = None) -> Frame | None:
        """The next output frame (``frame.source`` names the node), or ``None`` once
        every output has ended. Raises the session's failure if a node failed."""
        self._check_open()
        while True:
            self._check_deadline()
            wait = timeout
            if self._deadline is not None:
                left = max(0.0, self._deadline[0] - time.monotonic())
                wait = left if wait is None else min(wait, left)
            try:
                item = self._next(wait)
            except ZerohopError as err:
                # A wait cut short by the deadline is the deadline's failure.
                if isinstance(err, TimeoutError):
                    self._check_deadline()
                raise
            if not isinstance(item, _native.SkippedFrame):
                return item
            self.frame_errors.append(item)
            if self._on_frame_error is not None:
                self._on_frame_error(item)

    def outputs(self, timeout: float | None = None) -> Iterator[Frame]:
        """Yields output frames until the stream ends (after :meth:`end_input`).
        ``timeout`` bounds the wait for each frame."""
        while (frame := self.recv(timeout)) is not None:
            yield frame

    def stream(self, frames: Iterable[Frame], *, to: str | None = None) -> Iterator[Frame]:
        """Feeds ``frames`` from a background thread while yielding outputs, so a long
        or endless input never deadlocks against the outputs; ends the input when
        ``frames`` is exhausted."""
        feeder_error: list[BaseException] = []

        def feed() -> None:
            try:
                for frame in frames:
                    self.send(frame, to=to)
                self.end_input()
            except BaseException as err:
                feeder_error.append(err)

        feeder = threading.Thread(target=feed, name="zerohop-feeder", daemon=True)
        feeder.start()
        try:
            while True:
                try:
                    frame = self.recv(timeout=0.1)
                except ZerohopError as err:
                    if isinstance(err, TimeoutError):
                        if feeder_error:
                            raise feeder_error[0] from None
                        continue
                    raise
                if frame is None:
                    break
                yield frame
        finally:
            if feeder.is_alive():
                self.close()
            feeder.join()
        if feeder_error:
            raise feeder_error[0]

    def run(self, inputs: Frame | Iterable[Frame], *, to: str | None = None) -> list[Frame]:
        """Sends all ``inputs``, ends the input, and returns every output frame."""
        from .data import Frame

        items = [inputs] if isinstance(inputs, Frame) else inputs
        return list(self.stream(items, to=to))

    # --------------------------------------------------------------- asyncio

    async def asend(self, frame: Frame, *, to: str | None = None) -> int:
        """``send`` without blocking the event loop."""
        return await asyncio.to_thread(self.send, frame, to=to)

    async def arecv(self) -> Frame | None:
        """``recv`` without blocking the event loop."""
        return await asyncio.to_thread(self.recv)

    async def astream(
        self, frames: AsyncIterable[Frame] | Iterable[Frame], *, to: str | None = None
    ) -> AsyncIterator[Frame]:
        """``stream`` for asyncio: feeds ``frames`` (sync or async iterable)."""

        async def feed() -> None:
            if isinstance(frames, AsyncIterable):
                async for frame in frames:
                    await self.asend(frame, to=to)
            else:
                for frame in frames:
                    await self.asend(frame, to=to)
            await asyncio.to_thread(self.end_input)

        feeder = asyncio.ensure_future(feed())
        try:
            while (frame := await self.arecv()) is not None:
                yield frame
            await feeder
        finally:
            if not feeder.done():
                self.close()
                feeder.cancel()

    async def arun(self, inputs: Iterable[Frame]) -> list[Frame]:
        """``run`` for asyncio."""
        return [frame async for frame in self.astream(inputs)]

    # --------------------------------------------------------------- lifecycle

    def _check_open(self) -> None:
        if self._closed:
            raise ChannelClosedError(f"session of pipeline '{self.name}' is closed")

    def close(self) -> None:
        """Stops every node (cooperatively, then by signal) and releases all shared
        memory. Idempotent."""
        if not self._closed:
            self._closed = True
            self._close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await asyncio.to_thread(self.close)

    def __repr__(self) -> str:
        state = "closed" if self._closed else "running"
        return f"<{type(self).__name__} {self.name!r} {state}>"
