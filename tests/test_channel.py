"""Shared-memory channels across real processes: bit-exact round trips, large frames,
backpressure without loss, zero-copy views, Ctrl-C in blocked calls, cleanup."""

from __future__ import annotations

import asyncio
import itertools
import multiprocessing
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator

import numpy as np
import peers
import pytest
from conftest import shm_entries

import zerohop
from zerohop import (
    Audio,
    Bytes,
    ChannelClosedError,
    EndOfStream,
    Json,
    PayloadTooLargeError,
    Receiver,
    Sender,
    Tensor,
    Text,
    Video,
    ZerohopTimeoutError,
)

SPAWN = multiprocessing.get_context("spawn")
_counter = itertools.count()


def unique(tag: str) -> str:
    return f"test-{tag}-{os.getpid()}-{next(_counter)}-{uuid.uuid4().hex[:8]}"


class Child:
    """A spawned process that must finish cleanly; killed if the test fails."""

    def __init__(self, target: object, *args: object) -> None:
        self.process = SPAWN.Process(target=target, args=args)  # type: ignore[arg-type]
        self.process.start()

    def join(self, timeout: float = 120) -> None:
        self.process.join(timeout)
        assert self.process.exitcode == 0, f"child exited with {self.process.exitcode}"

    def kill(self) -> None:
        if self.process.is_alive():
            self.process.kill()
        self.process.join(10)
        self.process.close()


@pytest.fixture
def child() -> Iterator[type[Child]]:
    started: list[Child] = []

    class Tracked(Child):
        def __init__(self, target: object, *args: object) -> None:
            super().__init__(target, *args)
            started.append(self)

    yield Tracked
    for c in started:
        c.kill()


def sample_frames() -> list[zerohop.Frame]:
    rng = np.random.default_rng(3)
    return [
        Audio(rng.standard_normal(320).astype(np.float32), sample_rate=16_000),
        Audio(rng.integers(-3000, 3000, size=(160, 2), dtype=np.int16), sample_rate=8_000),
        Video(rng.integers(0, 256, size=(4, 6, 3), dtype=np.uint8), "rgb24"),
        Video(rng.integers(0, 256, size=36, dtype=np.uint8), "yuv420p", width=6, height=4),
        Tensor(rng.standard_normal((3, 4, 5))),
        Tensor(np.arange(10, dtype=np.uint64)),
        Text("the quick brown fox ✓"),
        Json({"event": "speech_start", "t": 1.25, "ids": [1, 2, 3]}),
        Bytes(bytes(range(256))),
    ]


def assert_same(a: zerohop.Frame, b: zerohop.Frame) -> None:
    assert type(a) is type(b)
    if isinstance(a, Audio):
        assert isinstance(b, Audio)
        assert (a.sample_rate, a.channels) == (b.sample_rate, b.channels)
        assert a.samples.dtype == b.samples.dtype
        np.testing.assert_array_equal(a.samples, b.samples)
    elif isinstance(a, Video):
        assert isinstance(b, Video)
        assert (a.width, a.height, a.pixel_format) == (b.width, b.height, b.pixel_format)
        np.testing.assert_array_equal(a.pixels, b.pixels)
    elif isinstance(a, Tensor):
        assert isinstance(b, Tensor)
        assert a.array.dtype == b.array.dtype
        np.testing.assert_array_equal(a.array, b.array)
    elif isinstance(a, Text):
        assert isinstance(b, Text) and a.text == b.text
    elif isinstance(a, Json):
        assert isinstance(b, Json) and a.value == b.value
    else:
        assert bytes(a) == bytes(b)  # type: ignore[call-overload]


def test_every_kind_round_trips_between_processes(child: type[Child]) -> None:
    frames = sample_frames()
    there, back = unique("there"), unique("back")
    with Sender(there) as tx, Receiver(back) as rx:
        echo = child(peers.echo, there, back, len(frames))
        sequences = [tx.send(f, timeout=30) for f in frames]
        assert sequences == list(range(len(frames)))
        received = [rx.recv(timeout=60) for _ in frames]
        digests = rx.recv(timeout=60)
        echo.join()
    for sent, got, seq in zip(frames, received, sequences, strict=True):
        assert_same(sent, got)
        assert got.sequence == seq
        assert got.timestamp_ns and got.timestamp_ns <= time.monotonic_ns()
    assert isinstance(digests, Json)
    assert digests.value == [peers.payload_digest(f) for f in received]


