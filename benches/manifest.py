"""Manifest and routing benchmarks: what validating a manifest costs, and what a hop
through a native Rust node costs between two Python nodes.

Measures, in one run:

- parse + validate of a 10-node manifest (Python and native nodes mixed): pydantic
  parse alone, the whole ``Manifest.parse(...).to_pipeline()`` (routing, params models,
  native params checked in Rust, the graph checked in Rust), and the same from a JSON
  and a YAML file; p50/p95 over many runs in one warm process;
- ``zerohop validate FILE`` wall time (a fresh interpreter each time), next to a bare
  ``python -c pass`` and ``python -c "import zerohop"`` as the floor it stands on;
- the hop: a Python node stamps ``time.monotonic_ns()`` into a frame, the next Python
  node takes the difference on arrival. Python → Python against Python → native
  PassThrough → Python, one frame in flight, for the multiprocess executor (three
  channels, the native node in a host thread) and the in-process one (threads and
  queues, the native node called through ``_native.NativeNode``). The difference between
  the two is what the native hop adds.

Run:  python benches/manifest.py [--quick] [--json PATH]
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from zerohop import MultiprocessNode, Pipeline, Tensor, register_node
from zerohop.manifest import Manifest, load_manifest

TEN_NODES: dict[str, Any] = {
    "version": "v1",
    "metadata": {"name": "ten", "multiprocess": {"channel_capacity": 16}},
    "nodes": [
        {"id": "chunk", "nodeType": "AudioChunkerNode", "params": {"chunkSize": 480}},
        {"id": "gain", "node_type": "Scale", "params": {"factor": 0.5}},
        {
            "id": "resample",
            "node_type": "FastResampleNode",
            "runtime_hint": "rust",
            "params": {"source_rate": 48000, "target_rate": 16000, "quality": "high"},
        },
        {"id": "fmt", "node_type": "AudioFormatNode", "params": {"target_format": "i16"}},
        {"id": "echo1", "node_type": "Echo"},
        {"id": "pass1", "node_type": "PassThrough"},
        {"id": "gain2", "node_type": "Scale", "params": {"factor": 2.0}},
        {"id": "echo2", "node_type": "Echo", "executor": "multiprocess"},
        {"id": "pass2", "node_type": "PassThrough", "executor": "native"},
        {"id": "count", "node_type": "Count"},
    ],
    "connections": [],
}
ids = [n["id"] for n in TEN_NODES["nodes"]]
TEN_NODES["connections"] = [{"from": a, "to": b} for a, b in itertools.pairwise(ids)]


@register_node
class HopStamp(MultiprocessNode):
    """Emits a one-element int64 tensor holding ``time.monotonic_ns()`` at sending."""

    def process(self, frame: Any) -> Tensor:
        return Tensor(np.array([time.monotonic_ns()], np.int64))


@register_node
class HopMeasure(MultiprocessNode):
    """Emits how long the stamped tensor took to get here (ns), as a tensor."""

    def process(self, frame: Tensor) -> Tensor:
        now = time.monotonic_ns()
        return Tensor(np.array([now - int(frame.array[0])], np.int64))


def percentiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "p50": statistics.median(ordered),
        "p95": ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))],
        "n": len(ordered),
    }


def timed(fn: Callable[[], object], runs: int) -> dict[str, float]:
    """p50/p95 of ``fn()`` in ms, after a few warm-up calls."""
    for _ in range(min(20, runs)):
        fn()
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1000)
    return percentiles(samples)


def validation(runs: int, cli_runs: int) -> dict[str, dict[str, float]]:
    import yaml

    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        json_file, yaml_file = Path(tmp) / "ten.json", Path(tmp) / "ten.yaml"
        json_file.write_text(json.dumps(TEN_NODES))
        yaml_file.write_text(yaml.safe_dump(TEN_NODES))
        results["pydantic parse only"] = timed(lambda: Manifest.parse(TEN_NODES), runs)
        results["parse + validate (dict)"] = timed(
            lambda: Manifest.parse(TEN_NODES).to_pipeline(), runs
        )
        results["parse + validate (JSON file)"] = timed(
            lambda: load_manifest(json_file).to_pipeline(), runs
        )
        results["parse + validate (YAML file)"] = timed(
            lambda: load_manifest(yaml_file).to_pipeline(), runs
        )

        def command(*args: str) -> Callable[[], object]:
            return lambda: subprocess.run([sys.executable, *args], check=True, capture_output=True)

        results["`zerohop validate` (CLI, wall)"] = timed(
            command("-m", "zerohop.cli", "validate", str(json_file)), cli_runs
        )
        results["`python -c pass` (floor)"] = timed(command("-c", "pass"), cli_runs)
        results['`python -c "import zerohop"` (floor)'] = timed(
            command("-c", "import zerohop"), cli_runs
        )
    return results


def hop(executor: str, native: bool, frames: int) -> dict[str, float]:
    pipe = Pipeline(f"hop-{executor}", executor=executor)  # type: ignore[arg-type]
    pipe.node("stamp", HopStamp)
    if native:
        pipe.node("mid", "PassThrough")
        pipe.node("measure", HopMeasure).connect("stamp", "mid", "measure")
    else:
        pipe.node("measure", HopMeasure).connect("stamp", "measure")
    tick = Tensor(np.zeros(1, np.int64))
    latencies = []
    with pipe.session() as session:
        for i in range(frames + 50):
            session.send(tick)
            out = session.recv(timeout=60)
            assert isinstance(out, Tensor)
            if i >= 50:  # warm-up frames are not counted
                latencies.append(int(out.array[0]) / 1000)
    return percentiles(latencies)


def main() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _stats import machine_info, markdown_table

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer runs (a smoke run)")
    parser.add_argument("--json", type=Path, default=Path("bench-results/manifest.json"))
    args = parser.parse_args()
    runs, cli_runs, frames = (50, 3, 200) if args.quick else (1000, 20, 2000)

    info = machine_info()
    print(f"# zerohop manifest and hop benchmark\n\n{json.dumps(info)}\n", flush=True)
    results: dict[str, Any] = {"machine": info, "validation_ms": validation(runs, cli_runs)}
    rows = [
        [name, f"{r['p50']:.2f}", f"{r['p95']:.2f}", str(r["n"])]
        for name, r in results["validation_ms"].items()
    ]
    print("10-node manifest (ms):\n")
    print(markdown_table(["measure", "p50 ms", "p95 ms", "runs"], rows), flush=True)

    results["hop_us"] = {}
    for executor in ("multiprocess", "inprocess"):
        for native, label in ((False, "Python → Python"), (True, "Python → PassThrough → Python")):
            results["hop_us"][f"{executor}: {label}"] = hop(executor, native, frames)
    rows = [
        [name, f"{r['p50']:.1f}", f"{r['p95']:.1f}", str(r["n"])]
        for name, r in results["hop_us"].items()
    ]
    print("\nhop latency, stamp → measure (µs):\n")
    print(markdown_table(["path", "p50 µs", "p95 µs", "frames"], rows))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2))
    print(f"\nwrote {args.json}", file=sys.stderr)


if __name__ == "__main__":
    main()
