"""remotemedia ``manifest.v1`` pipeline descriptions: pydantic models, loading from JSON
or YAML, and turning a manifest into a :class:`~zerohop.Pipeline`.

The format is the remotemedia-sdk one, unchanged: ``version: "v1"``, ``metadata``,
``nodes[]`` and ``connections[]``. Keys JavaScript clients send in camelCase
(``nodeType``, ``isStreaming``, ``createdAt``, ...) are accepted as well as snake_case;
unknown keys are kept, not rejected. zerohop's own additions are optional:
``connections[].from_port`` / ``to_port`` and ``metadata.multiprocess`` (per-pipeline
overrides of ``runtime.toml``).

Every validation error names the JSON path of the field it is about
(``nodes[2].params.sample_rate``).

Examples
--------
>>> from zerohop.manifest import Manifest
>>> m = Manifest.model_validate({
...     "version": "v1",
...     "metadata": {"name": "demo"},
...     "nodes": [{"id": "up", "nodeType": "UpperCase"}],
...     "connections": [],
... })
>>> m.nodes[0].node_type
'UpperCase'
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationError

from .config import RuntimeConfig
from .errors import ManifestError

__all__ = [
    "Connection",
    "Manifest",
    "Metadata",
    "MultiprocessSettings",
    "NodeManifest",
    "load_manifest",
    "manifest_schema",
]

NODE_ID = r"^[a-zA-Z0-9_-]+$"


def _either(name: str, camel: str) -> Any:
    """Accept ``name`` (snake_case) and ``camel`` (JavaScript clients) alike."""
    return Field(default=None, validation_alias=AliasChoices(name, camel))


class _Model(BaseModel):
    # Unknown keys are kept (extra="allow") so that manifests written for other
    # remotemedia runtimes load unchanged.
    model_config = ConfigDict(extra="allow", populate_by_name=True)


class MultiprocessSettings(_Model):
    """``metadata.multiprocess``: overrides of runtime.toml for this pipeline."""

    max_processes_per_session: int | None = Field(
        default=None,
        ge=0,
        validation_alias=AliasChoices("max_processes_per_session", "maxProcessesPerSession"),
    )
    channel_capacity: int | None = Field(
        default=None,
        ge=1,
        le=10_000,
        validation_alias=AliasChoices("channel_capacity", "channelCapacity"),
    )
    init_timeout_secs: float | None = Field(
        default=None,
        ge=1,
        le=300,
        validation_alias=AliasChoices("init_timeout_secs", "initTimeoutSecs"),
    )
    python_executable: str | None = _either("python_executable", "pythonExecutable")
    #: zerohop always applies backpressure (it never drops a frame); ``false`` is refused.
    enable_backpressure: bool | None = _either("enable_backpressure", "enableBackpressure")
    #: zerohop extension: ``false`` runs the Python nodes in-process instead.
    enabled: bool | None = None


class Metadata(_Model):
    name: str = Field(min_length=1, max_length=255)
    description: str | None = None
    created_at: str | None = _either("created_at", "createdAt")
    multiprocess: MultiprocessSettings | None = None


class NodeManifest(_Model):
    id: str = Field(pattern=NODE_ID)
    node_type: str = Field(min_length=1, validation_alias=AliasChoices("node_type", "nodeType"))
    params: dict[str, Any] = Field(default_factory=dict)
    capabilities: dict[str, Any] | None = None
    host: str | None = Field(default=None, pattern=r"^[^:]+:\d+$")
    is_streaming: bool | None = _either("is_streaming", "isStreaming")
    #: Which implementation to run: "auto" (the registry decides), "native"/"rust", or
    #: "python"/"cpython" (remotemedia's "rustpython" and "cpython_wasm" run on CPython).
    runtime_hint: str | None = _either("runtime_hint", "runtimeHint")
    execution: dict[str, Any] | None = None
    #: zerohop extension: "native", "multiprocess" or "inprocess"; must agree with
    #: ``runtime_hint`` and with how the pipeline runs its Python nodes.
    executor: str | None = None
    #: zerohop extension: what to do when ``process`` raises ("fail" or "skip").
    on_error: Literal["fail", "skip"] = Field(
        default="fail", validation_alias=AliasChoices("on_error", "onError")
    )


class Connection(_Model):
    source: str = Field(alias="from", pattern=NODE_ID)
    target: str = Field(alias="to", pattern=NODE_ID)
    from_port: str | None = _either("from_port", "fromPort")
    to_port: str | None = _either("to_port", "toPort")


class Manifest(_Model):
    """A whole ``manifest.v1`` document."""

    version: Literal["v1"]
    metadata: Metadata
    nodes: list[NodeManifest] = Field(min_length=1)
    connections: list[Connection] = Field(default_factory=list)

    @classmethod
    def parse(cls, data: Any, *, source: str = "manifest") -> Manifest:
        """Validates ``data``; a :class:`ManifestError` names the first bad field's path."""
        try:
            return cls.model_validate(data)
        except ValidationError as err:
            first = err.errors()[0]
            path = _json_path(first["loc"])
            more = f" (and {err.error_count() - 1} more)" if err.error_count() > 1 else ""
            raise ManifestError(f"{source}: {path}: {first['msg']}{more}", path=path) from None

    def runtime_config(self, base: RuntimeConfig) -> RuntimeConfig:
        """``base`` with this manifest's ``metadata.multiprocess`` overrides applied."""
        mp = self.metadata.multiprocess
        if mp is None:
            return base
        if mp.enable_backpressure is False:
            raise ManifestError(
                "metadata.multiprocess.enable_backpressure: zerohop never drops frames; "
                "a full channel always makes its sender wait",
                path="metadata.multiprocess.enable_backpressure",
            )
        process = base.process.model_dump()
        channel = base.channel.model_dump()
        _refuse_escalation(mp, base)
        if mp.max_processes_per_session is not None:
            process["max_processes_per_session"] = mp.max_processes_per_session
        if mp.init_timeout_secs is not None:
            process["init_timeout_secs"] = mp.init_timeout_secs
        if mp.python_executable is not None:
            process["python_executable"] = mp.python_executable
        if mp.channel_capacity is not None:
            channel["capacity"] = mp.channel_capacity
        return RuntimeConfig.model_validate(
            {**base.model_dump(), "process": process, "channel": channel}
        )

    def executor(self, base: RuntimeConfig | None = None) -> Literal["multiprocess", "inprocess"]:
        """How this pipeline runs its Python nodes: in-process when
        ``metadata.multiprocess.enabled`` is false or ``base`` (runtime.toml) turns
        multiprocess execution off — the operator's switch wins over the manifest."""
        mp = self.metadata.multiprocess
        off = (mp is not None and mp.enabled is False) or (
            base is not None and not base.process.multiprocess
        )
        return "inprocess" if off else "multiprocess"

    def to_pipeline(self, config: RuntimeConfig | None = None) -> Any:
        """Builds the :class:`~zerohop.Pipeline` (validating node types and params)."""
        from .config import load_config
        from .pipeline import Pipeline

        runtime = self.runtime_config(config or load_config())
        pipe = Pipeline(self.metadata.name, executor=self.executor(runtime), config=runtime)
        for node in self.nodes:
            pipe.add_node(
                node.id,
                node.node_type,
                node.params,
                on_error=node.on_error,
                runtime_hint=node.runtime_hint,
                executor=node.executor,
            )
        for c in self.connections:
            pipe.connect(c.source, c.target, from_port=c.from_port, to_port=c.to_port)
        pipe.validate()
        return pipe


