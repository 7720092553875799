"""``zerohop run`` with ``--input -`` / ``--output -`` (wav and text through pipes),
JSON in and out, and ``zerohop nodes`` listing where each type runs."""

from __future__ import annotations

import io
import json
import wave
from pathlib import Path

import numpy as np
import pytest
from test_cli import zerohop
from test_native import MIXED

ECHO = {
    "version": "v1",
    "metadata": {"name": "echo"},
    "nodes": [{"id": "echo", "node_type": "Echo"}],
    "connections": [],
}


def wav_bytes(samples: np.ndarray, rate: int) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(samples.astype("<i2").tobytes())
    return buffer.getvalue()


def test_wav_from_stdin_to_a_wav_file_and_to_stdout(tmp_path: Path) -> None:
    manifest = tmp_path / "mixed.json"
    manifest.write_text(json.dumps(MIXED))
    t = np.arange(48_000) / 48_000
    source = wav_bytes(np.sin(2 * np.pi * 440 * t) * 20_000, 48_000)
    target = tmp_path / "out.wav"
    out = zerohop("run", str(manifest), "--input", "-", "--output", str(target), stdin=source)
    assert out.returncode == 0, out.stderr
    with wave.open(str(target), "rb") as w:
        assert (w.getframerate(), w.getnchannels()) == (16_000, 1)
        result = np.frombuffer(w.readframes(w.getnframes()), "<i2").astype(np.float64)
    assert len(result) == 16_000
    crossings = np.count_nonzero(np.diff(np.signbit(result)))
    assert abs(crossings / 2 - 440) <= 5  # the sine kept its frequency through 48k → 16k
    assert abs(np.max(np.abs(result[1000:-1000])) - 10_000) < 300  # Scale 0.5 applied

    listed = zerohop("run", str(manifest), "-i", "-", "-o", "-", stdin=source)
    assert listed.returncode == 0, listed.stderr
    lines = [json.loads(line) for line in listed.stdout.decode().splitlines()]
    assert lines and all(x["source"] == "echo" and x["sample_rate"] == 16_000 for x in lines)
    assert abs(sum(x["seconds"] for x in lines) - 1.0) < 1e-6


def test_json_file_in_json_file_out(tmp_path: Path) -> None:
    manifest = tmp_path / "echo.json"
    manifest.write_text(json.dumps(ECHO))
    source, target = tmp_path / "in.json", tmp_path / "out.json"
    source.write_text(json.dumps({"question": "why?", "n": [1, 2]}))
    out = zerohop("run", str(manifest), "--input", str(source), "--output", str(target))
    assert out.returncode == 0, out.stderr
    assert json.loads(target.read_text()) == [
        {"source": "echo", "kind": "json", "value": {"question": "why?", "n": [1, 2]}}
    ]


def test_bad_manifest_on_run_is_an_error_naming_the_path(tmp_path: Path) -> None:
    manifest = tmp_path / "bad.json"
    bad = json.loads(json.dumps(MIXED))
    bad["nodes"][2]["runtime_hint"] = "python"
    manifest.write_text(json.dumps(bad))
    out = zerohop("run", str(manifest), "-i", "-", "-o", "-", stdin=b"x\n")
    assert out.returncode == 2
    assert b"nodes[2].runtime_hint" in out.stderr and b"no Python implementation" in out.stderr


def test_nodes_lists_executor_and_params(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    listing = json.loads(zerohop("nodes", "--json").stdout)
    assert listing["AudioChunkerNode"]["executor"] == "native"
    assert "chunk_size" in listing["AudioChunkerNode"]["params"]["properties"]
    assert listing["Scale"]["executor"] == "multiprocess"
    assert "factor" in listing["Scale"]["params"]["properties"]
    config = tmp_path / "runtime.toml"
    config.write_text("[process]\nmultiprocess = false\n")
    text = zerohop("nodes").stdout.decode()
    monkeypatch.setenv("ZEROHOP_CONFIG", str(config))  # the command inherits it
    listing = json.loads(zerohop("nodes", "--json").stdout)
    assert listing["Scale"]["executor"] == "inprocess"
    assert listing["AudioChunkerNode"]["executor"] == "native"
    assert any(
        line.startswith("FastResampleNode") and "native" in line and "target_rate" in line
        for line in text.splitlines()
    )
