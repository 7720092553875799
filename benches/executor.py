"""Executor benchmarks: what a session costs and what running nodes in processes buys.

Measures, in one run:

- spawn-to-ready of a trivial node (one node; and four nodes started together);
- session close time, and crash-to-cleanup (a node SIGKILLs itself: time until the
  error is raised and until every process is gone);
- host-side memory per open session of 3 nodes (RSS growth of this process);
- a 3-node CPU-bound chain (each node burns ``--work`` ms of pure-Python CPU per
  frame): end-to-end latency with one frame in flight, and throughput streaming, for the
  multiprocess executor against the in-process baseline (one interpreter, one GIL).

Run:  python benches/executor.py [--quick] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import zerohop
import zerohop.testing
from zerohop import Pipeline, Text


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGESIZE")


def echo_chain(n: int, name: str = "bench") -> Pipeline:
    pipe = Pipeline(name)
    ids = [f"n{i}" for i in range(n)]
    for node_id in ids:
        pipe.node(node_id, "Echo")
    if n > 1:
        pipe.connect(*ids)
    return pipe


def spawn_to_ready(nodes: int, trials: int) -> dict[str, float]:
    pipe = echo_chain(nodes)
    ready, close = [], []
    for _ in range(trials):
        start = time.perf_counter()
        session = pipe.session()
        ready.append(time.perf_counter() - start)
        start = time.perf_counter()
        session.close()
        close.append(time.perf_counter() - start)
    return {
        "ready_p50_ms": 1000 * statistics.median(ready),
        "ready_p95_ms": 1000 * percentile(ready, 95),
        "close_p50_ms": 1000 * statistics.median(close),
        "close_p95_ms": 1000 * percentile(close, 95),
    }


def crash_to_cleanup(trials: int) -> dict[str, float]:
    pipe = (
        Pipeline("crash")
        .node("a", "Echo")
        .node("boom", "Crash", mode="sigkill")
        .connect("a", "boom")
    )
    raised, gone = [], []
    for _ in range(trials):
        session = pipe.session()
        pids = session.pids()  # type: ignore[attr-defined]
        start = time.perf_counter()
        try:
            session.run([Text("x")])
        except zerohop.NodeCrashedError:
            raised.append(time.perf_counter() - start)
        session.close()
        while any(os.path.exists(f"/proc/{p}") for p in pids):
            time.sleep(0.001)
        gone.append(time.perf_counter() - start)
    return {
        "error_p50_ms": 1000 * statistics.median(raised),
        "cleanup_p50_ms": 1000 * statistics.median(gone),
        "cleanup_p95_ms": 1000 * percentile(gone, 95),
    }


def host_memory(sessions: int) -> dict[str, float]:
    pipe = echo_chain(3)
    with pipe.session():  # warm up: first-use allocations are not per session
        pass
    before = rss_bytes()
    opened = [pipe.session() for _ in range(sessions)]
    after = rss_bytes()
    for s in opened:
        s.close()
    return {"host_mb_per_session": (after - before) / sessions / 1e6}


def cpu_chain(executor: str, work_ms: float, frames: int, latency_trials: int) -> dict[str, float]:
    pipe = Pipeline("cpu", executor=executor)  # type: ignore[arg-type]
    for node_id in ("a", "b", "c"):
        pipe.node(node_id, "BurnCPU", ms=work_ms)
    pipe.connect("a", "b", "c")
    with pipe.session() as session:
        latencies = []
        for i in range(latency_trials):
            start = time.perf_counter()
            session.send(Text(str(i)))
            session.recv(timeout=60)
            latencies.append(time.perf_counter() - start)
        start = time.perf_counter()
        received = 0
        for _ in session.stream(Text(str(i)) for i in range(frames)):
            received += 1
        elapsed = time.perf_counter() - start
    assert received == frames
    return {
        "latency_p50_ms": 1000 * statistics.median(latencies),
        "throughput_fps": frames / elapsed,
    }


def machine() -> dict[str, Any]:
    cpu = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "zerohop": zerohop.__version__,
        "spawn_method": zerohop.load_config().process.model_dump().get("spawn_method", "exec"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer trials (a smoke run)")
    parser.add_argument("--work", type=float, default=20.0, help="CPU ms per node per frame")
    parser.add_argument("--json", type=Path, default=Path("bench-results/executor.json"))
    args = parser.parse_args()
    trials = 5 if args.quick else 30
    frames = 20 if args.quick else 100

    info = machine()
    print(f"# zerohop executor benchmark\n\n{json.dumps(info)}\n", flush=True)
    results: dict[str, Any] = {"machine": info}
    results["one_node"] = spawn_to_ready(1, trials)
    results["four_nodes"] = spawn_to_ready(4, trials)
    results["crash"] = crash_to_cleanup(max(3, trials // 3))
    results["memory"] = host_memory(5)
    results["multiprocess"] = cpu_chain("multiprocess", args.work, frames, max(5, trials // 2))
    results["inprocess"] = cpu_chain("inprocess", args.work, frames, max(5, trials // 2))

    one, four, crash = results["one_node"], results["four_nodes"], results["crash"]
    multi, single = results["multiprocess"], results["inprocess"]
    rows = [
        (
            "spawn-to-ready, 1 node",
            f"{one['ready_p50_ms']:.0f} ms p50, {one['ready_p95_ms']:.0f} ms p95",
        ),
        (
            "spawn-to-ready, 4 nodes at once",
            f"{four['ready_p50_ms']:.0f} ms p50, {four['ready_p95_ms']:.0f} ms p95",
        ),
        (
            "session close (4 nodes)",
            f"{four['close_p50_ms']:.0f} ms p50, {four['close_p95_ms']:.0f} ms p95",
        ),
        ("crash → error raised", f"{crash['error_p50_ms']:.0f} ms p50"),
        (
            "crash → every process gone",
            f"{crash['cleanup_p50_ms']:.0f} ms p50, {crash['cleanup_p95_ms']:.0f} ms p95",
        ),
        ("host memory per 3-node session", f"{results['memory']['host_mb_per_session']:.1f} MB"),
        (
            f"3 x {args.work:.0f} ms CPU chain, latency p50",
            f"multiprocess {multi['latency_p50_ms']:.0f} ms, "
            f"in-process {single['latency_p50_ms']:.0f} ms",
        ),
        (
            f"3 x {args.work:.0f} ms CPU chain, throughput",
            f"multiprocess {multi['throughput_fps']:.1f} fps, "
            f"in-process {single['throughput_fps']:.1f} fps "
            f"= {multi['throughput_fps'] / single['throughput_fps']:.2f}x",
        ),
    ]
    print("| measure | result |\n|---|---|")
    for name, value in rows:
        print(f"| {name} | {value} |")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2))
    print(f"\nwrote {args.json}", file=sys.stderr)


if __name__ == "__main__":
    main()
