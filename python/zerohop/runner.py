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

import asyncio
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
from . import _native, channel, node
from .channel import _send_end_of_stream
from .data import Frame, from_raw
from .errors import ChannelClosedError
from .node import iter_outputs
from .registry import node_class, register_node, use_modules

CONTROL_FD = 3
_LENGTH = struct.Struct("<I")


class _StopRequested(BaseException):
    """Raised in the main thread to leave a blocking wait when the host says stop."""


class _DownstreamGone(BaseException):
    """A channel this node feeds lost its receiver: nothing to do but wait for stop."""


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
    """Runs one node inside this process."""

    def __init__(self, spec: dict[str, Any], control: Control) -> None:
        self.spec = spec
        self.control = control
        self.node_id: str = spec["node_id"]
        self.on_error: str = spec.get("on_error", "fail")
        self.stopped = threading.Event()  # the host said stop; waited on when idle
        self.waiting = False  # the main thread is blocked in a channel wait
        self.busy = False
        self.frames_in = 0
        self.frames_out = 0
        self.last_input: Frame | None = None
        self.initializing = True
        self.last_progress: tuple[float | None, str] = (None, "starting")
        self.last_progress_at = 0.0
        self.main_thread = threading.main_thread().ident
        self.loop: asyncio.AbstractEventLoop | None = None

    # ------------------------------------------------------------------ control plane

    def progress(self, fraction: float | None, message: str) -> None:
        self.last_progress = (fraction, message)
        self.last_progress_at = time.monotonic()
        self.control.send({"type": "progress", "fraction": fraction, "message": message})

    def _heartbeat(self) -> None:
        """Makes the host hear from this node at least every heartbeat interval: while
        initializing it repeats the last progress, once ready (busy or idle) it sends
        ``alive``. A frozen process sends nothing and the host's liveness check fires."""
        interval = float(self.spec.get("heartbeat_secs", 1.0))
        started = time.monotonic()
        while True:
            time.sleep(min(0.1, interval / 4))
            if time.monotonic() - self.last_progress_at < interval:
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
                    self.control.send({"type": "alive"})
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
            elif kind == "status":
                self.control.send(
                    {
                        "type": "status",
                        "busy": self.busy,
                        "frames_in": self.frames_in,
                        "frames_out": self.frames_out,
                    }
                )

    def _on_sigusr1(self, signum: int, frame: Any) -> None:
        if self.stopped.is_set() and self.waiting:
            raise _StopRequested

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
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the host handles Ctrl-C and stops us
        threading.Thread(target=self._listen, name="zerohop-control", daemon=True).start()
        threading.Thread(target=self._heartbeat, name="zerohop-heartbeat", daemon=True).start()
        started = time.monotonic()
        try:
            self._prepare_imports()
            cls = node_class(self.spec["node_type"])
            # The host's channel settings, already in the native constructors' terms.
            settings: dict[str, int] = self.spec["channel"]
            self.outputs = {
                port["port"]: [
                    channel.Sender.wrap(_native.Sender(name, **settings), name)
                    for name in port["channels"]
                ]
                for port in self.spec["outputs"]
            }
            self.inputs = [
                (port["port"], channel.Receiver.wrap(_native.Receiver(name, **settings), name))
                for port in self.spec["inputs"]
                for name in port["channels"]
            ]
            self.default_output = next(iter(self.outputs), None)
            self.node = cls(self.spec.get("params") or {}, node_id=self.node_id)
            ctx = node.NodeContext(
                self.node_id,
                self.spec["session_id"],
                progress=self.progress,
                emit=self._emit_one,
                loan=self._loan_sender,
            )
            self.node.initialize(ctx)
        except BaseException as err:  # report everything, even SystemExit from user code
            self.initializing = False
            self.control.send(
                {"type": "init_error", "error": _describe(err), "traceback": traceback.format_exc()}
            )
            return 1
        self.initializing = False
        self.control.send({"type": "ready", "init_secs": time.monotonic() - started})
        try:
            self._serve()
        finally:
            self._shutdown()
        return 0

    # ------------------------------------------------------------------ data plane

    def _loan_sender(self, port: str | None) -> Any:
        senders = self.outputs.get(port or self.default_output or "", [])
        return senders[0] if senders else None

    def _emit_one(self, frame: Any, port: str | None = None) -> None:
        if isinstance(frame, tuple) and len(frame) == 2 and isinstance(frame[0], str):
            port, frame = frame
        if not isinstance(frame, Frame):
            raise TypeError(
                f"node '{self.node_id}' produced {type(frame).__name__}; nodes must produce "
                "zerohop frames (Audio, Video, Tensor, Text, Json, Bytes) or (port, frame)"
            )
        target = port or self.default_output
        if target not in self.outputs:
            raise ValueError(f"node '{self.node_id}' has no output port {target!r}")
        senders = self.outputs[target]
        if not senders:
            return
        if self.last_input is not None:
            frame._inherit(self.last_input)
        raw = frame.raw
        meta = frame._meta_for_send()
        with self._interruptible():
            # Fan-out: every extra edge gets a copy; the first gets the frame itself,
            # which for a loan means no copy at all.
            for sender in senders[1:]:
                if raw is not None:
                    sender._ends().send_frame(raw, meta=meta)
                else:
                    sender.send(frame)
            senders[0].send(frame)
        self.frames_out += 1

    def _emit(self, result: Any) -> None:
        for item in iter_outputs(result, self._event_loop):
            self._emit_one(item)

    def _event_loop(self) -> asyncio.AbstractEventLoop:
        if self.loop is None:
            self.loop = asyncio.new_event_loop()
        return self.loop

    def _handle(self, frame: Any) -> None:
        self.frames_in += 1
        if frame.kind == "control" and not node.takes_control(type(self.node)):
            self.last_input = frame
            self._run_user(lambda: [frame], frame.sequence)  # passed on, see node.py
            return
        # What the node emits for this frame (and at flush, for the last one) inherits
        # its metadata unless the node sets its own; see zerohop.data.
        self.last_input = frame
        self.busy = True
        try:
            self._run_user(lambda: self.node.process(frame), frame.sequence)
        finally:
            self.busy = False

    def _run_user(self, call: Any, sequence: int | None) -> None:
        """Runs node code and sends what it emits; applies the on_error policy."""
        try:
            self._emit(call())
        except _StopRequested:
            raise
        except ChannelClosedError:
            # A neighbour is gone: the session is ending and the supervisor reports
            # the node that failed. This one only waits to be stopped.
            raise _DownstreamGone from None
        except Exception as err:
            message = {
                "error": _describe(err),
                "traceback": traceback.format_exc(),
                "sequence": sequence,
            }
            if self.on_error == "skip":
                self.control.send({"type": "frame_error", **message})
            else:
                self.control.send({"type": "node_error", **message})
                raise SystemExit(1) from None

    @contextlib.contextmanager
    def _interruptible(self) -> Iterator[None]:
        """Marks a blocking channel operation: a stop request interrupts it (a send
        blocked by a slow or dead receiver must still give way to a stop)."""
        self.waiting = True
        try:
            if self.stopped.is_set():
                raise _StopRequested
            yield
        finally:
            self.waiting = False

    def _end_of_stream(self) -> None:
        """Every input ended: flush the node, pass the end on, and wait until the
        receivers took everything (so closing later loses nothing)."""
        self._run_user(self.node.flush, None)

        try:
            with self._interruptible():
                for senders in self.outputs.values():
                    for sender in senders:
                        _send_end_of_stream(sender)
                for senders in self.outputs.values():
                    for sender in senders:
                        sender.flush()
        except ChannelClosedError:
            raise _DownstreamGone from None

    def _serve(self) -> None:
        """The receive → process → send loop, until stopped."""
        open_inputs = {key: (port, rx) for key, (port, rx) in enumerate(self.inputs)}
        selector = selectors.DefaultSelector() if len(open_inputs) > 1 else None
        if selector is not None:
            for key, (_, rx) in open_inputs.items():
                selector.register(rx.wait_fd(), selectors.EVENT_READ, key)
        try:
            try:
                while open_inputs and not self.stopped.is_set():
                    for key, first in self._wait(open_inputs, selector):
                        self._drain(key, first, open_inputs, selector)
                if not self.stopped.is_set():
                    self._end_of_stream()
            except _DownstreamGone:
                pass
            self._wait_for_stop()
        except _StopRequested:
            pass
        finally:
            if selector is not None:
                selector.close()

    def _drain(
        self,
        key: int,
        first: Any,
        open_inputs: dict[int, Any],
        selector: selectors.BaseSelector | None,
    ) -> None:
        """Handles every frame waiting on one input; retires the input at its end."""
        port, rx = open_inputs[key]
        raw = first
        while not self.stopped.is_set():
            if raw is None:
                try:
                    raw = rx._ends().try_recv()
                except ChannelClosedError:
                    raw = None  # upstream is gone: this input has ended
                    ended = True
                else:
                    if raw is None:
                        return
                    ended = raw.is_end_of_stream
            else:
                ended = raw.is_end_of_stream
            if ended:
                del open_inputs[key]
                if selector is not None:
                    selector.unregister(rx.wait_fd())
                return
            frame = from_raw(raw)
            frame.port = port
            raw = None
            self._handle(frame)

    def _wait(
        self, open_inputs: dict[int, Any], selector: selectors.BaseSelector | None
    ) -> list[tuple[int, Any]]:
        """Blocks until an input may have a frame: (input key, frame or None) pairs.
        Raises _StopRequested when the host asks this node to stop."""
        with self._interruptible():
            if selector is None:
                ((key, (_, rx)),) = open_inputs.items()
                try:
                    return [(key, rx._ends().recv(None))]
                except ChannelClosedError:
                    return [(key, None)]  # try_recv reports it again in the loop
            return [(key.data, None) for key, _ in selector.select()]

    def _wait_for_stop(self) -> None:
        """Every input has ended: nothing to do but wait for the stop request. (An
        Event, not signal.pause(): a stop arriving just before pause() would be lost.)"""
        self.stopped.wait()

    def _shutdown(self) -> None:
        try:
            if hasattr(self, "node"):
                self.node.cleanup()
        except Exception:
            traceback.print_exc()
        for senders in getattr(self, "outputs", {}).values():
            for sender in senders:
                sender.close()
        for _, rx in getattr(self, "inputs", []):
            rx.close()
        if self.loop is not None:
            self.loop.close()
        self.control.send({"type": "stopped"})


def _describe(err: BaseException) -> str:
    text = str(err)
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def main() -> int:
    control = Control()
    start = control.read()
    if start is None or start.get("type") != "start":
        return 2
    return Runner(start["spec"], control).run()


if __name__ == "__main__":
    sys.exit(main())
