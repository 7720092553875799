"""A node whose model takes a while to load, reporting progress while it does.

``initialize`` runs in the node's own process; ``ctx.progress`` reaches the host while
it runs (and the runner repeats the last message at least every second, so a long load
is never silent). The session starts once every node is ready.

Run:  python examples/init_progress.py [--seconds S]
"""

from __future__ import annotations

import argparse
import time

from pydantic import BaseModel

from zerohop import Event, MultiprocessNode, NodeContext, Pipeline, Progress, Ready, Text


class SlowModel(MultiprocessNode):
    """Pretends to load a model in four parts, then answers in upper case."""

    class Params(BaseModel):
        seconds: float = 3.0

    def initialize(self, ctx: NodeContext) -> None:
        parts = 4
        for part in range(parts):
            ctx.progress(part / parts, f"loading weights {part + 1}/{parts}")
            time.sleep(self.params.seconds / parts)
        ctx.progress(1.0, "weights loaded")

    def process(self, frame: Text) -> Text:
        return Text(frame.text.upper())


def show(event: Event) -> None:
    match event:
        case Progress(node_id, fraction, message):
            bar = "#" * int(20 * (fraction or 0))
            print(f"[{node_id}] [{bar:<20}] {message}", flush=True)
        case Ready(node_id, init_secs):
            print(f"[{node_id}] ready after {init_secs:.1f} s", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    pipe = Pipeline("progress").node("model", SlowModel, seconds=args.seconds)
    with pipe.session(on_progress=show) as session:
        print([frame.text for frame in session.run([Text("model is loaded")])])  # type: ignore[attr-defined]


if __name__ == "__main__":
    main()
