"""zerohop: run each node of a streaming media/AI pipeline in its own process and move
audio, video and tensor frames between them through shared memory without copying.

The public API is re-exported here; see the submodules for details:
:mod:`zerohop.pipeline` (the builder), :mod:`zerohop.session` (running pipelines),
:mod:`zerohop.node` (writing nodes), :mod:`zerohop.data` (frames),
:mod:`zerohop.channel` (shared-memory channels), :mod:`zerohop.config`
(``runtime.toml``), :mod:`zerohop.errors` (exceptions).

Examples
--------
Two built-in nodes, each in its own process, frames passed through shared memory:

>>> from zerohop import Pipeline, Text
>>> pipe = (
...     Pipeline("hello")
...     .node("upper", "UpperCase")
...     .node("bang", "Suffix", suffix="!")
...     .connect("upper", "bang")
... )
>>> [frame.text for frame in pipe.run([Text("hello"), Text("world")])]
['HELLO!', 'WORLD!']
"""

import importlib
from typing import TYPE_CHECKING, Any

from . import _native
from .errors import (
    ChannelClosedError,
    ChannelError,
    ConfigError,
    EndOfStream,
    FrameError,
    ManifestError,
    NodeCrashedError,
    NodeError,
    NodeFailure,
    NodeInitError,
    NodeInitTimeout,
    NodeUnresponsiveError,
    PayloadTooLargeError,
    RemoteNodeError,
    ResourceLimitError,
    SpawnError,
    UnknownNodeTypeError,
    ZerohopError,
    ZerohopTimeoutError,
)

if TYPE_CHECKING:
    from .channel import Receiver, Sender
    from .client import AsyncClient, Client, RemoteError
    from .config import ChannelConfig, RuntimeConfig, load_config
    from .data import Audio, Bytes, Control, Frame, Json, Tensor, Text, Video, from_bytes
    from .node import MultiprocessNode, NodeContext
    from .pipeline import Pipeline
    from .registry import node_class, register_node, registered_nodes
    from .session import Event, NodeStatus, Progress, Ready, Session, SkippedFrame

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
    "EndOfStream",
    "Event",
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
    "Progress",
    "Ready",
    "Receiver",
    "RemoteError",
    "RemoteNodeError",
    "ResourceLimitError",
    "RuntimeConfig",
    "Sender",
    "Session",
    "SkippedFrame",
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


#: Where each public name lives. Importing zerohop loads none of these modules; the
#: first use of a name loads its own (PEP 562). So a node process, which imports
#: zerohop for the node API, never loads the host side (pipeline builder, sessions,
#: config, gRPC client) unless the node's own code does.
_LAZY = {
    **dict.fromkeys(("Receiver", "Sender"), "channel"),
    **dict.fromkeys(("AsyncClient", "Client", "RemoteError"), "client"),
    **dict.fromkeys(("ChannelConfig", "RuntimeConfig", "load_config"), "config"),
    **dict.fromkeys(
        ("Audio", "Bytes", "Control", "Frame", "Json", "Tensor", "Text", "Video", "from_bytes"),
        "data",
    ),
    **dict.fromkeys(("MultiprocessNode", "NodeContext"), "node"),
    "Pipeline": "pipeline",
    **dict.fromkeys(("node_class", "register_node", "registered_nodes"), "registry"),
    **dict.fromkeys(
        ("Event", "NodeStatus", "Progress", "Ready", "Session", "SkippedFrame"), "session"
    ),
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'zerohop' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
