"""Shared-memory channels between processes: one :class:`Sender`, one :class:`Receiver`.

A channel is an iceoryx2 publish-subscribe service. The receiver queues up to
``capacity`` frames; past that, ``send`` blocks until the receiver catches up (or its
``timeout`` expires) — frames are never dropped. Both ends are found by name, so two
processes that agree on a name are connected.

Examples
--------
>>> import numpy as np
>>> from zerohop import Receiver, Sender, Tensor
>>> with Sender("doc-example") as tx, Receiver("doc-example") as rx:
...     _ = tx.send(Tensor(np.arange(4, dtype=np.float32)))
...     rx.recv(timeout=5).array.tolist()
[0.0, 1.0, 2.0, 3.0]

Zero-copy send: loan the frame, fill its array in place, send it.

>>> with Sender("doc-loan") as tx, Receiver("doc-loan") as rx:
...     frame = tx.loan_tensor((3,), "int16")
...     frame.array[:] = [1, 2, 3]
...     _ = tx.send(frame)
...     rx.recv(timeout=5).array.tolist()
[1, 2, 3]

Received arrays are read-only views into shared memory that stay valid while you hold
them. A process may hold ``channel.max_borrowed`` such views per channel (default 16);
frames received beyond that are copied out of shared memory instead, so holding views
never stalls the channel.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import TYPE_CHECKING, Self, TypeVar

from . import _native
from .data import Audio, Bytes, Frame, PixelFormat, Tensor, Video, from_raw
from .errors import ChannelClosedError, EndOfStream, FrameError

if TYPE_CHECKING:
    from .config import ChannelConfig

__all__ = ["Receiver", "Sender"]


class Closing:
    """``with`` support for anything that has ``close()``."""

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _settings(
    config: ChannelConfig | None, capacity: int | None, max_payload: int | None
) -> _native.ChannelSettings:
    if config is None:
        from .config import load_config  # host side: a node process is given its settings

        config = load_config().channel
    return config.settings(capacity=capacity, max_payload=max_payload)


F = TypeVar("F", bound=Frame)


def _fresh(frame: F) -> F:
    """A just-loaned frame has no sequence or timestamp yet: the send stamps them."""
    frame.sequence = None
    frame.timestamp_ns = None
    return frame


class Sender(Closing):
    """The writing end of channel ``name`` (created if it does not exist).

    Parameters
    ----------
    name : str
        Channel name; the receiver opens the same name.
    capacity, max_payload : int, optional
        Override ``runtime.toml``'s ``[channel]`` values for this channel.
    session_id : int
        Stamped into every frame's header.
    config : ChannelConfig, optional
        Channel settings to use instead of the loaded ``runtime.toml``.
    """

    def __init__(
        self,
        name: str,
        *,
        capacity: int | None = None,
        max_payload: int | None = None,
        session_id: int = 0,
        config: ChannelConfig | None = None,
    ) -> None:
        self.name = name
        self._native: _native.Sender | None = None
        settings = _settings(config, capacity, max_payload)
        self._native = _native.Sender(name, settings, session_id=session_id)

    @classmethod
    def wrap(cls, native: _native.Sender, name: str) -> Sender:
        """A Sender around a native one the executor created (a session input)."""
        sender = cls.__new__(cls)
        sender.name = name
        sender._native = native
        return sender

    def _ends(self) -> _native.Sender:
        if self._native is None:
            raise ChannelClosedError(f"sender of channel '{self.name}' is closed")
        return self._native

    def send(self, frame: Frame, *, timeout: float | None = None) -> int:
        """Sends ``frame``; returns its sequence number.

        A loaned frame goes out without a copy; any other frame is copied once into
        shared memory. Blocks while the receiver's queue is full; raises
        :class:`~zerohop.errors.ZerohopTimeoutError` after ``timeout`` seconds.
        """
        native = self._ends()
        raw = frame.raw
        if frame._sent:
            raise FrameError("this loaned frame was already sent; loan a new one")
        # The metadata block goes with the frame: a received frame's own unless it was
        # read or changed here (then the block as it is now).
        meta = frame._meta_for_send()
        if raw is not None and raw.is_loan:
            sequence = native.send_loan(
                raw,
                sequence=frame.sequence,
                timestamp_ns=frame.timestamp_ns,
                timeout=timeout,
                meta=meta,
            )
            frame._sent = True
        elif raw is not None:
            sequence = native.send_frame(
                raw,
                sequence=frame.sequence,
                timestamp_ns=frame.timestamp_ns,
                timeout=timeout,
                meta=meta,
            )
        else:
            dtype, shape, payload, header = frame._wire()
            sequence = native.send(
                frame.kind,
                dtype,
                shape,
                payload,
                sequence=frame.sequence,
                timestamp_ns=frame.timestamp_ns,
                timeout=timeout,
                meta=meta,
                **header,
            )
        return sequence

    def loan_tensor(self, shape: tuple[int, ...] | int, dtype: str = "float32") -> Tensor:
        """Loans a tensor frame in shared memory; fill ``.array`` then :meth:`send` it."""
        dims = (shape,) if isinstance(shape, int) else tuple(shape)
        return _fresh(Tensor._from(self._ends().loan("tensor", str(dtype), dims)))

    def loan_audio(
        self, frames: int, *, sample_rate: int, channels: int = 1, dtype: str = "float32"
    ) -> Audio:
        """Loans an audio frame of ``frames`` samples per channel; fill ``.samples``."""
        shape = (frames,) if channels == 1 else (frames, channels)
        raw = self._ends().loan(
            "audio", str(dtype), shape, sample_rate=sample_rate, channels=channels
        )
        return _fresh(Audio._from(raw))

    def loan_video(self, width: int, height: int, pixel_format: PixelFormat = "rgb24") -> Video:
        """Loans a video frame; fill ``.pixels``."""
        shapes: dict[str, tuple[int, ...]] = {
            "rgb24": (height, width, 3),
            "rgba": (height, width, 4),
            "gray": (height, width),
            "yuv420p": (width * height * 3 // 2,),
        }
        if pixel_format not in shapes:
            raise FrameError(f"unknown pixel format {pixel_format!r}")
        raw = self._ends().loan(
            "video",
            "uint8",
            shapes[pixel_format],
            width=width,
            height=height,
            pixel_format=pixel_format,
        )
        return _fresh(Video._from(raw))

    def loan_bytes(self, size: int) -> Bytes:
        """Loans ``size`` raw bytes; fill ``.data``."""
        return _fresh(Bytes._from(self._ends().loan("bytes", "uint8", (size,))))

    def send_end_of_stream(self, timeout: float | None = None) -> None:
        """Tells the receiver that no more frames follow: its ``recv`` raises
        :class:`~zerohop.errors.EndOfStream` once it has taken every frame before, and
        iterating it ends there (a node flushes and passes the end on)."""
        self._ends().send_end_of_stream(timeout=timeout)

    def flush(self, timeout: float | None = None) -> None:
        """Waits until the receiver has taken every frame sent so far."""
        self._ends().flush(timeout)

    def close(self) -> None:
        """Releases this end. Frames already sent stay receivable: until the receiver
        has taken them (or goes away), the channel lingers in the background."""
        self._native = None

    def __repr__(self) -> str:
        return f"Sender({self.name!r})"


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class Receiver(Closing):
    """The reading end of channel ``name`` (opened, or created if the sender is not
    there yet). Parameters as for :class:`Sender`."""

    def __init__(
        self,
        name: str,
        *,
        capacity: int | None = None,
        max_payload: int | None = None,
        config: ChannelConfig | None = None,
    ) -> None:
        self.name = name
        self._native: _native.Receiver | None = None
        self._native = _native.Receiver(name, _settings(config, capacity, max_payload))

    @classmethod
    def wrap(cls, native: _native.Receiver, name: str) -> Receiver:
        """A Receiver around a native one made elsewhere (a node process's input)."""
        receiver = cls.__new__(cls)
        receiver.name = name
        receiver._native = native
        return receiver

    def _ends(self) -> _native.Receiver:
        if self._native is None:
            raise ChannelClosedError(f"receiver of channel '{self.name}' is closed")
        return self._native

    def recv(self, timeout: float | None = None) -> Frame:
        """Waits for the next frame. Ctrl-C interrupts the wait.

        Raises :class:`~zerohop.errors.ZerohopTimeoutError` after ``timeout`` seconds,
        :class:`~zerohop.errors.EndOfStream` at the sender's end of stream,
        :class:`~zerohop.errors.ChannelClosedError` once the sender is gone and
        nothing is left, :class:`~zerohop.errors.FrameError` for a malformed frame.
        """
        return self._frame(self._ends().recv(timeout))

    def try_recv(self) -> Frame | None:
        """The next frame if one is waiting, else ``None`` (raises as :meth:`recv`)."""
        raw = self._ends().try_recv()
        return None if raw is None else self._frame(raw)

    def _frame(self, raw: _native.RawFrame) -> Frame:
        if raw.is_end_of_stream:
            raise EndOfStream(f"channel '{self.name}': the sender ended the stream")
        return from_raw(raw)

    async def arecv(self, timeout: float | None = None) -> Frame:
        """Awaits the next frame without blocking the event loop."""
        return await asyncio.wait_for(self._arecv(), timeout)

    async def _arecv(self) -> Frame:
        native = self._ends()
        frame = native.try_recv()
        if frame is not None:
            return self._frame(frame)
        loop = asyncio.get_running_loop()
        fd = native.wait_fd()
        while True:
            ready: asyncio.Future[None] = loop.create_future()
            loop.add_reader(fd, _resolve, ready)
            try:
                frame = native.try_recv()
                if frame is None:
                    await ready
                    frame = native.try_recv()
            finally:
                loop.remove_reader(fd)
            if frame is not None:
                return self._frame(frame)

    def wait_fd(self) -> int:
        """A file descriptor that turns readable when a frame may be waiting."""
        return self._ends().wait_fd()

    def __iter__(self) -> Iterator[Frame]:
        """Yields frames until the sender ends the stream or goes away."""
        while True:
            try:
                yield self.recv()
            except ChannelClosedError:
                return

    def close(self) -> None:
        """Releases this end (frames you still hold stay valid)."""
        self._native = None

    def __repr__(self) -> str:
        return f"Receiver({self.name!r})"
