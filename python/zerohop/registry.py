"""The node registry: node types by name — registered Python classes (the
``zerohop.nodes`` entry-point group of installed packages, where zerohop declares its
own nodes like any plugin; modules listed in ``runtime.toml`` ``[nodes] modules``;
classes decorated with :func:`register_node`), the native (Rust) node types, and the
spellings remotemedia-sdk's manifests use for them.

A manifest names node types only through here, so it can never make a process import
anything else. Discovery happens once per process, on the first lookup by name; the
registry imports node modules only through entry points and configured module names,
never directly (which keeps it free of import circles with the nodes it lists).

Examples
--------
>>> from zerohop import node_class, registered_nodes
>>> "UpperCase" in registered_nodes()
True
>>> node_class("UpperCase").accepts
('text',)

remotemedia's spellings, and near misses:

>>> from zerohop.registry import canonical_node_type
>>> canonical_node_type("PassthroughNode")
'PassThrough'
>>> node_class("Uppercase")
Traceback (most recent call last):
    ...
zerohop.errors.UnknownNodeTypeError: unknown node type 'Uppercase'; did you mean 'UpperCase'? ...
"""

from __future__ import annotations

import difflib
import importlib
import json
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from importlib.metadata import entry_points
from typing import Any, TypeVar, overload

from .errors import ConfigError, UnknownNodeTypeError
from .node import MultiprocessNode

__all__ = [
    "ENTRY_POINT_GROUP",
    "NODE_TYPE_ALIASES",
    "NativeNodeType",
    "canonical_node_type",
    "native_node_types",
    "node_class",
    "register_node",
    "registered_nodes",
    "resolve_node_type",
    "use_modules",
]

#: The entry-point group node types are declared in (``pyproject.toml``:
#: ``[project.entry-points."zerohop.nodes"]``, name = node type, value = the class).
ENTRY_POINT_GROUP = "zerohop.nodes"

N = TypeVar("N", bound=type[MultiprocessNode])

_registry: dict[str, type[MultiprocessNode]] = {}
_registry_lock = threading.Lock()
_discovered = False
_discovering = False  # set while _discover loads, on the thread holding the lock
_discovery_lock = threading.RLock()


@overload
def register_node(cls: N, /, *, name: str | None = None) -> N: ...
@overload
def register_node(*, name: str | None = None) -> Callable[[N], N]: ...


def register_node(cls: N | None = None, /, *, name: str | None = None) -> N | Callable[[N], N]:
    """Registers a node class under ``name`` (default: the class name).

    Re-registering the same class (a module imported twice, e.g. as ``__main__`` and
    ``__mp_main__``) is fine; a different class under a taken name is an error.
    """

    def register(node_cls: N) -> N:
        if not (isinstance(node_cls, type) and issubclass(node_cls, MultiprocessNode)):
            raise TypeError(f"@register_node needs a MultiprocessNode subclass, got {node_cls!r}")
        type_name = name or node_cls.__name__
        with _registry_lock:
            existing = _registry.get(type_name)
            if existing is not None and not _same_class(existing, node_cls):
                raise ConfigError(
                    f"node type '{type_name}' is already registered by "
                    f"{existing.__module__}.{existing.__qualname__}"
                )
            node_cls.node_type = type_name
            _registry[type_name] = node_cls
        return node_cls

    return register(cls) if cls is not None else register


def _same_class(a: type, b: type) -> bool:
    if a is b:
        return True
    main_names = {"__main__", "__mp_main__"}
    same_module = a.__module__ == b.__module__ or {a.__module__, b.__module__} <= main_names
    return same_module and a.__qualname__ == b.__qualname__


#: runtime.toml's ``[nodes] modules`` when they were given (:func:`use_modules`); None:
#: read runtime.toml at discovery (the host side).
_modules: tuple[str, ...] | None = None


def use_modules(modules: tuple[str, ...]) -> None:
    """Discovery imports these modules instead of reading runtime.toml's ``[nodes]
    modules``: a node process is told by its host which modules to import (they come
    with its spec), so it never loads the host's configuration."""
    global _modules
    _modules = tuple(modules)


def _discover() -> None:
    """Loads the entry points and runtime.toml modules, once. Other threads wait until
    it is done (the server plans several streams at once: a thread that went ahead
    would find a node type missing); a module imported here that asks the registry
    again, on this thread, sees what is loaded so far."""
    global _discovered, _discovering
    if _discovered:
        return
    with _discovery_lock:
        if _discovered or _discovering:
            return
        _discovering = True
        try:
            _load_node_modules()
        finally:
            _discovering = False
            _discovered = True


