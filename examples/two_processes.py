"""Moves real frames between two processes through zerohop's shared-memory channels and
prints what it measured.

A child process produces 1920x1080 RGB video frames by loaning them from shared memory
(no copy on send); this process receives each one as a zero-copy numpy view, checks its
content and measures one-way latency and throughput. Then the same with 20 ms audio
chunks, sent from ordinary numpy arrays (one copy each).

Run:  python examples/two_processes.py [--frames N]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import time

import numpy as np

import zerohop


def produce(name: str, frames: int) -> None:
    """Child: sends `frames` loaned video frames, then `frames` audio chunks."""
    with zerohop.Sender(f"{name}-video") as video, zerohop.Sender(f"{name}-audio") as audio:
        for i in range(frames):
            frame = video.loan_video(1920, 1080, "rgb24")
            frame.pixels[0, :8] = i % 256  # stamp the first pixels; the rest is untouched
            frame.timestamp_ns = time.perf_counter_ns()
            video.send(frame, timeout=30)
        chunk = np.zeros(320, dtype=np.float32)  # 20 ms at 16 kHz
        for i in range(frames):
            chunk[0] = i
            audio.send(zerohop.Audio(chunk, sample_rate=16_000), timeout=30)
        time.sleep(0.5)  # let the consumer drain before the channels close


def consume(rx: zerohop.Receiver, frames: int, check: object) -> tuple[list[float], float, int]:
    latencies, nbytes = [], 0
    start = time.perf_counter()
    for i in range(frames):
        frame = rx.recv(timeout=30)
        now = time.perf_counter_ns()
        nbytes += check(frame, i)  # type: ignore[operator]
        latencies.append((now - (frame.timestamp_ns or now)) / 1000)
    return latencies, time.perf_counter() - start, nbytes


def check_video(frame: zerohop.Frame, i: int) -> int:
    assert isinstance(frame, zerohop.Video) and frame.is_shared
    assert frame.pixels[0, 0, 0] == i % 256 and frame.pixels.shape == (1080, 1920, 3)
    return int(frame.pixels.nbytes)


def check_audio(frame: zerohop.Frame, i: int) -> int:
    assert isinstance(frame, zerohop.Audio) and frame.samples[0] == i
    return int(frame.samples.nbytes)


def report(what: str, latencies: list[float], seconds: float, nbytes: int) -> None:
    p50, p99 = np.percentile(latencies, [50, 99])
    print(
        f"{what:<32} {len(latencies):>5} frames  one-way p50 {p50:8.1f} µs  p99 {p99:8.1f} µs"
        f"  {nbytes / seconds / 1e9:6.2f} GB/s  {len(latencies) / seconds:9.0f} frames/s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=300)
    args = parser.parse_args()
    name = f"example-{os.getpid()}"
    with zerohop.Receiver(f"{name}-video") as video, zerohop.Receiver(f"{name}-audio") as audio:
        child = multiprocessing.get_context("spawn").Process(
            target=produce, args=(name, args.frames)
        )
        child.start()
        try:
            report("1080p rgb24 video (loaned)", *consume(video, args.frames, check_video))
            report("20 ms 16 kHz audio (copied)", *consume(audio, args.frames, check_audio))
        finally:
            child.join(60)
    print(
        f"producer pid {child.pid} exited with {child.exitcode}; "
        "both processes verified every frame"
    )


if __name__ == "__main__":
    main()
