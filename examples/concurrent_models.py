"""Two CPU-bound "models" fed from one audio stream, each in its own process.

Each model is plain Python that holds the GIL while it works (like a tokenizer, a
feature extractor or a pure-Python decoder). Run in one interpreter they take turns;
run by zerohop, each has its own process and GIL, so on two cores they work at once.
The same pipeline runs both ways and the script prints the wall time of each.

Run:  python examples/concurrent_models.py [--chunks N] [--work MS]
"""

from __future__ import annotations

import argparse
import itertools
import time

import numpy as np
from pydantic import BaseModel

from zerohop import Audio, Json, MultiprocessNode, Pipeline


class EnergyModel(MultiprocessNode):
    """Frame energies in pure Python (deliberately GIL-bound), ~``work_ms`` per chunk."""

    class Params(BaseModel):
        work_ms: float = 20.0

    def process(self, frame: Audio) -> Json:
        start = time.thread_time()
        samples = frame.samples.tolist()
        energy = 0.0
        while time.thread_time() - start < self.params.work_ms / 1000:
            energy = sum(x * x for x in samples) / len(samples)
        return Json({"model": "energy", "chunk": frame.sequence, "energy": energy})


class ZeroCrossingModel(MultiprocessNode):
    """Zero-crossing rate in pure Python, same cost profile."""

    class Params(BaseModel):
        work_ms: float = 20.0

    def process(self, frame: Audio) -> Json:
        start = time.thread_time()
        samples = frame.samples.tolist()
        rate = 0.0
        while time.thread_time() - start < self.params.work_ms / 1000:
            crossings = sum(1 for a, b in itertools.pairwise(samples) if a * b < 0)
            rate = crossings / len(samples)
        return Json({"model": "zcr", "chunk": frame.sequence, "rate": rate})


def build(executor: str, work_ms: float) -> Pipeline:
    return (
        Pipeline("two-models", executor=executor)  # type: ignore[arg-type]
        .node("mic", "Echo")
        .node("energy", EnergyModel, work_ms=work_ms)
        .node("zcr", ZeroCrossingModel, work_ms=work_ms)
        .connect("mic", "energy")
        .connect("mic", "zcr")
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=50)
    parser.add_argument("--work", type=float, default=20.0, help="CPU ms per chunk per model")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    chunks = [
        Audio(rng.standard_normal(320).astype(np.float32), sample_rate=16_000)
        for _ in range(args.chunks)
    ]
    times = {}
    for executor in ("inprocess", "multiprocess"):
        with build(executor, args.work).session() as session:
            start = time.perf_counter()
            results = [f for f in session.run(chunks) if isinstance(f, Json)]
            times[executor] = time.perf_counter() - start
        per_model = {m: sum(1 for r in results if r.value["model"] == m) for m in ("energy", "zcr")}
        assert per_model == {"energy": args.chunks, "zcr": args.chunks}, per_model
        print(f"{executor:>12}: {times[executor]:6.2f} s for {args.chunks} chunks x 2 models")
    speedup = times["inprocess"] / times["multiprocess"]
    print(f"speed-up with a process (and a GIL) per model: {speedup:.2f}x")


if __name__ == "__main__":
    main()
