"""Every remotemedia ``DataBuffer`` variant and field through a real ``zerohop serve``,
driven the way remotemedia-sdk's own clients drive it: raw stubs of the
``remotemedia.v1`` protos (no zerohop client code), messages built as its Python client
builds them (numpy arrays with their strides and contiguity flags) and as its Node client
does (``DataBuffer.metadata`` on every chunk). Through a native ``PassThrough``, a Python
pass-through node and a mixed chain, by ``ExecutePipeline`` and ``StreamPipeline``, what
comes back equals what went in; a Python node that changes the metadata is seen to; file
references are read only inside ``[nodes] file_dirs``."""

from __future__ import annotations

import itertools
import json
import os
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from test_grpc import TOKEN, Server, node_pids, start_server, stop_server, wait_until

from zerohop._proto import common_pb2 as common
from zerohop._proto import execution_pb2 as execution
from zerohop._proto import streaming_pb2 as streaming
from zerohop.config import NodesConfig

AUTH = [("authorization", f"Bearer {TOKEN}")]
ROOT = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("grpc_sockets_closed")


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``allowed/`` (the configured file dir) with a clip and a symlink out of it, and a
    ``secret/`` beside it."""
    root = tmp_path_factory.mktemp("files")
    (root / "allowed").mkdir()
    (root / "secret").mkdir()
    (root / "allowed" / "clip.bin").write_bytes(bytes(range(100)))
    (root / "secret" / "key").write_bytes(b"do not read")
    (root / "allowed" / "link").symlink_to(root / "secret" / "key")
    return root


@pytest.fixture(scope="module")
def server(files: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    config = tmp_path_factory.mktemp("compat") / "runtime.toml"
    config.write_text(
        f"[nodes]\nfile_dirs = [{json.dumps(str(files / 'allowed'))}]\n"
        "[channel]\nmax_payload_bytes = 1048576\n"
    )
    proc, srv = start_server(config, TOKEN)
    with grpc.insecure_channel(srv.address) as channel:  # grpcio's first-use threads
        _execute(channel)(_request(_chain(("n", "PassThrough")), "n", _text_buffer()))
    yield srv
    stop_server(proc)


# ------------------------------------------------------------------ remotemedia-shaped


def _execute(channel: grpc.Channel) -> Any:
    call = channel.unary_unary(
        "/remotemedia.v1.PipelineExecutionService/ExecutePipeline",
        request_serializer=execution.ExecuteRequest.SerializeToString,
        response_deserializer=execution.ExecuteResponse.FromString,
    )
    return lambda request: call(request, metadata=AUTH, timeout=60)


def _stream(channel: grpc.Channel) -> Any:
    call = channel.stream_stream(
        "/remotemedia.v1.StreamingPipelineService/StreamPipeline",
        request_serializer=streaming.StreamRequest.SerializeToString,
        response_deserializer=streaming.StreamResponse.FromString,
    )
    return lambda requests: call(requests, metadata=AUTH, timeout=60)


def _chain(*nodes: tuple[str, str]) -> execution.PipelineManifest:
    return execution.PipelineManifest(
        version="v1",
        metadata=execution.ManifestMetadata(name="compat"),
        nodes=[execution.NodeManifest(id=i, node_type=t, params="{}") for i, t in nodes],
        connections=[
            execution.Connection(**{"from": a[0], "to": b[0]}) for a, b in itertools.pairwise(nodes)
        ],
    )


def _request(
    manifest: execution.PipelineManifest, node: str, buffer: common.DataBuffer
) -> execution.ExecuteRequest:
    return execution.ExecuteRequest(
        manifest=manifest, data_inputs={node: buffer}, client_version="compat-test"
    )


def _numpy(array: np.ndarray) -> common.NumpyBuffer:
    """What remotemedia's Python client sends for an array: its memory, strides and
    flags as numpy reports them."""
    return common.NumpyBuffer(
        data=array.tobytes(order="A"),
        shape=list(array.shape),
        dtype=array.dtype.str,
        strides=list(array.strides),
        c_contiguous=bool(array.flags.c_contiguous),
        f_contiguous=bool(array.flags.f_contiguous),
    )


def _text_buffer() -> common.DataBuffer:
    return common.DataBuffer(text=common.TextBuffer(text_data=b"hi", encoding="utf-8"))


def every_buffer(chunk: int = 0) -> list[common.DataBuffer]:
    """Every variant with every field set, ``DataBuffer.metadata`` on each (as the Node
    client sends it on every chunk)."""
    fortran = np.asfortranarray(np.arange(24, dtype=np.float64).reshape(2, 3, 4) * 1.5)
    variants = [
        common.DataBuffer(
            audio=common.AudioBuffer(
                samples=np.linspace(-1, 1, 320, dtype=np.float32).tobytes(),
                sample_rate=16000,
                channels=2,
                format=common.AUDIO_FORMAT_F32,
                num_samples=320,
                metadata_json=b'{"speaker": "alice", "vad": 0.9}',
            )
        ),
        common.DataBuffer(
            video=common.VideoFrame(
                pixel_data=bytes(range(4 * 2 * 3)),
                width=4,
                height=2,
                format=common.PIXEL_FORMAT_RGB24,
                frame_number=41,
                timestamp_us=1_000_001,
                is_keyframe=True,
            )
        ),
        common.DataBuffer(
            video=common.VideoFrame(
                pixel_data=b"\x00\x00\x00\x01" + os.urandom(500),
                width=1280,
                height=720,
                format=common.PIXEL_FORMAT_ENCODED,
                frame_number=42,
                timestamp_us=1_033_334,
                codec=common.VIDEO_CODEC_H264,
                is_keyframe=True,
            )
        ),
        common.DataBuffer(
            tensor=common.TensorBuffer(
                data=np.arange(6, dtype=np.float32).tobytes(),
                shape=[1, 2, 3],
                dtype=common.TENSOR_DTYPE_F32,
                layout="NCW",
            )
        ),
        common.DataBuffer(numpy=_numpy(np.arange(12, dtype=np.float32).reshape(3, 4))),
        common.DataBuffer(numpy=_numpy(fortran)),
        common.DataBuffer(
            json=common.JsonData(json_payload='{"event": "speech_end"}', schema_type="vad")
        ),
        common.DataBuffer(
            text=common.TextBuffer(
                text_data="¿Qué tal?".encode(), encoding="utf-8", language="es", channel="ui"
            )
        ),
        common.DataBuffer(binary=common.BinaryBuffer(data=os.urandom(64), mime_type="audio/ogg")),
        common.DataBuffer(
            control=common.ControlMessage(
                cancel_speculation=common.CancelSpeculation(from_timestamp=100, to_timestamp=900),
                segment_id="seg-7",
                timestamp_ms=1234,
                metadata='{"reason": "barge-in"}',
            )
        ),
        common.DataBuffer(
            control=common.ControlMessage(
                batch_hint=common.BatchHint(suggested_batch_size=4), segment_id="seg-8"
            )
        ),
        common.DataBuffer(
            control=common.ControlMessage(
                deadline_warning=common.DeadlineWarning(deadline_us=5000), timestamp_ms=9
            )
        ),
    ]
    for i, buffer in enumerate(variants):
        buffer.metadata.update({"client": "node", "chunk": str(chunk), "variant": str(i)})
    return variants


CHAINS = {
    "native": (("pass", "PassThrough"),),
    "python": (("echo", "Echo"),),
    "mixed": (("pass", "PassThrough"), ("echo", "Echo"), ("pass2", "PassThrough")),
}


@pytest.mark.parametrize("chain", sorted(CHAINS))
def test_execute_pipeline_gives_back_every_field(server: Server, chain: str) -> None:
    nodes = CHAINS[chain]
    manifest = _chain(*nodes)
    with grpc.insecure_channel(server.address) as channel:
        for buffer in every_buffer():
            response = _execute(channel)(_request(manifest, nodes[0][0], buffer))
            assert response.HasField("result"), response.error
            outputs = response.result.data_outputs
            # Keyed by node id, and "output" as remotemedia's server keys it.
            assert sorted(outputs) == sorted([nodes[-1][0], "output"])
            assert outputs[nodes[-1][0]] == buffer, buffer.WhichOneof("data_type")
            assert outputs["output"] == buffer
    assert wait_until(lambda: not node_pids(server), 5.0) is not None


def _streamed(
    server: Server, nodes: tuple[tuple[str, str], ...], chunks: list[common.DataBuffer]
) -> list[streaming.StreamResponse]:
    def requests() -> Iterator[streaming.StreamRequest]:
        yield streaming.StreamRequest(
            init=streaming.StreamInit(manifest=_chain(*nodes), client_version="compat-test")
        )
        for sequence, buffer in enumerate(chunks):
            yield streaming.StreamRequest(
                data_chunk=streaming.DataChunk(
                    node_id=nodes[0][0], buffer=buffer, sequence=sequence
                )
            )
        yield streaming.StreamRequest(
            control=streaming.StreamControl(command=streaming.StreamControl.COMMAND_CLOSE)
        )

    with grpc.insecure_channel(server.address) as channel:
        return list(_stream(channel)(requests()))


@pytest.mark.parametrize("chain", sorted(CHAINS))
def test_stream_pipeline_gives_back_every_field_of_every_chunk(server: Server, chain: str) -> None:
    nodes = CHAINS[chain]
    # A CancelSpeculation also cancels what is in flight (test below): not in this run.
    chunks = [b for n in range(2) for b in every_buffer(chunk=n) if not _cancels(b)]
    responses = _streamed(server, nodes, chunks)
    errors = [r.error for r in responses if r.HasField("error")]
    assert not errors, errors
    got = [
        buffer
        for r in responses
        if r.HasField("result")
        for buffer in r.result.data_outputs.values()
    ]
    assert got == chunks
    assert responses[-1].HasField("closed")
    assert wait_until(lambda: not node_pids(server), 5.0) is not None


def _cancels(buffer: common.DataBuffer) -> bool:
    return buffer.WhichOneof("data_type") == "control" and buffer.control.HasField(
        "cancel_speculation"
    )


@pytest.mark.parametrize("chain", sorted(CHAINS))
def test_a_streamed_cancel_speculation_comes_back_whole_after_its_notice(
    server: Server, chain: str
) -> None:
    """A client's CancelSpeculation cancels what is in flight — the server says so with a
    CancelSpeculation of its own (the cancel's id in its metadata) — then passes the
    nodes, every field kept, as every control message does."""
    (cancel,) = [b for b in every_buffer() if _cancels(b)]
    responses = _streamed(server, CHAINS[chain], [cancel])
    got = [b for r in responses if r.HasField("result") for b in r.result.data_outputs.values()]
    assert len(got) == 2, got
    assert _cancels(got[0]) and "cancel_id" in json.loads(got[0].control.metadata)
    assert got[1] == cancel


def test_a_fortran_array_comes_back_fortran_ordered_with_the_same_values(server: Server) -> None:
    array = np.asfortranarray(np.random.default_rng(1).standard_normal((5, 7)))
    manifest = _chain(("echo", "Echo"))
    with grpc.insecure_channel(server.address) as channel:
        response = _execute(channel)(
            _request(manifest, "echo", common.DataBuffer(numpy=_numpy(array)))
        )
    back = response.result.data_outputs["echo"].numpy
    assert back.f_contiguous and not back.c_contiguous
    assert list(back.strides) == list(array.strides)
    rebuilt = np.ndarray(
        tuple(back.shape), dtype=np.dtype(back.dtype), buffer=back.data, strides=tuple(back.strides)
    )
    assert np.array_equal(rebuilt, array)


def test_a_python_node_that_changes_metadata_is_heard(server: Server) -> None:
    """Tag adds a key and sets the channel; UpperCase makes a new frame and so inherits
    what the one before it said (tags, channel, language)."""
    manifest = execution.PipelineManifest(
        version="v1",
        metadata=execution.ManifestMetadata(name="tags"),
        nodes=[
            execution.NodeManifest(
                id="tag",
                node_type="Tag",
                params=json.dumps({"key": "seen_by", "value": "tag", "channel": "tts"}),
            ),
            execution.NodeManifest(id="upper", node_type="UpperCase", params="{}"),
            execution.NodeManifest(id="pass", node_type="PassThrough", params="{}"),
        ],
        connections=[
            execution.Connection(**{"from": "tag", "to": "upper"}),
            execution.Connection(**{"from": "upper", "to": "pass"}),
        ],
    )
    buffer = common.DataBuffer(
        text=common.TextBuffer(text_data=b"hello", encoding="utf-8", language="en", channel="ui"),
        metadata={"client": "node"},
    )
    with grpc.insecure_channel(server.address) as channel:
        response = _execute(channel)(_request(manifest, "tag", buffer))
    out = response.result.data_outputs["pass"]
    assert dict(out.metadata) == {"client": "node", "seen_by": "tag"}
    assert (out.text.text_data, out.text.channel, out.text.language) == (b"HELLO", "tts", "en")


def _file(path: str, offset: int = 0, length: int = 0) -> common.DataBuffer:
    return common.DataBuffer(
        file=common.FileBuffer(
            path=path,
            filename=os.path.basename(path),
            mime_type="application/octet-stream",
            size=100,
            offset=offset,
            length=length,
            stream_id="s-1",
        ),
        metadata={"client": "node"},
    )


def test_file_references_are_read_inside_file_dirs_only(server: Server, files: Path) -> None:
    clip = str(files / "allowed" / "clip.bin")
    manifest = _chain(("echo", "Echo"))
    with grpc.insecure_channel(server.address) as channel:
        execute = _execute(channel)
        whole = execute(_request(manifest, "echo", _file(clip))).result.data_outputs["echo"]
        assert whole.binary.data == bytes(range(100))
        assert whole.binary.mime_type == "application/octet-stream"
        assert dict(whole.metadata) == {"client": "node"}
        part = execute(_request(manifest, "echo", _file(clip, 10, 5))).result.data_outputs
        assert part["echo"].binary.data == bytes(range(10, 15))

        escapes = [
            str(files / "secret" / "key"),
            str(files / "allowed" / ".." / "secret" / "key"),
            str(files / "allowed" / "link"),
            "/etc/passwd",
        ]
        for path in escapes:
            response = execute(_request(manifest, "echo", _file(path)))
            assert response.HasField("error"), path
            message = response.error.message
            assert "DataBuffer.file.path" in message and "outside" in message, message
            assert "do not read" not in message
        response = execute(_request(manifest, "echo", _file(clip, 90, 20)))
        assert "DataBuffer.file.length" in response.error.message
        # The server survives all of it.
        ok = execute(_request(manifest, "echo", _text_buffer()))
        assert ok.result.data_outputs["echo"].text.text_data == b"hi"
    assert wait_until(lambda: not node_pids(server), 5.0) is not None


def test_file_dirs_default_is_the_same_in_runtime_toml_and_config() -> None:
    with (ROOT / "runtime.toml").open("rb") as f:
        documented = tomllib.load(f)["nodes"]["file_dirs"]
    assert tuple(documented) == NodesConfig().file_dirs == ()
