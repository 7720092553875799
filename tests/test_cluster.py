"""Several `zerohop serve` behind a real balancer: Debian's HAProxy, run with the
shipped `deploy/haproxy.cfg`, balances gRPC (HTTP/2 on both sides) over two servers,
checking each over HTTP (`/healthz` on the metrics port). One server is drained
(SIGTERM) while streams run through the balancer: its streams finish, new ones go to
the other, none fails. Clients configure gRPC's own retry policy for UNAVAILABLE, as
clients behind a balancer do: a stream that reached the draining server before the
balancer's next health check is refused there before it starts, and replayed.

Both servers and the balancer run on this machine, on loopback."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from remotemedia import descendants, exited_clean, pipeline, start_server, text, wait_until

from zerohop._proto import streaming_pb2

ROOT = Path(__file__).resolve().parent.parent
RETRY_ON_UNAVAILABLE = json.dumps(
    {
        "methodConfig": [
            {
                "name": [{"service": "remotemedia.v1.StreamingPipelineService"}],
                "retryPolicy": {
                    "maxAttempts": 5,
                    "initialBackoff": "0.1s",
                    "maxBackoff": "1s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE"],
                },
            }
        ]
    }
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def samples(metrics_url: str) -> dict[str, float]:
    with urllib.request.urlopen(metrics_url, timeout=10) as page:
        lines = page.read().decode().splitlines()
    return {k: float(v) for k, v in (line.rsplit(" ", 1) for line in lines if line[:1] != "#")}


def healthz(metrics_url: str) -> int:
    try:
        with urllib.request.urlopen(metrics_url.replace("/metrics", "/healthz"), timeout=10) as r:
            return int(r.status)
    except urllib.error.HTTPError as err:
        err.close()
        return int(err.code)


class Stream:
    """One stream through the balancer: an Echo session, ``frames`` text chunks sent
    ``pace`` apart once it is ready, then COMMAND_CLOSE; the outputs it got."""

    def __init__(self, channel: grpc.Channel, name: str, frames: int, pace: float) -> None:
        self.name = name
        self.texts: list[str] = []
        self.error: BaseException | None = None
        self.ready = threading.Event()
        call = channel.stream_stream(
            "/remotemedia.v1.StreamingPipelineService/StreamPipeline",
            request_serializer=streaming_pb2.StreamRequest.SerializeToString,
            response_deserializer=streaming_pb2.StreamResponse.FromString,
        )
        init = streaming_pb2.StreamInit(manifest=pipeline([("e", "Echo", {})]))

        def requests() -> Iterator[streaming_pb2.StreamRequest]:
            yield streaming_pb2.StreamRequest(init=init)
            self.ready.wait(60)
            for i in range(frames):
                chunk = streaming_pb2.DataChunk(node_id="e", buffer=text(f"{name}-{i}"))
                yield streaming_pb2.StreamRequest(data_chunk=chunk)
                time.sleep(pace)
            close = streaming_pb2.StreamControl.COMMAND_CLOSE
            yield streaming_pb2.StreamRequest(control=streaming_pb2.StreamControl(command=close))

        def run() -> None:
            try:
                for response in call(requests(), timeout=120):
                    kind = response.WhichOneof("response")
                    if kind == "ready":
                        self.ready.set()
                    elif kind == "result":
                        buffer = response.result.data_outputs["e"]
                        self.texts.append(buffer.text.text_data.decode())
                    elif kind == "error":
                        raise AssertionError(response.error.message)
            except BaseException as err:  # reported by the test
                self.error = err
            finally:
                self.ready.set()

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()


@pytest.fixture
def haproxy_binary() -> str:
    binary = shutil.which("haproxy")
    if binary is None:
        if os.environ.get("ZEROHOP_REQUIRE_TOOLS"):
            pytest.fail("haproxy is not installed (.ci/run installs it)")
        pytest.skip("haproxy is not installed: apt install haproxy")
    return binary


def test_a_drained_server_behind_haproxy_loses_no_stream(
    tmp_path: Path, haproxy_binary: str
) -> None:
    config = tmp_path / "runtime.toml"
    config.write_text("[server]\ndrain_timeout_secs = 60\n")
    servers = [start_server(config, None, metrics=True) for _ in range(2)]
    (proc_a, a), (_, b) = servers
    assert a.metrics_url is not None and b.metrics_url is not None
    port = free_port()
    # The shipped configuration, its addresses from the environment.
    env = {**os.environ, "FRONTEND": f"127.0.0.1:{port}"}
    for i, (_, server) in enumerate(servers, 1):
        assert server.metrics_url is not None
        env[f"SERVER{i}"] = server.address
        env[f"METRICS{i}"] = server.metrics_url.rsplit(":", 1)[1].removesuffix("/metrics")
    log = (tmp_path / "haproxy.log").open("w")
    balancer = subprocess.Popen(
        [haproxy_binary, "-db", "-f", str(ROOT / "deploy" / "haproxy.cfg")],
        stdout=log,
        stderr=log,
        env=env,
    )
    channel = grpc.insecure_channel(
        f"127.0.0.1:{port}",
        options=[("grpc.enable_retries", 1), ("grpc.service_config", RETRY_ON_UNAVAILABLE)],
    )
    streams: list[Stream] = []
    below_a: set[int] = set()
    try:
        # Both servers up as HAProxy sees them (rise 2: two checks 250 ms apart).
        time.sleep(1.0)
        first = [Stream(channel, f"first{i}", frames=40, pace=0.05) for i in range(10)]
        streams += first
        for s in first:
            assert s.ready.wait(60) and s.error is None, s.error
        active = [samples(url)["zerohop_sessions_active"] for url in (a.metrics_url, b.metrics_url)]
        assert active[0] >= 1 and active[1] >= 1, f"not spread over both: {active}"

        # Drain A while its streams run; new streams go to B.
        below_a = descendants(proc_a.pid)
        proc_a.send_signal(signal.SIGTERM)
        assert wait_until(lambda: healthz(a.metrics_url or "") == 503, 30) is not None
        second = [Stream(channel, f"second{i}", frames=10, pace=0.02) for i in range(10)]
        streams += second
        for s in streams:
            s.thread.join(120)
        failed = {s.name: repr(s.error) for s in streams if s.error is not None}
        assert not failed, failed
        for s in first:
            assert s.texts == [f"{s.name}-{i}" for i in range(40)], s.name
        for s in second:
            assert s.texts == [f"{s.name}-{i}" for i in range(10)], s.name
        # A took no new session while draining, and left once its streams ended.
        exited_clean(proc_a, below_a)
        finished_b = samples(b.metrics_url)['zerohop_sessions_finished_total{outcome="completed"}']
        assert finished_b >= 10 + active[1], (finished_b, active)
    finally:
        channel.close()
        balancer.terminate()
        balancer.wait(30)
        log.close()
        for proc, _ in servers:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
                exited_clean(proc, set())
