"""``zerohop serve``: the ``remotemedia.v1`` gRPC services over the executor.

The server is Rust (tonic, in ``zerohop._native``); this module gives it what only
Python has: the node registry and the params models. Every manifest a client sends goes
through :func:`plan`, the same validation as ``zerohop validate`` and
:meth:`Manifest.to_pipeline` — so a manifest can only name registered node types, and
nothing is spawned for one that is invalid.

Serve on a free port until Ctrl-C, printing the address::

    from zerohop.serve import serve
    serve(port=0, token="s3cret", on_bound=print)

Examples
--------
What the server does with each manifest a client sends, before anything starts:

>>> import json
>>> from zerohop.serve import plan
>>> manifest = {
...     "version": "v1",
...     "nodes": [{"id": "bang", "node_type": "Suffix", "params": {"suffix": "?", "loud": 1}}],
... }
>>> graph, settings, warnings = plan(json.dumps(manifest))
>>> graph.inputs, settings.channel.capacity
([Port(node_id="bang", port="in", label="bang")], 100)
>>> warnings
["nodes[0].params.loud: unknown parameter of Suffix (node 'bang'); ignored (it accepts: suffix)"]
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from .config import RuntimeConfig, load_config
from .errors import ConfigError
from .manifest import Manifest, parse_document
from .remote import check_dialable

if TYPE_CHECKING:
    from . import _native

__all__ = ["node_types", "plan", "serve"]


def plan(
    manifest_json: str, config: RuntimeConfig | None = None
) -> tuple[_native.Graph, _native.SessionSettings, list[str]]:
    """Validates a manifest.v1 document and returns what the executor needs to run it:
    the validated graph, the session settings, and the warnings (``"<json path>:
    <message>"``: what the manifest gives that zerohop does not act on; the server logs
    them and returns them to the client). Raises :class:`ManifestError` naming the
    field (and, under runtime.toml ``[nodes] strict_params``, for a warning),
    :class:`~zerohop.errors.ResourceLimitError` past a limit."""
    from .multiprocess import session_settings

    data = parse_document(manifest_json, source="$")
    pipeline = Manifest.parse(data).to_pipeline(config)
    if pipeline.executor != "multiprocess":
        raise ConfigError("zerohop serve runs pipelines on the multiprocess executor only")
    check_dialable(pipeline.remote_nodes(), pipeline.config)
    return (
        pipeline.validate(),
        session_settings(pipeline),
        [str(w) for w in pipeline.warnings],
    )


def node_types() -> list[str]:
    """Every node type a manifest may name: registered Python nodes and native nodes."""
    from .registry import native_node_types, registered_nodes

    return sorted(set(registered_nodes()) | set(native_node_types()))


def serve(
    *,
    host: str | None = None,
    port: int | None = None,
    token: str | None = None,
    config: RuntimeConfig | None = None,
    on_bound: Callable[[str], None] | None = None,
    draining: Callable[[], bool] | None = None,
    metrics_port: int | None = None,
    on_metrics_bound: Callable[[str], None] | None = None,
    tls_cert: str | None = None,
    tls_key: str | None = None,
) -> None:
    """Serves until Ctrl-C (``KeyboardInterrupt``) or another exception raised by a
    signal handler, or until a drain ends; every session is stopped and its processes
    gone before it returns. ``host``/``port`` default to ``[server]`` of runtime.toml
    (port 0: a free port); ``on_bound("host:port")`` is called once connections are
    accepted. Once ``draining()`` (asked every 100 ms) is true the server drains:
    health NOT_SERVING, new calls UNAVAILABLE, and it returns when its running
    sessions have ended, or after ``[server] drain_timeout_secs`` with them stopped.
    ``metrics_port`` (default ``[server] metrics_port``) serves Prometheus metrics at
    ``/metrics`` there; ``on_metrics_bound("host:port")`` hears where. ``tls_cert`` and
    ``tls_key`` (PEM files; default ``[server]``'s) make the gRPC port speak TLS."""
    from . import _native

    cfg = config or load_config()

    def bound(address: str, metrics_address: str | None) -> None:
        if on_bound is not None:
            on_bound(address)
        if metrics_address is not None and on_metrics_bound is not None:
            on_metrics_bound(metrics_address)

    _native.serve(
        lambda manifest_json: plan(manifest_json, cfg),
        node_types,
        host=cfg.server.host if host is None else host,
        port=cfg.server.port if port is None else port,
        token=token or None,
        max_sessions=cfg.server.max_sessions,
        max_processes=cfg.server.max_processes,
        max_nodes_per_session=cfg.server.max_nodes_per_session,
        max_payload=cfg.channel.max_payload_bytes,
        metrics_every=cfg.server.stream_metrics_every,
        file_dirs=list(cfg.nodes.file_dirs),
        idle_timeout=cfg.server.idle_timeout_secs,
        max_connections=cfg.server.max_connections,
        handshake_timeout=cfg.server.handshake_timeout_secs,
        max_buffered_bytes_per_stream=cfg.server.max_buffered_bytes_per_stream,
        drain_timeout=cfg.server.drain_timeout_secs,
        draining=draining or (lambda: False),
        metrics_port=cfg.server.metrics_port if metrics_port is None else metrics_port,
        tls_cert=tls_cert or cfg.server.tls_cert,
        tls_key=tls_key or cfg.server.tls_key,
        on_bound=bound,
    )
