"""gRPC benchmarks: what `zerohop serve` adds to a 20 ms audio chunk's round trip.

Starts a real `zerohop serve` on loopback and streams one 20 ms 16 kHz mono float32
chunk (320 samples, 1280 bytes) at a time through ``StreamPipeline``, waiting for its
result before sending the next (one chunk in flight), with `zerohop.client`:

- through a native ``PassThrough`` node (gRPC + executor, no Python node);
- through a Python ``Echo`` node (its own process: two shared-memory hops);
- for comparison, the same ``Echo`` pipeline as a local session (no gRPC).

Then the time from a client disconnecting mid-stream until every node process of its
session is gone.

Then whole calls, as a remotemedia client makes them (raw protos, one session per call)
for an all-native, an all-Python and a mixed pipeline: ``ExecutePipeline`` of one
20 ms chunk at the client against the server's own ``wall_time_ms``, and a stream's
life: open → ``StreamReady``, one chunk → its result, ``COMMAND_CLOSE`` →
``StreamClosed``.

Run:  python benches/grpc.py [--quick] [--json PATH]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import queue
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# This file is named grpc.py: drop its directory from the path, or `import grpc` (in
# zerohop.client) would import this script instead of grpcio.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).parent.resolve()]

import numpy as np  # noqa: E402

import zerohop  # noqa: E402
from zerohop._proto import common_pb2, execution_pb2, streaming_pb2  # noqa: E402
from zerohop.client import Client  # noqa: E402

TOKEN = "bench"
CHUNK = np.sin(np.arange(320) / 16000 * 2 * np.pi * 440).astype(np.float32)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def summary(seconds: list[float]) -> dict[str, float]:
    ms = [s * 1e3 for s in seconds]
    return {
        "n": len(ms),
        "p50_ms": percentile(ms, 50),
        "p95_ms": percentile(ms, 95),
        "p99_ms": percentile(ms, 99),
        "mean_ms": sum(ms) / len(ms),
    }


def manifest(node_type: str) -> dict[str, Any]:
    return {
        "version": "v1",
        "metadata": {"name": "bench"},
        "nodes": [{"id": "n", "node_type": node_type}],
    }


def start_server() -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "zerohop.cli", "serve", "--port", "0", "--token", TOKEN],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if "listening on" not in line:
        proc.kill()
        raise SystemExit(f"zerohop serve did not start: {line!r}")
    return proc, line.split("listening on ")[1].split()[0]


def grpc_round_trips(address: str, node_type: str, count: int, warmup: int) -> list[float]:
    """One chunk in flight: send, wait for its result, repeat."""
    pending: queue.Queue[zerohop.Frame | None] = queue.Queue()

    def frames() -> Iterator[zerohop.Frame]:
        while (frame := pending.get()) is not None:
            yield frame

    times = []
    with Client(address, TOKEN) as client:
        outputs = client.stream(manifest(node_type), frames())
        for i in range(warmup + count):
            start = time.perf_counter()
            pending.put(zerohop.Audio(CHUNK, 16000))
            out = next(outputs)
            took = time.perf_counter() - start
            assert isinstance(out, zerohop.Audio) and out.num_frames == 320
            if i >= warmup:
                times.append(took)
        pending.put(None)
        for _ in outputs:
            pass
    return times


def local_round_trips(count: int, warmup: int) -> list[float]:
    times = []
    with zerohop.Pipeline("bench").node("n", "Echo").session() as session:
        for i in range(warmup + count):
            start = time.perf_counter()
            session.send(zerohop.Audio(CHUNK, 16000))
            session.recv()
            if i >= warmup:
                times.append(time.perf_counter() - start)
    return times


def runner_pids(root: int) -> set[int]:
    """Node processes below ``root``."""
    found, todo = set(), [root]
    while todo:
        for task in Path(f"/proc/{todo.pop()}/task").glob("*"):
            try:
                children = [int(p) for p in (task / "children").read_text().split()]
            except OSError:
                continue
            todo.extend(children)
            for pid in children:
                try:
                    if b"zerohop.runner" in Path(f"/proc/{pid}/cmdline").read_bytes():
                        found.add(pid)
                except OSError:
                    pass
    return found


def disconnect_cleanup(address: str, server_pid: int, trials: int) -> list[float]:
    """A client vanishes mid-stream (its channel closed): time until its session's node
    processes are gone."""
    times = []
    for _ in range(trials):
        client = Client(address, TOKEN)
        outputs = client.stream(manifest("Echo"), iter(lambda: zerohop.Audio(CHUNK, 16000), None))
        next(outputs)
        assert runner_pids(server_pid)
        start = time.perf_counter()
        client.close()
        while runner_pids(server_pid):
            if time.perf_counter() - start > 5:
                raise SystemExit("node processes still running 5 s after the disconnect")
            time.sleep(0.002)
        times.append(time.perf_counter() - start)
    return times


#: (id, node_type, params) chains for the whole-call rows.
CALL_PIPELINES: dict[str, list[tuple[str, str, dict[str, Any]]]] = {
    "all-native": [
        ("chunk", "AudioChunkerNode", {"chunk_size": 160}),
        ("resample", "FastResampleNode", {"source_rate": 16000, "target_rate": 8000}),
    ],
    "all-Python": [("a", "Echo", {}), ("b", "Echo", {})],
    "mixed": [
        ("chunk", "AudioChunkerNode", {"chunk_size": 160}),
        ("echo", "Echo", {}),
        ("resample", "FastResampleNode", {"source_rate": 16000, "target_rate": 8000}),
    ],
}


def wire_manifest(nodes: list[tuple[str, str, dict[str, Any]]]) -> Any:
    return execution_pb2.PipelineManifest(
        version="v1",
        metadata=execution_pb2.ManifestMetadata(name="bench"),
        nodes=[
            execution_pb2.NodeManifest(id=i, node_type=t, params=json.dumps(p)) for i, t, p in nodes
        ],
        connections=[
            execution_pb2.Connection(**{"from": a[0], "to": b[0]})
            for a, b in itertools.pairwise(nodes)
        ],
    )


def wire_chunk() -> Any:
    return common_pb2.DataBuffer(
        audio=common_pb2.AudioBuffer(
            samples=CHUNK.tobytes(),
            sample_rate=16000,
            channels=1,
            format=common_pb2.AUDIO_FORMAT_F32,
            num_samples=len(CHUNK),
        )
    )


def whole_calls(
    address: str, nodes: list[tuple[str, str, dict[str, Any]]], calls: int
) -> dict[str, Any]:
    """``calls`` ExecutePipeline calls and ``calls`` streams, each its own session."""
    import grpc

    auth = [("authorization", f"Bearer {TOKEN}")]
    manifest = wire_manifest(nodes)
    times: dict[str, list[float]] = {
        k: [] for k in ("execute", "server", "ready", "result", "closed")
    }
    with grpc.insecure_channel(address) as channel:
        execute = channel.unary_unary(
            "/remotemedia.v1.PipelineExecutionService/ExecutePipeline",
            request_serializer=execution_pb2.ExecuteRequest.SerializeToString,
            response_deserializer=execution_pb2.ExecuteResponse.FromString,
        )
        stream = channel.stream_stream(
            "/remotemedia.v1.StreamingPipelineService/StreamPipeline",
            request_serializer=streaming_pb2.StreamRequest.SerializeToString,
            response_deserializer=streaming_pb2.StreamResponse.FromString,
        )
        request = execution_pb2.ExecuteRequest(
            manifest=manifest, data_inputs={nodes[0][0]: wire_chunk()}
        )
        for _ in range(calls):
            start = time.perf_counter()
            response = execute(request, metadata=auth, timeout=60)
            times["execute"].append(time.perf_counter() - start)
            if response.WhichOneof("outcome") != "result":
                raise SystemExit(f"ExecutePipeline failed: {response.error}")
            times["server"].append(response.result.metrics.wall_time_ms / 1e3)
        close = streaming_pb2.StreamRequest(
            control=streaming_pb2.StreamControl(command=streaming_pb2.StreamControl.COMMAND_CLOSE)
        )
        for _ in range(calls):
            requests: queue.Queue[Any] = queue.Queue()
            requests.put(
                streaming_pb2.StreamRequest(init=streaming_pb2.StreamInit(manifest=manifest))
            )
            start = time.perf_counter()
            responses = stream(iter(requests.get, None), metadata=auth, timeout=60)
            marks: dict[str, float] = {}
            for response in responses:
                kind = response.WhichOneof("response")
                now = time.perf_counter()
                if kind == "ready":
                    times["ready"].append(now - start)
                    marks["chunk"] = time.perf_counter()
                    requests.put(
                        streaming_pb2.StreamRequest(
                            data_chunk=streaming_pb2.DataChunk(buffer=wire_chunk())
                        )
                    )
                elif kind == "result" and "result" not in marks:
                    marks["result"] = now
                    times["result"].append(now - marks["chunk"])
                    marks["close"] = time.perf_counter()
                    requests.put(close)
                    requests.put(None)
                elif kind == "closed":
                    times["closed"].append(now - marks["close"])
                elif kind == "error":
                    raise SystemExit(f"StreamPipeline failed: {response.error}")
    return {k: summary(v) for k, v in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer round trips")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()
    count, warmup, trials = (200, 20, 5) if args.quick else (2000, 100, 20)
    calls = 10 if args.quick else 40

    proc, address = start_server()
    try:
        rows = {
            "gRPC → PassThrough (native)": summary(
                grpc_round_trips(address, "PassThrough", count, warmup)
            ),
            "gRPC → Echo (Python process)": summary(
                grpc_round_trips(address, "Echo", count, warmup)
            ),
            "local session → Echo (no gRPC)": summary(local_round_trips(count, warmup)),
        }
        cleanup = summary(disconnect_cleanup(address, proc.pid, trials))
        sessions = {
            name: whole_calls(address, nodes, calls) for name, nodes in CALL_PIPELINES.items()
        }
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(15)

    print(f"20 ms 16 kHz float32 chunk, one in flight; {count} round trips after {warmup}")
    print(f"{'round trip':<34} {'p50':>8} {'p95':>8} {'p99':>8} {'mean':>8}  (ms)")
    for name, row in rows.items():
        cells = " ".join(f"{row[k]:8.3f}" for k in ("p50_ms", "p95_ms", "p99_ms", "mean_ms"))
        print(f"{name:<34} {cells}")
    print(
        f"disconnect → node processes gone: {cleanup['p50_ms']:.0f} ms p50, "
        f"{cleanup['p95_ms']:.0f} ms p95 ({trials} trials)"
    )
    print(f"\nwhole calls, one session each ({calls} of each), p50 / p95 ms:")
    print(
        f"{'pipeline':<12} {'Execute (client)':>18} {'(server wall)':>15} "
        f"{'open→ready':>14} {'chunk→result':>14} {'close→closed':>14}"
    )
    for name, row in sessions.items():
        cells = " ".join(
            f"{row[k]['p50_ms']:7.1f}/{row[k]['p95_ms']:<6.1f}".rjust(w)
            for k, w in (
                ("execute", 18),
                ("server", 15),
                ("ready", 14),
                ("result", 14),
                ("closed", 14),
            )
        )
        print(f"{name:<12} {cells}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps(
                {
                    "machine": {
                        "cpus": os.cpu_count(),
                        "python": platform.python_version(),
                        "zerohop": zerohop.__version__,
                    },
                    "round_trips": rows,
                    "disconnect_cleanup": cleanup,
                    "whole_calls": sessions,
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
