"""What a session promises, checked once per executor: the multiprocess executor (each
node in its own process, shared-memory channels) and the in-process one (threads, queue
ports) run the same node loop (zerohop.node_loop) and must keep the same promises —
send timeouts that deliver nothing, backpressure, on_error="skip", end of stream and
flush, fan-out and fan-in, the failing node named, outputs in order.

Every time bound here is a hang bound, generous for a loaded machine."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

import zerohop
from zerohop import (
    Json,
    NodeError,
    NodeInitError,
    Pipeline,
    RuntimeConfig,
    Tensor,
    Text,
    ZerohopTimeoutError,
)

pytestmark = pytest.mark.parametrize("executor", ["multiprocess", "inprocess"])


def texts(frames: list[zerohop.Frame]) -> list[str]:
    return [f.text for f in frames if isinstance(f, Text)]


def capacity(n: int) -> RuntimeConfig:
    return RuntimeConfig.model_validate({"channel": {"capacity": n}})


def test_outputs_come_in_order_with_increasing_sequence_numbers(executor: str) -> None:
    pipe = (
        Pipeline("order", executor=executor)  # type: ignore[arg-type]
        .node("up", "UpperCase")
        .node("rep", "Repeat", times=2)
        .node("sfx", "Suffix", suffix="?")
        .connect("up", "rep", "sfx")
    )
    out = pipe.run([Text(f"m{i}") for i in range(100)])
    assert texts(out) == [f"M{i}?" for i in range(100) for _ in range(2)]
    assert all(f.source == "sfx" for f in out)
    sequences = [f.sequence or 0 for f in out]
    assert sequences == sorted(sequences) and len(set(sequences)) == len(sequences)


def test_a_send_that_times_out_delivers_nothing(executor: str) -> None:
    """With the pipeline behind (capacity 1, a node taking 400 ms a frame),
    `send(timeout=0.1)` raises TimeoutError once the timeout has passed and that frame
    never reaches a node."""
    pipe = Pipeline("t", executor=executor, config=capacity(1)).node("slow", "Slow", ms=400)  # type: ignore[arg-type]
    sent, timed_out = 0, 0
    with pipe.session() as session:
        out: list[zerohop.Frame] = []
        # Outputs are read meanwhile: with capacity 1 a pipeline whose outputs nobody
        # reads stops, by design, as soon as its output queue is full.
        reader = threading.Thread(target=lambda: out.extend(session.outputs()))
        reader.start()
        for i in range(6):
            began = time.monotonic()
            try:
                session.send(Text(str(i)), timeout=0.1)
                sent += 1
            except TimeoutError:
                took = time.monotonic() - began
                assert 0.1 <= took < 30, took  # a hang bound, not a speed limit
                timed_out += 1
        session.end_input()
        reader.join(60)
    assert timed_out > 0 and sent > 0
    assert len(out) == sent, (sent, texts(out))


def test_outputs_nobody_reads_hold_the_pipeline_back(executor: str) -> None:
    """Backpressure goes all the way: nothing is dropped and nothing queues without
    bound. With capacity 1 and nobody reading, sends start to time out after a few
    frames (one per queue on the way); once the outputs are read every frame that was
    sent comes out, in order."""
    pipe = (
        Pipeline("bp", executor=executor, config=capacity(1))  # type: ignore[arg-type]
        .node("a", "Echo")
        .node("b", "Echo")
        .connect("a", "b")
    )
    with pipe.session() as session:
        sent = 0
        for i in range(50):
            try:
                session.send(Text(str(i)), timeout=0.5)
            except TimeoutError:
                break
            sent += 1
        # Queues and frames in hand on the way: input, a, a→b, b, output (two each).
        assert 0 < sent <= 12, sent
        out: list[zerohop.Frame] = []
        reader = threading.Thread(target=lambda: out.extend(session.outputs(timeout=60)))
        reader.start()
        session.end_input(timeout=60)
        reader.join(60)
    assert texts(out) == [str(i) for i in range(sent)]


def test_a_slow_node_slows_the_sender(executor: str) -> None:
    pipe = Pipeline("bp", executor=executor, config=capacity(2)).node("slow", "Slow", ms=50)  # type: ignore[arg-type]
    with pipe.session() as session:
        out: list[zerohop.Frame] = []
        reader = threading.Thread(target=lambda: out.extend(session.outputs(timeout=60)))
        reader.start()
        start = time.monotonic()
        for i in range(12):
            session.send(Text(str(i)), timeout=30)
        blocked = time.monotonic() - start
        session.end_input()
        reader.join(60)
    # Capacity 2: the sender could run ahead of the 50 ms sleeps by a few frames only.
    assert blocked >= 0.2
    assert texts(out) == [str(i) for i in range(12)]


def test_skip_reports_the_frame_and_goes_on(executor: str) -> None:
    errors: list[zerohop.SkippedFrame] = []
    pipe = Pipeline("skip", executor=executor).node(  # type: ignore[arg-type]
        "boom", "Crash", mode="process_exception", after=1, on_error="skip"
    )
    with pipe.session(on_frame_error=errors.append) as session:
        out = session.run([Text("a"), Text("b"), Text("c")])
        assert session.frame_errors == errors
    assert texts(out) == ["a", "c"]
    (error,) = errors
    match error:
        case zerohop.SkippedFrame("boom", "ValueError: boom at frame 1", traceback, 1):
            assert "raise ValueError" in traceback
        case _:
            raise AssertionError(error)
    # The dicts events used to be still answer by key.
    assert (error["type"], error["node_id"], error.get("nope")) == ("frame_error", "boom", None)


def test_a_failing_node_is_named_and_ends_the_session(executor: str) -> None:
    pipe = (
        Pipeline("fail", executor=executor)  # type: ignore[arg-type]
        .node("first", "Echo")
        .node("boom", "Crash", mode="process_exception", after=2)
        .connect("first", "boom")
    )
    with pipe.session() as session, pytest.raises(NodeError) as info:
        session.run([Text(str(i)) for i in range(10)])
    assert info.value.node_id == "boom"
    assert "node 'boom' raised: ValueError: boom at frame 2" in str(info.value)
    assert "raise ValueError" in (info.value.traceback or "")


def test_a_node_that_fails_to_initialize_is_named(executor: str) -> None:
    pipe = Pipeline("init", executor=executor).node("bad", "Crash", mode="init_exception")  # type: ignore[arg-type]
    with pytest.raises(NodeInitError) as info:
        pipe.session()
    assert info.value.node_id == "bad"
    assert "RuntimeError: boom in initialize" in str(info.value)


def test_the_end_of_stream_flushes_every_node_once(executor: str) -> None:
    """`end_input` reaches every node after its last frame: `flush` emits there (Count
    emits only then), the end passes on, and the outputs end after the last frame."""
    pipe = (
        Pipeline("flush", executor=executor)  # type: ignore[arg-type]
        .node("rep", "Repeat", times=3)
        .node("count", "Count")
        .connect("rep", "count")
    )
    with pipe.session() as session:
        for i in range(7):
            session.send(Text(str(i)))
        with pytest.raises(ZerohopTimeoutError):
            session.recv(timeout=0.2)  # nothing before the end
        session.end_input()
        out = list(session.outputs(timeout=60))
        assert session.recv(timeout=60) is None  # ended, and stays ended
    assert [f.value for f in out if isinstance(f, Json)] == [{"count": 21}]


def test_fan_out_and_fan_in(executor: str) -> None:
    """One port to two nodes (each gets every frame), two ports by name, two inputs of
    one node fed by different nodes; the end of stream waits for both inputs."""
    pipe = (
        Pipeline("fan", executor=executor)  # type: ignore[arg-type]
        .node("split", "Split")
        .node("a", "Echo")
        .node("b", "Scale", factor=10)
        .node("join", "Join")
        .node("count", "Count")
        .connect("split", "a", from_port="even")
        .connect("split", "b", from_port="odd")
        .connect("a", "join", to_port="left")
        .connect("b", "join", to_port="right")
        .connect("b", "count")
    )
    out = pipe.run([Tensor(np.array([i], dtype=np.int64)) for i in range(10)])
    joined = sorted(
        (f.value["port"], f.value["value"][0])
        for f in out
        if isinstance(f, Json) and f.source == "join"
    )
    assert joined == sorted(
        [("left", i) for i in range(0, 10, 2)] + [("right", 10 * i) for i in range(1, 10, 2)]
    )
    counts = [f.value for f in out if isinstance(f, Json) and f.source == "count"]
    assert counts == [{"count": 5}]
    assert out[-1].source in ("join", "count")


def test_progress_then_ready_as_typed_events(executor: str) -> None:
    events: list[zerohop.Event] = []
    pipe = Pipeline("init", executor=executor).node("slow", "SlowInit", seconds=0.2, steps=2)  # type: ignore[arg-type]
    with pipe.session(on_progress=events.append):
        pass
    assert isinstance(events[-1], zerohop.Ready) and events[-1].node_id == "slow"
    messages = [e.message for e in events if isinstance(e, zerohop.Progress)]
    assert messages[:2] == ["loading part 1/2", "loading part 2/2"] and "loaded" in messages


def test_status_counts_frames_in_and_out(executor: str) -> None:
    pipe = (
        Pipeline("st", executor=executor)  # type: ignore[arg-type]
        .node("rep", "Repeat", times=2)
        .node("count", "Count")
        .connect("rep", "count")
    )
    with pipe.session() as session:
        session.run([Text(str(i)) for i in range(5)])
        status = {s.node_id: s for s in session.status()}
    assert all(isinstance(s, zerohop.NodeStatus) for s in status.values())
    assert (status["rep"].frames_in, status["rep"].frames_out) == (5, 10)
    assert (status["count"].frames_in, status["count"].frames_out) == (10, 1)


def test_metrics_count_frames_by_node_type(executor: str) -> None:
    """`Session.metrics()`: the names `zerohop serve` exposes, the same counts in both
    executors (node processes only where there are processes)."""
    pipe = (
        Pipeline("m", executor=executor)  # type: ignore[arg-type]
        .node("rep", "Repeat", times=2)
        .node("count", "Count")
        .connect("rep", "count")
    )
    with pipe.session() as session:
        session.run([Text(str(i)) for i in range(5)])
        lines = set(session.metrics().splitlines())
    processes = 2 if executor == "multiprocess" else 0
    for line in [
        "zerohop_sessions_active 1",
        f"zerohop_node_processes {processes}",
        'zerohop_frames_in_total{node_type="Repeat"} 5',
        'zerohop_frames_out_total{node_type="Repeat"} 10',
        'zerohop_frames_in_total{node_type="Count"} 10',
        'zerohop_frames_out_total{node_type="Count"} 1',
        "# EOF",
    ]:
        assert line in lines, (line, sorted(lines))


def test_a_closed_session_refuses_more_frames(executor: str) -> None:
    pipe = Pipeline("closed", executor=executor).node("a", "Echo")  # type: ignore[arg-type]
    session = pipe.session()
    session.close()
    with pytest.raises(zerohop.ChannelClosedError):
        session.send(Text("late"))


def test_outputs_inherit_their_inputs_metadata_in_both_executors(executor: str) -> None:
    """A new frame from a node gets its input's tags (and, same kind, its typed fields)
    unless the node set its own; native nodes keep them; both executors agree."""
    pipe = (
        Pipeline("tags", executor=executor)  # type: ignore[arg-type]
        .node("upper", "UpperCase")
        .node("tag", "Tag", key="by", value="tag")
        .node("pass", "PassThrough")
        .node("echo", "Echo")
        .connect("upper", "tag", "pass", "echo")
    )
    text = Text("hi", channel="ui", language="en", metadata={"turn": "1"})
    (out,) = pipe.run([text])
    assert isinstance(out, Text)
    assert (out.text, out.channel, out.language) == ("HI", "ui", "en")
    assert out.metadata == {"turn": "1", "by": "tag"}


def test_control_frames_pass_nodes_that_do_not_take_them(executor: str) -> None:
    """A control message reaches every node downstream, in order with the data: a node
    that does not list "control" in `accepts` (Python or native) passes it on unchanged;
    one that does gets it in `process`."""
    cancel = zerohop.Control(
        "cancel_speculation", from_timestamp=10, to_timestamp=20, segment_id="s1"
    )
    chain = (
        Pipeline("control", executor=executor)  # type: ignore[arg-type]
        .node("upper", "UpperCase")
        .node("pass", "PassThrough")
        .node("suffix", "Suffix")
        .connect("upper", "pass", "suffix")
    )
    out = chain.run([Text("a"), cancel, Text("b")])
    assert [type(f).__name__ for f in out] == ["Text", "Control", "Text"]
    assert texts([out[0], out[2]]) == ["A!", "B!"]
    control = out[1]
    assert isinstance(control, zerohop.Control)
    assert (control.action, control.segment_id, control.to_timestamp) == (
        "cancel_speculation",
        "s1",
        20,
    )
    taking = (
        Pipeline("control", executor=executor)  # type: ignore[arg-type]
        .node("take", "Cancellable")
        .node("pass", "PassThrough")
        .connect("take", "pass")
    )
    out = taking.run([Text("a"), cancel])
    assert [f.value if isinstance(f, Json) else f.text for f in out] == [  # type: ignore[attr-defined]
        "a",
        {"action": "cancel_speculation", "segment": "s1"},
    ]
