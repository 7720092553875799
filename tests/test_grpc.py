"""`zerohop serve` over real gRPC on loopback, driven by `zerohop.client`: batch and
streaming runs of mixed native/Python pipelines with payloads equal end to end, init
progress, node crashes, disconnects and cancels (every node process gone), concurrent
sessions, bad manifests, authentication and payload limits."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import os
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from remotemedia import Server, node_pids, start_server, stop_server, wait_until

import zerohop
from zerohop._proto import common_pb2, execution_pb2, streaming_pb2
from zerohop.client import (
    AsyncClient,
    Client,
    InitProgress,
    RemoteError,
    ServerWarning,
    from_buffer,
    to_buffer,
)
from zerohop.manifest import Manifest

TOKEN = "test-token-5d1f"
MAX_PAYLOAD = 8 << 20
RATE = 16000


pytestmark = pytest.mark.usefixtures("grpc_sockets_closed")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    config = tmp_path_factory.mktemp("serve") / "runtime.toml"
    config.write_text(
        f"[channel]\nmax_payload_bytes = {MAX_PAYLOAD}\n[server]\nmax_sessions = 16\n"
        '[nodes]\nmodules = ["zerohop.testing"]\n'  # the fault injectors (opt-in)
    )
    proc, srv = start_server(config, TOKEN)
    # grpcio creates its process-wide threads and fds on first use: not a test's leak.
    with Client(srv.address, TOKEN) as client:
        client.version()
    yield srv
    stop_server(proc)


@pytest.fixture
def client(server: Server) -> Iterator[Client]:
    with Client(server.address, TOKEN) as c:
        yield c


def manifest(*nodes: tuple[str, str, dict[str, Any]], name: str = "t") -> dict[str, Any]:
    """A chain of ``(id, node_type, params)``."""
    return {
        "version": "v1",
        "metadata": {"name": name},
        "nodes": [{"id": i, "node_type": t, "params": p} for i, t, p in nodes],
        "connections": [{"from": a[0], "to": b[0]} for a, b in itertools.pairwise(nodes)],
    }


MIXED = manifest(
    ("chunk", "AudioChunkerNode", {"chunk_size": 320}),
    ("scale", "Scale", {"factor": 0.5}),
    ("resample", "FastResampleNode", {"source_rate": RATE, "target_rate": 8000}),
    ("echo", "Echo", {}),
)


def sine(seconds: float, rate: int = RATE) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)


def sha(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


def local_run(data: dict[str, Any], frames: list[zerohop.Frame]) -> list[zerohop.Frame]:
    return Manifest.parse(data).to_pipeline().run(frames)


def joined(frames: list[zerohop.Frame]) -> np.ndarray:
    return np.concatenate([f.samples for f in frames if isinstance(f, zerohop.Audio)])


def test_version_lists_the_registered_node_types(client: Client) -> None:
    version = client.version()
    assert version.protocol_version == "v1" and version.compatible
    assert version.runtime_version == f"zerohop {zerohop.__version__}"
    expected = {"AudioChunkerNode", "FastResampleNode", "PassThrough", "Echo", "SlowInit", "Crash"}
    assert expected <= set(version.node_types)


def test_batch_mixed_native_and_python_nodes(client: Client, server: Server) -> None:
    audio = sine(2.0)
    outputs = client.execute(MIXED, {"chunk": zerohop.Audio(audio, RATE)})
    assert list(outputs) == ["echo"]
    out = outputs["echo"]
    assert isinstance(out, zerohop.Audio) and out.sample_rate == 8000
    expected = joined(local_run(MIXED, [zerohop.Audio(audio, RATE)]))
    assert sha(out.samples) == sha(expected)
    assert abs(out.num_frames - len(audio) // 2) <= 320
    assert not node_pids(server)


def test_stream_mixed_native_and_python_nodes(client: Client) -> None:
    audio = sine(1.0)
    chunks = [zerohop.Audio(audio[i : i + 320], RATE) for i in range(0, len(audio), 320)]
    frames = list(client.stream(MIXED, chunks))
    assert frames and all(f.source == "echo" for f in frames)
    assert sha(joined(frames)) == sha(joined(local_run(MIXED, chunks)))


@pytest.mark.parametrize("mode", ["batch", "stream"])
def test_large_audio_and_tensor_payloads_arrive_unchanged(client: Client, mode: str) -> None:
    m = manifest(("echo", "Echo", {}), ("native", "PassThrough", {}))
    rng = np.random.default_rng(7)
    audio = rng.uniform(-1, 1, 960_000).astype(np.float32)  # 60 s at 16 kHz: 3.84 MB
    tensor = rng.standard_normal((960, 1000)).astype(np.float32)  # 3.84 MB
    assert audio.nbytes == tensor.nbytes == 3_840_000
    for frame in (zerohop.Audio(audio, RATE), zerohop.Tensor(tensor)):
        if mode == "batch":
            out = client.execute(m, {"echo": frame})["native"]
        else:
            [out] = list(client.stream(m, [frame]))
        got = out.samples if isinstance(out, zerohop.Audio) else out.array  # type: ignore[attr-defined]
        sent = audio if isinstance(frame, zerohop.Audio) else tensor
        assert got.shape == sent.shape and sha(got) == sha(sent)


def test_init_progress_arrives_at_least_every_two_seconds(client: Client) -> None:
    # One step: after "loading part 1/1" the node sleeps 3 s; heartbeats fill the gap.
    m = manifest(("slow", "SlowInit", {"seconds": 3.0, "steps": 1}))
    seen: list[tuple[float, InitProgress]] = []
    start = time.monotonic()
    frames = list(
        client.stream(
            m,
            [zerohop.Text("hi")],
            on_progress=lambda p: seen.append((time.monotonic() - start, p)),
        )
    )
    assert [f.text for f in frames] == ["hi"]  # type: ignore[attr-defined]
    assert all(p.node_id == "slow" for _, p in seen)
    # Heartbeats (no fraction) may come first, e.g. while the process starts.
    reported = [p for _, p in seen if p.fraction is not None]
    assert reported[0].fraction == 0.0 and reported[0].message == "loading part 1/1"
    assert seen[-1][1].fraction == 1.0 and seen[-1][1].message.startswith("ready in")
    times = [t for t, _ in seen]
    assert times[-1] >= 3.0
    assert max(b - a for a, b in itertools.pairwise(times)) < 2.0, times


def test_client_leaving_during_init_stops_the_session(client: Client, server: Server) -> None:
    m = manifest(("slow", "SlowInit", {"seconds": 30.0, "steps": 1}))
    progress: list[InitProgress] = []
    outputs = client.stream(m, [zerohop.Text("hi")], on_progress=progress.append)
    ended: list[BaseException] = []

    def consume() -> None:
        try:
            next(outputs, None)
        except RemoteError as err:
            ended.append(err)

    thread = threading.Thread(target=consume)
    thread.start()
    assert wait_until(lambda: progress and node_pids(server), 20.0) is not None
    client.close()  # the connection goes away while the node initializes
    thread.join(10)
    assert ended and ended[0].status == "CANCELLED"  # type: ignore[attr-defined]
    took = wait_until(lambda: not node_pids(server), 5.0)
    assert took is not None, node_pids(server)
    print(f"cleanup after leaving during init: {took * 1000:.0f} ms")


def test_crashing_node_is_named_and_all_its_processes_are_gone(
    client: Client, server: Server
) -> None:
    m = manifest(
        ("first", "Echo", {}),
        ("crash", "Crash", {"mode": "exit", "after": 2}),
        ("last", "Echo", {}),
    )
    with pytest.raises(RemoteError) as info:
        list(client.stream(m, (zerohop.Text(str(i)) for i in range(50))))
    assert info.value.error_type == "NODE_EXECUTION"
    assert info.value.node_id == "crash"
    assert "crash" in str(info.value)
    # The server stops the session before it reports the error.
    assert not node_pids(server)
    m["nodes"][1]["params"] = {"mode": "process_exception", "after": 0}
    with pytest.raises(RemoteError) as info:
        client.execute(m, {"first": zerohop.Text("x")})
    assert info.value.node_id == "crash" and "boom at frame 0" in str(info.value)
    assert "ValueError" in info.value.traceback
    assert not node_pids(server)


CLIENT_THAT_DIES = """
import sys, zerohop
from zerohop.client import Client
def frames():
    while True:
        yield zerohop.Text("x")
