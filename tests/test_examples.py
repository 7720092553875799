"""Every example runs end to end (the README's first command runs one of these)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

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
