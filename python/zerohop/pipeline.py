"""The ``Pipeline`` builder: nodes and connections, validated, turned into a manifest
and run as a :class:`~zerohop.session.Session`.

Examples
--------
>>> from zerohop import Pipeline, Text
>>> pipe = (Pipeline("shout")
...         .node("upper", "UpperCase")
...         .node("exclaim", "Suffix", suffix="!")
...         .connect("upper", "exclaim"))
>>> [frame.text for frame in pipe.run([Text("hi")])]
['HI!']

The same pipeline as a remotemedia ``manifest.v1`` document:

>>> pipe.to_manifest()["connections"]
[{'from': 'upper', 'to': 'exclaim'}]

Each step is checked as it is added, before any process starts; an error names the
field by its JSON path:

>>> Pipeline("typo").node("exclaim", "Suffix", suffix=3)
Traceback (most recent call last):
    ...
zerohop.errors.ManifestError: nodes[0].params.suffix: Input should be a valid string
(node 'exclaim')
"""

from __future__ import annotations

import inspect
import itertools
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from .config import RuntimeConfig, load_config
from .errors import ConfigError, ManifestError, ManifestWarning
from .limits import gpu_environment, memory_limit, pin, thread_budget, unimplemented
from .node import MultiprocessNode
from .registry import (
    NativeNodeType,
    canonical_node_type,
    native_node_types,
    register_node,
    resolve_node_type,
)
from .remote import REMOTE_PIPELINE_NODE, RemoteNodeType, host_node, remote_pipeline

if TYPE_CHECKING:
    from . import _native
    from .data import Frame
    from .session import Event, Session

__all__ = ["Executor", "OnError", "Pipeline"]

Executor = Literal["multiprocess", "inprocess"]
OnError = Literal["fail", "skip"]
#: What a node id resolves to: a Python class, a native node type, or a remote node.
NodeClass = type[MultiprocessNode] | NativeNodeType | RemoteNodeType

#: remotemedia-sdk's Python runtimes: on a native node type, a hint it runs without.
_PYTHON_RUNTIMES = ("cpython", "rustpython", "cpython_wasm")
#: Native params negotiated from the next node's declared input rate when omitted or
#: ``"auto"``: node type → (canonical name, every spelling).
_NEGOTIATED_RATE = {
    "FastResampleNode": (
        "target_rate",
        ("target_rate", "targetRate", "target_sample_rate", "targetSampleRate"),
    ),
}


@dataclass
class _NodeEntry:
    id: str
    node_type: str
    cls: NodeClass
    params: dict[str, Any]
    on_error: OnError
    #: The registry's implementations of ``node_type`` (for routing).
    offer: tuple[bool, bool]
    runtime_hint: str | None = None
    executor: str | None = None
    #: ``(param name, JSON path)`` of a rate to negotiate with the next node.
    negotiate: tuple[str, str] | None = None
    #: The most memory its process may hold, in bytes (see :mod:`zerohop.limits`).
    memory_limit: int | None = None
    #: Its thread budget (see :mod:`zerohop.limits`).
    threads: int | None = None
    #: Variables set in its process before its imports (its GPU).
    env: dict[str, str] = field(default_factory=dict)

    #: Where it runs, per session executor: routed once, when first asked.
    placements: dict[str, str] = field(default_factory=dict)

    def placement(self, index: int, executor: Executor) -> str:
        """Where this node runs when the session runs Python nodes on ``executor``."""
        if isinstance(self.cls, RemoteNodeType):
            return "remote"
        if executor not in self.placements:
            from . import _native

            native, python = self.offer
            self.placements[executor] = _native.route_node(
                index,
                self.id,
                self.node_type,
                native=native,
                python=python,
                runtime_hint=self.runtime_hint,
                executor=self.executor,
                multiprocess=executor == "multiprocess",
            )
        return self.placements[executor]


@dataclass
class _Edge:
    source: str
    target: str
    from_port: str | None = None
    to_port: str | None = None


