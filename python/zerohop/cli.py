"""The ``zerohop`` command.

::

    zerohop run MANIFEST [--input FILE|-] [--output FILE|-]   run a pipeline locally
    zerohop serve [--host H] [--port P] [--token T]           serve remotemedia.v1 over gRPC
    zerohop validate [--strict] FILE...                       check manifests
    zerohop nodes                                             list the registered node types
    zerohop schema                                            print the manifest JSON Schema

``run`` needs no server: it starts the manifest's nodes (each Python node in its own
process), shows a progress bar per node while they initialize, streams the input through
and writes the outputs. Inputs: a ``.wav`` file (sent as 20 ms audio chunks, as a
microphone would), a ``.json`` file (one Json frame), or text (one Text frame per line);
``-`` reads standard input (wav or text; raw int16 PCM with ``--pcm RATE``). Outputs:
``.wav`` (the audio outputs, concatenated), ``.json`` (every output), or ``-`` (printed).
Json outputs with a ``message`` (the speech nodes' reports) are printed as that message.

``validate`` and ``run`` print what a manifest gives that zerohop does not act on
(unknown params or fields, a ``host``, a runtime hint not followed) as warnings on
stderr, ``warning: <json path>: <message>``; ``validate`` still exits 0. ``--strict``
(or runtime.toml ``[nodes] strict_params = true``) makes each an error.

Examples
--------
:func:`main` takes the command line as a list and returns the exit status:

>>> import contextlib, json, pathlib, tempfile
>>> from zerohop.cli import main
>>> def manifest(node_type):
...     return json.dumps({"version": "v1", "nodes": [{"id": "n", "node_type": node_type}]})
>>> with tempfile.TemporaryDirectory() as tmp, contextlib.chdir(tmp):
...     _ = pathlib.Path("good.json").write_text(manifest("UpperCase"))
...     _ = pathlib.Path("bad.json").write_text(manifest("Upper"))
...     main(["validate", "good.json", "bad.json"])
good.json: ok
bad.json: INVALID: nodes[0].node_type: unknown node type 'Upper'; did you mean 'UpperCase'? ...
1
"""

from __future__ import annotations

import argparse
import io
import itertools
import json
import math
import signal
import sys
import time
import wave
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import numpy as np

from . import _native
from .data import Audio, Bytes, Frame, Json, Tensor, Text, Video
from .errors import ZerohopError

if TYPE_CHECKING:
    from .session import Event

__all__ = ["main"]


# ---------------------------------------------------------------------- inputs


def read_wav(stream: BinaryIO, chunk_ms: float, name: str = "wav") -> Iterator[Audio]:
    """Audio frames of ``chunk_ms`` from a PCM wav (8-bit unsigned, 16- or 32-bit signed
    integer; 8-bit samples arrive as int16). A file that is not one, or is cut off, is a
    :class:`ZerohopError` naming ``name`` and what is wrong."""
    try:
        w = wave.open(stream, "rb")  # noqa: SIM115  (the with below closes it)
    except (wave.Error, EOFError) as err:
        raise ZerohopError(f"{name}: not a PCM wav file ({err or 'truncated header'})") from None
    with w:
        rate, channels, width = w.getframerate(), w.getnchannels(), w.getsampwidth()
        if width not in (1, 2, 4):
            raise ZerohopError(
                f"{name}: unsupported wav sample width {8 * width} bits (use 8, 16 or 32)"
            )
        per_chunk = max(1, int(rate * chunk_ms / 1000))
        while True:
            data = w.readframes(per_chunk)
            if not data:
                return
            if len(data) % (width * channels):
                raise ZerohopError(f"{name}: the wav data is cut off mid-sample")
            if width == 1:  # unsigned 8-bit, centred on 128
                samples = ((np.frombuffer(data, np.uint8).astype(np.int16) - 128) << 8).astype(
                    np.int16
                )
            else:
                samples = np.frombuffer(data, dtype=np.int16 if width == 2 else np.int32)
            if channels > 1:
                samples = samples.reshape(-1, channels)
            yield Audio(samples.copy(), sample_rate=rate)


