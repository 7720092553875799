"""Chaos: faults injected at random (seeded, reproducible) moments into real sessions.

Each scenario builds a small pipeline of test nodes, picks a victim, a fault (SIGKILL,
SIGSTOP, SIGSEGV from outside; an exception, a segfault, ``os._exit`` or SIGSTOP from
inside) and a moment (during init, mid-frame, while the pipeline is blocked on
backpressure, during close), and asserts: the session fails with the right error type
naming the victim, every node process is gone, and (the leak fixture) no fd, child
process or /dev/shm entry is left. A failing seed reruns alone with
``pytest tests/test_chaos.py -k 'scenario and [17]'``. 96 such scenarios, then the host
itself SIGKILLed at four moments and the zygote killed or frozen: 102 in all.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from conftest import PREFIX, shm_entries

import zerohop
from zerohop import (
    NodeCrashedError,
    NodeError,
    NodeFailure,
    NodeInitError,
    NodeUnresponsiveError,
    Pipeline,
    RuntimeConfig,
    Text,
    ZerohopError,
)

# Short deadlines keep the 100 scenarios quick: a frozen node is noticed after 3 s, a
# node that ignores stop is signalled after 0.5 s. Not shorter: on a loaded 2-core
# machine (load 6) a healthy node's heartbeat thread once went 1 s unscheduled and was
# taken for frozen, after its session had done its work.
CONFIG = RuntimeConfig.model_validate(
    {
        "channel": {"capacity": 4},
        "process": {
            "liveness_timeout_secs": 3.0,
            "heartbeat_secs": 0.2,
            "grace_period_secs": 0.5,
            "term_grace_secs": 0.5,
            "init_timeout_secs": 20.0,
        },
    }
)
DEADLINE = 15.0  # any single wait longer than this is a hang
# A whole scenario takes 1-3 s; one longer than this hung (a hang bound, not a speed
# test: a loaded CI machine must not fail it), and says so before pytest's 120 s timeout.
SCENARIO_HANG = 4 * DEADLINE

MOMENTS = ("init", "mid_frame", "backpressure", "close")
INSIDE = {  # Crash mode -> what the host must see
    "init": ("init_exception", "init_segfault"),
    "mid_frame": ("process_exception", "exit", "segfault", "sigkill", "sigstop"),
    "close": ("cleanup_exception", "cleanup_segfault"),
}
OUTSIDE = (signal.SIGKILL, signal.SIGSTOP, signal.SIGSEGV)


@dataclass(frozen=True)
class Scenario:
    seed: int
    moment: str
    length: int  # nodes in the chain
    victim: int  # index of the faulty node
    crash_mode: str | None  # fault from inside (a Crash node), or
    signal: int | None  # fault from outside (a signal to the victim)
    frames: int
    crash_after: int

    @classmethod
    def random(cls, seed: int) -> Scenario:
        rng = random.Random(seed)
        # The moment and the fault cycle with the seed (every pair is covered); the
        # pipeline, the victim and the frame the fault hits are random.
        moment = MOMENTS[seed % len(MOMENTS)]
        # A node frozen while initializing is the init timeout's case (test_session).
        signals = OUTSIDE[::2] if moment == "init" else OUTSIDE
        faults: list[str | signal.Signals] = [*INSIDE.get(moment, ()), *signals]
        fault = faults[(seed // len(MOMENTS)) % len(faults)]
        inside = isinstance(fault, str)
        # From outside during init, the victim is found as the zygote's one new child.
        length = 1 if moment == "init" and not inside else rng.randint(1, 3)
        frames = rng.randint(1, 8)
        return cls(
            seed=seed,
            moment=moment,
            length=length,
            victim=rng.randrange(length),
            crash_mode=fault if isinstance(fault, str) else None,
            signal=None if isinstance(fault, str) else fault,
            frames=frames,
            crash_after=rng.randrange(frames),
        )

    def node_id(self, index: int) -> str:
        return f"victim{index}" if index == self.victim else f"n{index}"

    def pipeline(self) -> Pipeline:
        pipe = Pipeline(f"chaos{self.seed}", config=CONFIG)
        for i in range(self.length):
            if i == self.victim and self.crash_mode is not None:
                pipe.node(self.node_id(i), "Crash", mode=self.crash_mode, after=self.crash_after)
            elif self.moment == "init":
                pipe.node(self.node_id(i), "SlowInit", seconds=1.0, steps=10)
            elif i == 0 and self.moment == "backpressure":
                pipe.node(self.node_id(i), "Repeat", times=50)  # floods what follows
            else:
                pipe.node(self.node_id(i), "Echo")
        if self.length > 1:
            pipe.connect(*(self.node_id(i) for i in range(self.length)))
        return pipe

    def expected(self) -> tuple[type[NodeFailure], Callable[[NodeFailure], bool]] | None:
        """The error the host must see (None: close must simply succeed)."""
        if self.moment == "close":
            return None
        if self.signal == signal.SIGSTOP or self.crash_mode == "sigstop":
            return NodeUnresponsiveError, lambda e: "liveness timeout" in str(e)
        if self.crash_mode == "init_exception":
            return NodeInitError, lambda e: "boom in initialize" in str(e)
        if self.crash_mode == "process_exception":
            return NodeError, lambda e: f"boom at frame {self.crash_after}" in str(e)
        if self.crash_mode == "exit":
            return NodeCrashedError, lambda e: getattr(e, "exit_code", None) == 3
        sig = {"sigkill": signal.SIGKILL}.get(self.crash_mode or "", self.signal or signal.SIGSEGV)
        return NodeCrashedError, lambda e: getattr(e, "signal", None) == sig


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _children(pid: int) -> list[int]:
    found = []
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as f:
            found += [int(p) for p in f.read().split()]
    return found


def _zygote() -> int:
    """This host's zygote (the warm-up session in conftest started it)."""
    for pid in _children(os.getpid()):
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            if b"zerohop.zygote" in f.read():
                return pid
    raise AssertionError("no zygote running")


