"""Security: what another local user, or a crafted manifest or frame, must not manage.

- channel names carry a 128-bit random session id, so nobody can guess and open them;
- every shared-memory file is owner-only (iceoryx2 makes its global node counter
  world-writable: zerohop restricts it);
- payload size caps are checked before anything is allocated;
- a manifest (or a node type string reaching a runner) can only name registered node
  types: it cannot make any process import a module of its choosing;
- params naming model files resolve inside the packaged models' or runtime.toml's
  ``[nodes] model_dirs``: a manifest cannot make a node open any file it likes.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import socket
import struct
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from conftest import PREFIX, SHM

from zerohop import (
    Audio,
    Bytes,
    FrameError,
    ManifestError,
    PayloadTooLargeError,
    Pipeline,
    RuntimeConfig,
    Text,
    UnknownNodeTypeError,
)
from zerohop.data import from_bytes
from zerohop.manifest import Manifest
from zerohop.multiprocess import MultiprocessSession


def _our_shm() -> list[Path]:
    return [p for p in SHM.iterdir() if p.name.startswith(PREFIX)]


def test_session_ids_are_random_128_bit_and_name_the_channels() -> None:
    pipe = Pipeline("ids").node("e", "Echo")
    ids = []
    for _ in range(5):
        with pipe.session() as session:
            assert isinstance(session, MultiprocessSession)
            ids.append(session.id)
            assert re.fullmatch(r"[0-9a-f]{32}", session.id)
            # Channels are named after it (here: the host's input).
            assert session._native.input(0).name.startswith(f"{session.id}/")
    assert len(set(ids)) == len(ids)
    # Not a counter or a clock: the ids share no common prefix beyond chance.
    assert len({i[:8] for i in ids}) == len(ids)


def test_shared_memory_is_owner_only() -> None:
    with Pipeline("modes").node("e", "Echo").session() as session:
        session.send(Bytes(b"secret" * 1000), timeout=10)
        assert session.recv(timeout=10) is not None
        files = _our_shm()
        assert any(".data" in p.name for p in files), "no payload segment seen"
        # iceoryx2's node and service records (they name the services) too.
        records = list(Path("/tmp/iceoryx2").rglob(f"{PREFIX}*"))
        assert any(p.suffix == ".service" for p in records), "no service record seen"
        for path in files + records:
            st = path.stat()
            assert st.st_uid == os.geteuid(), path.name
            assert st.st_mode & 0o077 == 0, f"{path.name} has mode {oct(st.st_mode & 0o777)}"


def test_an_oversized_payload_is_refused_before_any_allocation() -> None:
    config = RuntimeConfig.model_validate({"channel": {"max_payload_bytes": 1 << 20}})
    with Pipeline("cap", config=config).node("e", "Echo").session() as session:
        shm_before = sum(p.stat().st_size for p in _our_shm())
        with pytest.raises(PayloadTooLargeError, match="exceeds the maximum of 1048576"):
            session.send(Bytes(bytes(16 << 20)), timeout=10)
        # Had the channel loaned 16 MiB first, its segment would have grown to fit it.
        assert sum(p.stat().st_size for p in _our_shm()) - shm_before < 4 << 20
        session.send(Text("still fine"), timeout=10)
        assert session.recv(timeout=10).text == "still fine"  # type: ignore[union-attr]


@pytest.mark.parametrize("declared", [1 << 31, 1 << 40, (1 << 64) - 1])
def test_a_huge_declared_payload_is_rejected_without_allocating(declared: int) -> None:
    data = bytearray(Bytes(b"tiny").to_bytes())
    data[56:64] = struct.pack("<Q", declared)
    tracemalloc.start()
    try:
        with pytest.raises(FrameError):
            from_bytes(bytes(data))
        with pytest.raises(PayloadTooLargeError):
            from_bytes(bytes(data), max_payload=1 << 20)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20


# ---------------------------------------------------------------- imports

EVIL = """
from pathlib import Path
Path({marker!r}).write_text("imported")
from zerohop import MultiprocessNode
class Evil(MultiprocessNode):
    def process(self, frame):
        return frame
"""


@pytest.fixture
def evil_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An importable module that leaves a marker file when anything imports it."""
    marker = tmp_path / "imported"
    (tmp_path / "evil_mod.py").write_text(EVIL.format(marker=str(marker)))
    monkeypatch.syspath_prepend(str(tmp_path))
    return marker


@pytest.mark.parametrize(
    "node_type",
    ["evil_mod", "evil_mod.Evil", "evil_mod:Evil", "os.system", "builtins.eval", "__import__"],
)
def test_a_manifest_names_registered_node_types_only(evil_module: Path, node_type: str) -> None:
    manifest = Manifest.parse(
        {
            "version": "v1",
            "metadata": {"name": "evil"},
            "nodes": [{"id": "n", "nodeType": node_type, "module": "evil_mod"}],
        }
    )
    with pytest.raises(UnknownNodeTypeError) as info:
        manifest.to_pipeline()
    assert info.value.path == "nodes[0].node_type"
    assert not evil_module.exists()
    assert "evil_mod" not in sys.modules