with Client(sys.argv[1], sys.argv[2]) as client:
    m = {"version": "v1", "metadata": {"name": "d"},
         "nodes": [{"id": "a", "node_type": "Echo"}, {"id": "b", "node_type": "Echo"}],
         "connections": [{"from": "a", "to": "b"}]}
    for i, frame in enumerate(client.stream(m, frames())):
        if i == 20:
            print("streaming", flush=True)
"""


def test_client_that_disconnects_mid_stream_leaves_nothing(server: Server) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", CLIENT_THAT_DIES, server.address, TOKEN],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "streaming"
    assert len(node_pids(server)) == 2
    proc.kill()
    proc.wait()
    proc.stdout.close()
    took = wait_until(lambda: not node_pids(server), 5.0)
    assert took is not None, f"node processes still running: {node_pids(server)}"
    print(f"cleanup after disconnect: {took * 1000:.0f} ms")


def test_batch_deadline_stops_the_session(client: Client, server: Server) -> None:
    m = manifest(("slow", "SlowInit", {"seconds": 30.0, "steps": 1}))
    with pytest.raises(RemoteError) as info:
        client.execute(m, {"slow": zerohop.Text("x")}, timeout=2.0)
    assert info.value.status == "DEADLINE_EXCEEDED", info.value
    took = wait_until(lambda: not node_pids(server), 5.0)
    assert took is not None, node_pids(server)
    print(f"deadline cleanup {took:.3f}")


def test_cancel_command_stops_the_session(server: Server) -> None:
    m = Manifest.parse(manifest(("a", "Echo", {}), ("b", "Echo", {})))
    from zerohop.client import _manifest_message

    cancel = threading.Event()

    def requests() -> Iterator[streaming_pb2.StreamRequest]:
        yield streaming_pb2.StreamRequest(
            init=streaming_pb2.StreamInit(manifest=_manifest_message(m))
        )
        chunk = streaming_pb2.DataChunk(node_id="a", buffer=to_buffer(zerohop.Text("x")))
        yield streaming_pb2.StreamRequest(data_chunk=chunk)
        cancel.wait(10)
        command = streaming_pb2.StreamControl.COMMAND_CANCEL
        yield streaming_pb2.StreamRequest(control=streaming_pb2.StreamControl(command=command))
        time.sleep(5)  # keep the request stream open: the server must not wait for it

    with grpc.insecure_channel(server.address) as channel:
        call = channel.stream_stream(
            "/remotemedia.v1.StreamingPipelineService/StreamPipeline",
            request_serializer=streaming_pb2.StreamRequest.SerializeToString,
            response_deserializer=streaming_pb2.StreamResponse.FromString,
        )(requests(), metadata=[("authorization", f"Bearer {TOKEN}")])
        kinds = []
        session_id = None
        for response in call:
            kinds.append(response.WhichOneof("response"))
            if kinds[-1] == "ready":
                session_id = response.ready.session_id
            if kinds[-1] == "result":
                assert node_pids(server)
                cancel.set()
            if kinds[-1] == "closed":
                assert response.closed.reason == "cancelled"
                assert response.closed.session_id == session_id
                assert not node_pids(server)
                break
        call.cancel()
    assert kinds == ["ready", "result", "closed"]


def test_ten_concurrent_streams_each_get_their_own_results(server: Server) -> None:
    results: dict[int, Any] = {}

    def one(k: int) -> None:
        try:
            with Client(server.address, TOKEN) as client:
                m = manifest(("scale", "Scale", {"factor": float(k)}), ("out", "PassThrough", {}))
                data = [np.full(64, i, dtype=np.float32) for i in range(30)]
                frames = list(client.stream(m, [zerohop.Tensor(d) for d in data]))
                got = [f.array for f in frames]  # type: ignore[attr-defined]
                results[k] = len(got) == 30 and all(
                    np.array_equal(g, d * k) for g, d in zip(got, data, strict=True)
                )
        except Exception as err:
            results[k] = err

    threads = [threading.Thread(target=one, args=(k,)) for k in range(1, 11)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(100)
    assert results == {k: True for k in range(1, 11)}
    assert wait_until(lambda: not node_pids(server), 5.0) is not None


def watch_spawns(server: Server, spawned: set[int], done: threading.Event) -> None:
    """Collects every node process seen below the server until ``done``."""
    while not done.is_set():
        spawned.update(node_pids(server))
        time.sleep(0.005)


@pytest.mark.parametrize(
    ("data", "path", "words"),
    [
        (manifest(("a", "Echoo", {})), "nodes[0].node_type", "Echo"),
        (manifest(("a", "Scale", {"factor": "loud"})), "nodes[0].params.factor", "number"),
        (manifest(("a", "AudioChunkerNode", {"chunk_size": 0})), "nodes[0].params", "chunk"),
        (
            manifest(("a", "Echo", {}), ("b", "SileroVADNode", {"modelPath": "/etc/passwd"})),
            "nodes[1].params.modelPath",
            "outside the directories model files may be loaded from",
        ),
        (
            {
                **manifest(("a", "Echo", {}), ("b", "Echo", {})),
                "connections": [{"from": "a", "to": "b"}, {"from": "b", "to": "a"}],
            },
            "connections",
            "cycle",
        ),
        (
            {**manifest(("a", "Echo", {})), "connections": [{"from": "a", "to": "zz"}]},
            "connections[0]",
            "zz",
        ),
    ],
)
def test_bad_manifests_fail_validation_before_any_spawn(
    client: Client, server: Server, data: dict[str, Any], path: str, words: str
) -> None:
    for run in (
        lambda: client.execute(data, {}),
        lambda: list(client.stream(data, [zerohop.Text("x")])),
    ):
        spawned: set[int] = set()
        watching = threading.Event()
        watcher = threading.Thread(target=watch_spawns, args=(server, spawned, watching))
        watcher.start()
        try:
            with pytest.raises(RemoteError) as info:
                run()
        finally:
            watching.set()
            watcher.join()
        assert info.value.error_type == "VALIDATION", info.value
        assert info.value.path is not None and info.value.path.startswith(path), info.value.path
        assert words in str(info.value)
        assert not spawned


@given(
    types=st.lists(st.sampled_from(["Echo", "PassThrough", "Nope", "echo", "Scale "]), min_size=1),
    links=st.lists(st.tuples(st.integers(0, 4), st.integers(0, 4)), max_size=4),
)
@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_generated_bad_manifests_are_refused_before_any_spawn(
    client: Client, server: Server, types: list[str], links: list[tuple[int, int]]
) -> None:
    bad_type = any(t not in ("Echo", "PassThrough") for t in types)
    bad_link = any(a == b or max(a, b) >= len(types) for a, b in links)
    assume(bad_type or bad_link)
    data = {
        "version": "v1",
        "metadata": {"name": "generated"},
        "nodes": [{"id": f"n{i}", "node_type": t} for i, t in enumerate(types)],
        "connections": [{"from": f"n{a}", "to": f"n{b}"} for a, b in links],
    }
    with pytest.raises(RemoteError) as info:
        client.execute(data, {})
    assert info.value.error_type == "VALIDATION"
    assert info.value.path is not None
    assert info.value.path.startswith(("nodes[", "connections")), info.value.path
    assert not node_pids(server)


def test_unknown_node_type_names_the_node_and_suggests(client: Client) -> None:
    with pytest.raises(RemoteError) as info:
        client.execute(manifest(("x", "Echo", {}), ("up", "UpperCas", {})), {})
    assert info.value.node_id == "up" and "UpperCase" in str(info.value)


@pytest.mark.parametrize("token", [None, "wrong"])
def test_missing_or_wrong_token_is_unauthenticated(server: Server, token: str | None) -> None:
    with Client(server.address, token) as client:
        with pytest.raises(RemoteError) as info:
            client.version()
        assert info.value.status == "UNAUTHENTICATED"
        with pytest.raises(RemoteError) as info:
            client.execute(manifest(("a", "Echo", {})), {"a": zerohop.Text("x")})
        assert info.value.status == "UNAUTHENTICATED"
        with pytest.raises(RemoteError) as info:
            list(client.stream(manifest(("a", "Echo", {})), [zerohop.Text("x")]))
        assert info.value.error_type == "AUTHENTICATION"
    assert not node_pids(server)


@pytest.mark.parametrize("nbytes", [MAX_PAYLOAD + 4096, MAX_PAYLOAD + (2 << 20)])
def test_oversized_payload_is_refused_and_the_server_survives(
    client: Client, server: Server, nbytes: int
) -> None:
    # Just over the payload cap (refused by the executor), and past the gRPC message
    # limit (refused by tonic before decoding).
    big = zerohop.Bytes(b"\0" * nbytes)
    m = manifest(("a", "Echo", {}))
    with pytest.raises(RemoteError) as info:
        client.execute(m, {"a": big})
    assert info.value.status in ("RESOURCE_EXHAUSTED", "OUT_OF_RANGE")
    assert info.value.error_type == "RESOURCE_LIMIT"
    assert "bytes" in str(info.value)
    with pytest.raises(RemoteError):
        list(client.stream(m, [big]))
    assert client.version().protocol_version == "v1"
    assert wait_until(lambda: not node_pids(server), 5.0) is not None


def test_async_client_batch_and_stream(server: Server) -> None:
    async def main() -> tuple[dict[str, zerohop.Frame], list[zerohop.Frame]]:
        async with AsyncClient(server.address, TOKEN) as client:
            version = await client.version()
            assert "Echo" in version.node_types
            m = manifest(("up", "UpperCase", {}), ("sfx", "Suffix", {"suffix": "?"}))
            batch = await client.execute(m, {"up": zerohop.Text("hi")})

            async def words() -> Any:
                for w in ("a", "b", "c"):
                    yield zerohop.Text(w)

            streamed = [f async for f in client.stream(m, words())]
            return batch, streamed

    batch, streamed = asyncio.run(main())
    assert batch["sfx"].text == "HI?"  # type: ignore[attr-defined]
    assert [f.text for f in streamed] == ["A?", "B?", "C?"]  # type: ignore[attr-defined]


def test_execute_request_accepts_raw_wire_messages(server: Server) -> None:
    """A client that knows only the remotemedia.v1 protos (no zerohop.client) works."""
    with grpc.insecure_channel(server.address) as channel:
        execute = channel.unary_unary(
            "/remotemedia.v1.PipelineExecutionService/ExecutePipeline",
            request_serializer=execution_pb2.ExecuteRequest.SerializeToString,
            response_deserializer=execution_pb2.ExecuteResponse.FromString,
        )
        request = execution_pb2.ExecuteRequest(
            manifest=execution_pb2.PipelineManifest(
                version="v1",
                metadata=execution_pb2.ManifestMetadata(name="raw"),
                nodes=[execution_pb2.NodeManifest(id="up", node_type="UpperCase", params="")],
            ),
            data_inputs={"up": to_buffer(zerohop.Text("wire"))},
        )
        response = execute(request, metadata=[("authorization", f"Bearer {TOKEN}")])
    result = response.result
    assert result.data_outputs["up"].text.text_data == b"WIRE"
    assert result.status == 1  # EXECUTION_STATUS_SUCCESS
    assert [r.node_id for r in result.node_results] == ["up"]
    assert result.metrics.wall_time_ms > 0
    assert result.metrics.node_metrics["up"].items_processed == 1


def test_sigterm_stops_running_sessions_and_the_server(tmp_path: Path) -> None:
    (tmp_path / "runtime.toml").write_text("")
    proc, srv = start_server(tmp_path / "runtime.toml", None)
    seen: list[zerohop.Frame] = []

    def stream() -> None:
        def endless() -> Iterator[zerohop.Frame]:
            while True:
                yield zerohop.Text("x")
                time.sleep(0.01)

        # The stream ends either way: closed by the server, or cut off with the connection.
        with contextlib.suppress(RemoteError), Client(srv.address) as client:
            m = manifest(("a", "Echo", {}), ("b", "Echo", {}))
            seen.extend(client.stream(m, endless()))

    thread = threading.Thread(target=stream)
    thread.start()
    assert wait_until(lambda: len(seen) > 5, 20.0) is not None
    assert len(node_pids(srv)) == 2
    stop_server(proc)
    thread.join(10)
    assert not thread.is_alive()


def test_a_silent_stream_ends_and_frees_its_slot(tmp_path: Path) -> None:
    """`[server] idle_timeout_secs`: a client that opens a stream (its session starts)
    and then sends nothing gets an ErrorResponse (then DEADLINE_EXCEEDED, see the Rust
    test) naming the setting, its node processes stop, and the one session slot serves
    the next client."""
    (tmp_path / "runtime.toml").write_text("[server]\nmax_sessions = 1\nidle_timeout_secs = 1\n")
    proc, srv = start_server(tmp_path / "runtime.toml", None)
    release = threading.Event()

    def silent() -> Iterator[zerohop.Frame]:
        release.wait(60)
        yield from ()

    try:
        with Client(srv.address) as client:
            m = manifest(("a", "Echo", {}), ("b", "Echo", {}))
            with pytest.raises(RemoteError) as info:
                list(client.stream(m, silent()))
            release.set()
            assert info.value.error_type == "RESOURCE_LIMIT", info.value
            assert "server.idle_timeout_secs" in str(info.value)
            assert wait_until(lambda: not node_pids(srv), 10.0) is not None
            out = list(client.stream(m, iter([zerohop.Text("next")])))
            assert [f.text for f in out] == ["next"]  # type: ignore[attr-defined]
    finally:
        release.set()
        stop_server(proc)


def test_a_client_that_neither_reads_nor_sends_loses_its_session(tmp_path: Path) -> None:
    """A stream whose client sent one chunk and then neither reads the (large) results
    nor sends anything: the server's response queue fills and its driver waits for room
    — but not past the idle timeout. The session stops, its node processes go, and the
    one slot serves the next client while the silent call is still open."""
    from remotemedia import RemotemediaClient, pipeline, text

    (tmp_path / "runtime.toml").write_text("[server]\nmax_sessions = 1\nidle_timeout_secs = 1\n")
    proc, srv = start_server(tmp_path / "runtime.toml", None)
    hold = threading.Event()
    m = pipeline([("rep", "Repeat", {"times": 400}), ("echo", "Echo", {})])

    def requests() -> Iterator[streaming_pb2.StreamRequest]:
        yield streaming_pb2.StreamRequest(init=streaming_pb2.StreamInit(manifest=m))
        chunk = streaming_pb2.DataChunk(node_id="rep", buffer=text("x" * (256 << 10)))
        yield streaming_pb2.StreamRequest(data_chunk=chunk)
        hold.wait(60)

    client = RemotemediaClient(srv.address)
    try:
        call = client._stream(requests(), timeout=120)  # never read
        assert wait_until(lambda: len(node_pids(srv)) == 2, 30.0) is not None
        gone = wait_until(lambda: not node_pids(srv), 30.0)  # a hang bound
        assert gone is not None, "the silent stream kept its session"

        def served() -> bool:
            # The slot is given back just after the node processes are gone.
            try:
                response = client.execute(m, {"rep": text("y")})
            except grpc.RpcError as err:
                assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, err
                return False
            return len(response.result.data_outputs["echo"].text.text_data) > 0

        assert wait_until(served, 30.0) is not None
        call.cancel()
    finally:
        hold.set()
        client.channel.close()
        stop_server(proc)


def _anon_mib(pid: int) -> float:
    """The private (anonymous) resident memory of ``pid``, in MiB: what a queue of
    frames held by the server takes (shared-memory pages are the pipeline's own)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no RssAnon")


def _raw_stream(channel: grpc.Channel) -> Any:
    return channel.stream_stream(
        "/remotemedia.v1.StreamingPipelineService/StreamPipeline",
        request_serializer=streaming_pb2.StreamRequest.SerializeToString,
        response_deserializer=streaming_pb2.StreamResponse.FromString,
    )


def test_streams_that_do_not_read_hold_a_bounded_number_of_bytes(tmp_path: Path) -> None:
    """`[server] max_buffered_bytes_per_stream`: 10 streams whose clients never read,
    each sending one 32 MiB frame into a node that answers with 20 copies. The server
    queues their results by bytes, not by count (it held ~50 frames, 1.7 GB, for one
    such stream): each stream holds its budget (one 32 MiB frame, as the frame is
    larger than the 16 MiB default) plus what tonic and HTTP/2 hold while sending one
    message and after decoding one — 4 to 5 frames measured. Bound stated here: 6
    frames a stream over the server's memory before, and no growth once they wait."""
    from remotemedia import pipeline

    (tmp_path / "runtime.toml").write_text("[channel]\ncapacity = 4\n")
    proc, srv = start_server(tmp_path / "runtime.toml", None)
    frame = 32 << 20
    hold = threading.Event()
    init = streaming_pb2.StreamInit(manifest=pipeline([("rep", "Repeat", {"times": 20})]))
    chunk = streaming_pb2.DataChunk(
        node_id="rep",
        buffer=common_pb2.DataBuffer(binary=common_pb2.BinaryBuffer(data=b"x" * frame)),
    )

    def requests() -> Iterator[streaming_pb2.StreamRequest]:
        yield streaming_pb2.StreamRequest(init=init)
        yield streaming_pb2.StreamRequest(data_chunk=chunk)
        hold.wait(120)

    channel = grpc.insecure_channel(
        srv.address, options=[("grpc.max_send_message_length", 64 << 20)]
    )
    try:
        with Client(srv.address) as client:  # the server is warm: its own memory first
            assert client.version().node_types
        before = _anon_mib(srv.pid)
        calls = [_raw_stream(channel)(requests(), timeout=120) for _ in range(10)]
        assert wait_until(lambda: len(node_pids(srv)) == 10, 60.0) is not None

        # Settled: the queues are full and every pipeline waits.
        def settled() -> bool:
            first = _anon_mib(srv.pid)
            time.sleep(1.0)
            return abs(_anon_mib(srv.pid) - first) < 1

        assert wait_until(settled, 60.0) is not None
        held = _anon_mib(srv.pid) - before
        time.sleep(2.0)
        later = _anon_mib(srv.pid) - before
        bound = 10 * 6 * frame / (1 << 20)
        print(f"10 non-reading streams of 32 MiB frames: the server holds {held:.0f} MiB")
        assert held < bound, f"10 non-reading streams hold {held:.0f} MiB (bound {bound:.0f})"
        assert later < held + 32, f"still growing: {held:.0f} then {later:.0f} MiB"
        for call in calls:
            call.cancel()
        assert wait_until(lambda: not node_pids(srv), 30.0) is not None
    finally:
        hold.set()
        channel.close()
        stop_server(proc)


def test_a_client_sending_ahead_of_its_pipeline_is_held_back_by_bytes(tmp_path: Path) -> None:
    """The input side of the same budget: a client sends 8 MiB chunks as fast as it can
    into a pipeline that takes one a second. The server reads no more than its budget
    ahead (16 MiB: two chunks) plus the chunk being decoded and the one being sent into
    the pipeline; HTTP/2 flow control holds the client back (it queued 16 chunks,
    whatever their size: 16 chunks of 8 MiB here). Bound stated: 14 chunks over the server's
    memory before, at any moment over 7 s (7 to 10 measured: as chunks come and go, the
    allocator keeps freed blocks of this size for reuse, per thread)."""
    from remotemedia import pipeline

    (tmp_path / "runtime.toml").write_text(
        '[channel]\ncapacity = 1\n[nodes]\nmodules = ["zerohop.testing"]\n'
    )
    proc, srv = start_server(tmp_path / "runtime.toml", None)
    size = 8 << 20
    sent = itertools.count()
    init = streaming_pb2.StreamInit(manifest=pipeline([("slow", "Slow", {"ms": 1000})]))
    chunk = streaming_pb2.DataChunk(
        node_id="slow",
        buffer=common_pb2.DataBuffer(binary=common_pb2.BinaryBuffer(data=b"x" * size)),
    )
    stop = threading.Event()

    def requests() -> Iterator[streaming_pb2.StreamRequest]:
        yield streaming_pb2.StreamRequest(init=init)
        while not stop.is_set():
            next(sent)
            yield streaming_pb2.StreamRequest(data_chunk=chunk)

    channel = grpc.insecure_channel(
        srv.address, options=[("grpc.max_send_message_length", 64 << 20)]
    )
    try:
        with Client(srv.address) as client:
            assert client.version().node_types
        before = _anon_mib(srv.pid)
        call = _raw_stream(channel)(requests(), timeout=120)
        assert wait_until(lambda: len(node_pids(srv)) == 1, 60.0) is not None
        # Seven seconds of a chunk a second taken: the most the server held meanwhile.
        held = 0.0
        for _ in range(14):
            time.sleep(0.5)
            held = max(held, _anon_mib(srv.pid) - before)
        bound = 14 * size / (1 << 20)
        assert held < bound, f"the server read {held:.0f} MiB ahead (bound {bound:.0f})"
        # The client was held back: a handful of chunks in, not as many as it could.
        assert next(sent) < 40
        call.cancel()
        assert wait_until(lambda: not node_pids(srv), 30.0) is not None
    finally:
        stop.set()
        channel.close()
        stop_server(proc)


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_silent_connections_are_closed_and_capped(tmp_path: Path) -> None:
    """TCP connections that never speak HTTP/2 are closed after
    `handshake_timeout_secs`; past `max_connections` a connection is closed at once;
    a client that speaks is served once the silent ones are gone. The metrics count
    both kinds of refusal."""
    import socket
    import urllib.request

    (tmp_path / "runtime.toml").write_text(
        "[server]\nmax_connections = 3\nhandshake_timeout_secs = 1\n"
    )
    proc, srv = start_server(tmp_path / "runtime.toml", None, metrics=True)
    host, port = srv.address.rsplit(":", 1)
    sockets = [socket.create_connection((host, int(port)), timeout=30) for _ in range(6)]
    try:
        ends = []
        for s in sockets:
            began = time.monotonic()
            with contextlib.suppress(OSError):
                while s.recv(4096):
                    pass
            ends.append(time.monotonic() - began)
        # Every one closed by the server: the three past the cap at once, the others
        # after the handshake timeout (30 s is the socket's own hang bound).
        assert max(ends) < 20, ends
        with Client(srv.address) as client:
            assert client.version().node_types
        assert srv.metrics_url is not None
        with urllib.request.urlopen(srv.metrics_url, timeout=10) as page:
            samples = dict(
                line.rsplit(" ", 1) for line in page.read().decode().splitlines() if line[:1] != "#"
            )
        refused = 'zerohop_connections_refused_total{{reason="{}"}}'
        counts = [
            float(samples.get(refused.format(r), 0))
            for r in ("max_connections", "handshake_timeout")
        ]
        # Three past the cap and three silent, unless a loaded server accepted late.
        assert sum(counts) == 6 and counts[1] >= 3, samples
    finally:
        for s in sockets:
            s.close()
        stop_server(proc)


def test_running_out_of_file_descriptors_does_not_spin(tmp_path: Path) -> None:
    """With its fd limit reached by idle connections, the server backs off instead of
    retrying accept in a loop (it burned more than a core), and serves again once
    they are gone."""
    import socket

    (tmp_path / "runtime.toml").write_text(
        "[server]\nmax_connections = 10000\nhandshake_timeout_secs = 3600\n"
    )
    proc, srv = start_server(tmp_path / "runtime.toml", None, max_fds=128)
    host, port = srv.address.rsplit(":", 1)
    sockets = [socket.create_connection((host, int(port)), timeout=30) for _ in range(200)]
    try:
        time.sleep(1)
        before = _cpu_seconds(proc.pid)
        time.sleep(2)
        used = _cpu_seconds(proc.pid) - before
        assert used < 1.0, f"{used:.2f} s of CPU in 2 s: accept is spinning"
    finally:
        for s in sockets:
            s.close()
    try:
        with Client(srv.address) as client:
            assert client.version().node_types
    finally:
        stop_server(proc)


def test_the_server_caps_processes_by_default(tmp_path: Path) -> None:
    """Unconfigured, `zerohop serve` starts at most 8 node processes per CPU core: one
    request naming more Python nodes than that is refused before anything starts."""
    from zerohop.config import PROCESSES_PER_CORE

    (tmp_path / "runtime.toml").write_text("")
    cap = PROCESSES_PER_CORE * len(os.sched_getaffinity(0))
    proc, srv = start_server(tmp_path / "runtime.toml", None)
    try:
        with Client(srv.address) as client:
            many = manifest(*((f"n{i}", "Echo", {}) for i in range(cap + 1)))
            with pytest.raises(RemoteError) as info:
                client.execute(many, {"n0": zerohop.Text("x")})
            assert info.value.status == "RESOURCE_EXHAUSTED"
            assert f"the server allows {cap} (server.max_processes)" in str(info.value)
            assert not node_pids(srv)
    finally:
        stop_server(proc)


def test_the_server_caps_nodes_per_session_by_default(tmp_path: Path) -> None:
    """Unconfigured, a session has at most 256 nodes, native ones too (they cost fds
    and shared memory, not processes): one request naming 300 PassThrough nodes is
    refused naming the setting, and the next one is served."""
    (tmp_path / "runtime.toml").write_text("")
    proc, srv = start_server(tmp_path / "runtime.toml", None)
    try:
        with Client(srv.address) as client:
            many = manifest(*((f"n{i}", "PassThrough", {}) for i in range(300)))
            with pytest.raises(RemoteError) as info:
                client.execute(many, {"n0": zerohop.Text("x")})
            assert info.value.status == "RESOURCE_EXHAUSTED"
            assert "has 300 nodes" in str(info.value)
            assert "allows 256 in one session (server.max_nodes_per_session)" in str(info.value)
            fits = manifest(*((f"n{i}", "PassThrough", {}) for i in range(256)))
            out = client.execute(fits, {"n0": zerohop.Text("x")})
            assert out["n255"].text == "x"  # type: ignore[attr-defined]
    finally:
        stop_server(proc)


def test_server_process_cap_is_resource_exhausted(tmp_path: Path) -> None:
    (tmp_path / "runtime.toml").write_text("[server]\nmax_processes = 2\n")
    proc, srv = start_server(tmp_path / "runtime.toml", None)
    try:
        with Client(srv.address) as client:
            three = manifest(("a", "Echo", {}), ("b", "Echo", {}), ("c", "Echo", {}))
            with pytest.raises(RemoteError) as info:
                client.execute(three, {"a": zerohop.Text("x")})
            assert info.value.status == "RESOURCE_EXHAUSTED"
            assert "server.max_processes" in str(info.value)
            assert not node_pids(srv)
            two = manifest(("a", "Echo", {}), ("b", "PassThrough", {}))
            assert client.execute(two, {"a": zerohop.Text("x")})["b"].text == "x"  # type: ignore[attr-defined]
    finally:
        stop_server(proc)


def test_every_frame_kind_converts_both_ways() -> None:
    rng = np.random.default_rng(3)
    frames: list[zerohop.Frame] = [
        zerohop.Audio(rng.standard_normal((100, 2)).astype(np.float32), 48000),
        zerohop.Audio(rng.integers(-(2**15), 2**15, 160).astype(np.int16), 8000),
        zerohop.Audio(rng.integers(-(2**31), 2**31, 16).astype(np.int32), 16000),
        zerohop.Video(rng.integers(0, 256, (4, 6, 3)).astype(np.uint8), "rgb24"),
        zerohop.Video(rng.integers(0, 256, (4, 6, 4)).astype(np.uint8), "rgba"),
        zerohop.Video(rng.integers(0, 256, (4, 6)).astype(np.uint8), "gray"),
        zerohop.Video(rng.integers(0, 256, 36).astype(np.uint8), "yuv420p", width=6, height=4),
        zerohop.Tensor(rng.standard_normal((2, 3)).astype(np.float16)),
        zerohop.Tensor(rng.integers(0, 9, (5,)).astype(np.uint8)),
        zerohop.Tensor(rng.standard_normal((3, 2))),  # float64: a NumpyBuffer
        zerohop.Tensor(rng.integers(0, 9, (2, 2)).astype(np.int64)),
        zerohop.Text("grüße"),
        zerohop.Json({"a": [1, 2.5, None]}),
        zerohop.Bytes(b"\x00\xffraw"),
    ]
    for frame in frames:
        back = from_buffer(to_buffer(frame))
        assert type(back) is type(frame)
        payload = slice(zerohop._native.HEADER_LEN, None)
        assert back.to_bytes()[payload] == frame.to_bytes()[payload], frame


def test_video_and_numpy_frames_through_the_server(client: Client) -> None:
    rng = np.random.default_rng(5)
    pixels = rng.integers(0, 256, (48, 64, 3)).astype(np.uint8)
    array = rng.standard_normal((7, 5))  # float64
    m = manifest(("echo", "Echo", {}), ("out", "PassThrough", {}))
    frames = list(client.stream(m, [zerohop.Video(pixels), zerohop.Tensor(array)]))
    assert np.array_equal(frames[0].pixels, pixels)  # type: ignore[attr-defined]
    assert frames[1].array.dtype == np.float64  # type: ignore[attr-defined]
    assert np.array_equal(frames[1].array, array)  # type: ignore[attr-defined]


def test_stream_into_a_node_with_two_inputs(client: Client) -> None:
    m = manifest(("j", "Join", {}))
    frames = list(client.stream(m, [("j.left", zerohop.Text("a")), ("j.right", zerohop.Text("b"))]))
    assert sorted((f.value["port"], f.value["value"]) for f in frames) == [  # type: ignore[attr-defined]
        ("left", "a"),
        ("right", "b"),
    ]
    with pytest.raises(RemoteError) as info:
        list(client.stream(m, [("j.middle", zerohop.Text("a"))]))
    assert info.value.error_type == "VALIDATION" and "j.left, j.right" in str(info.value)


# Fuzzing the wire: random DataBuffers, random and truncated messages. Whatever arrives,
# the server answers with an error (or a result) and stays up; nothing is left running.

_INTS = {3: (-(2**63), 2**63 - 1), 4: (0, 2**64 - 1), 13: (0, 2**32 - 1), 14: (0, 12)}


def _field_values(field: Any) -> st.SearchStrategy[Any]:
    if field.type == 12:  # bytes
        return st.binary(max_size=512)
    if field.type == 9:  # string
        return st.text(max_size=40)
    if field.type == 8:  # bool
        return st.booleans()
    low, high = _INTS[field.type]
    # Small values, edge values and anything between: sizes that lie about the bytes.
    return st.one_of(st.integers(0, 64), st.sampled_from([low, high]), st.integers(low, high))


@st.composite
def data_buffers(draw: st.DrawFn) -> Any:
    """A DataBuffer of a random kind whose fields hold random values of their wire type."""
    from zerohop._proto import common_pb2

    kinds = [f for f in common_pb2.DataBuffer.DESCRIPTOR.fields if f.name != "metadata"]
    kind = draw(st.sampled_from(kinds))
    buffer = common_pb2.DataBuffer()
    part = getattr(buffer, kind.name)
    part.SetInParent()
    for field in kind.message_type.fields:
        if field.message_type is not None:
            continue
        if field.is_repeated:
            getattr(part, field.name).extend(draw(st.lists(_field_values(field), max_size=4)))
        elif draw(st.booleans()):
            setattr(part, field.name, draw(_field_values(field)))
    return buffer


def _raw_execute(channel: grpc.Channel) -> Any:
    return channel.unary_unary(
        "/remotemedia.v1.PipelineExecutionService/ExecutePipeline",
        request_serializer=None,
        response_deserializer=execution_pb2.ExecuteResponse.FromString,
    )


AUTH = [("authorization", f"Bearer {TOKEN}")]
WIRE_CHAIN = execution_pb2.PipelineManifest(
    version="v1",
    metadata=execution_pb2.ManifestMetadata(name="fuzz"),
    nodes=[
        execution_pb2.NodeManifest(id="py", node_type="Echo", params=""),
        execution_pb2.NodeManifest(id="native", node_type="PassThrough", params=""),
    ],
    connections=[execution_pb2.Connection(**{"from": "py", "to": "native"})],
)


@given(buffer=data_buffers())
@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_random_data_buffers_get_an_answer_and_the_server_survives(
    client: Client, server: Server, buffer: Any
) -> None:
    request = execution_pb2.ExecuteRequest(manifest=WIRE_CHAIN, data_inputs={"py": buffer})
    with grpc.insecure_channel(server.address) as channel:
        try:
            response = _raw_execute(channel)(request.SerializeToString(), metadata=AUTH)
        except grpc.RpcError as err:
            # A status is an answer too, as long as it says what was wrong.
            assert err.code() != grpc.StatusCode.UNAVAILABLE, err
            assert err.details(), err
        else:
            if response.HasField("error"):
                assert response.error.message, response
    assert client.version().protocol_version == "v1"
    assert wait_until(lambda: not node_pids(server), 5.0) is not None


@given(data=st.binary(max_size=2048), cut=st.integers(0, 10_000))
@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_random_and_truncated_messages_are_refused_and_the_server_survives(
    client: Client, server: Server, data: bytes, cut: int
) -> None:
    valid = execution_pb2.ExecuteRequest(
        manifest=WIRE_CHAIN, data_inputs={"py": to_buffer(zerohop.Text("truncated"))}
    ).SerializeToString()
    with grpc.insecure_channel(server.address) as channel:
        execute = _raw_execute(channel)
        for message in (data, valid[: cut % len(valid)]):
            try:
                response = execute(message, metadata=AUTH)
            except grpc.RpcError as err:
                assert err.code() != grpc.StatusCode.UNAVAILABLE, err
                assert err.details(), err
            else:
                # Some prefixes and random bytes are valid protobuf: then they are
                # judged as requests, and a request without a manifest is an error.
                assert response.HasField("error") or response.HasField("result"), response
    assert client.version().protocol_version == "v1"
    assert wait_until(lambda: not node_pids(server), 5.0) is not None


def test_the_client_sends_every_node_field_it_is_given(server: Server) -> None:
    """`host`, `capabilities` and `runtime_hint` reach the server (it says what it
    does with each); one that remotemedia.v1 cannot carry is an error naming it."""
    from zerohop.client import _manifest_message

    doc = {
        "version": "v1",
        "nodes": [
            {
                "id": "e",
                "node_type": "Echo",
                "host": "gpu-1:50051",
                "runtime_hint": "cpython",
                "capabilities": {
                    "cpu": {"cores": 1},
                    "memory_gb": 0.5,
                    "gpu": {"type": "cuda", "min_memory_gb": 1.0},
                },
            }
        ],
    }
    node = _manifest_message(doc).nodes[0]
    assert (node.host, node.runtime_hint) == ("gpu-1:50051", execution_pb2.RUNTIME_HINT_CPYTHON)
    assert (node.capabilities.cpu.cores, node.capabilities.memory_gb) == (1, 0.5)
    local = {"version": "v1", "nodes": [{**doc["nodes"][0], "host": None}]}  # type: ignore[dict-item]
    with Client(server.address, TOKEN) as client, warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        assert client.execute(local, {"e": zerohop.Text("x")})["e"].text == "x"  # type: ignore[attr-defined]
        # The host arrived: this server may not dial it (runtime.toml lists none).
        with pytest.raises(RemoteError, match=r"nodes\[0\]\.host: gpu-1:50051 is not a host"):
            client.execute(doc, {"e": zerohop.Text("x")})
    heard = " ".join(str(w.message) for w in said if w.category is ServerWarning)
    assert "nodes[0].capabilities" in heard, heard
    for field, value in (("runtime_hint", "native"), ("capabilities", {"gpux": 1})):
        bad = {"version": "v1", "nodes": [{"id": "e", "node_type": "Echo", field: value}]}
        with pytest.raises(zerohop.ConfigError, match=rf"nodes\[0\]\.{field}"):
            _manifest_message(bad)


def test_the_client_warns_about_what_the_server_ignored(server: Server) -> None:
    """The server's zerohop-warnings reach zerohop.client users as ServerWarning, from
    batch calls and streams, sync and async."""
    m = manifest(("up", "UpperCase", {}), ("p", "PassThrough", {"gain_db": 3}))
    with Client(server.address, TOKEN) as client:
        with pytest.warns(ServerWarning, match=r"nodes\[1\]\.params\.gain_db"):
            assert client.execute(m, {"up": zerohop.Text("a")})["p"].text == "A"  # type: ignore[attr-defined]
        with pytest.warns(ServerWarning, match=r"nodes\[1\]\.params\.gain_db"):
            assert len(list(client.stream(m, [zerohop.Text("a")]))) == 1

    async def main() -> None:
        async with AsyncClient(server.address, TOKEN) as client:
            with pytest.warns(ServerWarning, match="gain_db"):
                await client.execute(m, {"up": zerohop.Text("a")})
            with pytest.warns(ServerWarning, match="gain_db"):
                assert len([f async for f in client.stream(m, [zerohop.Text("a")])]) == 1

    asyncio.run(main())
