"""``python -m zerohop.runner``: the entry point of every node process.

The supervisor starts this module with a control socket as fd 3 and sends one
``start`` message describing the node and its channels. The runner then:

1. imports what the host asked for and resolves the node type through the registry;
2. opens its channels, validates params, runs ``initialize`` while a heartbeat thread
   reports progress at least every ``heartbeat_secs``; reports ``ready`` (or
   ``init_error`` with the traceback); from then on the same thread sends ``alive``
   every ``heartbeat_secs``, so the host can tell a frozen process from a busy one;
3. loops receive → ``process`` → send until told to stop; at the end of every input it
   calls ``flush`` and passes the end of stream on;
4. on ``stop``: finishes the frame in hand, runs ``cleanup``, closes its channels and
   exits 0. If the host dies, the control socket reaches EOF and the runner exits at
   once (PR_SET_PDEATHSIG covers the rest).

Messages on the control socket are length-prefixed JSON; their vocabulary is defined on
the Rust side in ``rust/supervisor/host_to_runner.rs`` and ``runner_to_host.rs``.
"""

from __future__ import annotations

import collections
import contextlib
import importlib
import json
import os
import runpy
import selectors
import signal
import socket
import struct
import sys
import threading
import time
import traceback
from collections.abc import Iterator
from typing import Any

# zerohop's own modules load here, once (not per frame); the user's node modules load
# in `Runner.run`, after sys.path and the host's imports are set up.
from . import _native, channel
from .cancel import CancelRequested, Discards, Notice
from .data import Frame, from_raw
from .errors import ChannelClosedError
from .node_loop import NodeFailed, NodeLoop, Stopped, describe
from .registry import node_class, register_node, use_modules
from .threads import budget_cpus

CONTROL_FD = 3
#: The longest a node waits for the notice of a marker it met first (as the Rust side).
NOTICE_WAIT = 5.0
_LENGTH = struct.Struct("<I")


class Control:
    """The runner's end of the control socket (thread-safe writes)."""

    def __init__(self, fd: int = CONTROL_FD) -> None:
        self.sock = socket.socket(fileno=fd)
        self.sock.setblocking(True)
        self._write_lock = threading.Lock()
        self._buffer = b""

    def send(self, message: dict[str, Any]) -> None:
        body = json.dumps(message).encode()
        with self._write_lock:
            self.sock.sendall(_LENGTH.pack(len(body)) + body)

    def read(self) -> dict[str, Any] | None:
        """The next message, or None at EOF (the host is gone)."""
        while True:
            if len(self._buffer) >= 4:
                (length,) = _LENGTH.unpack_from(self._buffer)
                if len(self._buffer) >= 4 + length:
                    body = self._buffer[4 : 4 + length]
                    self._buffer = self._buffer[4 + length :]
                    return json.loads(body)  # type: ignore[no-any-return]
            chunk = self.sock.recv(65536)
            if not chunk:
                return None
            self._buffer += chunk


