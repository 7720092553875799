"""Routing: each node goes to the native, multiprocess or in-process executor by the
registry, unless the manifest's ``runtime_hint`` / ``executor`` says otherwise; the
runtime.toml flag and ``metadata.multiprocess.enabled`` turn processes off."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from zerohop import Audio, ManifestError, MultiprocessNode, Pipeline, Text
from zerohop.config import ProcessConfig, RuntimeConfig
from zerohop.inprocess import InProcessSession
from zerohop.manifest import Manifest
from zerohop.registry import _registry, register_node

ROOT = Path(__file__).resolve().parent.parent


class PythonPassThrough(MultiprocessNode):
    """A Python class registered under a native type's name (by the fixture below)."""

    def process(self, frame: Any) -> Any:
        return frame


@pytest.fixture
def both() -> Iterator[str]:
    """'PassThrough' registered in Python too, for the length of one test."""
    register_node(PythonPassThrough, name="PassThrough")
    try:
        yield "PassThrough"
    finally:
        del _registry["PassThrough"]


def manifest(*nodes: dict[str, Any], **metadata: Any) -> dict[str, Any]:
    return {
        "version": "v1",
        "metadata": {"name": "routing", **metadata},
        "nodes": list(nodes),
        "connections": [{"from": a["id"], "to": b["id"]} for a, b in itertools.pairwise(nodes)],
    }


def placements(pipe: Pipeline, executor: str | None = None) -> dict[str, str]:
    graph = pipe.graph(executor)  # type: ignore[arg-type]
    return {n["id"]: n["placement"] for n in graph["nodes"]}


def test_the_registry_decides_by_default(both: str) -> None:
    pipe = (
        Pipeline("r")
        .node("native", "AudioChunkerNode")
        .node("python", "Echo")
        .node("both", both)  # a user's Python registration overrides the built-in
        .connect("native", "python", "both")
    )
    assert placements(pipe) == {
        "native": "native",
        "python": "multiprocess",
        "both": "multiprocess",
    }
    assert placements(pipe, "inprocess") == {
        "native": "native",
        "python": "inprocess",
        "both": "inprocess",
    }


@pytest.mark.parametrize(
    ("hint", "executor"),
    [("rust", None), ("NATIVE", None), ("RUNTIME_HINT_AUTO", "native"), (None, "native")],
)
def test_an_explicit_hint_or_executor_wins(
    both: str, hint: str | None, executor: str | None
) -> None:
    node: dict[str, Any] = {"id": "p", "node_type": both}
    if hint:
        node["runtimeHint"] = hint
    if executor:
        node["executor"] = executor
    pipe = Manifest.parse(manifest({"id": "e", "node_type": "Echo"}, node)).to_pipeline()
    assert placements(pipe) == {"e": "multiprocess", "p": "native"}
    with pipe.session() as session:
        out = session.run([Text("through rust")])
        assert len(session.pids()) == 1  # type: ignore[attr-defined]
    assert [f.text for f in out] == ["through rust"]  # type: ignore[attr-defined]


@pytest.mark.parametrize("hint", ["cpython", "RUSTPYTHON", "runtime_hint_cpython_wasm"])
def test_remotemedia_python_runtimes_on_a_native_node_are_hints(hint: str) -> None:
    """remotemedia's runtime names pick one of its Python runtimes; a native node runs
    native anyway, with a warning naming the field (an error only under --strict)."""
    data = manifest(
        {"id": "first", "node_type": "Echo"},
        {"id": "x", "node_type": "PassThrough", "runtime_hint": hint},
    )
    pipe = Manifest.parse(data).to_pipeline()
    assert placements(pipe)["x"] == "native"
    assert [w.path for w in pipe.warnings] == ["nodes[1].runtime_hint"]
    assert "runs native" in str(pipe.warnings[0])
    with pytest.raises(ManifestError, match="refused under --strict") as info:
        Manifest.parse(data).to_pipeline(strict=True)
    assert info.value.path == "nodes[1].runtime_hint"
    # The Python builder takes a hint as an order.
    with pytest.raises(ManifestError, match="no Python implementation"):
        Pipeline("b").node("x", "PassThrough", runtime_hint=hint)


