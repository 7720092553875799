"""manifest.v1: snake and camel case, JSON and YAML, kept unknown keys, overrides, and
errors that name the JSON path — before anything is spawned."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from zerohop import ManifestError, UnknownNodeTypeError
from zerohop.config import RuntimeConfig
from zerohop.manifest import Manifest, load_manifest, manifest_schema

BASE: dict[str, Any] = {
    "version": "v1",
    "metadata": {"name": "t", "createdAt": "2026-11-23T12:00:00Z"},
    "nodes": [
        {"id": "up", "nodeType": "UpperCase", "isStreaming": True, "vendor_key": {"x": 1}},
        {"id": "sfx", "node_type": "Suffix", "params": {"suffix": "?"}},
    ],
    "connections": [{"from": "up", "to": "sfx"}],
}


def manifest(**changes: Any) -> dict[str, Any]:
    data = json.loads(json.dumps(BASE))
    data.update(changes)
    return data


def test_camel_and_snake_case_and_unknown_keys() -> None:
    m = Manifest.parse(BASE)
    assert m.metadata.created_at == "2026-11-23T12:00:00Z"
    assert m.nodes[0].node_type == "UpperCase" and m.nodes[0].is_streaming is True
    assert m.nodes[0].model_extra == {"vendor_key": {"x": 1}}
    assert [(c.source, c.target) for c in m.connections] == [("up", "sfx")]


def test_json_and_yaml_files_run(tmp_path: Path) -> None:
    import yaml

    (tmp_path / "p.json").write_text(json.dumps(BASE))
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(BASE))
    for name in ("p.json", "p.yaml"):
        pipe = load_manifest(tmp_path / name).to_pipeline()
        from zerohop import Text

        assert [f.text for f in pipe.run([Text("hi")])] == ["HI?"]  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("changes", "path"),
    [
        ({"version": "v2"}, "version"),
        ({"nodes": []}, "nodes"),
        ({"metadata": {"name": ""}}, "metadata.name"),
        ({"version": "2.0"}, "version"),
        ({"nodes": [{"id": "a", "node_type": "Echo", "host": "gpu-box"}]}, "nodes[0].host"),
        ({"nodes": [{"id": "bad id", "node_type": "Echo"}]}, "nodes[0].id"),
        ({"nodes": [{"id": "a"}]}, "nodes[0].node_type"),
        ({"connections": [{"from": "up"}]}, "connections[0].to"),
    ],
)
def test_schema_errors_name_the_path(changes: dict[str, Any], path: str) -> None:
    with pytest.raises(ManifestError) as info:
        Manifest.parse(manifest(**changes))
    assert info.value.path == path and path in str(info.value)


def test_semantic_errors_name_the_path() -> None:
    bad_type = manifest(nodes=[{"id": "a", "node_type": "Ech0"}], connections=[])
    with pytest.raises(UnknownNodeTypeError, match="did you mean 'Echo'") as info:
        Manifest.parse(bad_type).to_pipeline()
    assert info.value.path == "nodes[0].node_type"
    bad_param = manifest(
        nodes=[{"id": "a", "node_type": "Suffix", "params": {"suffix": 1}}], connections=[]
    )
    with pytest.raises(ManifestError, match=r"nodes\[0\]\.params\.suffix"):
        Manifest.parse(bad_param).to_pipeline()
    dangling = manifest(connections=[{"from": "up", "to": "nowhere"}])
    with pytest.raises(ManifestError, match=r"connections\[0\]\.to: unknown node 'nowhere'"):
        Manifest.parse(dangling).to_pipeline()


def test_multiprocess_overrides() -> None:
    data = manifest()
    data["metadata"]["multiprocess"] = {
        "channelCapacity": 7,
        "init_timeout_secs": 12,
        "max_processes_per_session": 3,
    }
    runtime = Manifest.parse(data).runtime_config(RuntimeConfig())
    assert runtime.channel.capacity == 7
    assert (
        runtime.process.init_timeout_secs == 12 and runtime.process.max_processes_per_session == 3
    )
    data["metadata"]["multiprocess"] = {"channel_capacity": 0}
    with pytest.raises(ManifestError, match=r"metadata\.multiprocess\.channel_capacity"):
        Manifest.parse(data)
    data["metadata"]["multiprocess"] = {"enabled": False}
    assert Manifest.parse(data).executor() == "inprocess"
    data["metadata"]["multiprocess"] = {"enable_backpressure": False}
    with pytest.raises(ManifestError, match="never drops frames"):
        Manifest.parse(data).runtime_config(RuntimeConfig())


def test_process_limit_from_the_manifest() -> None:
    from zerohop import ResourceLimitError

    data = manifest()
    data["metadata"]["multiprocess"] = {"max_processes_per_session": 1}
    with pytest.raises(ResourceLimitError, match="limit is 1"):
        Manifest.parse(data).to_pipeline()


def test_schema_is_json_schema() -> None:
    schema = manifest_schema()
    assert schema["properties"]["version"]["enum"] == ["v1", "1.0", "1"]
    assert "from" in schema["$defs"]["Connection"]["properties"]


def test_files_that_are_not_manifests(tmp_path: Path) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(ManifestError, match="not valid JSON"):
        load_manifest(broken)
    with pytest.raises(ManifestError, match="cannot read"):
        load_manifest(tmp_path / "missing.json")


def mutate(data: Any, draw: Any) -> Any:
    """One random change somewhere in a valid manifest: drop, retype or corrupt a value."""
    if isinstance(data, dict) and data:
        key = draw(st.sampled_from(sorted(data)))
        action = draw(st.sampled_from(["drop", "recurse", "retype"]))
        out = dict(data)
        if action == "drop":
            del out[key]
        elif action == "recurse":
            out[key] = mutate(out[key], draw)
        else:
            out[key] = draw(
                st.one_of(
                    st.none(),
                    st.integers(),
                    st.floats(allow_nan=False),
                    st.text(max_size=5),
                    st.lists(st.integers(), max_size=2),
                    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
                )
            )
        return out
    if isinstance(data, list) and data:
        index = draw(st.integers(0, len(data) - 1))
        out_list = list(data)
        out_list[index] = mutate(out_list[index], draw)
        return out_list
    return draw(st.one_of(st.none(), st.integers(), st.text(max_size=8), st.booleans()))


#: Valid manifests to start from: Python nodes, native nodes and ports, mixed.
VALID: list[dict[str, Any]] = [
    BASE,
    {
        "version": "v1",
        "metadata": {"name": "mixed", "multiprocess": {"channel_capacity": 8}},
        "nodes": [
            {"id": "chunk", "node_type": "AudioChunkerNode", "params": {"chunk_size": 480}},
            {"id": "gain", "node_type": "Scale", "params": {"factor": 0.5}},
            {
                "id": "resample",
                "node_type": "FastResampleNode",
                "runtime_hint": "rust",
                "params": {"source_rate": 48000, "target_rate": 16000, "quality": "high"},
            },
            {"id": "fmt", "node_type": "AudioFormatNode", "params": {"target_format": "i16"}},
        ],
        "connections": [
            {"from": "chunk", "to": "gain"},
            {"from": "gain", "to": "resample"},
            {"from": "resample", "to": "fmt"},
        ],
    },
    {
        "version": "v1",
        "metadata": {"name": "ports"},
        "nodes": [
            {"id": "split", "node_type": "Split"},
            {"id": "join", "node_type": "Join", "executor": "multiprocess"},
            {"id": "pass", "node_type": "PassThrough"},
        ],
        "connections": [
            {"from": "split", "to": "join", "from_port": "even", "to_port": "left"},
            {"from": "split", "to": "pass", "fromPort": "odd"},
            {"from": "pass", "to": "join", "to_port": "right"},
        ],
    },
]

CAMEL = {
    "node_type": "nodeType",
    "is_streaming": "isStreaming",
    "runtime_hint": "runtimeHint",
    "created_at": "createdAt",
    "from_port": "fromPort",
    "to_port": "toPort",
    "on_error": "onError",
    "channel_capacity": "channelCapacity",
    "chunk_size": "chunkSize",
    "source_rate": "sourceRate",
    "target_rate": "targetRate",
    "target_format": "targetFormat",
}


def camel_case(data: Any) -> Any:
    """Every key that has a camelCase spelling, spelled that way (recursively)."""
    if isinstance(data, dict):
        return {CAMEL.get(k, k): camel_case(v) for k, v in data.items()}
    if isinstance(data, list):
        return [camel_case(v) for v in data]
    return data


def targeted(data: dict[str, Any], draw: Any) -> tuple[dict[str, Any], str | None]:
    """A change that must be refused, and the path of the error it must raise (None
    when several paths are right)."""
    out = json.loads(json.dumps(data))
    nodes, connections = out["nodes"], out["connections"]
    ids = [n["id"] for n in nodes]
    i = draw(st.integers(0, len(nodes) - 1))
    kind = draw(
        st.sampled_from(
            [
                "bad_id",
                "duplicate_id",
                "dangling",
                "self",
                "cycle",
                "unknown_type",
                "bad_param",
                "bad_hint",
                "bad_executor",
                "kind_mismatch",
            ]
        )
    )
    if kind == "bad_id":
        nodes[i]["id"] = draw(st.text(min_size=1, max_size=6).filter(lambda t: not _is_id(t)))
        return out, f"nodes[{i}].id"
    if kind == "duplicate_id":
        if len(nodes) < 2:
            nodes.append(dict(nodes[0]))
            return out, "nodes[1].id"
        j = draw(st.integers(0, len(nodes) - 1).filter(lambda j: j != i))
        nodes[max(i, j)]["id"] = nodes[min(i, j)]["id"]
        return out, None  # the id itself, or a connection now ambiguous
    if kind == "dangling":
        ghost = draw(st.from_regex(r"\A[a-z]{1,6}\Z").filter(lambda t: t not in ids))
        side = draw(st.sampled_from(["from", "to"]))
        connections.append({"from": ids[i], "to": ids[i], side: ghost})
        return out, f"connections[{len(connections) - 1}].{side}"
    if kind == "self":
        connections.append({"from": ids[i], "to": ids[i]})
        return out, None  # connects to itself (or a port error first for multi-port nodes)
    if kind == "cycle":
        if not connections:
            connections.append({"from": ids[0], "to": ids[0]})
            return out, None
        c = dict(draw(st.sampled_from(connections)))
        reverse = {"from": c["to"], "to": c["from"]}
        connections.append(reverse)
        return out, None  # a cycle, or a port the reverse direction lacks
    if kind == "unknown_type":
        nodes[i].pop("nodeType", None)
        nodes[i]["node_type"] = draw(st.text(min_size=1, max_size=12)) + "\u00a7"
        return out, f"nodes[{i}].node_type"
    if kind == "bad_param":
        params = nodes[i].setdefault("params", {})
        key = draw(st.sampled_from([*sorted(params), "no_such_param"]))
        params[key] = draw(st.one_of(st.just(-1), st.just("x"), st.just([1]), st.none()))
        return out, None  # params.<key>, or valid after all for a lenient Python node
    if kind == "kind_mismatch":
        audio = [n["id"] for n in nodes if n.get("node_type", n.get("nodeType")) in AUDIO_ONLY]
        if not audio:
            nodes[i]["node_type"] = "no such type"
            nodes[i].pop("nodeType", None)
            return out, f"nodes[{i}].node_type"
        nodes.append({"id": "zz_text", "node_type": "UpperCase"})
        connections.append({"from": "zz_text", "to": draw(st.sampled_from(audio))})
        return out, f"connections[{len(connections) - 1}]"
    if kind == "bad_hint":
        nodes[i]["runtime_hint"] = draw(
            st.text(max_size=8).filter(lambda t: t.strip().lower() not in HINTS)
        )
        return out, f"nodes[{i}].runtime_hint"
    # An empty executor, like an empty runtime_hint, means "not given".
    nodes[i]["executor"] = draw(
        st.text(min_size=1, max_size=12).filter(lambda t: t not in EXECUTORS)
    )
    return out, f"nodes[{i}].executor"


HINTS = {
    "",
    "auto",
    "unspecified",
    "native",
    "rust",
    "python",
    "cpython",
    "rustpython",
    "cpython_wasm",
}
HINTS |= {f"runtime_hint_{h}" for h in HINTS}
EXECUTORS = {"native", "multiprocess", "inprocess"}
AUDIO_ONLY = {"AudioChunkerNode", "FastResampleNode", "AudioFormatNode"}


def _is_id(text: str) -> bool:
    import re

    return re.fullmatch(r"[a-zA-Z0-9_.-]+", text) is not None


def load_as(candidate: Any, fmt: str) -> Any:
    """Writes ``candidate`` as a JSON or YAML file and loads it as users do."""
    import tempfile

    import yaml

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"manifest.{fmt}"
        text = json.dumps(candidate) if fmt == "json" else yaml.safe_dump(candidate)
        path.write_text(text)
        return load_manifest(path).to_pipeline()


def check_refusal(candidate: Any, fmt: str, expected_path: str | None) -> None:
    """``candidate`` is refused with a ManifestError naming a JSON path (the expected
    one if given) — never another exception — and nothing is spawned."""
    from conftest import child_pids, shm_entries

    before = child_pids(), shm_entries()
    try:
        load_as(candidate, fmt)
    except ManifestError as err:
        assert err.path, f"no path in {err!r}"
        assert err.path in str(err) or str(err).startswith(err.path.split("[")[0])
        if expected_path is not None:
            assert err.path.startswith(expected_path), (err.path, expected_path, str(err))
    except Exception as err:  # anything else is a bug: it must be a ManifestError
        raise AssertionError(f"{type(err).__name__}: {err} for {candidate}") from err
    else:
        assert expected_path is None, f"accepted, expected an error at {expected_path}"
    assert (child_pids(), shm_entries()) == before


@pytest.mark.parametrize("fmt", ["json", "yaml"])
@pytest.mark.parametrize("base", range(len(VALID)))
def test_valid_manifests_and_their_camel_case_load(fmt: str, base: int) -> None:
    for candidate in (VALID[base], camel_case(VALID[base])):
        pipe = load_as(candidate, fmt)
        assert [n["id"] for n in pipe.graph()["nodes"]] == [n["id"] for n in VALID[base]["nodes"]]


@pytest.fixture
def no_node_process_started() -> Iterator[None]:
    """No node process (zygote children included, found by command line) appears while
    the test runs."""
    from test_session import runner_pids

    before = runner_pids()
    yield
    assert runner_pids() == before


# The fixture spans all examples of a test on purpose: nothing may start in any of them.
@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.data(), st.sampled_from(["json", "yaml"]), st.integers(0, len(VALID) - 1))
def test_near_valid_manifests_fail_cleanly(
    no_node_process_started: None, data: st.DataObject, fmt: str, base: int
) -> None:
    start = data.draw(st.sampled_from([VALID[base], camel_case(VALID[base])]))
    check_refusal(mutate(start, data.draw), fmt, None)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.data(), st.sampled_from(["json", "yaml"]), st.integers(0, len(VALID) - 1))
def test_invalid_manifests_name_the_path(
    no_node_process_started: None, data: st.DataObject, fmt: str, base: int
) -> None:
    start = data.draw(st.sampled_from([VALID[base], camel_case(VALID[base])]))
    candidate, path = targeted(start, data.draw)
    check_refusal(candidate, fmt, path)


def test_unknown_types_suggest_the_closest_registered_names() -> None:
    for typo, suggestion in [
        ("AudioChunkNode", "AudioChunkerNode"),
        ("FastResample", "FastResampleNode"),
        ("uppercase", "UpperCase"),
    ]:
        data = manifest(nodes=[{"id": "a", "node_type": typo}], connections=[])
        with pytest.raises(UnknownNodeTypeError) as info:
            Manifest.parse(data).to_pipeline()
        assert suggestion in info.value.suggestions and f"'{suggestion}'" in str(info.value)
        assert info.value.path == "nodes[0].node_type"
