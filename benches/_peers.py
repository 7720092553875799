"""Sender/receiver peers for ``benches/ipc.py``; each runs in its own spawned process.

Every transport implements the same two small interfaces:

* a sender whose ``send(stamp_ns)`` moves the prepared payload to the other process, writing
  ``stamp_ns`` (taken by the caller right before the call) into the message; ``None`` means
  "do not rewrite the stamp" (used while streaming, where only the first stamp is read);
* a receiver whose ``recv()`` returns a zero-extra-copy ``uint8`` numpy view of the next
  message, ``stamp()`` reads the sender's stamp of that message and ``release()`` hands the
  buffer back to the transport.

Byte transports carry the stamp as a native-endian int64 in the first 8 payload bytes;
zerohop carries it in ``Tensor.timestamp_ns``.

The two peers talk to each other over a control pipe (handshake, one ack per paced message,
"done"), and each reports its outcome to the parent over its own result pipe.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib
import os
import signal
import struct
import time
import traceback
from collections import deque
from dataclasses import dataclass
from multiprocessing import shared_memory
from multiprocessing.connection import Connection
from types import FrameType
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

U8Array = npt.NDArray[np.uint8]

SLOT = struct.Struct("<I")  # shm-ring slot index, sent in both directions
HEADER_BYTES = 64  # what the "touch header" modes write per message
RECV_TIMEOUT_S = 30.0  # a receiver that waits longer than this gives up
PAYLOAD_SEED = 20240601

READY = b"R"
ACK = b"A"
DONE = b"D"


@dataclass(frozen=True)
class CellSpec:
    """Everything both peers need to run one (transport, mode, size) measurement."""

    transport: str  # pipe | shm-ring | zmq | iceoryx2 | zerohop
    mode: str  # see ipc.ROWS
    size: int  # payload bytes per message
    n_warmup: int  # paced messages sent and discarded before measuring latency
    n_latency: int  # paced messages whose one-way latency is recorded
    n_throughput: int  # messages streamed back-to-back for the throughput phase
    depth: int  # queue depth / slot count / high-water mark, the same for every transport
    channel: str  # unique name: shm segment, zmq endpoint, iceoryx2 service, zerohop channel
    cpus: tuple[int, int] | None = None  # (sender, receiver) CPU pinning; None: the scheduler's


class Sender(Protocol):
    def send(self, stamp_ns: int | None) -> None: ...

    def close(self) -> None: ...


class Receiver(Protocol):
    def recv(self) -> U8Array: ...

    def stamp(self, arr: U8Array) -> int: ...

    def release(self) -> None: ...

    def close(self) -> None: ...


def make_payload(size: int) -> U8Array:
    """The sender's source frame: prepared once, deterministic so the receiver can verify."""
    return np.random.default_rng(PAYLOAD_SEED).integers(0, 256, size, dtype=np.uint8)


def consume(arr: U8Array) -> int:
    """Read every byte of ``arr`` (a wrapping uint64 sum; the tail, if any, bytewise).

    Summing through a uint64 view reads the same bytes as ``arr.sum()`` but is ~20x faster,
    so the receiver's own work does not cap every transport at numpy's uint8-sum speed.
    """
    whole = arr.size - arr.size % 8
    total = int(arr[:whole].view(np.uint64).sum()) if whole else 0
    if whole != arr.size:
        total += int(arr[whole:].sum())
    return total


def write_stamp(arr: U8Array, stamp_ns: int) -> None:
    """Put the send stamp (native int64) in the first 8 payload bytes."""
    arr[:8].view(np.int64)[0] = stamp_ns


def read_stamp(arr: U8Array) -> int:
    """The send stamp from the first 8 payload bytes."""
    return int(arr[:8].view(np.int64)[0])


# ---------------------------------------------------------------- multiprocessing.Pipe


