"""The node registry and the node API outside of any process: registration rules,
lookup with suggestions, entry points, runtime.toml modules, params validation, and
which modules a node process loads."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from pydantic import BaseModel

import zerohop
from zerohop import ConfigError, ManifestError, MultiprocessNode, UnknownNodeTypeError
from zerohop import registry as registry_module


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
    monkeypatch.setattr(registry_module, "_discovered", False)
    try:
        assert zerohop.node_class("FromPlugin").__name__ == "PluginNode"
        assert zerohop.node_class("ConfiguredNode").__name__ == "Configured"
    finally:
        for name in ("FromPlugin", "ConfiguredNode", "PluginNode"):
            registry_module._registry.pop(name, None)
        sys.modules.pop("plugin_nodes", None)


def test_threads_that_ask_the_registry_first_all_wait_for_discovery(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`zerohop serve` plans concurrent streams on several threads: each must see every
    node type, not the ones loaded so far by whichever thread began discovery (the
    second of two streams opened at once got "unknown node type")."""
    import threading

    (tmp_path / "slow_plugin.py").write_text(
        textwrap.dedent(
            """
            import time
            from zerohop import MultiprocessNode, register_node

            time.sleep(0.5)  # a plugin with heavy imports

            @register_node
            class SlowPluginNode(MultiprocessNode):
                pass
            """
        )
    )
    config = tmp_path / "runtime.toml"
    config.write_text('[nodes]\nmodules = ["slow_plugin"]\n')
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("ZEROHOP_CONFIG", str(config))
    monkeypatch.setattr(registry_module, "_discovered", False)
    start = threading.Barrier(4)
    found: list[object] = []

    def ask() -> None:
        start.wait(30)
        try:
            found.append(zerohop.node_class("SlowPluginNode").__name__)
        except UnknownNodeTypeError as err:
            found.append(err)

    threads = [threading.Thread(target=ask) for _ in range(4)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    finally:
        registry_module._registry.pop("SlowPluginNode", None)
        sys.modules.pop("slow_plugin", None)
    assert found == ["SlowPluginNode"] * 4, found


def test_zerohops_own_nodes_are_declared_as_entry_points() -> None:
    """The registry finds zerohop's nodes as it finds any plugin's: every node class of
    zerohop.nodes is declared in the installed entry points under its node type, and
    every declared one is such a class."""
    from importlib.metadata import entry_points

    import zerohop.nodes

    declared = {p.name: p.value for p in entry_points(group=registry_module.ENTRY_POINT_GROUP)}
    ours = {
        cls.node_type: f"{cls.__module__}:{cls.__qualname__}"
        for module in vars(zerohop.nodes).values()
        if getattr(module, "__name__", "").startswith("zerohop.nodes.")
        for cls in vars(module).values()
        if isinstance(cls, type)
        and issubclass(cls, MultiprocessNode)
        and cls.__module__ == module.__name__
        and "node_type" in vars(cls)
    }
    assert ours and {k: v for k, v in declared.items() if v.startswith("zerohop.")} == ours


@pytest.mark.parametrize("spawn_method", ["exec", "zygote"])
def test_a_node_process_loads_no_host_side_module(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, spawn_method: str
) -> None:
    """What `python -m zerohop.runner` imports for a node: never the pipeline builder,
    sessions, executors, manifests, config, serve, CLI or client."""
    (tmp_path / "node_side_probe.py").write_text(
        textwrap.dedent(
            """
            import sys
            from zerohop import Json, MultiprocessNode

            class Modules(MultiprocessNode):
                def process(self, frame):
                    return Json(sorted(m for m in sys.modules if m.startswith("zerohop")))
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    import node_side_probe

    config = zerohop.RuntimeConfig.model_validate({"process": {"spawn_method": spawn_method}})
    try:
        pipe = zerohop.Pipeline("probe", config=config).node("m", node_side_probe.Modules)
        (out,) = pipe.run([zerohop.Text("x")])
    finally:
        sys.modules.pop("node_side_probe", None)
    loaded = set(out.value)  # type: ignore[attr-defined]
    host_side = {
        "zerohop.pipeline",
        "zerohop.session",
        "zerohop.multiprocess",
        "zerohop.inprocess",
        "zerohop.manifest",
        "zerohop.config",
        "zerohop.serve",
        "zerohop.cli",
        "zerohop.client",
    }
    assert "zerohop.runner" in loaded or "zerohop.node" in loaded, loaded
    assert not loaded & host_side, sorted(loaded & host_side)


def test_fault_injectors_are_not_registered_by_default() -> None:
    """Crash, BurnCPU, Slow and SlowInit are opt-in (zerohop.testing): a process that
    did not import it, or list it in [nodes] modules, does not know them."""
    code = "from zerohop import registered_nodes; print(' '.join(registered_nodes()))"
    names = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    ).stdout.split()
    assert "Echo" in names
    assert not {"Crash", "BurnCPU", "Slow", "SlowInit"} & set(names), names
