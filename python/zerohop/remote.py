"""Nodes that run on another ``zerohop serve``: the planning side (the executor's
``executor::remote`` dials the host and carries the frames).

Two ways to say it, both remotemedia's:

- A node with ``host`` (``nodes[i].host`` in a manifest, or
  ``Pipeline.node("asr", "WhisperNode", host="gpu-1:50051")``). Its type and params are
  the remote server's to check — this machine may not have the model at all — and a
  connected run of nodes with the same ``host`` goes there as one sub-pipeline, so
  frames between them do not cross the network.
- ``RemotePipelineNode``, whose params carry a whole inline ``manifest`` and where to
  run it (``endpoint`` or ``endpoints``, ``timeout_ms``, ``retry``, ``auth_token``).

Tokens and CA bundles come from runtime.toml ``[hosts."h:p"]``, never from a manifest:
a manifest may come from a network client, and must not decide what this machine sends
where. A ``RemotePipelineNode``'s ``auth_token: "${VAR}"`` is accepted when ``VAR`` is
the ``token_env`` runtime.toml names for that host (the same token, said twice).

Examples
--------
>>> from zerohop import Pipeline
>>> pipe = (
...     Pipeline("split")
...     .node("up", "UpperCase")
...     .node("bang", "Suffix", host="127.0.0.1:50051", suffix="!")
...     .connect("up", "bang")
... )
>>> node = pipe.graph()["nodes"][1]
>>> node["placement"], node["remote"]["host"], node["inputs"], node["outputs"]
('remote', '127.0.0.1:50051', ['in'], ['out'])
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from .config import RuntimeConfig
from .errors import ManifestError

#: ``host:port``, optionally with a scheme (``http://``, ``https://``, ``grpc://``,
#: ``grpcs://``); IPv6 hosts in brackets.
HOST = r"^(?:(?:https?|grpcs?)://)?(?:\[[0-9a-fA-F:.]+\]|[^\s:/\[\]]+):\d{1,5}/?$"

__all__ = ["REMOTE_PIPELINE_NODE", "RemoteNodeType", "host_node", "remote_pipeline"]

#: remotemedia's node type that runs an inline manifest on another server.
REMOTE_PIPELINE_NODE = "RemotePipelineNode"

#: ``runtime_hint`` spellings remotemedia.v1's ``RuntimeHint`` can carry, by the enum name.
_WIRE_HINTS = {
    "auto": "RUNTIME_HINT_AUTO",
    "cpython": "RUNTIME_HINT_CPYTHON",
    "python": "RUNTIME_HINT_CPYTHON",
    "rustpython": "RUNTIME_HINT_RUSTPYTHON",
    "cpython_wasm": "RUNTIME_HINT_CPYTHON_WASM",
}

#: The params of ``RemotePipelineNode`` zerohop implements; any other is an error.
_REMOTE_PARAMS = (
    "transport",
    "endpoint",
    "endpoints",
    "manifest",
    "timeout_ms",
    "retry",
    "auth_token",
)

_ENV_REF = re.compile(r"^\$\{([A-Za-z_][A-Za-z0-9_]*)\}$")


@dataclass(frozen=True)
class RemoteNodeType:
    """Stands in for a node class on a remote node: the ports the connections name (set
    when the graph is built), no declared frame kinds (the host knows them), and where
    it runs (``spec``: the graph's ``remote`` entry)."""

    node_type: str
    spec: dict[str, Any] = field(hash=False)
    inputs: tuple[str, ...] = ("in",)
    outputs: tuple[str, ...] = ("out",)
    accepts: tuple[str, ...] | None = None
    emits: tuple[str, ...] | None = None

    @property
    def host(self) -> str:
        return str(self.spec["host"])

    def needs_input_rate(self, params: Any) -> int | None:
        return None

    def ports(
        self, node_id: str, edges: Iterable[tuple[str, str, str | None, str | None]]
    ) -> tuple[list[str], list[str]]:
        """``(inputs, outputs)``: every port the connections name for ``node_id`` (a
        connection naming none: the primary one); a side with no connection has the
        primary port."""
        inputs: list[str] = []
        outputs: list[str] = []
        for source, target, from_port, to_port in edges:
            if target == node_id:
                _add(inputs, to_port or "in")
            if source == node_id:
                _add(outputs, from_port or "out")
        return inputs or ["in"], outputs or ["out"]


def _add(ports: list[str], port: str) -> None:
    if port not in ports:
        ports.append(port)


def _wire_hint(hint: str | None, path: str, node_id: str) -> str | None:
    if hint is None:
        return None
    name = hint.strip().lower().removeprefix("runtime_hint_")
    if name in ("", "unspecified"):
        return None
    if name not in _WIRE_HINTS:
        raise ManifestError(
            f"{path}.runtime_hint: '{hint}' cannot be asked of a remote host: remotemedia.v1 "
            f"carries only {', '.join(sorted(set(_WIRE_HINTS)))} (node '{node_id}')",
            path=f"{path}.runtime_hint",
            node_id=node_id,
        )
    return _WIRE_HINTS[name]


def host_node(
    path: str,
    node_id: str,
    node_type: str,
    params: dict[str, Any],
    *,
    host: str,
    runtime_hint: str | None,
    executor: str | None,
    on_error: str,
    is_streaming: bool = False,
) -> RemoteNodeType:
    """A node of this pipeline that runs on ``host``. What cannot cross remotemedia.v1's
    ``NodeManifest`` (a zerohop ``executor``, ``on_error="skip"``, a native runtime
    hint) is an error naming its field, not a setting silently lost."""
    if not re.match(HOST, host):
        raise ManifestError(
            f"{path}.host: '{host}' is not host:port (optionally with http://, https://, "
            f"grpc:// or grpcs://) (node '{node_id}')",
            path=f"{path}.host",
            node_id=node_id,
        )
    for name, value, default in (("executor", executor, None), ("on_error", on_error, "fail")):
        if value not in (default, ""):
            raise ManifestError(
                f"{path}.{name}: cannot be sent to a remote host (remotemedia.v1 has no such "
                f"field); node '{node_id}' runs on {host}",
                path=f"{path}.{name}",
                node_id=node_id,
            )
    _check_json(params, f"{path}.params", node_id)
    return RemoteNodeType(
        node_type,
        {
            "host": host,
            "path": f"{path}.host",
            "runtime_hint": _wire_hint(runtime_hint, path, node_id),
            "is_streaming": is_streaming,
        },
    )


def remote_pipeline(
    path: str, node_id: str, params: dict[str, Any], config: RuntimeConfig
) -> RemoteNodeType:
    """remotemedia's ``RemotePipelineNode``: its inline manifest runs on its endpoint(s).
    Options zerohop does not implement are refused by name; the inline manifest's
    nodes are the remote server's to check, but a field remotemedia.v1 cannot carry
    there is refused here."""

    def fail(key: str, message: str) -> ManifestError:
        where = f"{path}.params.{key}" if key else f"{path}.params"
        return ManifestError(f"{where}: {message} (node '{node_id}')", path=where, node_id=node_id)

    for key in params:
        if key not in _REMOTE_PARAMS:
            raise fail(
                key,
                f"{REMOTE_PIPELINE_NODE} option '{key}' is not implemented by zerohop; remove "
                f"it (implemented: {', '.join(_REMOTE_PARAMS)})",
            )
    transport = params.get("transport", "grpc")
    if transport != "grpc":
        raise fail("transport", f"'{transport}' is not implemented; zerohop dials gRPC only")
    endpoint, endpoints = params.get("endpoint"), params.get("endpoints")
    if (endpoint is None) == (endpoints is None):
        raise fail("", "give endpoint or endpoints (a list), exactly one")
    key = "endpoint" if endpoint is not None else "endpoints"
    addresses = [endpoint] if endpoint is not None else endpoints
    if not isinstance(addresses, list) or not addresses:
        raise fail(key, "must be a non-empty list of host:port")
    for i, address in enumerate(addresses):
        if not isinstance(address, str) or not re.match(HOST, address):
            where = key if endpoint is not None else f"{key}[{i}]"
            raise fail(where, f"{address!r} is not host:port (optionally with a scheme)")
    timeout_ms = params.get("timeout_ms")
    if timeout_ms is not None and (not isinstance(timeout_ms, int) or timeout_ms <= 0):
        raise fail("timeout_ms", "must be a positive whole number of milliseconds")
    retry = params.get("retry") or {}
    if not isinstance(retry, dict):
        raise fail("retry", "must be an object {max_retries, backoff_ms}")
    for option, value in retry.items():
        if option not in ("max_retries", "backoff_ms"):
            raise fail(f"retry.{option}", "not implemented by zerohop (max_retries, backoff_ms)")
        if not isinstance(value, int) or value < 0:
            raise fail(f"retry.{option}", "must be a whole number ≥ 0")
    token = params.get("auth_token")
    if token is not None:
        _check_token(token, addresses, config, fail)
    manifest = params.get("manifest")
    if isinstance(manifest, str):
        try:
            manifest = json.loads(manifest)
        except ValueError as err:
            raise fail("manifest", f"not valid JSON: {err}") from None
    if not isinstance(manifest, dict):
        raise fail("manifest", "an inline manifest.v1 object is required")
    inline = _inline_manifest(manifest, f"{path}.params.manifest", node_id)
    return RemoteNodeType(
        REMOTE_PIPELINE_NODE,
        {
            "host": addresses[0],
            "path": f"{path}.params.{key}",
            "endpoints": addresses if endpoints is not None else [],
            "manifest": inline,
            "timeout_ms": timeout_ms,
            "retries": retry.get("max_retries", 0),
            "backoff_ms": retry.get("backoff_ms", 100),
        },
    )


#: An inline manifest's node fields remotemedia.v1's ``NodeManifest`` carries, by spelling.
_NODE_FIELDS = {
    "id": "id",
    "node_type": "node_type",
    "nodeType": "node_type",
    "params": "params",
    "is_streaming": "is_streaming",
    "isStreaming": "is_streaming",
    "runtime_hint": "runtime_hint",
    "runtimeHint": "runtime_hint",
    "host": "host",
}
_CONNECTION_FIELDS = {
    "from": "from",
    "to": "to",
    "from_port": "from_port",
    "fromPort": "from_port",
    "to_port": "to_port",
    "toPort": "to_port",
}


def _inline_manifest(doc: dict[str, Any], path: str, node_id: str) -> dict[str, Any]:
    """A ``RemotePipelineNode``'s manifest as the executor sends it: what
    remotemedia.v1 carries, each field checked for its shape; the remote server checks
    the rest (node types, params, the graph) as it checks any client's."""

    def fail(where: str, message: str) -> ManifestError:
        return ManifestError(
            f"{path}.{where}: {message} (node '{node_id}')", path=f"{path}.{where}", node_id=node_id
        )

    def fields(item: Any, where: str, known: dict[str, str]) -> dict[str, Any]:
        if not isinstance(item, dict):
            raise fail(where, "must be an object")
        out: dict[str, Any] = {}
        for key, value in item.items():
            if key not in known:
                raise fail(
                    f"{where}.{key}",
                    "remotemedia.v1 cannot carry this field to the remote host; remove it",
                )
            out[known[key]] = value
        return out

    metadata = doc.get("metadata") or {}
    name = metadata.get("name", "pipeline") if isinstance(metadata, dict) else None
    if not isinstance(name, str):
        raise fail("metadata.name", "must be a string")
    raw_nodes = doc.get("nodes")
    if not isinstance(raw_nodes, list) or not raw_nodes:
        raise fail("nodes", "a non-empty list of nodes is required")
    nodes = []
    for i, raw in enumerate(raw_nodes):
        node = fields(raw, f"nodes[{i}]", _NODE_FIELDS)
        for key in ("id", "node_type"):
            if not isinstance(node.get(key), str) or not node[key]:
                raise fail(f"nodes[{i}].{key}", "a non-empty string is required")
        params = node.get("params", {})
        if not isinstance(params, dict):
            raise fail(f"nodes[{i}].params", "must be an object")
        _check_json(params, f"{path}.nodes[{i}].params", node_id)
        host = node.get("host")
        if host is not None and (not isinstance(host, str) or not re.match(HOST, host)):
            raise fail(f"nodes[{i}].host", f"{host!r} is not host:port")
        hint = node.get("runtime_hint")
        nodes.append(
            {
                "id": node["id"],
                "node_type": node["node_type"],
                "params": params,
                "is_streaming": bool(node.get("is_streaming")),
                "runtime_hint": _wire_hint(
                    hint if isinstance(hint, str) else None, f"{path}.nodes[{i}]", node_id
                ),
                "host": host,
            }
        )
    raw_connections = doc.get("connections", [])
    if not isinstance(raw_connections, list):
        raise fail("connections", "must be a list")
    connections = []
    for i, raw in enumerate(raw_connections):
        conn = fields(raw, f"connections[{i}]", _CONNECTION_FIELDS)
        ends = []
        for side in ("from", "to"):
            end, port = conn.get(side), conn.get(f"{side}_port")
            if not isinstance(end, str) or not end:
                raise fail(f"connections[{i}].{side}", "a node id is required")
            ends.append(f"{end}.{port}" if port not in (None, "default") else end)
        connections.append(ends)
    return {"name": name, "nodes": nodes, "connections": connections}


def _check_token(token: Any, addresses: list[str], config: RuntimeConfig, fail: Any) -> None:
    """``auth_token`` may only repeat, as ``${VAR}``, the ``token_env`` runtime.toml
    gives each endpoint: a manifest cannot make this machine send a secret of its
    choosing to an address of its choosing."""
    match = _ENV_REF.match(token) if isinstance(token, str) else None
    if match is None:
        raise fail(
            "auth_token",
            'tokens come from runtime.toml ([hosts."h:p"] token or token_env), not from '
            'the manifest; write "${VAR}" naming that token_env, or leave it out',
        )
    for address in addresses:
        key = host_key(address)
        host = config.hosts.get(key)
        if host is None or host.token_env != match.group(1):
            raise fail(
                "auth_token",
                f"${{{match.group(1)}}} is not the token_env runtime.toml names for {key} "
                f'([hosts."{key}"] token_env)',
            )


def host_key(host: str) -> str:
    """``host`` as runtime.toml's ``[hosts]`` keys it: no scheme, no trailing slash."""
    return re.sub(r"^(?:https?|grpcs?)://", "", host).rstrip("/")


def _check_json(params: dict[str, Any], path: str, node_id: str) -> None:
    try:
        json.dumps(params)
    except (TypeError, ValueError) as err:
        raise ManifestError(
            f"{path}: params of a remote node must be JSON ({err}) (node '{node_id}')",
            path=path,
            node_id=node_id,
        ) from None


def check_dialable(
    remotes: Iterable[tuple[int, str, RemoteNodeType]], config: RuntimeConfig
) -> None:
    """For a served manifest: every host a remote node names must be one runtime.toml
    lists under ``[hosts]``, so a network client cannot make the server dial an address
    of its choosing. ``remotes``: ``(index, node id, type)``."""
    for _index, node_id, remote in remotes:
        spec = remote.spec
        for address in spec.get("endpoints") or [spec["host"]]:
            if host_key(address) not in config.hosts:
                raise ManifestError(
                    f"{spec['path']}: {address} is not a host this server may dial; the "
                    f'operator lists those in runtime.toml ([hosts."{host_key(address)}"]) '
                    f"(node '{node_id}')",
                    path=spec["path"],
                    node_id=node_id,
                )
