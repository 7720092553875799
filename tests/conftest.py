"""Shared fixtures. Every test runs under a leak check: no child process, file
descriptor or /dev/shm entry it created may outlive it."""

from __future__ import annotations

import gc
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import zerohop.testing  # noqa: F401  (the fault injectors, opt-in: registered for the tests)

SHM = Path("/dev/shm")
# This run's own iceoryx2 file prefix (inherited by every node process): concurrent test
# runs on one machine neither see each other's channels nor count each other's files.
PREFIX = os.environ.setdefault("ZEROHOP_SHM_PREFIX", f"zh{os.getpid()}_")


def child_pids() -> set[int]:
    """Live (non-zombie) children of this process."""
    pids: set[int] = set()
    for task in Path(f"/proc/{os.getpid()}/task").iterdir():
        try:
            pids.update(int(p) for p in (task / "children").read_text().split())
        except OSError:
            continue
    return pids


def open_fds() -> set[int]:
    return {int(fd) for fd in os.listdir("/proc/self/fd")}


def shm_entries() -> set[str]:
    """This run's entries in /dev/shm (iceoryx2's, by prefix, and multiprocessing's)."""
    if not SHM.is_dir():
        return set()
    return {p.name for p in SHM.iterdir() if p.name.startswith((PREFIX, "psm_", "wnsm_"))}


def _wait_until(condition: object, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if callable(condition) and condition():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)


@pytest.fixture(scope="session", autouse=True)
def _warm_up() -> Iterator[None]:
    """Creates the process-wide singletons once (the iceoryx2 node, multiprocessing's
    resource tracker), so the leak check below does not count them against a test."""
    from multiprocessing import resource_tracker

    import zerohop

    resource_tracker.ensure_running()
    with zerohop.Sender(f"warmup-{os.getpid()}") as tx, zerohop.Receiver(f"warmup-{os.getpid()}"):
        del tx
    # The zygote (one per host process) lives as long as this process: start it now.
    if zerohop.load_config().process.spawn_method == "zygote":
        with zerohop.Pipeline("warmup").node("echo", "Echo").session() as session:
            session.run([zerohop.Text("warm")])
    yield
    # iceoryx2 keeps one management segment per prefix for the machine's lifetime; this
    # run's prefix is never used again.
    for entry in SHM.glob(f"{PREFIX}*global_mgmt"):
        entry.unlink(missing_ok=True)


@pytest.fixture(autouse=True)
def no_leaks(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fails a test that leaves a child process, an fd or a /dev/shm entry behind."""
    if request.node.get_closest_marker("allow_leaks"):
        yield
        return
    children, fds, shm = child_pids(), open_fds(), shm_entries()
    yield
    # Unreachable cycles (an exception's traceback holding a session) are garbage,
    # not leaks: collect them before judging.
    gc.collect()
    # Give exiting children and asynchronous teardown a bounded moment.
    _wait_until(lambda: not (child_pids() - children), 10.0)
    _wait_until(lambda: not (shm_entries() - shm), 5.0)
    leaked = {
        "child processes": sorted(child_pids() - children),
        "file descriptors": sorted(open_fds() - fds),
        "/dev/shm entries": sorted(shm_entries() - shm),
    }
    leaked = {k: v for k, v in leaked.items() if v}
    if leaked:
        details = {k: v for k, v in leaked.items()}
        if "file descriptors" in details:
            details["file descriptors"] = [
                f"{fd}->{_describe_fd(fd)}" for fd in leaked["file descriptors"]
            ]
        pytest.fail(f"test leaked resources: {details}", pytrace=False)


def _sockets() -> set[int]:
    found = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}").startswith("socket:"):
                found.add(int(fd))
        except OSError:
            pass
    return found


@pytest.fixture(scope="module")
def _grpc_core() -> Iterator[None]:
    """grpcio starts its core (an epoll fd, an eventfd, threads) with the first channel
    and shuts it down from its own thread a moment after the last one closes: a gRPC
    test that starts it again would seem to leak those fds. One idle channel (never
    used, so it never connects) keeps the core up through a gRPC test module, and only
    that module: a live core makes eventfds of its own now and then, which a later
    module's leak check would count."""
    import grpc

    channel = grpc.insecure_channel("127.0.0.1:9")
    yield
    channel.close()


@pytest.fixture
def grpc_sockets_closed(_grpc_core: None) -> Iterator[None]:
    """grpcio closes a closed channel's sockets from its own threads, a moment later:
    give it that moment before the leak check counts file descriptors (gRPC test
    modules use it with ``pytestmark = pytest.mark.usefixtures(...)``)."""
    before = _sockets()
    yield
    _wait_until(lambda: _sockets() <= before, 5.0)


def _describe_fd(fd: int) -> str:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return "?"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "allow_leaks: skip the leak check (a test that checks it itself)"
    )
    config.addinivalue_line("markers", "slow: long-running; deselect with -m 'not slow'")
