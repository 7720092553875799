"""A Python client for ``zerohop serve`` (or any ``remotemedia.v1`` server): batch and
streaming runs of a manifest, sync (:class:`Client`) and asyncio (:class:`AsyncClient`).

Frames in and out are zerohop data objects (:class:`~zerohop.Audio`,
:class:`~zerohop.Tensor`, :class:`~zerohop.Text`, ...), converted to and from the
protocol's ``DataBuffer``. A manifest is a :class:`~zerohop.manifest.Manifest`, a dict
in manifest.v1 form, a path to a JSON/YAML file, or a :class:`~zerohop.Pipeline`.

Against a running server (``zerohop serve``)::

    from zerohop import Audio
    from zerohop.client import Client

    with Client("127.0.0.1:50051", token="s3cret") as client:
        outputs = client.execute("pipeline.yaml", {"chunker": Audio(pcm, 16000)})
        for frame in client.stream("pipeline.yaml", chunks, on_progress=print):
            play(frame)

Errors: an ``ErrorResponse`` from the server, or a call that fails with a gRPC status,
raises :class:`RemoteError`; ``error_type`` says which (``VALIDATION``,
``NODE_EXECUTION``, ``RESOURCE_LIMIT``, ``AUTHENTICATION``, ...), ``node_id`` names the
failing node and ``path`` the manifest field where the server knows them.

Examples
--------
A frame travels as the protocol's ``DataBuffer``, its typed fields and metadata kept:

>>> from zerohop import Text
>>> from zerohop.client import from_buffer, to_buffer
>>> buffer = to_buffer(Text("hola", language="es", metadata={"turn": "3"}))
>>> buffer.WhichOneof("data_type"), buffer.text.language
('text', 'es')
>>> back = from_buffer(buffer)
>>> back.text, back.language, back.metadata
('hola', 'es', {'turn': '3'})
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self, TypeAlias, cast

import grpc
import grpc.aio
import numpy as np

from ._proto import common_pb2 as common
from ._proto import execution_pb2 as execution
from ._proto import streaming_pb2 as streaming
from .data import (
    Audio,
    Bytes,
    Control,
    ControlAction,
    Frame,
    Json,
    PixelFormat,
    Tensor,
    Text,
    Video,
)
from .errors import ConfigError, FrameError, ZerohopError

if TYPE_CHECKING:
    from .manifest import Manifest, NodeManifest
    from .pipeline import Pipeline

__all__ = [
    "AsyncClient",
    "Client",
    "InitProgress",
    "ManifestLike",
    "RemoteError",
    "ResourceLimits",
    "ServerVersion",
    "ServerWarning",
    "from_buffer",
    "to_buffer",
]

ManifestLike: TypeAlias = "Manifest | Pipeline | Mapping[str, Any] | str | Path"
ProgressCallback: TypeAlias = "Callable[[InitProgress], None]"
#: What ``stream`` sends: a frame for the pipeline's only input, or (input node id, frame).
StreamItem: TypeAlias = "Frame | tuple[str, Frame]"

_EXECUTION = "/remotemedia.v1.PipelineExecutionService/"
_STREAMING = "/remotemedia.v1.StreamingPipelineService/StreamPipeline"
#: Default gRPC message limit: the server's default max payload (64 MiB) plus headroom.
DEFAULT_MAX_MESSAGE = (64 << 20) + (1 << 20)


class ServerWarning(UserWarning):
    """What the server accepted from a manifest but ignores or reinterprets (an unknown
    param, a ``host`` the node runs without, ...), one warning each, naming the JSON
    path: the ``zerohop-warnings`` response metadata of a call or stream. The server
    refuses them instead under ``[nodes] strict_params = true``."""


def _warn(metadata: Iterable[tuple[str, Any]] | None) -> None:
    """Issues a :class:`ServerWarning` for each warning in a response's metadata."""
    for key, value in metadata or ():
        if key == "zerohop-warnings":
            for text in json.loads(value):
                warnings.warn(ServerWarning(text), stacklevel=3)


