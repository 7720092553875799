"""Type stubs for the Rust extension ``zerohop._native`` (checked by stubtest in CI)."""

from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar, final

from typing_extensions import Buffer

__all__ = [
    "CONTROL_ACTIONS",
    "DTYPES",
    "HEADER_LEN",
    "KINDS",
    "MAX_DIMS",
    "MAX_META",
    "PIXEL_FORMATS",
    "VIDEO_CODECS",
    "ChannelSettings",
    "Graph",
    "NativeNode",
    "NativeSession",
    "NodeStatus",
    "Port",
    "Progress",
    "RawFrame",
    "Ready",
    "Receiver",
    "Sender",
    "SessionSettings",
    "SkippedFrame",
    "__version__",
    "check_native_params",
    "decode_frame",
    "encode_frame",
    "encode_metrics",
    "memory_mechanism",
    "native_nodes",
    "reclaim_dead",
    "route_node",
    "serve",
]

__version__: str
HEADER_LEN: int
MAX_DIMS: int
KINDS: list[str]
DTYPES: list[str]
PIXEL_FORMATS: list[str]
MAX_META: int
VIDEO_CODECS: list[str]
CONTROL_ACTIONS: list[str]

@final
class RawFrame:
    """One frame: header fields as properties, the payload through the buffer protocol."""

    @property
    def kind(self) -> str: ...
    @property
    def dtype(self) -> str: ...
    @property
    def shape(self) -> list[int]: ...
    @property
    def sample_rate(self) -> int: ...
    @property
    def channels(self) -> int: ...
    @property
    def width(self) -> int: ...
    @property
    def height(self) -> int: ...
    @property
    def pixel_format(self) -> str | None: ...
    @property
    def session_id(self) -> int: ...
    @property
    def sequence(self) -> int: ...
    @property
    def timestamp_ns(self) -> int: ...
    @property
    def flags(self) -> int: ...
    @property
    def is_end_of_stream(self) -> bool: ...
    @property
    def cancel_mark(self) -> int | None: ...
    @property
    def meta(self) -> dict[str, Any]: ...
    @property
    def nbytes(self) -> int: ...
    @property
    def is_loan(self) -> bool: ...
    @property
    def is_shared(self) -> bool: ...
    def text(self) -> str: ...
    def to_bytes(self) -> bytes: ...
    def __buffer__(self, flags: int, /) -> memoryview: ...
    def __release_buffer__(self, buffer: memoryview, /) -> None: ...

@final
class ChannelSettings:
    """The settings of a channel, checked when made (runtime.toml's ``[channel]``)."""

    def __new__(
        cls,
        *,
        capacity: int | None = None,
        max_payload: int | None = None,
        initial_payload: int | None = None,
        max_borrowed: int | None = None,
        max_loans: int | None = None,
    ) -> ChannelSettings: ...
    @property
    def capacity(self) -> int: ...
    @property
    def max_payload(self) -> int: ...
    @property
    def initial_payload(self) -> int: ...
    @property
    def max_borrowed(self) -> int: ...
    @property
    def max_loans(self) -> int: ...
    def __eq__(self, value: object, /) -> bool: ...

@final
class Sender:
    @property
    def name(self) -> str: ...
    @property
    def session_id(self) -> int: ...
    @property
    def max_payload(self) -> int: ...
    def __new__(
        cls, name: str, settings: ChannelSettings | None = None, *, session_id: int = 0
    ) -> Sender: ...
    def loan(
        self,
        kind: str,
        dtype: str,
        shape: Sequence[int],
        *,
        sample_rate: int = 0,
        channels: int = 0,
        width: int = 0,
        height: int = 0,
        pixel_format: str | None = None,
        meta: Mapping[str, Any] | None = None,
    ) -> RawFrame: ...
    def send_loan(
        self,
        frame: RawFrame,
        *,
        sequence: int | None = None,
        timestamp_ns: int | None = None,
        timeout: float | None = None,
        meta: Mapping[str, Any] | None = None,
    ) -> int: ...
    def send(
        self,
        kind: str,
        dtype: str,
        shape: Sequence[int],
        payload: Buffer,
        *,
        sample_rate: int = 0,
        channels: int = 0,
        width: int = 0,
        height: int = 0,
        pixel_format: str | None = None,
        sequence: int | None = None,
        timestamp_ns: int | None = None,
        timeout: float | None = None,
        meta: Mapping[str, Any] | None = None,
    ) -> int: ...
    def send_frame(
        self,
        frame: RawFrame,
        *,
        sequence: int | None = None,
        timestamp_ns: int | None = None,
        timeout: float | None = None,
        meta: Mapping[str, Any] | None = None,
    ) -> int: ...
    def flush(self, timeout: float | None = None) -> None: ...
    def send_cancel_mark(self, id: int, *, timeout: float | None = None) -> None: ...
    def send_end_of_stream(self, *, timeout: float | None = None) -> None: ...