@dataclass
class _Imports:
    """What node processes must import so that classes given by the host resolve."""

    modules: dict[tuple[str, str], list[str]] = field(default_factory=dict)

    #: Why some classes cannot be imported by a node process (a class in a function or
    #: typed at the prompt): no problem for the in-process executor, an error for a
    #: session with node processes.
    problems: list[ConfigError] = field(default_factory=list)

    def add(self, cls: type[MultiprocessNode]) -> ConfigError | None:
        """Notes what a node process imports to find ``cls``; returns (and keeps) why it
        cannot, if it cannot."""
        problem = None
        if "<locals>" in cls.__qualname__:
            problem = ConfigError(
                f"node class {cls.__qualname__} is defined inside a function; node processes "
                "cannot import it. Define it at module level, or use executor='inprocess'."
            )
        module = sys.modules.get(cls.__module__)
        if problem is None and cls.__module__ in ("__main__", "__mp_main__"):
            path = getattr(module, "__file__", None)
            if not path:
                problem = ConfigError(
                    f"node class {cls.__qualname__} is defined in an interactive session; node "
                    "processes cannot import it. Put it in a module (or a script run with "
                    "python), or use executor='inprocess'."
                )
            key = ("main_script", str(path))
        else:
            key = ("module", cls.__module__)
        if problem is not None:
            self.problems.append(problem)
            return problem
        classes = self.modules.setdefault(key, [])
        if cls.__qualname__ not in classes:
            classes.append(cls.__qualname__)
        return None

    def add_module_of(self, cls: type[MultiprocessNode]) -> None:
        """A class the host's registry found by name: node processes import its module
        (they never read the host's configuration, so they do not know which modules
        it listed), unless it lives in a script or a function, where they look it up
        by name as before."""
        if "<locals>" not in cls.__qualname__ and cls.__module__ not in (
            "__main__",
            "__mp_main__",
        ):
            self.modules.setdefault(("module", cls.__module__), [])

    def specs(self) -> list[tuple[str, str, list[str]]]:
        """The imports of node processes; raises the first problem (see :attr:`problems`)."""
        if self.problems:
            raise self.problems[0]
        return [(kind, value, classes) for (kind, value), classes in self.modules.items()]


