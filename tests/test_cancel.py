"""Cancels that overtake queued frames (barge-in), in both executors: a cancel reaches
every node downstream ahead of the frames waiting in its channels, stops the work in
flight (a generator's next output), drops what it covers, and what is sent after it is
handled as usual. Time bounds here are hang bounds, generous for a loaded machine."""

from __future__ import annotations

import threading
import time

import pytest

import zerohop
import zerohop.testing  # registers Talk, Interrupt, Slow
from zerohop import Control, Json, Pipeline, RuntimeConfig, Text

pytestmark = pytest.mark.parametrize("executor", ["multiprocess", "inprocess"])


def capacity(n: int) -> RuntimeConfig:
    return RuntimeConfig.model_validate({"channel": {"capacity": n}})


def is_cancel(frame: zerohop.Frame) -> bool:
    return isinstance(frame, Control) and frame.action == "cancel_speculation"


def test_a_cancel_stops_a_reply_mid_stream_and_the_next_one_is_whole(executor: str) -> None:
    """Talk streams 40 parts, 25 ms apart (1 s). A cancel after the first part stops it
    at its next output: far fewer parts of "a" arrive, the reader gets the cancel
    frame, and "b", sent after the cancel, comes out whole — with the node having seen
    one cancel (on_cancel)."""
    pipe = Pipeline("talk", executor=executor).node("talk", "Talk", parts=40, ms=25)  # type: ignore[arg-type]
    with pipe.session() as session:
        session.send(Text("a"))
        first = session.recv(timeout=30)
        assert isinstance(first, Json) and first.value["text"] == "a"
        started = time.monotonic()
        session.cancel()
        session.send(Text("b"))
        session.end_input()
        out = list(session.outputs(timeout=30))
    parts = [f.value for f in out if isinstance(f, Json)]
    cancels = [i for i, f in enumerate(out) if is_cancel(f)]
    assert len(cancels) == 1, out
    a = [p for p in parts if p["text"] == "a"]
    b = [p for p in parts if p["text"] == "b"]
    assert len(a) < 20, f"the reply went on after the cancel: {len(a)} more parts"
    assert [p["part"] for p in b] == list(range(40))
    assert {p["cancels"] for p in b} == {1}
    # Nothing of "a" comes after the cancel frame.
    assert all(f.value["text"] == "b" for f in out[cancels[0] :] if isinstance(f, Json))
    assert time.monotonic() - started < 30


def test_a_cancel_overtakes_a_full_channel(executor: str) -> None:
    """Capacity 2, a node taking 200 ms a frame: 6 frames fill the queues on the way.
    Cancelled (then "new" sent) from another thread while this one reads, as a player
    reads: the cancel reaches the reader at once (not after the 1.2 s of queued work),
    the queued frames are dropped, and the frame sent after it comes out."""
    pipe = (
        Pipeline("full", executor=executor, config=capacity(2))  # type: ignore[arg-type]
        .node("slow", "Slow", ms=200)
        .node("tail", "UpperCase")
        .connect("slow", "tail")
    )
    with pipe.session() as session:
        for i in range(6):
            session.send(Text(f"old{i}"), timeout=30)

        def cancel_then_new() -> None:
            session.cancel()
            session.send(Text("new"), timeout=30)
            session.end_input()

        canceller = threading.Thread(target=cancel_then_new)
        cancelled = time.monotonic()
        canceller.start()
        out = []
        reached = None
        for frame in session.outputs(timeout=30):
            if is_cancel(frame) and reached is None:
                reached = time.monotonic() - cancelled
            out.append(frame)
        canceller.join(30)
    texts = [f.text for f in out if isinstance(f, Text)]
    assert texts[-1] == "NEW", texts
    old = [t for t in texts if t.startswith("OLD")]
    assert len(old) <= 3, f"queued frames were not dropped: {texts}"
    assert reached is not None and reached < 1.0, f"the cancel took {reached} s"


def test_a_node_cancels_what_is_in_flight_downstream(executor: str) -> None:
    """Interrupt passes "a" to Talk; "stop" makes it cancel (ctx.cancel()): Talk stops
    mid-reply and "b", sent after, comes out whole."""
    pipe = (
        Pipeline("barge", executor=executor)  # type: ignore[arg-type]
        .node("vad", "Interrupt", word="stop")
        .node("talk", "Talk", parts=40, ms=25)
        .connect("vad", "talk")
    )
    with pipe.session() as session:
        session.send(Text("a"))
        first = session.recv(timeout=30)
        assert isinstance(first, Json)
        session.send(Text("stop"))
        session.send(Text("b"))
        session.end_input()
        out = list(session.outputs(timeout=30))
    parts = [f.value for f in out if isinstance(f, Json)]
    assert sum(is_cancel(f) for f in out) == 1
    assert len([p for p in parts if p["text"] == "a"]) < 20
    b = [p for p in parts if p["text"] == "b"]
    assert [p["part"] for p in b] == list(range(40)) and b[0]["cancels"] == 1


def test_a_cancel_passes_a_native_node_on_the_way(executor: str) -> None:
    """A native (Rust) node between the origin and Talk: it hears the cancel too, drops
    what it covers and passes the marker on, so the reply stops and the next is whole."""
    pipe = (
        Pipeline("native", executor=executor)  # type: ignore[arg-type]
        .node("vad", "Interrupt", word="stop")
        .node("pass", "PassThrough")
        .node("talk", "Talk", parts=40, ms=25)
        .connect("vad", "pass", "talk")
    )
    assert pipe.graph()["nodes"][1]["placement"] == "native"
    with pipe.session() as session:
        session.send(Text("a"))
        assert isinstance(session.recv(timeout=30), Json)
        session.send(Text("stop"))
        session.send(Text("b"))
        session.end_input()
        out = list(session.outputs(timeout=30))
    parts = [f.value for f in out if isinstance(f, Json)]
    assert sum(is_cancel(f) for f in out) == 1
    assert len([p for p in parts if p["text"] == "a"]) < 20
    assert [p["part"] for p in parts if p["text"] == "b"] == list(range(40))
