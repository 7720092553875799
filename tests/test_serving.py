"""What an orchestrator and stock tools see of `zerohop serve`: `grpc.health.v1.Health`
(overall and per service), server reflection good enough to call the services with no
.proto of ours, SIGTERM as a graceful drain, and `/metrics` as Prometheus scrapes it.
Clients here are the stock ones a probe or grpcurl is built on (grpcio-health-checking,
grpcio-reflection) and Debian's Prometheus."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hosts import certificates
from remotemedia import descendants, exited_clean, scrape, start_server, wait_until

import zerohop
from zerohop.client import Client, RemoteError

SERVICES = (
    "",
    "remotemedia.v1.PipelineExecutionService",
    "remotemedia.v1.StreamingPipelineService",
)
ECHO = {
    "version": "v1",
    "nodes": [{"id": "e", "node_type": "Echo"}],
}


def health(address: str, service: str) -> int:
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        request = health_pb2.HealthCheckRequest(service=service)
        return int(stub.Check(request, timeout=10).status)


def test_health_answers_for_the_server_and_each_service(tmp_path: Path) -> None:
    (tmp_path / "runtime.toml").write_text("")
    proc, srv = start_server(tmp_path / "runtime.toml", "s3cret")
    try:
        # No token: probes carry none.
        for service in SERVICES:
            assert health(srv.address, service) == health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(grpc.RpcError) as info:
            health(srv.address, "no.such.Service")
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
    finally:
        proc.send_signal(signal.SIGINT)
        exited_clean(proc, set())


def test_reflection_is_enough_to_call_the_services(tmp_path: Path) -> None:
    """A client with no protos of ours, only reflection (what grpcurl does): it lists
    the services, finds GetVersion's messages, builds the request from the reflected
    descriptors and reads the answer."""
    from google.protobuf import descriptor_pool, message_factory
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
        ProtoReflectionDescriptorDatabase,
    )

    (tmp_path / "runtime.toml").write_text("")
    proc, srv = start_server(tmp_path / "runtime.toml", None)
    try:
        with grpc.insecure_channel(srv.address) as channel:
            database = ProtoReflectionDescriptorDatabase(channel)
            services = set(database.get_services())
            assert {s for s in SERVICES if s} | {"grpc.health.v1.Health"} <= services
            pool = descriptor_pool.DescriptorPool(database)
            service = pool.FindServiceByName("remotemedia.v1.PipelineExecutionService")
            method = service.methods_by_name["GetVersion"]
            request_class = message_factory.GetMessageClass(method.input_type)
            response_class = message_factory.GetMessageClass(method.output_type)
            call = channel.unary_unary(
                f"/{service.full_name}/GetVersion",
                request_serializer=request_class.SerializeToString,
                response_deserializer=response_class.FromString,
            )
            answer = call(request_class(client_version="grpcurl"), timeout=10)
            assert "PassThrough" in answer.version_info.supported_node_types
            assert answer.version_info.protocol_version == "v1"
    finally:
        proc.send_signal(signal.SIGINT)
        exited_clean(proc, set())


def test_sigterm_drains_then_exits(tmp_path: Path) -> None:
    """SIGTERM during a stream: health goes NOT_SERVING, a new call gets UNAVAILABLE,
    the running stream goes on (its next frames are answered) to its end, and then the
    server exits 0 by itself with nothing left."""
    (tmp_path / "runtime.toml").write_text("[server]\ndrain_timeout_secs = 60\n")
    proc, srv = start_server(tmp_path / "runtime.toml", None)
    below: set[int] = set()
    more = threading.Event()
    answered: list[str] = []

    def frames() -> Iterator[zerohop.Frame]:
        yield zerohop.Text("before")
        more.wait(60)
        for i in range(5):
            yield zerohop.Text(f"during {i}")

    with Client(srv.address) as client:
        outputs = client.stream(ECHO, frames())
        answered.append(next(outputs).text)  # type: ignore[attr-defined]
        below = descendants(proc.pid)
        proc.send_signal(signal.SIGTERM)
        not_serving = health_pb2.HealthCheckResponse.NOT_SERVING
        assert wait_until(lambda: health(srv.address, "") == not_serving, 30) is not None
        for service in SERVICES:
            assert health(srv.address, service) == not_serving
        with pytest.raises(RemoteError) as info:
            client.execute(ECHO, {"e": zerohop.Text("new")})
        assert info.value.status == "UNAVAILABLE" and "draining" in str(info.value)
        more.set()
        answered += [f.text for f in outputs]  # type: ignore[attr-defined]
    assert answered == ["before"] + [f"during {i}" for i in range(5)]
    exited_clean(proc, below)


@pytest.mark.parametrize("drain_secs", [0, 1])
def test_a_drain_stops_what_outlives_its_timeout(tmp_path: Path, drain_secs: int) -> None:
    """A stream that does not end within `drain_timeout_secs` is stopped then (0: at
    once); its client hears that the server is shutting down."""
    (tmp_path / "runtime.toml").write_text(f"[server]\ndrain_timeout_secs = {drain_secs}\n")
    proc, srv = start_server(tmp_path / "runtime.toml", None)

    def frames() -> Iterator[zerohop.Frame]:
        while proc.poll() is None:
            yield zerohop.Text("x")
            time.sleep(0.05)

    began = 0.0
    with Client(srv.address) as client, pytest.raises(RemoteError) as info:
        for i, _ in enumerate(client.stream(ECHO, frames())):
            if i == 3:
                below = descendants(proc.pid)
                began = time.monotonic()
                proc.send_signal(signal.SIGTERM)
    assert "shutting down" in str(info.value), info.value
    exited_clean(proc, below)
    assert time.monotonic() - began < 30  # a hang bound; the drain is 1 s


def test_a_second_sigterm_stops_at_once(tmp_path: Path) -> None:
    (tmp_path / "runtime.toml").write_text("[server]\ndrain_timeout_secs = 600\n")
    proc, srv = start_server(tmp_path / "runtime.toml", None)
    stop = threading.Event()

    def frames() -> Iterator[zerohop.Frame]:
        while not stop.is_set():
            yield zerohop.Text("x")
            time.sleep(0.05)

    try:
        with Client(srv.address) as client:
            outputs = client.stream(ECHO, frames())
            next(outputs)
            below = descendants(proc.pid)
            proc.send_signal(signal.SIGTERM)
            not_serving = health_pb2.HealthCheckResponse.NOT_SERVING
            assert wait_until(lambda: health(srv.address, "") == not_serving, 30) is not None
            proc.send_signal(signal.SIGTERM)
            exited_clean(proc, below)  # well before the 600 s drain
            with pytest.raises(RemoteError):
                for _ in outputs:
                    pass
    finally:
        stop.set()


TWO = {
    "version": "v1",
    "nodes": [{"id": "e", "node_type": "Echo"}, {"id": "p", "node_type": "PassThrough"}],
    "connections": [{"from": "e", "to": "p"}],
}


def test_metrics_show_sessions_nodes_frames_and_calls(tmp_path: Path) -> None:
    """While a stream runs: one session, one node process with its memory, frames
    counted by node type (heartbeats carry them). After: the session finished as
    completed, every frame counted exactly, its init and each result's latency
    observed, and the calls counted by method and status."""
    (tmp_path / "runtime.toml").write_text("[server]\nmax_nodes_per_session = 2\n")
    proc, srv = start_server(tmp_path / "runtime.toml", None, metrics=True)
    assert srv.metrics_url is not None
    url = srv.metrics_url
    more = threading.Event()

    def frames() -> Iterator[zerohop.Frame]:
        for i in range(3):
            yield zerohop.Text(f"a{i}")
        more.wait(60)
        for i in range(7):
            yield zerohop.Text(f"b{i}")

    try:
        with Client(srv.address) as client:
            outputs = client.stream(TWO, frames())
            for _ in range(3):
                next(outputs)
            echo_in = 'zerohop_frames_in_total{node_type="Echo"}'
            assert wait_until(lambda: scrape(url).get(echo_in) == 3, 30) is not None
            live = scrape(url)
            assert live["zerohop_sessions_active"] == 1
            assert live["zerohop_node_processes"] == 1
            assert live['zerohop_node_rss_bytes{node_type="Echo"}'] > 1 << 20
            assert live['zerohop_frames_out_total{node_type="PassThrough"}'] == 3
            assert live["zerohop_channel_credits"] > 0
            more.set()
            assert len(list(outputs)) == 7
            with pytest.raises(RemoteError):  # three nodes: over the cap of 2
                three = {**TWO, "nodes": [*TWO["nodes"], {"id": "q", "node_type": "Echo"}]}
                client.execute(three, {"e": zerohop.Text("x")})
        done = scrape(url)
        assert done["zerohop_sessions_active"] == 0
        assert done["zerohop_node_processes"] == 0
        assert done['zerohop_sessions_finished_total{outcome="completed"}'] == 1
        for node_type in ("Echo", "PassThrough"):
            assert done[f'zerohop_frames_in_total{{node_type="{node_type}"}}'] == 10
            assert done[f'zerohop_frames_out_total{{node_type="{node_type}"}}'] == 10
        assert done['zerohop_node_init_seconds_count{node_type="Echo"}'] == 1
        assert done["zerohop_frame_latency_seconds_count"] == 10
        calls = 'zerohop_grpc_calls_total{{method="{}",status="{}"}}'
        assert done[calls.format("StreamPipeline", "OK")] == 1
        assert done[calls.format("ExecutePipeline", "ResourceExhausted")] == 1
        for path, method, code in (("/other", "GET", 404), ("/metrics", "POST", 405)):
            request = urllib.request.Request(url.replace("/metrics", path), method=method)
            with pytest.raises(urllib.error.HTTPError) as info:
                urllib.request.urlopen(request, timeout=10)
            assert info.value.code == code
            info.value.close()
    finally:
        more.set()
        proc.send_signal(signal.SIGINT)
        exited_clean(proc, set())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_prometheus_scrapes_the_server(tmp_path: Path) -> None:
    """Debian's Prometheus, run with the shipped `deploy/prometheus.yml`, scrapes
    `zerohop serve`; its own HTTP API then answers a query for a zerohop_ series with
    the frames a stream sent."""
    binary = shutil.which("prometheus")
    if binary is None:
        if os.environ.get("ZEROHOP_REQUIRE_TOOLS"):
            pytest.fail("prometheus is not installed (.ci/run installs it)")
        pytest.skip("prometheus is not installed: apt install prometheus")
    (tmp_path / "runtime.toml").write_text("")
    proc, srv = start_server(tmp_path / "runtime.toml", None, metrics=True)
    assert srv.metrics_url is not None
    target = srv.metrics_url.removeprefix("http://").removesuffix("/metrics")
    # The shipped configuration, with its targets file beside it.
    shutil.copy(Path(__file__).resolve().parent.parent / "deploy" / "prometheus.yml", tmp_path)
    (tmp_path / "zerohop-targets.json").write_text(json.dumps([{"targets": [target]}]))
    web = f"127.0.0.1:{_free_port()}"
    with (tmp_path / "prometheus.log").open("w") as log:
        prometheus = subprocess.Popen(
            [
                binary,
                f"--config.file={tmp_path / 'prometheus.yml'}",
                f"--storage.tsdb.path={tmp_path / 'data'}",
                f"--web.listen-address={web}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=log,
        )

    def query(expr: str) -> list[dict[str, object]]:
        url = f"http://{web}/api/v1/query?query={urllib.request.quote(expr)}"
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                answer = json.loads(response.read())
        except OSError:
            return []  # not up yet
        assert answer["status"] == "success", answer
        return list(answer["data"]["result"])

    try:
        with Client(srv.address) as client:
            out = list(client.stream(TWO, iter([zerohop.Text(str(i)) for i in range(4)])))
        assert len(out) == 4
        expr = 'zerohop_frames_in_total{job="zerohop",node_type="Echo"}'
        found = wait_until(lambda: any(r["value"][1] == "4" for r in query(expr)), 60)  # type: ignore[index]
        log = (tmp_path / "prometheus.log").read_text()[-2000:]
        assert found is not None, log
        up = query('up{job="zerohop"}')
        assert up and up[0]["value"][1] == "1", up  # type: ignore[index]
    finally:
        prometheus.terminate()
        prometheus.wait(30)
        proc.send_signal(signal.SIGINT)
        exited_clean(proc, set())


def test_tls_serves_clients_that_trust_its_ca_and_no_one_else(tmp_path: Path) -> None:
    ca, cert, key = certificates(tmp_path, "server")
    other_ca, _, _ = certificates(tmp_path, "other")
    (tmp_path / "runtime.toml").write_text(f'[server]\ntls_cert = "{cert}"\ntls_key = "{key}"\n')
    proc, srv = start_server(tmp_path / "runtime.toml", "s3cret")
    try:
        with Client(srv.address, "s3cret", tls_ca=ca) as client:
            assert "Echo" in client.version().node_types
            assert client.execute(ECHO, {"e": zerohop.Text("over TLS")})["e"].text == "over TLS"  # type: ignore[attr-defined]
        for bad in (None, other_ca):
            with (
                Client(srv.address, "s3cret", tls_ca=bad) as client,
                pytest.raises(RemoteError) as info,
            ):
                client.version(timeout=10)
            assert info.value.status == "UNAVAILABLE", info.value
        with Client(srv.address, "wrong", tls_ca=ca) as client, pytest.raises(RemoteError) as info:
            client.version(timeout=10)
        assert info.value.status == "UNAUTHENTICATED"
    finally:
        proc.send_signal(signal.SIGINT)
        exited_clean(proc, set())


def test_a_bad_tls_key_is_an_error_before_serving(tmp_path: Path) -> None:
    _, cert, _ = certificates(tmp_path, "server")
    missing = tmp_path / "nope.pem"
    for key, says in ((missing, "nope.pem"), (cert, "TLS")):
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "zerohop.cli",
                "serve",
                "--port",
                "0",
                "--tls-cert",
                str(cert),
                "--tls-key",
                str(key),
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode != 0
        assert done.stderr.startswith("zerohop: error:") and says in done.stderr, done.stderr
        assert "Traceback" not in done.stderr