class Runner:
    """Runs one node inside this process: the control plane here, the node itself in
    the :class:`~zerohop.node_loop.NodeLoop` on shared-memory ports."""

    def __init__(self, spec: dict[str, Any], control: Control) -> None:
        self.spec = spec
        self.control = control
        self.node_id: str = spec["node_id"]
        self.stopped = threading.Event()  # the host said stop; waited on when idle
        self.waiting = False  # the main thread is blocked in a channel wait
        #: Written when a cancel's notice comes: it wakes the wait for input.
        self.wake, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        #: Cancels the host told of, not yet handled (see `zerohop.cancel`).
        self.notices: collections.deque[Notice] = collections.deque()
        self.cancel_pending = False  # a notice came (maybe of a cancel already handled)
        #: The node's book of cancels (its inputs' discards, the cancels handled).
        self.book = Discards()
        #: ``with runner.waiting_on_channel:`` marks a blocking channel operation.
        self.waiting_on_channel = _ChannelWait(self)
        self.loop: NodeLoop | None = None
        self.initializing = True
        self.last_progress: tuple[float | None, str] = (None, "starting")
        self.last_progress_at = time.monotonic()  # the first heartbeat is due an interval on
        self.main_thread = threading.main_thread().ident

    # ------------------------------------------------------------------ control plane

    def progress(self, fraction: float | None, message: str) -> None:
        self.last_progress = (fraction, message)
        self.last_progress_at = time.monotonic()
        self.control.send({"type": "progress", "fraction": fraction, "message": message})

    def frame_error(self, error: str, traceback: str, sequence: int | None) -> None:
        self.control.send(
            {"type": "frame_error", "error": error, "traceback": traceback, "sequence": sequence}
        )

    def node_error(self, error: str, traceback: str, sequence: int | None) -> None:
        self.control.send(
            {"type": "node_error", "error": error, "traceback": traceback, "sequence": sequence}
        )

    def _heartbeat(self) -> None:
        """Makes the host hear from this node at least every heartbeat interval: while
        initializing it repeats the last progress, once ready (busy or idle) it sends
        ``alive``. A frozen process sends nothing and the host's liveness check fires."""
        interval = float(self.spec.get("heartbeat_secs", 1.0))
        started = time.monotonic()
        while True:
            # Asleep until the next heartbeat is due (progress reports push it back): an
            # idle node wakes once per interval, not ten times a second.
            due = self.last_progress_at + interval - time.monotonic()
            if due > 0:
                time.sleep(max(due, 0.01))
                continue
            try:
                if self.initializing:
                    fraction, message = self.last_progress
                    elapsed = time.monotonic() - started
                    self.control.send(
                        {
                            "type": "progress",
                            "fraction": fraction,
                            "message": f"{message} ({elapsed:.0f} s)"
                            if message
                            else f"{elapsed:.0f} s",
                        }
                    )
                else:
                    self.control.send({"type": "alive", **self._counts()})
            except OSError:
                return  # the host is gone; the control thread ends the process
            self.last_progress_at = time.monotonic()

    def _listen(self) -> None:
        """Control thread: stop and status requests; EOF means the host died."""
        while True:
            try:
                message = self.control.read()
            except OSError:
                message = None
            if message is None:
                os._exit(1)
            kind = message.get("type")
            if kind == "stop":
                self.stopped.set()
                if self.waiting:
                    signal.pthread_kill(self.main_thread, signal.SIGUSR1)  # type: ignore[arg-type]
            elif kind == "cancel":
                self.notices.append(Notice(message["id"], tuple(message["discard"])))
                self.cancel_pending = True
                with contextlib.suppress(BlockingIOError):
                    os.write(self._wake_w, b"!")
                if self.waiting and self.interruptible() and self.pending():
                    signal.pthread_kill(self.main_thread, signal.SIGUSR1)  # type: ignore[arg-type]
            elif kind == "status":
                loop = self.loop
                self.control.send(
                    {
                        "type": "status",
                        "busy": loop is not None and loop.busy,
                        "frames_in": 0 if loop is None else loop.frames_in,
                        "frames_out": 0 if loop is None else loop.frames_out,
                    }
                )

    def _on_sigusr1(self, signum: int, frame: Any) -> None:
        if self.stopped.is_set() and self.waiting:
            raise Stopped
        if self.waiting and self.interruptible() and self.pending():
            raise CancelRequested

    def interruptible(self) -> bool:
        """Whether a cancel may cut the main thread's wait short: while it sends what
        ``process`` emits (never a marker; the wait for input wakes by the pipe)."""
        loop = self.loop
        return loop is not None and loop.busy and not loop.marking

    # Cancels (`NodeLoop`'s `Cancels`).

    def pending(self) -> bool:
        # A cancel whose marker came before its notice was handled already: its
        # notice must not cut the next frame's work short.
        return self.cancel_pending and self.book.waiting(list(self.notices))

    def announce(self, cancel: int) -> None:
        self.control.send({"type": "cancel", "id": cancel})

    def await_notice(self, cancel: int, wait: float = NOTICE_WAIT) -> None:
        """Waits (at most ``wait`` seconds, or until a stop) for the notice of ``cancel``,
        whose marker came first: the notice goes through the supervisor."""
        deadline = time.monotonic() + wait
        with selectors.DefaultSelector() as selector:
            selector.register(self.wake, selectors.EVENT_READ)
            while not any(n.id == cancel for n in list(self.notices)):
                left = deadline - time.monotonic()
                if left <= 0 or self.stopped.is_set():
                    return
                if selector.select(min(left, 0.05)):
                    with contextlib.suppress(BlockingIOError):
                        os.read(self.wake, 4096)

    # ------------------------------------------------------------------ set-up

    def _prepare_imports(self) -> None:
        # runtime.toml's [nodes] modules are among the host's imports below.
        use_modules(())
        for entry in reversed(self.spec.get("sys_path", [])):
            if entry not in sys.path:
                sys.path.insert(0, entry)
        for item in self.spec.get("imports", []):
            if item["kind"] == "module":
                module = importlib.import_module(item["name"])
            else:
                # What multiprocessing's spawn does: run the parent's script under a
                # name that skips its `if __name__ == "__main__":` block.
                module = type(sys)("__mp_main__")
                module.__file__ = item["path"]
                sys.modules["__mp_main__"] = module
                module.__dict__.update(runpy.run_path(item["path"], run_name="__mp_main__"))
            for qualname in item.get("classes", []):
                target: Any = module
                for part in qualname.split("."):
                    target = getattr(target, part)
                register_node(target)

    def run(self) -> int:
        signal.signal(signal.SIGUSR1, self._on_sigusr1)
        # Ctrl-C and a closed terminal reach the whole process group: the host handles
        # them and stops us.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        threading.Thread(target=self._listen, name="zerohop-control", daemon=True).start()
        threading.Thread(target=self._heartbeat, name="zerohop-heartbeat", daemon=True).start()
        started = time.monotonic()
        try:
            # Before the node's imports: libraries read these as they load.
            os.environ.update(self.spec.get("env") or {})
            budget_cpus(self.spec.get("threads"), self.spec.get("cpus"))
            self._prepare_imports()
            cls = node_class(self.spec["node_type"])
            # The host's channel settings, in the shape the channel ends take.
            settings = _native.ChannelSettings(**self.spec["channel"])
            self.senders = {
                port["port"]: [
                    channel.Sender.wrap(_native.Sender(name, settings), name)
                    for name in port["channels"]
                ]
                for port in self.spec["outputs"]
            }
            self.inputs = [
                (port["port"], channel.Receiver.wrap(_native.Receiver(name, settings), name))
                for port in self.spec["inputs"]
                for name in port["channels"]
            ]
            node = cls(self.spec.get("params") or {}, node_id=self.node_id)
            self.loop = NodeLoop(
                self.node_id,
                node,
                on_error=self.spec.get("on_error", "fail"),
                outputs={
                    port: [_ShmOutput(sender, self) for sender in senders]
                    for port, senders in self.senders.items()
                },
                reports=self,
                cancels=self,
            )
            node.initialize(
                self.loop.context(
                    self.spec["session_id"],
                    self.progress,
                    self._loan_sender,
                    threads=self.spec.get("threads"),
                )
            )
        except BaseException as err:  # report everything, even SystemExit from user code
            self.initializing = False
            self.control.send(
                {"type": "init_error", "error": describe(err), "traceback": traceback.format_exc()}
            )
            return 1
        self.initializing = False
        self.control.send({"type": "ready", "init_secs": time.monotonic() - started})
        try:
            self.loop.run(_shm_inputs(self.inputs, self))
            # Every input ended (or a neighbour is gone): nothing to do but wait for the
            # stop request. (An Event, not signal.pause(): a stop arriving just before
            # pause() would be lost.)
            self.stopped.wait()
        except Stopped:
            pass
        except NodeFailed:
            return 1
        finally:
            self._shutdown()
        return 0

    def _loan_sender(self, port: str | None) -> Any:
        assert self.loop is not None
        senders = self.senders.get(port or self.loop.default_output or "", [])
        return senders[0] if senders else None

    def _shutdown(self) -> None:
        if self.loop is not None:
            self.loop.close()
        _kill_descendants()
        for senders in self.senders.values():
            for sender in senders:
                sender.close()
        for _, rx in self.inputs:
            rx.close()
        self.control.send({"type": "stopped", **self._counts()})

    def _counts(self) -> dict[str, int]:
        """The frame counts heartbeats and the stop report carry (for metrics)."""
        loop = self.loop
        if loop is None:
            return {}
        return {"frames_in": loop.frames_in, "frames_out": loop.frames_out}


