"""Manifests in the forms remotemedia-sdk's executor accepts (written here from the
description of that executor, not copied from anyone's files): each is checked by
``zerohop validate`` (warnings printed, ``--strict`` failing on the field a warning
names) and run over a real ``zerohop serve`` the way a remotemedia client sends it
(``PipelineManifest`` messages: connections carry only ``from`` / ``to``), with our
node types standing in for models we do not ship. Warnings come back in the
``zerohop-warnings`` response metadata."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import wave
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from test_grpc import AUTH, TOKEN, Server, _raw_execute, stop_server

from zerohop import Audio, Frame, Text
from zerohop._proto import execution_pb2
from zerohop.client import from_buffer, to_buffer
from zerohop.errors import ManifestError
from zerohop.manifest import Manifest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def doc(
    *nodes: dict[str, Any], connections: list[dict[str, Any]] | None = None, **top: Any
) -> dict[str, Any]:
    """A manifest of ``nodes`` chained in order unless ``connections`` are given."""
    if connections is None:
        connections = [{"from": a["id"], "to": b["id"]} for a, b in itertools.pairwise(nodes)]
    return {
        "version": "v1",
        "metadata": {"name": "compat"},
        "nodes": list(nodes),
        "connections": connections,
        **top,
    }


def hello(rate: int = 16_000) -> np.ndarray[Any, Any]:
    with wave.open(str(EXAMPLES / "hello.wav"), "rb") as w:
        pcm = np.frombuffer(w.readframes(w.getnframes()), np.int16)
    samples = pcm.astype(np.float32) / 32768.0
    if rate != 16_000:
        count = round(len(samples) * rate / 16_000)
        spectrum = np.fft.rfft(samples)[: count // 2 + 1]
        samples = (np.fft.irfft(spectrum, count) * (count / len(samples))).astype(np.float32)
    return samples


TEXT = Text("hello there")
SPEECH = Audio(hello(48_000), 48_000)

#: name → (manifest, input, JSON paths of the expected warnings).
FORMS: dict[str, tuple[dict[str, Any], Frame, list[str]]] = {
    "version_1_0_no_name": (
        {"version": "1.0", "nodes": [{"id": "p", "node_type": "PassThrough"}], "connections": []},
        TEXT,
        [],
    ),
    "version_1_empty_metadata": (
        {
            "version": "1",
            "metadata": {},
            "nodes": [{"id": "p", "node_type": "Echo"}],
            "connections": [],
        },
        TEXT,
        [],
    ),
    "dotted_ids": (
        doc(
            {"id": "stage.one", "node_type": "Echo"},
            {"id": "stage.two", "node_type": "PassThrough"},
        ),
        TEXT,
        [],
    ),
    "default_ports": (
        doc(
            {"id": "a", "node_type": "Echo"},
            {"id": "b", "node_type": "Echo"},
            connections=[{"from": "a", "to": "b", "from_port": "default", "to_port": "default"}],
        ),
        TEXT,
        [],
    ),
    "hints_on_native_nodes": (
        doc(
            {"id": "a", "node_type": "PassThrough", "runtime_hint": "RUSTPYTHON"},
            {"id": "b", "node_type": "PassThrough", "runtime_hint": "cpython"},
            {"id": "c", "node_type": "PassThrough", "runtime_hint": "cpython_wasm"},
        ),
        TEXT,
        ["nodes[0].runtime_hint", "nodes[1].runtime_hint", "nodes[2].runtime_hint"],
    ),
    "passthrough_aliases": (
        doc(
            {"id": "a", "node_type": "PassthroughNode"},
            {"id": "b", "node_type": "PassThroughNode"},
            {"id": "c", "node_type": "EchoNode"},
        ),
        TEXT,
        [],
    ),
    "unknown_params": (
        doc(
            {"id": "a", "node_type": "PassThrough", "params": {"buffer_size": 512}},
            {"id": "b", "node_type": "Suffix", "params": {"suffix": "?", "colour": "red"}},
        ),
        TEXT,
        ["nodes[0].params.buffer_size", "nodes[1].params.colour"],
    ),
    # A voice front end as remotemedia writes it: a resampler to "whatever the next node
    # needs", SileroVAD with its documented params and spellings, the accumulator with a
    # buffer size, Whisper with a task.
    "speech_chain": (
        doc(
            {"id": "rs", "node_type": "AutoResampleNode", "params": {"target_sample_rate": "auto"}},
            {
                "id": "vad",
                "node_type": "SileroVAD",
                "params": {
                    "threshold": 0.5,
                    "neg_threshold": 0.35,
                    "sample_rate": 16000,
                    "min_silence_duration_ms": 300,
                    "max_speech_duration_s": 30,
                    "pre_speech_pad_ms": 100,
                },
            },
            {
                "id": "acc",
                "node_type": "AudioBufferAccumulatorNode",
                "params": {"buffer_size": 16000 * 20},
            },
            {"id": "asr", "node_type": "WhisperNode", "params": {"task": "transcribe"}},
        ),
        SPEECH,
        [],
    ),
    "resample_alias_rate_before_vad": (
        doc(
            {"id": "rs", "node_type": "AudioResample"},
            {"id": "vad", "node_type": "SileroVADNode", "params": {"sampling_rate": 8000}},
        ),
        SPEECH,
        [],
    ),
}


pytestmark = pytest.mark.usefixtures("grpc_sockets_closed")


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("compat")
    out = {}
    for name, (manifest, _, _) in FORMS.items():
        out[name] = folder / f"{name}.json"
        out[name].write_text(json.dumps(manifest))
    return out


def zerohop(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "zerohop.cli", *args], capture_output=True, text=True, timeout=120
    )


def test_validate_prints_each_warning_and_passes(files: dict[str, Path]) -> None:
    done = zerohop("validate", *map(str, files.values()))
    assert done.returncode == 0, done.stdout + done.stderr
    for name, path in files.items():
        expected = FORMS[name][2]
        shown = [
            line.split("warning: ")[1].split(":")[0]
            for line in done.stderr.splitlines()
            if line.startswith(f"{path}: warning: ")
        ]
        assert shown == expected, (name, done.stderr)
        assert f"{path}: ok" in done.stdout


def test_strict_fails_naming_the_first_warned_field(files: dict[str, Path]) -> None:
    done = zerohop("validate", "--strict", *map(str, files.values()))
    assert done.returncode == 1
    for name, path in files.items():
        expected = FORMS[name][2]
        if expected:
            assert f"{path}: INVALID: {expected[0]}: " in done.stdout, done.stdout
        else:
            assert f"{path}: ok" in done.stdout, done.stdout


def test_strict_params_in_runtime_toml(files: dict[str, Path], tmp_path: Path) -> None:
    config = tmp_path / "runtime.toml"
    config.write_text("[nodes]\nstrict_params = true\n")
    done = subprocess.run(
        [sys.executable, "-m", "zerohop.cli", "validate", str(files["unknown_params"])],
        capture_output=True,
        text=True,
        env={**os.environ, "ZEROHOP_CONFIG": str(config)},
        timeout=120,
    )
    assert done.returncode == 1
    assert "INVALID: nodes[0].params.buffer_size: unknown parameter of PassThrough" in done.stdout


def test_unknown_params_never_reach_the_node() -> None:
    manifest, _, _ = FORMS["unknown_params"]
    pipe = Manifest.parse(manifest).to_pipeline()
    params = {n["id"]: n["params"] for n in pipe.graph()["nodes"]}
    assert params == {"a": {}, "b": {"suffix": "?"}}
    assert [w.node_id for w in pipe.warnings] == ["a", "b"]
    assert "(node 'b')" in str(pipe.warnings[1])


def test_unknown_fields_and_ports_named_in_from_and_to() -> None:
    data = doc(
        {"id": "asr", "node_type": "WhisperNode", "extra": 1},
        {"id": "echo", "node_type": "Echo"},
        {"id": "v1.0", "node_type": "Echo"},
        {"id": "v1", "node_type": "Echo"},
        connections=[
            {"from": "asr.info", "to": "echo", "weight": 3},
            {"from": "echo", "to": "v1.0"},
        ],
        created_by="someone",
    )
    pipe = Manifest.parse(data).to_pipeline()
    assert [w.path for w in pipe.warnings] == [
        "created_by",
        "nodes[0].extra",
        "connections[0].weight",
    ]
    conns = pipe.graph()["connections"]
    assert conns[0] == {"from": "asr", "to": "echo", "from_port": "info", "to_port": None}
    # An exact id wins over node.port.
    assert conns[1] == {"from": "echo", "to": "v1.0", "from_port": None, "to_port": None}
    data["connections"][0]["from_port"] = "out"
    with pytest.raises(ManifestError, match=r"connections\[0\]\.from: names port 'info'"):
        Manifest.parse(data).to_pipeline()


def test_auto_rate_needs_a_declaring_next_node() -> None:
    data = doc({"id": "rs", "node_type": "FastResampleNode"}, {"id": "e", "node_type": "Echo"})
    with pytest.raises(ManifestError, match="declares no input rate") as info:
        Manifest.parse(data).to_pipeline()
    assert info.value.path == "nodes[0].params.target_rate"
    data = doc(
        {"id": "rs", "node_type": "FastResampleNode", "params": {"targetSampleRate": "auto"}}
    )
    with pytest.raises(ManifestError, match="connected to no node") as info:
        Manifest.parse(data).to_pipeline()
    assert info.value.path == "nodes[0].params.targetSampleRate"
    rates = {
        n["id"]: n["params"].get("target_rate")
        for n in Manifest.parse(FORMS["resample_alias_rate_before_vad"][0])
        .to_pipeline()
        .graph()["nodes"]
    }
    assert rates["rs"] == 8000


def test_nodes_lists_aliases_and_input_rates() -> None:
    done = zerohop("nodes", "--json")
    rows = json.loads(done.stdout)
    assert rows["PassThrough"]["aliases"] == ["EchoNode", "PassThroughNode", "PassthroughNode"]
    assert rows["FastResampleNode"]["aliases"] == ["AudioResample", "AutoResampleNode"]
    assert rows["SileroVADNode"]["aliases"] == ["SileroVAD"]
    assert rows["WhisperNode"]["input_rate"] == rows["SileroVADNode"]["input_rate"] == 16000


def test_schema_reflects_the_accepted_forms() -> None:
    schema = json.loads(zerohop("schema").stdout)
    assert schema["properties"]["version"]["enum"] == ["v1", "1.0", "1"]
    assert "metadata" not in schema.get("required", [])
    node = schema["$defs"]["NodeManifest"]["properties"]
    import re

    host = next(p for p in node["host"]["anyOf"] if "pattern" in p)["pattern"]
    assert all(re.match(host, h) for h in ["http://gpu-box:50051", "grpc://a:1", "a:5"])
    assert not re.match(host, "gpu-box")


# ------------------------------------------------------------------ over gRPC


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Path]]:
    """A real ``zerohop serve``, its stderr (the log) in a file."""
    folder = tmp_path_factory.mktemp("compat-serve")
    config = folder / "runtime.toml"
    config.write_text("[server]\nmax_sessions = 4\n")
    log = folder / "stderr.log"
    with log.open("w") as err:
        env = {**os.environ, "ZEROHOP_CONFIG": str(config), "ZEROHOP_TOKEN": TOKEN}
        proc = subprocess.Popen(
            [sys.executable, "-m", "zerohop.cli", "serve", "--port", "0"],
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            env=env,
        )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert "listening on 127.0.0.1:" in line, line
    yield Server(line.split("listening on ")[1].split()[0], proc.pid), log
    stop_server(proc)


def as_message(manifest: dict[str, Any]) -> Any:
    """The manifest as a remotemedia client sends it: proto fields only (connections
    lose from_port/to_port, unknown fields go), params as a JSON string, runtime hints
    as the enum."""
    hint = execution_pb2.RuntimeHint
    hints = {
        "rustpython": hint.RUNTIME_HINT_RUSTPYTHON,
        "cpython": hint.RUNTIME_HINT_CPYTHON,
        "cpython_wasm": hint.RUNTIME_HINT_CPYTHON_WASM,
    }
    meta = manifest.get("metadata") or {}
    return execution_pb2.PipelineManifest(
        version=manifest["version"],
        metadata=execution_pb2.ManifestMetadata(name=meta.get("name", "")),
        nodes=[
            execution_pb2.NodeManifest(
                id=n["id"],
                node_type=n["node_type"],
                params=json.dumps(n.get("params", {})),
                host=n.get("host", ""),
                runtime_hint=hints.get(n.get("runtime_hint", "").lower(), 0),
            )
            for n in manifest["nodes"]
        ],
        connections=[
            execution_pb2.Connection(**{"from": c["from"], "to": c["to"]})
            for c in manifest["connections"]
        ],
    )


@pytest.mark.parametrize(
    "name",
    [pytest.param(n, marks=pytest.mark.speech) if FORMS[n][1] is SPEECH else n for n in FORMS],
)
def test_each_form_runs_over_grpc(name: str, server: tuple[Server, Path]) -> None:
    manifest, frame, warned = FORMS[name]
    first = manifest["nodes"][0]["id"]
    request = execution_pb2.ExecuteRequest(
        manifest=as_message(manifest), data_inputs={first: to_buffer(frame)}
    )
    with grpc.insecure_channel(server[0].address) as channel:
        response, call = _raw_execute(channel).with_call(
            request.SerializeToString(), metadata=AUTH, timeout=120
        )
    assert response.WhichOneof("outcome") == "result", response
    outputs = {k: from_buffer(v) for k, v in response.result.data_outputs.items()}
    # A single output is also keyed "output" for remotemedia's clients.
    alias = outputs.pop("output", None)
    assert (alias is not None) == (len(outputs) == 1), outputs.keys()
    metadata = dict(call.initial_metadata())
    if warned:
        assert [w.split(":")[0] for w in json.loads(metadata["zerohop-warnings"])] == warned
    else:
        assert "zerohop-warnings" not in metadata
    if name == "speech_chain":
        texts = [f.text for f in outputs.values() if isinstance(f, Text)]
        assert "kitchen" in " ".join(texts).lower(), outputs
    elif name == "resample_alias_rate_before_vad":
        audio = [f for f in outputs.values() if isinstance(f, Audio)]
        assert audio and all(a.sample_rate == 8000 for a in audio)
    elif name == "unknown_params":
        assert outputs["b"].text == "hello there?"  # type: ignore[attr-defined]
    else:
        assert [f.text for f in outputs.values()] == ["hello there"]  # type: ignore[attr-defined]


def test_server_logs_warnings_naming_the_pipeline(server: tuple[Server, Path]) -> None:
    manifest, frame, _ = FORMS["unknown_params"]
    manifest = {**manifest, "metadata": {"name": "logged-one"}}
    request = execution_pb2.ExecuteRequest(
        manifest=as_message(manifest), data_inputs={"a": to_buffer(frame)}
    )
    with grpc.insecure_channel(server[0].address) as channel:
        _raw_execute(channel)(request.SerializeToString(), metadata=AUTH, timeout=60)
    lines = [line for line in server[1].read_text().splitlines() if "'logged-one'" in line]
    assert len(lines) == 2, lines
    assert all(
        line.startswith("zerohop serve: pipeline 'logged-one': warning: nodes[") for line in lines
    )
    assert "params.buffer_size" in lines[0] and "params.colour" in lines[1]