def _load_node_modules() -> None:
    for point in entry_points(group=ENTRY_POINT_GROUP):
        try:
            loaded = point.load()
        except Exception as err:  # a broken plugin must not break every pipeline
            print(f"zerohop: cannot load node entry point {point.name!r}: {err}", file=sys.stderr)
            continue
        if isinstance(loaded, type) and issubclass(loaded, MultiprocessNode):
            register_node(loaded, name=point.name)
    modules = _modules
    if modules is None:
        from .config import load_config  # host side only: see use_modules

        modules = load_config().nodes.modules
    for module in modules:
        importlib.import_module(module)


def registered_nodes() -> dict[str, type[MultiprocessNode]]:
    """Every registered node type by name."""
    _discover()
    with _registry_lock:
        return dict(sorted(_registry.items()))


@dataclass(frozen=True)
class NativeNodeType:
    """A node type implemented in Rust, run in the host process (not a Python class)."""

    node_type: str
    description: str
    params_schema: dict[str, Any]
    inputs: tuple[str, ...] = ("in",)
    outputs: tuple[str, ...] = ("out",)
    #: Left to the Rust registry, which knows the native nodes' frame kinds.
    accepts: tuple[str, ...] | None = None
    emits: tuple[str, ...] | None = None
    #: Native nodes take any rate.
    input_rate: int | None = None

    def needs_input_rate(self, params: Any) -> int | None:
        return self.input_rate


@lru_cache(maxsize=1)
def native_node_types() -> dict[str, NativeNodeType]:
    """The native (Rust) node types by name."""
    from . import _native

    return {
        name: NativeNodeType(name, description, json.loads(schema))
        for name, description, schema in _native.native_nodes()
    }


def node_class(node_type: str) -> type[MultiprocessNode]:
    """The Python class registered as ``node_type``; :class:`UnknownNodeTypeError`
    (with the closest registered names) if there is none."""
    found = resolve_node_type(node_type)
    if isinstance(found, NativeNodeType):
        raise UnknownNodeTypeError(
            f"'{node_type}' is a native (Rust) node type, not a Python class",
            node_type=node_type,
        )
    return found


#: Other spellings of node types, as remotemedia-sdk manifests write them → the type
#: zerohop registers. Resolved by :func:`resolve_node_type` (the one registry lookup)
#: when no node type of that exact name is registered; ``zerohop nodes`` lists them.
NODE_TYPE_ALIASES: dict[str, str] = {
    "PassthroughNode": "PassThrough",
    "PassThroughNode": "PassThrough",
    "EchoNode": "PassThrough",
    "SileroVAD": "SileroVADNode",
    "AudioResample": "FastResampleNode",
    "AutoResampleNode": "FastResampleNode",
}


def canonical_node_type(node_type: str) -> str:
    """The registered name ``node_type`` stands for: itself when a node type of that
    name is registered (Python or native), else the type it is an alias of."""
    _discover()
    with _registry_lock:
        if node_type in _registry:
            return node_type
    if node_type in native_node_types():
        return node_type
    return NODE_TYPE_ALIASES.get(node_type, node_type)


def resolve_node_type(
    node_type: str, *, path: str | None = None, node_id: str | None = None
) -> type[MultiprocessNode] | NativeNodeType:
    """What ``node_type`` names: a registered Python class, else a native node type,
    else what it is an alias of (:data:`NODE_TYPE_ALIASES`);
    :class:`UnknownNodeTypeError` (with the closest names of either) if none, naming
    ``path`` (the manifest field) and ``node_id`` where given."""
    alias = NODE_TYPE_ALIASES.get(node_type)
    if alias is not None and canonical_node_type(node_type) == alias:
        return resolve_node_type(alias, path=path, node_id=node_id)
    with _registry_lock:
        found = _registry.get(node_type)
    if found is not None:
        return found
    _discover()
    with _registry_lock:
        found = _registry.get(node_type)
        known = sorted(_registry)
    if found is not None:
        return found
    native = native_node_types()
    if node_type in native:
        return native[node_type]
    known = sorted({*known, *native})
    close = difflib.get_close_matches(node_type, known, n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    message = f"unknown node type '{node_type}'{hint} (registered: {', '.join(known) or 'none'})"
    raise UnknownNodeTypeError(
        f"{path}: {message}" if path else message,
        node_type=node_type,
        suggestions=close,
        path=path,
        node_id=node_id,
    )
