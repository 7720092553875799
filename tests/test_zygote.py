"""The zygote (``python -m zerohop.zygote``), driven directly over its host socket the
way ``rust/supervisor/launch/zygote/`` drives it: spawn requests with fds attached, node
processes that run ``zerohop.runner``, exit reports, and their process hygiene."""

from __future__ import annotations

import array
import contextlib
import ctypes
import fcntl
import json
import os
import select
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

_LENGTH = struct.Struct("<I")
TESTS = Path(__file__).resolve().parent


def _frame(message: dict[str, Any]) -> bytes:
    body = json.dumps(message).encode()
    return _LENGTH.pack(len(body)) + body


class ZygoteClient:
    """The host's side of the zygote protocol (what the Rust launcher does)."""

    def __init__(self, target: str = "zerohop.runner", env: dict[str, str] | None = None) -> None:
        self.sock, remote = socket.socketpair()
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "zerohop.zygote", "--fd", str(remote.fileno())]
                + (["--for", target] if target != "zerohop.runner" else []),
                pass_fds=[remote.fileno()],
                env=env,
            )
        finally:
            remote.close()
        self.buffer = b""
        self.fds: list[int] = []
        self.exits: dict[int, dict[str, Any]] = {}
        self.pidfds: list[int] = []
        self.hello = self.reply(timeout=60)
        assert self.hello["type"] == "hello"

    def _read_one(self, deadline: float) -> dict[str, Any]:
        while True:
            if len(self.buffer) >= 4:
                (length,) = _LENGTH.unpack_from(self.buffer)
                if len(self.buffer) >= 4 + length:
                    body, self.buffer = self.buffer[4 : 4 + length], self.buffer[4 + length :]
                    return json.loads(body)  # type: ignore[no-any-return]
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([self.sock], [], [], remaining)[0]:
                raise TimeoutError("no message from the zygote")
            data, ancillary, _, _ = self.sock.recvmsg(65536, socket.CMSG_SPACE(8 * 4))
            for level, kind, payload in ancillary:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    fds = array.array("i")
                    fds.frombytes(payload[: len(payload) - len(payload) % 4])
                    self.fds.extend(fds)
            if not data:
                raise EOFError("the zygote closed its socket")
            self.buffer += data

    def reply(self, timeout: float = 10.0) -> dict[str, Any]:
        """The next message that is not an exit report."""
        deadline = time.monotonic() + timeout
        while True:
            message = self._read_one(deadline)
            if message["type"] == "exit":
                self.exits[message["serial"]] = message
            else:
                return message

    def spawn(
        self,
        control: socket.socket,
        *,
        cwd: str | None = None,
        env_set: dict[str, str] | None = None,
        env_unset: tuple[str, ...] = (),
        stdio: dict[int, int] | None = None,
    ) -> dict[str, Any]:
        stdio = stdio or {}
        request = {
            "type": "spawn",
            "cwd": os.fsencode(cwd).hex() if cwd is not None else None,
            "env_set": [[k.encode().hex(), v.encode().hex()] for k, v in (env_set or {}).items()],
            "env_unset": [k.encode().hex() for k in env_unset],
            "stdio": list(stdio),
        }
        fds = array.array("i", [control.fileno(), *stdio.values()])
        self.sock.sendmsg([_frame(request)], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fds)])
        reply = self.reply()
        assert reply["type"] == "spawned", reply
        reply["pidfd"] = self.fds.pop(0)
        self.pidfds.append(reply["pidfd"])
        return reply

    def wait_exit(self, serial: int, timeout: float = 10.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while serial not in self.exits:
            message = self._read_one(deadline)
            assert message["type"] == "exit", message
            self.exits[message["serial"]] = message
        return self.exits.pop(serial)

    def close(self) -> None:
        """EOF to the zygote: it exits, and its children die with it."""
        self.sock.close()
        try:
            self.proc.wait(10)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
        for pidfd in self.pidfds:
            assert _exited(pidfd, 10.0), "a zygote child outlived the zygote"
            os.close(pidfd)
        for fd in self.fds:
            os.close(fd)


@contextlib.contextmanager
def _pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    a, b = socket.socketpair()
    with a, b:
        yield a, b


def _exited(pidfd: int, timeout: float) -> bool:
    return bool(select.select([pidfd], [], [], timeout)[0])


@pytest.fixture
def zygote() -> Iterator[ZygoteClient]:
    client = ZygoteClient()
    try:
        yield client
    finally:
        client.close()


def _pgrep(pattern: str) -> set[int]:
    out = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True).stdout
    return {int(pid) for pid in out.split()}


