"""The protobuf modules checked in under ``zerohop/_proto`` are exactly what the current
``proto/`` generates (so the Python client and the Rust server speak the same protocol)."""

from __future__ import annotations

from pathlib import Path

import pytest

from zerohop._proto import regen

pytest.importorskip("grpc_tools")


def test_checked_in_modules_match_the_protos(tmp_path: Path) -> None:
    written = regen.generate(tmp_path)
    assert {p.name for p in written} == {
        f"{name}_pb2.{ext}" for name in regen.PROTOS for ext in ("py", "pyi")
    }
    stale = [p.name for p in written if p.read_text() != (regen.HERE / p.name).read_text()]
    assert not stale, f"regenerate with `python -m zerohop._proto.regen`: {stale}"
