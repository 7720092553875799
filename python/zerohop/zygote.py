"""``python -m zerohop.zygote [--for MODULE]``: a pre-warmed factory of node processes.

Starting a node as ``python -m zerohop.runner`` costs a fresh interpreter plus the
imports of zerohop, numpy and pydantic (about half a second). The zygote pays that once:
the host starts it (exec, from its spawner thread, see ``rust/supervisor/launch.rs``),
it imports everything a runner needs and then forks one child per node on request. Each
child runs ``main()`` of the ``--for`` module (default ``zerohop.runner``) as
``python -m zerohop.runner`` would, and never returns into the zygote's loop: it leaves
the loop by an exception and ends with a normal interpreter exit (see ``_Forked``).

Host protocol (a Unix stream socket at fd 3, or ``--fd N``). Every message is a
little-endian u32 byte length followed by that much UTF-8 JSON, like the control socket.
Byte strings (paths, environment entries) travel as hex, since they need not be UTF-8.

* zygote → host, once, when the imports are done:
  ``{"type": "hello", "pid": P, "threads": T}``.
* host → zygote: ``{"type": "spawn", "cwd": hex|null, "env_set": [[hex, hex], ...],
  "env_unset": [hex, ...], "stdio": [0, 1, 2]}`` with, as SCM_RIGHTS on the same
  message, the child's control socket followed by one fd per ``stdio`` entry (the host's
  current stdin/stdout/stderr, so that a child writes where an exec'ed node would).
* zygote → host: ``{"type": "spawned", "serial": S, "pid": P}`` with the child's pidfd
  as SCM_RIGHTS (opened by the zygote while the child cannot have been reaped yet, so it
  names exactly this child), or ``{"type": "spawn_error", "error": "..."}``.
* zygote → host, when a child ends: ``{"type": "exit", "serial": S, "pid": P,
  "code": C}`` or ``... "signal": N}``. Only the zygote can reap its children; the host
  learns their exit status from these reports.

The zygote exits when the host closes its end (and dies with the host anyway: the host
starts it with PR_SET_PDEATHSIG). Its children get PR_SET_PDEATHSIG too, so they die
with the zygote.

Command lines: a forked child inherits the zygote's argv memory, which the kernel shows
as ``/proc/PID/cmdline``. Each child overwrites it in place (as setproctitle does) to
read ``python -m zerohop.runner``, which fits exactly where ``python -m zerohop.zygote``
was. So ``pgrep -f zerohop.runner`` finds node processes however they were started, and
not the zygote (``pgrep -f zerohop.zygote`` finds that). Should the rewrite ever fail, a
child keeps the zygote's command line (as it does for the few milliseconds between
its fork and the rewrite). Its thread name (``comm``) is ``zerohop-zygote``;
children get back the original one.

Fork safety: the zygote is single-threaded and opens no iceoryx2 node or channel. (Were
it to, its children would still be safe: the Rust core keeps every process-wide singleton
per fork generation, bumped by a ``pthread_atfork`` child handler, so a child builds its
own node, spawner and zygote slot on first use; see ``rust/fork.rs``.)
numpy's OpenBLAS starts a thread pool on import, but OpenBLAS registers a
``pthread_atfork`` handler that shuts the pool down before every fork; the pool is
re-created lazily, in the child, at its first BLAS call with the usual thread count. So
no ``OPENBLAS_NUM_THREADS`` override is needed (and none is set).
"""

from __future__ import annotations

import array
import contextlib
import ctypes
import fcntl
import gc
import importlib
import io
import json
import os
import selectors
import signal
import socket
import struct
import sys
import threading
import traceback
from types import ModuleType
from typing import Any

#: Imported before the first fork, so that children start with them loaded.
PRELOAD = (
    "zerohop",
    "zerohop.runner",
    "zerohop.node",
    "zerohop.registry",
    "zerohop.channel",
    "zerohop.nodes",
    "numpy",
    "pydantic",
)

HOST_FD = 3
CONTROL_FD = 3  # where the child's control socket goes (zerohop.runner.CONTROL_FD)
_LENGTH = struct.Struct("<I")
_MAX_FDS = 8
_PR_SET_PDEATHSIG = 1
_PR_SET_NAME = 15
_ZYGOTE_COMM = b"zerohop-zygote"
#: Exit status of a child that could not be set up (the host sees it as a crash).
_SETUP_FAILED = 70


