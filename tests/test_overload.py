"""Overload: a node too slow for its input, more processes than the cap, many sessions.

Backpressure must hold end to end: a slow node makes everything upstream wait (down to
the host's ``send``), memory stays flat however much is pushed, and every frame arrives,
in order. A session refused for its size must not disturb the sessions already running.
"""

from __future__ import annotations

import os
import statistics
import threading
import time

import numpy as np
import pytest
from test_session import runner_pids

from zerohop import Pipeline, ResourceLimitError, RuntimeConfig, Tensor, Text

DEADLINE = 30.0


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGESIZE") / 2**20


def test_slow_node_blocks_upstream_without_growth_or_loss() -> None:
    frames, floats = 300, 64 << 10  # 300 frames of 256 KiB: 75 MiB pushed
    config = RuntimeConfig.model_validate({"channel": {"capacity": 4}})
    pipe = (
        Pipeline("slow", config=config)
        .node("fast", "Echo")
        .node("slow", "Slow", ms=3)
        .node("after", "Echo")
        .connect("fast", "slow", "after")
    )
    received = 0
    ahead: list[int] = []  # frames sent but not yet received, at each send's return
    peak_rss = [0.0]
    done = threading.Event()

    def watch_memory() -> None:
        while not done.wait(0.05):
            peak_rss[0] = max(peak_rss[0], _rss_mib())

    with pipe.session() as session:
        rss_before = _rss_mib()
        watcher = threading.Thread(target=watch_memory)
        watcher.start()

        def feed() -> None:
            block = np.zeros(floats, dtype=np.float32)
            for i in range(frames):
                block[0] = i
                session.send(Tensor(block), timeout=DEADLINE)
                ahead.append(i + 1 - received)
            session.end_input(timeout=DEADLINE)

        feeder = threading.Thread(target=feed)
        feeder.start()
        try:
            values = []
            for frame in session.outputs(timeout=DEADLINE):
                values.append(int(frame.array[0]))  # type: ignore[attr-defined]
                received += 1
        finally:
            feeder.join(DEADLINE)
            done.set()
            watcher.join()
        node_rss = [s.rss_bytes or 0 for s in session.status()]
    # No frame dropped, duplicated or reordered: the payload's own sequence, end to end.
    assert values == list(range(frames))
    # The host could never run more than the channels hold ahead of the slow node:
    # 4 queues of 4 plus a frame in each node's hands, far below 300.
    assert max(ahead) <= 4 * 4 + 3 + 2, f"the host ran {max(ahead)} frames ahead"
    # 75 MiB went through; the host kept none of it.
    assert peak_rss[0] - rss_before < 40, f"host RSS grew {peak_rss[0] - rss_before:.0f} MiB"
    assert max(node_rss) < 400 << 20


def _round_trips(session: object, count: int) -> list[float]:
    times = []
    for i in range(count):
        start = time.perf_counter()
        session.send(Text(f"ping{i}"), timeout=DEADLINE)  # type: ignore[attr-defined]
        frame = session.recv(timeout=DEADLINE)  # type: ignore[attr-defined]
        times.append(time.perf_counter() - start)
        assert frame.text == f"ping{i}"
    return times


def test_over_the_process_cap_is_refused_while_others_keep_working() -> None:
    config = RuntimeConfig.model_validate({"process": {"max_processes_per_session": 2}})
    small = Pipeline("small", config=config).node("a", "Echo").node("b", "Echo").connect("a", "b")
    big = (
        Pipeline("big", config=config)
        .node("a", "Echo")
        .node("b", "Echo")
        .node("c", "Echo")
        .connect("a", "b", "c")
    )
    with small.session() as running:
        before = _round_trips(running, 30)
        processes = len(runner_pids())
        for _ in range(5):
            with pytest.raises(ResourceLimitError, match="needs 3 node processes, the limit is 2"):
                big.session()
            assert len(runner_pids()) == processes  # refused before anything was spawned
        after = _round_trips(running, 30)
    slack = max(5 * statistics.median(before), statistics.median(before) + 0.05)
    assert statistics.median(after) <= slack


def test_ten_sessions_at_once() -> None:
    """Ten sessions stream concurrently; each gets exactly its own frames back."""
    results: dict[int, list[str]] = {}
    errors: list[BaseException] = []

    def one(index: int) -> None:
        try:
            pipe = (
                Pipeline(f"s{index}")
                .node("up", "UpperCase")
                .node("sfx", "Suffix", suffix=f"-{index}")
            )
            with pipe.connect("up", "sfx").session() as session:
                out = session.run([Text(f"m{k}") for k in range(50)])
            results[index] = [f.text for f in out]  # type: ignore[attr-defined]
        except BaseException as err:
            errors.append(err)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    assert results == {i: [f"M{k}-{i}" for k in range(50)] for i in range(10)}