@final
class Receiver:
    @property
    def name(self) -> str: ...
    @property
    def max_payload(self) -> int: ...
    def __new__(cls, name: str, settings: ChannelSettings | None = None) -> Receiver: ...
    def recv(self, timeout: float | None = None) -> RawFrame: ...
    def try_recv(self) -> RawFrame | None: ...
    def wait_fd(self) -> int: ...

def encode_frame(
    kind: str,
    dtype: str,
    shape: Sequence[int],
    payload: Buffer,
    *,
    sample_rate: int = 0,
    channels: int = 0,
    width: int = 0,
    height: int = 0,
    pixel_format: str | None = None,
    session_id: int = 0,
    sequence: int = 0,
    timestamp_ns: int = 0,
    meta: Mapping[str, Any] | None = None,
) -> bytes: ...
def decode_frame(data: Buffer, max_payload: int | None = None) -> RawFrame: ...
def reclaim_dead() -> int: ...
def memory_mechanism() -> str: ...
def native_nodes() -> list[tuple[str, str, str]]: ...
def encode_metrics(
    rows: Sequence[tuple[str, int, int, int | None, bool]], credits_used: int, credits: int
) -> str: ...
def check_native_params(node_type: str, params_json: str, *, path: str, node_id: str) -> None: ...
def route_node(
    index: int,
    node_id: str,
    node_type: str,
    *,
    native: bool,
    python: bool,
    runtime_hint: str | None,
    executor: str | None,
    multiprocess: bool,
) -> str: ...

@final
class NativeNode:
    """A native (Rust) node driven from Python (the in-process executor's)."""

    def __new__(cls, node_type: str, params_json: str = "{}") -> NativeNode: ...
    @property
    def node_type(self) -> str: ...
    def process(self, frame: RawFrame | Buffer) -> list[RawFrame]: ...
    def flush(self) -> list[RawFrame]: ...

@final
class Port:
    """One port of one node, with its session label (``node`` or ``node.port``)."""

    __match_args__ = ("node_id", "port", "label")
    @property
    def node_id(self) -> str: ...
    @property
    def port(self) -> str: ...
    @property
    def label(self) -> str: ...
    def __eq__(self, value: object, /) -> bool: ...
    def __hash__(self) -> int: ...

@final
class Graph:
    """A pipeline graph, validated: ids, ports, connections, cycles."""

    def __new__(cls, graph_json: str) -> Graph: ...
    @property
    def name(self) -> str: ...
    @property
    def inputs(self) -> list[Port]: ...
    @property
    def outputs(self) -> list[Port]: ...
    @property
    def edges(self) -> list[tuple[Port, Port]]: ...

def serve(
    plan: Callable[[str], tuple[Graph, SessionSettings, list[str]]],
    node_types: Callable[[], list[str]],
    *,
    host: str,
    port: int,
    token: str | None,
    max_sessions: int,
    max_processes: int,
    max_nodes_per_session: int,
    max_payload: int,
    metrics_every: int,
    file_dirs: Sequence[str],
    idle_timeout: float,
    max_connections: int,
    handshake_timeout: float,
    max_buffered_bytes_per_stream: int,
    drain_timeout: float,
    draining: Callable[[], bool],
    metrics_port: int | None,
    tls_cert: str | None,
    tls_key: str | None,
    on_bound: Callable[[str, str | None], None],
) -> None: ...

