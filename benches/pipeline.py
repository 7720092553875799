"""Whole pipelines side by side: a chain of 5 Python nodes moving video frames, built with
zerohop and with what a user would otherwise pick (issue 18).

Each node touches its frame — reads a row, writes a stamp — and passes it on; no model.
Frames are RGB24 1080p (6.2 MB) and 4K (24.9 MB), sent from this process (the camera)
and read back here (the sink). Per transport, in one run:

- ``max``: as fast as the chain takes them; ``30 fps`` / ``60 fps``: paced like a camera;
- frames/s (first frame sent → last received), end-to-end latency p50/p95/p99;
- CPU per frame per hop: the CPU time of the 5 node processes and of this process
  (camera and sink), from ``/proc/<pid>/stat`` and ``getrusage``, over frames x 6 hops
  (camera → node 1 → ... → node 5 → sink);
- idle CPU: the node processes' CPU over 2 s with no frames flowing (a poller shows).

Transports: zerohop (a Pipeline of 5 nodes, shared-memory channels: the camera's frame
is copied into the first channel, each hop copies into the next channel's shared memory,
the sink reads a view); ``multiprocessing`` Pipe (``send_bytes`` of the frame and a small
header per hop: the kernel copies it through a socket) and Queue (``put`` of the array:
pickled, a feeder thread, a pipe). Ray actors and dora-rs nodes are not wired in yet.

Run:  python benches/pipeline.py [--quick] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import resource
import struct
import sys
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np
from executor import machine, percentile

from zerohop import MultiprocessNode, Pipeline, Tensor

NODES = 5
HOPS = NODES + 1
SIZES = {"1080p": (1080, 1920), "4K": (2160, 3840)}
TICK = os.sysconf("SC_CLK_TCK")
HEADER = struct.Struct("<qq")  # a node's stamp, the camera's stamp (ns)
#: Peers' processes start fresh (no fork of a process with zerohop's threads).
SPAWN = mp.get_context("spawn")


def cpu_seconds(pids: list[int]) -> float:
    """utime + stime of ``pids`` (their threads included), in seconds."""
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / TICK


def own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Touch(MultiprocessNode):
    """Reads the first row, writes a stamp (the frame's metadata), passes the frame on."""

    def process(self, frame: Tensor) -> Tensor:
        seen = int(frame.array[0, :64].sum())
        frame.metadata = {**frame.metadata, "seen": str(seen)}
        return frame


# ------------------------------------------------------------------ the runs


class Chain:
    """One transport's chain of NODES processes, started once, fed per run."""

    pids: list[int]

    def send(self, array: np.ndarray[Any, Any], stamp: int) -> None:
        raise NotImplementedError

    def recv(self) -> int:
        """Waits for the next frame out of the chain; returns its camera stamp."""
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


class ZerohopChain(Chain):
    def __init__(self, shape: tuple[int, int]) -> None:
        pipe = Pipeline("chain")
        names = [f"n{i}" for i in range(NODES)]
        for name in names:
            pipe.node(name, Touch)
        pipe.connect(*names)
        self.session = pipe.session()
        self.pids = self.session.pids()  # type: ignore[attr-defined]

    def send(self, array: np.ndarray[Any, Any], stamp: int) -> None:
        frame = self.session.loan_tensor(array.shape, "uint8")  # type: ignore[attr-defined]
        frame.array[:] = array  # the camera's one copy, into shared memory
        frame.timestamp_ns = stamp
        self.session.send(frame)

    def recv(self) -> int:
        frame = self.session.recv(timeout=60)
        assert frame is not None
        return frame.timestamp_ns or 0

    def close(self) -> None:
        self.session.close()


def _pipe_stage(rx: Connection, tx: Connection, shape: tuple[int, ...]) -> None:
    buffer = bytearray(HEADER.size + int(np.prod(shape)))
    while True:
        n = rx.recv_bytes_into(buffer)
        if n == 0:
            tx.send_bytes(b"")
            return
        array = np.frombuffer(buffer, np.uint8, offset=HEADER.size).reshape(shape)
        _, stamp = HEADER.unpack_from(buffer)
        HEADER.pack_into(buffer, 0, int(array[0, :64].sum()), stamp)
        tx.send_bytes(buffer)


def _queue_stage(rx: Any, tx: Any) -> None:
    while True:
        item = rx.get()
        if item is None:
            tx.put(None)
            return
        (_, stamp), array = item
        tx.put(((int(array[0, :64].sum()), stamp), array))


class PipeChain(Chain):
    def __init__(self, shape: tuple[int, int]) -> None:
        full = (*shape, 3)
        ends = [SPAWN.Pipe(duplex=False) for _ in range(HOPS)]
        self.procs = [
            SPAWN.Process(target=_pipe_stage, args=(ends[i][0], ends[i + 1][1], full), daemon=True)
            for i in range(NODES)
        ]
        for p in self.procs:
            p.start()
        self.ends = ends
        self.tx, self.rx = ends[0][1], ends[-1][0]
        self.pids = [p.pid for p in self.procs if p.pid is not None]
        self.out = bytearray(HEADER.size + int(np.prod(full)))
        self.message = bytearray(HEADER.size + int(np.prod(full)))

    def send(self, array: np.ndarray[Any, Any], stamp: int) -> None:
        HEADER.pack_into(self.message, 0, 0, stamp)
        self.message[HEADER.size :] = array.reshape(-1).data  # framing: header + pixels
        self.tx.send_bytes(self.message)

    def recv(self) -> int:
        self.rx.recv_bytes_into(self.out)
        return HEADER.unpack_from(self.out)[1]  # type: ignore[no-any-return]

    def close(self) -> None:
        self.tx.send_bytes(b"")
        self.rx.recv_bytes()
        for p in self.procs:
            p.join(10)


class QueueChain(Chain):
    def __init__(self, shape: tuple[int, int]) -> None:
        queues = [SPAWN.Queue(maxsize=4) for _ in range(HOPS)]
        self.procs = [
            SPAWN.Process(target=_queue_stage, args=(queues[i], queues[i + 1]), daemon=True)
            for i in range(NODES)
        ]
        for p in self.procs:
            p.start()
        # All kept: a queue collected here would take its semaphores with it before a
        # spawned stage has opened them.
        self.queues = queues
        self.tx, self.rx = queues[0], queues[-1]
        self.pids = [p.pid for p in self.procs if p.pid is not None]

    def send(self, array: np.ndarray[Any, Any], stamp: int) -> None:
        self.tx.put(((0, stamp), array))

    def recv(self) -> int:
        (_, stamp), _array = self.rx.get(timeout=60)
        return stamp  # type: ignore[no-any-return]

    def close(self) -> None:
        self.tx.put(None)
        while self.rx.get(timeout=60) is not None:
            pass
        for p in self.procs:
            p.join(10)


TRANSPORTS: dict[str, Callable[[tuple[int, int]], Chain]] = {
    "zerohop": ZerohopChain,
    "mp.Pipe": PipeChain,
    "mp.Queue": QueueChain,
}


def drive(chain: Chain, frames: list[np.ndarray[Any, Any]], fps: float | None) -> dict[str, Any]:
    """Sends the frames (paced at ``fps``) from a thread while this one receives."""
    count = len(frames)
    latencies: list[float] = []
    cpu_nodes, cpu_own = cpu_seconds(chain.pids), own_cpu()

    def camera() -> None:
        start = time.monotonic()
        for i, array in enumerate(frames):
            if fps:
                time.sleep(max(0.0, start + i / fps - time.monotonic()))
            chain.send(array, time.monotonic_ns())

    sender = threading.Thread(target=camera)
    started = time.monotonic()
    sender.start()
    for _ in range(count):
        stamp = chain.recv()
        latencies.append((time.monotonic_ns() - stamp) / 1e6)
    elapsed = time.monotonic() - started
    sender.join()
    cpu = cpu_seconds(chain.pids) - cpu_nodes + own_cpu() - cpu_own
    return {
        "frames_per_s": count / elapsed,
        "latency_p50_ms": percentile(latencies, 50),
        "latency_p95_ms": percentile(latencies, 95),
        "latency_p99_ms": percentile(latencies, 99),
        "cpu_us_per_frame_hop": cpu / count / HOPS * 1e6,
    }


def idle_cpu(chain: Chain, seconds: float = 2.0) -> float:
    """CPU the node processes use with nothing flowing, as a share of one core."""
    before = cpu_seconds(chain.pids)
    time.sleep(seconds)
    return (cpu_seconds(chain.pids) - before) / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer frames")
    parser.add_argument("--json", type=Path, default=Path("bench-results/pipeline.json"))
    args = parser.parse_args()
    info = machine()
    print(f"# zerohop pipeline benchmark\n\n{json.dumps(info)}\n", flush=True)
    rng = np.random.default_rng(18)
    rows = []
    for size, shape in SIZES.items():
        pool = [rng.integers(0, 256, (*shape, 3), np.uint8) for _ in range(4)]
        counts = {"max": 30 if args.quick else 120, "30 fps": 30, "60 fps": 60}
        if size == "4K":
            counts["max"] //= 3
        for name, make in TRANSPORTS.items():
            chain = make(shape)
            try:
                drive(chain, pool[:2], None)  # warm-up: first touches of every buffer
                idle = idle_cpu(chain)
                for mode, count in counts.items():
                    fps = None if mode == "max" else float(mode.split()[0])
                    frames = [pool[i % len(pool)] for i in range(count)]
                    row = {"size": size, "transport": name, "mode": mode, "idle_cores": idle}
                    row.update(drive(chain, frames, fps))
                    rows.append(row)
                    print(f"done: {size} {name} {mode}", file=sys.stderr, flush=True)
            finally:
                chain.close()
    print(
        "| frames | mode | transport | frames/s | latency p50 / p95 / p99 ms "
        "| CPU µs per frame per hop | idle cores | frames/s vs best peer |\n"
        "|---|---|---|---:|---:|---:|---:|---:|"
    )
    for row in rows:
        peers = [
            r["frames_per_s"]
            for r in rows
            if (r["size"], r["mode"]) == (row["size"], row["mode"]) and r["transport"] != "zerohop"
        ]
        ratio = row["frames_per_s"] / max(peers) if row["transport"] == "zerohop" else None
        print(
            f"| {row['size']} | {row['mode']} | {row['transport']} | {row['frames_per_s']:.1f} "
            f"| {row['latency_p50_ms']:.1f} / {row['latency_p95_ms']:.1f} / "
            f"{row['latency_p99_ms']:.1f} | {row['cpu_us_per_frame_hop']:.0f} "
            f"| {row['idle_cores']:.3f} | {'' if ratio is None else f'{ratio:.2f}'} |"
        )
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"machine": info, "rows": rows}, indent=2))
    print(f"wrote {args.json}", file=sys.stderr)


if __name__ == "__main__":
    main()