class RemoteError(ZerohopError):
    """The server reported an error (an ``ErrorResponse`` or a gRPC status)."""

    kind = "remote"

    def __init__(
        self,
        message: str,
        *,
        error_type: str = "INTERNAL",
        node_id: str | None = None,
        path: str | None = None,
        traceback: str = "",
        status: str | None = None,
    ) -> None:
        super().__init__(message)
        self.error_type = error_type
        self.node_id = node_id
        self.path = path
        self.traceback = traceback
        #: The gRPC status code name (``UNAUTHENTICATED``) when the call failed with one.
        self.status = status


@dataclass(frozen=True)
class InitProgress:
    """One node's initialization progress, reported while a stream starts."""

    node_id: str
    fraction: float | None
    message: str


@dataclass(frozen=True)
class ServerVersion:
    """What ``GetVersion`` reports."""

    protocol_version: str
    runtime_version: str
    node_types: list[str]
    compatible: bool


# ---------------------------------------------------------------------- conversions

_AUDIO_FORMATS = {
    "float32": common.AUDIO_FORMAT_F32,
    "int16": common.AUDIO_FORMAT_I16,
    "int32": common.AUDIO_FORMAT_I32,
}
_AUDIO_DTYPES = {v: k for k, v in _AUDIO_FORMATS.items()}
_TENSOR_DTYPES = {
    "float32": common.TENSOR_DTYPE_F32,
    "float16": common.TENSOR_DTYPE_F16,
    "int32": common.TENSOR_DTYPE_I32,
    "int8": common.TENSOR_DTYPE_I8,
    "uint8": common.TENSOR_DTYPE_U8,
}
_TENSOR_NAMES = {v: k for k, v in _TENSOR_DTYPES.items()}
_PIXEL_FORMATS: dict[PixelFormat, Any] = {
    "rgb24": common.PIXEL_FORMAT_RGB24,
    "rgba": common.PIXEL_FORMAT_RGBA32,
    "yuv420p": common.PIXEL_FORMAT_YUV420P,
    "gray": common.PIXEL_FORMAT_GRAY8,
    "encoded": common.PIXEL_FORMAT_ENCODED,
}
_PIXEL_NAMES = {v: k for k, v in _PIXEL_FORMATS.items()}
_PIXEL_NAMES[common.PIXEL_FORMAT_I420] = "yuv420p"
_CODECS: dict[str, Any] = {
    "vp8": common.VIDEO_CODEC_VP8,
    "h264": common.VIDEO_CODEC_H264,
    "av1": common.VIDEO_CODEC_AV1,
}
_CODEC_NAMES = {v: k for k, v in _CODECS.items()}


def to_buffer(frame: Frame) -> common.DataBuffer:
    """The ``DataBuffer`` that carries ``frame``, with its metadata and typed fields
    (float64 audio is sent as float32)."""
    buffer = _payload_buffer(frame)
    buffer.metadata.update(frame._field("metadata") or {})  # no reading-makes-it-own
    return buffer