@pytest.mark.parametrize(
    ("node", "metadata", "path", "message"),
    [
        ({"node_type": "Echo", "runtime_hint": "jvm"}, {}, "runtime_hint", "unknown runtime_hint"),
        ({"node_type": "Echo", "executor": "gpu"}, {}, "executor", "unknown executor 'gpu'"),
        ({"node_type": "Echo", "runtime_hint": "rust"}, {}, "runtime_hint", "no native"),
        ({"node_type": "Echo", "executor": "native"}, {}, "executor", "no native"),
        (
            {"node_type": "PassThrough", "runtime_hint": "python"},
            {},
            "runtime_hint",
            "no Python implementation",
        ),
        (
            {"node_type": "PassThrough", "runtime_hint": "python", "executor": "native"},
            {},
            "runtime_hint",
            "contradicts executor 'native'",
        ),
        (
            {"node_type": "Echo", "executor": "inprocess"},
            {},
            "executor",
            "asks for the inprocess executor, but this pipeline runs its Python nodes multiprocess",
        ),
        (
            {"node_type": "Echo", "executor": "multiprocess"},
            {"multiprocess": {"enabled": False}},
            "executor",
            "asks for the multiprocess executor",
        ),
    ],
)
def test_contradictions_name_the_field(
    node: dict[str, Any], metadata: dict[str, Any], path: str, message: str
) -> None:
    data = manifest({"id": "first", "node_type": "Echo"}, {"id": "x", **node}, **metadata)
    with pytest.raises(ManifestError, match=message) as info:
        Manifest.parse(data).to_pipeline()
    assert info.value.path == f"nodes[1].{path}" and info.value.node_id == "x"
    assert f"nodes[1].{path}" in str(info.value)


def test_a_node_executor_that_agrees_is_accepted() -> None:
    data = manifest(
        {"id": "a", "node_type": "Echo", "executor": "inprocess", "runtime_hint": "python"},
        multiprocess={"enabled": False},
    )
    pipe = Manifest.parse(data).to_pipeline()
    assert pipe.executor == "inprocess" and placements(pipe) == {"a": "inprocess"}
    assert pipe.to_manifest()["nodes"][0]["executor"] == "inprocess"
    # A session on the other executor contradicts the node: refused before any start.
    with pytest.raises(ManifestError, match=r"nodes\[0\]\.executor"):
        pipe.session(executor="multiprocess")


def test_runtime_toml_flag_runs_python_nodes_in_process() -> None:
    off = RuntimeConfig(process=ProcessConfig(multiprocess=False))
    pipe = (
        Pipeline("flag", config=off)
        .node("chunk", "AudioChunkerNode", chunk_size=100)
        .node("gain", "Scale", factor=3.0)
        .connect("chunk", "gain")
    )
    assert pipe.executor == "inprocess"
    assert placements(pipe) == {"chunk": "native", "gain": "inprocess"}
    audio = Audio(np.arange(250, dtype=np.int16), sample_rate=8000)
    with pipe.session() as session:
        assert isinstance(session, InProcessSession)
        out = session.run([audio])
    got = np.concatenate([f.samples for f in out if isinstance(f, Audio)])
    np.testing.assert_array_equal(got, np.arange(250, dtype=np.int16) * 3)
    # The operator's switch wins over a manifest asking for processes.
    data = manifest({"id": "e", "node_type": "Echo"}, multiprocess={"enabled": True})
    assert Manifest.parse(data).to_pipeline(off).executor == "inprocess"


def test_runtime_toml_flag_reaches_the_cli(tmp_path: Path) -> None:
    """`zerohop run` with ZEROHOP_CONFIG turning processes off runs without any node
    process: with an interpreter that does not exist, only the flag lets it succeed."""
    import os

    text = (ROOT / "runtime.toml").read_text()
    text = text.replace('python_executable = ""', 'python_executable = "/nonexistent/python"')
    results = {}
    for flag in ("true", "false"):
        config = tmp_path / f"runtime-{flag}.toml"
        config.write_text(text.replace("multiprocess = true", f"multiprocess = {flag}"))
        results[flag] = subprocess.run(
            [sys.executable, "-m", "zerohop.cli", "run", "examples/shout.json", "-o", "-"],
            input=b"one\ntwo\n",
            capture_output=True,
            timeout=120,
            cwd=ROOT,
            env={**os.environ, "ZEROHOP_CONFIG": str(config)},
        )
    assert results["true"].returncode != 0 and b"cannot start its process" in results["true"].stderr
    assert results["false"].returncode == 0, results["false"].stderr
    lines = results["false"].stdout.decode().splitlines()
    assert [json.loads(line)["text"] for line in lines] == ["ONE!", "TWO!"]


@pytest.mark.parametrize("executor", ["multiprocess", "inprocess"])
def test_both_executors_number_and_stamp_frames_alike(executor: str) -> None:
    pipe = Pipeline("seq", executor=executor).node("e", "Echo")  # type: ignore[arg-type]
    frame = Text("same")
    with pipe.session() as session:
        sent = [session.send(frame), session.send(frame)]
        session.end_input()
        out = list(session.outputs(timeout=60))
    assert sent == [0, 1] and [f.sequence for f in out] == [0, 1]
    assert all(f.timestamp_ns for f in out)
    assert frame.sequence is None and frame.timestamp_ns is None  # the caller's frame as it was