class _ChannelWait:
    """Marks a blocking channel operation: a stop request interrupts it (a send blocked
    by a slow or dead receiver must still give way to a stop). One per runner, entered
    around every channel wait, so it is a plain object, not a generator context."""

    __slots__ = ("runner",)

    def __init__(self, runner: Runner) -> None:
        self.runner = runner

    def __enter__(self) -> None:
        runner = self.runner
        runner.waiting = True
        if runner.stopped.is_set():
            # The stop came first (or SIGUSR1 raises here): __exit__ will not run.
            runner.waiting = False
            raise Stopped
        if runner.cancel_pending and runner.interruptible() and runner.pending():
            runner.waiting = False
            raise CancelRequested

    def __exit__(self, *exc: object) -> None:
        self.runner.waiting = False


class _ShmOutput:
    """An edge of the node loop on a shared-memory channel."""

    def __init__(self, sender: channel.Sender, runner: Runner) -> None:
        self.sender = sender
        self.runner = runner

    def send(self, frame: Frame, first: bool) -> None:
        with self.runner.waiting_on_channel:
            raw = frame.raw
            if first or raw is None:
                self.sender.send(frame)
            else:
                # A copy of the frame's bytes for this extra edge (a loan stays for the
                # first edge, which sends it without a copy).
                self.sender._ends().send_frame(raw, meta=frame._meta_for_send())

    def end(self) -> None:
        with self.runner.waiting_on_channel:
            self.sender.send_end_of_stream()

    def flush(self) -> None:
        with self.runner.waiting_on_channel:
            self.sender.flush()

    def mark(self, cancel: int) -> None:
        with self.runner.waiting_on_channel:
            self.sender._ends().send_cancel_mark(cancel)