def test_child_runs_the_runner_and_its_exit_is_reported(zygote: ZygoteClient) -> None:
    host, child = socket.socketpair()
    with host, child:
        reply = zygote.spawn(child)
        child.close()  # the runner has its own copy now
        # The runner exits with 2 when the first message is not `start`.
        host.sendall(_frame({"type": "hello"}))
        report = zygote.wait_exit(reply["serial"])
    assert report == {"type": "exit", "serial": reply["serial"], "pid": reply["pid"], "code": 2}
    assert _exited(reply["pidfd"], 5.0)


def test_child_runs_a_node_to_ready_and_stops(zygote: ZygoteClient) -> None:
    host, child = socket.socketpair()
    with host, child:
        host.sendall(_frame({"type": "start", "spec": _echo_spec()}))
        reply = zygote.spawn(child)
        child.close()
        reader = _Reader(host)
        assert reader.until_ready()["type"] == "ready"
        # Not at once: a stop that lands just as the runner enters signal.pause() in
        # _wait_for_stop is lost (a runner race, independent of the zygote).
        time.sleep(0.2)
        host.sendall(_frame({"type": "stop"}))
        assert reader.next()["type"] == "stopped"
        assert zygote.wait_exit(reply["serial"])["code"] == 0


def test_child_is_a_node_process_of_its_own(zygote: ZygoteClient) -> None:
    host, child = socket.socketpair()
    with host, child:
        reply = zygote.spawn(child)
        child.close()
        pid = reply["pid"]
        assert os.getpgid(pid) == pid, "leads its own process group"
        stat = Path(f"/proc/{pid}/stat").read_text()
        assert int(stat[stat.rindex(")") + 2 :].split()[1]) == zygote.proc.pid, (
            "child of the zygote"
        )
        # The child rewrites the command line it inherited first thing after the fork.
        deadline = time.monotonic() + 10
        while True:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().rstrip(b"\0").split(b"\0")
            if b"zerohop.runner" in cmdline or time.monotonic() > deadline:
                break
            time.sleep(0.01)
        assert cmdline == [os.fsencode(sys.executable), b"-m", b"zerohop.runner"]
        assert b"zerohop.runner" not in Path(f"/proc/{zygote.proc.pid}/cmdline").read_bytes()
        assert Path(f"/proc/{zygote.proc.pid}/comm").read_text() == "zerohop-zygote\n"
        assert Path(f"/proc/{pid}/comm").read_text() != "zerohop-zygote\n"
        if shutil.which("pgrep"):
            assert pid in _pgrep("zerohop.runner")
            assert zygote.proc.pid not in _pgrep("zerohop.runner")
            assert _pgrep("zerohop.zygote") & {pid, zygote.proc.pid} == {zygote.proc.pid}
        # Signals reach it through its group and are reported as signals.
        os.killpg(pid, signal.SIGTERM)
        report = zygote.wait_exit(reply["serial"])
    assert report["signal"] == signal.SIGTERM and "code" not in report


def test_children_die_with_the_zygote(zygote: ZygoteClient) -> None:
    pidfds = []
    with _pair() as (_host1, child1), _pair() as (_host2, child2):
        pidfds = [zygote.spawn(child1)["pidfd"], zygote.spawn(child2)["pidfd"]]
        time.sleep(0.2)  # let them reach their first read
        zygote.proc.kill()
        zygote.proc.wait(10)
        for pidfd in pidfds:
            assert _exited(pidfd, 5.0), "a child survived its zygote"


