"""A remotemedia-sdk-shaped client for the compatibility suites: stubs over the
``remotemedia.v1`` protos only (no ``zerohop.client``), with messages built the way
remotemedia's own Python and Node clients build them — params as a JSON string, ports
never named, a ``client_version`` that is not zerohop's, ``DataBuffer.metadata`` on
every chunk (the Node client's habit) — and a real ``zerohop serve`` to point it at.

Written from the wire contract and the behaviour notes in ``shared/reference``; no
file of remotemedia's is used.
"""

from __future__ import annotations

import itertools
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from zerohop._proto import common_pb2, execution_pb2, streaming_pb2

#: What remotemedia's clients put in ``client_version`` (anything not "zerohop...").
CLIENT_VERSION = "0.4.0"
TOKEN = "compat-token-41c2"
AUTH = [("authorization", f"Bearer {TOKEN}")]


@dataclass
class Server:
    address: str
    pid: int
    #: ``http://host:port/metrics`` when started with ``metrics=True``.
    metrics_url: str | None = None


def descendants(pid: int) -> set[int]:
    """Every live process below ``pid``."""
    found: set[int] = set()
    todo = [pid]
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
                if child not in found:
                    found.add(child)
                    todo.append(child)
    return found


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def node_pids(server: Server) -> set[int]:
    """The server's node processes (`pgrep -f zerohop.runner`, below the server only:
    other test runs on this machine have their own)."""
    return {p for p in descendants(server.pid) if "zerohop.runner" in cmdline(p)}


def wait_until(condition: Any, timeout: float) -> float | None:
    """Seconds until ``condition()`` held, or None if it did not within ``timeout``."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if condition():
            return time.monotonic() - start
        time.sleep(0.01)
    return None


def scrape(url: str) -> dict[str, float]:
    """Every sample of a `/metrics` page, keyed by name and labels as written."""
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.headers["content-type"].startswith("application/openmetrics-text")
        text = response.read().decode()
    assert text.endswith("# EOF\n")
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, value = line.rsplit(" ", 1)
            samples[key] = float(value)
    return samples


def start_server(
    config: Path,
    token: str | None,
    env: dict[str, str] | None = None,
    *,
    max_fds: int | None = None,
    metrics: bool = False,
    host: str = "127.0.0.1",
    prefix: Sequence[str] = (),
) -> tuple[subprocess.Popen[str], Server]:
    """`zerohop serve --port 0` with ``config`` as its runtime.toml (in ``env``, default
    this process's environment; at most ``max_fds`` file descriptors if given; with
    ``--metrics-port 0`` if ``metrics``), listening on ``host``, its command run under
    ``prefix`` (another host's namespaces: see ``hosts.py``)."""
    env = {**(os.environ if env is None else env), "ZEROHOP_CONFIG": str(config)}
    env.pop("ZEROHOP_TOKEN", None)
    if token:
        env["ZEROHOP_TOKEN"] = token

    command = [sys.executable, "-m", "zerohop.cli", "serve", "--host", host, "--port", "0"]
    if metrics:
        command += ["--metrics-port", "0"]
    if max_fds is not None:
        # Set in the child's own code, not with preexec_fn: a fork of this process
        # (grpcio's threads running) would make grpcio recreate its eventfds here.
        limit = (
            "import os, resource, sys; "
            f"resource.setrlimit(resource.RLIMIT_NOFILE, ({max_fds}, {max_fds})); "
            "os.execv(sys.executable, sys.argv[1:])"
        )
        command = [sys.executable, "-c", limit, *command]
    proc = subprocess.Popen([*prefix, *command], stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert f"listening on {host}:" in line, line
    server = Server(line.split("listening on ")[1].split()[0], proc.pid)
    if metrics:
        line = proc.stdout.readline()
        assert "metrics on http://" in line, line
        server.metrics_url = line.split("metrics on ")[1].strip()
    return proc, server


def exited_clean(proc: subprocess.Popen[str], below: set[int]) -> None:
    """The server exits 0 by itself (within a hang bound), and none of ``below`` (the
    processes it had started) outlives it."""
    try:
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        assert proc.stdout is not None
        proc.stdout.close()
    gone = wait_until(lambda: not any(Path(f"/proc/{p}").exists() for p in below), 10.0)
    assert gone is not None, f"processes left: {below}"


def stop_server(proc: subprocess.Popen[str]) -> None:
    """Ctrl-C (SIGTERM would drain, waiting for running sessions); the server exits
    cleanly and nothing it started outlives it."""
    below = descendants(proc.pid)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=15) == 0
    assert proc.stdout is not None
    proc.stdout.close()
    assert wait_until(lambda: not any(Path(f"/proc/{p}").exists() for p in below), 5.0) is not None


# ------------------------------------------------------------------ messages


def pipeline(
    nodes: Sequence[tuple[str, str, dict[str, Any]]],
    connections: Sequence[tuple[str, str]] | None = None,
    *,
    name: str = "compat",
    version: str = "v1",
) -> execution_pb2.PipelineManifest:
    """A PipelineManifest as remotemedia's clients send it: ``(id, node_type, params)``
    nodes with params as a JSON string, and port-less connections (a chain unless
    ``connections`` is given)."""
    if connections is None:
        connections = [(a[0], b[0]) for a, b in itertools.pairwise(nodes)]
    return execution_pb2.PipelineManifest(
        version=version,
        metadata=execution_pb2.ManifestMetadata(name=name),
        nodes=[
            execution_pb2.NodeManifest(id=i, node_type=t, params=json.dumps(p), is_streaming=True)
            for i, t, p in nodes
        ],
        connections=[execution_pb2.Connection(**{"from": a, "to": b}) for a, b in connections],
    )


def audio(samples: np.ndarray, rate: int, **metadata: str) -> common_pb2.DataBuffer:
    """Mono float32 audio, as both clients send microphone chunks."""
    data = np.ascontiguousarray(samples, dtype="<f4")
    return common_pb2.DataBuffer(
        audio=common_pb2.AudioBuffer(
            samples=data.tobytes(),
            sample_rate=rate,
            channels=1,
            format=common_pb2.AUDIO_FORMAT_F32,
            num_samples=len(data),
        ),
        metadata=metadata,
    )


def text(value: str, **metadata: str) -> common_pb2.DataBuffer:
    return common_pb2.DataBuffer(
        text=common_pb2.TextBuffer(text_data=value.encode(), encoding="utf-8"),
        metadata=metadata,
    )


def sine(seconds: float, rate: int) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.4 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)


