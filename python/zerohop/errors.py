"""The exception hierarchy of zerohop.

Every error zerohop raises is a :class:`ZerohopError`. Where a builtin exception fits the
situation too, the class also derives from it, so ``except TimeoutError`` keeps working::

    ZerohopError
    ├── FrameError                     bad frame bytes, shape/payload mismatch, unknown dtype
    │   └── PayloadTooLargeError       payload over the configured maximum
    ├── ChannelError                   shared-memory channel could not be created or used
    │   └── ChannelClosedError         the other end of the channel is gone
    │       └── EndOfStream            the sender ended the stream: no more frames follow
    ├── ZerohopTimeoutError            (also TimeoutError) a blocking call ran out of time
    ├── ConfigError                    (also ValueError) invalid runtime.toml or argument
    ├── ManifestError                  (also ValueError) invalid pipeline; ``.path`` names the field
    │   └── UnknownNodeTypeError       a node type nothing registered; ``.suggestions``
    ├── ResourceLimitError             a limit would be exceeded; raised before any spawn
    └── NodeFailure                    a node failed; ``.node_id`` names it
        ├── SpawnError                 its process could not be started
        ├── NodeInitError              import, params or ``initialize`` failed; ``.traceback``
        ├── NodeInitTimeout            (also TimeoutError) not ready within the init timeout
        ├── NodeUnresponsiveError      (also TimeoutError) no heartbeat within the liveness timeout
        ├── NodeCrashedError           its process died; ``.exit_code`` or ``.signal``
        ├── NodeError                  ``process`` raised (policy ``fail``); ``.traceback``
        └── RemoteNodeError            a node on another host: unreachable, refused, failed there;
                                       ``.host``, ``.path`` (``nodes[2].host``)

The Rust core maps its single error enum onto these classes in one place
(``rust/py/errors.rs``); each instance keeps the core's error kind in ``.kind``.

Examples
--------
A node that fails ends its session; the error names the node and carries the
traceback from the node's process:

>>> from zerohop import NodeError, Pipeline, Text
>>> pipe = Pipeline("oops").node("scale", "Scale")  # takes audio or tensors, not text
>>> try:
...     pipe.run([Text("hi")])
... except NodeError as err:
...     print(err.node_id, err.kind, err.traceback.splitlines()[-1])
scale node_error TypeError: Scale takes audio or tensor frames, got Text

An invalid pipeline is refused before anything starts, naming the field:

>>> from zerohop import ManifestError
>>> try:
...     Pipeline().node("a", "UpperCase").node("a", "Suffix")
... except ManifestError as err:
...     print(err.path, err.node_id)
nodes[1].id a
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "ChannelClosedError",
    "ChannelError",
    "ConfigError",
    "EndOfStream",
    "FrameError",
    "ManifestError",
    "ManifestWarning",
    "NodeCrashedError",
    "NodeError",
    "NodeFailure",
    "NodeInitError",
    "NodeInitTimeout",
    "NodeUnresponsiveError",
    "PayloadTooLargeError",
    "RemoteNodeError",
    "ResourceLimitError",
    "SpawnError",
    "UnknownNodeTypeError",
    "ZerohopError",
    "ZerohopTimeoutError",
]


class ZerohopError(Exception):
    """Base class of every error raised by zerohop."""

    kind: str = "error"


class FrameError(ZerohopError):
    """A frame is malformed: truncated, wrong magic or version, unknown dtype, or a
    header whose shape does not match its payload. The frame is rejected whole; no
    array is ever built from it."""

    kind = "frame"


class PayloadTooLargeError(FrameError):
    """A payload exceeds the configured maximum (``channel.max_payload_bytes``)."""

    kind = "payload_too_large"


class ChannelError(ZerohopError):
    """A shared-memory channel could not be created, opened or used."""

    kind = "ipc"


class ChannelClosedError(ChannelError):
    """The other end of a channel went away and nothing is left to receive."""

    kind = "closed"


class EndOfStream(ChannelClosedError):
    """The sender ended the stream (:meth:`Sender.send_end_of_stream
    <zerohop.channel.Sender.send_end_of_stream>`): no more frames follow. Iterating a
    :class:`~zerohop.channel.Receiver` stops here."""

    kind = "end_of_stream"


class ZerohopTimeoutError(ZerohopError, TimeoutError):
    """A blocking operation (send on a full channel, receive, start) timed out."""

    kind = "timeout"


class ConfigError(ZerohopError, ValueError):
    """Invalid configuration or argument."""

    kind = "config"


class ManifestError(ZerohopError, ValueError):
    """A pipeline or manifest is invalid. ``path`` is the JSON path of the offending
    field (``nodes[2].params.sample_rate``) and ``node_id`` the node, where known."""

    kind = "manifest"

    def __init__(
        self, message: str, *, path: str | None = None, node_id: str | None = None
    ) -> None:
        super().__init__(message)
        self.path = path
        self.node_id = node_id


@dataclass(frozen=True)
class ManifestWarning:
    """Something a manifest asks for that zerohop accepts but ignores or reinterprets
    (an unknown param or field, a ``host`` the node runs without, a runtime hint not
    followed). ``str()`` is ``"<path>: <message>"``; ``--strict`` turns it into a
    :class:`ManifestError`."""

    path: str
    message: str
    node_id: str | None = None

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"

    def error(self) -> ManifestError:
        """This warning as the error ``--strict`` (``[nodes] strict_params``) raises."""
        return ManifestError(
            f"{self} (refused under --strict, [nodes] strict_params)",
            path=self.path,
            node_id=self.node_id,
        )


class UnknownNodeTypeError(ManifestError):
    """No registered node has this type; ``suggestions`` lists the closest names."""

    kind = "unknown_node_type"

    def __init__(
        self,
        message: str,
        *,
        node_type: str = "",
        suggestions: list[str] | None = None,
        path: str | None = None,
        node_id: str | None = None,
    ) -> None:
        super().__init__(message, path=path, node_id=node_id)
        self.node_type = node_type
        self.suggestions = suggestions or []


class ResourceLimitError(ZerohopError):
    """A configured limit would be exceeded: processes per session, sessions, payload
    size (raised before anything is spawned), or a node's memory limit, its own or its
    session's (``node_id``, ``limit_bytes`` and ``peak_bytes`` say which node, what limit
    and how much it held; the node was stopped)."""

    kind = "resource_limit"

    def __init__(
        self,
        message: str,
        *,
        node_id: str | None = None,
        limit_bytes: int | None = None,
        peak_bytes: int | None = None,
    ) -> None:
        super().__init__(message)
        self.node_id = node_id
        self.limit_bytes = limit_bytes
        self.peak_bytes = peak_bytes


class NodeFailure(ZerohopError):
    """Base of the errors that are about one node; ``node_id`` names it and
    ``traceback`` holds the node's Python traceback when there is one."""

    kind = "node"

    def __init__(
        self,
        message: str,
        *,
        node_id: str | None = None,
        traceback: str | None = None,
        exit_code: int | None = None,
        signal: int | None = None,
    ) -> None:
        super().__init__(message)
        self.node_id = node_id
        self.traceback = traceback
        self.exit_code = exit_code
        self.signal = signal

    def __str__(self) -> str:
        text = super().__str__()
        if self.traceback:
            return f"{text}\n\nTraceback from the node process:\n{self.traceback.rstrip()}"
        return text