class PipeSender:
    """``Connection.send_bytes`` of the numpy source: the kernel copies it into the socket."""

    def __init__(self, conn: Connection, src: U8Array) -> None:
        self._conn = conn
        self._src = src

    def send(self, stamp_ns: int | None) -> None:
        if stamp_ns is not None:
            write_stamp(self._src, stamp_ns)
        self._conn.send_bytes(self._src.data)  # .data: a memoryview, no copy

    def close(self) -> None:
        self._conn.close()


class PipeReceiver:
    """``recv_bytes`` (kernel copy into a new ``bytes``) then ``np.frombuffer`` (no copy)."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self._buf: bytes | None = None

    def recv(self) -> U8Array:
        self._buf = self._conn.recv_bytes()
        return np.frombuffer(self._buf, dtype=np.uint8)

    def stamp(self, arr: U8Array) -> int:
        return read_stamp(arr)

    def release(self) -> None:
        self._buf = None

    def close(self) -> None:
        self._conn.close()


# ---------------------------------------------------- multiprocessing.shared_memory ring


def ring_slot_bytes(size: int) -> int:
    """Slot stride of the hand-rolled ring: the payload rounded up to whole 4 KiB pages."""
    return -(-size // 4096) * 4096


class _Ring:
    """Attach to the parent-created segment and expose its slots as numpy views."""

    def __init__(self, spec: CellSpec) -> None:
        # The parent created the segment and unlinks it; spawn children share the parent's
        # resource tracker, so attaching here does not lead to a second unlink.
        self.shm = shared_memory.SharedMemory(name=spec.channel)
        stride = ring_slot_bytes(spec.size)
        self.slots: list[U8Array] = [
            np.ndarray((spec.size,), dtype=np.uint8, buffer=self.shm.buf, offset=i * stride)
            for i in range(spec.depth)
        ]

    def close(self) -> None:
        self.slots.clear()
        # BufferError: a caller still holds a view; the mapping then dies with the process.
        with contextlib.suppress(BufferError):
            self.shm.close()


class RingSender:
    """Copy the source into a free slot (one memcpy), then send the slot index."""

    def __init__(self, spec: CellSpec, conn: Connection, src: U8Array) -> None:
        self._ring = _Ring(spec)
        self._conn = conn
        self._src = src
        self._free: deque[int] = deque(range(spec.depth))

    def _take_slot(self) -> int:
        while not self._free:  # every slot is with the receiver: wait for one to come back
            self._free.append(SLOT.unpack(self._conn.recv_bytes())[0])
        return self._free.popleft()

    def send(self, stamp_ns: int | None) -> None:
        if stamp_ns is not None:
            write_stamp(self._src, stamp_ns)
        index = self._take_slot()
        np.copyto(self._ring.slots[index], self._src)
        self._conn.send_bytes(SLOT.pack(index))

    def close(self) -> None:
        self._ring.close()
        self._conn.close()


class RingReceiver:
    """Receive a slot index, hand out a numpy view of that slot, send the index back."""

    def __init__(self, spec: CellSpec, conn: Connection) -> None:
        self._ring = _Ring(spec)
        self._conn = conn
        self._index = -1

    def recv(self) -> U8Array:
        self._index = SLOT.unpack(self._conn.recv_bytes())[0]
        return self._ring.slots[self._index]

    def stamp(self, arr: U8Array) -> int:
        return read_stamp(arr)

    def release(self) -> None:
        self._conn.send_bytes(SLOT.pack(self._index))

    def close(self) -> None:
        self._ring.close()
        self._conn.close()


# ------------------------------------------------------------------------------ pyzmq


class ZmqSender:
    """PUSH over ``ipc://`` with ``copy=False``.

    pyzmq then hands libzmq a reference to the numpy buffer instead of copying it into a
    message (for frames above pyzmq's ``copy_threshold``, 64 KiB by default; smaller ones are
    copied anyway). The ipc transport is a Unix socket, so the kernel still copies the bytes
    in and out, and libzmq's receive side assembles the frame in its own buffer.
    """

    def __init__(self, spec: CellSpec, src: U8Array) -> None:
        zmq = importlib.import_module("zmq")
        self._ctx: Any = zmq.Context()
        self._sock: Any = self._ctx.socket(zmq.PUSH)
        self._sock.setsockopt(zmq.SNDHWM, spec.depth)
        self._sock.bind(spec.channel)
        self._src = src

    def send(self, stamp_ns: int | None) -> None:
        # While streaming (stamp_ns None) the source is not touched, so a frame that libzmq
        # still references is never modified under it.
        if stamp_ns is not None:
            write_stamp(self._src, stamp_ns)
        self._sock.send(self._src, copy=False)

    def close(self) -> None:
        self._sock.close(linger=0)
        self._ctx.term()


class ZmqReceiver:
    """PULL with ``copy=False``; ``np.frombuffer(frame.buffer)`` views libzmq's message."""

    def __init__(self, spec: CellSpec) -> None:
        zmq = importlib.import_module("zmq")
        self._ctx: Any = zmq.Context()
        self._sock: Any = self._ctx.socket(zmq.PULL)
        self._sock.setsockopt(zmq.RCVHWM, spec.depth)
        self._sock.setsockopt(zmq.RCVTIMEO, int(RECV_TIMEOUT_S * 1000))
        self._sock.connect(spec.channel)
        self._frame: Any = None

    def recv(self) -> U8Array:
        self._frame = self._sock.recv(copy=False)
        return np.frombuffer(self._frame.buffer, dtype=np.uint8)

    def stamp(self, arr: U8Array) -> int:
        return read_stamp(arr)

    def release(self) -> None:
        self._frame = None

    def close(self) -> None:
        self._sock.close(linger=0)
        self._ctx.term()


