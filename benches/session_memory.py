"""Host memory kept per session: open, use and close many sessions of one kind in one
thread and report what the host's RSS (and Python's own allocations) gained per session.

The soak runs sessions from several threads at once, so its RSS also holds what glibc's
per-thread arenas keep; this isolates the sessions themselves. Kinds:

- ``plain``: Echo → PassThrough (native) → UpperCase, three text frames;
- ``crash``: Echo → Crash, failing at its second frame by each of the four crash modes
  in turn (exception, ``os._exit``, segfault, SIGKILL);
- ``large``: Echo → PassThrough with four float64 tensors of random size up to 10 MiB.

Run:  python benches/session_memory.py [--sessions 300] [--kinds plain,crash,large]
"""

from __future__ import annotations

import argparse
import gc
import os
import random
import sys
import tracemalloc
from collections.abc import Callable

import numpy as np

import zerohop.testing  # noqa: F401  (Crash: an opt-in fault injector)
from zerohop import NodeFailure, Pipeline, Tensor, Text

CRASH_MODES = ("process_exception", "exit", "segfault", "sigkill")
WARMUP = 30


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def plain(i: int) -> None:
    pipe = (
        Pipeline(f"plain{i}")
        .node("a", "Echo")
        .node("b", "PassThrough")
        .node("c", "UpperCase")
        .connect("a", "b", "c")
    )
    with pipe.session() as session:
        for k in range(3):
            session.send(Text(f"frame {k}"))
        session.end_input()
        if len(list(session.outputs())) != 3:
            raise AssertionError("a frame went missing")


def crash(i: int) -> None:
    mode = CRASH_MODES[i % len(CRASH_MODES)]
    pipe = Pipeline(f"crash{i}").node("a", "Echo").node("x", "Crash", mode=mode, after=1)
    try:
        with pipe.connect("a", "x").session() as session:
            for k in range(3):
                session.send(Text(f"frame {k}"))
            session.end_input()
            list(session.outputs())
    except NodeFailure as err:
        if err.node_id != "x":
            raise
    else:
        raise AssertionError(f"Crash ({mode}) did not fail the session")


def large(i: int) -> None:
    rng = random.Random(i)
    pipe = Pipeline(f"large{i}").node("a", "Echo").node("b", "PassThrough").connect("a", "b")
    with pipe.session() as session:
        for _ in range(4):
            session.send(Tensor(np.ones(rng.randint(1, 10 << 20) // 8)))
        session.end_input()
        if sum(1 for _ in session.outputs()) != 4:
            raise AssertionError("a frame went missing")


KINDS: dict[str, Callable[[int], None]] = {"plain": plain, "crash": crash, "large": large}


def measure(kind: str, sessions: int) -> tuple[float, float, float]:
    """(RSS before, RSS after in MiB, Python allocations gained in bytes)."""
    run = KINDS[kind]
    for i in range(WARMUP):
        run(i)
    gc.collect()
    tracemalloc.start()
    before, traced = rss_mib(), tracemalloc.get_traced_memory()[0]
    for i in range(sessions):
        run(WARMUP + i)
    gc.collect()
    gained = tracemalloc.get_traced_memory()[0] - traced
    tracemalloc.stop()
    return before, rss_mib(), gained


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=300)
    parser.add_argument("--kinds", default=",".join(KINDS))
    args = parser.parse_args()
    if "MALLOC_MMAP_THRESHOLD_" not in os.environ:
        # As in the soak: a fixed mmap threshold, so freed large frames leave RSS.
        os.environ["MALLOC_MMAP_THRESHOLD_"] = str(128 << 10)
        os.execv(sys.executable, [sys.executable, *sys.argv])
    print("| kind | sessions | RSS before → after (MiB) | RSS per session | Python allocations |")
    print("| :--- | ---: | ---: | ---: | ---: |")
    for kind in args.kinds.split(","):
        before, after, gained = measure(kind, args.sessions)
        print(
            f"| {kind} | {args.sessions} | {before:.1f} → {after:.1f} | "
            f"{(after - before) * 1024 / args.sessions:.2f} KiB | "
            f"{gained / args.sessions:.0f} B per session |",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
