"""A video pipeline to copy: camera → blur (Python, numpy) → a native node → resize
(Python, numpy) → writer, each Python node in its own process, frames moving through
shared memory.

The camera is synthetic (a moving gradient with a bright square, so a glance at the
output shows it moved), RGB24 at the size and rate you ask. ``Blur`` is a 3x3 box blur
and ``Halve`` a 2x2-mean downscale, both written into frames loaned from the next
channel (``ctx.alloc_video``: what they compute lands in shared memory, and sending it
copies nothing); ``PassThrough`` is a native (Rust) node in the host, the hop a native
stage — a colour converter, a scaler — would take. ``Write`` appends every frame to a raw
RGB file (``ffplay -f rawvideo -pixel_format rgb24 -video_size WxH out.rgb`` plays it).

Each Python stage stamps the time it finished a frame into the frame's metadata, which
every later frame inherits, so the writer knows where each frame's time went; the script
prints frames per second and each hop's latency (a hop includes the next stage's work).

    python examples/video_pipeline.py                       # 1280x720, as fast as it goes
    python examples/video_pipeline.py --fps 30 --frames 90  # paced like a camera
    python examples/video_pipeline.py --size 1920x1080 --out /tmp/out.rgb
"""

from __future__ import annotations

import argparse
import itertools
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel

from zerohop import Json, MultiprocessNode, NodeContext, Pipeline, Video

#: The stages that stamp a frame (the native node passes it on unchanged).
STAGES = ("camera", "blur", "halve", "write")


def stamp(frame: Video, stage: str, given: Video | None = None) -> Video:
    """``frame`` with the times of ``given`` (the input it was made from) and its own."""
    before = frame.metadata if given is None else given.metadata
    frame.metadata = {**before, f"{stage}_ns": str(time.monotonic_ns())}
    return frame


class Blur(MultiprocessNode):
    """3x3 box blur of an RGB24 frame, into a loaned output frame."""

    accepts = ("video",)

    def initialize(self, ctx: NodeContext) -> None:
        self.ctx = ctx

    def process(self, frame: Video) -> Video:
        src = frame.pixels
        height, width = src.shape[:2]
        out = self.ctx.alloc_video(width, height, "rgb24")
        # Separable: a 3-tap sum along each row, then along each column (uint16: no
        # overflow for 9 x 255), written straight into the loaned frame.
        rows = src[:, :-2].astype(np.uint16)
        rows += src[:, 1:-1]
        rows += src[:, 2:]
        acc = rows[:-2].copy()
        acc += rows[1:-1]
        acc += rows[2:]
        pixels = out.pixels
        np.floor_divide(acc, 9, out=acc)
        pixels[1:-1, 1:-1] = acc
        pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1] = src[0], src[-1], src[:, 0], src[:, -1]
        return stamp(out, "blur", frame)


class Halve(MultiprocessNode):
    """Half the width and height (the mean of each 2x2 block), into a loaned frame."""

    accepts = ("video",)

    def initialize(self, ctx: NodeContext) -> None:
        self.ctx = ctx

    def process(self, frame: Video) -> Video:
        src = frame.pixels
        height, width = src.shape[0] // 2, src.shape[1] // 2
        out = self.ctx.alloc_video(width, height, "rgb24")
        total = src[0 : height * 2 : 2, 0 : width * 2 : 2].astype(np.uint16)
        total += src[1 : height * 2 : 2, 0 : width * 2 : 2]
        total += src[0 : height * 2 : 2, 1 : width * 2 : 2]
        total += src[1 : height * 2 : 2, 1 : width * 2 : 2]
        total >>= 2
        out.pixels[:] = total
        return stamp(out, "halve", frame)


class Write(MultiprocessNode):
    """Appends each frame to a raw RGB24 file; emits where its time went (Json)."""

    accepts = ("video",)

    class Params(BaseModel):
        path: str

    def initialize(self, ctx: NodeContext) -> None:
        self.file = open(self.params.path, "wb")  # noqa: SIM115 (closed in cleanup)

    def process(self, frame: Video) -> Json:
        self.file.write(frame.pixels.tobytes())
        now = time.monotonic_ns()
        meta = frame.metadata
        times = [int(meta[f"{s}_ns"]) for s in STAGES[:-1]] + [now]
        return Json(
            {
                "shape": list(frame.pixels.shape),
                "hops_ms": [(b - a) / 1e6 for a, b in itertools.pairwise(times)],
                "total_ms": (now - times[0]) / 1e6,
            }
        )

    def cleanup(self) -> None:
        self.file.close()


def camera(width: int, height: int, frames: int, fps: float | None) -> Iterator[Video]:
    """Synthetic RGB24 frames: a gradient moving right and a white square moving down."""
    x = np.arange(width, dtype=np.uint16)
    y = np.arange(height, dtype=np.uint16)[:, None]
    start = time.monotonic()
    for i in range(frames):
        if fps:
            time.sleep(max(0.0, start + i / fps - time.monotonic()))
        pixels = np.empty((height, width, 3), np.uint8)
        pixels[..., 0] = (x + 4 * i) % 256
        pixels[..., 1] = (y + 2 * i) % 256
        pixels[..., 2] = 128
        top = (8 * i) % max(1, height - 64)
        pixels[top : top + 64, 64:128] = 255
        yield stamp(Video(pixels, "rgb24"), "camera")


def pipeline(path: Path) -> Pipeline:
    return (
        Pipeline("video")
        .node("blur", Blur)
        .node("pass", "PassThrough")
        .node("halve", Halve)
        .node("write", Write, path=str(path))
        .connect("blur", "pass", "halve", "write")
    )


def run(
    width: int, height: int, frames: int, fps: float | None, path: Path
) -> tuple[float, list[dict[str, Any]]]:
    """Streams ``frames`` camera frames through the pipeline; returns frames per second
    (first frame sent → last written) and the writer's report per frame."""
    with pipeline(path).session() as session:
        started = time.monotonic()
        reports = [f.value for f in session.stream(camera(width, height, frames, fps))]
        elapsed = time.monotonic() - started
    return len(reports) / elapsed, reports


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", default="1280x720", help="WIDTHxHEIGHT")
    parser.add_argument("--frames", type=int, default=120)
    parser.add_argument("--fps", type=float, default=None, help="pace the camera")
    parser.add_argument("--out", type=Path, default=None, help="raw RGB file to write")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    with tempfile.TemporaryDirectory() as tmp:
        path = args.out or Path(tmp) / "out.rgb"
        fps, reports = run(width, height, args.frames, args.fps, path)
        size = path.stat().st_size
    out_h, out_w = reports[-1]["shape"][:2]
    print(f"{len(reports)} frames of {width}x{height} → {out_w}x{out_h}: {fps:.1f} frames/s")
    print(f"wrote {size / 1e6:.1f} MB to {args.out or 'a temporary file'}")
    hops = np.array([r["hops_ms"] for r in reports])
    names = ["camera → blur", "blur → halve (via the native node)", "halve → write"]
    for name, column in zip(names, hops.T, strict=True):
        p50, p95 = np.percentile(column, [50, 95])
        print(f"  {name:34s} p50 {p50:6.2f} ms  p95 {p95:6.2f} ms")
    total = np.array([r["total_ms"] for r in reports])
    print(f"  {'camera → written':34s} p50 {np.percentile(total, 50):6.2f} ms")


if __name__ == "__main__":
    main()
