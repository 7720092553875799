"""Cancels over remotemedia.v1, as a client sends and reads them: a ``ControlMessage``
with ``CancelSpeculation`` in the stream overtakes what is in flight (the reply in
progress stops, its queued results are dropped), and the client reads a
``CancelSpeculation`` result ahead of anything the pipeline makes afterwards — also
when a node cancels (barge-in detected server-side). Time bounds are hang bounds."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator

import pytest
from remotemedia import TOKEN, RemotemediaClient, Server, pipeline, start_server, stop_server, text

from zerohop._proto import common_pb2, streaming_pb2

pytestmark = pytest.mark.usefixtures("grpc_sockets_closed")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    config = tmp_path_factory.mktemp("cancel") / "runtime.toml"
    config.write_text('[nodes]\nmodules = ["zerohop.testing"]\n')
    proc, srv = start_server(config, TOKEN)
    with RemotemediaClient(srv.address) as client:
        client.version()
    yield srv
    stop_server(proc)


CANCEL = common_pb2.DataBuffer(
    control=common_pb2.ControlMessage(
        cancel_speculation=common_pb2.CancelSpeculation(from_timestamp=0, to_timestamp=0),
        metadata='{"reason": "barge-in"}',
    )
)


def chunk(buffer: common_pb2.DataBuffer, sequence: int) -> streaming_pb2.DataChunk:
    return streaming_pb2.DataChunk(node_id="in", buffer=buffer, sequence=sequence)


def read(
    client: RemotemediaClient, manifest: object, sent: list[common_pb2.DataBuffer]
) -> list[common_pb2.DataBuffer]:
    """Streams ``sent[0]``, waits for its first result, then the rest; returns every
    result buffer in arrival order."""
    first = threading.Event()

    def chunks() -> Iterator[streaming_pb2.DataChunk]:
        yield chunk(sent[0], 0)
        first.wait(60)
        for i, buffer in enumerate(sent[1:], 1):
            yield chunk(buffer, i)

    got = []
    for response in client.stream(manifest, chunks()):  # type: ignore[arg-type]
        if response.WhichOneof("response") == "result":
            got.extend(response.result.data_outputs.values())
            first.set()
        assert response.WhichOneof("response") != "error", response
    return got


def is_cancel(buffer: common_pb2.DataBuffer) -> bool:
    return (
        buffer.WhichOneof("data_type") == "control"
        and buffer.control.WhichOneof("message_type") == "cancel_speculation"
    )


def parts(buffers: list[common_pb2.DataBuffer], word: str) -> list[int]:
    values = [
        json.loads(b.json.json_payload) for b in buffers if b.WhichOneof("data_type") == "json"
    ]
    return [v["part"] for v in values if v["text"] == word]


def test_a_clients_cancel_speculation_stops_the_reply_in_flight(server: Server) -> None:
    manifest = pipeline([("talk", "Talk", {"parts": 40, "ms": 25})])
    with RemotemediaClient(server.address) as client:
        got = read(client, manifest, [text("a"), CANCEL, text("b")])
    cancels = [i for i, b in enumerate(got) if is_cancel(b)]
    # The server's notice (its cancel id in the metadata), then the client's own message
    # passed on in order by the node, which does not take control messages.
    assert len(cancels) == 2, got
    assert "cancel_id" in json.loads(got[cancels[0]].control.metadata)
    assert got[cancels[1]].control.metadata == '{"reason": "barge-in"}'
    assert len(parts(got, "a")) < 20, "the reply went on after the cancel"
    assert parts(got, "b") == list(range(40))
    assert not parts(got[cancels[0] :], "a"), "a result of the cancelled reply came after"


def test_a_nodes_cancel_reaches_the_client(server: Server) -> None:
    """Interrupt cancels on "stop" (as a VAD does at speech onset): the client reads the
    CancelSpeculation, the reply in flight stops, the next one is whole."""
    manifest = pipeline(
        [("vad", "Interrupt", {"word": "stop"}), ("talk", "Talk", {"parts": 40, "ms": 25})]
    )
    with RemotemediaClient(server.address) as client:
        got = read(client, manifest, [text("a"), text("stop"), text("b")])
    assert sum(is_cancel(b) for b in got) == 1, got
    assert len(parts(got, "a")) < 20
    assert parts(got, "b") == list(range(40))
