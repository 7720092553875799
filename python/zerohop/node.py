"""Nodes: the base class users subclass and the context a node gets (the registry that
finds node types by name is :mod:`zerohop.registry`).

A node runs in its own process (its own interpreter and GIL). It is a small class:
``initialize`` runs once, in the node's own process (load models there); ``process``
runs per input frame and may return a frame, ``None`` (nothing to send), a ``(port,
frame)`` pair, or be a generator / async generator yielding several (streaming); it may
also be ``async def``. ``flush`` runs once when the input stream ends and may emit the
same way; ``cleanup`` runs when the node stops.

Node types resolve by name only through :mod:`zerohop.registry`: classes decorated
with :func:`~zerohop.registry.register_node`, the entry-point group ``zerohop.nodes``
of installed packages (zerohop's own nodes are declared there too), and the modules
listed in ``runtime.toml`` (``[nodes] modules``). A manifest can never make a node
process import anything else.

Examples
--------
A node with a parameter; called directly, as here, it is easy to test:

>>> from pydantic import BaseModel
>>> from zerohop import MultiprocessNode, Text
>>> class Shout(MultiprocessNode):
...     class Params(BaseModel):
...         suffix: str = "!"
...
...     def initialize(self, ctx):
...         ctx.progress(1.0, "ready to shout")
...
...     def process(self, frame):
...         return Text(frame.text.upper() + self.params.suffix)
>>> Shout({"suffix": "?"}).process(Text("hi")).text
'HI?'

Params are validated when the node is made; an error names the field:

>>> Shout({"suffix": 3})
Traceback (most recent call last):
    ...
zerohop.errors.ManifestError: params.suffix: Input should be a valid string (node 'node')

Defined in a module, the class can be given to
:meth:`~zerohop.pipeline.Pipeline.node`, or registered (``@register_node``) so that
manifests can name it.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ValidationError

from .errors import ManifestError

if TYPE_CHECKING:
    from .data import Audio, Frame, Tensor, Video

__all__ = ["MODEL_DIRS_CONTEXT", "MultiprocessNode", "NodeContext", "iter_outputs", "takes_control"]

#: Key of runtime.toml's ``[nodes] model_dirs`` in the context node params are validated
#: with (:meth:`MultiprocessNode.validate_params`; the host's configuration fills it).
MODEL_DIRS_CONTEXT = "model_dirs"


class NodeContext:
    """What a node can do besides returning frames: report progress while it
    initializes, send frames on its own, loan shared memory for zero-copy output.

    The runner creates it; in-process execution gives nodes an equivalent one.
    """

    def __init__(
        self,
        node_id: str,
        session_id: str,
        *,
        progress: Callable[[float | None, str], None],
        emit: Callable[[Frame, str | None], None],
        loan: Callable[[str | None], Any] | None = None,
        threads: int | None = None,
        cancel: Callable[[], int] | None = None,
        cancel_pending: Callable[[], bool] | None = None,
    ) -> None:
        self.node_id = node_id
        self.session_id = session_id
        #: The node's thread budget (``capabilities.cpu.cores``, or runtime.toml's
        #: ``[process] threads_per_node``); None: none set. The usual thread-count
        #: variables (OpenMP, MKL, OpenBLAS, ...) already say it; a node that sizes its
        #: own pools (an onnxruntime session, CTranslate2) should use it.
        self.threads = threads
        self._progress = progress
        self._emit = emit
        self._loan = loan
        self._cancel = cancel
        self._cancel_pending = cancel_pending

    def progress(self, fraction: float | None = None, message: str = "") -> None:
        """Reports initialization progress (``fraction`` in [0, 1]) to the session."""
        if fraction is not None and not 0.0 <= fraction <= 1.0:
            raise ValueError(f"progress fraction must be in [0, 1], got {fraction}")
        self._progress(fraction, message)

    def send(self, frame: Frame, port: str | None = None) -> None:
        """Sends ``frame`` on ``port`` (default: the node's first output) right away."""
        self._emit(frame, port)

    def cancel(self) -> int:
        """Cancels the work in flight downstream of this node — the reply being
        spoken, the frames queued for it — ahead of the frames already waiting in the
        channels (see :mod:`zerohop.cancel`). What this node sends afterwards is
        handled as usual. Returns the cancel's id."""
        if self._cancel is None:
            raise RuntimeError(f"node '{self.node_id}': cancel() needs a running session")
        return self._cancel()

    @property
    def cancelled(self) -> bool:
        """True once a cancel from upstream has reached this node and not yet been
        handled: a ``process`` that works a long time without yielding (a language
        model producing tokens) checks it and returns early."""
        return self._cancel_pending is not None and self._cancel_pending()

    def _sender(self, port: str | None) -> Any:
        if self._loan is None:
            return None
        return self._loan(port)

    def alloc_audio(
        self,
        frames: int,
        *,
        sample_rate: int,
        channels: int = 1,
        dtype: str = "float32",
        port: str | None = None,
    ) -> Audio:
        """An audio frame whose samples live in the output channel's shared memory:
        fill ``.samples`` and return or send it — no copy. Falls back to an ordinary
        array where there is no shared memory (in-process execution)."""
        sender = self._sender(port)
        if sender is None:
            import numpy as np

            from .data import Audio

            shape = (frames,) if channels == 1 else (frames, channels)
            return Audio(np.zeros(shape, dtype=dtype), sample_rate=sample_rate)
        return sender.loan_audio(frames, sample_rate=sample_rate, channels=channels, dtype=dtype)  # type: ignore[no-any-return]

    def alloc_tensor(
        self, shape: tuple[int, ...] | int, dtype: str = "float32", *, port: str | None = None
    ) -> Tensor:
        """A tensor frame in the output channel's shared memory (see ``alloc_audio``)."""
        sender = self._sender(port)
        if sender is None:
            import numpy as np

            from .data import Tensor

            return Tensor(np.zeros(shape, dtype=dtype))
        return sender.loan_tensor(shape, dtype)  # type: ignore[no-any-return]

    def alloc_video(
        self, width: int, height: int, pixel_format: str = "rgb24", *, port: str | None = None
    ) -> Video:
        """A video frame in the output channel's shared memory (see ``alloc_audio``)."""
        sender = self._sender(port)
        if sender is None:
            import numpy as np

            from .data import Video

            shapes = {
                "rgb24": (height, width, 3),
                "rgba": (height, width, 4),
                "gray": (height, width),
            }
            if pixel_format == "yuv420p":
                return Video(
                    np.zeros(width * height * 3 // 2, np.uint8),
                    "yuv420p",
                    width=width,
                    height=height,
                )
            return Video(np.zeros(shapes[pixel_format], np.uint8), pixel_format)  # type: ignore[arg-type]
        return sender.loan_video(width, height, pixel_format)  # type: ignore[no-any-return]


class MultiprocessNode:
    """Base class of pipeline nodes.

    Attributes
    ----------
    Params : type[pydantic.BaseModel] | None
        Declares and validates the node's parameters; ``self.params`` is then an
        instance of it. Without it, ``self.params`` is the plain dict.
    inputs, outputs : tuple[str, ...]
        Port names. Most nodes have one of each (``"in"``, ``"out"``); a node with
        several inputs learns which one a frame came through from ``frame.port``.
    node_type : str
        The name the registry knows it by (set by :func:`register_node`).
    accepts, emits : tuple[str, ...] | None
        Frame kinds (``"audio"``, ``"text"``, ...) the node takes and emits, if fixed:
        a connection whose kinds cannot meet is refused before anything starts.
        ``None`` (the default) means any. Control frames (:class:`~zerohop.Control`:
        cancel a speculation, a deadline) reach ``process`` only when ``accepts``
        names ``"control"``; otherwise the node loop passes them on unchanged on the
        primary output, so they reach every node downstream (native nodes alike).
    input_rate : int | None
        The audio sample rate (Hz) the node needs on its input, if fixed (Whisper,
        Silero VAD: 16000). A ``FastResampleNode`` just before it with its target rate
        omitted or ``"auto"`` resamples to it (negotiated when the pipeline is planned).
        Override :meth:`needs_input_rate` when the rate depends on the params.
    """

    Params: ClassVar[type[BaseModel] | None] = None
    inputs: ClassVar[tuple[str, ...]] = ("in",)
    outputs: ClassVar[tuple[str, ...]] = ("out",)
    accepts: ClassVar[tuple[str, ...] | None] = None
    emits: ClassVar[tuple[str, ...] | None] = None
    input_rate: ClassVar[int | None] = None
    node_type: ClassVar[str]

    def __init__(
        self, params: Mapping[str, Any] | BaseModel | None = None, *, node_id: str = "node"
    ) -> None:
        self.node_id = node_id
        self.params: Any = self.validate_params(params or {}, node_id=node_id)

    @classmethod
    def validate_params(
        cls,
        params: Mapping[str, Any] | BaseModel,
        *,
        node_id: str = "node",
        path: str = "params",
        context: Mapping[str, Any] | None = None,
    ) -> Any:
        """Validates ``params`` against ``Params``; raises :class:`ManifestError` naming
        each bad field by its JSON path (``<path>.<field>``). ``context`` reaches the
        model's validators (the runtime settings they check against)."""
        if cls.Params is None:
            if isinstance(params, BaseModel):
                return params.model_dump()
            return dict(params)
        if isinstance(params, cls.Params) and context is None:
            return params
        data = params.model_dump() if isinstance(params, BaseModel) else dict(params)
        try:
            return cls.Params.model_validate(data, context=context)
        except ValidationError as err:
            fields = [(".".join(str(p) for p in e["loc"]), e["msg"]) for e in err.errors()]
            paths = [(f"{path}.{field}" if field else path, msg) for field, msg in fields]
            raise ManifestError(
                "; ".join(f"{where}: {msg}" for where, msg in paths) + f" (node '{node_id}')",
                node_id=node_id,
                path=paths[0][0],
            ) from None

    @classmethod
    def needs_input_rate(cls, params: Any) -> int | None:
        """The input sample rate this node needs with ``params`` (validated params);
        default: the class's ``input_rate``."""
        return cls.input_rate

    @classmethod
    def params_schema(cls) -> dict[str, Any]:
        """JSON Schema of the parameters (empty object schema without ``Params``)."""
        if cls.Params is None:
            return {"type": "object"}
        return cls.Params.model_json_schema()

    def initialize(self, ctx: NodeContext) -> None:
        """Loads models and opens resources. Runs once, in the node's process."""

    def process(self, frame: Any) -> Any:
        """Handles one input frame; see the module docs for what it may return.
        (Subclasses may annotate ``frame`` with the frame class they take.)"""
        raise NotImplementedError(f"{type(self).__name__} must implement process()")

    def flush(self) -> Any:
        """Called once when every input has ended; may emit the last frames."""
        return None

    def on_cancel(self) -> None:
        """A cancel reached this node (see :mod:`zerohop.cancel`): forget the work in
        flight (buffered input, a half-made reply). The ``process`` in progress has
        already been stopped at its last output; the frames queued for this node that
        the cancel covers are dropped without reaching ``process``."""

    def cleanup(self) -> None:
        """Releases resources when the node stops. Runs after a successful
        ``initialize`` only: a session stopped while this node is still initializing
        ends its process with SIGTERM (nothing has run yet that needs finishing)."""


def takes_control(cls: type[MultiprocessNode]) -> bool:
    """Whether nodes of ``cls`` get control frames in ``process`` (``accepts`` names
    ``"control"``); the node loop passes them on for every other node."""
    return cls.accepts is not None and "control" in cls.accepts


def iter_outputs(result: Any, event_loop: Callable[[], asyncio.AbstractEventLoop]) -> Iterator[Any]:
    """Everything a ``process``/``flush`` result emits, in order: a frame, a
    ``(port, frame)`` pair, ``None`` (nothing), a generator, a coroutine or an async
    generator (driven on ``event_loop()``)."""
    if result is None:
        return
    if inspect.isawaitable(result):
        yield from iter_outputs(event_loop().run_until_complete(result), event_loop)
    elif inspect.isasyncgen(result):
        loop = event_loop()
        while True:
            try:
                item = loop.run_until_complete(anext(result))
            except StopAsyncIteration:
                return
            if item is not None:
                yield item
    elif isinstance(result, tuple) or not isinstance(result, Iterable):
        yield result
    else:
        yield from (item for item in result if item is not None)