def _payload_buffer(frame: Frame) -> common.DataBuffer:
    if isinstance(frame, Audio):
        samples = frame.samples
        if samples.dtype == np.float64:
            samples = samples.astype(np.float32)
        data = np.ascontiguousarray(samples, dtype=samples.dtype.newbyteorder("<"))
        audio = common.AudioBuffer(
            samples=data.tobytes(),
            sample_rate=frame.sample_rate,
            channels=frame.channels,
            format=_AUDIO_FORMATS[str(data.dtype)],
            num_samples=frame.num_frames,
        )
        if frame.metadata_json is not None:
            audio.metadata_json = frame.metadata_json.encode()
        return common.DataBuffer(audio=audio)
    if isinstance(frame, Video):
        return common.DataBuffer(
            video=common.VideoFrame(
                pixel_data=np.ascontiguousarray(frame.pixels).tobytes(),
                width=frame.width,
                height=frame.height,
                format=_PIXEL_FORMATS[cast(PixelFormat, frame.pixel_format)],
                frame_number=frame.frame_number or 0,
                is_keyframe=frame.is_keyframe,
                codec=_CODECS.get(frame.codec or "", common.VIDEO_CODEC_UNSPECIFIED),
            )
        )
    if isinstance(frame, Tensor):
        array = np.ascontiguousarray(frame.array)
        name = str(array.dtype)
        if name in _TENSOR_DTYPES:
            return common.DataBuffer(
                tensor=common.TensorBuffer(
                    data=array.tobytes(),
                    shape=array.shape,
                    dtype=_TENSOR_DTYPES[name],
                    layout=frame.layout or "",
                )
            )
        return common.DataBuffer(
            numpy=common.NumpyBuffer(
                data=array.tobytes(),
                shape=array.shape,
                dtype=array.dtype.str,
                strides=array.strides,
                c_contiguous=True,
                f_contiguous=bool(array.flags.f_contiguous),
            )
        )
    if isinstance(frame, Text):
        return common.DataBuffer(
            text=common.TextBuffer(
                text_data=frame.text.encode(),
                encoding=frame.encoding or "utf-8",
                language=frame.language or "",
                channel=frame.channel or "",
            )
        )
    if isinstance(frame, Json):
        return common.DataBuffer(
            json=common.JsonData(
                json_payload=json.dumps(frame.value), schema_type=frame.schema_type or ""
            )
        )
    if isinstance(frame, Bytes):
        return common.DataBuffer(
            binary=common.BinaryBuffer(data=bytes(frame), mime_type=frame.mime_type or "")
        )
    if isinstance(frame, Control):
        control = common.ControlMessage(
            segment_id=frame.segment_id,
            timestamp_ms=frame.timestamp_ms,
            metadata=frame.control_metadata,
        )
        if frame.action == "cancel_speculation":
            control.cancel_speculation.from_timestamp = frame.from_timestamp or 0
            control.cancel_speculation.to_timestamp = frame.to_timestamp or 0
        elif frame.action == "batch_hint":
            control.batch_hint.suggested_batch_size = frame.suggested_batch_size or 0
        elif frame.action == "deadline_warning":
            control.deadline_warning.deadline_us = frame.deadline_us or 0
        return common.DataBuffer(control=control)
    raise FrameError(f"cannot send a {type(frame).__name__} frame")


def from_buffer(buffer: common.DataBuffer) -> Frame:
    """The zerohop frame a ``DataBuffer`` carries, with its metadata and typed fields."""
    frame = _frame_of(buffer)
    if buffer.metadata:
        frame.metadata = dict(buffer.metadata)
    return frame


def _frame_of(buffer: common.DataBuffer) -> Frame:
    which = buffer.WhichOneof("data_type")
    if which == "audio":
        audio = buffer.audio
        dtype = _AUDIO_DTYPES.get(audio.format)
        if dtype is None:
            raise FrameError(f"unsupported audio format {audio.format}")
        samples = np.frombuffer(audio.samples, dtype=np.dtype(dtype).newbyteorder("<"))
        if audio.channels > 1:
            samples = samples.reshape(-1, audio.channels)
        metadata_json = audio.metadata_json.decode() if audio.HasField("metadata_json") else None
        return Audio(samples, audio.sample_rate, metadata_json=metadata_json)
    if which == "video":
        video = buffer.video
        pixel_format = _PIXEL_NAMES.get(video.format)
        if pixel_format is None:
            raise FrameError(f"unsupported pixel format {video.format}")
        pixels = np.frombuffer(video.pixel_data, dtype=np.uint8)
        fields: dict[str, Any] = {
            "frame_number": video.frame_number or None,  # proto3: 0 is "not set"
            "is_keyframe": video.is_keyframe,
            "codec": _CODEC_NAMES.get(video.codec),
        }
        if pixel_format in ("yuv420p", "encoded"):
            return Video(pixels, pixel_format, width=video.width, height=video.height, **fields)
        planes = {"rgb24": (3,), "rgba": (4,), "gray": ()}[pixel_format]
        return Video(pixels.reshape(video.height, video.width, *planes), pixel_format, **fields)
    if which == "tensor":
        name = _TENSOR_NAMES.get(buffer.tensor.dtype)
        if name is None:
            raise FrameError(f"unsupported tensor dtype {buffer.tensor.dtype}")
        tensor = _array(buffer.tensor.data, name, buffer.tensor.shape)
        tensor.layout = buffer.tensor.layout or None
        return tensor
    if which == "numpy":
        numpy = buffer.numpy
        fortran = numpy.f_contiguous and not numpy.c_contiguous
        array = np.frombuffer(numpy.data, dtype=np.dtype(numpy.dtype))
        return Tensor(array.reshape(tuple(numpy.shape), order="F" if fortran else "C"))
    if which == "text":
        text = buffer.text
        return Text(
            text.text_data.decode(text.encoding or "utf-8"),
            channel=text.channel or None,
            language=text.language or None,
        )
    if which == "json":
        return Json(
            json.loads(buffer.json.json_payload), schema_type=buffer.json.schema_type or None
        )
    if which == "binary":
        return Bytes(buffer.binary.data, mime_type=buffer.binary.mime_type or None)
    if which == "control":
        control = buffer.control
        action = control.WhichOneof("message_type")
        # The action's message fields are Control's keywords of the same names.
        message = getattr(control, action) if action is not None else None
        fields = (
            {f.name: getattr(message, f.name) for f in message.DESCRIPTOR.fields}
            if message is not None
            else {}
        )
        return Control(
            cast("ControlAction | None", action),
            segment_id=control.segment_id,
            timestamp_ms=control.timestamp_ms,
            control_metadata=control.metadata,
            **fields,
        )
    raise FrameError(f"cannot receive a DataBuffer of type {which!r}")


