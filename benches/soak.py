"""Soak: open, stream through, crash and close sessions for a while; prove nothing grows.

For ``--duration`` seconds, ``--workers`` threads each repeat: build a random pipeline of
1-6 nodes (test nodes and the native ``PassThrough``), open a session, stream 1-40
random frames (text, json, bytes, tensor, audio, video; up to 10 MiB) through it, check
that every expected frame came out, close it. About one session in six gets a ``Crash``
node on purpose (exception, ``os._exit``, segfault, SIGKILL) and must fail with the error
naming that node. Every operation has a deadline; one over it is a hang.

A sampler records, every ``--sample-every`` seconds: host RSS, open fds, threads, live
descendant processes (the zygote and the nodes) and their summed RSS, this run's
/dev/shm entries and bytes. Output in ``--out``: ``soak.csv``, ``soak.png`` and
``verdict.json``. The verdict fails (exit 1) on any hang, lost or extra frame, wrong
error, an RSS floor slope over ``--max-rss-slope`` MiB/h (least squares over the lowest
RSS of each tenth of the run after the warm-up: frames in flight swing RSS, a leak lifts
the floor; judged in runs of 10 minutes or more), or when, idle at the end, host RSS
gained more than ``--max-idle-rss-gain`` MiB or fds/threads/processes/shm entries are
above their idle level at the start (after one warm-up session started the zygote). It
runs with glibc's mmap threshold fixed (``MALLOC_MMAP_THRESHOLD_``, re-exec'ing itself),
so freed large frames leave RSS; ``--default-malloc`` keeps glibc's rising high-water mark instead.

Run:  python benches/soak.py --duration 3600 --out soak-1h   (the 1-hour soak)
      python benches/soak.py --duration 120 --out /tmp/soak  (the CI-sized one)
"""

from __future__ import annotations

import argparse
import csv
import gc
import json
import os
import random
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

import zerohop
import zerohop.nodes.testing
import zerohop.testing
from zerohop import Audio, Bytes, Json, NodeFailure, Pipeline, Tensor, Text, Video, ZerohopError

SHM = Path("/dev/shm")
PREFIX = os.environ.setdefault("ZEROHOP_SHM_PREFIX", f"zhsoak{os.getpid()}_")
MAX_BYTES = 10 << 20
SLOPE_JUDGED_FROM = 600.0  # seconds: shorter runs report the RSS slope without judging it
KINDS = ("text", "json", "bytes", "tensor", "audio", "video")
CRASH_MODES = ("process_exception", "exit", "segfault", "sigkill")
COLUMNS = (
    "t",
    "host_rss_mib",
    "fds",
    "threads",
    "processes",
    "processes_rss_mib",
    "shm_entries",
    "shm_mib",
    "sessions",
)


# ---------------------------------------------------------------- resources


def _descendants() -> list[int]:
    parents: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z":
            parents.setdefault(int(fields[1]), []).append(int(entry.name))
    found, todo = [], [os.getpid()]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _fds() -> list[str]:
    targets = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            targets.append(f"{fd}->{os.readlink(f'/proc/self/fd/{fd}')}")
        except OSError:
            continue
    return targets


def _rss_mib(pid: int | str) -> float:
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGESIZE") / 2**20
    except OSError:
        return 0.0


def sample(sessions: int, t: float) -> dict[str, float]:
    """One row of the CSV: this process and everything it started, now."""
    pids = _descendants()
    shm = [p for p in SHM.iterdir() if p.name.startswith(PREFIX)] if SHM.is_dir() else []
    shm_bytes = 0
    for p in shm:
        try:
            shm_bytes += p.stat().st_blocks * 512
        except OSError:
            continue
    return {
        "t": round(t, 2),
        "host_rss_mib": round(_rss_mib("self"), 2),
        "fds": len(os.listdir("/proc/self/fd")),
        "threads": len(os.listdir("/proc/self/task")),
        "processes": len(pids),
        "processes_rss_mib": round(sum(_rss_mib(p) for p in pids), 1),
        "shm_entries": len(shm),
        "shm_mib": round(shm_bytes / 2**20, 2),
        "sessions": sessions,
    }


def slope_per_hour(ts: list[float], values: list[float]) -> float:
    """Least-squares slope of values over time, per hour."""
    if len(ts) < 3 or max(ts) - min(ts) <= 0:
        return 0.0
    return float(np.polyfit(np.asarray(ts), np.asarray(values, dtype=float), 1)[0] * 3600)