def test_large_frames_keep_their_checksums(child: type[Child]) -> None:
    frames = peers.big_frames()
    assert [f.raw is None for f in frames] == [True] * 3
    sizes = [f.samples.nbytes if isinstance(f, Audio) else None for f in frames]
    assert sizes[0] == 3_840_000
    there, back = unique("big-there"), unique("big-back")
    with Sender(there) as tx, Receiver(back) as rx:
        echo = child(peers.echo, there, back, len(frames))
        for f in frames:
            tx.send(f, timeout=60)
        received = [rx.recv(timeout=60) for _ in frames]
        digests = rx.recv(timeout=60)
        echo.join()
    assert isinstance(digests, Json)
    for sent, got, digest in zip(frames, received, digests.value, strict=True):
        assert_same(sent, got)
        assert got.is_shared
        assert peers.payload_digest(sent) == digest == peers.payload_digest(got)
    assert isinstance(received[1], Video) and received[1].pixels.nbytes == 6_220_800
    assert isinstance(received[2], Tensor) and received[2].array.nbytes == 10 * 1024 * 1024


def test_slow_receiver_blocks_sender_and_loses_nothing(child: type[Child]) -> None:
    count, delay, capacity = 60, 0.01, 4
    there, back = unique("slow"), unique("slow-back")
    with Sender(there, capacity=capacity) as tx, Receiver(back) as rx:
        reader = child(peers.slow_reader, there, back, count, delay)
        start = time.monotonic()
        for i in range(count):
            tx.send(Tensor(np.array([i], dtype=np.int64)), timeout=60)
        elapsed = time.monotonic() - start
        report = rx.recv(timeout=60)
        reader.join()
    assert isinstance(report, Json)
    assert report.value == [[i, i] for i in range(count)]
    # The sender could only run `capacity` frames ahead of the reader, so it waited
    # for roughly (count - capacity) of the reader's delays.
    assert elapsed >= (count - capacity - 8) * delay


def test_loaned_frames_arrive_without_copies(child: type[Child]) -> None:
    name, count, size = unique("loan"), 20, 1 << 20
    with Receiver(name) as rx:
        producer = child(peers.loaned_producer, name, count, size)
        frames = [rx.recv(timeout=60) for _ in range(count)]
        producer.join()
    for i, frame in enumerate(frames):
        assert isinstance(frame, Tensor)
        assert frame.sequence == i
        assert frame.array.shape == (size,)
        assert frame.array[0] == frame.array[-1] == i % 251
    # 20 live views were held at once: more than max_borrowed (16), so the last ones
    # were copied out of shared memory instead of stalling the channel.
    shared = [f.is_shared for f in frames]
    assert shared[:15] == [True] * 15
    assert not all(shared)


def test_views_outlive_the_receiver() -> None:
    name = unique("outlive")
    with Sender(name) as tx:
        rx = Receiver(name)
        tx.send(Tensor(np.arange(1000, dtype=np.int32)), timeout=10)
        frame = rx.recv(timeout=10)
        assert isinstance(frame, Tensor)
        view = frame.array
        rx.close()
        del rx, frame
        np.testing.assert_array_equal(view, np.arange(1000, dtype=np.int32))


def test_holding_many_views_never_deadlocks() -> None:
    name = unique("views")
    held = []
    with Sender(name, capacity=8) as tx, Receiver(name, capacity=8) as rx:
        for i in range(200):
            tx.send(Tensor(np.full(64, i, dtype=np.int16)), timeout=10)
            frame = rx.recv(timeout=10)
            assert isinstance(frame, Tensor)
            held.append(frame.array)
    assert [int(a[0]) for a in held] == list(range(200))
    assert all(int(a[-1]) == i for i, a in enumerate(held))


def test_loaned_send_in_process() -> None:
    name = unique("loan-local")
    with Sender(name) as tx, Receiver(name) as rx:
        audio = tx.loan_audio(480, sample_rate=48_000, channels=2, dtype="int16")
        assert audio.is_loan and audio.samples.shape == (480, 2) and audio.samples.flags.writeable
        audio.samples[:] = 7
        video = tx.loan_video(8, 4, "rgba")
        video.pixels[:] = 200
        data = tx.loan_bytes(5)
        data.data[:] = b"hello"
        for frame in (audio, video, data):
            tx.send(frame, timeout=10)
            assert not frame.is_loan
        with pytest.raises(zerohop.FrameError, match="already sent"):
            tx.send(audio)
        got = [rx.recv(timeout=10) for _ in range(3)]
    assert isinstance(got[0], Audio) and (got[0].samples == 7).all()
    assert got[0].samples.shape == (480, 2) and got[0].sample_rate == 48_000
    assert isinstance(got[1], Video) and (got[1].pixels == 200).all() and got[1].width == 8
    assert isinstance(got[2], Bytes) and bytes(got[2]) == b"hello"