# --------------------------------------------------------------------------- iceoryx2
#
# The iceoryx2 Python bindings (0.10.0) expose a ``Slice[ctypes.c_uint8]`` payload as a raw
# address plus a length: ``Sample.payload()`` returns an ``iceoryx2.Slice`` whose
# ``as_memory_view()`` builds a ctypes array with ``from_address`` and wraps it in a
# memoryview. ``np.frombuffer`` over that memoryview is a zero-copy view of the shared memory,
# costing a few microseconds of Python/ctypes object creation per message. The view does NOT
# keep the sample alive (nothing in the chain references the sample), so the sample's
# lifetime is managed by hand: keep it referenced while reading, then ``sample.delete()``.
# The received view is even writable although the subscriber should only read it.
#
# ``Subscriber.receive()`` never blocks, so the publisher also signals an iceoryx2 Event
# service after each send and the subscriber sleeps in ``Listener.timed_wait`` while its
# queue is empty (the idiomatic blocking pattern; busy-polling ``receive()`` would have lower
# latency but burns a whole core, which the other receivers here do not).


def _iceoryx2() -> Any:
    iox = importlib.import_module("iceoryx2")
    iox.set_log_level(iox.LogLevel.Error)  # no "No config file was loaded" banner per process
    return iox


def _iox_node(iox: Any) -> Any:
    # Signal handling off: the parent terminates peers and Python handles SIGTERM itself.
    builder = iox.NodeBuilder.new().signal_handling_mode(iox.SignalHandlingMode.Disabled)
    return builder.create(iox.ServiceType.Ipc)


def _iox_slice_view(iox_sample: Any) -> U8Array:
    return np.frombuffer(iox_sample.payload().as_memory_view(), dtype=np.uint8)