def test_zygote_exits_when_the_host_closes(zygote: ZygoteClient) -> None:
    zygote.sock.shutdown(socket.SHUT_WR)
    assert zygote.proc.wait(10) == 0


def test_zygote_ignores_sigint_and_is_single_threaded(zygote: ZygoteClient) -> None:
    os.kill(zygote.proc.pid, signal.SIGINT)
    time.sleep(0.2)
    assert zygote.proc.poll() is None
    # numpy's OpenBLAS pool may exist until the first fork (its atfork handler stops it).
    with _pair() as (_host, child):
        zygote.spawn(child)
    assert len(os.listdir(f"/proc/{zygote.proc.pid}/task")) == 1


def test_rejects_a_request_without_its_fds(zygote: ZygoteClient) -> None:
    zygote.sock.sendall(_frame({"type": "spawn", "stdio": []}))
    assert zygote.reply()["type"] == "spawn_error"
    zygote.sock.sendall(_frame({"type": "frobnicate"}))
    assert "frobnicate" in zygote.reply()["error"]


# ---------------------------------------------------------------------- child state

_PR_GET_PDEATHSIG = 2


def main() -> int:
    """Runs in a zygote child in place of zerohop.runner (``--for test_zygote``): reports
    what the child looks like, then exits with the code the test sends."""
    from zerohop.runner import Control

    pdeathsig = ctypes.c_int(0)
    ctypes.CDLL(None).prctl(_PR_GET_PDEATHSIG, ctypes.byref(pdeathsig), 0, 0, 0)
    open_fds = []
    for fd in range(256):
        try:
            fcntl.fcntl(fd, fcntl.F_GETFD)
        except OSError:
            continue
        open_fds.append(fd)
    control = Control()
    control.send(
        {
            "pid": os.getpid(),
            "ppid": os.getppid(),
            "pgid": os.getpgid(0),
            "cwd": os.getcwd(),
            "env": {k: os.environ.get(k) for k in ("ZYGOTE_SET", "ZYGOTE_UNSET", "ZYGOTE_KEEP")},
            "fds": open_fds,
            "fd3_inheritable": os.get_inheritable(3),
            "sigchld_default": signal.getsignal(signal.SIGCHLD) == signal.SIG_DFL,
            "sigint_default": signal.getsignal(signal.SIGINT) is signal.default_int_handler,
            "pdeathsig": pdeathsig.value,
            "threads": len(os.listdir("/proc/self/task")),
            "argv0": sys.argv[0],
            "sys_path0": sys.path[0],
        }
    )
    print("hello from the child", flush=True)
    message = control.read()
    return int(message["exit"]) if message else 1


def test_child_starts_clean(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]),
    }
    env.update(ZYGOTE_UNSET="x", ZYGOTE_KEEP="kept")
    client = ZygoteClient(target="test_zygote", env=env)
    try:
        out_r, out_w = os.pipe()
        with _pair() as (host, child), os.fdopen(out_r, "rb") as out:
            try:
                reply = client.spawn(
                    child,
                    cwd=str(tmp_path),
                    env_set={"ZYGOTE_SET": "yes"},
                    env_unset=("ZYGOTE_UNSET",),
                    stdio={1: out_w},
                )
            finally:
                os.close(out_w)
            child.close()
            host.settimeout(10)
            state = _Reader(host).next()
            host.sendall(_frame({"exit": 7}))
            assert client.wait_exit(reply["serial"])["code"] == 7
            assert out.read() == b"hello from the child\n", "stdout is the fd the host passed"
    finally:
        client.close()
    assert state["pid"] == reply["pid"] == state["pgid"]
    assert state["ppid"] == client.proc.pid
    assert state["cwd"] == os.path.realpath(tmp_path)
    assert state["env"] == {"ZYGOTE_SET": "yes", "ZYGOTE_UNSET": None, "ZYGOTE_KEEP": "kept"}
    assert state["fds"] == [0, 1, 2, 3], "nothing of the zygote's leaks into a node"
    assert state["fd3_inheritable"]
    assert state["sigchld_default"] and state["sigint_default"]
    assert state["pdeathsig"] == signal.SIGKILL
    assert state["threads"] == 1
    assert Path(state["argv0"]).resolve() == Path(__file__).resolve()
    assert state["sys_path0"] == os.path.realpath(tmp_path), "`-m` puts the cwd first"