def read_pcm(stream: BinaryIO, rate: int, chunk_ms: float) -> Iterator[Audio]:
    """Audio frames of ``chunk_ms`` from raw mono little-endian int16 PCM at ``rate``."""
    per_chunk = max(1, int(rate * chunk_ms / 1000))
    while data := stream.read(2 * per_chunk):
        yield Audio(np.frombuffer(data[: len(data) // 2 * 2], "<i2").copy(), sample_rate=rate)


def _text_lines(data: bytes, name: str) -> list[Text]:
    try:
        text = data.decode()
    except UnicodeDecodeError as err:
        raise ZerohopError(f"{name}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    return [Text(line) for line in text.splitlines() if line.strip()]


def read_input(path: str, chunk_ms: float, pcm_rate: int | None = None) -> Iterator[Frame]:
    """The frames of an input file (or ``-``, standard input). A file is read and
    decoded whole before the first frame is given, so that a bad one fails before
    anything starts; raw PCM (``pcm_rate``) streams, as a live microphone would."""
    if pcm_rate is not None:
        with open(sys.stdin.fileno() if path == "-" else path, "rb", closefd=path != "-") as f:
            yield from read_pcm(f, pcm_rate, chunk_ms)
        return
    name = "standard input" if path == "-" else path
    if path == "-" and sys.stdin is None:  # started with stdin closed (`<&-`)
        raise ZerohopError("standard input is closed: give --input FILE")
    try:
        data = sys.stdin.buffer.read() if path == "-" else Path(path).read_bytes()
    except (OSError, ValueError) as err:  # ValueError: stdin closed
        raise ZerohopError(f"{name}: cannot read it ({err})") from None
    frames: list[Frame]
    if data[:4] == b"RIFF" or (path != "-" and path.lower().endswith(".wav")):
        frames = list(read_wav(io.BytesIO(data), chunk_ms, name))
    elif path != "-" and path.lower().endswith(".json"):
        try:
            frames = [Json(json.loads(data))]
        except (ValueError, RecursionError) as err:
            raise ZerohopError(f"{name}: not valid JSON ({err})") from None
    else:
        frames = list(_text_lines(data, name))
    yield from frames


# ---------------------------------------------------------------------- outputs


def describe(frame: Frame) -> Any:
    """A JSON-friendly summary of an output frame."""
    base: dict[str, Any] = {"source": frame.source, "kind": frame.kind}
    if isinstance(frame, Text):
        base["text"] = frame.text
    elif isinstance(frame, Json):
        base["value"] = frame.value
    elif isinstance(frame, Audio):
        base.update(sample_rate=frame.sample_rate, channels=frame.channels, seconds=frame.duration)
    elif isinstance(frame, Video):
        base.update(width=frame.width, height=frame.height, pixel_format=frame.pixel_format)
    elif isinstance(frame, Tensor):
        base.update(shape=list(frame.shape), dtype=str(frame.dtype))
    elif isinstance(frame, Bytes):
        base["bytes"] = frame.data.nbytes
    return base


def write_wav(path: Path, frames: list[Frame]) -> int:
    audio = [f for f in frames if isinstance(f, Audio)]
    if not audio:
        raise ZerohopError(f"the pipeline produced no audio to write to {path}")
    rate, channels = audio[0].sample_rate, audio[0].channels
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        for frame in audio:
            if (frame.sample_rate, frame.channels) != (rate, channels):
                raise ZerohopError("audio outputs differ in sample rate or channels")
            samples = frame.samples
            if samples.dtype.kind == "f":
                samples = np.clip(samples, -1.0, 1.0) * 32767
            w.writeframes(samples.astype("<i2").tobytes())
    return len(audio)


# ---------------------------------------------------------------------- commands


def _progress_display() -> tuple[Any, Any]:
    """A rich progress display with one bar per node, and its event callback."""
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    progress = Progress(
        TextColumn("{task.fields[node]:>12}"),
        BarColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=Console(stderr=True),  # stdout carries the outputs
    )
    tasks: dict[str, Any] = {}

    def on_event(event: Event) -> None:
        node = event.node_id
        if node not in tasks:
            tasks[node] = progress.add_task("starting", total=1.0, node=node)
        match event:
            case _native.Ready(init_secs=secs):
                progress.update(tasks[node], completed=1.0, description=f"ready in {secs:.1f} s")
            case _native.Progress(fraction=fraction, message=message):
                progress.update(
                    tasks[node],
                    completed=fraction if fraction is not None else None,
                    description=message or "initializing",
                )

    return progress, on_event


def _shown(value: Any) -> str:
    """A Json output as printed while running: its ``message`` if it has one (the
    speech nodes' reports), else the JSON."""
    if isinstance(value, dict) and isinstance(value.get("message"), str):
        return str(value["message"])
    return json.dumps(value)


def _print_warnings(warnings: Sequence[Any], prefix: str = "") -> None:
    for warning in warnings:
        print(f"{prefix}warning: {warning}", file=sys.stderr)


def _strict(args: argparse.Namespace) -> bool | None:
    """``True`` with ``--strict``; else ``None``: runtime.toml decides."""
    return True if args.strict else None


def _check_output(path: str | None) -> None:
    """Refuses, before anything loads, an output the run could not write at its end
    (a missing directory, a directory, a file under /proc, no permission): it is
    opened for appending — exactly what writing it will need — and left as it was."""
    if path is None or path == "-":
        return
    target = Path(path)
    existed = target.exists()
    try:
        with target.open("ab"):
            pass
    except OSError as err:
        raise ZerohopError(f"{path}: cannot write the output: {err.strerror}") from None
    if not existed:
        target.unlink()


def cmd_run(args: argparse.Namespace) -> int:
    from .manifest import load_manifest

    if not (math.isfinite(args.chunk_ms) and args.chunk_ms > 0):
        raise ZerohopError(
            f"--chunk-ms must be a positive number of milliseconds, got {args.chunk_ms}"
        )
    _check_output(args.output)

    pipe = load_manifest(args.manifest).to_pipeline(strict=_strict(args))
    _print_warnings(pipe.warnings)
    frames = read_input(args.input, args.chunk_ms, args.pcm)
    # The input's kind is checked before any model loads. Raw PCM may be a live
    # microphone: its kind is known without waiting for its first chunk.
    if args.pcm is not None:
        pipe.check_input("audio")
    elif (first := next(frames, None)) is not None:
        pipe.check_input(first.kind)
        frames = itertools.chain([first], frames)
    progress, on_event = _progress_display()
    start = time.perf_counter()
    with progress:
        session = pipe.session(on_progress=on_event)
    print(
        f"{len(pipe.node_classes())} nodes ready in {time.perf_counter() - start:.2f} s",
        file=sys.stderr,
    )
    outputs: list[Frame] = []
    with session:
        started = time.perf_counter()
        for frame in session.stream(frames):
            outputs.append(frame)
            if isinstance(frame, Text | Json):
                shown = frame.text if isinstance(frame, Text) else _shown(frame.value)
                print(
                    f"[{time.perf_counter() - started:7.3f} s] {frame.source}: {shown}",
                    file=sys.stderr,
                )
    if args.output == "-":
        for frame in outputs:
            print(json.dumps(describe(frame)))
    elif args.output:
        out = Path(args.output)
        if out.suffix.lower() == ".wav":
            count = write_wav(out, outputs)
            print(f"wrote {count} audio frames to {out}", file=sys.stderr)
        else:
            out.write_text(json.dumps([describe(f) for f in outputs], indent=2))
            print(f"wrote {len(outputs)} outputs to {out}", file=sys.stderr)
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    import os
    import threading

    from .config import load_config
    from .errors import ConfigError
    from .serve import serve

    token = args.token or os.environ.get("ZEROHOP_TOKEN") or None
    drain = threading.Event()
    config = load_config()
    if (args.tls_cert is None) != (args.tls_key is None):
        raise ConfigError("--tls-cert and --tls-key go together")
    tls = " over TLS" if args.tls_cert or config.server.tls_cert else ""

    def bound(address: str) -> None:
        auth = "bearer token required" if token else "no authentication"
        print(f"zerohop serve: listening on {address}{tls} ({auth})", flush=True)

    def metrics_bound(address: str) -> None:
        print(f"zerohop serve: metrics on http://{address}/metrics", flush=True)

    def drain_on_sigterm(signum: int, frame: Any) -> None:
        # What an orchestrator's stop sends: drain. The next SIGTERM stops at once.
        drain.set()
        signal.signal(signal.SIGTERM, stop_now)

    def stop_now(signum: int, frame: Any) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise _Stopped(signum)

    signal.signal(signal.SIGTERM, drain_on_sigterm)
    try:
        serve(
            host=args.host,
            port=args.port,
            token=token,
            on_bound=bound,
            draining=drain.is_set,
            metrics_port=args.metrics_port,
            on_metrics_bound=metrics_bound,
            tls_cert=args.tls_cert,
            tls_key=args.tls_key,
            config=config,
        )
    except KeyboardInterrupt:
        print("zerohop serve: stopped", file=sys.stderr)
        return 0
    print("zerohop serve: drained and stopped", file=sys.stderr)
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from .manifest import load_manifest

    failed = 0
    for path in args.files:
        try:
            pipe = load_manifest(path).to_pipeline(strict=_strict(args))
        except ZerohopError as err:
            failed += 1
            print(f"{path}: INVALID: {err}")
        else:
            _print_warnings(pipe.warnings, f"{path}: ")
            count = len(pipe.warnings)
            print(f"{path}: ok" + (f" ({count} warning{'s' * (count != 1)})" if count else ""))
    return 1 if failed else 0


def cmd_nodes(args: argparse.Namespace) -> int:
    from .config import load_config
    from .registry import (
        NODE_TYPE_ALIASES,
        canonical_node_type,
        native_node_types,
        registered_nodes,
    )

    python_executor = "multiprocess" if load_config().process.multiprocess else "inprocess"
    rows: dict[str, dict[str, Any]] = {}
    for name, cls in registered_nodes().items():
        doc = (cls.__doc__ or "").strip().splitlines()
        rows[name] = {
            "executor": python_executor,
            "description": doc[0] if doc else "",
            "params": cls.params_schema(),
            "inputs": list(cls.inputs),
            "outputs": list(cls.outputs),
            "input_rate": cls.input_rate,
        }
    for name, native in native_node_types().items():
        rows.setdefault(
            name,
            {
                "executor": "native",
                "description": native.description,
                "params": native.params_schema,
                "inputs": list(native.inputs),
                "outputs": list(native.outputs),
                "input_rate": native.input_rate,
            },
        )
    for row in rows.values():
        row["aliases"] = []
    for alias in sorted(NODE_TYPE_ALIASES):
        target = canonical_node_type(alias)
        if target != alias and target in rows:
            rows[target]["aliases"].append(alias)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    width = max(len(name) for name in rows)
    for name, row in sorted(rows.items()):
        params = ", ".join(row["params"].get("properties", {}))
        line = f"{name:<{width}}  {row['executor']:<12}  {row['description']}"
        if row["input_rate"]:
            line += f"  (input {row['input_rate']} Hz)"
        if row["aliases"]:
            line += f"  (also: {', '.join(row['aliases'])})"
        print(line + (f"  [{params}]" if params else ""))
    return 0


def cmd_schema(args: argparse.Namespace) -> int:
    from .manifest import manifest_schema

    print(json.dumps(manifest_schema(), indent=2))
    return 0


STRICT_HELP = (
    "make warnings (unknown params or fields, host, runtime hints not followed) errors; "
    "also runtime.toml [nodes] strict_params"
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="zerohop", description="multiprocess pipelines over shared memory"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a pipeline manifest locally (no server)")
    run.add_argument("manifest")
    run.add_argument("--input", "-i", default="-", help="wav, json or text file; - for stdin")
    run.add_argument("--output", "-o", default=None, help="wav or json file; - for stdout")
    run.add_argument("--chunk-ms", type=float, default=20.0, help="audio input chunk length")
    run.add_argument(
        "--pcm",
        type=int,
        metavar="RATE",
        help="the input is raw mono int16 little-endian PCM at RATE Hz (e.g. a microphone pipe)",
    )
    run.add_argument("--strict", action="store_true", help=STRICT_HELP)
    run.set_defaults(func=cmd_run)
    serve = sub.add_parser("serve", help="serve remotemedia.v1 manifests over gRPC")
    serve.add_argument("--host", default=None, help="default: [server] host (127.0.0.1)")
    serve.add_argument("--port", type=int, default=None, help="0 picks a free port")
    serve.add_argument("--token", default=None, help="bearer token (or env ZEROHOP_TOKEN)")
    serve.add_argument(
        "--metrics-port",
        type=int,
        default=None,
        help="serve Prometheus metrics at /metrics on this port (0: a free one; "
        "default: [server] metrics_port, unset: none)",
    )
    serve.add_argument("--tls-cert", default=None, help="PEM certificate chain: serve TLS")
    serve.add_argument("--tls-key", default=None, help="PEM private key of --tls-cert")
    serve.set_defaults(func=cmd_serve)
    validate = sub.add_parser("validate", help="check manifests without running them")
    validate.add_argument("files", nargs="+")
    validate.add_argument("--strict", action="store_true", help=STRICT_HELP)
    validate.set_defaults(func=cmd_validate)
    nodes = sub.add_parser("nodes", help="list the registered node types")
    nodes.add_argument("--json", action="store_true")
    nodes.set_defaults(func=cmd_nodes)
    schema = sub.add_parser("schema", help="print the manifest JSON Schema")
    schema.set_defaults(func=cmd_schema)
    return parser


class _Stopped(KeyboardInterrupt):
    """SIGTERM (``timeout``, ``docker stop``, systemd) or SIGHUP (the terminal closed):
    raised where Ctrl-C's KeyboardInterrupt would be, so the command leaves the same
    clean way — sessions closed, node processes stopped, shared memory released — and
    then exits with 128 + the signal's number."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _stop_on_signals() -> None:
    def stop(signum: int, frame: Any) -> None:
        # A second signal must not cut the cleanup the first one started short.
        for sig in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)
        raise _Stopped(signum)

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, stop)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _stop_on_signals()
    try:
        return int(args.func(args))
    except ZerohopError as err:
        print(f"zerohop: error: {err}", file=sys.stderr)
        return 2
    except _Stopped as err:
        print(f"zerohop: stopped by {err}", file=sys.stderr)
        return 128 + err.signum
    except KeyboardInterrupt:
        print("zerohop: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `zerohop schema | head`: the reader left, nothing to report
        sys.stdout = None  # no flush of a closed pipe at exit
        return 0


if __name__ == "__main__":
    sys.exit(main())
