"""What limits cost and buy, in one run.

* **Thread budgets**: two CPU-heavy nodes (``MatMul``: numpy BLAS products, which use
  as many threads as they are allowed) in two sessions driven at once, each frame
  waited for before the next, on this machine's cores: without budgets (each BLAS
  starts a thread per core, so 2 nodes x N threads share N cores) vs
  ``capabilities.cpu.cores = 1`` with ``[process] pin_cpus`` (one thread each, on a
  core of its own). Frames/s over both sessions and the p95 of one frame's round trip.
* **The memory watch on the data path**: a 1 KiB text frame's round trip through an
  ``Echo`` node process without a memory limit vs with one (held by a cgroup where this
  machine allows, as here) vs held by the RSS watch (``ZEROHOP_MEMORY_ACCOUNTING=rss``,
  run in a child process since the mechanism is chosen once per process). Neither sits
  on the frame path, so no cost is expected; this measures it.

Run:  python benches/limits.py [--frames N] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

import zerohop.testing  # noqa: F401  (MatMul)
from zerohop import Pipeline, Text
from zerohop.config import RuntimeConfig


def config(text: str) -> RuntimeConfig:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp, "runtime.toml")
        path.write_text(text)
        return RuntimeConfig.from_file(path)


def heavy(frames: int, budget: bool) -> dict[str, float]:
    """Two MatMul sessions at once; frames/s over both and p95 round trip."""
    cfg = config("[process]\npin_cpus = true\n" if budget else "")
    caps = {"cpu": {"cores": 1}} if budget else None
    took: list[float] = []
    lock = threading.Lock()

    def drive(name: str) -> None:
        pipe = Pipeline(name, config=cfg).node("mm", "MatMul", capabilities=caps)
        with pipe.session() as session:
            for i in range(frames + 3):
                start = time.perf_counter()
                session.send(Text("x"))
                session.recv(timeout=120)
                if i >= 3:  # warm-up
                    with lock:
                        took.append(time.perf_counter() - start)

    start = time.perf_counter()
    threads = [threading.Thread(target=drive, args=(f"s{i}",)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    ms = np.array(took) * 1e3
    return {
        "frames_per_s": len(took) / wall,
        "p50_ms": float(np.median(ms)),
        "p95_ms": float(np.quantile(ms, 0.95)),
    }


def hop(frames: int, limited: bool) -> dict[str, float]:
    """A 1 KiB text frame's round trip through Echo, one in flight."""
    caps = {"memory_gb": 1.0} if limited else None
    pipe = Pipeline("hop").node("e", "Echo", capabilities=caps)
    text = Text("x" * 1024)
    took = []
    with pipe.session() as session:
        for i in range(frames + 50):
            start = time.perf_counter()
            session.send(text)
            session.recv(timeout=60)
            if i >= 50:
                took.append(time.perf_counter() - start)
    us = np.array(took) * 1e6
    return {"p50_us": float(np.median(us)), "p99_us": float(np.quantile(us, 0.99))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--hops", type=int, default=2000)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--rss-hop", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rss_hop:  # the child run: the RSS watch holds the limit
        print(json.dumps(hop(args.hops, True)))
        return
    from zerohop.limits import mechanism

    rows: dict[str, Any] = {
        "cpus": os.cpu_count(),
        "heavy": {
            "no budget": heavy(args.frames, False),
            "cpu.cores = 1, pinned": heavy(args.frames, True),
        },
        "hop": {
            "no limit": hop(args.hops, False),
            f"limit held by the {mechanism()}": hop(args.hops, True),
        },
    }
    child = subprocess.run(
        [sys.executable, __file__, "--rss-hop", "--hops", str(args.hops)],
        capture_output=True,
        text=True,
        env={**os.environ, "ZEROHOP_MEMORY_ACCOUNTING": "rss"},
        check=True,
    )
    rows["hop"]["limit held by the RSS watch"] = json.loads(child.stdout.splitlines()[-1])
    print(f"machine: {os.cpu_count()} cpus")
    print("two MatMul sessions at once, one frame in flight each:")
    for name, r in rows["heavy"].items():
        print(
            f"  {name:26} {r['frames_per_s']:6.1f} frames/s  p50 {r['p50_ms']:7.1f} ms"
            f"  p95 {r['p95_ms']:7.1f} ms"
        )
    print("1 KiB text round trip through Echo:")
    for name, r in rows["hop"].items():
        print(f"  {name:42} p50 {r['p50_us']:6.1f} us  p99 {r['p99_us']:6.1f} us")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
