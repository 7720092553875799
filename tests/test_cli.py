"""The ``zerohop`` command, run as users run it (a subprocess)."""

from __future__ import annotations

import json
import subprocess
import sys
import wave
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def zerohop(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "zerohop.cli", *args],
        input=stdin,
        capture_output=True,
        timeout=120,
        cwd=ROOT,
    )


def echo_manifest(tmp_path: Path) -> Path:
    """A one-node manifest whose node sends every frame on unchanged."""
    manifest = tmp_path / "echo.json"
    node = {"id": "echo", "node_type": "Echo"}
    doc = {"version": "v1", "metadata": {"name": "echo"}, "nodes": [node], "connections": []}
    manifest.write_text(json.dumps(doc))
    return manifest


def test_run_text_from_stdin() -> None:
    out = zerohop(
        "run", "examples/shout.json", "--input", "-", "--output", "-", stdin=b"hello\nworld\n"
    )
    assert out.returncode == 0, out.stderr
    lines = [json.loads(line) for line in out.stdout.decode().splitlines()]
    assert [line["text"] for line in lines] == ["HELLO!", "WORLD!"]
    assert b"ready" in out.stderr


def test_run_wav_in_and_out(tmp_path: Path) -> None:
    manifest = echo_manifest(tmp_path)
    source = tmp_path / "in.wav"
    samples = (np.sin(np.arange(16000) * 2 * np.pi * 440 / 16000) * 10000).astype("<i2")
    with wave.open(str(source), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(samples.tobytes())
    target = tmp_path / "out.wav"
    out = zerohop("run", str(manifest), "--input", str(source), "--output", str(target))
    assert out.returncode == 0, out.stderr
    with wave.open(str(target), "rb") as w:
        assert w.getframerate() == 16000
        echoed = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    np.testing.assert_array_equal(echoed, samples)


def test_validate_reports_bad_files(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(
        json.dumps(
            {
                "version": "v1",
                "metadata": {"name": "x"},
                "nodes": [{"id": "a", "node_type": "Nope"}],
            }
        )
    )
    out = zerohop("validate", "examples/shout.json", str(bad))
    assert out.returncode == 1
    text = out.stdout.decode()
    assert "shout.json: ok" in text and "INVALID" in text and "nodes[0].node_type" in text


def test_validate_reports_each_unreadable_file_and_goes_on(tmp_path: Path) -> None:
    """Files no manifest can be — nested past what the parser follows, not UTF-8,
    over the size limit, a device that never ends — are each one INVALID line naming
    what is wrong, never a traceback, and the files after them are still checked."""
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    deep_yaml = tmp_path / "deep.yaml"
    deep_yaml.write_text("a:\n" + "".join(f"{' ' * (i + 1)}b:\n" for i in range(3000)))
    latin1 = tmp_path / "latin1.json"
    latin1.write_bytes(b'{"version": "v1", "nodes": [{"id": "caf\xe9"}]}')
    huge = tmp_path / "huge.json"
    huge.write_text(json.dumps({"version": "v1", "pad": "x" * (5 << 20)}))
    files = [str(deep), str(deep_yaml), str(latin1), str(huge), "/dev/zero", "examples/shout.json"]
    out = zerohop("validate", *files)
    assert out.returncode == 1
    assert b"Traceback" not in out.stderr, out.stderr
    lines = dict(line.split(": ", 1) for line in out.stdout.decode().splitlines())
    assert lines["examples/shout.json"] == "ok"
    assert lines[str(deep)].startswith("INVALID") and "nested too deeply" in lines[str(deep)]
    assert lines[str(deep_yaml)].startswith("INVALID")
    assert "not UTF-8 text (byte 0xe9 at offset" in lines[str(latin1)]
    assert "larger than 4 MiB" in lines[str(huge)] and "larger than 4 MiB" in lines["/dev/zero"]


def test_nodes_and_schema() -> None:
    nodes = zerohop("nodes", "--json")
    assert nodes.returncode == 0
    listing = json.loads(nodes.stdout)
    assert listing["Suffix"]["params"]["properties"]["suffix"]["default"] == "!"
    schema = zerohop("schema")
    assert json.loads(schema.stdout)["properties"]["version"]["enum"] == ["v1", "1.0", "1"]


def test_run_refuses_an_output_it_could_not_write_before_anything_starts(tmp_path: Path) -> None:
    """A missing directory, a directory, a file under /proc: one line on stderr and a
    non-zero exit before any node starts (it used to run the whole pipeline and then
    lose every output with a traceback). Nothing is left where the check looked."""
    for output in (str(tmp_path / "missing" / "reply.wav"), str(tmp_path), "/proc/zerohop.wav"):
        out = zerohop(
            "run", "examples/shout.json", "--input", "-", "--output", output, stdin=b"hi\n"
        )
        err = out.stderr.decode()
        assert out.returncode == 2, err
        assert err.startswith(f"zerohop: error: {output}: cannot write the output"), err
        assert "Traceback" not in err and "ready" not in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == []
    for bad in ("0", "-5", "nan", "inf"):
        out = zerohop(
            "run", "examples/shout.json", "--input", "-", "--chunk-ms", bad, stdin=b"hi\n"
        )
        assert out.returncode == 2 and b"--chunk-ms must be a positive" in out.stderr, out.stderr


def _wav(path: Path, width: int, frames: bytes, fmt_tag: int = 1) -> Path:
    """A minimal RIFF/WAVE file of one channel at 8 kHz, written by hand (so a float
    format tag can be written too)."""
    import struct

    fmt = struct.pack("<HHIIHH", fmt_tag, 1, 8000, 8000 * width, width, 8 * width)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt
    body += b"data" + struct.pack("<I", len(frames)) + frames
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    return path


def test_run_reports_bad_input_in_one_line_before_anything_starts(tmp_path: Path) -> None:
    """A truncated header, a wav cut off mid-sample, a file that is not a wav, a float
    wav, non-UTF-8 text: `zerohop: error: <file>: <what>`, exit 2, no traceback, no node
    started (no progress line)."""
    cases = {
        "header.wav": (b"RIFF\x10\x00\x00\x00WAVEfmt ", "not a PCM wav file"),
        "cut.wav": (None, "the wav data is cut off mid-sample"),
        "text.wav": (b"hello, not audio\n", "not a PCM wav file"),
        "float.wav": (None, "not a PCM wav file"),
        "latin1.txt": ("grüße".encode("latin-1"), "not UTF-8 text"),
    }
    for name, (content, what) in cases.items():
        path = tmp_path / name
        if name == "cut.wav":
            _wav(path, 2, b"\x01\x00\x02\x00\x03")  # 2.5 samples
        elif name == "float.wav":
            _wav(path, 4, b"\x00" * 16, fmt_tag=3)
        else:
            assert content is not None
            path.write_bytes(content)
        out = zerohop("run", "examples/shout.json", "--input", str(path))
        err = out.stderr.decode()
        assert out.returncode == 2, (name, err)
        assert err.startswith(f"zerohop: error: {path}: {what}"), (name, err)
        assert "Traceback" not in err and "ready" not in err, (name, err)
    out = zerohop("run", "examples/shout.json", "--input", "-", stdin="grüße".encode("latin-1"))
    assert out.returncode == 2
    assert out.stderr.decode().startswith("zerohop: error: standard input: not UTF-8 text")
    closed = subprocess.run(
        f"{sys.executable} -m zerohop.cli run examples/shout.json --input - <&-",
        shell=True,
        capture_output=True,
        timeout=120,
        cwd=ROOT,
    )
    assert closed.returncode == 2, closed.stderr
    assert closed.stderr.decode().startswith("zerohop: error: standard input is closed")


def test_run_reads_8_bit_wav(tmp_path: Path) -> None:
    """8-bit wav (unsigned, centred on 128) arrives as int16, as read_wav documents."""
    manifest = echo_manifest(tmp_path)
    source = _wav(tmp_path / "in8.wav", 1, bytes([128, 255, 0, 192]))
    out = zerohop("run", str(manifest), "--input", str(source), "--output", "-")
    assert out.returncode == 0, out.stderr
    (line,) = out.stdout.decode().splitlines()
    described = json.loads(line)
    assert described["kind"] == "audio" and described["sample_rate"] == 8000, described