def _refuse_escalation(mp: MultiprocessSettings, base: RuntimeConfig) -> None:
    """A manifest may come from a remote client: it can tighten the operator's
    runtime.toml, never loosen it or pick the program node processes run."""
    limit = base.process.max_processes()
    wanted = mp.max_processes_per_session
    if limit is not None and wanted is not None and not 0 < wanted <= limit:
        path = "metadata.multiprocess.max_processes_per_session"
        raise ManifestError(
            f"{path}: {wanted} would raise runtime.toml's limit of {limit} processes",
            path=path,
        )
    executable = mp.python_executable
    if executable and executable != base.process.python_executable:
        path = "metadata.multiprocess.python_executable"
        raise ManifestError(
            f"{path}: the node interpreter is set in runtime.toml "
            "(process.python_executable), not by a manifest",
            path=path,
        )


def _json_path(loc: tuple[int | str, ...]) -> str:
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path or "$"


def load_manifest(path: str | Path) -> Manifest:
    """Reads a manifest from a ``.json``, ``.yaml`` or ``.yml`` file."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as err:
        raise ManifestError(f"cannot read {path}: {err.strerror}") from None
    try:
        if path.suffix.lower() in (".yaml", ".yml"):
            # libyaml's loader when PyYAML was built with it: ~20x faster than pure Python.
            data = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
        else:
            data = json.loads(text)
    except (json.JSONDecodeError, yaml.YAMLError) as err:
        raise ManifestError(
            f"{path}: not valid {path.suffix.lstrip('.').upper() or 'JSON'}: {err}"
        ) from None
    return Manifest.parse(data, source=str(path))


def manifest_schema() -> dict[str, Any]:
    """The JSON Schema of manifests zerohop accepts (manifest.v1 plus its extensions)."""
    schema = Manifest.model_json_schema(by_alias=True)
    schema["$schema"] = "http://json-schema.org/draft-07/schema#"
    schema["title"] = "zerohop pipeline manifest (remotemedia manifest.v1)"
    return schema
