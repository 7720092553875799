"""A host that forks after it ran a session (``os.fork``, ``multiprocessing``'s fork start
method, the default on Linux before Python 3.14): the child starts sessions of its own,
the parent keeps working, and neither leaves anything behind (``rust/fork.rs``)."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import time
import traceback
import warnings
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import pytest

from zerohop import Pipeline, RuntimeConfig, Text

#: A hang bound, not a run time: a child that has not finished by then is stuck.
HANG_BOUND = 60.0

SPAWN_METHODS = ["exec", "zygote"]


def config(spawn_method: str) -> RuntimeConfig:
    return RuntimeConfig.model_validate({"process": {"spawn_method": spawn_method}})


def echo(name: str, spawn_method: str) -> Pipeline:
    return Pipeline(name, config=config(spawn_method)).node("e", "Echo")


def _children_named(word: str) -> list[int]:
    """Live children of this process whose command line contains ``word``."""
    found = []
    for task in Path(f"/proc/{os.getpid()}/task").iterdir():
        try:
            pids = [int(p) for p in (task / "children").read_text().split()]
        except OSError:
            continue
        for pid in pids:
            try:
                if word.encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                    found.append(pid)
            except OSError:
                continue
    return found


def session_in_child(spawn_method: str) -> list[int]:
    """Runs a frame through a new session; returns the processes this process started
    for it (its node processes and any zygote), for the parent to see them gone."""
    with echo("child", spawn_method).session() as session:
        started = session.pids()
        out = session.run([Text("from the child")])
    assert [f.text for f in out if isinstance(f, Text)] == ["from the child"]
    return started + _children_named("zerohop.zygote")


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _wait_until(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def _fork() -> int:
    # Python 3.12+ warns that forking a multi-threaded process may deadlock the child:
    # exactly what this test is about.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return os.fork()


def _wait_for_child(pid: int) -> int:
    """The forked child's exit code; kills it and fails if it hangs."""
    deadline = time.monotonic() + HANG_BOUND
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            pytest.fail(f"the forked child did not finish within {HANG_BOUND:.0f} s (hang)")
        time.sleep(0.05)


def _assert_gone(pids: list[int]) -> None:
    assert pids, "the child reported no processes"
    assert _wait_until(lambda: not any(_alive(p) for p in pids), 10.0), [
        p for p in pids if _alive(p)
    ]


def zygotes() -> list[int]:
    return sorted(_children_named("zerohop.zygote"))


@pytest.mark.parametrize("spawn_method", SPAWN_METHODS)
def test_a_forked_host_starts_sessions_of_its_own(spawn_method: str) -> None:
    assert echo("parent", spawn_method).run([Text("before")])[0].text == "before"
    parents_zygote = zygotes()
    read_end, write_end = os.pipe()
    pid = _fork()
    if pid == 0:  # the child: never returns into pytest
        code = 1
        try:
            os.close(read_end)
            os.write(write_end, json.dumps(session_in_child(spawn_method)).encode())
            code = 0
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(code)
    os.close(write_end)
    try:
        assert _wait_for_child(pid) == 0
        with os.fdopen(read_end, "rb") as reader:
            read_end = -1
            started = json.loads(reader.read())
    finally:
        if read_end >= 0:
            os.close(read_end)
    _assert_gone(started)
    # The parent's spawner, zygote and iceoryx2 node were left alone.
    assert echo("parent", spawn_method).run([Text("after")])[0].text == "after"
    assert zygotes() == parents_zygote


def _target(spawn_method: str, results: Connection) -> None:
    results.send(session_in_child(spawn_method))


def test_a_multiprocessing_fork_child_runs_a_session() -> None:
    assert echo("parent", "zygote").run([Text("before")])[0].text == "before"
    context = multiprocessing.get_context("fork")
    reader, writer = context.Pipe(duplex=False)
    process = context.Process(target=_target, args=("zygote", writer))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        process.start()
    writer.close()
    started: Any = None
    try:
        process.join(HANG_BOUND)
        if process.is_alive():
            process.kill()
            process.join()
            pytest.fail(f"the forked child did not finish within {HANG_BOUND:.0f} s (hang)")
        assert process.exitcode == 0
        started = reader.recv()
    finally:
        process.close()
        reader.close()
    _assert_gone(started)


@pytest.mark.parametrize("spawn_method", SPAWN_METHODS)
def test_a_session_open_at_fork_stays_the_parents(spawn_method: str) -> None:
    with echo("parent", spawn_method).session() as session:
        session.send(Text("before"))
        assert session.recv(timeout=HANG_BOUND).text == "before"
        pid = _fork()
        if pid == 0:  # the child: closing its copy must not touch the parent's session
            code = 1
            try:
                session.close()
                code = 0
            except BaseException:
                traceback.print_exc()
            finally:
                os._exit(code)
        assert _wait_for_child(pid) == 0
        session.send(Text("after"))
        assert session.recv(timeout=HANG_BOUND).text == "after"
        assert {node.state for node in session.status()} <= {"ready", "processing"}
