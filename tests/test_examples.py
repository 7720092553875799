"""Every example runs end to end (the README's first command runs one of these)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run(*args: str, timeout: float = 180) -> str:
    out = subprocess.run(
        [sys.executable, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=EXAMPLES.parent,
    )
    assert out.returncode == 0, f"{args} failed:\n{out.stdout}\n{out.stderr}"
    return out.stdout


def test_two_processes_example() -> None:
    out = run(str(EXAMPLES / "two_processes.py"), "--frames", "40")
    assert "1080p rgb24 video (loaned)" in out and "20 ms 16 kHz audio (copied)" in out
    assert "exited with 0" in out


def test_concurrent_models_example() -> None:
    out = run(str(EXAMPLES / "concurrent_models.py"), "--chunks", "20", "--work", "20")
    assert "inprocess:" in out and "multiprocess:" in out and "speed-up" in out


def test_init_progress_example() -> None:
    out = run(str(EXAMPLES / "init_progress.py"), "--seconds", "2")
    assert "[model] [" in out and "loading weights 1/4" in out and "weights loaded" in out
    assert "ready after" in out and "['MODEL IS LOADED']" in out


@pytest.mark.speech
def test_speech_stream_example() -> None:
    out = run(str(EXAMPLES / "speech_stream.py"), "--commands", "2", timeout=300)
    assert "recording: 2 commands" in out
    assert 'reply "Turning on the kitchen lights."' in out
    assert "2 replies; multiprocess wall time" in out


def test_video_pipeline_example(tmp_path: Path) -> None:
    """Blur, a native hop, halve and write: every frame reaches the file, halved, and the
    report names each hop."""
    out_file = tmp_path / "out.rgb"
    out = run(
        str(EXAMPLES / "video_pipeline.py"),
        *("--size", "320x240", "--frames", "12", "--out", str(out_file)),
    )
    assert "12 frames of 320x240 → 160x120" in out, out
    assert out_file.stat().st_size == 12 * 160 * 120 * 3
    for hop in ("camera → blur", "blur → halve (via the native node)", "halve → write"):
        assert hop in out, out
    frames = np.fromfile(out_file, np.uint8).reshape(12, 120, 160, 3)
    # The white square moved down, blurred at its edges but white inside.
    assert (frames[0, 2:30, 34:62] > 240).all() and (frames[5, 22:50, 34:62] > 240).all()