def _wait_gone(pids: list[int]) -> list[int]:
    deadline = time.monotonic() + DEADLINE
    while (left := [p for p in pids if _alive(p)]) and time.monotonic() < deadline:
        time.sleep(0.02)
    return left


def _drain_until_failure(session: zerohop.Session, frames: int) -> BaseException | None:
    """Sends the frames (giving up once the session refuses), ends the input, and reads
    until the end or the session's failure."""
    try:
        for i in range(frames):
            session.send(Text(f"f{i}"), timeout=DEADLINE)
        session.end_input(timeout=DEADLINE)
    except ZerohopError:
        pass  # the failure itself is read below
    try:
        while session.recv(timeout=DEADLINE) is not None:
            pass
    except ZerohopError as err:
        return err
    return None


def run(scenario: Scenario) -> None:
    pipe = scenario.pipeline()
    expected = scenario.expected()
    error: BaseException | None = None
    pids: list[int] = []
    started = time.monotonic()
    zygote_children = set(_children(_zygote()))

    def on_progress(event: dict[str, object]) -> None:
        # SlowInit's own progress: the node is inside `initialize`, its channels open.
        # (A kill while iceoryx2 creates a channel can orphan one file: see the README.)
        if scenario.signal and "loading" in str(event.get("message")):
            for pid in set(_children(_zygote())) - zygote_children:
                os.kill(pid, scenario.signal)

    try:
        session = pipe.session(on_progress=on_progress)
    except NodeFailure as err:
        error = err
    else:
        pids = session.pids()
        victim_pid = pids[scenario.victim]
        with session:
            if scenario.moment == "close":
                session.run([Text(f"f{i}") for i in range(scenario.frames)])
                if scenario.signal is not None:
                    os.kill(victim_pid, scenario.signal)
            elif scenario.moment == "backpressure":
                # Nobody reads the outputs: Repeat fills every channel and blocks.
                session.send(Text("flood"), timeout=DEADLINE)
                session.send(Text("flood"), timeout=DEADLINE)
                time.sleep(0.2)
                os.kill(victim_pid, scenario.signal or signal.SIGKILL)
                error = _drain_until_failure(session, 0)
            elif scenario.signal is not None:
                # Mid-frame from outside: some frames through, then the fault.
                for i in range(scenario.crash_after):
                    session.send(Text(f"f{i}"), timeout=DEADLINE)
                    assert session.recv(timeout=DEADLINE) is not None
                os.kill(victim_pid, scenario.signal)
                error = _drain_until_failure(session, scenario.frames)
            else:
                error = _drain_until_failure(session, scenario.frames)
    elapsed = time.monotonic() - started
    assert elapsed < SCENARIO_HANG, f"scenario hung: {elapsed:.1f} s"
    if expected is None:
        assert error is None, f"close must succeed, got {error!r}"
    else:
        error_type, check = expected
        assert isinstance(error, error_type), f"expected {error_type.__name__}, got {error!r}"
        assert error.node_id == scenario.node_id(scenario.victim)
        assert f"'{scenario.node_id(scenario.victim)}'" in str(error)
        assert check(error), str(error)
    assert not _wait_gone(pids), "node processes outlived their session"
    deadline = time.monotonic() + DEADLINE
    while (extra := set(_children(_zygote())) - zygote_children) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not extra, f"node processes {extra} outlived their session"