# ---------------------------------------------------------------------- timing


def _echo_spec() -> dict[str, Any]:
    return {
        "session_id": "zygote-test",
        "node_id": "echo",
        "node_type": "Echo",
        "params": {},
        "inputs": [],
        "outputs": [],
        "channel": {
            "capacity": 4,
            "max_payload": 4096,
            "initial_payload": 4096,
            "max_borrowed": 1,
            "max_loans": 1,
        },
        "on_error": "fail",
        "heartbeat_secs": 1.0,
        "imports": [],
        "sys_path": [],
    }


class _Reader:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""

    def next(self) -> dict[str, Any]:
        """The next runner message; liveness heartbeats (``alive``) are skipped."""
        while True:
            if len(self.buffer) >= 4:
                (length,) = _LENGTH.unpack_from(self.buffer)
                if len(self.buffer) >= 4 + length:
                    body, self.buffer = self.buffer[4 : 4 + length], self.buffer[4 + length :]
                    message: dict[str, Any] = json.loads(body)
                    if message.get("type") != "alive":
                        return message
                    continue
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError
            self.buffer += chunk

    def until_ready(self) -> dict[str, Any]:
        """The first message after any init heartbeats (``progress`` once init has taken
        a heartbeat interval: a loaded machine makes even Echo's start take that long)."""
        while (message := self.next())["type"] == "progress":
            pass
        return message


def _exec_ready() -> float:
    """Seconds from starting `python -m zerohop.runner` (exec) to its `ready`."""
    host, child = socket.socketpair()
    with host, child:
        host.sendall(_frame({"type": "start", "spec": _echo_spec()}))
        started = time.perf_counter()
        # bash, not sh: dash takes single-digit fds only.
        proc = subprocess.Popen(
            ["bash", "-c", f'exec "$0" -m zerohop.runner 3<&{child.fileno()}', sys.executable],
            pass_fds=[child.fileno()],
        )
        child.close()
        reader = _Reader(host)
        assert reader.until_ready()["type"] == "ready"
        elapsed = time.perf_counter() - started
    assert proc.wait(10) == 1  # EOF on its control socket
    return elapsed


@pytest.mark.slow
def test_measure_spawn_latency(zygote: ZygoteClient) -> None:
    """Prints spawn → pid reply, spawn → first control message handled (the runner's
    exit after a non-start message), spawn → ready (Echo), and exec → ready."""
    to_pid, to_first, to_ready = [], [], []
    for _ in range(20):
        with _pair() as (host, child):
            host.sendall(_frame({"type": "not-start"}))
            started = time.perf_counter()
            reply = zygote.spawn(child)
            to_pid.append(time.perf_counter() - started)
            child.close()
            zygote.wait_exit(reply["serial"])
            to_first.append(time.perf_counter() - started)
        with _pair() as (host, child):
            host.sendall(_frame({"type": "start", "spec": _echo_spec()}))
            started = time.perf_counter()
            reply = zygote.spawn(child)
            child.close()
            reader = _Reader(host)
            assert reader.until_ready()["type"] == "ready"
            to_ready.append(time.perf_counter() - started)
        # EOF on its control socket: the runner exits (no stop race, see above).
        assert zygote.wait_exit(reply["serial"])["code"] == 1
    exec_ready = [_exec_ready() for _ in range(5)]

    def show(name: str, values: list[float]) -> str:
        ms = sorted(v * 1000 for v in values)
        return f"{name}: p50 {statistics.median(ms):.1f} ms, max {ms[-1]:.1f} ms"

    print()
    for name, values in [
        ("zygote spawn -> pid", to_pid),
        ("zygote spawn -> first message read (exit reported)", to_first),
        ("zygote spawn -> ready", to_ready),
        ("exec spawn -> ready", exec_ready),
    ]:
        print(show(name, values))
    assert statistics.median(to_ready) < statistics.median(exec_ready)
