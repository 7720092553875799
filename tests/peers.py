"""Code that tests run in other processes (importable by multiprocessing's spawn)."""

from __future__ import annotations

import hashlib
import time

import numpy as np

import zerohop


def payload_digest(frame: zerohop.Frame) -> str:
    """sha256 of the payload bytes as they sit in (shared) memory."""
    source = frame.raw if frame.raw is not None else frame._wire()[2]
    return hashlib.sha256(memoryview(source).cast("B")).hexdigest()


def echo(in_name: str, out_name: str, count: int) -> None:
    """Receives `count` frames and sends each back unchanged, then a Json with the
    sha256 of every payload as this process saw it."""
    digests = []
    with zerohop.Receiver(in_name) as rx, zerohop.Sender(out_name) as tx:
        for _ in range(count):
            frame = rx.recv(timeout=60)
            digests.append(payload_digest(frame))
            tx.send(frame, timeout=60)
        tx.send(zerohop.Json(digests), timeout=60)


def slow_reader(in_name: str, out_name: str, count: int, delay: float) -> None:
    """Reads `count` frames slowly and reports the sequence numbers and first values."""
    seen = []
    with zerohop.Receiver(in_name, capacity=4) as rx, zerohop.Sender(out_name) as tx:
        for _ in range(count):
            frame = rx.recv(timeout=60)
            assert isinstance(frame, zerohop.Tensor)
            seen.append([frame.sequence, int(frame.array[0])])
            time.sleep(delay)
        tx.send(zerohop.Json(seen), timeout=60)


def loaned_producer(out_name: str, count: int, size: int) -> None:
    """Sends `count` loaned uint8 tensors of `size` bytes, frame i filled with i % 251."""
    with zerohop.Sender(out_name) as tx:
        for i in range(count):
            frame = tx.loan_tensor((size,), "uint8")
            frame.array.fill(i % 251)
            tx.send(frame, timeout=60)
        # Wait for the consumer to drain before the channel goes away.
        time.sleep(0.2)


def big_frames() -> list[zerohop.Frame]:
    rng = np.random.default_rng(7)
    audio = rng.standard_normal(960_000).astype(np.float32)  # 3,840,000 bytes
    video = rng.integers(0, 256, size=(1080, 1920, 3), dtype=np.uint8)  # 6,220,800 bytes
    tensor = rng.standard_normal(10 * 1024 * 1024 // 8)  # 10 MiB float64
    return [
        zerohop.Audio(audio, sample_rate=48_000),
        zerohop.Video(video, "rgb24"),
        zerohop.Tensor(tensor),
    ]