@pytest.mark.parametrize("seed", range(96))
def test_scenario(seed: int) -> None:
    run(Scenario.random(seed))


def test_scenarios_cover_every_fault_and_moment() -> None:
    scenarios = [Scenario.random(seed) for seed in range(96)]
    assert {s.moment for s in scenarios} == set(MOMENTS)
    assert {s.signal for s in scenarios} >= set(OUTSIDE)
    assert {s.crash_mode for s in scenarios} >= {m for modes in INSIDE.values() for m in modes}
    assert {s.length for s in scenarios} == {1, 2, 3}


def test_backpressure_longer_than_the_liveness_timeout_is_not_a_freeze() -> None:
    """Nodes blocked on a full channel still send heartbeats: nothing fails, no frame
    is lost once the host reads again."""
    pipe = Pipeline("held", config=CONFIG).node("rep", "Repeat", times=30).node("e", "Echo")
    with pipe.connect("rep", "e").session() as session:
        session.send(Text("x"), timeout=DEADLINE)
        time.sleep(3 * CONFIG.process.liveness_timeout_secs)
        assert [s.state for s in session.status()] == ["processing", "processing"]
        session.end_input(timeout=DEADLINE)
        assert len(list(session.outputs(timeout=DEADLINE))) == 30


def test_a_busy_node_is_not_a_frozen_one() -> None:
    """A node computing (holding the GIL in Python) longer than the liveness timeout
    keeps its heartbeat going."""
    pipe = Pipeline("busy", config=CONFIG).node("burn", "BurnCPU", ms=1500)
    with pipe.session() as session:
        (out,) = session.run([Text("x")])
    assert out.value["cpu_ns"] >= 1.5e9  # type: ignore[attr-defined]


def test_liveness_can_be_turned_off() -> None:
    config = RuntimeConfig.model_validate(
        {"process": {**CONFIG.process.model_dump(), "liveness_timeout_secs": 0}}
    )
    assert config.process.liveness_timeout() is None
    with Pipeline("off", config=config).node("e", "Echo").session() as session:
        (pid,) = session.pids()
        os.kill(pid, signal.SIGSTOP)
        time.sleep(2 * CONFIG.process.liveness_timeout_secs)
        assert session.status()[0].state == "ready"  # nobody noticed: the check is off
    assert not _wait_gone([pid])


def test_liveness_timeout_must_exceed_heartbeats() -> None:
    with pytest.raises(ValueError, match="liveness_timeout_secs"):
        RuntimeConfig.model_validate(
            {"process": {"heartbeat_secs": 1.0, "liveness_timeout_secs": 1.5}}
        )


# ---------------------------------------------------------------- the host killed

HOST = textwrap.dedent(
    """
    import sys, time, zerohop
    moment = sys.argv[1]
    pipe = zerohop.Pipeline("host").node("a", "Repeat", times=50).node("b", "Echo")
    pipe = pipe.connect("a", "b")
    s = pipe.session()
    if moment in ("streaming", "backpressure"):
        for _ in range(3 if moment == "backpressure" else 1):
            s.send(zerohop.Text("x"))
        if moment == "streaming":
            s.recv()
    print(" ".join(map(str, s.pids())), flush=True)
    if moment == "closing":
        s.close()
    time.sleep(60)
    """
)