class SpawnError(NodeFailure):
    """The node's process could not be started (exec failed, out of memory, ...)."""

    kind = "spawn"


class NodeInitError(NodeFailure):
    """The node could not be imported, rejected its params, or ``initialize`` raised."""

    kind = "node_init"


class NodeInitTimeout(NodeFailure, TimeoutError):
    """The node was not ready within the init timeout."""

    kind = "node_init_timeout"


class NodeUnresponsiveError(NodeFailure, TimeoutError):
    """The node's process stopped sending heartbeats for longer than the liveness
    timeout (it is frozen: stopped by a signal, or stuck holding the GIL); the session
    was stopped and the process killed."""

    kind = "node_unresponsive"


class NodeCrashedError(NodeFailure):
    """The node's process died while the session ran; ``exit_code`` or ``signal``
    says how."""

    kind = "node_crashed"


class NodeError(NodeFailure):
    """The node's ``process`` raised and its ``on_error`` policy is ``"fail"``."""

    kind = "node_error"


class RemoteNodeError(NodeFailure):
    """A node on another host: its host could not be reached, refused the session
    (token, certificate, manifest), or the node failed there. ``host`` is the address
    dialed and ``path`` the manifest field that names it (``nodes[2].host``)."""

    kind = "remote_node"

    def __init__(
        self,
        message: str,
        *,
        node_id: str | None = None,
        host: str | None = None,
        path: str | None = None,
        traceback: str | None = None,
    ) -> None:
        super().__init__(message, node_id=node_id, traceback=traceback)
        self.host = host
        self.path = path
