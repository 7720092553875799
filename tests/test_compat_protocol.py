"""remotemedia.v1 protocol behaviour as remotemedia-sdk's clients expect it, driven by a
client that knows only the protos (tests/remotemedia.py) against a real `zerohop serve`:
all-native calls cost their work (no shutdown wait), input routing by any key and by
port name, StreamMetrics every N chunks, error types its Python client can parse,
multi-output nodes mid-pipeline, output keys, and wrong input kinds refused before any
node starts."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest
from remotemedia import (
    TOKEN,
    RemotemediaClient,
    Server,
    audio,
    node_pids,
    pipeline,
    sine,
    start_server,
    stop_server,
    text,
    wait_until,
)

from zerohop._proto import common_pb2, streaming_pb2

RATE = 16000
#: Long enough that a call which waited for it could not pass the hang bounds below.
GRACE = 60.0
HANG = GRACE / 2


pytestmark = pytest.mark.usefixtures("grpc_sockets_closed")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    config = tmp_path_factory.mktemp("compat") / "runtime.toml"
    config.write_text(
        f"[process]\ngrace_period_secs = {GRACE}\n"
        "[server]\nmax_sessions = 8\nstream_metrics_every = 10\n"
    )
    proc, srv = start_server(config, TOKEN)
    # grpcio creates its process-wide threads and fds on first use: not a test's leak.
    with RemotemediaClient(srv.address) as client:
        client.version()
    yield srv
    stop_server(proc)


@pytest.fixture
def client(server: Server) -> Iterator[RemotemediaClient]:
    with RemotemediaClient(server.address) as c:
        yield c


def chunks(
    buffers: list[common_pb2.DataBuffer], node_id: str = ""
) -> list[streaming_pb2.DataChunk]:
    return [
        streaming_pb2.DataChunk(node_id=node_id, buffer=b, sequence=i, timestamp_ms=20 * i)
        for i, b in enumerate(buffers)
    ]


def kinds(responses: list[streaming_pb2.StreamResponse]) -> list[str]:
    return [str(r.WhichOneof("response")) for r in responses]


NATIVE_CHAINS = {
    "passthrough": [("p", "PassThrough", {})],
    "chunk-resample": [
        ("chunk", "AudioChunkerNode", {"chunk_size": 320}),
        ("resample", "FastResampleNode", {"source_rate": RATE, "target_rate": 8000}),
    ],
}


@pytest.mark.parametrize("chain", NATIVE_CHAINS)
def test_all_native_calls_do_not_wait_for_node_processes_to_stop(
    client: RemotemediaClient, chain: str
) -> None:
    """A session without node processes used to wait the whole grace period (2 s by
    default) when it closed: every ExecutePipeline and every StreamClosed paid it.
    With a 60 s grace period here, a call that waited cannot pass the hang bound."""
    manifest = pipeline(NATIVE_CHAINS[chain])
    began = time.monotonic()
    response = client.execute(manifest, {"input": audio(sine(0.1, RATE), RATE)})
    batch = time.monotonic() - began
    assert response.WhichOneof("outcome") == "result", response
    wall = response.result.metrics.wall_time_ms
    began = time.monotonic()
    responses = list(client.stream(manifest, chunks([audio(sine(0.02, RATE), RATE)])))
    streamed = time.monotonic() - began
    assert kinds(responses)[0] == "ready" and kinds(responses)[-1] == "closed"
    assert responses[-1].closed.reason == "completed"
    assert batch < HANG and streamed < HANG, (batch, streamed)
    print(
        f"{chain}: batch {batch * 1e3:.0f} ms (server {wall:.0f} ms), stream {streamed * 1e3:.0f}"
    )


def test_version_lists_protocol_v1(client: RemotemediaClient) -> None:
    info = client.version().version_info
    assert list(info.supported_protocols) == ["v1"]
    assert info.protocol_version == "v1"


@pytest.mark.parametrize("key", ["input", "p", "", "audio_in"])
def test_the_only_input_takes_a_buffer_whatever_its_key(
    client: RemotemediaClient, key: str
) -> None:
    sent = audio(sine(0.05, RATE), RATE)
    response = client.execute(pipeline([("p", "PassThrough", {})]), {key: sent})
    outputs = response.result.data_outputs
    # Keyed by node id (remotemedia's examples) and "output" (its server).
    assert set(outputs) == {"p", "output"}
    assert outputs["p"].audio.samples == sent.audio.samples == outputs["output"].audio.samples


def test_a_call_without_input_is_a_validation_error(client: RemotemediaClient) -> None:
    error = client.execute(pipeline([("p", "PassThrough", {})]), {}).error
    assert error.error_type == common_pb2.ERROR_TYPE_VALIDATION
    assert error.message == "data_inputs: no input data provided" and error.context == "data_inputs"


def test_a_zerohop_client_gets_its_outputs_once(server: Server) -> None:
    with RemotemediaClient(server.address, client_version="zerohop-client") as zerohop_client:
        response = zerohop_client.execute(pipeline([("p", "PassThrough", {})]), {"p": text("x")})
    assert set(response.result.data_outputs) == {"p"}


def test_named_buffers_go_to_the_port_of_that_name(client: RemotemediaClient) -> None:
    manifest = pipeline([("join", "Join", {})])
    chunk = streaming_pb2.DataChunk(
        node_id="join", named_buffers={"left": text("L"), "right": text("R")}, sequence=0
    )
    responses = list(client.stream(manifest, [chunk]))
    assert kinds(responses)[-1] == "closed", responses
    seen = sorted(
        json.loads(r.result.data_outputs["join"].json.json_payload)["port"]
        for r in responses
        if r.WhichOneof("response") == "result"
    )
    assert seen == ["left", "right"]


def test_stream_metrics_come_every_ten_chunks(client: RemotemediaClient) -> None:
    samples = 320
    sent = [audio(sine(samples / RATE, RATE), RATE, clientId="node-7") for _ in range(25)]
    responses = list(client.stream(pipeline([("p", "PassThrough", {})]), chunks(sent)))
    metrics = [r.metrics for r in responses if r.WhichOneof("response") == "metrics"]
    assert [m.chunks_processed for m in metrics] == [10, 20]
    assert [m.total_items for m in metrics] == [10 * samples, 20 * samples]
    assert [dict(m.data_type_breakdown) for m in metrics] == [{"audio": 10}, {"audio": 20}]
    session = next(r.ready.session_id for r in responses if r.WhichOneof("response") == "ready")
    assert all(m.session_id == session and m.chunks_dropped == 0 for m in metrics)
    # Over the results sent so far: none yet is possible on a busy machine.
    assert all(0 <= m.average_latency_ms < 60_000 for m in metrics)
    # ChunkResult counts items (samples), not results.
    totals = [r.result.total_items_processed for r in responses if r.result.data_outputs]
    assert len(totals) == 25 and totals == sorted(totals) and totals[-1] == 25 * samples
    assert all(t % samples == 0 for t in totals)


def test_stream_metrics_report_node_process_memory(client: RemotemediaClient) -> None:
    sent = [text(f"w{i} x") for i in range(10)]
    responses = list(client.stream(pipeline([("e", "Echo", {})]), chunks(sent)))
    (metrics,) = [r.metrics for r in responses if r.WhichOneof("response") == "metrics"]
    assert metrics.total_items == 20  # words
    assert metrics.peak_memory_bytes > 1 << 20  # a Python process


@pytest.mark.parametrize(
    ("client_version", "error_type"),
    [("0.4.0", common_pb2.ERROR_TYPE_VALIDATION), ("zerohop-client", 7)],
)
def test_frame_errors_use_types_the_client_knows(
    server: Server, client_version: str, error_type: int
) -> None:
    bad = audio(sine(0.01, RATE), RATE)
    bad.audio.samples = bad.audio.samples[:-3]  # not a whole number of float32 samples
    with RemotemediaClient(server.address, client_version=client_version) as c:
        response = c.execute(pipeline([("p", "PassThrough", {})]), {"p": bad})
        responses = list(c.stream(pipeline([("p", "PassThrough", {})]), chunks([bad])))
    assert response.error.error_type == error_type
    assert "bytes" in response.error.message, response.error
    errors = [r.error for r in responses if r.WhichOneof("response") == "error"]
    assert [e.error_type for e in errors] == [error_type], responses


def test_a_two_output_node_mid_pipeline_feeds_on_through_its_primary_output(
    client: RemotemediaClient,
) -> None:
    """A voice-assistant chain: the TTS node's port-less connection takes `out`; its
    `info` report comes back under `tts.info`, the main result under the last node."""
    mid = pipeline(
        [("tts", "EspeakTTSNode", {}), ("chunk", "AudioChunkerNode", {"chunk_size": 512})]
    )
    outputs = client.execute(mid, {"input": text("hello there")}).result.data_outputs
    assert set(outputs) == {"chunk", "tts.info"}, outputs.keys()
    assert outputs["chunk"].audio.num_samples > 1000
    last = pipeline([("tts", "EspeakTTSNode", {})])
    outputs = client.execute(last, {"input": text("hello there")}).result.data_outputs
    assert set(outputs) == {"tts", "tts.info"}, outputs.keys()
    assert outputs["tts"].audio.num_samples == outputs_samples(outputs["tts"])


def outputs_samples(buffer: common_pb2.DataBuffer) -> int:
    width = {common_pb2.AUDIO_FORMAT_F32: 4, common_pb2.AUDIO_FORMAT_I16: 2}[buffer.audio.format]
    return len(buffer.audio.samples) // width // buffer.audio.channels


def test_an_input_of_the_wrong_kind_is_refused_before_any_node_starts(
    client: RemotemediaClient, server: Server
) -> None:
    """Audio into a text-to-speech pipeline: a VALIDATION error naming the node and both
    kinds (had the node started, it would have failed in `process` with a traceback:
    NODE_EXECUTION)."""
    manifest = pipeline([("tts", "EspeakTTSNode", {})])
    wav = audio(sine(0.1, RATE), RATE)
    error = client.execute(manifest, {"input": wav}).error
    assert error.error_type == common_pb2.ERROR_TYPE_VALIDATION, error
    assert "node 'tts' (EspeakTTSNode) takes text frames" in error.message
    assert "audio" in error.message and not error.stack_trace
    responses = list(client.stream(manifest, chunks([wav])))
    errors = [r.error for r in responses if r.WhichOneof("response") == "error"]
    assert [e.error_type for e in errors] == [common_pb2.ERROR_TYPE_VALIDATION]
    assert "takes text frames" in errors[0].message
    assert wait_until(lambda: not node_pids(server), 10.0) is not None


def test_stream_warnings_arrive_in_the_response_headers(client: RemotemediaClient) -> None:
    """What a manifest asked for and zerohop ignores (here an unknown param) is said to
    stream clients too, in the `zerohop-warnings` response metadata."""
    manifest = pipeline([("p", "PassThrough", {"gain_db": 3})])
    responses = list(client.stream(manifest, chunks([text("x")])))
    assert kinds(responses)[-1] == "closed"
    warnings = json.loads(client.stream_metadata["zerohop-warnings"])
    assert [w.split(":")[0] for w in warnings] == ["nodes[0].params.gain_db"], warnings
    responses = list(client.stream(pipeline([("p", "PassThrough", {})]), chunks([text("x")])))
    assert "zerohop-warnings" not in client.stream_metadata


def test_control_messages_pass_nodes_that_take_only_data(client: RemotemediaClient) -> None:
    """A ControlMessage sent between two text chunks into a text-only node comes back,
    unchanged and in order (the node loop passes it on). (A CancelSpeculation also
    cancels what is in flight first: tests/test_cancel_grpc.py.)"""
    control = common_pb2.DataBuffer(
        control=common_pb2.ControlMessage(
            deadline_warning=common_pb2.DeadlineWarning(deadline_us=5000),
            segment_id="seg-1",
            timestamp_ms=7,
        )
    )
    sent = [text("a"), control, text("b")]
    manifest = pipeline([("up", "UpperCase", {}), ("p", "PassThrough", {})])
    responses = list(client.stream(manifest, chunks(sent)))
    got = [r.result.data_outputs["p"] for r in responses if r.WhichOneof("response") == "result"]
    assert [b.WhichOneof("data_type") for b in got] == ["text", "control", "text"], responses
    assert got[1].control == control.control
    assert [got[0].text.text_data, got[2].text.text_data] == [b"A", b"B"]


def test_a_served_manifest_cannot_name_a_fault_injector(client: RemotemediaClient) -> None:
    """This server's runtime.toml does not list zerohop.testing: Crash is unknown."""
    error = client.execute(pipeline([("c", "Crash", {"mode": "segfault"})]), {"c": text("x")}).error
    assert error.error_type == common_pb2.ERROR_TYPE_VALIDATION
    assert "unknown node type 'Crash'" in error.message, error