class _Forked(BaseException):
    """Raised in a freshly forked child to unwind the zygote's loop up to ``main()``,
    which then runs the node and returns its exit status, so that the child ends like
    ``python -m zerohop.runner`` does: ``sys.exit(main())`` and a normal interpreter
    exit (threads joined, atexit, module teardown, then C ``exit()``). ``os._exit``
    would skip C-level atexit hooks, among them zerohop's own (``rust/ipc/linger.rs``),
    which lets lingering senders drain and release their shared memory. Nothing between
    the fork and ``main()`` catches it or has cleanup of its own."""

    def __init__(self, request: dict[str, Any], control: int, stdio: list[tuple[int, int]]):
        super().__init__()
        self.request = request
        self.control = control
        self.stdio = stdio


def _noop(signum: int, frame: Any) -> None:
    """SIGCHLD handler: its only job is the byte set_wakeup_fd writes."""


def _thread_count() -> int:
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return threading.active_count()


def _read_comm() -> bytes:
    try:
        with open("/proc/self/comm", "rb") as f:
            return f.read().rstrip(b"\n")
    except OSError:
        return b"python"


class _ArgvArea:
    """The memory that holds this process's original argv strings: what the kernel
    shows as ``/proc/PID/cmdline``. Overwriting it (within its size) changes that."""

    def __init__(self) -> None:
        self.start = self.end = 0
        self.args: list[bytes] = []
        try:
            with open("/proc/self/stat", "rb") as f:
                stat = f.read()
            # Fields after the parenthesised comm start at field 3; arg_start and
            # arg_end are fields 48 and 49 (proc(5), Linux >= 3.5).
            fields = stat[stat.rindex(b")") + 2 :].split()
            self.start, self.end = int(fields[45]), int(fields[46])
            with open("/proc/self/cmdline", "rb") as f:
                self.args = f.read().split(b"\0")[:-1]
        except (OSError, ValueError, IndexError):
            self.start = self.end = 0

    def rewrite(self, args: list[bytes]) -> bool:
        data = b"\0".join(args) + b"\0"
        size = self.end - self.start
        if not self.start or len(data) > size:
            return False
        # Padding with NULs keeps the last byte NUL, so the kernel reports the area as
        # plain argv (see get_mm_cmdline in fs/proc/base.c).
        ctypes.memmove(self.start, data.ljust(size, b"\0"), size)
        return True


