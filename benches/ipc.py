"""Inter-process frame transport benchmark: zerohop against the usual Python alternatives.

Run from the repository root::

    python benches/ipc.py                     # full run, ~3-5 min on 2 cores
    python benches/ipc.py --quick             # ~1 min smoke run (fewer messages per cell)
    python benches/ipc.py --sizes 1KiB,6.2MB --transports pipe,zerohop --placement split

What it measures, between two real processes (``multiprocessing`` "spawn" context), for
payloads of 1 KiB, 64 KiB, 1 MiB, 3.84 MB, 6.2 MB (1920x1080x3 = 6,220,800 B) and 10 MiB:

* one-way latency, p50 and p99 in microseconds: the sender takes ``time.perf_counter_ns()``
  right before sending and puts it in the message (first 8 payload bytes, or zerohop's
  ``timestamp_ns``); the receiver reads the clock once it holds a numpy view of the payload
  and has read its first and last element. ``perf_counter`` is CLOCK_MONOTONIC on Linux,
  one clock for all processes. Messages are paced (the sender waits for the receiver's ack,
  so one message is in flight) and preceded by a warm-up.
* throughput in GB/s (1e9 B/s) and messages/s: the sender streams as fast as it can while
  the receiver reads every byte of every message (a uint64 sum over the payload); the time
  runs from the first message's send stamp to the end of the last read.

Placement: every cell runs with the two peers pinned to different CPUs (``split``) and to
one CPU (``same``). On a VM the two cost very differently — a blocked process on another
vCPU needs an inter-processor wake-up (~20-30 µs here), one on the same vCPU only a context
switch (~4 µs) — and an unpinned run (``--placement free``) lands in either at random, which
is why unpinned small-message numbers swing 2-3x between runs. Before the cells, the run
measures what the machine allows: the wake-up floor of each placement (8 bytes through a
pipe to a blocked process) and the read ceiling (the receiver's every-byte read of local
buffers, no transport), and judges the channel targets against both.

Transports (rows): ``multiprocessing.Pipe``; a hand-rolled ``multiprocessing.shared_memory``
ring signalled over a pipe; pyzmq PUSH/PULL over ``ipc://`` with ``copy=False``; iceoryx2's
Python bindings (publish-subscribe of a ``u8`` slice); zerohop in copy-send and loaned-send
modes. A transport whose package is missing shows "not installed"; nothing is installed by
this script (``pip install pyzmq iceoryx2==0.10.0`` for the full comparison).

Output: machine info and a Markdown table on stdout, progress on stderr, all numbers as JSON
(``--json``, default ``bench-results/ipc.json``).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import multiprocessing as mp
import os
import re
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from multiprocessing import shared_memory
from multiprocessing.connection import Connection, wait
from multiprocessing.context import SpawnContext, SpawnProcess
from pathlib import Path
from types import FrameType
from typing import Any

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:  # the helpers live next to this file; spawned peers import them too
    sys.path.insert(0, _HERE)

import _floors  # noqa: E402
import _peers  # noqa: E402
import _stats  # noqa: E402

DEPTH = 8  # slots / queue depth / high-water mark, the same for every transport
FULL_HD = 6_220_800  # 1920 x 1080 x 3 bytes
DEFAULT_SIZES = (1 << 10, 64 << 10, 1 << 20, 3_840_000, FULL_HD, 10 << 20)
SIZE_ALIASES = {"1080p": FULL_HD, "6.2mb": FULL_HD, "3.84mb": 3_840_000}
UNITS = {"": 1, "b": 1, "k": 1 << 10, "kib": 1 << 10, "kb": 1000, "m": 1 << 20, "mib": 1 << 20}
UNITS["mb"] = 1_000_000


@dataclass(frozen=True)
class Row:
    """One table row: a transport in one mode."""

    transport: str
    mode: str
    label: str

    @property
    def key(self) -> str:
        return f"{self.transport}:{self.mode}"


ROWS = (
    Row("pipe", "send-bytes", "multiprocessing.Pipe · send_bytes"),
    Row("shm-ring", "copy", "shared_memory ring + pipe · copy into slot"),
    Row("zmq", "copy-false", "pyzmq PUSH/PULL ipc:// · copy=False"),
    Row("iceoryx2", "loaned-fill", "iceoryx2 · loaned (fill)"),
    Row("iceoryx2", "loaned-header", "iceoryx2 · loaned (touch header)"),
    Row("zerohop", "copy-send", "zerohop · copy-send"),
    Row("zerohop", "loaned-fill", "zerohop · loaned (fill)"),
    Row("zerohop", "loaned-header", "zerohop · loaned (touch header)"),
)
TRANSPORTS = tuple(dict.fromkeys(row.transport for row in ROWS))

NOTES = (
    "p50/p99: one-way latency in µs, paced (one message in flight), after a warm-up.",
    f"Queue depth / slot count / high-water mark is {DEPTH} for every transport.",
    "GB/s = 1e9 B/s while streaming, the receiver reading every byte (uint64 sum).",
    "Pipe: the kernel copies the payload into the socket and out again, and "
    "Connection.recv_bytes assembles the chunks in a BytesIO (a 3rd copy); the receiver then "
    "views the bytes with np.frombuffer (no copy).",
    "shm ring: one memcpy by the sender into a free slot; the receiver views the slot; slot "
    "indices and 'free' messages travel over a multiprocessing.Pipe.",
    "pyzmq copy=False: no copy into the zmq message above 64 KiB, but the ipc:// Unix socket "
    "still copies through the kernel.",
    "iceoryx2 / zerohop 'loaned (fill)': the fill `array[:] = src` IS a memcpy, the same one "
    "copy-send does; 'loaned (touch header)' writes only 64 bytes (the size-independent path "
    "of a producer that renders straight into the loaned buffer). Latency clocks start "
    "before the loan, so they include loan + fill + send.",
    "iceoryx2: the slice payload reaches numpy via Slice.as_memory_view() (ctypes "
    "from_address, zero-copy, a few µs of object creation); the receiver sleeps on an "
    "iceoryx2 Event listener that the sender notifies after every send.",
    "zerohop 'vs Pipe': zerohop ÷ Pipe at the reference size; p50 below 1x and GB/s above 1x "
    "mean zerohop is faster.",
    "Machine bounds (measured first, same run): the wake-up floor is an 8-byte os.write into a "
    "pipe read by a blocked process (what any transport that sleeps pays per message); the "
    "read ceiling is the receiver's every-byte read over depth + 1 local buffers, no transport.",
)


@dataclass(frozen=True)
class Placement:
    """Where the two peers run: pinned to one CPU each (``split``), both to one CPU
    (``same``), or wherever the scheduler puts them (``free``)."""

    name: str
    cpus: tuple[int, int] | None

    @property
    def label(self) -> str:
        if self.cpus is None:
            return "free (the scheduler places the peers)"
        sender, receiver = self.cpus
        if sender == receiver:
            return f"same CPU (both peers pinned to CPU {sender})"
        return f"split (sender pinned to CPU {sender}, receiver to CPU {receiver})"


def placements(text: str | None) -> list[Placement]:
    """``--placement``: ``split``, ``same`` and/or ``free``; default ``split,same`` when two
    CPUs are usable (a cross-CPU wake-up and a same-CPU switch cost very different amounts
    on a VM, and an unpinned run lands in either, so its small-message numbers swing 2-3x)."""
    usable = sorted(os.sched_getaffinity(0))
    if text is None:
        text = "split,same" if len(usable) >= 2 else "free"
    known = {"free": None, "same": (usable[0], usable[0])}
    if len(usable) >= 2:
        known["split"] = (usable[0], usable[1])
    chosen = []
    for name in dict.fromkeys(part.strip() for part in text.split(",") if part.strip()):
        if name not in known:
            raise SystemExit(f"placement {name!r} not available here; choose from {sorted(known)}")
        chosen.append(Placement(name, known[name]))
    return chosen


@dataclass
class CellResult:
    """Outcome of one (row, size, placement) cell."""

    transport: str
    mode: str
    size: int
    placement: str
    status: str  # ok | error | not installed | interrupted
    detail: str = ""
    latency: _stats.LatencySummary | None = None
    throughput: _stats.ThroughputSummary | None = None
    counts: dict[str, int] = field(default_factory=dict)


# ---------------------------------------------------------------------------- options


def parse_size(text: str) -> int:
    """``6220800``, ``64KiB``, ``1MiB``, ``3.84MB`` (decimal), ``6.2MB``/``1080p`` (= 6,220,800)."""
    key = text.strip().lower().replace(" ", "")
    if key in SIZE_ALIASES:
        return SIZE_ALIASES[key]
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([a-z]*)", key)
    if match is None or match.group(2) not in UNITS:
        raise argparse.ArgumentTypeError(f"bad size {text!r}")
    size = round(float(match.group(1)) * UNITS[match.group(2)])
    if size < 16:
        raise argparse.ArgumentTypeError(f"size {text!r} is below the 16-byte minimum")
    return size


def parse_sizes(text: str) -> list[int]:
    return [parse_size(part) for part in text.split(",") if part.strip()]


def select_rows(text: str | None) -> list[Row]:
    """``--transports``: transport names (``zerohop``) or single rows (``zerohop:copy-send``)."""
    if text is None:
        return list(ROWS)
    wanted = {part.strip() for part in text.split(",") if part.strip()}
    known = set(TRANSPORTS) | {row.key for row in ROWS}
    unknown = wanted - known
    if unknown:
        raise SystemExit(f"unknown transport(s) {sorted(unknown)}; choose from {sorted(known)}")
    return [row for row in ROWS if row.transport in wanted or row.key in wanted]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="~30 s smoke run")
    parser.add_argument(
        "--sizes",
        type=parse_sizes,
        default=list(DEFAULT_SIZES),
        help="comma-separated payload sizes (default: 1KiB,64KiB,1MiB,3.84MB,6.2MB,10MiB)",
    )
    parser.add_argument(
        "--transports",
        default=None,
        help=f"comma-separated subset of {','.join(TRANSPORTS)} or transport:mode rows",
    )
    parser.add_argument(
        "--placement",
        default=None,
        help="comma-separated peer placements: split (one CPU each), same (one CPU for both), "
        "free (unpinned); default split,same",
    )
    parser.add_argument(
        "--json",
        type=Path,
        default=Path("bench-results/ipc.json"),
        help="where to write all results as JSON (default: bench-results/ipc.json)",
    )
    return parser.parse_args(argv)


def message_counts(size: int, quick: bool) -> tuple[int, int, int]:
    """(warm-up, latency, throughput) message counts: fewer for bigger payloads."""
    mib = 1 << 20
    if quick:
        n_lat = _clamp(48 * mib // size, 30, 300)
        n_tput = _clamp(96 * mib // size, 12, 10_000)
    else:
        n_lat = _clamp(3_072 * mib // size, 500, 5_000)
        n_tput = _clamp(3_072 * mib // size, 300, 40_000)
    n_warm = _clamp(n_lat // 10, 2 * DEPTH, 200)
    return n_warm, n_lat, n_tput


def _clamp(value: int, low: int, high: int) -> int:
    return max(low, min(high, value))


# ---------------------------------------------------------------------- availability


def unavailable_reason(transport: str) -> str | None:
    """Why a transport cannot run here, or None when it can."""
    if transport == "zmq":
        return _import_problem("zmq", "pip install pyzmq")
    if transport == "iceoryx2":
        return _import_problem("iceoryx2", "pip install iceoryx2==0.10.0")
    if transport == "zerohop":
        problem = _import_problem("zerohop", "build it: pip install -e . / maturin develop")
        if problem is not None:
            return problem
        zerohop = importlib.import_module("zerohop")
        missing = [name for name in ("Sender", "Receiver", "Tensor") if not hasattr(zerohop, name)]
        if missing:
            return f"not available (zerohop lacks {', '.join(missing)})"
    return None


def _import_problem(module: str, hint: str) -> str | None:
    try:
        importlib.import_module(module)
    except Exception as exc:  # ImportError, or a broken native extension
        return f"not installed ({type(exc).__name__}: {exc}; {hint})"
    return None


# ---------------------------------------------------------------------- running cells


class CellError(RuntimeError):
    """A peer failed, died or timed out."""


class Workspace:
    """Per-run unique names and the temporary resources the parent owns and cleans up."""

    def __init__(self) -> None:
        self._counter = 0
        self.tmpdir = Path(tempfile.mkdtemp(prefix="zerohop-bench-"))

    def next_name(self) -> str:
        self._counter += 1
        return f"bench-{os.getpid()}-{self._counter}"

    def close(self) -> None:
        shutil.rmtree(self.tmpdir, ignore_errors=True)


def make_spec(
    row: Row, size: int, placement: Placement, quick: bool, workspace: Workspace
) -> _peers.CellSpec:
    n_warm, n_lat, n_tput = message_counts(size, quick)
    channel = workspace.next_name()
    if row.transport == "zmq":
        channel = f"ipc://{workspace.tmpdir / channel}.sock"
    return _peers.CellSpec(
        transport=row.transport,
        mode=row.mode,
        size=size,
        n_warmup=n_warm,
        n_latency=n_lat,
        n_throughput=n_tput,
        depth=DEPTH,
        channel=channel,
        cpus=placement.cpus,
    )


def cell_timeout(spec: _peers.CellSpec) -> float:
    """A generous wall-clock limit: 0.1 GB/s and 1 ms per message would still fit."""
    messages = spec.n_warmup + spec.n_latency + spec.n_throughput
    return 30.0 + messages * (spec.size / 1e8 + 1e-3)


@contextlib.contextmanager
def ring_segment(spec: _peers.CellSpec) -> Iterator[None]:
    """The shm ring's segment is created and always unlinked by the parent."""
    if spec.transport != "shm-ring":
        yield
        return
    size = spec.depth * _peers.ring_slot_bytes(spec.size)
    shm = shared_memory.SharedMemory(name=spec.channel, create=True, size=size)
    try:
        yield
    finally:
        shm.close()
        shm.unlink()


