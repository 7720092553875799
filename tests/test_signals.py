"""Every way out of ``zerohop run`` and ``zerohop serve`` is clean: SIGTERM (what
``timeout``, ``docker stop`` and systemd send), SIGHUP (a closed terminal) and SIGINT
end them with their sessions closed, no node process left and nothing of theirs in
/dev/shm — during node start-up and mid-run.

Each command runs with its own ``ZEROHOP_SHM_PREFIX``, so what it leaves in /dev/shm
is told apart from everything else on the machine."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from remotemedia import descendants, exited_clean, start_server, wait_until

import zerohop
from zerohop.client import Client

ROOT = Path(__file__).resolve().parent.parent
SIGNALS = [signal.SIGTERM, signal.SIGHUP, signal.SIGINT]


def shm_of(prefix: str) -> list[str]:
    """What a run with ``prefix`` left in /dev/shm, but for iceoryx2's one management
    segment per prefix (``...global_mgmt``), which every run leaves for the next one
    with the same prefix, signalled or not."""
    return sorted(
        p.name
        for p in Path("/dev/shm").iterdir()
        if p.name.startswith(prefix) and not p.name.endswith(".global_mgmt")
    )


@pytest.fixture
def env(tmp_path: Path) -> Iterator[dict[str, str]]:
    """A runtime.toml with the opt-in slow nodes and a 1 s drain (serve's SIGTERM
    drains: its never-ending stream is stopped after that), and a /dev/shm prefix of
    its own."""
    config = tmp_path / "runtime.toml"
    config.write_text('[nodes]\nmodules = ["zerohop.testing"]\n[server]\ndrain_timeout_secs = 1\n')
    prefix = f"zs{uuid.uuid4().hex[:8]}_"
    yield {**os.environ, "ZEROHOP_CONFIG": str(config), "ZEROHOP_SHM_PREFIX": prefix}
    # Whatever a failed assertion left is not the next test's leak.
    for path in Path("/dev/shm").glob(f"{prefix}*"):
        path.unlink(missing_ok=True)


def manifest(tmp_path: Path, *nodes: tuple[str, str, dict[str, object]]) -> Path:
    path = tmp_path / "pipeline.json"
    doc = {
        "version": "v1",
        "nodes": [{"id": i, "node_type": t, "params": p} for i, t, p in nodes],
        "connections": [{"from": a[0], "to": b[0]} for a, b in itertools.pairwise(nodes)],
    }
    path.write_text(json.dumps(doc))
    return path


def runners(pid: int) -> set[int]:
    found = set()
    for child in descendants(pid):
        try:
            if "zerohop.runner" in Path(f"/proc/{child}/cmdline").read_text():
                found.add(child)
        except OSError:
            pass
    return found


def wait_for_line(stream: object, needle: str, lines: list[str]) -> None:
    """Reads ``stream`` (a text pipe) until a line holds ``needle``, keeping every line."""
    deadline = time.monotonic() + 60
    for line in stream:  # type: ignore[attr-defined]
        lines.append(line)
        if needle in line:
            return
        assert time.monotonic() < deadline, lines
    raise AssertionError(f"{needle!r} never came: {lines}")


def assert_clean_exit(
    proc: subprocess.Popen[str], below: set[int], prefix: str, code: int, lines: list[str]
) -> str:
    try:
        proc.wait(timeout=60)  # a hang bound
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.stderr is not None
    rest = proc.stderr.read()
    proc.stderr.close()
    err = "".join(lines) + rest
    assert proc.returncode == code, err
    assert "Traceback" not in err, err
    gone = wait_until(lambda: not any(Path(f"/proc/{p}").exists() for p in below), 10.0)
    assert gone is not None, f"processes left: {below}"
    assert shm_of(prefix) == [], err
    return err


@pytest.mark.parametrize("sig", SIGNALS, ids=lambda s: s.name)
@pytest.mark.parametrize("moment", ["init", "mid-run"])
def test_run_leaves_nothing_behind(
    tmp_path: Path, env: dict[str, str], sig: signal.Signals, moment: str
) -> None:
    if moment == "init":
        path = manifest(tmp_path, ("a", "Echo", {}), ("load", "SlowInit", {"seconds": 30}))
    else:
        path = manifest(tmp_path, ("a", "Echo", {}), ("slow", "Slow", {"ms": 50}))
    proc = subprocess.Popen(
        [sys.executable, "-m", "zerohop.cli", "run", str(path), "--input", "-"],
        stdin=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        env={**env, "COLUMNS": "200"},
        cwd=ROOT,
    )
    assert proc.stdin is not None and proc.stderr is not None
    # `run` reads its whole input before anything starts: 200 lines through a 50 ms
    # node are 10 s of work, long enough to be stopped in the middle.
    proc.stdin.write("hello\n" * 200)
    proc.stdin.close()
    lines: list[str] = []
    if moment == "init":
        # Both node processes up; SlowInit takes 30 s to be ready.
        assert wait_until(lambda: len(runners(proc.pid)) == 2, 60.0) is not None
        time.sleep(0.5)
    else:
        wait_for_line(proc.stderr, "slow:", lines)
    below = descendants(proc.pid)
    assert runners(proc.pid), "no node process running"
    proc.send_signal(sig)
    err = assert_clean_exit(proc, below, env["ZEROHOP_SHM_PREFIX"], 128 + sig, lines)
    expected = "interrupted" if sig == signal.SIGINT else f"stopped by {sig.name}"
    assert f"zerohop: {expected}" in err, err


@pytest.mark.usefixtures("grpc_sockets_closed")
@pytest.mark.parametrize("sig", SIGNALS, ids=lambda s: s.name)
def test_serve_leaves_nothing_behind(
    tmp_path: Path, env: dict[str, str], sig: signal.Signals
) -> None:
    proc, server = start_server(Path(env["ZEROHOP_CONFIG"]), None, env)
    m = {
        "version": "v1",
        "nodes": [{"id": "a", "node_type": "Echo"}, {"id": "b", "node_type": "Slow"}],
        "connections": [{"from": "a", "to": "b"}],
    }
    streaming = threading.Event()
    ended: list[BaseException | None] = []

    def frames() -> Iterator[zerohop.Frame]:
        while True:
            yield zerohop.Text("x")
            time.sleep(0.02)

    def stream() -> None:
        try:
            with Client(server.address) as client:
                for i, _ in enumerate(client.stream(m, frames())):
                    if i == 5:
                        streaming.set()
            ended.append(None)
        except BaseException as err:
            ended.append(err)

    client = threading.Thread(target=stream, daemon=True)
    client.start()
    assert streaming.wait(60), ended
    below = descendants(proc.pid)
    assert runners(proc.pid)
    proc.send_signal(sig)
    exited_clean(proc, below)
    client.join(60)
    assert shm_of(env["ZEROHOP_SHM_PREFIX"]) == []