class Pipeline:
    """A pipeline of nodes, built step by step.

    Parameters
    ----------
    name : str
        Pipeline name (the manifest's ``metadata.name``).
    executor : "multiprocess" | "inprocess", optional
        Where Python nodes run: each in its own process or all as threads of this
        interpreter (the baseline; same results, one GIL). Default: multiprocess, unless
        runtime.toml turns it off (``[process] multiprocess = false``).
    config : RuntimeConfig, optional
        Runtime settings; default: ``load_config()``.
    """

    def __init__(
        self,
        name: str = "pipeline",
        *,
        executor: Executor | None = None,
        config: RuntimeConfig | None = None,
    ) -> None:
        self.config = config or load_config()
        if executor is None:
            executor = "multiprocess" if self.config.process.multiprocess else "inprocess"
        _check_executor(executor)
        self.name = name
        self.executor: Executor = executor
        self._nodes: list[_NodeEntry] = []
        self._node_ids: set[str] = set()  # the ids in _nodes, for the duplicate check
        self._edges: list[_Edge] = []
        self._imports = _Imports()
        #: Validated graphs by executor, until the next node or connection.
        self._validated: dict[str, _native.Graph] = {}
        #: What was accepted but is not acted on (see :meth:`add_node`'s ``lenient``
        #: and :meth:`zerohop.manifest.Manifest.to_pipeline`), each naming its path.
        self.warnings: list[ManifestWarning] = []

    # ------------------------------------------------------------------ building

    def node(
        self,
        node_id: str,
        node_type: str | type[MultiprocessNode],
        *,
        on_error: OnError = "fail",
        runtime_hint: str | None = None,
        executor: str | None = None,
        host: str | None = None,
        capabilities: dict[str, Any] | None = None,
        **params: Any,
    ) -> Pipeline:
        """Adds node ``node_id`` of ``node_type`` (a registered name or a node class)
        with ``params``; ``on_error="skip"`` drops frames whose ``process`` raises
        instead of failing the session.

        The registry decides where the node runs (a registered Python class, else the
        native Rust node of that name); ``runtime_hint`` (``"auto"``, ``"native"`` /
        ``"rust"``, ``"python"`` / ``"cpython"``) or ``executor`` (``"native"``,
        ``"multiprocess"``, ``"inprocess"``) overrides it. A contradiction, or a request
        for an implementation the type lacks, raises :class:`ManifestError` naming
        ``nodes[i].runtime_hint`` / ``nodes[i].executor``.

        ``host="gpu-1:50051"`` runs the node on that ``zerohop serve`` instead (see
        :mod:`zerohop.remote`): its type and params are that server's to check, and
        consecutive nodes with the same host run there together.

        ``capabilities={"memory_gb": 0.5}`` limits the memory of the node's process (see
        :mod:`zerohop.limits`), as a manifest node's ``capabilities`` do."""
        return self.add_node(
            node_id,
            node_type,
            params,
            on_error=on_error,
            runtime_hint=runtime_hint,
            executor=executor,
            host=host,
            capabilities=capabilities,
        )

    def add_node(
        self,
        node_id: str,
        node_type: str | type[MultiprocessNode],
        params: dict[str, Any] | None = None,
        *,
        on_error: OnError = "fail",
        runtime_hint: str | None = None,
        executor: str | None = None,
        host: str | None = None,
        capabilities: dict[str, Any] | None = None,
        lenient: bool = False,
    ) -> Pipeline:
        """:meth:`node` with ``params`` as a dict, for params whose names are not
        Python identifiers or clash with the keywords (as a manifest's may).

        ``lenient`` (how manifests are read): unknown params are dropped before the
        node sees them, and remotemedia's Python runtime hints (``cpython``,
        ``rustpython``, ``cpython_wasm``) on a native node type are not followed; each
        is a :class:`~zerohop.errors.ManifestWarning` on :attr:`warnings` naming its
        JSON path and the node. Otherwise (the builder) both are errors."""
        params = dict(params or {})
        if on_error not in ("fail", "skip"):
            raise ConfigError(f"on_error must be 'fail' or 'skip', got {on_error!r}")
        path = f"nodes[{len(self._nodes)}]"
        if node_id in self._node_ids:
            raise ManifestError(
                f"{path}.id: duplicate node id '{node_id}'", path=f"{path}.id", node_id=node_id
            )
        if not lenient and (missing := unimplemented(capabilities, path, node_id)):
            raise missing[0].error()
        if host is not None or node_type == REMOTE_PIPELINE_NODE:
            if capabilities:
                remote_limits = ManifestWarning(
                    f"{path}.capabilities",
                    f"a remote node's limits are its host's to set; not sent (node '{node_id}')",
                    node_id,
                )
                if not lenient:
                    raise remote_limits.error()
                self.warnings.append(remote_limits)
            if not isinstance(node_type, str):
                raise ConfigError("a remote node's type is a name the remote host registers")
            if host is None:
                remote = remote_pipeline(path, node_id, params, self.config)
            else:
                remote = host_node(
                    path,
                    node_id,
                    node_type,
                    params,
                    host=host,
                    runtime_hint=runtime_hint,
                    executor=executor,
                    on_error=on_error,
                )
            entry = _NodeEntry(
                node_id, node_type, remote, params, on_error, (False, False), runtime_hint
            )
            return self._added(entry)
        cls: type[MultiprocessNode] | NativeNodeType
        native_type: NativeNodeType | None = None
        if inspect.isclass(node_type):
            if not issubclass(node_type, MultiprocessNode):
                raise ConfigError(f"{node_type.__qualname__} is not a MultiprocessNode subclass")
            if (
                getattr(node_type, "node_type", None) is None
                or node_class_or_none(node_type.node_type) is not node_type
            ):
                register_node(node_type)
            problem = self._imports.add(node_type)
            if problem is not None and self.executor == "multiprocess":
                raise problem
            cls, type_name = node_type, node_type.node_type
        else:
            cls = resolve_node_type(str(node_type), path=f"{path}.node_type", node_id=node_id)
            type_name = canonical_node_type(str(node_type))
            native_type = native_node_types().get(type_name)
            if not isinstance(cls, NativeNodeType):
                self._imports.add_module_of(cls)
        offer = (native_type is not None, not isinstance(cls, NativeNodeType))
        if lenient and offer == (True, False) and _python_runtime(runtime_hint):
            self.warnings.append(
                ManifestWarning(
                    f"{path}.runtime_hint",
                    f"'{type_name}' is a native (Rust) node type: runtime_hint "
                    f"'{runtime_hint}' is not followed, node '{node_id}' runs native",
                    node_id,
                )
            )
            runtime_hint = None
        entry = _NodeEntry(
            node_id, type_name, cls, {}, on_error, offer, runtime_hint or None, executor or None
        )
        placement = entry.placement(len(self._nodes), self.executor)
        if placement == "native" and native_type is not None:
            cls = entry.cls = native_type
        if lenient:
            params = self._drop_unknown(params, cls, type_name, node_id, path)
        if isinstance(cls, NativeNodeType):
            negotiated = _NEGOTIATED_RATE.get(type_name)
            given = [k for k in (negotiated[1] if negotiated else ()) if k in params]
            if negotiated and (not given or params[given[0]] in (None, "auto")):
                key = given[0] if given else negotiated[0]
                entry.negotiate = (negotiated[0], f"{path}.params.{key}")
                params = {k: v for k, v in params.items() if k != key}
                # Checked with a stand-in rate; the real one comes from the next node.
                _native_params(type_name, {**params, negotiated[0]: 16_000}, node_id, path)
                stored = dict(params)
            else:
                stored = _native_params(type_name, params, node_id, path)
        else:
            validated = cls.validate_params(
                params,
                node_id=node_id,
                path=f"{path}.params",
                context=self.config.nodes.validation_context(),
            )
            stored = (
                validated.model_dump(mode="json")
                if hasattr(validated, "model_dump")
                else dict(validated)
            )
        entry.params = stored
        entry.memory_limit = memory_limit(
            capabilities, path=path, node_id=node_id, config=self.config, warnings=self.warnings
        )
        entry.threads = thread_budget(capabilities, path=path, node_id=node_id, config=self.config)
        entry.env = gpu_environment(
            capabilities, path=path, node_id=node_id, config=self.config, warnings=self.warnings
        )
        if placement != "multiprocess" and (capabilities or {}).get("memory_gb") is not None:
            self.warnings.append(
                ManifestWarning(
                    f"{path}.capabilities.memory_gb",
                    f"node '{node_id}' runs {placement}, in the host's process: a memory limit "
                    "holds for node processes only; not enforced",
                    node_id,
                )
            )
        return self._added(entry)

    def _added(self, entry: _NodeEntry) -> Pipeline:
        self._nodes.append(entry)
        self._node_ids.add(entry.id)
        self._validated.clear()
        return self

    def _drop_unknown(
        self,
        params: dict[str, Any],
        cls: type[MultiprocessNode] | NativeNodeType,
        type_name: str,
        node_id: str,
        path: str,
    ) -> dict[str, Any]:
        """``params`` without the ones ``cls`` does not know, each a warning."""
        known = _param_names(cls)
        if known is None:
            return params
        kept = {}
        for key, value in params.items():
            if key in known:
                kept[key] = value
                continue
            accepts = ", ".join(sorted(n for n in known if "_" in n or n.islower())) or "none"
            self.warnings.append(
                ManifestWarning(
                    f"{path}.params.{key}",
                    f"unknown parameter of {type_name} (node '{node_id}'); ignored "
                    f"(it accepts: {accepts})",
                    node_id,
                )
            )
        return kept

    def connect(
        self,
        source: str,
        target: str,
        *more: str,
        from_port: str | None = None,
        to_port: str | None = None,
    ) -> Pipeline:
        """Connects ``source`` to ``target`` (and on to each of ``more``, as a chain).
        Name ports when a node has several."""
        chain = [source, target, *more]
        if (from_port or to_port) and more:
            raise ConfigError("ports can only be named when connecting exactly two nodes")
        for a, b in itertools.pairwise(chain):
            self._edges.append(_Edge(a, b, from_port, to_port))
        self._validated.clear()
        return self

    # ------------------------------------------------------------------ outputs

    def remote_nodes(self) -> list[tuple[int, str, RemoteNodeType]]:
        """``(index, node id, where it runs)`` of every node that runs on another host."""
        return [
            (i, n.id, n.cls) for i, n in enumerate(self._nodes) if isinstance(n.cls, RemoteNodeType)
        ]

    def node_classes(self) -> dict[str, NodeClass]:
        """Node id → its class (or native node type), as resolved when it was added."""
        return {n.id: n.cls for n in self._nodes}

    def graph(self, executor: Executor | None = None) -> dict[str, Any]:
        """The executor's view: nodes with ports, policies and where each runs (when the
        session runs Python nodes on ``executor``, default ``self.executor``), and the
        resolved connections."""
        executor = executor or self.executor
        rates = self._negotiated_rates()
        edges = [(e.source, e.target, e.from_port, e.to_port) for e in self._edges]
        processes = [n.placement(i, executor) == "multiprocess" for i, n in enumerate(self._nodes)]
        budgets = [n.threads if p else None for n, p in zip(self._nodes, processes, strict=True)]
        cpus = pin(budgets) if self.config.process.pin_cpus else [None] * len(budgets)
        nodes = []
        for i, n in enumerate(self._nodes):
            node: dict[str, Any] = {
                "id": n.id,
                "node_type": n.node_type,
                "params": {**n.params, **rates.get(n.id, {})},
                "inputs": list(n.cls.inputs),
                "outputs": list(n.cls.outputs),
                "on_error": n.on_error,
                "placement": n.placement(i, executor),
                "accepts": n.cls.accepts,
                "emits": n.cls.emits,
            }
            if isinstance(n.cls, RemoteNodeType):
                node["inputs"], node["outputs"] = n.cls.ports(n.id, edges)
                node["remote"] = n.cls.spec
            elif processes[i]:
                limits = {
                    "memory_limit": n.memory_limit,
                    "threads": budgets[i],
                    "cpus": cpus[i],
                    "env": n.env or None,
                }
                node.update({k: v for k, v in limits.items() if v is not None})
            nodes.append(node)
        return {
            "name": self.name,
            "nodes": nodes,
            "connections": [
                {"from": e.source, "to": e.target, "from_port": e.from_port, "to_port": e.to_port}
                for e in self._edges
            ],
        }

    def _negotiated_rates(self) -> dict[str, dict[str, int]]:
        """Node id → the params negotiated with the next node (a resampler's target
        rate omitted or ``"auto"``: the input rate its next node declares)."""
        entries = {n.id: n for n in self._nodes}
        out: dict[str, dict[str, int]] = {}
        for n in self._nodes:
            if n.negotiate is None:
                continue
            name, path = n.negotiate
            following = [
                entries[e.target] for e in self._edges if e.source == n.id and e.target in entries
            ]
            rates = {t.id: t.cls.needs_input_rate(t.params) for t in following}
            missing = [i for i, rate in rates.items() if rate is None]
            if not following or missing:
                if following:
                    node = entries[missing[0]]
                    why = f"node '{node.id}' ({node.node_type}) declares no input rate"
                else:
                    why = "it is connected to no node"
                raise ManifestError(
                    f'{path}: "auto" (or omitted) means the rate the next node needs, but '
                    f"{why}; give the rate in Hz (node '{n.id}')",
                    path=path,
                    node_id=n.id,
                )
            if len(set(rates.values())) > 1:
                raise ManifestError(
                    f"{path}: the nodes after '{n.id}' need different input rates "
                    f"({', '.join(f'{i}: {r} Hz' for i, r in rates.items())}); give the rate in Hz",
                    path=path,
                    node_id=n.id,
                )
            rate = next(iter(rates.values()))
            assert rate is not None
            out[n.id] = {name: rate}
        return out

    def to_manifest(self) -> dict[str, Any]:
        """The pipeline as a remotemedia ``manifest.v1`` document."""
        connections = []
        for e in self._edges:
            item: dict[str, Any] = {"from": e.source, "to": e.target}
            if e.from_port:
                item["from_port"] = e.from_port
            if e.to_port:
                item["to_port"] = e.to_port
            connections.append(item)
        return {
            "version": "v1",
            "metadata": {"name": self.name},
            "nodes": [
                {
                    "id": n.id,
                    "node_type": n.node_type,
                    "params": n.params,
                    **({"runtime_hint": n.runtime_hint} if n.runtime_hint else {}),
                    **({"executor": n.executor} if n.executor else {}),
                    **(
                        {"host": n.cls.host}
                        if isinstance(n.cls, RemoteNodeType) and n.node_type != REMOTE_PIPELINE_NODE
                        else {}
                    ),
                }
                for n in self._nodes
            ],
            "connections": connections,
        }

    def validate(self, executor: Executor | None = None) -> _native.Graph:
        """Checks the whole graph (routing, ids, ports, dangling or duplicate
        connections, cycles, limits) for a session on ``executor`` (default
        ``self.executor``) without starting anything, and returns it validated: the
        resolved connections and the session's input and output labels, as both
        executors run them. Raises :class:`ManifestError` or
        :class:`~zerohop.errors.ResourceLimitError`."""
        from . import _native
        from .errors import ResourceLimitError

        executor = executor or self.executor
        graph = self._validated.get(executor)
        if graph is None:
            graph = self._validated[executor] = _native.Graph(_json(self.graph(executor)))
        limit = self.config.process.max_processes()
        processes = sum(
            1 for i, n in enumerate(self._nodes) if n.placement(i, executor) == "multiprocess"
        )
        if limit is not None and processes > limit:
            raise ResourceLimitError(
                f"pipeline '{self.name}' needs {processes} node processes, the limit "
                f"is {limit} (max_processes_per_session)"
            )
        return graph

    def check_input(self, kind: str, to: str | None = None) -> None:
        """Refuses, before anything starts, a ``kind`` frame (``"audio"``, ``"text"``,
        ...) for the pipeline input ``to`` (default: every input) when the node there
        declares the kinds it takes and ``kind`` is not one: a wav fed to a
        text-to-speech pipeline fails at once, naming the node and both kinds, instead
        of inside the node after every model has loaded. Raises :class:`ManifestError`."""
        fed = {(e.target, e.to_port) for e in self._edges}
        for node in self._nodes:
            ports = node.cls.inputs
            for port in ports:
                label = node.id if len(ports) == 1 else f"{node.id}.{port}"
                unfed = (node.id, port) not in fed and (node.id, None) not in fed
                if not unfed or to not in (None, label):
                    continue
                accepts = node.cls.accepts
                if accepts is not None and kind not in accepts:
                    raise ManifestError(
                        f"input '{label}': node '{node.id}' ({node.node_type}) takes "
                        f"{' or '.join(accepts)} frames, but the input is {kind}",
                        path=f"nodes[{self._nodes.index(node)}]",
                        node_id=node.id,
                    )

    def session(
        self,
        *,
        on_progress: Callable[[Event], None] | None = None,
        on_frame_error: Callable[[_native.SkippedFrame], None] | None = None,
        executor: Executor | None = None,
        deadline: float | None = None,
        max_audio_samples: int | None = None,
    ) -> Session:
        """Starts every node (all at once) and returns the running session once all are
        ready. ``on_progress(event)`` sees each node's initialization progress
        (:class:`~zerohop.session.Event`: ``Progress``, then ``Ready``);
        ``on_frame_error(event)`` each frame a node skipped (``FrameError``).

        ``deadline`` (seconds, counted from this call) and ``max_audio_samples`` are
        what a gRPC request's ``resource_limits`` ask (see :meth:`Session.limit`).

        Use it as a context manager so that the nodes stop when you are done::

            with pipeline.session(on_progress=print) as session:
                outputs = session.run(frames)
        """
        began = time.monotonic()
        executor = executor or self.executor
        _check_executor(executor)
        graph = self.validate(executor)
        remote = self.remote_nodes()
        if remote and executor == "inprocess":
            _, node_id, cls = remote[0]
            raise ConfigError(
                f"node '{node_id}' runs on {cls.host}: remote nodes run in multiprocess "
                "sessions (the in-process executor runs one interpreter's nodes)"
            )
        session: Session
        if executor == "inprocess":
            from .inprocess import InProcessSession

            session = InProcessSession(self, graph, on_progress=on_progress)
        else:
            from .multiprocess import MultiprocessSession

            session = MultiprocessSession.start(self, graph, on_progress)
        session._on_frame_error = on_frame_error
        session.limit(deadline=deadline, max_audio_samples=max_audio_samples, since=began)
        return session

    def run(self, inputs: Frame | Iterable[Frame], **session_options: Any) -> list[Frame]:
        """Starts a session, sends ``inputs``, collects every output, closes it."""
        with self.session(**session_options) as session:
            return session.run(inputs)

    def __repr__(self) -> str:
        return f"Pipeline({self.name!r}, {len(self._nodes)} nodes, {len(self._edges)} connections)"


