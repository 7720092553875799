"""What a node may use: the memory limit a node's ``capabilities`` ask for, within the
operator's ceilings.

A node's ``capabilities`` (remotemedia ``manifest.v1``; ``Pipeline.node(...,
capabilities={...})`` in Python) may give ``memory_gb``: the most memory its process may
hold. runtime.toml ``[process] max_node_memory_bytes`` is the operator's ceiling — a node
may ask for less, never more (asking for more is a warning naming the field, and the
ceiling holds) — and, when the node asks nothing, its limit. ``max_session_memory_bytes``
caps all of a session's node processes together. The executor holds the limits with the
kernel's accounting where it can (a cgroup per node), else by watching resident memory;
a node past its limit is stopped and the session fails with
:class:`~zerohop.errors.ResourceLimitError` naming the node, the limit and the peak.

``cpu`` and ``gpu`` are not implemented yet: a manifest giving them gets a warning naming
them, the builder an error.

Examples
--------
>>> from zerohop import Pipeline
>>> pipe = Pipeline().node("e", "Echo", capabilities={"memory_gb": 0.5})
>>> pipe.graph()["nodes"][0]["memory_limit"]
500000000
"""

from __future__ import annotations

from typing import Any

from .config import RuntimeConfig
from .errors import ManifestError, ManifestWarning

__all__ = ["memory_limit", "unimplemented"]

#: ``capabilities`` keys zerohop acts on.
IMPLEMENTED = ("memory_gb",)


def unimplemented(
    capabilities: dict[str, Any] | None, path: str, node_id: str
) -> list[ManifestWarning]:
    """A warning for each ``capabilities`` key zerohop does not act on yet."""
    return [
        ManifestWarning(
            f"{path}.capabilities.{key}",
            f"not implemented by zerohop; ignored (node '{node_id}')",
            node_id,
        )
        for key in capabilities or {}
        if key not in IMPLEMENTED
    ]


def memory_limit(
    capabilities: dict[str, Any] | None,
    *,
    path: str,
    node_id: str,
    config: RuntimeConfig,
    warnings: list[ManifestWarning],
) -> int | None:
    """The node's memory limit in bytes (None: none): ``capabilities.memory_gb`` within
    ``[process] max_node_memory_bytes``; asking past the ceiling adds a warning."""
    field = f"{path}.capabilities.memory_gb"
    asked = (capabilities or {}).get("memory_gb")
    ceiling = config.process.max_node_memory_bytes or None
    if asked is None:
        return ceiling
    if isinstance(asked, bool) or not isinstance(asked, int | float) or not asked > 0:
        raise ManifestError(
            f"{field}: must be a positive number of gigabytes, got {asked!r} (node '{node_id}')",
            path=field,
            node_id=node_id,
        )
    wanted = int(asked * 1e9)
    if ceiling is not None and wanted > ceiling:
        warnings.append(
            ManifestWarning(
                field,
                f"{asked} GB is above the operator's ceiling ([process] max_node_memory_bytes "
                f"= {ceiling}); node '{node_id}' gets {ceiling} bytes",
                node_id,
            )
        )
        return ceiling
    return wanted
