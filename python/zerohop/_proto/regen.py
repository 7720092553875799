"""Regenerates the protobuf modules of this package from ``proto/`` (development only;
needs ``grpcio-tools``, never imported at run time)::

    python -m zerohop._proto.regen

The generated modules import each other as ``remotemedia.v1.*``; they are rewritten to
relative imports so that they live inside ``zerohop._proto``.
"""

from __future__ import annotations

import re
import sys
import tempfile
from pathlib import Path

PROTOS = ("common", "execution", "streaming")
ROOT = Path(__file__).resolve().parents[3]
HERE = Path(__file__).resolve().parent


def generate(out: Path, proto_root: Path = ROOT / "proto") -> list[Path]:
    """Writes ``<name>_pb2.py`` and ``.pyi`` for every proto into ``out``."""
    from grpc_tools import protoc

    with tempfile.TemporaryDirectory() as tmp:
        args = [
            "protoc",
            f"-I{proto_root}",
            f"--python_out={tmp}",
            f"--pyi_out={tmp}",
            *(str(proto_root / "remotemedia" / "v1" / f"{name}.proto") for name in PROTOS),
        ]
        if protoc.main(args) != 0:
            raise RuntimeError("protoc failed")
        written = []
        for source in sorted((Path(tmp) / "remotemedia" / "v1").glob("*_pb2.py*")):
            text = re.sub(r"from remotemedia\.v1 import", "from . import", source.read_text())
            target = out / source.name
            target.write_text(text)
            written.append(target)
    return written


if __name__ == "__main__":
    for path in generate(HERE):
        print(path, file=sys.stderr)
