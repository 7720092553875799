"""Runtime configuration: ``runtime.toml`` loaded into pydantic models.

Where the file comes from, in order: the ``path`` you pass, the ``ZEROHOP_CONFIG``
environment variable, ``./runtime.toml``, else the built-in defaults below (the same
values as the repository's documented ``runtime.toml``). This module is the only place
that reads the environment for configuration.

Examples
--------
Every section has defaults; a file gives only what it changes, and a bad value is
refused, naming the file and the field:

>>> import pathlib, tempfile
>>> from zerohop import RuntimeConfig
>>> with tempfile.TemporaryDirectory() as tmp:
...     path = pathlib.Path(tmp, "runtime.toml")
...     _ = path.write_text("channel.capacity = 8")
...     config = RuntimeConfig.from_file(path)
...     _ = path.write_text("channel.capacity = 0")
...     RuntimeConfig.from_file(path)
Traceback (most recent call last):
    ...
zerohop.errors.ConfigError: .../runtime.toml: channel.capacity: Input should be greater than
or equal to 1
>>> config.channel.capacity, config.process.spawn_method
(8, 'zygote')
"""

from __future__ import annotations

import os
import tomllib
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    model_validator,
)

from . import _native
from .errors import ConfigError
from .node import MODEL_DIRS_CONTEXT

__all__ = [
    "ChannelConfig",
    "HostConfig",
    "NodesConfig",
    "ProcessConfig",
    "RuntimeConfig",
    "ServerConfig",
    "load_config",
]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ChannelConfig(_Section):
    """Shared-memory channel settings (``[channel]``)."""

    capacity: int = Field(100, ge=1, le=100_000)
    max_payload_bytes: int = Field(64 << 20, ge=1)
    initial_payload_bytes: int = Field(4096, ge=1)
    max_borrowed: int = Field(16, ge=1, le=1024)
    max_loans: int = Field(4, ge=1, le=1024)

    def settings(
        self, *, capacity: int | None = None, max_payload: int | None = None
    ) -> _native.ChannelSettings:
        """These settings as channel ends and sessions take them (the one shape, defined
        in Rust), ``capacity`` or ``max_payload`` overridden where given (the initial
        payload then kept within the maximum)."""
        max_payload = max_payload or self.max_payload_bytes
        return _native.ChannelSettings(
            capacity=capacity or self.capacity,
            max_payload=max_payload,
            initial_payload=min(self.initial_payload_bytes, max_payload),
            max_borrowed=self.max_borrowed,
            max_loans=self.max_loans,
        )


class ProcessConfig(_Section):
    """Node process lifecycle (``[process]``)."""

    init_timeout_secs: float = Field(30.0, gt=0, le=3600)
    grace_period_secs: float = Field(2.0, ge=0, le=300)
    term_grace_secs: float = Field(1.0, ge=0, le=300)
    max_processes_per_session: int = Field(0, ge=0)
    heartbeat_secs: float = Field(1.0, gt=0, le=2.0)
    liveness_timeout_secs: float = Field(10.0, ge=0, le=3600)
    python_executable: str = ""
    spawn_method: Literal["zygote", "exec"] = "zygote"
    #: ``False`` turns multiprocess execution off: Python nodes run as threads of the
    #: host (the in-process executor), with the same results.
    multiprocess: bool = True
    #: The most memory one node process may hold, in bytes (0: no ceiling): a node's
    #: ``capabilities.memory_gb`` may ask for less, never more; without one, this is
    #: its limit. A node past its limit is stopped and its session fails.
    max_node_memory_bytes: int = Field(0, ge=0)
    #: The most memory all of one session's node processes may hold together (0: none).
    max_session_memory_bytes: int = Field(0, ge=0)
    #: A node's thread budget when its ``capabilities.cpu.cores`` gives none (0: none:
    #: each library sizes its pools by the machine).
    threads_per_node: int = Field(0, ge=0)
    #: Nodes with a thread budget run on CPUs of their own (as many as their budget,
    #: handed out in node order, wrapping when the machine has fewer).
    pin_cpus: bool = False

    def max_processes(self) -> int | None:
        """The process limit, None when unlimited (0 in the file)."""
        return self.max_processes_per_session or None

    def liveness_timeout(self) -> float | None:
        """Seconds a ready node may stay silent before it counts as frozen; None when
        the check is off (0 in the file)."""
        return self.liveness_timeout_secs or None

    @model_validator(mode="after")
    def _heartbeats_fit_liveness(self) -> ProcessConfig:
        if 0 < self.liveness_timeout_secs <= 2 * self.heartbeat_secs:
            raise ValueError(
                f"liveness_timeout_secs ({self.liveness_timeout_secs}) must exceed twice "
                f"heartbeat_secs ({self.heartbeat_secs}), or be 0 to turn the check off"
            )
        return self


