"""remotemedia ``manifest.v1`` pipeline descriptions: pydantic models, loading from JSON
or YAML, and turning a manifest into a :class:`~zerohop.Pipeline`.

The format is the remotemedia-sdk one, unchanged: ``version``, ``metadata``, ``nodes[]``
and ``connections[]``. Keys JavaScript clients send in camelCase (``nodeType``,
``isStreaming``, ``createdAt``, ...) are accepted as well as snake_case. zerohop's own
additions are optional: ``connections[].from_port`` / ``to_port`` and
``metadata.multiprocess`` (per-pipeline overrides of ``runtime.toml``).

What remotemedia-sdk's executor accepts is accepted here too, and whatever zerohop
accepts but does not act on is a **warning** naming its JSON path — never silently
ignored (:meth:`Manifest.to_pipeline` puts them on ``Pipeline.warnings``; ``zerohop
validate`` and ``zerohop run`` print them, the server logs them and returns them in the
``zerohop-warnings`` response metadata). ``--strict`` (``[nodes] strict_params = true``)
makes every warning an error.

- ``version``: ``"v1"``, ``"1.0"`` or ``"1"`` (the same format); anything else is an error.
- ``metadata`` and ``metadata.name`` may be left out: the name is then
  ``"pipeline"`` (:data:`DEFAULT_NAME`).
- Node ids are letters, digits, ``_``, ``-`` and ``.``.
- ``nodes[i].host`` (``host:port``, or with a scheme: ``http://gpu-box:50051``,
  ``grpcs://...``): the node runs on that ``zerohop serve`` (:mod:`zerohop.remote`);
  consecutive nodes with the same host run there together. So does remotemedia's
  ``RemotePipelineNode`` with an inline ``manifest``.
- ``runtime_hint`` ``rustpython`` / ``cpython`` / ``cpython_wasm`` pick one of
  remotemedia's Python runtimes; on a native (Rust) node type they are a hint, not an
  order: the node runs native, with a warning.
- Node types may be spelt as remotemedia does (``PassthroughNode``, ``SileroVAD``,
  ``AudioResample``, ...: :data:`zerohop.registry.NODE_TYPE_ALIASES`).
- Unknown params of a node are dropped before the node sees them, with a warning
  naming ``nodes[i].params.<name>`` and the node id; unknown top-level, node and
  connection fields are warnings too.

Ports. The gRPC ``Connection`` message has only ``from`` and ``to``, so ``from`` / ``to``
may name a port as ``node.port`` (``"asr.info"``) when no node has that exact id (a node
id may itself contain dots: an exact id match always wins). ``from_port`` / ``to_port``
name ports explicitly; ``"default"`` there means the node's primary (only, or first)
port, as if none were named.

Every validation error names the JSON path of the field it is about
(``nodes[2].params.sample_rate``).

Examples
--------
>>> from zerohop.manifest import Manifest
>>> m = Manifest.model_validate({
...     "version": "1.0",
...     "nodes": [{"id": "up", "nodeType": "UpperCase"}],
...     "connections": [],
... })
>>> m.nodes[0].node_type, m.metadata.name
('UpperCase', 'pipeline')

Run as a :class:`~zerohop.Pipeline`; what it gives but zerohop does not act on is a
warning naming its path:

>>> from zerohop import Text
>>> pipe = Manifest.parse({
...     "version": "v1",
...     "nodes": [{"id": "up", "node_type": "UpperCase", "color": "red"}],
... }).to_pipeline()
>>> [str(warning) for warning in pipe.warnings]
["nodes[0].color: unknown field; ignored (node 'up')"]
>>> [frame.text for frame in pipe.run([Text("hi")])]
['HI']
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationError

from .config import RuntimeConfig
from .errors import ManifestError, ManifestWarning
from .limits import unimplemented
from .remote import HOST

__all__ = [
    "DEFAULT_NAME",
    "MAX_MANIFEST_BYTES",
    "Connection",
    "Manifest",
    "Metadata",
    "MultiprocessSettings",
    "NodeManifest",
    "load_manifest",
    "manifest_schema",
    "parse_document",
]

NODE_ID = r"^[a-zA-Z0-9_.-]+$"
#: The pipeline name when a manifest gives none (remotemedia's executor defaults one too).
DEFAULT_NAME = "pipeline"
#: What ``from_port`` / ``to_port`` may say for "the node's primary port".
DEFAULT_PORT = "default"
#: The largest manifest zerohop reads (a file, or one a client sends to ``zerohop
#: serve``), checked before parsing: a manifest is a few kilobytes; megabytes of params
#: would take seconds to validate while other work waits.
MAX_MANIFEST_BYTES = 4 << 20


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
    #: Defaults to ``"pipeline"`` when left out.
    name: str = Field(default=DEFAULT_NAME, min_length=1, max_length=255)
    description: str | None = None
    created_at: str | None = _either("created_at", "createdAt")
    multiprocess: MultiprocessSettings | None = None


class NodeManifest(_Model):
    id: str = Field(pattern=NODE_ID)
    node_type: str = Field(min_length=1, validation_alias=AliasChoices("node_type", "nodeType"))
    params: dict[str, Any] = Field(default_factory=dict)
    capabilities: dict[str, Any] | None = None
    #: A remote ``zerohop serve`` to run the node on (see :mod:`zerohop.remote`).
    host: str | None = Field(default=None, pattern=HOST)
    is_streaming: bool | None = _either("is_streaming", "isStreaming")
    #: Which implementation to run: "auto" (the registry decides), "native"/"rust", or
    #: "python"/"cpython" (remotemedia's "rustpython" and "cpython_wasm" run on CPython;
    #: on a native node type those three are a hint: it runs native, with a warning).
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
    #: A node id, or ``node.port`` when no node has that exact id.
    source: str = Field(alias="from", pattern=NODE_ID)
    #: A node id, or ``node.port`` when no node has that exact id.
    target: str = Field(alias="to", pattern=NODE_ID)
    #: A port of the source node; ``"default"`` (or none): its primary port.
    from_port: str | None = _either("from_port", "fromPort")
    #: A port of the target node; ``"default"`` (or none): its primary port.
    to_port: str | None = _either("to_port", "toPort")


class Manifest(_Model):
    """A whole ``manifest.v1`` document."""

    #: ``"v1"``; remotemedia-sdk's files also say ``"1.0"`` or ``"1"`` (the same format).
    version: Literal["v1", "1.0", "1"]
    metadata: Metadata = Field(default_factory=Metadata)
    nodes: list[NodeManifest] = Field(min_length=1)
    connections: list[Connection] = Field(default_factory=list)

    def warnings(self) -> list[ManifestWarning]:
        """What this manifest gives that zerohop does not act on, found without the
        node registry: unknown fields (top-level, metadata, nodes, connections),
        ``capabilities`` other than ``memory_gb``, ``execution`` settings. Unknown
        params and runtime hints not followed are found by :meth:`to_pipeline`."""
        found = _unknown(self, "")
        found += _unknown(self.metadata, "metadata")
        if self.metadata.multiprocess is not None:
            found += _unknown(self.metadata.multiprocess, "metadata.multiprocess")
        for i, node in enumerate(self.nodes):
            path = f"nodes[{i}]"
            found += _unknown(node, path, node.id)
            found += unimplemented(node.capabilities, path, node.id)
            if node.execution:
                found.append(
                    ManifestWarning(
                        f"{path}.execution",
                        f"not implemented by zerohop; ignored (node '{node.id}')",
                        node.id,
                    )
                )
        for i, conn in enumerate(self.connections):
            found += _unknown(conn, f"connections[{i}]")
        return found

    def resolved_connections(self) -> list[tuple[str, str, str | None, str | None]]:
        """Each connection as ``(source, target, from_port, to_port)``: ``node.port``
        split where no node has that exact id, ``"default"`` ports as none. Errors name
        ``connections[i].from`` / ``.to``."""
        ids = {node.id for node in self.nodes}
        out = []
        for i, conn in enumerate(self.connections):
            source, from_port = _endpoint(
                conn.source, conn.from_port, ids, f"connections[{i}]", "from"
            )
            target, to_port = _endpoint(conn.target, conn.to_port, ids, f"connections[{i}]", "to")
            out.append((source, target, from_port, to_port))
        return out

    @classmethod
    def parse(cls, data: Any, *, source: str = "manifest") -> Manifest:
        """Validates ``data``; a :class:`ManifestError` names the first bad field's path."""
        try:
            return cls.model_validate(data)
        except RecursionError:
            raise ManifestError(f"{source}: nested too deeply to read", path="$") from None
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

    def to_pipeline(
        self, config: RuntimeConfig | None = None, *, strict: bool | None = None
    ) -> Any:
        """Builds the :class:`~zerohop.Pipeline` (validating node types and params).

        What the manifest gives but zerohop does not act on (unknown params, which
        are dropped before they reach the node; unknown fields; runtime
        hints not followed) is on the pipeline's ``warnings``, each naming its JSON
        path. ``strict`` (default: runtime.toml ``[nodes] strict_params``) makes the
        first of them a :class:`ManifestError` instead."""
        from .config import load_config
        from .pipeline import Pipeline

        runtime = self.runtime_config(config or load_config())
        if strict is None:
            strict = runtime.nodes.strict_params
        pipe = Pipeline(self.metadata.name, executor=self.executor(runtime), config=runtime)
        pipe.warnings.extend(self.warnings())
        for node in self.nodes:
            pipe.add_node(
                node.id,
                node.node_type,
                node.params,
                on_error=node.on_error,
                runtime_hint=node.runtime_hint,
                executor=node.executor,
                host=node.host,
                capabilities=node.capabilities,
                lenient=True,
            )
        for source, target, from_port, to_port in self.resolved_connections():
            pipe.connect(source, target, from_port=from_port, to_port=to_port)
        if strict and pipe.warnings:
            raise pipe.warnings[0].error()
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


