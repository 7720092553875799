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


def test_run_text_from_stdin() -> None:
    out = zerohop(
        "run", "examples/shout.json", "--input", "-", "--output", "-", stdin=b"hello\nworld\n"
    )
    assert out.returncode == 0, out.stderr
    lines = [json.loads(line) for line in out.stdout.decode().splitlines()]
    assert [line["text"] for line in lines] == ["HELLO!", "WORLD!"]
    assert b"ready" in out.stderr


def test_run_wav_in_and_out(tmp_path: Path) -> None:
    manifest = tmp_path / "echo.json"
    manifest.write_text(
        json.dumps(
            {
                "version": "v1",
                "metadata": {"name": "echo"},
                "nodes": [{"id": "echo", "node_type": "Echo"}],
                "connections": [],
            }
        )
    )
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