def test_timeouts_raise() -> None:
    name = unique("timeout")
    with Sender(name, capacity=1) as tx, Receiver(name, capacity=1) as rx:
        with pytest.raises(ZerohopTimeoutError):
            rx.recv(timeout=0.1)
        with pytest.raises(TimeoutError):  # the builtin works too
            rx.recv(timeout=0.05)
        tx.send(Text("one"), timeout=1)
        start = time.monotonic()
        with pytest.raises(ZerohopTimeoutError):
            tx.send(Text("two"), timeout=0.2)
        assert time.monotonic() - start >= 0.15
        got = rx.recv(timeout=1)
        assert isinstance(got, Text) and got.text == "one"
        assert rx.try_recv() is None


def test_payload_over_the_maximum_is_rejected_before_allocation() -> None:
    name = unique("max")
    with Sender(name, max_payload=1024) as tx, Receiver(name, max_payload=1024):
        with pytest.raises(PayloadTooLargeError):
            tx.send(Tensor(np.zeros(2048, dtype=np.uint8)))
        with pytest.raises(PayloadTooLargeError):
            tx.loan_tensor((4096,), "uint8")


def test_closed_sender_ends_iteration() -> None:
    name = unique("closed")
    rx = Receiver(name)
    with Sender(name) as tx:
        for word in ("a", "b"):
            tx.send(Text(word), timeout=5)
    assert [f.text for f in rx if isinstance(f, Text)] == ["a", "b"]
    with pytest.raises(ChannelClosedError):
        rx.recv(timeout=1)
    rx.close()
    with pytest.raises(ChannelClosedError):
        rx.recv()


def test_the_end_of_stream_ends_iteration() -> None:
    """The end of stream is API, not an empty frame: `recv` raises EndOfStream (a
    ChannelClosedError) after the frames before it, iterating stops there, and the
    sender is still open (a node passes the end on and waits to be stopped)."""
    name = unique("eos")
    with Sender(name) as tx, Receiver(name) as rx:
        for word in ("a", "b"):
            tx.send(Text(word), timeout=5)
        tx.send_end_of_stream(timeout=5)
        assert [f.text for f in rx if isinstance(f, Text)] == ["a", "b"]
        tx.send(Text("next stream"), timeout=5)
        tx.send_end_of_stream(timeout=5)
        assert rx.recv(timeout=5).text == "next stream"  # type: ignore[attr-defined]
        with pytest.raises(EndOfStream, match="ended the stream"):
            rx.recv(timeout=5)
        tx.send_end_of_stream(timeout=5)
        with pytest.raises(ChannelClosedError):
            asyncio.run(rx.arecv(timeout=5))


def test_async_receive() -> None:
    name = unique("async")

    async def main() -> list[str]:
        with Sender(name) as tx, Receiver(name) as rx:

            async def produce() -> None:
                for word in ("x", "y", "z"):
                    await asyncio.sleep(0.01)
                    tx.send(Text(word), timeout=5)

            task = asyncio.create_task(produce())
            out = []
            for _ in range(3):
                frame = await rx.arecv(timeout=5)
                assert isinstance(frame, Text)
                out.append(frame.text)
            await task
            return out

    assert asyncio.run(main()) == ["x", "y", "z"]


BLOCKED_RECV = """
import sys, zerohop
rx = zerohop.Receiver(sys.argv[1])
print("ready", flush=True)
rx.recv()
"""

BLOCKED_SEND = """
import sys, zerohop
tx = zerohop.Sender(sys.argv[1], capacity=1)
rx = zerohop.Receiver(sys.argv[1], capacity=1)
tx.send(zerohop.Text("fills the queue"))
print("ready", flush=True)
tx.send(zerohop.Text("blocks"))
"""


@pytest.mark.parametrize("script", [BLOCKED_RECV, BLOCKED_SEND], ids=["recv", "send"])
def test_ctrl_c_interrupts_a_blocked_call(script: str) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(script), unique("sigint")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(0.2)  # let it enter the blocking call
        proc.send_signal(signal.SIGINT)
        # The call blocks forever unless Ctrl-C ends it: 30 s is a hang bound (it takes
        # milliseconds; a loaded machine must not fail the test), not a speed test.
        try:
            _, err = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            pytest.fail("Ctrl-C did not interrupt the blocked call within 30 s")
        assert proc.returncode != 0
        assert "KeyboardInterrupt" in err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def test_reclaim_dead_cleans_up_after_a_killed_process() -> None:
    script = """
import sys, zerohop
tx = zerohop.Sender(sys.argv[1])
rx = zerohop.Receiver(sys.argv[1])
print("ready", flush=True)
import time; time.sleep(60)
"""
    name = unique("killed")
    before = shm_entries()
    proc = subprocess.Popen([sys.executable, "-c", script, name], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    assert shm_entries() - before, "the channel should exist in /dev/shm"
    proc.kill()
    proc.wait(10)
    proc.stdout.close()
    assert zerohop.reclaim_dead() >= 1
    assert not shm_entries() - before