def _unknown(model: BaseModel, path: str, node_id: str | None = None) -> list[ManifestWarning]:
    """A warning per key of ``model`` no field took (kept by ``extra="allow"``)."""
    where = f" (node '{node_id}')" if node_id else ""
    return [
        ManifestWarning(f"{path}.{key}" if path else key, f"unknown field; ignored{where}", node_id)
        for key in (model.model_extra or {})
    ]


def _endpoint(
    name: str, port: str | None, ids: set[str], path: str, side: Literal["from", "to"]
) -> tuple[str, str | None]:
    """``(node id, port)`` of one end of a connection (see the module docs)."""
    port_field = f"{path}.{side}_port"
    if port == DEFAULT_PORT:
        port = None
    if name in ids or "." not in name:
        return name, port
    node, _, named = name.rpartition(".")
    if node not in ids:
        return name, port  # dangling: the graph check names it
    if port is not None and port != named:
        raise ManifestError(
            f"{path}.{side}: names port '{named}' of node '{node}', but {port_field} says '{port}'",
            path=f"{path}.{side}",
        )
    return node, named


def _json_path(loc: tuple[int | str, ...]) -> str:
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path or "$"


def parse_document(raw: bytes | str, *, source: str, form: str = "JSON") -> Any:
    """The data of a manifest document (``form``: ``"JSON"`` or ``"YAML"``), refused
    with a :class:`ManifestError` naming ``source`` when it is larger than
    :data:`MAX_MANIFEST_BYTES`, not UTF-8, not valid, or nested deeper than the parser
    can follow — never a ``RecursionError`` or ``UnicodeDecodeError``."""
    size = len(raw.encode() if isinstance(raw, str) else raw)
    if size > MAX_MANIFEST_BYTES:
        raise ManifestError(
            f"{source}: larger than {MAX_MANIFEST_BYTES >> 20} MiB ({size} bytes); "
            "a manifest is a description, not data",
            path="$",
        )
    try:
        text = raw.decode() if isinstance(raw, bytes) else raw
    except UnicodeDecodeError as err:
        raise ManifestError(
            f"{source}: not UTF-8 text (byte 0x{raw[err.start]:02x} at offset {err.start})",
            path="$",
        ) from None
    try:
        if form == "YAML":
            # libyaml's loader when PyYAML was built with it: ~20x faster than pure Python.
            return yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
        return json.loads(text)
    except (json.JSONDecodeError, yaml.YAMLError) as err:
        raise ManifestError(f"{source}: not valid {form}: {err}", path="$") from None
    except RecursionError:
        raise ManifestError(f"{source}: nested too deeply to read", path="$") from None


def load_manifest(path: str | Path) -> Manifest:
    """Reads a manifest from a ``.json``, ``.yaml`` or ``.yml`` file (at most
    :data:`MAX_MANIFEST_BYTES`: a device or a huge file is refused after reading one
    byte past the limit)."""
    path = Path(path)
    try:
        with path.open("rb") as file:
            raw = file.read(MAX_MANIFEST_BYTES + 1)
    except OSError as err:
        raise ManifestError(f"cannot read {path}: {err.strerror}") from None
    form = "YAML" if path.suffix.lower() in (".yaml", ".yml") else "JSON"
    return Manifest.parse(parse_document(raw, source=str(path), form=form), source=str(path))


def manifest_schema() -> dict[str, Any]:
    """The JSON Schema of manifests zerohop accepts (manifest.v1 plus its extensions)."""
    schema = Manifest.model_json_schema(by_alias=True)
    schema["$schema"] = "http://json-schema.org/draft-07/schema#"
    schema["title"] = "zerohop pipeline manifest (remotemedia manifest.v1)"
    return schema