def run_cell(ctx: SpawnContext, spec: _peers.CellSpec) -> dict[str, Any]:
    """Run the two peers of one cell in fresh processes; return the receiver's report."""
    ctl_send, ctl_recv = ctx.Pipe()
    data_send, data_recv = ctx.Pipe()  # the Pipe transport's data / the ring's signalling
    reports = {role: ctx.Pipe(duplex=False) for role in ("send", "recv")}
    ends = {"send": (ctl_send, data_send), "recv": (ctl_recv, data_recv)}
    procs: dict[str, SpawnProcess] = {}
    grace = 0.5  # seconds a peer gets to exit by itself; long only after a clean run
    try:
        with ring_segment(spec):
            for role in ("send", "recv"):
                args = (role, spec, *ends[role], reports[role][1])
                proc = ctx.Process(target=_peers.run_peer, args=args, daemon=True)
                with _sigint_ignored():
                    proc.start()
                procs[role] = proc
                for conn in (*ends[role], reports[role][1]):
                    conn.close()  # the child has its own copies; EOF then means "peer gone"
            outcome = _collect(procs, {r: pipe[0] for r, pipe in reports.items()}, spec)
            grace = 10.0
    finally:
        _stop_all(procs, grace)
        for reader, _writer in reports.values():
            reader.close()
    return outcome