def _check_executor(executor: str) -> None:
    if executor not in ("multiprocess", "inprocess"):
        raise ConfigError(f"executor must be 'multiprocess' or 'inprocess', got {executor!r}")


def _python_runtime(hint: str | None) -> bool:
    """Whether ``hint`` names one of remotemedia's Python runtimes."""
    name = (hint or "").strip().lower()
    return name.removeprefix("runtime_hint_") in _PYTHON_RUNTIMES


def _param_names(cls: type[MultiprocessNode] | NativeNodeType) -> set[str] | None:
    """Every spelling of every param ``cls`` takes; ``None`` when it takes any."""
    from pydantic import AliasChoices

    if isinstance(cls, NativeNodeType):
        schema = cls.params_schema
        if schema.get("additionalProperties") is not False:
            return None
        names: set[str] = set()
        for name, prop in schema.get("properties", {}).items():
            names.add(name)
            names.update(prop.get("x-aliases", []))
        return names
    model = cls.Params
    if model is None or model.model_config.get("extra") == "allow":
        return None
    names = set()
    for name, info in model.model_fields.items():
        names.add(name)
        if info.alias:
            names.add(info.alias)
        alias = info.validation_alias
        if isinstance(alias, str):
            names.add(alias)
        elif isinstance(alias, AliasChoices):
            names.update(c for c in alias.choices if isinstance(c, str))
    return names


def node_class_or_none(name: str) -> type[MultiprocessNode] | None:
    try:
        found = resolve_node_type(name)
    except ManifestError:
        return None
    return None if isinstance(found, NativeNodeType) else found


def _native_params(
    node_type: str, params: dict[str, Any], node_id: str, path: str
) -> dict[str, Any]:
    """Checks a native node's params in Rust (the same code that builds the node)."""
    from . import _native

    _native.check_native_params(node_type, _json(params), path=path, node_id=node_id)
    return dict(params)


def _json(value: Any) -> str:
    import json

    return json.dumps(value)