def test_a_runner_resolves_node_types_through_the_registry_only(evil_module: Path) -> None:
    """Even a start message naming a module path (which a manifest cannot produce)
    makes the node process report an unknown type, not import the module."""
    host, child = socket.socketpair()
    spec = {
        "node_id": "n",
        "session_id": "0" * 32,
        "node_type": "evil_mod.Evil",
        "params": {},
        "inputs": [],
        "outputs": [],
        "sys_path": [str(evil_module.parent)],
        "imports": [],
    }
    body = json.dumps({"type": "start", "spec": spec}).encode()
    with host, child:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "import os, sys; os.dup2(int(sys.argv[1]), 3); "
                "from zerohop.runner import main; sys.exit(main())",
                str(child.fileno()),
            ],
            pass_fds=[child.fileno()],
        )
        child.close()
        host.sendall(struct.pack("<I", len(body)) + body)
        host.settimeout(60)
        stream = host.makefile("rb")
        while True:  # heartbeats may come first; the verdict is the init error
            (length,) = struct.unpack("<I", stream.read(4))
            message = json.loads(stream.read(length))
            if message["type"] != "progress":
                break
        stream.close()
        assert proc.wait(60) == 1
    assert message["type"] == "init_error"
    assert "unknown node type 'evil_mod.Evil'" in message["error"]
    assert not evil_module.exists()


def _manifest(multiprocess: dict[str, object]) -> Manifest:
    return Manifest.parse(
        {
            "version": "v1",
            "metadata": {"name": "m", "multiprocess": multiprocess},
            "nodes": [{"id": "e", "nodeType": "Echo"}],
        }
    )


def test_a_manifest_cannot_choose_the_program_node_processes_run(tmp_path: Path) -> None:
    """Regression: ``metadata.multiprocess.pythonExecutable`` used to replace the node
    interpreter, so a manifest from a remote client could run any program on the host."""
    marker = tmp_path / "ran"
    program = tmp_path / "not-python"
    program.write_text(f"#!/bin/sh\ntouch {marker}\n")
    program.chmod(0o755)
    with pytest.raises(ManifestError, match="python_executable") as info:
        _manifest({"pythonExecutable": str(program)}).to_pipeline()
    assert info.value.path == "metadata.multiprocess.python_executable"
    assert not marker.exists()
    # Naming the configured interpreter is harmless and accepted.
    config = RuntimeConfig.model_validate({"process": {"python_executable": sys.executable}})
    pipe = _manifest({"pythonExecutable": sys.executable}).to_pipeline(config)
    assert pipe.config.process.python_executable == sys.executable


def test_a_manifest_can_lower_but_not_lift_the_process_limit() -> None:
    config = RuntimeConfig.model_validate({"process": {"max_processes_per_session": 4}})
    assert (
        _manifest({"maxProcessesPerSession": 2}).to_pipeline(config).config.process.max_processes()
        == 2
    )
    for lifted in (0, 5):
        with pytest.raises(ManifestError, match=r"would raise runtime\.toml's limit of 4") as info:
            _manifest({"maxProcessesPerSession": lifted}).to_pipeline(config)
        assert info.value.path == "metadata.multiprocess.max_processes_per_session"


def _vad_manifest(params: dict[str, object], **metadata: object) -> Manifest:
    return Manifest.parse(
        {
            "version": "v1",
            "metadata": {"name": "paths", **metadata},
            "nodes": [{"id": "vad", "nodeType": "SileroVADNode", "params": params}],
        }
    )


def _packaged_vad_model() -> Path:
    spec = importlib.util.find_spec("silero_vad")
    if spec is None or not spec.submodule_search_locations:
        pytest.fail("silero-vad is not installed (make install / the speech extra)")
    return Path(next(iter(spec.submodule_search_locations))) / "data" / "silero_vad.onnx"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("model_path", "/etc/passwd"),
        ("modelPath", "/etc/passwd"),
        ("model_path", "relative/model.onnx"),
        ("model_path", "{packaged}/../../../../../../../../etc/passwd"),
        ("model_path", "{symlink}"),
    ],
)
def test_a_manifest_cannot_point_a_model_param_at_any_file(
    tmp_path: Path, field: str, value: str
) -> None:
    """Model path params resolve (symlinks, ``..``) inside the packaged models' or the
    configured directories, or the manifest is refused before anything runs."""
    allowed = tmp_path / "models"
    allowed.mkdir()
    (allowed / "escape.onnx").symlink_to("/etc/passwd")
    value = value.format(packaged=_packaged_vad_model().parent, symlink=allowed / "escape.onnx")
    config = RuntimeConfig.model_validate({"nodes": {"model_dirs": [str(allowed)]}})
    # The list is runtime.toml's: metadata that looks like it is only kept, not obeyed.
    manifest = _vad_manifest({field: value}, nodes={"model_dirs": ["/"]})
    with pytest.raises(ManifestError, match="outside the directories model files") as info:
        manifest.to_pipeline(config)
    assert info.value.path == f"nodes[0].params.{field}"
    assert info.value.node_id == "vad"


@pytest.mark.parametrize("name", ["../../etc", "/etc", "./tiny.en", "a/b/c", "tiny.en\n"])
def test_a_whisper_model_name_is_never_a_path(name: str) -> None:
    with pytest.raises(ManifestError, match="not a model name") as info:
        Pipeline("p").node("asr", "WhisperSTTNode", model=name)
    assert info.value.path == "nodes[0].params.model"


@pytest.mark.speech
def test_model_files_load_from_packages_and_configured_directories(tmp_path: Path) -> None:
    packaged = _packaged_vad_model()
    copy = tmp_path / "vad.onnx"
    shutil.copyfile(packaged, copy)
    config = RuntimeConfig.model_validate({"nodes": {"model_dirs": [str(tmp_path)]}})
    for path in (packaged, copy):
        with _vad_manifest({"model_path": str(path)}).to_pipeline(config).session() as session:
            session.send(Audio(np.zeros(1600, np.float32), 16_000))
            session.end_input()
            assert list(session.outputs()) == []  # silence: no speech events, no error