@contextlib.contextmanager
def _sigint_ignored() -> Iterator[None]:
    """Start peers with SIGINT ignored: the disposition survives exec and Python keeps it,
    so a Ctrl-C in the terminal reaches only the parent, which then stops the peers."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _collect(
    procs: dict[str, SpawnProcess], readers: dict[str, Connection], spec: _peers.CellSpec
) -> dict[str, Any]:
    deadline = time.monotonic() + cell_timeout(spec)
    results: dict[str, dict[str, Any]] = {}
    while len(results) < len(procs):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise CellError(f"timed out after {cell_timeout(spec):.0f} s")
        pending = [role for role in procs if role not in results]
        wait([readers[r] for r in pending] + [procs[r].sentinel for r in pending], remaining)
        for role in pending:
            report = _poll_report(role, procs[role], readers[role])
            if report is None:
                continue
            if not report.get("ok"):
                peer = "sender" if role == "send" else "receiver"
                raise CellError(f"{peer}: {report.get('error', 'failed')}")
            results[role] = report
    return results["recv"]


def _poll_report(role: str, proc: SpawnProcess, reader: Connection) -> dict[str, Any] | None:
    if reader.poll():
        try:
            report: dict[str, Any] = reader.recv()
        except EOFError:
            proc.join(1.0)
            return {"ok": False, "error": f"process exited with code {proc.exitcode}"}
        return report
    if not proc.is_alive():
        return {"ok": False, "error": f"process exited with code {proc.exitcode}"}
    return None


def _stop_all(procs: dict[str, SpawnProcess], grace: float) -> None:
    """Join peers that are finishing; terminate, then kill, the ones that are not."""
    deadline = time.monotonic() + grace
    for proc in procs.values():
        proc.join(max(0.0, deadline - time.monotonic()))
    for proc in procs.values():
        if proc.is_alive():
            proc.terminate()  # SIGTERM: the peer unwinds and closes its channel
            proc.join(3.0)
        if proc.is_alive():
            proc.kill()
            proc.join()
        proc.close()


def cleanup_after_failure(transport: str) -> None:
    """Best effort: free the shared memory of a peer that had to be killed."""
    with contextlib.suppress(Exception):
        if transport == "iceoryx2":
            iox = importlib.import_module("iceoryx2")
            iox.set_log_level(iox.LogLevel.Fatal)
            node = iox.NodeBuilder.new().create(iox.ServiceType.Ipc)
            node.try_cleanup_dead_nodes()
        elif transport == "zerohop":
            importlib.import_module("zerohop").reclaim_dead()


def measure(
    ctx: SpawnContext, row: Row, size: int, placement: Placement, quick: bool, ws: Workspace
) -> CellResult:
    """Run one cell and turn the receiver's raw numbers into summaries."""
    spec = make_spec(row, size, placement, quick, ws)
    counts = {"warmup": spec.n_warmup, "latency": spec.n_latency, "throughput": spec.n_throughput}
    result = CellResult(row.transport, row.mode, size, placement.name, "ok", counts=counts)
    try:
        report = run_cell(ctx, spec)
    except Exception as exc:
        cleanup_after_failure(row.transport)
        result.status, result.detail = "error", f"{type(exc).__name__}: {exc}"
        return result
    result.latency = _stats.summarize_latency(report["latency_ns"])
    result.throughput = _stats.summarize_throughput(
        spec.n_throughput, size, int(report["throughput_ns"])
    )
    return result