@pytest.mark.parametrize("moment", ["idle", "streaming", "backpressure", "closing"])
def test_host_killed(moment: str) -> None:
    """SIGKILL to the host: its zygote and nodes die, and the next session started on
    the machine reclaims the dead host's shared memory."""
    before = shm_entries()
    host = subprocess.Popen(
        [sys.executable, "-c", HOST, moment],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "ZEROHOP_SHM_PREFIX": PREFIX},
    )
    assert host.stdout is not None
    try:
        pids = [int(p) for p in host.stdout.readline().split()]
        assert len(pids) == 2
        zygotes = _children(host.pid)
        assert len(zygotes) == 1
        assert shm_entries() - before, "the host's session should own shared memory"
    finally:
        host.kill()
        host.wait(DEADLINE)
        host.stdout.close()
    assert not _wait_gone([*pids, *zygotes]), "processes outlived their killed host"
    # The next start (no explicit reclaim call) removes what the dead host left.
    with Pipeline("next").node("e", "Echo").session() as session:
        assert [f.text for f in session.run([Text("ok")])] == ["ok"]  # type: ignore[attr-defined]
    deadline = time.monotonic() + DEADLINE
    while (left := shm_entries() - before) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not left, f"the dead host's shared memory was not reclaimed: {sorted(left)}"


def _linger_threads() -> int:
    names = []
    for task in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{task}/comm") as f:
                names.append(f.read().strip())
        except OSError:
            continue
    return names.count("zerohop-linger")


@pytest.mark.parametrize("fault", [None, signal.SIGKILL, signal.SIGSTOP])
def test_close_under_backpressure_releases_everything_at_once(fault: signal.Signals | None) -> None:
    """Regression (found by the backpressure scenarios): closing a session whose input
    still held frames left the host's input sender lingering on a background thread, with
    its fds, after ``close`` returned. Inputs are now released after the nodes are gone."""
    for _ in range(5):
        pipe = Pipeline("held", config=CONFIG).node("rep", "Repeat", times=50).node("e", "Echo")
        with pipe.connect("rep", "e").session() as session:
            for _ in range(5):  # 1 in Repeat's hands, 4 queued in the input (capacity)
                session.send(Text("x"), timeout=DEADLINE)
            if fault is not None:
                os.kill(session.pids()[0], fault)
        assert _linger_threads() == 0


ZYGOTE_FAULT = textwrap.dedent(
    """
    import os, signal, sys, time, zerohop
    pipe = zerohop.Pipeline("z").node("e", "Echo")
    def run(text):
        try:
            with pipe.session() as s:
                return s.run([zerohop.Text(text)])[0].text
        except zerohop.ZerohopError as err:
            return f"{type(err).__name__}: {err}"
    print(run("before"), flush=True)
    zygote = int(sys.stdin.readline())
    os.kill(zygote, int(sys.argv[1]))
    print(run("during"), flush=True)
    print(run("after"), flush=True)
    """
)


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGSTOP])
def test_zygote_killed_or_frozen(sig: signal.Signals) -> None:
    """A dead zygote is replaced at the next session; a frozen one fails that session's
    spawn with an error naming the node (after the zygote's 10 s answer deadline), is
    killed, and the session after it runs on a fresh zygote."""
    host = subprocess.Popen(
        [sys.executable, "-c", ZYGOTE_FAULT, str(int(sig))],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert host.stdin is not None and host.stdout is not None
    try:
        assert host.stdout.readline().strip() == "before"
        (zygote,) = _children(host.pid)
        host.stdin.write(f"{zygote}\n")
        host.stdin.flush()
        during = host.stdout.readline().strip()
        after = host.stdout.readline().strip()
    finally:
        host.kill()
        host.wait(DEADLINE)
        host.stdin.close()
        host.stdout.close()
    if sig == signal.SIGKILL:
        assert during == "during"
    else:
        assert during.startswith("SpawnError: node 'e'") and "zygote" in during
    assert after == "after"
    assert not _wait_gone([zygote])
