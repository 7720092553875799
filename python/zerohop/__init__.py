"""zerohop: run each node of a streaming media/AI pipeline in its own process and move
audio, video and tensor frames between them through shared memory without copying.

The public API is re-exported here; see the submodules for details:
:mod:`zerohop.data` (frames), :mod:`zerohop.channel` (shared-memory channels),
:mod:`zerohop.config` (``runtime.toml``), :mod:`zerohop.errors` (exceptions).
"""

from typing import TYPE_CHECKING, Any

from . import _native
from .channel import Receiver, Sender
from .config import ChannelConfig, RuntimeConfig, load_config
from .data import Audio, Bytes, Control, Frame, Json, Tensor, Text, Video, from_bytes
from .errors import (
    ChannelClosedError,
    ChannelError,
    ConfigError,
    FrameError,
    ManifestError,
    NodeCrashedError,
    NodeError,
    NodeFailure,
    NodeInitError,
    NodeInitTimeout,
    NodeUnresponsiveError,
    PayloadTooLargeError,
    ResourceLimitError,
    SpawnError,
    UnknownNodeTypeError,
    ZerohopError,
    ZerohopTimeoutError,
)
from .node import MultiprocessNode, NodeContext, node_class, register_node, registered_nodes
from .pipeline import Pipeline
from .session import NodeStatus, Session

if TYPE_CHECKING:
    from .client import AsyncClient, Client, RemoteError

__version__: str = _native.__version__

__all__ = [
    "AsyncClient",
    "Audio",
    "Bytes",
    "ChannelClosedError",
    "ChannelConfig",
    "ChannelError",
    "Client",
    "ConfigError",
    "Control",
    "Frame",
    "FrameError",
    "Json",
    "ManifestError",
    "MultiprocessNode",
    "NodeContext",
    "NodeCrashedError",
    "NodeError",
    "NodeFailure",
    "NodeInitError",
    "NodeInitTimeout",
    "NodeStatus",
    "NodeUnresponsiveError",
    "PayloadTooLargeError",
    "Pipeline",
    "Receiver",
    "RemoteError",
    "ResourceLimitError",
    "RuntimeConfig",
    "Sender",
    "Session",
    "SpawnError",
    "Tensor",
    "Text",
    "UnknownNodeTypeError",
    "Video",
    "ZerohopError",
    "ZerohopTimeoutError",
    "__version__",
    "from_bytes",
    "load_config",
    "node_class",
    "reclaim_dead",
    "register_node",
    "registered_nodes",
]


def reclaim_dead() -> int:
    """Removes shared memory left behind by processes that died without cleaning up
    (e.g. killed with SIGKILL). Returns the number of dead processes reclaimed."""
    return _native.reclaim_dead()


_LAZY = ("AsyncClient", "Client", "RemoteError")


def __getattr__(name: str) -> Any:
    """The gRPC client (:mod:`zerohop.client`) is imported on first use, so that node
    processes, which import zerohop too, never load grpcio."""
    if name in _LAZY:
        from . import client

        return getattr(client, name)
    raise AttributeError(f"module 'zerohop' has no attribute {name!r}")