# --------------------------------------------------------------------------- reporting


def progress(result: CellResult, seconds: float) -> None:
    head = (
        f"  {result.placement:<5} {result.transport}:{result.mode:<14}"
        f" {_stats.size_label(result.size):>8}"
    )
    if result.latency is None or result.throughput is None:
        print(f"{head}  {result.status}: {result.detail}", file=sys.stderr, flush=True)
        return
    lat, tput = result.latency, result.throughput
    print(
        f"{head}  p50 {_stats.fmt_us(lat.p50_us):>7} µs  p99 {_stats.fmt_us(lat.p99_us):>7} µs"
        f"  {tput.gb_per_s:7.2f} GB/s  {tput.msgs_per_s:9.0f} msg/s  ({seconds:.1f} s)",
        file=sys.stderr,
        flush=True,
    )


def _lookup(results: Sequence[CellResult], row: Row, size: int) -> CellResult | None:
    for result in results:
        if (result.transport, result.mode, result.size) == (row.transport, row.mode, size):
            return result
    return None


def _latency_cell(result: CellResult | None) -> str:
    if result is None:
        return ""
    if result.latency is None:
        return result.status
    return f"{_stats.fmt_us(result.latency.p50_us)} / {_stats.fmt_us(result.latency.p99_us)}"