class IceoryxSender:
    """Loan a slice sample, fill it through a numpy view, send, then notify the listener."""

    def __init__(self, spec: CellSpec, src: U8Array) -> None:
        iox = _iceoryx2()
        self._node = _iox_node(iox)
        service = (
            self._node.service_builder(iox.ServiceName.new(spec.channel))
            .publish_subscribe(iox.Slice[ctypes.c_uint8])
            .max_publishers(1)
            .max_subscribers(1)
            .history_size(0)
            .subscriber_max_buffer_size(spec.depth)
            .enable_safe_overflow(False)  # lossless like the other transports ...
            .create()
        )
        self._publisher = (
            service.publisher_builder()
            .initial_max_slice_len(spec.size)
            .allocation_strategy(iox.AllocationStrategy.Static)
            .backpressure_strategy(iox.BackpressureStrategy.RetryUntilDelivered)  # ... blocking
            .create()
        )
        event = self._node.service_builder(iox.ServiceName.new(spec.channel + "-ev")).event()
        self._notifier = event.create().notifier_builder().create()
        self._services: tuple[Any, ...] = (service,)
        self._size = spec.size
        self._src = src
        self._header_only = spec.mode == "loaned-header"

    def send(self, stamp_ns: int | None) -> None:
        uninit = self._publisher.loan_slice_uninit(self._size)
        view = _iox_slice_view(uninit)
        if self._header_only:
            view[:HEADER_BYTES] = self._src[:HEADER_BYTES]
        else:
            view[:] = self._src  # one memcpy, like the other copying senders
        if stamp_ns is not None:
            write_stamp(view, stamp_ns)
        del view
        uninit.assume_init().send()
        self._notifier.notify()

    def close(self) -> None:
        self._notifier.delete()
        self._publisher.delete()
        self._services = ()


class IceoryxReceiver:
    """``Subscriber.receive()`` + numpy view of the slice; waits on the Event listener."""

    def __init__(self, spec: CellSpec) -> None:
        iox = _iceoryx2()
        self._node = _iox_node(iox)
        service = (
            self._node.service_builder(iox.ServiceName.new(spec.channel))
            .publish_subscribe(iox.Slice[ctypes.c_uint8])
            .open()
        )
        self._subscriber = service.subscriber_builder().buffer_size(spec.depth).create()
        event = self._node.service_builder(iox.ServiceName.new(spec.channel + "-ev")).event()
        self._listener = event.open().listener_builder().create()
        self._tick = iox.Duration.from_millis(100)
        self._services: tuple[Any, ...] = (service,)
        self._sample: Any = None

    def recv(self) -> U8Array:
        deadline = time.monotonic() + RECV_TIMEOUT_S
        sample = self._subscriber.receive()
        while sample is None:
            if time.monotonic() > deadline:
                raise TimeoutError(f"iceoryx2: no sample within {RECV_TIMEOUT_S} s")
            self._listener.timed_wait(self._tick)
            sample = self._subscriber.receive()
        self._sample = sample
        return _iox_slice_view(sample)

    def stamp(self, arr: U8Array) -> int:
        return read_stamp(arr)

    def release(self) -> None:
        self._sample.delete()
        self._sample = None

    def close(self) -> None:
        self._listener.delete()
        self._subscriber.delete()
        self._services = ()


# ---------------------------------------------------------------------------- zerohop


def zerohop_channel_kwargs(spec: CellSpec) -> dict[str, int]:
    """Queue depth as for every transport; 64 MiB payload limit (a limit, not an allocation:
    it also covers zerohop's frame header, which counts against it)."""
    return {"capacity": spec.depth, "max_payload": 64 << 20}


class ZerohopSender:
    """``copy-send`` wraps the source array (send copies it once into shared memory);
    ``loaned-fill`` / ``loaned-header`` loan a shm tensor and write all of it / its header."""

    def __init__(self, spec: CellSpec, src: U8Array) -> None:
        self._zh: Any = importlib.import_module("zerohop")
        self._tx: Any = self._zh.Sender(spec.channel, **zerohop_channel_kwargs(spec))
        self._src = src
        self._mode = spec.mode

    def send(self, stamp_ns: int | None) -> None:
        if self._mode == "copy-send":
            tensor = self._zh.Tensor(self._src)
        else:
            tensor = self._tx.loan_tensor((self._src.size,), "uint8")
            if self._mode == "loaned-header":
                tensor.array[:HEADER_BYTES] = self._src[:HEADER_BYTES]
            else:
                tensor.array[:] = self._src  # the fill is one memcpy too
        if stamp_ns is not None:
            tensor.timestamp_ns = stamp_ns
        self._tx.send(tensor, timeout=None)

    def close(self) -> None:
        close = getattr(self._tx, "close", None)
        if close is not None:
            close()
        self._tx = None