def _shm_inputs(
    inputs: list[tuple[str, channel.Receiver]], runner: Runner
) -> Iterator[Frame | int]:
    """Every frame of every input channel (its ``port`` set), until each has ended (its
    end of stream, or its sender gone), and the id of each cancel that reached the node
    (the frames it covers dropped: see :mod:`zerohop.cancel`); a stop request ends the
    iteration with :class:`Stopped`. A selector waits on the inputs' wait fds and the
    runner's wake pipe (a cancel's notice); each input is drained of what is waiting
    when its fd turns readable. (A notice wakes the wait through the pipe, not a
    signal: an exception raised just as a receive returned would lose a marker.)"""
    open_inputs = dict(enumerate(inputs))
    book = runner.book
    selector = selectors.DefaultSelector()
    for key, (_, rx) in open_inputs.items():
        selector.register(rx.wait_fd(), selectors.EVENT_READ, key)
    selector.register(runner.wake, selectors.EVENT_READ, None)

    def notices() -> Iterator[int]:
        runner.cancel_pending = False  # before the queue: a later notice sets it again
        while runner.notices:
            notice = runner.notices.popleft()
            if book.notice(notice.id, notice.discard):
                yield notice.id

    try:
        while open_inputs:
            yield from notices()
            with runner.waiting_on_channel:
                events = selector.select()
            ready = []
            for k, _ in events:
                if k.data is None:
                    with contextlib.suppress(BlockingIOError):
                        os.read(runner.wake, 4096)
                else:
                    ready.append(k.data)
            for key in ready:
                port, rx = open_inputs[key]
                while True:
                    if runner.stopped.is_set():
                        raise Stopped  # the frame in hand is done; no new one starts
                    if runner.cancel_pending:
                        yield from notices()  # before the frames the cancel covers
                    try:
                        raw = rx._ends().try_recv()
                    except ChannelClosedError:
                        raw = _ENDED  # upstream is gone: this input has ended
                    if raw is None:
                        break
                    if raw is _ENDED or raw.is_end_of_stream:
                        del open_inputs[key]
                        selector.unregister(rx.wait_fd())
                        break
                    cancel = raw.cancel_mark
                    if cancel is not None:
                        if not book.handled(cancel):
                            # Met before its notice, which says what else it covers.
                            runner.await_notice(cancel)
                            yield from notices()
                        if book.mark(rx.name, cancel):
                            yield cancel  # the notice never came
                        continue
                    if book.discarding(rx.name):
                        continue  # sent before a cancel: dropped
                    frame = from_raw(raw)
                    frame.port = port
                    yield frame
        if runner.stopped.is_set():
            raise Stopped  # stopped, not ended: no flush
    finally:
        selector.close()


_ENDED: Any = object()  # an input whose sender is gone


def _kill_descendants() -> None:
    """Kills every process this node started that is still running, and theirs: the
    host stops the node's process group once the node has exited, and this reaches what
    left the group (``start_new_session=True``) while the node is still here to find it."""
    found: list[int] = []
    todo = [os.getpid()]
    while todo:
        pid = todo.pop()
        try:
            tasks = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for task in tasks:
            try:
                with open(f"/proc/{pid}/task/{task}/children") as f:
                    children = [int(c) for c in f.read().split()]
            except OSError:
                continue
            found += children
            todo += children
    for pid in found:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


def main() -> int:
    control = Control()
    start = control.read()
    if start is None or start.get("type") != "start":
        return 2
    return Runner(start["spec"], control).run()


if __name__ == "__main__":
    sys.exit(main())