def _gbps(result: CellResult | None) -> str:
    if result is None or result.throughput is None:
        return "-" if result is None else result.status
    return f"{result.throughput.gb_per_s:.2f}"


def _ratio_vs_pipe(row: Row, result: CellResult | None, pipe: CellResult | None) -> str:
    if row.transport != "zerohop":
        return ""
    if result is None or pipe is None or result.latency is None or pipe.latency is None:
        return "-"
    assert result.throughput is not None and pipe.throughput is not None
    lat = result.latency.p50_us / pipe.latency.p50_us
    tput = result.throughput.gb_per_s / pipe.throughput.gb_per_s
    return f"p50 {_ratio(lat)} · GB/s {_ratio(tput)}"


def _ratio(value: float) -> str:
    return f"{value:.2g}x" if value < 10 else f"{value:.0f}x"


def latency_table(
    rows: Sequence[Row],
    sizes: Sequence[int],
    results: Sequence[CellResult],
    skipped: dict[str, str],
) -> str:
    ref = FULL_HD if FULL_HD in sizes else max(sizes)
    ref_label = _stats.size_label(ref)
    header = ["transport · mode"] + [f"{_stats.size_label(s)} p50/p99 µs" for s in sizes]
    header += [f"GB/s @ {ref_label}", f"vs Pipe @ {ref_label}"]
    pipe = _lookup(results, ROWS[0], ref)
    lines = []
    for row in rows:
        if row.transport in skipped:
            short = skipped[row.transport].split(" (")[0]  # details are listed below
            lines.append([row.label, short] + [""] * (len(header) - 2))
            continue
        cells = [_latency_cell(_lookup(results, row, size)) for size in sizes]
        ref_result = _lookup(results, row, ref)
        ratio = _ratio_vs_pipe(row, ref_result, pipe)
        lines.append([row.label, *cells, _gbps(ref_result), ratio])
    return _stats.markdown_table(header, lines)