class ZerohopReceiver:
    """``Receiver.recv`` returns a Tensor whose ``.array`` views the shared-memory slot."""

    def __init__(self, spec: CellSpec) -> None:
        zh: Any = importlib.import_module("zerohop")
        # The same settings as the sender: both ends may create the channel, and an opener
        # asking for more than the existing channel offers would be refused.
        self._rx: Any = zh.Receiver(spec.channel, **zerohop_channel_kwargs(spec))
        self._tensor: Any = None

    def recv(self) -> U8Array:
        tensor = self._rx.recv(timeout=RECV_TIMEOUT_S)
        if tensor is None:  # recv raises ZerohopTimeoutError; this is belt and braces
            raise TimeoutError(f"zerohop: no frame within {RECV_TIMEOUT_S} s")
        self._tensor = tensor
        arr: U8Array = tensor.array
        return arr

    def stamp(self, arr: U8Array) -> int:
        return int(self._tensor.timestamp_ns)

    def release(self) -> None:
        self._tensor = None  # dropping the last reference returns the slot

    def close(self) -> None:
        close = getattr(self._rx, "close", None)
        if close is not None:
            close()
        self._rx = None


# -------------------------------------------------------------------------- factories


def open_sender(spec: CellSpec, data: Connection, src: U8Array) -> Sender:
    """Create the sending side (this side creates channels, binds sockets)."""
    if spec.transport == "pipe":
        return PipeSender(data, src)
    if spec.transport == "shm-ring":
        return RingSender(spec, data, src)
    if spec.transport == "zmq":
        return ZmqSender(spec, src)
    if spec.transport == "iceoryx2":
        return IceoryxSender(spec, src)
    if spec.transport == "zerohop":
        return ZerohopSender(spec, src)
    raise ValueError(f"unknown transport {spec.transport!r}")


def open_receiver(spec: CellSpec, data: Connection) -> Receiver:
    """Open the receiving side, after the sender has created its channel."""
    if spec.transport == "pipe":
        return PipeReceiver(data)
    if spec.transport == "shm-ring":
        return RingReceiver(spec, data)
    if spec.transport == "zmq":
        return ZmqReceiver(spec)
    if spec.transport == "iceoryx2":
        return IceoryxReceiver(spec)
    if spec.transport == "zerohop":
        return ZerohopReceiver(spec)
    raise ValueError(f"unknown transport {spec.transport!r}")


# ---------------------------------------------------------------------- peer programs


def _expect(ctl: Connection, token: bytes, timeout: float | None = None) -> None:
    if timeout is not None and not ctl.poll(timeout):
        raise TimeoutError(f"peer did not send {token!r} within {timeout} s")
    got = ctl.recv_bytes()
    if got != token:
        raise RuntimeError(f"protocol error: expected {token!r}, got {got!r}")


def stream_warmup(spec: CellSpec) -> int:
    """Messages streamed (and fully read) before the timed stream starts.

    Enough to cycle every slot of every transport's queue at least twice, so shared-memory
    pages are mapped on both sides before the clock runs; a long-running pipeline is always
    in that state.
    """
    return 2 * spec.depth + 4


def sender_main(spec: CellSpec, ctl: Connection, data: Connection) -> dict[str, Any]:
    """Paced warm-up + latency messages (one in flight: wait for each ack), then a stream."""
    src = make_payload(spec.size)
    tx = open_sender(spec, data, src)
    try:
        ctl.send_bytes(READY)
        _expect(ctl, READY, timeout=RECV_TIMEOUT_S)
        for _ in range(spec.n_warmup + spec.n_latency):
            tx.send(time.perf_counter_ns())
            _expect(ctl, ACK)
        for _ in range(stream_warmup(spec)):  # untimed burst: the streaming steady state
            tx.send(None)
        _expect(ctl, ACK)
        tx.send(time.perf_counter_ns())  # the stream's start time travels in its first frame
        for _ in range(spec.n_throughput - 1):
            tx.send(None)
        _expect(ctl, DONE, timeout=RECV_TIMEOUT_S)  # keep the channel alive until drained
    finally:
        tx.close()
    return {}