def floor_slope_per_hour(ts: list[float], values: list[float], windows: int = 10) -> float:
    """Slope of the lowest value in each of ``windows`` equal stretches of time.

    What frames happen to be in flight at a sample (up to 10 MiB each, several at once)
    swings RSS by tens of MiB; a leak raises the floor the process returns to between
    them. The floor is what the RSS verdict judges."""
    if len(ts) < 3 or max(ts) - min(ts) <= 0:
        return 0.0
    t, v = np.asarray(ts, dtype=float), np.asarray(values, dtype=float)
    edges = np.linspace(t.min(), t.max(), windows + 1)
    where = np.clip(np.searchsorted(edges, t, side="right") - 1, 0, windows - 1)
    picked = [where == w for w in range(windows) if np.any(where == w)]
    return slope_per_hour([float(t[m].mean()) for m in picked], [float(v[m].min()) for m in picked])


# ---------------------------------------------------------------- scenarios


def make_frame(kind: str, rng: random.Random, size: int) -> zerohop.Frame:
    if kind == "text":
        return Text("soak " * max(1, min(size, 1 << 16) // 5))
    if kind == "json":
        return Json({"n": rng.randrange(1 << 30), "tags": ["a"] * rng.randrange(8)})
    if kind == "bytes":
        return Bytes(rng.randbytes(min(size, 4096)) * max(1, size // 4096))
    if kind == "tensor":
        return Tensor(np.full(max(1, size // 4), rng.random(), dtype=np.float32))
    if kind == "audio":
        return Audio(np.zeros(max(1, size // 4), dtype=np.float32), 16000)
    side = max(1, int((size / 3) ** 0.5))
    return Video(np.zeros((side, side, 3), dtype=np.uint8))


# Node choices per incoming frame kind: (node type, params, frames out per frame in).
Step = tuple[str, dict[str, Any], int]


def node_choices(kind: str, rng: random.Random) -> list[Step]:
    steps: list[Step] = [("Echo", {}, 1), ("PassThrough", {}, 1)]
    times = rng.randint(0, 2)
    steps.append(("Repeat", {"times": times}, times))
    if kind == "text":
        steps += [("UpperCase", {}, 1), ("Suffix", {"suffix": "?"}, 1)]
    if kind in ("tensor", "audio"):
        steps.append(("Scale", {"factor": 0.5}, 1))
    return steps


@dataclass
class Scenario:
    seed: int
    kind: str
    sizes: list[int]
    steps: list[Step]
    crash_at: int | None  # index into steps of the Crash node
    expected: int | None  # frames out, when no crash is planned

    @classmethod
    def random(cls, seed: int) -> Scenario:
        rng = random.Random(seed)
        kind = rng.choice(KINDS)
        size = int(2 ** rng.uniform(4, 23.3))  # 16 B .. 10 MiB, log-uniform
        count = max(1, min(rng.randint(1, 40), (40 << 20) // max(size, 1)))
        sizes = [min(MAX_BYTES, max(1, int(size * rng.uniform(0.5, 1.0)))) for _ in range(count)]
        steps, factor = [], 1
        for _ in range(rng.randint(1, 6)):
            step = rng.choice(node_choices(kind, rng))
            steps.append(step)
            factor *= step[2]
        crash_at = None
        if rng.random() < 1 / 6:
            crash_at = rng.randrange(len(steps))
            mode = rng.choice(CRASH_MODES)
            steps[crash_at] = ("Crash", {"mode": mode, "after": rng.randrange(count)}, 1)
        expected = None if crash_at is not None else count * factor
        return cls(seed, kind, sizes, steps, crash_at, expected)

    def pipeline(self, config: zerohop.RuntimeConfig) -> Pipeline:
        pipe = Pipeline(f"soak{self.seed}", config=config)
        for i, (node_type, params, _) in enumerate(self.steps):
            pipe.node(f"n{i}_{node_type.lower()}", node_type, **params)
        ids = [f"n{i}_{t.lower()}" for i, (t, _, _) in enumerate(self.steps)]
        if len(ids) > 1:
            pipe.connect(*ids)
        return pipe


@dataclass
class Tally:
    sessions: int = 0
    crashed_on_purpose: int = 0
    frames_sent: int = 0
    frames_received: int = 0
    frames_expected: int = 0
    hangs: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def note(self, kind: str, message: str) -> None:
        with self.lock:
            (self.hangs if kind == "hang" else self.failures).append(message)
        print(f"[soak] {kind}: {message}", file=sys.stderr, flush=True)


def run_scenario(
    scenario: Scenario, config: zerohop.RuntimeConfig, deadline: float, tally: Tally
) -> None:
    """Opens, streams through and closes one session; records what went wrong."""
    rng = random.Random(scenario.seed)
    where = f"seed {scenario.seed} ({scenario.kind}, {[s[0] for s in scenario.steps]})"
    frames = [make_frame(scenario.kind, rng, size) for size in scenario.sizes]
    received = 0
    error: BaseException | None = None

    def timed(what: str, call: Callable[[], Any]) -> Any:
        started = time.monotonic()
        try:
            return call()
        finally:
            if time.monotonic() - started > deadline:
                tally.note("hang", f"{where}: {what} took {time.monotonic() - started:.1f} s")

    feeder_error: list[BaseException] = []
    session = timed("start", scenario.pipeline(config).session)

    def feed() -> None:
        try:
            for frame in frames:
                session.send(frame, timeout=deadline)
            session.end_input(timeout=deadline)
        except BaseException as err:
            feeder_error.append(err)

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    try:
        while timed("recv", lambda: session.recv(timeout=deadline)) is not None:
            received += 1
    except ZerohopError as err:
        error = err
    finally:
        timed("close", session.close)
        feeder.join(deadline)
    if feeder.is_alive():
        tally.note("hang", f"{where}: send blocked past {deadline} s")
    if error is None and feeder_error:
        error = feeder_error[0]
    with tally.lock:
        tally.sessions += 1
        tally.frames_sent += len(frames)
    if isinstance(error, zerohop.ZerohopTimeoutError):
        tally.note("hang", f"{where}: {error}")
    elif scenario.crash_at is not None:
        crash_id = f"n{scenario.crash_at}_crash"
        # No error is fine: the planned frame may never reach the node (Repeat times=0).
        named = isinstance(error, NodeFailure) and error.node_id == crash_id
        if error is not None and not named:
            tally.note("failure", f"{where}: expected a failure of {crash_id}, got {error!r}")
        with tally.lock:
            tally.crashed_on_purpose += 1
    elif error is not None:
        tally.note("failure", f"{where}: {error!r}")
    else:
        with tally.lock:
            tally.frames_received += received
            tally.frames_expected += scenario.expected or 0
        if received != scenario.expected:
            tally.note("failure", f"{where}: expected {scenario.expected} frames, got {received}")


# ---------------------------------------------------------------- the run


def plot(rows: list[dict[str, float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = [c for c in COLUMNS if c not in ("t", "sessions")]
    fig, axes = plt.subplots(len(series), 1, figsize=(9, 2 * len(series)), sharex=True)
    minutes = [r["t"] / 60 for r in rows]
    for ax, name in zip(axes, series, strict=True):
        ax.plot(minutes, [r[name] for r in rows], lw=1)
        ax.set_ylabel(name, fontsize=8)
        ax.grid(alpha=0.3)
    axes[-1].set_xlabel("minutes")
    fig.suptitle(f"zerohop soak: {rows[-1]['sessions']:.0f} sessions in {minutes[-1]:.0f} min")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def soak(args: argparse.Namespace) -> dict[str, Any]:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    config = zerohop.RuntimeConfig.model_validate(
        {"process": {"init_timeout_secs": args.deadline, "liveness_timeout_secs": 10.0}}
    )
    tally = Tally()
    rows: list[dict[str, float]] = []
    start = time.monotonic()
    stop = threading.Event()

    def sampler() -> None:
        while True:
            rows.append(sample(tally.sessions, time.monotonic() - start))
            if stop.wait(args.sample_every):
                return

    def worker(index: int) -> None:
        seed = args.seed * 1_000_003 + index
        while time.monotonic() - start < args.duration:
            try:
                run_scenario(Scenario.random(seed), config, args.deadline, tally)
            except Exception as err:
                tally.note("failure", f"seed {seed}: {err!r}")
            seed += args.workers

    # The zygote starts with the first session: warm up, then take the idle baseline.
    run_scenario(Scenario(0, "text", [5], [("Echo", {}, 1)], None, 1), config, args.deadline, tally)
    baseline = sample(tally.sessions, 0.0)
    start_fds = set(_fds())
    sampling = threading.Thread(target=sampler, daemon=True)
    sampling.start()
    workers = [threading.Thread(target=worker, args=(i,)) for i in range(args.workers)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    stop.set()
    sampling.join()
    # Idle now: everything a session held must be gone (the zygote stays). Sessions
    # caught in an exception's traceback cycle are garbage, not leaks: collect them.
    gc.collect()
    time.sleep(1.0)
    idle = sample(tally.sessions, time.monotonic() - start)
    rows.append(idle)

    warm = [r for r in rows if r["t"] >= args.warmup * args.duration] or rows
    ts = [r["t"] for r in warm]
    slopes = {c: round(slope_per_hour(ts, [r[c] for r in warm]), 2) for c in COLUMNS[1:-1]}
    slopes["host_rss_floor_mib"] = round(
        floor_slope_per_hour(ts, [r["host_rss_mib"] for r in warm]), 2
    )
    problems = [f"hang: {h}" for h in tally.hangs] + [f"failure: {f}" for f in tally.failures]
    if tally.frames_received != tally.frames_expected:
        problems.append(f"frames: expected {tally.frames_expected}, got {tally.frames_received}")
    # A slope over minutes says nothing (two 10 MiB frames in flight at every sample of a
    # stretch move the floor more than a leak would in an hour): short runs report it,
    # and judge only what idle RSS gained.
    if args.duration >= SLOPE_JUDGED_FROM and slopes["host_rss_floor_mib"] > args.max_rss_slope:
        problems.append(
            f"host RSS floor grows {slopes['host_rss_floor_mib']} MiB/h (> {args.max_rss_slope})"
        )
    gained = idle["host_rss_mib"] - baseline["host_rss_mib"]
    if gained > args.max_idle_rss_gain:
        problems.append(
            f"host RSS idle: {baseline['host_rss_mib']} MiB at the start, "
            f"{idle['host_rss_mib']} at the end (> +{args.max_idle_rss_gain})"
        )
    for name in ("fds", "threads", "processes", "shm_entries"):
        if idle[name] > baseline[name]:
            problems.append(
                f"{name}: {baseline[name]:.0f} idle at the start, {idle[name]:.0f} at the end"
            )
    if idle["fds"] > baseline["fds"]:
        problems.append(f"fds open at the end, not at the start: {sorted(set(_fds()) - start_fds)}")
    verdict = {
        "ok": not problems,
        "problems": problems,
        "duration_secs": round(time.monotonic() - start, 1),
        "workers": args.workers,
        "seed": args.seed,
        "sessions": tally.sessions,
        "crashed_on_purpose": tally.crashed_on_purpose,
        "frames_sent": tally.frames_sent,
        "frames_expected": tally.frames_expected,
        "frames_received": tally.frames_received,
        "hangs": len(tally.hangs),
        "slopes_per_hour": slopes,
        "idle_at_start": baseline,
        "idle_at_end": idle,
    }
    with open(out / "soak.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    (out / "verdict.json").write_text(json.dumps(verdict, indent=2) + "\n")
    if not args.no_plot:
        plot(rows, out / "soak.png")
    return verdict


def main(argv: list[str] | None = None) -> int:
    if "MALLOC_MMAP_THRESHOLD_" not in os.environ and "--default-malloc" not in sys.argv:
        # A fixed mmap threshold hands every large buffer back to the kernel when freed,
        # so RSS follows live memory instead of glibc's ever-rising high-water mark.
        os.environ["MALLOC_MMAP_THRESHOLD_"] = str(128 << 10)
        os.execv(sys.executable, [sys.executable, *sys.argv])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=120.0, help="seconds of new sessions")
    parser.add_argument("--workers", type=int, default=2, help="sessions open at once")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--deadline", type=float, default=60.0, help="max seconds per operation")
    parser.add_argument("--sample-every", type=float, default=2.0)
    parser.add_argument("--warmup", type=float, default=0.2, help="fraction of the run ignored")
    parser.add_argument(
        "--max-rss-slope",
        type=float,
        default=64.0,
        help=f"MiB/h, host RSS floor (judged in runs of {SLOPE_JUDGED_FROM:.0f} s or more)",
    )
    parser.add_argument(
        "--max-idle-rss-gain",
        type=float,
        default=64.0,
        help="MiB, host RSS idle at the end over idle at the start",
    )
    parser.add_argument("--out", default="soak-out")
    parser.add_argument(
        "--default-malloc", action="store_true", help="keep glibc's dynamic mmap threshold"
    )
    parser.add_argument("--no-plot", action="store_true", help="skip the PNG (no matplotlib)")
    verdict = soak(parser.parse_args(argv))
    print(json.dumps({k: v for k, v in verdict.items() if k != "problems"}, indent=2))
    for problem in verdict["problems"]:
        print("PROBLEM:", problem)
    print("verdict:", "OK" if verdict["ok"] else "FAIL")
    return 0 if verdict["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