class NodesConfig(_Section):
    """Where node types come from besides built-ins and entry points, and where their
    model files may be (``[nodes]``)."""

    modules: tuple[str, ...] = ()
    #: Directories a node's path params (``model_path``...) may point into, besides the
    #: packaged models'; see :mod:`zerohop.nodes.model_paths`.
    model_dirs: tuple[str, ...] = ()
    #: ``True``: what a manifest gives that zerohop does not act on (unknown params or
    #: fields, ``host``, a runtime hint not followed) is an error, not a warning — as
    #: ``zerohop validate --strict`` / ``zerohop run --strict``. Applies to manifests
    #: (files and gRPC); the Python builder is always strict about params.
    strict_params: bool = False
    #: Directories a gRPC ``DataBuffer.file`` reference may be read from (the server
    #: reads it into a bytes frame); the same rule as ``model_dirs``: symlinks and ``..``
    #: resolved first, and a manifest cannot add to it. Empty: every file is refused.
    file_dirs: tuple[str, ...] = ()
    #: GPU devices nodes may be handed (``["0", "1"]``): a node whose
    #: ``capabilities.gpu`` asks for one gets one (round robin, or the one its
    #: ``gpu.device`` names) through ``CUDA_VISIBLE_DEVICES`` (``HIP_VISIBLE_DEVICES``
    #: for ROCm). Empty: this host hands out none.
    gpus: tuple[str, ...] = ()

    def validation_context(self) -> dict[str, tuple[str, ...]]:
        """The pydantic validation context of node params validated under this config."""
        return {MODEL_DIRS_CONTEXT: self.model_dirs}


#: The server's default process cap, per CPU core (see ``ServerConfig.max_processes``).
PROCESSES_PER_CORE = 8


def default_process_cap() -> int:
    """:data:`PROCESSES_PER_CORE` node processes per CPU core this process may use."""
    return PROCESSES_PER_CORE * len(os.sched_getaffinity(0))