def _check_payload(spec: CellSpec, arr: U8Array) -> None:
    """Verify the first warm-up frame byte-for-byte (past the stamp) against the source."""
    if spec.mode == "loaned-header":
        return  # only the header is written in this mode, the rest is whatever the slot held
    expected = make_payload(spec.size)
    if arr.shape != expected.shape or not np.array_equal(arr[8:], expected[8:]):
        raise AssertionError(f"{spec.transport}/{spec.mode}: payload corrupted in transit")


def _measure_latency(spec: CellSpec, rx: Receiver, ctl: Connection) -> npt.NDArray[np.int64]:
    latencies = np.empty(spec.n_latency, dtype=np.int64)
    for i in range(spec.n_warmup + spec.n_latency):
        arr = rx.recv()
        _touched = (arr[0], arr[-1])  # read the first and the last element, then the clock
        now = time.perf_counter_ns()
        stamp = rx.stamp(arr)
        if i == 0:
            _check_payload(spec, arr)
        if i < spec.n_warmup:
            consume(arr)  # warm-up also maps every page of the buffers in use
        del arr
        rx.release()
        ctl.send_bytes(ACK)
        if i >= spec.n_warmup:
            latencies[i - spec.n_warmup] = now - stamp
    return latencies


def _measure_throughput(spec: CellSpec, rx: Receiver, ctl: Connection) -> tuple[int, int]:
    """Receive and read every byte of the stream; return (elapsed ns, checksum)."""
    for _ in range(stream_warmup(spec)):
        consume(rx.recv())
        rx.release()
    ctl.send_bytes(ACK)
    arr = rx.recv()
    start = rx.stamp(arr)
    checksum = consume(arr)
    del arr
    rx.release()
    for _ in range(spec.n_throughput - 1):
        arr = rx.recv()
        checksum ^= consume(arr)
        del arr
        rx.release()
    return time.perf_counter_ns() - start, checksum


def receiver_main(spec: CellSpec, ctl: Connection, data: Connection) -> dict[str, Any]:
    """Open after the sender is ready, record latencies, then time the stream."""
    _expect(ctl, READY, timeout=RECV_TIMEOUT_S)
    rx = open_receiver(spec, data)
    try:
        ctl.send_bytes(READY)
        latencies = _measure_latency(spec, rx, ctl)
        elapsed_ns, checksum = _measure_throughput(spec, rx, ctl)
        ctl.send_bytes(DONE)
    finally:
        rx.close()
    return {"latency_ns": latencies, "throughput_ns": elapsed_ns, "checksum": checksum}


def _raise_system_exit(signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def run_peer(
    role: str, spec: CellSpec, ctl: Connection, data: Connection, result: Connection
) -> None:
    """Process entry point: run one side of a cell and report ``{"ok": ..., ...}``."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's job (see ipc.py)
    signal.signal(signal.SIGTERM, _raise_system_exit)  # unwind and close channels on terminate
    main = sender_main if role == "send" else receiver_main
    if spec.cpus is not None:
        os.sched_setaffinity(0, {spec.cpus[0 if role == "send" else 1]})
    try:
        outcome = main(spec, ctl, data)
        result.send({"ok": True, **outcome})
    except SystemExit:
        raise
    except BaseException as exc:
        last = traceback.extract_tb(exc.__traceback__)[-1:]
        where = f" at {last[0].name}:{last[0].lineno}" if last else ""
        result.send({"ok": False, "error": f"{type(exc).__name__}: {exc}{where}"})
    finally:
        result.close()