def throughput_table(
    rows: Sequence[Row],
    sizes: Sequence[int],
    results: Sequence[CellResult],
    skipped: dict[str, str],
) -> str:
    header = ["transport · mode"] + [f"{_stats.size_label(s)} GB/s (msg/s)" for s in sizes]
    lines = []
    for row in rows:
        if row.transport in skipped:
            continue
        cells = []
        for size in sizes:
            result = _lookup(results, row, size)
            if result is None or result.throughput is None:
                cells.append("" if result is None else result.status)
            else:
                tput = result.throughput
                cells.append(f"{tput.gb_per_s:.2f} ({tput.msgs_per_s:,.0f})")
        lines.append([row.label, *cells])
    return _stats.markdown_table(header, lines)


def print_report(
    rows: Sequence[Row],
    sizes: Sequence[int],
    chosen: Sequence[Placement],
    results: Sequence[CellResult],
    skipped: dict[str, str],
    floors: _floors.Floors | None,
) -> None:
    if floors is not None:
        print("\n## What this machine allows (measured in this run)\n")
        print(floors_report(sizes, chosen, floors))
    for placement in chosen:
        mine = [r for r in results if r.placement == placement.name]
        print(f"\n## Placement {placement.name}: {placement.label}")
        wake = floors.wake.get(placement.name) if floors is not None else None
        targets = targets_report(mine, wake, floors.read_gb_per_s if floors else {})
        if targets:
            print("\nChannel targets:\n")
            print("\n".join(targets))
        print("\nOne-way latency (p50 / p99 µs) and throughput:\n")
        print(latency_table(rows, sizes, mine, skipped))
        print("\nThroughput at every size:\n")
        print(throughput_table(rows, sizes, mine, skipped))
    if skipped:
        print("\nSkipped:")
        for transport, reason in skipped.items():
            print(f"- {transport}: {reason}")
    failures = [r for r in results if r.status == "error"]
    if failures:
        print("\nErrors:")
        for r in failures:
            label = f"{r.placement} {r.transport}:{r.mode} {_stats.size_label(r.size)}"
            print(f"- {label}: {r.detail}")
    print("\nNotes:")
    for note in NOTES:
        print(f"- {note}")


