"""Hostile clients: what `zerohop serve` holds, and what a normal client sees, while
careless or hostile clients run.

Each scenario starts a fresh `zerohop serve` (loopback, a config both old and new
servers read: ``[channel] capacity = 4``, ``[server] max_sessions = 32``; the fd limit
256 for the connection flood), starts its hostile clients, lets them settle, then
times a normal client: ``ExecutePipeline`` calls of an all-native pipeline (no node
process to start: what is timed is the server's own responsiveness), each with a 10 s
deadline, on a connection it opened before the hostile clients came; then one call
from a new client. It reports the normal client's p50 / p95 latency and failures, and the
server's memory (``VmRSS`` and its private part ``RssAnon``, highest seen, sampled
every 100 ms) and CPU while the hostile clients ran.

- **quiet**: no hostile client (the reference).
- **idle**: ``--idle`` streams that send their ``StreamInit`` (an ``Echo`` node each:
  their sessions start) and then nothing.
- **non-reading**: ``--non-reading`` streams that send one 32 MiB bytes chunk into a
  ``Repeat`` node (20 copies out) and never read a response. A server over
  ``--rss-cap`` (default 6 GiB) is stopped there and the row says so.
- **big manifests**: ``--big`` clients sending ``ExecutePipeline`` calls with a
  3.5 MiB manifest (4000 native nodes) back to back: planning holds the GIL.
- **flood**: ``--flood`` TCP connections that never send a byte, against a server whose
  fd limit is 256.

Run the same script with an older build's interpreter for the "before" rows:
``/path/to/old/venv/bin/python benches/hostile.py``.

Run:  python benches/hostile.py [--quick] [--json PATH]
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import platform
import signal
import socket
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

import grpc  # noqa: E402

import zerohop  # noqa: E402
from zerohop._proto import common_pb2, execution_pb2, streaming_pb2  # noqa: E402

CONFIG = "[channel]\ncapacity = 4\n\n[server]\nmax_sessions = 32\n"
FRAME = 32 << 20
GIB = 1 << 30


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def wire_manifest(nodes: list[tuple[str, str, dict[str, Any]]]) -> Any:
    return execution_pb2.PipelineManifest(
        version="v1",
        metadata=execution_pb2.ManifestMetadata(name="hostile"),
        nodes=[
            execution_pb2.NodeManifest(id=i, node_type=t, params=json.dumps(p)) for i, t, p in nodes
        ],
        connections=[
            execution_pb2.Connection(**{"from": a[0], "to": b[0]})
            for a, b in itertools.pairwise(nodes)
        ],
    )


NORMAL = execution_pb2.ExecuteRequest(
    manifest=wire_manifest([("n", "PassThrough", {})]),
    data_inputs={"n": common_pb2.DataBuffer(text=common_pb2.TextBuffer(text_data=b"hello"))},
)


class Server:
    """A `zerohop serve` on a free loopback port, optionally with a lower fd limit."""

    def __init__(self, config: Path, max_fds: int | None = None) -> None:
        prefix = []
        if max_fds is not None:
            # prlimit, not preexec_fn: grpcio's fork handlers do not belong in a child.
            prefix = ["prlimit", f"--nofile={max_fds}:{max_fds}", "--"]
        self.proc = subprocess.Popen(
            [*prefix, sys.executable, "-m", "zerohop.cli", "serve", "--port", "0"],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env={**os.environ, "ZEROHOP_CONFIG": str(config)},
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if "listening on" not in line:
            self.proc.kill()
            raise SystemExit(f"zerohop serve did not start: {line!r}")
        self.address = line.split("listening on ")[1].split()[0]
        self.peak = {"VmRSS": 0, "RssAnon": 0}
        self._cpu_at_start = self.cpu_seconds()
        self._sampling = threading.Event()
        self._sampler = threading.Thread(target=self._sample, daemon=True)
        self._sampler.start()

    def memory(self) -> dict[str, int]:
        """``VmRSS`` and ``RssAnon`` in bytes."""
        found = {}
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in self.peak:
                found[key] = int(value.split()[0]) << 10
        return found

    def _sample(self) -> None:
        while not self._sampling.wait(0.1):
            with contextlib.suppress(OSError, ValueError):
                for key, value in self.memory().items():
                    self.peak[key] = max(self.peak[key], value)

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> float:
        """Stops the server; returns the CPU seconds it used since it started."""
        self._sampling.set()
        cpu = self.cpu_seconds() - self._cpu_at_start
        # SIGINT: an older server leaked shared memory on SIGTERM.
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        return cpu


def execute_call(channel: grpc.Channel) -> Callable[..., Any]:
    return channel.unary_unary(
        "/remotemedia.v1.PipelineExecutionService/ExecutePipeline",
        request_serializer=execution_pb2.ExecuteRequest.SerializeToString,
        response_deserializer=execution_pb2.ExecuteResponse.FromString,
    )


def call_once(execute: Callable[..., Any]) -> str | None:
    """One ExecutePipeline call with a 10 s deadline: None, or why it failed."""
    try:
        response = execute(NORMAL, timeout=10)
    except grpc.RpcError as err:
        return f"{err.code().name}: {(err.details() or '')[:60]}"
    if response.WhichOneof("outcome") != "result":
        return str(response.error.message[:80])
    return None


def normal_client(execute: Callable[..., Any], calls: int) -> dict[str, Any]:
    """``calls`` ExecutePipeline calls, one after another."""
    times, failures = [], []
    for _ in range(calls):
        start = time.perf_counter()
        failure = call_once(execute)
        if failure is None:
            times.append(time.perf_counter() - start)
        else:
            failures.append(failure)
    row: dict[str, Any] = {"calls": calls, "failed": len(failures)}
    if failures:
        row["first_failure"] = failures[0]
    if times:
        ms = [t * 1e3 for t in times]
        row |= {"p50_ms": percentile(ms, 50), "p95_ms": percentile(ms, 95)}
    return row


@contextlib.contextmanager
def streams(address: str, count: int, first: list[Any]) -> Iterator[None]:
    """``count`` StreamPipeline calls that send ``first`` and then wait (sending nothing,
    reading nothing) until the block ends; then cancelled."""
    release = threading.Event()
    channel = grpc.insecure_channel(
        address,
        options=[("grpc.max_send_message_length", 128 << 20)],
    )
    call = channel.stream_stream(
        "/remotemedia.v1.StreamingPipelineService/StreamPipeline",
        request_serializer=streaming_pb2.StreamRequest.SerializeToString,
        response_deserializer=streaming_pb2.StreamResponse.FromString,
    )

    def requests() -> Iterator[Any]:
        yield from first
        release.wait(600)

    calls = [call(requests(), timeout=600) for _ in range(count)]
    try:
        yield
    finally:
        release.set()
        for c in calls:
            c.cancel()
        channel.close()


def idle_streams(address: str, count: int) -> contextlib.AbstractContextManager[None]:
    init = streaming_pb2.StreamInit(manifest=wire_manifest([("e", "Echo", {})]))
    return streams(address, count, [streaming_pb2.StreamRequest(init=init)])


def non_reading_streams(address: str, count: int) -> contextlib.AbstractContextManager[None]:
    init = streaming_pb2.StreamInit(manifest=wire_manifest([("rep", "Repeat", {"times": 20})]))
    chunk = streaming_pb2.DataChunk(
        node_id="rep",
        buffer=common_pb2.DataBuffer(binary=common_pb2.BinaryBuffer(data=b"x" * FRAME)),
    )
    return streams(
        address,
        count,
        [streaming_pb2.StreamRequest(init=init), streaming_pb2.StreamRequest(data_chunk=chunk)],
    )


@contextlib.contextmanager
def big_manifests(address: str, clients: int) -> Iterator[None]:
    """``clients`` threads sending ExecutePipeline calls with a 3.5 MiB manifest (4000
    nodes, each with 800 bytes of params), one after another, until the block ends."""
    params = json.dumps({"padding": "x" * 800})
    manifest = wire_manifest([(f"n{i}", "PassThrough", {}) for i in range(4000)])
    for node in manifest.nodes:
        node.params = params
    request = execution_pb2.ExecuteRequest(
        manifest=manifest,
        data_inputs={"n0": common_pb2.DataBuffer(text=common_pb2.TextBuffer(text_data=b"x"))},
    )
    stop = threading.Event()

    def send() -> None:
        with grpc.insecure_channel(address) as channel:
            execute = execute_call(channel)
            while not stop.is_set():
                with contextlib.suppress(grpc.RpcError):
                    execute(request, timeout=60)

    threads = [threading.Thread(target=send, daemon=True) for _ in range(clients)]
    for t in threads:
        t.start()
    try:
        yield
    finally:
        stop.set()
        for t in threads:
            t.join(120)


@contextlib.contextmanager
def flood(address: str, count: int) -> Iterator[None]:
    """``count`` TCP connections that never send a byte (those the server refuses at
    once are not retried)."""
    host, port = address.rsplit(":", 1)
    sockets = []
    for _ in range(count):
        with contextlib.suppress(OSError):
            sockets.append(socket.create_connection((host, int(port)), timeout=5))
    try:
        yield
    finally:
        for s in sockets:
            s.close()


def scenario(
    config: Path,
    hostile: Callable[[str], contextlib.AbstractContextManager[None]] | None,
    *,
    settle: float,
    calls: int,
    rss_cap: int,
    max_fds: int | None = None,
) -> dict[str, Any]:
    """The normal client connects (one call) before the hostile clients start, and
    times its calls once they have settled; then a new client makes one call."""
    server = Server(config, max_fds)
    began = time.monotonic()
    try:
        with grpc.insecure_channel(server.address) as channel:
            execute = execute_call(channel)
            if (failure := call_once(execute)) is not None:
                raise SystemExit(f"the normal client failed before any hostile one: {failure}")
            with hostile(server.address) if hostile else contextlib.nullcontext():
                # Let the hostile clients take what they take (stopping past the cap).
                deadline = time.monotonic() + settle
                over = False
                while time.monotonic() < deadline and not over:
                    time.sleep(0.1)
                    over = server.peak["VmRSS"] > rss_cap
                row = {} if over else normal_client(execute, calls)
                if not over:
                    with grpc.insecure_channel(server.address) as fresh:
                        row["new_client"] = call_once(execute_call(fresh)) or "served"
                row |= {"over_rss_cap": over}
                memory = dict(server.peak)
    finally:
        wall = time.monotonic() - began
        cpu = server.stop()
    row |= {
        "server_rss_mib": memory["VmRSS"] / (1 << 20),
        "server_anon_mib": memory["RssAnon"] / (1 << 20),
        "server_cpu_pct": 100 * cpu / wall,
    }
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="shorter settle, fewer calls")
    parser.add_argument("--idle", type=int, default=16)
    parser.add_argument("--non-reading", type=int, default=10)
    parser.add_argument("--big", type=int, default=2)
    parser.add_argument("--flood", type=int, default=400)
    parser.add_argument("--rss-cap", type=float, default=6.0, help="GiB")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()
    settle, calls = (4.0, 20) if args.quick else (10.0, 50)
    cap = int(args.rss_cap * GIB)

    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "runtime.toml"
        config.write_text(CONFIG)
        # (name, the hostile clients, the server's fd limit)
        hostile: list[tuple[str, Callable[[str], Any] | None, int | None]] = [
            ("quiet", None, None),
            (f"{args.idle} idle streams", lambda a: idle_streams(a, args.idle), None),
            (
                f"{args.non_reading} non-reading streams, 32 MiB frames",
                lambda a: non_reading_streams(a, args.non_reading),
                None,
            ),
            (
                f"{args.big} clients sending 3.5 MiB manifests",
                lambda a: big_manifests(a, args.big),
                None,
            ),
            (f"{args.flood} silent connections, fd limit 256", lambda a: flood(a, args.flood), 256),
        ]
        rows = {
            name: scenario(
                config,
                clients,
                settle=1.0 if clients is None else settle,
                calls=calls,
                rss_cap=cap,
                max_fds=max_fds,
            )
            for name, clients, max_fds in hostile
        }

    print(f"zerohop {zerohop.__version__} ({zerohop.__file__})")
    print(f"normal client: {calls} ExecutePipeline calls (native PassThrough), 10 s deadline each")
    header = ("scenario", "p50 ms", "p95 ms", "failed", "new client", "server RSS", "(anon)", "CPU")
    print(f"{header[0]:<46} {' '.join(f'{h:>10}' for h in header[1:])}")
    for name, row in rows.items():
        if row["over_rss_cap"]:
            p50 = p95 = failed = fresh = f"> {args.rss_cap:g} GiB"
        else:
            p50 = f"{row['p50_ms']:.1f}" if "p50_ms" in row else "-"
            p95 = f"{row['p95_ms']:.1f}" if "p95_ms" in row else "-"
            failed = f"{row['failed']}/{row['calls']}"
            fresh = "served" if row["new_client"] == "served" else "failed"
        cells = [
            p50,
            p95,
            failed,
            fresh,
            f"{row['server_rss_mib']:.0f} MiB",
            f"{row['server_anon_mib']:.0f} MiB",
            f"{row['server_cpu_pct']:.0f} %",
        ]
        print(f"{name:<46} {' '.join(f'{c:>10}' for c in cells)}")
        if row.get("first_failure"):
            print(f"{'':<46} first failure: {row['first_failure']}")
        if row.get("new_client", "served") != "served":
            print(f"{'':<46} new client: {row['new_client']}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        result = {
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
            "zerohop": zerohop.__version__,
            "rows": rows,
        }
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
