"""Statistics, machine description and formatting helpers for ``benches/ipc.py``."""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import math
import os
import platform
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

KIB = 1024
MIB = 1024 * 1024


@dataclass(frozen=True)
class LatencySummary:
    """One-way latency percentiles of one measured cell, in microseconds."""

    n: int
    p50_us: float
    p99_us: float
    mean_us: float
    min_us: float
    max_us: float


@dataclass(frozen=True)
class ThroughputSummary:
    """Streaming throughput of one measured cell."""

    n: int
    seconds: float
    gb_per_s: float
    msgs_per_s: float


def summarize_latency(latencies_ns: npt.NDArray[np.int64]) -> LatencySummary:
    """Summarize raw one-way latencies (nanoseconds) as microsecond percentiles."""
    if latencies_ns.size == 0:
        raise ValueError("no latency samples")
    us = latencies_ns.astype(np.float64) / 1e3
    p50, p99 = np.percentile(us, [50.0, 99.0])
    return LatencySummary(
        n=int(us.size),
        p50_us=float(p50),
        p99_us=float(p99),
        mean_us=float(us.mean()),
        min_us=float(us.min()),
        max_us=float(us.max()),
    )


def summarize_throughput(n_msgs: int, size: int, elapsed_ns: int) -> ThroughputSummary:
    """Turn "n messages of ``size`` bytes in ``elapsed_ns``" into GB/s (1e9 B/s) and msgs/s."""
    seconds = max(elapsed_ns, 1) / 1e9
    return ThroughputSummary(
        n=n_msgs,
        seconds=seconds,
        gb_per_s=n_msgs * size / seconds / 1e9,
        msgs_per_s=n_msgs / seconds,
    )


def size_label(size: int) -> str:
    """Human label for a payload size: binary units when exact, else decimal MB."""
    if size % MIB == 0:
        return f"{size // MIB} MiB"
    if size % KIB == 0 and size < MIB:
        return f"{size // KIB} KiB"
    if size >= 1_000_000:
        return f"{size / 1e6:.3g} MB"
    return f"{size} B"


def fmt_us(value: float) -> str:
    """Format microseconds with about three significant digits."""
    if math.isnan(value):
        return "-"
    if value >= 100:
        return f"{value:.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Render a Markdown table; the first column is left-aligned, the others right-aligned."""
    align = [":---"] + ["---:"] * (len(header) - 1)
    lines = [_md_row(header), _md_row(align)]
    lines.extend(_md_row(row) for row in rows)
    return "\n".join(lines)


def _md_row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cells) + " |"


# ------------------------------------------------------------------------- machine info


def cpu_model() -> str:
    """CPU model name from /proc/cpuinfo (Linux), falling back to ``platform``."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return platform.processor() or "unknown"
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("model name", "Model", "Hardware"):
            return value.strip()
    return platform.processor() or "unknown"


def package_version(name: str) -> str:
    """Installed distribution version, or "not installed"."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def libzmq_version() -> str:
    """Version of the libzmq that pyzmq is linked against, if pyzmq imports."""
    try:
        zmq = importlib.import_module("zmq")
    except ImportError:
        return "not installed"
    return str(zmq.zmq_version())


def zerohop_build() -> str:
    """zerohop's version and whether its native extension looks like a debug build.

    Rust debug builds keep overflow checks, whose panic messages end up in the binary;
    release builds (``pip install .``) drop them. ``maturin develop`` builds debug by default.
    """
    version = package_version("zerohop")
    try:
        spec = importlib.util.find_spec("zerohop._native")
    except Exception:  # zerohop itself fails to import
        return version
    if spec is None or spec.origin is None:
        return version
    try:
        binary = Path(spec.origin).read_bytes()
    except OSError:
        return version
    if b"attempt to add with overflow" in binary:
        return f"{version} (native extension looks like a DEBUG build: numbers not representative)"
    return f"{version} (release build)"


def machine_info() -> dict[str, str]:
    """Facts about the machine and software that the numbers depend on."""
    try:
        usable = str(len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        usable = "?"
    return {
        "cpu": cpu_model(),
        "cores": f"{os.cpu_count()} logical ({usable} usable by this process)",
        "os": f"{platform.system()} {platform.release()} {platform.machine()}",
        "python": f"{platform.python_implementation()} {sys.version.split()[0]}",
        "numpy": np.__version__,
        "pyzmq": f"{package_version('pyzmq')} (libzmq {libzmq_version()})",
        "iceoryx2": package_version("iceoryx2"),
        "zerohop": zerohop_build(),
    }