class _Event:
    KIND: ClassVar[str]
    def __getitem__(self, key: str, /) -> Any: ...
    def get(self, key: str, default: Any | None = None) -> Any: ...
    def __eq__(self, value: object, /) -> bool: ...

@final
class Progress(_Event):
    """A node reports progress while it initializes."""

    __match_args__ = ("node_id", "fraction", "message")
    def __new__(cls, node_id: str, fraction: float | None, message: str) -> Progress: ...
    @property
    def node_id(self) -> str: ...
    @property
    def fraction(self) -> float | None: ...
    @property
    def message(self) -> str: ...

@final
class Ready(_Event):
    """A node is ready."""

    __match_args__ = ("node_id", "init_secs")
    def __new__(cls, node_id: str, init_secs: float) -> Ready: ...
    @property
    def node_id(self) -> str: ...
    @property
    def init_secs(self) -> float: ...

@final
class SkippedFrame(_Event):
    """A frame a node failed on and skipped."""

    __match_args__ = ("node_id", "error", "traceback", "sequence")
    def __new__(
        cls, node_id: str, error: str, traceback: str, sequence: int | None
    ) -> SkippedFrame: ...
    @property
    def node_id(self) -> str: ...
    @property
    def error(self) -> str: ...
    @property
    def traceback(self) -> str: ...
    @property
    def sequence(self) -> int | None: ...

@final
class NodeStatus:
    """One node of a running session."""

    __match_args__ = ("node_id", "state", "pid")
    def __new__(
        cls,
        node_id: str,
        state: str,
        *,
        pid: int | None = None,
        started_at: float | None = None,
        rss_bytes: int | None = None,
        peak_rss_bytes: int | None = None,
        memory_limit: int | None = None,
        init_secs: float | None = None,
        frames_in: int = 0,
        frames_out: int = 0,
        exit: str | None = None,
    ) -> NodeStatus: ...
    @property
    def node_id(self) -> str: ...
    @property
    def state(self) -> str: ...
    @property
    def pid(self) -> int | None: ...
    @property
    def started_at(self) -> float | None: ...
    @property
    def rss_bytes(self) -> int | None: ...
    @property
    def peak_rss_bytes(self) -> int | None: ...
    @property
    def memory_limit(self) -> int | None: ...
    @property
    def init_secs(self) -> float | None: ...
    @property
    def frames_in(self) -> int: ...
    @property
    def frames_out(self) -> int: ...
    @property
    def exit(self) -> str | None: ...
    def __eq__(self, value: object, /) -> bool: ...

@final
class SessionSettings:
    """Everything a session needs besides its graph, checked when made."""

    def __new__(
        cls,
        *,
        program: str,
        args: Sequence[str],
        env: Sequence[tuple[str, str]],
        cwd: str | None,
        channel: ChannelSettings,
        init_timeout: float,
        grace: float,
        term_grace: float,
        liveness_timeout: float | None,
        max_processes: int | None,
        heartbeat_secs: float,
        imports: Sequence[tuple[str, str, Sequence[str]]],
        sys_path: Sequence[str],
        spawn_method: str,
        hosts: Sequence[tuple[str, str | None, bytes | None, float]] = ...,
        session_memory_limit: int | None = ...,
    ) -> SessionSettings: ...
    @property
    def channel(self) -> ChannelSettings: ...
    @property
    def max_processes(self) -> int | None: ...

@final
class NativeSession:
    """One running session of the multiprocess executor."""

    @staticmethod
    def start(
        graph: Graph,
        settings: SessionSettings,
        *,
        on_event: Callable[[Progress | Ready], object] | None = None,
    ) -> NativeSession: ...
    @property
    def id(self) -> str: ...
    def input(self, index: int) -> Sender: ...
    def end_inputs(self, timeout: float | None = None) -> None: ...
    def cancel(self) -> int: ...
    def recv(
        self, timeout: float | None = None
    ) -> tuple[int, RawFrame] | SkippedFrame | int | None: ...
    def status(self) -> list[NodeStatus]: ...
    def metrics(self) -> str: ...
    def pids(self) -> list[int]: ...
    def close(self) -> None: ...
