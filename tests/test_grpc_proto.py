"""The protobuf modules checked in under ``zerohop/_proto`` are exactly what the current
``proto/`` generates (so the Python client and the Rust server speak the same protocol)."""

from __future__ import annotations

from pathlib import Path

from zerohop._proto import regen

# The repository's files, whether zerohop is installed editable or not.
REPO = Path(__file__).resolve().parents[1]
CHECKED_IN = REPO / "python" / "zerohop" / "_proto"


def test_checked_in_modules_match_the_protos(tmp_path: Path) -> None:
    written = regen.generate(tmp_path, REPO / "proto")
    assert {p.name for p in written} == {
        f"{name}_pb2.{ext}" for name in regen.PROTOS for ext in ("py", "pyi")
    }
    stale = [p.name for p in written if p.read_text() != (CHECKED_IN / p.name).read_text()]
    assert not stale, f"regenerate with `python -m zerohop._proto.regen`: {stale}"