class Zygote:
    """The fork server: one host socket, one child per spawn request."""

    def __init__(self, host: socket.socket, target: ModuleType, comm: bytes) -> None:
        self.host = host
        self.target = target
        self.comm = comm
        self.pid = os.getpid()
        self.start_cwd = os.getcwd()
        self.libc = ctypes.CDLL(None, use_errno=True)
        self.argv = _ArgvArea()
        self.buffer = bytearray()
        self.fds: list[int] = []  # received, not yet used (in arrival order)
        self.children: dict[int, int] = {}  # pid -> serial
        self.serial = 0
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        os.set_blocking(self.wake_w, False)
        self.selector = selectors.DefaultSelector()

    # ------------------------------------------------------------------ loop

    def serve(self) -> int:
        signal.signal(signal.SIGCHLD, _noop)
        signal.set_wakeup_fd(self.wake_w, warn_on_full_buffer=False)
        self.selector.register(self.host, selectors.EVENT_READ)
        self.selector.register(self.wake_r, selectors.EVENT_READ)
        try:
            self._send({"type": "hello", "pid": self.pid, "threads": _thread_count()})
            while True:
                for key, _ in self.selector.select():
                    if key.fileobj is self.host:
                        if not self._read_host():
                            return 0
                    else:
                        self._drain_wake()
                self._reap()
        except (BrokenPipeError, ConnectionResetError):
            return 0  # the host is gone

    def _drain_wake(self) -> None:
        try:
            while os.read(self.wake_r, 4096):
                pass
        except BlockingIOError:
            pass

    def _read_host(self) -> bool:
        """Reads what the host sent and handles every complete request. False at EOF."""
        data, ancillary, flags, _ = self.host.recvmsg(
            65536, socket.CMSG_SPACE(_MAX_FDS * 4), socket.MSG_CMSG_CLOEXEC
        )
        for level, kind, payload in ancillary:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds = array.array("i")
                fds.frombytes(payload[: len(payload) - len(payload) % fds.itemsize])
                self.fds.extend(fds)
        if flags & socket.MSG_CTRUNC:
            # File descriptors were lost: requests and fds no longer pair up.
            print("zerohop zygote: file descriptors truncated; exiting", file=sys.stderr)
            return False
        if not data:
            return False
        self.buffer += data
        while len(self.buffer) >= _LENGTH.size:
            (length,) = _LENGTH.unpack_from(self.buffer)
            if len(self.buffer) < _LENGTH.size + length:
                break
            body = bytes(self.buffer[_LENGTH.size : _LENGTH.size + length])
            del self.buffer[: _LENGTH.size + length]
            self._handle(json.loads(body))
        return True

    def _send(self, message: dict[str, Any], fds: list[int] | None = None) -> None:
        body = json.dumps(message).encode()
        data = _LENGTH.pack(len(body)) + body
        ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))] if fds else []
        sent = self.host.sendmsg([data], ancillary)
        if sent < len(data):  # interrupted after a partial write: the fds went with it
            self.host.sendall(data[sent:])

    def _handle(self, request: dict[str, Any]) -> None:
        if request.get("type") != "spawn":
            self._send({"type": "spawn_error", "error": f"unknown request {request.get('type')!r}"})
            return
        stdio = [int(fd) for fd in request.get("stdio", [])]
        count = 1 + len(stdio)
        if len(self.fds) < count:
            self._send({"type": "spawn_error", "error": "spawn request without its fds"})
            return
        fds, self.fds = self.fds[:count], self.fds[count:]
        for stream in (sys.stdout, sys.stderr):
            if stream is not None:
                stream.flush()  # or the child would write out the zygote's buffer again
        try:
            pid = os.fork()
        except OSError as err:
            for fd in fds:
                os.close(fd)
            self._send({"type": "spawn_error", "error": f"fork: {err}"})
            return
        if pid == 0:
            # We are the child: leave the zygote's loop for good (see _Forked).
            raise _Forked(request, fds[0], list(zip(stdio, fds[1:], strict=True)))
        # Also set the group here: when the host hears of the pid, it may signal the
        # group at once, before the child has run its own setpgid.
        with contextlib.suppress(OSError):
            os.setpgid(pid, pid)
        for fd in fds:
            os.close(fd)
        self.serial += 1
        self.children[pid] = self.serial
        try:
            pidfd = os.pidfd_open(pid)
        except OSError as err:
            os.kill(pid, signal.SIGKILL)  # reaped and reported as usual
            self._send({"type": "spawn_error", "error": f"pidfd_open: {err}"})
            return
        try:
            self._send({"type": "spawned", "serial": self.serial, "pid": pid}, [pidfd])
        finally:
            os.close(pidfd)

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            serial = self.children.pop(pid, None)
            if serial is None:
                continue
            report: dict[str, Any] = {"type": "exit", "serial": serial, "pid": pid}
            if os.WIFSIGNALED(status):
                report["signal"] = os.WTERMSIG(status)
            else:
                report["code"] = os.waitstatus_to_exitcode(status)
            self._send(report)

    # ------------------------------------------------------------------ child

    def run_child(self, forked: _Forked) -> int | str | None:
        """In the forked child, once the zygote's loop has been left: becomes a node
        process and runs the target's ``main()``; its result is the exit status."""
        try:
            self._become_node(forked.request, forked.control, forked.stdio)
        except BaseException:
            traceback.print_exc()
            os._exit(_SETUP_FAILED)
        status: int | str | None = self.target.main()
        return status

    def _become_node(
        self, request: dict[str, Any], control: int, stdio: list[tuple[int, int]]
    ) -> None:
        # Process group and parent death first, as the exec path does before exec.
        os.setpgid(0, 0)
        if self.libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG)")
        if os.getppid() != self.pid:
            os._exit(_SETUP_FAILED)  # the zygote died before the prctl
        # Look like `python -m <target>` as soon as possible (for pgrep & co.).
        args = self.argv.args
        head = args[: args.index(b"-m")] if b"-m" in args else args[:1]
        new_args = [*head, b"-m", self.target.__name__.encode()]
        if self.argv.rewrite(new_args):
            sys.orig_argv = [os.fsdecode(a) for a in new_args]
        self.libc.prctl(_PR_SET_NAME, ctypes.c_char_p(self.comm[:15]), 0, 0, 0)
        # Signals back to a fresh interpreter's state.
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        # Drop the zygote's own fds.
        self.selector.close()
        os.close(self.wake_r)
        os.close(self.wake_w)
        self.host.close()
        for fd in self.fds:
            os.close(fd)
        self.fds = []
        # Move the received fds out of the way first, so that no dup2 below can
        # overwrite one that is still to be placed.
        moved = [(target, fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)) for target, fd in stdio]
        moved.append((CONTROL_FD, fcntl.fcntl(control, fcntl.F_DUPFD_CLOEXEC, 10)))
        for _, fd in [*stdio, (CONTROL_FD, control)]:
            os.close(fd)
        for target, fd in moved:
            os.dup2(fd, target)  # inheritable, as an exec'ed node's fds are
            os.close(fd)
        # Python picked stdout's buffering for the zygote's fd 1: line-buffered on a
        # terminal, else block-buffered. Pick again for the host's.
        stdout = sys.stdout
        if (
            1 in dict(stdio)
            and isinstance(stdout, io.TextIOWrapper)
            and not stdout.write_through  # -u / PYTHONUNBUFFERED: unbuffered anyway
        ):
            stdout.reconfigure(line_buffering=os.isatty(1))
        # Environment and working directory of this spawn.
        for key in request.get("env_unset", []):
            os.environb.pop(bytes.fromhex(key), None)
        for key, value in request.get("env_set", []):
            os.environb[bytes.fromhex(key)] = bytes.fromhex(value)
        cwd = request.get("cwd")
        if cwd is not None:
            os.chdir(bytes.fromhex(cwd))
            # `python -m` puts its start directory first on sys.path.
            if not sys.flags.safe_path and sys.path and sys.path[0] == self.start_cwd:
                sys.path[0] = os.getcwd()
        sys.argv = [getattr(self.target, "__file__", None) or self.target.__name__]
        # A fresh process would have a fresh seed (the stdlib's random reseeds at fork).
        np_random = sys.modules.get("numpy.random")
        if np_random is not None:
            np_random.seed()


