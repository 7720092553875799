"""The node registry and the node API outside of any process: registration rules,
lookup with suggestions, entry points, runtime.toml modules, params validation."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest
from pydantic import BaseModel

import zerohop
from zerohop import ConfigError, ManifestError, MultiprocessNode, UnknownNodeTypeError
from zerohop import node as node_module


class Sample(MultiprocessNode):
    class Params(BaseModel):
        rate: int = 16_000
        name: str = "x"


def test_register_and_resolve() -> None:
    registered = zerohop.register_node(Sample, name="TestSample")
    assert registered is Sample and Sample.node_type == "TestSample"
    assert zerohop.node_class("TestSample") is Sample
    zerohop.register_node(Sample, name="TestSample")  # the same class again is fine

    class Other(MultiprocessNode):
        pass

    with pytest.raises(ConfigError, match="already registered"):
        zerohop.register_node(Other, name="TestSample")
    with pytest.raises(TypeError):
        zerohop.register_node(int)  # type: ignore[type-var]


def test_unknown_types_suggest_close_names() -> None:
    with pytest.raises(UnknownNodeTypeError) as info:
        zerohop.node_class("Uppercase")
    assert "UpperCase" in info.value.suggestions
    assert "did you mean 'UpperCase'" in str(info.value)


def test_builtins_are_listed() -> None:
    names = zerohop.registered_nodes()
    assert {"Echo", "UpperCase", "BurnCPU", "Crash", "Split", "Join"} <= set(names)


def test_params_are_validated_with_json_paths() -> None:
    node = Sample({"rate": "8000"})
    assert node.params.rate == 8000  # coerced by the model
    with pytest.raises(ManifestError) as info:
        Sample.validate_params({"rate": "fast"}, node_id="mic", path="nodes[3].params")
    assert info.value.path == "nodes[3].params.rate"
    assert "nodes[3].params.rate" in str(info.value) and "'mic'" in str(info.value)
    assert Sample.params_schema()["properties"]["rate"]["default"] == 16_000
    assert MultiprocessNode({"a": 1}).params == {"a": 1}  # no model: the plain dict


def test_entry_points_and_config_modules_register_nodes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "plugin_nodes.py").write_text(
        textwrap.dedent(
            """
            from zerohop import MultiprocessNode, register_node

            class PluginNode(MultiprocessNode):
                pass

            @register_node(name="ConfiguredNode")
            class Configured(MultiprocessNode):
                pass
            """
        )
    )
    dist = tmp_path / "zerohop_test_plugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: zerohop-test-plugin\nVersion: 1.0\n"
    )
    (dist / "entry_points.txt").write_text(
        "[zerohop.nodes]\nFromPlugin = plugin_nodes:PluginNode\n"
    )
    config = tmp_path / "runtime.toml"
    config.write_text('[nodes]\nmodules = ["plugin_nodes"]\n')
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("ZEROHOP_CONFIG", str(config))
    monkeypatch.setattr(node_module, "_discovered", False)
    try:
        assert zerohop.node_class("FromPlugin").__name__ == "PluginNode"
        assert zerohop.node_class("ConfiguredNode").__name__ == "Configured"
    finally:
        for name in ("FromPlugin", "ConfiguredNode", "PluginNode"):
            node_module._registry.pop(name, None)
        sys.modules.pop("plugin_nodes", None)