def _array(data: bytes, dtype: str, shape: Iterable[int]) -> Tensor:
    return Tensor(np.frombuffer(data, dtype=np.dtype(dtype)).reshape(tuple(shape)))


def _manifest_message(manifest: ManifestLike) -> execution.PipelineManifest:
    """A ``PipelineManifest`` from any manifest form (validated locally first, so that
    a typo fails here with the field's path rather than on the server)."""
    from .manifest import Manifest, load_manifest
    from .pipeline import Pipeline

    if isinstance(manifest, Pipeline):
        parsed = Manifest.parse(manifest.to_manifest())
    elif isinstance(manifest, Manifest):
        parsed = manifest
    elif isinstance(manifest, str | Path):
        parsed = load_manifest(manifest)
    else:
        parsed = Manifest.parse(dict(manifest))
    meta = parsed.metadata
    return execution.PipelineManifest(
        version=parsed.version,
        metadata=execution.ManifestMetadata(
            name=meta.name, description=meta.description or "", created_at=meta.created_at or ""
        ),
        nodes=[_node_message(i, node) for i, node in enumerate(parsed.nodes)],
        connections=[
            execution.Connection(**{"from": c.source, "to": c.target}) for c in parsed.connections
        ],
    )


#: A manifest's ``runtime_hint`` as remotemedia.v1 spells it; zerohop's own ``native`` /
#: ``rust`` / ``python`` have no value there.
_RUNTIME_HINTS = {
    "auto": execution.RUNTIME_HINT_AUTO,
    "cpython": execution.RUNTIME_HINT_CPYTHON,
    "python": execution.RUNTIME_HINT_CPYTHON,
    "rustpython": execution.RUNTIME_HINT_RUSTPYTHON,
    "cpython_wasm": execution.RUNTIME_HINT_CPYTHON_WASM,
}


def _node_message(index: int, node: NodeManifest) -> execution.NodeManifest:
    """Every field of ``node`` that remotemedia.v1 carries; one it cannot carry is a
    ``ConfigError`` naming it, never dropped unsaid."""
    from google.protobuf import json_format

    path = f"nodes[{index}]"
    message = execution.NodeManifest(
        id=node.id,
        node_type=node.node_type,
        params=json.dumps(node.params),
        is_streaming=bool(node.is_streaming),
        host=node.host or "",
    )
    if node.runtime_hint is not None:
        hint = _RUNTIME_HINTS.get(node.runtime_hint.lower())
        if hint is None:
            raise ConfigError(
                f"{path}.runtime_hint: {node.runtime_hint!r} has no remotemedia.v1 value "
                f"(it takes {', '.join(_RUNTIME_HINTS)}); leave it out to let the server choose"
            )
        message.runtime_hint = hint
    if node.capabilities is not None:
        try:
            json_format.ParseDict(node.capabilities, message.capabilities)
        except json_format.ParseError as err:
            raise ConfigError(f"{path}.capabilities: {err}") from None
    return message


