"""Sessions per second through HAProxy over one and two `zerohop serve`.

Starts one or two servers (`--metrics-port` for their `/healthz`), HAProxy with the
shipped `deploy/haproxy.cfg` in front (with one server, both of its server lines point
at it), and ``--clients`` threads that each make ``ExecutePipeline`` calls back to back
for ``--seconds``: every call is one session (plan, start, one frame through, close).
Reports calls/s and the latency of a call at the client, for a native pipeline
(``PassThrough``) and a Python one (``Echo``: a node process per session), against one
server dialled directly (no balancer), and the ratio of two servers to one. On a 2-core
machine both servers share the same two cores, so the ratio says what the balancer
costs and what one server leaves idle, not how a second machine would scale.

Run:  python benches/cluster.py [--seconds S] [--clients N] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

# benches/grpc.py would shadow grpcio: drop this directory from the path.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).parent.resolve()]

import grpc  # noqa: E402

import zerohop  # noqa: E402
from zerohop._proto import common_pb2, execution_pb2  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def request(node_type: str) -> Any:
    manifest = execution_pb2.PipelineManifest(
        version="v1",
        metadata=execution_pb2.ManifestMetadata(name="cluster"),
        nodes=[execution_pb2.NodeManifest(id="n", node_type=node_type, params="{}")],
    )
    text = common_pb2.DataBuffer(text=common_pb2.TextBuffer(text_data=b"hello"))
    return execution_pb2.ExecuteRequest(manifest=manifest, data_inputs={"n": text})


def start_server(config: Path) -> tuple[subprocess.Popen[str], str, str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "zerohop.cli", "serve", "--port", "0", "--metrics-port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "ZEROHOP_CONFIG": str(config)},
    )
    assert proc.stdout is not None
    address = proc.stdout.readline().split("listening on ")[1].split()[0]
    metrics = proc.stdout.readline().split("metrics on ")[1].strip()
    return proc, address, metrics.rsplit(":", 1)[1].removesuffix("/metrics")


def run(servers: int, node_type: str, clients: int, seconds: float) -> dict[str, Any]:
    """``servers`` behind HAProxy; 0: one server, dialled directly (no balancer)."""
    binary = shutil.which("haproxy")
    if binary is None:
        raise SystemExit("haproxy is not installed: apt install haproxy")
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "runtime.toml"
        config.write_text("[server]\nmax_sessions = 64\n")
        started = [start_server(config) for _ in range(max(servers, 1))]
        if servers == 0:
            try:
                return load(started[0][1], request(node_type), clients, seconds)
            finally:
                started[0][0].send_signal(2)
                started[0][0].wait(30)
        port = free_port()
        env = {**os.environ, "FRONTEND": f"127.0.0.1:{port}"}
        for i in (1, 2):
            _, address, metrics = started[(i - 1) % servers]
            env[f"SERVER{i}"], env[f"METRICS{i}"] = address, metrics
        balancer = subprocess.Popen(
            [binary, "-db", "-f", str(ROOT / "deploy" / "haproxy.cfg")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
        )
        try:
            time.sleep(1.0)  # two health checks: servers up
            return load(f"127.0.0.1:{port}", request(node_type), clients, seconds)
        finally:
            balancer.terminate()
            balancer.wait(30)
            for proc, _, _ in started:
                proc.send_signal(2)
                proc.wait(30)


def load(address: str, message: Any, clients: int, seconds: float) -> dict[str, Any]:
    latencies: list[float] = []
    failures: list[str] = []
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def client() -> None:
        with grpc.insecure_channel(address) as channel:
            execute = channel.unary_unary(
                "/remotemedia.v1.PipelineExecutionService/ExecutePipeline",
                request_serializer=execution_pb2.ExecuteRequest.SerializeToString,
                response_deserializer=execution_pb2.ExecuteResponse.FromString,
            )
            execute(message, timeout=30)  # warm the connection
            while time.monotonic() < stop:
                began = time.perf_counter()
                try:
                    response = execute(message, timeout=30)
                    ok = response.WhichOneof("outcome") == "result"
                    why = "" if ok else response.error.message
                except grpc.RpcError as err:
                    ok, why = False, str(err.code())
                took = time.perf_counter() - began
                with lock:
                    if ok:
                        latencies.append(took)
                    else:
                        failures.append(why)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    began = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.monotonic() - began
    ms = sorted(t * 1e3 for t in latencies)
    pick = lambda q: ms[min(len(ms) - 1, round(q * (len(ms) - 1)))] if ms else float("nan")  # noqa: E731
    return {
        "calls": len(ms),
        "failed": len(failures),
        "calls_per_s": len(ms) / wall,
        "p50_ms": pick(0.5),
        "p95_ms": pick(0.95),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    rows: dict[str, dict[str, Any]] = {}
    for node_type in ("PassThrough", "Echo"):
        for servers in (0, 1, 2):
            label = "direct, no balancer" if servers == 0 else f"{servers} server(s)"
            rows[f"{node_type}, {label}"] = run(servers, node_type, args.clients, args.seconds)
    print(f"zerohop {zerohop.__version__}; {args.clients} clients, {args.seconds:g} s each")
    print(f"{'pipeline, servers':<34} {'calls/s':>8} {'p50 ms':>8} {'p95 ms':>8} {'failed':>7}")
    for name, row in rows.items():
        print(
            f"{name:<34} {row['calls_per_s']:8.1f} {row['p50_ms']:8.1f} "
            f"{row['p95_ms']:8.1f} {row['failed']:7d}"
        )
    for node_type in ("PassThrough", "Echo"):
        one, two = rows[f"{node_type}, 1 server(s)"], rows[f"{node_type}, 2 server(s)"]
        print(f"{node_type}: 2 servers / 1 = {two['calls_per_s'] / one['calls_per_s']:.2f}")
    if args.json:
        args.json.write_text(
            json.dumps({"cpus": os.cpu_count(), "python": platform.python_version(), "rows": rows})
        )


if __name__ == "__main__":
    main()