# ------------------------------------------------------------------ calls


class RemotemediaClient:
    """The three rpcs over raw stubs, as a client that knows only the protos."""

    def __init__(self, address: str, *, client_version: str = CLIENT_VERSION) -> None:
        self.channel = grpc.insecure_channel(address)
        self.client_version = client_version
        #: The response headers of the latest stream, once it has answered.
        self.stream_metadata: dict[str, str] = {}
        self._execute = self.channel.unary_unary(
            "/remotemedia.v1.PipelineExecutionService/ExecutePipeline",
            request_serializer=execution_pb2.ExecuteRequest.SerializeToString,
            response_deserializer=execution_pb2.ExecuteResponse.FromString,
        )
        self._version = self.channel.unary_unary(
            "/remotemedia.v1.PipelineExecutionService/GetVersion",
            request_serializer=execution_pb2.VersionRequest.SerializeToString,
            response_deserializer=execution_pb2.VersionResponse.FromString,
        )
        self._stream = self.channel.stream_stream(
            "/remotemedia.v1.StreamingPipelineService/StreamPipeline",
            request_serializer=streaming_pb2.StreamRequest.SerializeToString,
            response_deserializer=streaming_pb2.StreamResponse.FromString,
        )

    def execute(
        self,
        manifest: execution_pb2.PipelineManifest,
        inputs: dict[str, common_pb2.DataBuffer],
        timeout: float = 60.0,
    ) -> execution_pb2.ExecuteResponse:
        request = execution_pb2.ExecuteRequest(
            manifest=manifest, data_inputs=inputs, client_version=self.client_version
        )
        response: execution_pb2.ExecuteResponse = self._execute(
            request, metadata=AUTH, timeout=timeout
        )
        return response

    def version(self) -> execution_pb2.VersionResponse:
        request = execution_pb2.VersionRequest(client_version=self.client_version)
        response: execution_pb2.VersionResponse = self._version(request, metadata=AUTH)
        return response

    def stream(
        self,
        manifest: execution_pb2.PipelineManifest,
        chunks: Iterable[streaming_pb2.DataChunk],
        *,
        close: bool = True,
        timeout: float = 120.0,
    ) -> Iterator[streaming_pb2.StreamResponse]:
        """StreamInit, then ``chunks`` once StreamReady came, then COMMAND_CLOSE (as
        remotemedia's clients end a stream); yields every response."""
        ready = threading.Event()
        requests: queue.Queue[streaming_pb2.StreamRequest | None] = queue.Queue()
        requests.put(
            streaming_pb2.StreamRequest(
                init=streaming_pb2.StreamInit(manifest=manifest, client_version=self.client_version)
            )
        )

        def feed() -> None:
            if not ready.wait(timeout):
                return
            for chunk in chunks:
                requests.put(streaming_pb2.StreamRequest(data_chunk=chunk))
            if close:
                command = streaming_pb2.StreamControl.COMMAND_CLOSE
                requests.put(
                    streaming_pb2.StreamRequest(
                        control=streaming_pb2.StreamControl(command=command)
                    )
                )
            requests.put(None)

        feeder = threading.Thread(target=feed, daemon=True)
        feeder.start()
        call = self._stream(iter(requests.get, None), metadata=AUTH, timeout=timeout)
        try:
            for response in call:
                self.stream_metadata = dict(call.initial_metadata())
                if response.WhichOneof("response") == "ready":
                    ready.set()
                yield response
        finally:
            ready.set()
            call.cancel()
            feeder.join(timeout)

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> RemotemediaClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
