"""``benches/ipc.py`` keeps running: a quick run of Pipe and zerohop at 1 KiB in both peer
placements measures the machine's bounds, every cell, and judges the channel targets."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

IPC = Path(__file__).resolve().parent.parent / "benches" / "ipc.py"


@pytest.mark.timeout(300)
@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two usable CPUs")
def test_quick_ipc_bench_measures_both_placements(tmp_path: Path) -> None:
    out_json = tmp_path / "ipc.json"
    args = ["--quick", "--sizes", "1KiB", "--transports", "pipe,zerohop:loaned-fill"]
    out = subprocess.run(
        [sys.executable, str(IPC), *args, "--json", str(out_json)],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    doc = json.loads(out_json.read_text())
    assert set(doc["floors"]["wake"]) == {"split", "same"}
    assert all(doc["floors"]["wake"][p]["p50_us"] > 0 for p in ("split", "same"))
    cells = {(r["placement"], r["transport"]): r for r in doc["results"]}
    assert set(cells) == {(p, t) for p in ("split", "same") for t in ("pipe", "zerohop")}
    for cell in cells.values():
        assert cell["status"] == "ok", cell
        assert cell["latency"]["n"] == cell["counts"]["latency"]
        assert cell["throughput"]["gb_per_s"] > 0
    assert out.stdout.count("1 KiB p50 <= 1/2 Pipe's") == 2