@dataclass(frozen=True)
class ResourceLimits:
    """What a request asks of its session (remotemedia.v1 ``ResourceLimits``; 0: not
    asked): ``max_memory_bytes`` lowers the session's memory limit (the operator's, if
    lower, wins), ``max_timeout_ms`` is its deadline (``DEADLINE_EXCEEDED``, every node
    stopped), ``max_audio_samples`` caps one input audio buffer (``RESOURCE_LIMIT``)."""

    max_memory_bytes: int = 0
    max_timeout_ms: int = 0
    max_audio_samples: int = 0

    def message(self) -> Any:
        return common.ResourceLimits(
            max_memory_bytes=self.max_memory_bytes,
            max_timeout_ms=self.max_timeout_ms,
            max_audio_samples=self.max_audio_samples,
        )


def _execute_request(
    manifest: ManifestLike, inputs: Mapping[str, Frame], limits: ResourceLimits | None = None
) -> Any:
    return execution.ExecuteRequest(
        manifest=_manifest_message(manifest),
        data_inputs={node: to_buffer(frame) for node, frame in inputs.items()},
        client_version="zerohop-client",
        resource_limits=limits.message() if limits else None,
    )


def _outputs(response: execution.ExecuteResponse) -> dict[str, Frame]:
    if response.WhichOneof("outcome") == "error":
        raise _remote(response.error)
    outputs = {}
    for label, buffer in response.result.data_outputs.items():
        frame = from_buffer(buffer)
        frame.source = label
        outputs[label] = frame
    return outputs


def _remote(error: common.ErrorResponse) -> RemoteError:
    error_type = common.ErrorType.Name(error.error_type).removeprefix("ERROR_TYPE_")
    return RemoteError(
        error.message,
        error_type=error_type,
        node_id=error.failing_node_id or None,
        path=error.context or None,
        traceback=error.stack_trace,
    )


_STATUS_TYPES = {
    grpc.StatusCode.UNAUTHENTICATED: "AUTHENTICATION",
    grpc.StatusCode.RESOURCE_EXHAUSTED: "RESOURCE_LIMIT",
    # tonic's answer to a message over the server's size limit
    grpc.StatusCode.OUT_OF_RANGE: "RESOURCE_LIMIT",
    grpc.StatusCode.INVALID_ARGUMENT: "VALIDATION",
}


def _status_error(err: grpc.RpcError) -> RemoteError:
    code = err.code()
    return RemoteError(
        f"{code.name}: {err.details()}",
        error_type=_STATUS_TYPES.get(code, "INTERNAL"),
        status=code.name,
    )


def _stream_requests(
    manifest: ManifestLike,
    frames: Iterable[StreamItem],
    chunk_size: int,
    limits: ResourceLimits | None = None,
) -> Iterator[streaming.StreamRequest]:
    yield streaming.StreamRequest(
        init=streaming.StreamInit(
            manifest=_manifest_message(manifest),
            client_version="zerohop-client",
            expected_chunk_size=chunk_size,
            report_progress=True,
            resource_limits=limits.message() if limits else None,
        )
    )
    for sequence, item in enumerate(frames):
        yield _chunk(item, sequence)
    yield streaming.StreamRequest(
        control=streaming.StreamControl(command=streaming.StreamControl.COMMAND_CLOSE)
    )


def _chunk(item: StreamItem, sequence: int) -> streaming.StreamRequest:
    node_id, frame = item if isinstance(item, tuple) else ("", item)
    return streaming.StreamRequest(
        data_chunk=streaming.DataChunk(node_id=node_id, buffer=to_buffer(frame), sequence=sequence)
    )


class _Responses:
    """Turns stream responses into frames, progress callbacks and errors."""

    def __init__(self, on_progress: ProgressCallback | None) -> None:
        self.on_progress = on_progress
        self.session_id: str | None = None
        self.closed_reason: str | None = None

    def frames(self, response: streaming.StreamResponse) -> list[Frame]:
        which = response.WhichOneof("response")
        if which == "result":
            out = []
            for label, buffer in response.result.data_outputs.items():
                frame = from_buffer(buffer)
                frame.source = label
                out.append(frame)
            return out
        if which == "init_progress":
            p = response.init_progress
            if self.on_progress is not None:
                fraction = p.fraction if p.HasField("fraction") else None
                self.on_progress(InitProgress(p.node_id, fraction, p.message))
        elif which == "ready":
            self.session_id = response.ready.session_id
        elif which == "error":
            raise _remote(response.error)
        elif which == "closed":
            self.closed_reason = response.closed.reason
            if self.closed_reason not in _CLOSED_AS_ASKED:
                # The server ended the stream early (a drain that timed out): what the
                # client sent after the last result is lost, so this is no clean end.
                raise RemoteError(
                    f"the server closed the stream: {self.closed_reason}",
                    error_type="UNAVAILABLE",
                    status="UNAVAILABLE",
                )
        return []


