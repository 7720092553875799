"""What the machine itself allows, measured in the same run as ``benches/ipc.py``'s cells.

Two references that decide whether the channel targets (1 KiB p50 <= half of Pipe's,
>= 10x Pipe's GB/s consuming 6.2 MB frames) are reachable here:

* **wake-up floor**: one-way latency of 8 bytes (just the send stamp) written with
  ``os.write`` into a pipe that a *blocked* process reads with ``os.read``, paced like the
  cells (one message in flight, acked). Every transport that sleeps while waiting pays at
  least this per message, whatever it carries; only spinning avoids it.
* **read ceiling**: GB/s of ``_peers.consume`` (the receiver's every-byte read) over
  ``depth + 1`` rotating buffers of each size in one process — the same working set as a
  receiver walking a queue of ``depth`` frames, with no transport at all. A reference, not
  a hard bound: a transport whose frames are still in a cache the sender shares can read a
  few per cent faster (the iceoryx2 header-only row did once, 31.9 against 30.0 GB/s).
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.context import SpawnContext

import _peers
import _stats
import numpy as np

STAMP_BYTES = 8


@dataclass(frozen=True)
class Floors:
    """The machine's bounds for this run."""

    wake: dict[str, _stats.LatencySummary]  # placement name -> one-way wake-up latency
    read_gb_per_s: dict[int, float]  # payload size -> GB/s of the every-byte read


def measure(
    ctx: SpawnContext,
    sizes: Sequence[int],
    depth: int,
    placements: dict[str, tuple[int, int] | None],
    quick: bool,
) -> Floors:
    """Both bounds; the wake-up floor once per placement (name -> (sender, receiver) CPUs)."""
    n = 1_000 if quick else 5_000
    wake = {name: wake_floor(ctx, n, cpus) for name, cpus in placements.items()}
    return Floors(wake=wake, read_gb_per_s=read_ceiling(sizes, depth))


def wake_floor(ctx: SpawnContext, n: int, cpus: tuple[int, int] | None) -> _stats.LatencySummary:
    """One-way p50/p99 of an 8-byte pipe write to a blocked reader in another process,
    the writer and the reader pinned to ``cpus`` (or left to the scheduler)."""
    data_r, data_w = ctx.Pipe(duplex=False)
    ack_r, ack_w = ctx.Pipe(duplex=False)
    result_r, result_w = ctx.Pipe(duplex=False)
    warmup = max(n // 10, 20)
    reader_cpu = None if cpus is None else cpus[1]
    args = (data_r, ack_w, result_w, warmup + n, reader_cpu)
    proc = ctx.Process(target=_wake_reader, args=args, daemon=True)
    proc.start()
    for conn in (data_r, ack_w, result_w):
        conn.close()
    previous = os.sched_getaffinity(0)
    if cpus is not None:
        os.sched_setaffinity(0, {cpus[0]})
    try:
        out, ack = data_w.fileno(), ack_r.fileno()
        for _ in range(warmup + n):
            os.write(out, time.perf_counter_ns().to_bytes(STAMP_BYTES, "little"))
            if not os.read(ack, 1):
                raise RuntimeError("wake-floor reader exited early")
        latencies: np.ndarray = result_r.recv()
    finally:
        os.sched_setaffinity(0, previous)
        for conn in (data_w, ack_r, result_r):
            conn.close()
        proc.join(10.0)
        if proc.is_alive():
            proc.kill()
            proc.join()
    return _stats.summarize_latency(latencies[warmup:])


def _wake_reader(
    data: Connection, ack: Connection, result: Connection, n: int, cpu: int | None
) -> None:
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    inp, out = data.fileno(), ack.fileno()
    latencies = np.empty(n, dtype=np.int64)
    for i in range(n):
        stamp = os.read(inp, STAMP_BYTES)
        latencies[i] = time.perf_counter_ns() - int.from_bytes(stamp, "little")
        os.write(out, b"a")
    result.send(latencies)


def read_ceiling(sizes: Sequence[int], depth: int, seconds: float = 0.5) -> dict[int, float]:
    """GB/s of the receiver's every-byte read over ``depth + 1`` rotating local buffers."""
    ceiling = {}
    for size in sizes:
        buffers = [_peers.make_payload(size) for _ in range(depth + 1)]
        for buf in buffers:  # fault the pages in before timing
            _peers.consume(buf)
        reads, started = 0, time.perf_counter_ns()
        while True:
            _peers.consume(buffers[reads % len(buffers)])
            reads += 1
            elapsed = time.perf_counter_ns() - started
            if elapsed >= seconds * 1e9 and reads >= len(buffers):
                break
        ceiling[size] = reads * size / elapsed
    return ceiling