def floors_report(sizes: Sequence[int], chosen: Sequence[Placement], floors: _floors.Floors) -> str:
    lines = [
        f"- wake-up floor, {placement.name} (8 bytes through a pipe to a blocked process): p50 "
        f"{_stats.fmt_us(wake.p50_us)} µs, p99 {_stats.fmt_us(wake.p99_us)} µs"
        for placement in chosen
        if (wake := floors.wake.get(placement.name)) is not None
    ]
    lines += [
        "- read ceiling (every-byte read, no transport): "
        + ", ".join(
            f"{_stats.size_label(size)} {floors.read_gb_per_s[size]:.1f} GB/s" for size in sizes
        ),
    ]
    return "\n".join(lines)


def targets_report(
    results: Sequence[CellResult],
    wake: _stats.LatencySummary | None,
    read_gb_per_s: dict[int, float],
) -> list[str]:
    """The channel targets against Pipe, zerohop and the machine bounds of one placement."""
    lines = []
    small, pipe_row = 1 << 10, ROWS[0]
    pipe = _lookup(results, pipe_row, small)
    zh_small = [
        (r.latency.p50_us, r.mode)
        for r in results
        if r.transport == "zerohop" and r.size == small and r.latency is not None
    ]
    if pipe and pipe.latency and zh_small:
        goal = pipe.latency.p50_us / 2
        best_us, best_mode = min(zh_small)
        line = (
            f"- 1 KiB p50 <= 1/2 Pipe's: Pipe {_stats.fmt_us(pipe.latency.p50_us)} µs, so "
            f"<= {_stats.fmt_us(goal)} µs; zerohop {best_mode} "
            f"{_stats.fmt_us(best_us)} µs ({_verdict(best_us <= goal)})"
        )
        if wake is not None:
            line += (
                f"; the wake-up floor alone is {_stats.fmt_us(wake.p50_us)} µs "
                f"({wake.p50_us / pipe.latency.p50_us:.2f}x Pipe)"
            )
        lines.append(line)
    big = _lookup(results, Row("zerohop", "loaned-header", ""), 10 << 20)
    if big and big.latency:
        ok = big.latency.p50_us < 100
        lines.append(
            f"- 10 MiB loaned view < 100 µs p50: {_stats.fmt_us(big.latency.p50_us)} µs "
            f"({_verdict(ok)})"
        )
    pipe_hd = _lookup(results, pipe_row, FULL_HD)
    zh_hd = [
        (r.throughput.gb_per_s, r.mode)
        for r in results
        if r.transport == "zerohop" and r.size == FULL_HD and r.throughput is not None
    ]
    if pipe_hd and pipe_hd.throughput and zh_hd and FULL_HD in read_gb_per_s:
        top_gbps, top_mode = max(zh_hd)
        goal = 10 * pipe_hd.throughput.gb_per_s
        ceiling = read_gb_per_s[FULL_HD]
        lines.append(
            f"- 6.22 MB consumed >= 10x Pipe's GB/s: Pipe {pipe_hd.throughput.gb_per_s:.2f}, so "
            f">= {goal:.1f} GB/s; zerohop {top_mode} {top_gbps:.1f} GB/s "
            f"({_verdict(top_gbps >= goal)}); the read ceiling alone is "
            f"{ceiling:.1f} GB/s ({ceiling / pipe_hd.throughput.gb_per_s:.1f}x Pipe)"
        )
    return lines