#: StreamClosed reasons of a stream that ended as its client asked.
_CLOSED_AS_ASKED = frozenset({"completed", "cancelled"})


def _methods(channel: Any) -> tuple[Any, Any, Any]:
    """ExecutePipeline, GetVersion and StreamPipeline on ``channel`` (sync or aio)."""
    return (
        channel.unary_unary(
            _EXECUTION + "ExecutePipeline",
            request_serializer=execution.ExecuteRequest.SerializeToString,
            response_deserializer=execution.ExecuteResponse.FromString,
        ),
        channel.unary_unary(
            _EXECUTION + "GetVersion",
            request_serializer=execution.VersionRequest.SerializeToString,
            response_deserializer=execution.VersionResponse.FromString,
        ),
        channel.stream_stream(
            _STREAMING,
            request_serializer=streaming.StreamRequest.SerializeToString,
            response_deserializer=streaming.StreamResponse.FromString,
        ),
    )


def _channel_options(max_message: int) -> list[tuple[str, int]]:
    return [
        ("grpc.max_send_message_length", max_message),
        ("grpc.max_receive_message_length", max_message),
    ]


def _credentials(tls_ca: str | os.PathLike[str] | bool | None) -> grpc.ChannelCredentials | None:
    """TLS credentials for ``tls_ca``: a PEM file of the CA certificates to trust, True
    for the system's, None or False for a plain connection."""
    if tls_ca is None or tls_ca is False:
        return None
    if tls_ca is True:
        return grpc.ssl_channel_credentials()
    try:
        roots = Path(tls_ca).read_bytes()
    except OSError as err:
        raise ConfigError(f"TLS CA bundle {tls_ca}: {err.strerror}") from None
    return grpc.ssl_channel_credentials(root_certificates=roots)


