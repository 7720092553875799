"""A node on another host against the same node here, in one run.

Starts a `zerohop serve` (the "other host": another process reached over TCP on
loopback; no second machine is involved) and measures, for the same node:

* **20 ms audio round trip**: one 960-sample float32 chunk (48 kHz) in, its result
  out, one in flight at a time, through a session whose ``Scale`` node runs here (a
  node process) vs on the other host (``host=``: shared memory → gRPC → the other
  server's node process → back). The peer is the same call made by a Python client
  straight to that server (``zerohop.client`` over grpcio, ``StreamPipeline``): what
  using that server directly costs, with no host in between.
* **1080p frames/s**: RGB 1920x1080 frames through ``Echo``, pipelined (a sender
  thread and the receiving loop), here vs on the other host vs the Python client.
* **Cancel → clean**: a session with its node on the other host is closed mid-stream;
  the time until the other server has no node process left.

Run:  python benches/remote.py [--chunks N] [--frames N] [--json PATH]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

# benches/grpc.py would shadow grpcio: drop this directory from the path.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).parent.resolve()]

import numpy as np  # noqa: E402

from zerohop import Audio, Pipeline, Video  # noqa: E402
from zerohop.client import Client  # noqa: E402

CHUNK = 960
RATE = 48_000


def start_server(config: Path) -> tuple[subprocess.Popen[str], str]:
    env = {**os.environ, "ZEROHOP_CONFIG": str(config)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "zerohop.cli", "serve", "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert "listening on " in line, line
    return proc, line.split("listening on ")[1].split()[0]


def node_processes(pid: int) -> int:
    """Node processes below ``pid`` (`zerohop.runner` in their command line)."""
    found, todo = 0, [pid]
    while todo:
        parent = todo.pop()
        try:
            tasks = list(Path(f"/proc/{parent}/task").iterdir())
        except OSError:
            continue
        for task in tasks:
            try:
                children = [int(p) for p in (task / "children").read_text().split()]
            except OSError:
                continue
            for child in children:
                todo.append(child)
                with contextlib.suppress(OSError):
                    found += b"zerohop.runner" in Path(f"/proc/{child}/cmdline").read_bytes()
    return found


def percentiles(samples: list[float]) -> dict[str, float]:
    ms = np.array(samples) * 1e3
    return {
        "n": len(samples),
        "p50_ms": float(np.median(ms)),
        "p99_ms": float(np.quantile(ms, 0.99)),
    }


def round_trips(chunks: int, host: str | None) -> dict[str, float]:
    pipe = Pipeline("rtt").node("gain", "Scale", factor=0.5, host=host)
    frame = Audio(np.zeros(CHUNK, dtype=np.float32), RATE)
    took = []
    with pipe.session() as session:
        for i in range(chunks + 20):
            start = time.perf_counter()
            session.send(frame)
            session.recv(timeout=60)
            if i >= 20:  # warm-up
                took.append(time.perf_counter() - start)
    return percentiles(took)


def client_round_trips(chunks: int, address: str) -> dict[str, float]:
    """The same chunk, one in flight, a client straight to the server."""
    manifest = {"version": "v1", "nodes": [{"id": "gain", "node_type": "Scale",
                                           "params": {"factor": 0.5}}]}  # fmt: skip
    frame = Audio(np.zeros(CHUNK, dtype=np.float32), RATE)
    turn = threading.Semaphore(0)
    sent: list[float] = []
    took: list[float] = []

    def frames() -> Iterator[Audio]:
        for _ in range(chunks + 20):
            sent.append(time.perf_counter())
            yield frame
            turn.acquire()

    with Client(address) as client:
        for i, _ in enumerate(client.stream(manifest, frames())):
            if i >= 20:
                took.append(time.perf_counter() - sent[i])
            turn.release()
    return percentiles(took)


def frames_per_second(count: int, run: Callable[[list[Video]], int]) -> float:
    frames = [
        Video(np.random.default_rng(i).integers(0, 256, (1080, 1920, 3), dtype=np.uint8))
        for i in range(4)
    ]
    batch = [frames[i % 4] for i in range(count)]
    start = time.perf_counter()
    got = run(batch)
    assert got == count, (got, count)
    return count / (time.perf_counter() - start)


def through_session(host: str | None) -> Callable[[list[Video]], int]:
    def run(batch: list[Video]) -> int:
        pipe = Pipeline("video").node("echo", "Echo", host=host)
        with pipe.session() as session:
            sender = threading.Thread(target=lambda: [session.send(f) for f in batch])
            sender.start()
            got = sum(1 for _ in range(len(batch)) if session.recv(timeout=120) is not None)
            sender.join()
        return got

    return run


def through_client(address: str) -> Callable[[list[Video]], int]:
    def run(batch: list[Video]) -> int:
        manifest = {"version": "v1", "nodes": [{"id": "echo", "node_type": "Echo"}]}
        with Client(address, max_message_bytes=64 << 20) as client:
            return sum(1 for _ in client.stream(manifest, batch))

    return run


def cancel_to_clean(host: str, pid: int) -> float:
    pipe = Pipeline("cancel").node("echo", "Echo", host=host)
    session = pipe.session()
    session.send(Audio(np.zeros(CHUNK, dtype=np.float32), RATE))
    session.recv(timeout=60)
    assert node_processes(pid) == 1
    start = time.perf_counter()
    session.close()
    while node_processes(pid):
        time.sleep(0.002)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=500)
    parser.add_argument("--frames", type=int, default=120)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp, "runtime.toml")
        config.write_text("")
        proc, address = start_server(config)
        try:
            rows: dict[str, Any] = {
                "audio_20ms_round_trip": {
                    "node here": round_trips(args.chunks, None),
                    "node on the other host": round_trips(args.chunks, address),
                    "Python client to that host": client_round_trips(args.chunks, address),
                },
                "video_1080p_fps": {
                    "node here": frames_per_second(args.frames, through_session(None)),
                    "node on the other host": frames_per_second(
                        args.frames, through_session(address)
                    ),
                    "Python client to that host": frames_per_second(
                        args.frames, through_client(address)
                    ),
                },
                "cancel_to_clean_s": [cancel_to_clean(address, proc.pid) for _ in range(5)],
            }
        finally:
            proc.terminate()
            proc.wait(timeout=60)
    print(f"machine: {os.cpu_count()} cpus, python {platform.python_version()}")
    print("20 ms audio chunk (960 float32 samples), one in flight, Scale node:")
    for name, stats in rows["audio_20ms_round_trip"].items():
        print(f"  {name:30} p50 {stats['p50_ms']:7.3f} ms  p99 {stats['p99_ms']:7.3f} ms")
    print("1080p RGB frames through Echo, pipelined:")
    for name, fps in rows["video_1080p_fps"].items():
        print(f"  {name:30} {fps:7.1f} frames/s")
    worst = max(rows["cancel_to_clean_s"])
    print(f"cancel -> the other host's node process gone: worst of 5 {worst * 1e3:.0f} ms")
    if args.json:
        args.json.write_text(json.dumps({"cpus": os.cpu_count(), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