def _verdict(met: bool) -> str:
    return "met" if met else "not met"


def write_json(path: Path, document: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")


# -------------------------------------------------------------------------------- main


def _interrupt(_signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def run_all(
    rows: Sequence[Row],
    sizes: Sequence[int],
    chosen: Sequence[Placement],
    quick: bool,
    skipped: dict[str, str],
) -> tuple[list[CellResult], bool]:
    """Measure every (placement, row, size) cell; stop early (keeping results) on Ctrl-C."""
    ctx = mp.get_context("spawn")
    workspace = Workspace()
    results: list[CellResult] = []
    try:
        for placement, row in ((p, r) for p in chosen for r in rows):
            if row.transport in skipped:
                print(f"  {row.key:<24} {skipped[row.transport]}", file=sys.stderr)
                continue
            for size in sizes:
                started = time.monotonic()
                result = measure(ctx, row, size, placement, quick, workspace)
                results.append(result)
                progress(result, time.monotonic() - started)
    except KeyboardInterrupt:
        print("\ninterrupted: peers stopped, partial results follow", file=sys.stderr)
        return results, True
    finally:
        workspace.close()
    return results, False


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    rows = select_rows(args.transports)
    chosen = placements(args.placement)
    sizes: list[int] = list(dict.fromkeys(args.sizes))
    signal.signal(signal.SIGTERM, _interrupt)  # a terminated run cleans up like Ctrl-C

    info = _stats.machine_info()
    print("# zerohop IPC benchmark" + (" (--quick)" if args.quick else ""))
    print()
    for key, value in info.items():
        print(f"- {key}: {value}")
    sys.stdout.flush()

    transports = dict.fromkeys(row.transport for row in rows)
    reasons = {t: unavailable_reason(t) for t in transports}
    skipped = {t: reason for t, reason in reasons.items() if reason is not None}
    started = time.monotonic()
    floors = None
    results: list[CellResult] = []
    interrupted = True  # unless the floors and the cells both run to the end
    with contextlib.suppress(KeyboardInterrupt):
        pins = {p.name: p.cpus for p in chosen}
        floors = _floors.measure(mp.get_context("spawn"), sizes, DEPTH, pins, args.quick)
        print(floors_report(sizes, chosen, floors), file=sys.stderr, flush=True)
    if floors is not None:  # Ctrl-C while measuring them stops the run
        results, interrupted = run_all(rows, sizes, chosen, args.quick, skipped)

    print_report(rows, sizes, chosen, results, skipped, floors)
    print(f"\nTotal time {time.monotonic() - started:.0f} s.")
    document = {
        "benchmark": "ipc",
        "quick": args.quick,
        "interrupted": interrupted,
        "machine": info,
        "depth": DEPTH,
        "placements": [asdict(p) for p in chosen],
        "sizes": sizes,
        "skipped": skipped,
        "floors": None if floors is None else asdict(floors),
        "results": [asdict(r) for r in results],
        "notes": list(NOTES),
    }
    write_json(args.json, document)
    print(f"JSON written to {args.json}")
    return 130 if interrupted else 0


if __name__ == "__main__":
    sys.exit(main())