def main(argv: list[str] | None = None) -> int | str | None:
    """The zygote's loop; in each forked child, the node's ``main()`` instead."""
    # Ctrl-C and a closed terminal are the host's business.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    args = sys.argv[1:] if argv is None else argv
    target_name, fd = "zerohop.runner", HOST_FD
    while args:
        flag, *rest = args
        if flag in ("--for", "--fd") and rest:
            if flag == "--for":
                target_name = rest[0]
            else:
                fd = int(rest[0])
            args = rest[1:]
        else:
            print("usage: python -m zerohop.zygote [--for MODULE] [--fd N]", file=sys.stderr)
            return 2
    try:
        # Off fd 3: that number is where each child's control socket goes.
        host_fd = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)
    except OSError:
        print(f"zerohop zygote: no host socket at fd {fd}", file=sys.stderr)
        return 2
    os.close(fd)
    host = socket.socket(fileno=host_fd)
    host.setblocking(True)
    for name in (*PRELOAD, target_name):
        importlib.import_module(name)
    target = sys.modules[target_name]
    if not callable(getattr(target, "main", None)):
        print(f"zerohop zygote: {target_name} has no main()", file=sys.stderr)
        return 2
    # Objects that exist now are never collected in the children: keeping the cyclic
    # GC off them keeps their pages shared (copy-on-write) and collections short.
    gc.collect()
    gc.freeze()
    comm = _read_comm()
    zygote = Zygote(host, target, comm)
    zygote.libc.prctl(_PR_SET_NAME, ctypes.c_char_p(_ZYGOTE_COMM), 0, 0, 0)
    try:
        return zygote.serve()
    except _Forked as forked:
        child = forked.with_traceback(None)  # drop the loop's frames
    return zygote.run_child(child)


if __name__ == "__main__":
    sys.exit(main())