class Client:
    """A blocking client. ``address`` is ``host:port``; ``token`` is sent as a bearer
    token; ``tls_ca`` makes the connection TLS, trusting the CA certificates of that PEM
    file (True: the system's). Use it as a context manager (or call :meth:`close`)."""

    def __init__(
        self,
        address: str,
        token: str | None = None,
        *,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE,
        tls_ca: str | os.PathLike[str] | bool | None = None,
    ) -> None:
        self.address = address
        self._metadata = [("authorization", f"Bearer {token}")] if token else []
        options = _channel_options(max_message_bytes)
        credentials = _credentials(tls_ca)
        self._channel = (
            grpc.insecure_channel(address, options=options)
            if credentials is None
            else grpc.secure_channel(address, credentials, options=options)
        )
        self._execute, self._version, self._stream = _methods(self._channel)

    def version(self, timeout: float | None = None) -> ServerVersion:
        """The server's protocol and runtime versions and its node types."""
        try:
            response = self._version(
                execution.VersionRequest(client_version="zerohop-client"),
                metadata=self._metadata,
                timeout=timeout,
            )
        except grpc.RpcError as err:
            raise _status_error(err) from None
        return _version(response)

    def execute(
        self,
        manifest: ManifestLike,
        inputs: Mapping[str, Frame],
        *,
        timeout: float | None = None,
        limits: ResourceLimits | None = None,
    ) -> dict[str, Frame]:
        """Runs ``manifest`` once: ``inputs`` maps input node ids to frames; returns the
        outputs by output label (each frame's ``source``). Several frames of one output
        come back concatenated (audio) or as ``label[1]``, ``label[2]``, ...
        ``limits``: what the request asks of its session (:class:`ResourceLimits`)."""
        request = _execute_request(manifest, inputs, limits)
        try:
            response, call = self._execute.with_call(
                request, metadata=self._metadata, timeout=timeout
            )
        except grpc.RpcError as err:
            raise _status_error(err) from None
        _warn(call.initial_metadata())
        return _outputs(response)

    def stream(
        self,
        manifest: ManifestLike,
        frames: Iterable[StreamItem],
        *,
        on_progress: ProgressCallback | None = None,
        chunk_size: int = 0,
        limits: ResourceLimits | None = None,
    ) -> Iterator[Frame]:
        """Streams ``frames`` (a frame, or ``(input node id, frame)`` when the pipeline
        has several inputs) through a session and yields the output frames as they come
        (``frame.source`` names the output). ``on_progress`` sees each node's
        initialization. Leaving the loop early cancels the session on the server."""
        requests = _stream_requests(manifest, frames, chunk_size, limits)
        call = self._stream(requests, metadata=self._metadata)
        handler = _Responses(on_progress)
        try:
            for i, response in enumerate(call):
                if i == 0:
                    _warn(call.initial_metadata())
                yield from handler.frames(response)
        except grpc.RpcError as err:
            raise _status_error(err) from None
        finally:
            call.cancel()

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class AsyncClient:
    """:class:`Client` for asyncio (``grpc.aio``); use ``async with``."""

    def __init__(
        self,
        address: str,
        token: str | None = None,
        *,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE,
        tls_ca: str | os.PathLike[str] | bool | None = None,
    ) -> None:
        self.address = address
        self._metadata = [("authorization", f"Bearer {token}")] if token else []
        options = _channel_options(max_message_bytes)
        credentials = _credentials(tls_ca)
        self._channel = (
            grpc.aio.insecure_channel(address, options=options)
            if credentials is None
            else grpc.aio.secure_channel(address, credentials, options=options)
        )
        self._execute, self._version, self._stream = _methods(self._channel)

    async def version(self, timeout: float | None = None) -> ServerVersion:
        """See :meth:`Client.version`."""
        try:
            response = await self._version(
                execution.VersionRequest(client_version="zerohop-client"),
                metadata=self._metadata,
                timeout=timeout,
            )
        except grpc.RpcError as err:
            raise _status_error(err) from None
        return _version(response)

    async def execute(
        self,
        manifest: ManifestLike,
        inputs: Mapping[str, Frame],
        *,
        timeout: float | None = None,
        limits: ResourceLimits | None = None,
    ) -> dict[str, Frame]:
        """See :meth:`Client.execute`."""
        request = _execute_request(manifest, inputs, limits)
        try:
            call = self._execute(request, metadata=self._metadata, timeout=timeout)
            response = await call
            _warn(await call.initial_metadata())
        except grpc.RpcError as err:
            raise _status_error(err) from None
        return _outputs(response)

    async def stream(
        self,
        manifest: ManifestLike,
        frames: AsyncIterable[StreamItem] | Iterable[StreamItem],
        *,
        on_progress: ProgressCallback | None = None,
        chunk_size: int = 0,
        limits: ResourceLimits | None = None,
    ) -> AsyncIterator[Frame]:
        """See :meth:`Client.stream`; ``frames`` may be an async iterable."""

        async def requests() -> AsyncIterator[streaming.StreamRequest]:
            head = _stream_requests(manifest, (), chunk_size, limits)
            yield next(head)
            sequence = 0
            if isinstance(frames, AsyncIterable):
                async for item in frames:
                    yield _chunk(item, sequence)
                    sequence += 1
            else:
                for item in frames:
                    yield _chunk(item, sequence)
                    sequence += 1
            for request in head:
                yield request

        call = self._stream(requests(), metadata=self._metadata)
        handler = _Responses(on_progress)
        try:
            _warn(await call.initial_metadata())
            async for response in call:
                for frame in handler.frames(response):
                    yield frame
        except grpc.RpcError as err:
            raise _status_error(err) from None
        finally:
            call.cancel()

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


def _version(response: execution.VersionResponse) -> ServerVersion:
    info = response.version_info
    return ServerVersion(
        protocol_version=info.protocol_version,
        runtime_version=info.runtime_version,
        node_types=list(info.supported_node_types),
        compatible=response.compatible,
    )
