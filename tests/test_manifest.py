"""manifest.v1: snake and camel case, JSON and YAML, kept unknown keys, overrides, and
errors that name the JSON path — before anything is spawned."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
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
        ({"metadata": {}}, "metadata.name"),
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
    assert schema["properties"]["version"]["const"] == "v1"
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
                    st.text(max_size=5),
                    st.lists(st.integers(), max_size=2),
                )
            )
        return out
    if isinstance(data, list) and data:
        index = draw(st.integers(0, len(data) - 1))
        out_list = list(data)
        out_list[index] = mutate(out_list[index], draw)
        return out_list
    return draw(st.one_of(st.none(), st.integers(), st.text(max_size=8), st.booleans()))


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_near_valid_manifests_fail_cleanly(data: st.DataObject) -> None:
    candidate = mutate(BASE, data.draw)
    try:
        Manifest.parse(candidate).to_pipeline()
    except ManifestError as err:
        assert str(err)
    except Exception as err:  # anything else is a bug: it must be a ManifestError
        raise AssertionError(f"{type(err).__name__}: {err} for {candidate}") from err
