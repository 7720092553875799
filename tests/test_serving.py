"""What an orchestrator and stock tools see of `zerohop serve`: `grpc.health.v1.Health`
(overall and per service), server reflection good enough to call the services with no
.proto of ours, and SIGTERM as a graceful drain. Clients here are the stock ones a probe
or grpcurl is built on (grpcio-health-checking, grpcio-reflection)."""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from remotemedia import descendants, start_server, wait_until

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


def finished(proc: subprocess.Popen[str], below: set[int]) -> None:
    """The server exited 0 by itself, and nothing it started is left."""
    try:
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        assert proc.stdout is not None
        proc.stdout.close()
    gone = wait_until(lambda: not any(Path(f"/proc/{p}").exists() for p in below), 10.0)
    assert gone is not None, f"processes left: {below}"


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
        finished(proc, set())


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
        finished(proc, set())


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
    finished(proc, below)


def test_a_drain_stops_what_outlives_its_timeout(tmp_path: Path) -> None:
    """A stream that does not end within `drain_timeout_secs` is stopped then; its
    client hears that the server is shutting down."""
    (tmp_path / "runtime.toml").write_text("[server]\ndrain_timeout_secs = 1\n")
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
    finished(proc, below)
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
            finished(proc, below)  # well before the 600 s drain
            with pytest.raises(RemoteError):
                for _ in outputs:
                    pass
    finally:
        stop.set()