def default_connection_cap() -> int:
    """An eighth of the soft file descriptor limit, at least 16."""
    import resource

    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return max(16, soft // 8) if soft != resource.RLIM_INFINITY else 4096


class ServerConfig(_Section):
    """``zerohop serve`` (``[server]``): where it listens and the caps over all its
    sessions, which no manifest can raise. The largest payload is ``channel.max_payload_bytes``;
    the bearer token comes from ``--token`` or ``ZEROHOP_TOKEN``, never from this file."""

    host: str = "127.0.0.1"
    port: int = Field(50051, ge=0, le=65535)
    max_sessions: int = Field(32, ge=1)
    #: Node processes over all sessions (0: unlimited). By default
    #: :data:`PROCESSES_PER_CORE` per CPU core: one request naming 60 Python nodes must
    #: not start 60 interpreters on a small machine.
    max_processes: int = Field(default_factory=lambda: default_process_cap(), ge=0)
    #: Nodes, native or Python, in one session (0: unlimited). A native node costs no
    #: process but file descriptors and shared memory: one request naming thousands
    #: must not take what every other session needs.
    max_nodes_per_session: int = Field(256, ge=0)
    #: A stream gets a ``StreamMetrics`` message after every this many chunks (0: never).
    stream_metrics_every: int = Field(10, ge=0)
    #: A stream whose client sends nothing for this many seconds ends
    #: (``DEADLINE_EXCEEDED``) and frees its session: silent clients cannot hold every
    #: slot.
    idle_timeout_secs: float = Field(60.0, gt=0, le=86_400)
    #: Connections open at once; past it a connection is closed as it comes. By default
    #: an eighth of this process's file descriptor limit (at least 16): each session
    #: needs fds of its own.
    max_connections: int = Field(default_factory=lambda: default_connection_cap(), ge=1)
    #: A connection that sends nothing for this many seconds after it is accepted (one
    #: that never speaks HTTP/2) is closed.
    handshake_timeout_secs: float = Field(10.0, gt=0, le=3600)
    #: Bytes a stream may hold in each direction: results its client has not read yet,
    #: chunks its pipeline has not taken yet. Past it the pipeline (or the client)
    #: waits; nothing is dropped. One message larger than this passes alone.
    max_buffered_bytes_per_stream: int = Field(16 << 20, ge=1, le=(1 << 32) - 1)
    #: SIGTERM drains the server: health turns NOT_SERVING, new calls get UNAVAILABLE,
    #: and running sessions go on for at most this many seconds before they are
    #: stopped. A second SIGTERM or Ctrl-C stops at once.
    drain_timeout_secs: float = Field(30.0, ge=0, le=86_400)
    #: Serves Prometheus metrics at ``http://host:metrics_port/metrics`` (0: a free
    #: port; unset: not served). ``zerohop serve --metrics-port`` overrides it.
    metrics_port: int | None = Field(None, ge=0, le=65535)
    #: PEM certificate chain and private key: the gRPC port speaks TLS (both or
    #: neither; ``zerohop serve --tls-cert/--tls-key`` override them).
    tls_cert: str | None = None
    tls_key: str | None = None

    @model_validator(mode="after")
    def _tls_pair(self) -> ServerConfig:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key go together: set both or neither")
        return self


class HostConfig(_Section):
    """One host remote nodes run on (``[hosts."gpu-1:50051"]``): how to reach it. Its
    token and CA bundle are the operator's, never a manifest's: a manifest may come from
    a network client and must not choose what the server sends where."""

    #: Bearer token sent to the host (``authorization: Bearer ...``).
    token: str | None = None
    #: Or the environment variable that holds it (read when a session starts).
    token_env: str | None = None
    #: PEM CA bundle the host's certificate must chain to: the connection is TLS.
    ca: str | None = None
    #: The most seconds connecting and opening a stream there may take.
    connect_timeout_secs: float = Field(10.0, gt=0, le=3600)

    @model_validator(mode="after")
    def _one_token(self) -> HostConfig:
        if self.token is not None and self.token_env is not None:
            raise ValueError("give token or token_env, not both")
        return self

    def access(self, key: str) -> tuple[str | None, bytes | None, float]:
        """``(token, CA bundle, connect timeout)``, read now; errors name the field."""
        token = self.token
        if self.token_env is not None:
            token = os.environ.get(self.token_env)
            if not token:
                raise ConfigError(
                    f'hosts."{key}".token_env: environment variable {self.token_env} is not set'
                )
        ca = None
        if self.ca is not None:
            try:
                ca = Path(self.ca).read_bytes()
            except OSError as err:
                raise ConfigError(
                    f'hosts."{key}".ca: cannot read {self.ca}: {err.strerror}'
                ) from None
        return token, ca, self.connect_timeout_secs


#: A ``[hosts]`` key: ``host:port`` (IPv6 in brackets), no scheme.
HOST_KEY = r"^(?:\[[0-9a-fA-F:.]+\]|[^\s:/\[\]]+):\d{1,5}$"


class RuntimeConfig(_Section):
    """The whole ``runtime.toml``."""

    channel: ChannelConfig = ChannelConfig()
    process: ProcessConfig = ProcessConfig()
    nodes: NodesConfig = NodesConfig()
    server: ServerConfig = ServerConfig()
    #: Hosts remote nodes run on, keyed ``"host:port"`` (a node's ``host`` matches
    #: without its scheme). A host not listed is dialed without token, in plain text.
    hosts: dict[Annotated[str, StringConstraints(pattern=HOST_KEY)], HostConfig] = Field(
        default_factory=dict
    )

    def host_access(self) -> list[tuple[str, str | None, bytes | None, float]]:
        """Every ``[hosts]`` entry as the executor takes it:
        ``(key, token, CA bundle, connect timeout)``."""
        return [(key, *host.access(key)) for key, host in self.hosts.items()]

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> RuntimeConfig:
        """Reads and validates one TOML file; errors name the file and the field."""
        path = Path(path)
        try:
            data = tomllib.loads(path.read_text())
        except OSError as err:
            raise ConfigError(f"cannot read {path}: {err.strerror}") from None
        except tomllib.TOMLDecodeError as err:
            raise ConfigError(f"{path}: invalid TOML: {err}") from None
        try:
            return cls.model_validate(data)
        except ValidationError as err:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in err.errors()
            )
            raise ConfigError(f"{path}: {problems}") from None


def load_config(path: str | os.PathLike[str] | None = None) -> RuntimeConfig:
    """Loads the runtime configuration (see the module docstring for the search order)."""
    if path is not None:
        return RuntimeConfig.from_file(path)
    return _default_config(os.environ.get("ZEROHOP_CONFIG"), Path.cwd())


@lru_cache(maxsize=8)
def _default_config(env_path: str | None, cwd: Path) -> RuntimeConfig:
    if env_path:
        return RuntimeConfig.from_file(env_path)
    local = cwd / "runtime.toml"
    if local.is_file():
        return RuntimeConfig.from_file(local)
    return RuntimeConfig()
