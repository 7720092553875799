"""Frames: the data that flows between nodes.

Each class wraps either a numpy array you made (sending it copies it once into shared
memory) or a frame that lives in shared memory: one received from a channel (its array is
a read-only, zero-copy view that keeps the shared memory alive for as long as you hold it)
or one loaned from a :class:`~zerohop.Sender` (its array is writable shared memory; filling
it and sending it copies nothing).

Examples
--------
>>> import numpy as np
>>> from zerohop import Audio, Text, Tensor
>>> a = Audio(np.zeros(1600, dtype=np.float32), sample_rate=16000)
>>> a.duration
0.1
>>> Tensor(np.arange(6, dtype=np.int64).reshape(2, 3)).shape
(2, 3)
>>> Text("hello").text
'hello'

Metadata
--------
Every frame has ``metadata``, a ``dict[str, str]`` of free-form tags (remotemedia's
``DataBuffer.metadata``), and each class has typed fields for what its payload needs said
beside it: ``Text.channel`` / ``language``, ``Json.schema_type``, ``Bytes.mime_type``,
``Tensor.layout``, ``Video.frame_number`` / ``is_keyframe`` / ``codec``,
``Audio.metadata_json``. They travel in the frame's metadata block (encoded, bounded to
``MAX_META`` bytes and validated by the Rust core, the one framing module).

A node's output inherits its input's ``metadata`` unless the node set the output's own
(read or assign ``frame.metadata`` on a new frame to make it its own); an output of the
same kind as its input also inherits the typed fields it leaves unset (a text filter keeps
the text's channel and language). Both executors apply the same rule.

>>> t = Text("hola", channel="ui", language="es", metadata={"turn": "3"})
>>> (t.channel, t.language, t.metadata)
('ui', 'es', {'turn': '3'})
>>> from zerohop import from_bytes
>>> back = from_bytes(t.to_bytes())
>>> (back.channel, back.metadata)
('ui', {'turn': '3'})
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from typing import Any, ClassVar, Literal, TypeAlias, TypedDict, cast, overload

import numpy as np
import numpy.typing as npt

from . import _native
from .errors import FrameError

__all__ = [
    "AUDIO_DTYPES",
    "DTYPES",
    "PIXEL_FORMATS",
    "VIDEO_CODECS",
    "Audio",
    "Bytes",
    "Control",
    "ControlAction",
    "FileInfo",
    "Frame",
    "Json",
    "PixelFormat",
    "Tensor",
    "Text",
    "Video",
    "from_bytes",
    "from_raw",
]

PixelFormat: TypeAlias = Literal["rgb24", "rgba", "yuv420p", "gray", "encoded"]
ControlAction: TypeAlias = Literal["cancel_speculation", "batch_hint", "deadline_warning"]
DTYPES: tuple[str, ...] = tuple(_native.DTYPES)
AUDIO_DTYPES = ("float32", "float64", "int16", "int32")
PIXEL_FORMATS: tuple[str, ...] = tuple(_native.PIXEL_FORMATS)
#: Codecs of encoded video (``Video.codec``).
VIDEO_CODECS: tuple[str, ...] = tuple(_native.VIDEO_CODECS)
#: Largest metadata block of a frame, in bytes of JSON.
MAX_META: int = _native.MAX_META


class FileInfo(TypedDict):
    """Where the bytes of a frame read from a gRPC file reference came from."""

    path: str
    filename: str
    size: int
    offset: int
    length: int
    stream_id: str


# Typed fields an output of the same kind does not inherit from its input: they describe
# one particular encoded payload or file, not the content.
_NOT_INHERITED = frozenset({"metadata", "file", "codec", "is_keyframe", "pixel_format", "numpy"})

Wire: TypeAlias = tuple[str, tuple[int, ...], Any, dict[str, Any]]


# dtype -> its name on the wire. Looked up rather than read from `dtype.name`, which numpy 2
# computes in Python (~2 µs, as much as the rest of a 1 KiB send); the lookup also matches
# native byte order only, which is what frames carry.
_WIRE_NAMES: dict[np.dtype[Any], str] = {np.dtype(name): name for name in DTYPES}


def _checked_array(value: npt.ArrayLike, what: str, allowed: tuple[str, ...] = DTYPES) -> Any:
    array = np.asarray(value)
    name = _WIRE_NAMES.get(array.dtype)
    if name is None and not array.dtype.isnative:
        # A byte-swapped array would arrive as wrong numbers: swap it once here.
        array = array.astype(array.dtype.newbyteorder("="))
        name = _WIRE_NAMES.get(array.dtype)
    if name not in allowed:
        raise FrameError(f"{what} has dtype {array.dtype.name}; supported: {', '.join(allowed)}")
    return array


def _wire_name(array: Any) -> str:
    """The wire name of a checked array's dtype."""
    return _WIRE_NAMES[array.dtype]


def _contiguous(array: Any) -> Any:
    """C-contiguous without a copy when it already is (and 0-d stays 0-d, unlike
    ``np.ascontiguousarray``)."""
    return array if array.flags.c_contiguous else np.ascontiguousarray(array)


class _BlockText:
    """A frame property for an optional str of its metadata block (remotemedia's
    ``TextBuffer.channel``, ``JsonData.schema_type``, ...): ``None`` when absent,
    assigning ``None`` removes it. One descriptor instead of a getter/setter pair per
    field."""

    def __init__(self, doc: str) -> None:
        self.__doc__ = doc
        self.key = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self.key = name

    @overload
    def __get__(self, frame: None, owner: type) -> _BlockText: ...
    @overload
    def __get__(self, frame: Frame, owner: type) -> str | None: ...
    def __get__(self, frame: Frame | None, owner: type) -> _BlockText | str | None:
        if frame is None:
            return self
        return cast("str | None", frame._field(self.key))

    def __set__(self, frame: Frame, value: str | None) -> None:
        if value is not None and not isinstance(value, str):
            raise FrameError(f"{self.key} must be a str or None, got {type(value).__name__}")
        frame._set_field(self.key, value)


class Frame:
    """Base class of every frame.

    Attributes
    ----------
    sequence : int | None
        Sequence number. A sender stamps the next number of its channel unless one is set.
    timestamp_ns : int | None
        ``time.monotonic_ns()`` clock; stamped at send unless set.
    session_id : int
        Session that produced the frame (0 outside a session).
    port : str | None
        Inside a node: the input port the frame arrived on.
    source : str | None
        From a session's outputs: the node (``"node"`` or ``"node.port"``) that made it.
    """

    kind: ClassVar[str]
    __slots__ = (
        "_meta",
        "_raw",
        "_sent",
        "port",
        "sequence",
        "session_id",
        "source",
        "timestamp_ns",
    )

    def __init__(self, metadata: Mapping[str, str] | None = None) -> None:
        self._raw: _native.RawFrame | None = None
        self._sent = False
        # The metadata block (keys as in RawFrame.meta); None: not read or set yet.
        self._meta: dict[str, Any] | None = None
        self.sequence: int | None = None
        self.timestamp_ns: int | None = None
        self.session_id = 0
        self.port: str | None = None
        self.source: str | None = None
        if metadata is not None:
            self.metadata = dict(metadata)

    def _adopt(self, raw: _native.RawFrame) -> None:
        self._raw = raw
        self._sent = False
        self._meta = None
        self.sequence = raw.sequence
        self.timestamp_ns = raw.timestamp_ns
        self.session_id = raw.session_id
        self.port = None
        self.source = None

    def __copy__(self) -> Frame:
        # A copy owns its metadata, as a frame sent on another channel does.
        cls = type(self)
        new = cls.__new__(cls)
        for klass in cls.__mro__:
            for slot in getattr(klass, "__slots__", ()):
                if hasattr(self, slot):
                    setattr(new, slot, getattr(self, slot))
        new._meta = copy.deepcopy(self._meta)
        return new

    # ------------------------------------------------------------------ metadata

    def _block(self) -> dict[str, Any]:
        """The metadata block as a mutable dict, read from the native frame once."""
        if self._meta is None:
            self._meta = dict(self._raw.meta) if self._raw is not None else {}
        return self._meta

    def _field(self, key: str) -> Any:
        if self._meta is None and self._raw is None:
            return None
        return self._block().get(key)

    def _set_field(self, key: str, value: Any) -> None:
        block = self._block()
        if value is None:
            block.pop(key, None)
        else:
            block[key] = value

    @property
    def metadata(self) -> dict[str, str]:
        """Free-form string tags (remotemedia ``DataBuffer.metadata``); a live dict.

        On a new frame, reading or assigning it makes the tags the frame's own: the
        runtime then does not give it its input's.
        """
        return cast("dict[str, str]", self._block().setdefault("metadata", {}))

    @metadata.setter
    def metadata(self, value: Mapping[str, str]) -> None:
        tags = dict(value)
        for key, item in tags.items():
            if not isinstance(key, str) or not isinstance(item, str):
                raise FrameError(
                    f"metadata maps str to str, got {type(key).__name__}: {type(item).__name__}"
                )
        self._block()["metadata"] = tags

    def _meta_for_send(self) -> dict[str, Any] | None:
        """The block to send with the frame; None keeps the native frame's own."""
        return self._meta

    def _inherit(self, source: Frame) -> None:
        """Gives this output frame what its input ``source`` says and it does not: the
        tags, unless it has its own; the typed fields too when it is of the same kind."""
        if self._raw is not None and not self._raw.is_loan:
            return  # a received frame passed on: it has its own block
        if self is source:
            return
        own = self._meta or {}
        theirs = source._block() if (source._meta is not None or source._raw is not None) else {}
        if not theirs:
            return
        block = self._block()
        if "metadata" not in own and theirs.get("metadata"):
            block["metadata"] = dict(theirs["metadata"])
        if type(source) is type(self):
            for key, value in theirs.items():
                if key not in _NOT_INHERITED and key not in block:
                    block[key] = copy.deepcopy(value)

    @property
    def raw(self) -> _native.RawFrame | None:
        """The native frame behind this one, if it lives in shared memory or was decoded."""
        return self._raw

    @property
    def is_shared(self) -> bool:
        """True if the payload is a view into shared memory (received or loaned)."""
        return self._raw is not None and self._raw.is_shared

    @property
    def is_loan(self) -> bool:
        """True for a loaned frame that has not been sent yet."""
        return self._raw is not None and self._raw.is_loan

    def _wire(self) -> Wire:
        """(dtype, shape, payload buffer, header keywords) for a copying send."""
        raise NotImplementedError

    def to_bytes(self) -> bytes:
        """Encodes the frame (header, metadata block, payload) as bytes."""
        if self._raw is not None and not self.is_loan and self._meta is None:
            return self._raw.to_bytes()
        dtype, shape, payload, header = self._wire()
        return _native.encode_frame(
            self.kind,
            dtype,
            shape,
            payload,
            session_id=self.session_id,
            sequence=self.sequence or 0,
            timestamp_ns=self.timestamp_ns or 0,
            meta=self._meta,
            **header,
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._describe()}, sequence={self.sequence})"

    def _describe(self) -> str:
        return ""


class Audio(Frame):
    """PCM audio: ``samples`` is ``(frames,)`` for mono or ``(frames, channels)``
    interleaved, float32/float64/int16/int32.

    Parameters
    ----------
    samples : array_like
        The samples.
    sample_rate : int
        Samples per second per channel.
    metadata_json : str, optional
        JSON text about the audio (remotemedia ``AudioBuffer.metadata_json``).
    metadata : dict[str, str], optional
        Free-form tags (see :attr:`Frame.metadata`).
    """

    kind = "audio"
    __slots__ = ("_samples", "channels", "sample_rate")

    def __init__(
        self,
        samples: npt.ArrayLike,
        sample_rate: int,
        *,
        metadata_json: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(metadata)
        if metadata_json is not None:
            self.metadata_json = metadata_json
        array = _checked_array(samples, "audio", AUDIO_DTYPES)
        if array.ndim not in (1, 2):
            raise FrameError(f"audio must be (frames,) or (frames, channels), got {array.shape}")
        if sample_rate <= 0:
            raise FrameError(f"sample_rate must be positive, got {sample_rate}")
        self._samples = array
        self.sample_rate = int(sample_rate)
        self.channels = 1 if array.ndim == 1 else int(array.shape[1])

    @classmethod
    def _from(cls, raw: _native.RawFrame) -> Audio:
        self = cls.__new__(cls)
        self._adopt(raw)
        self._samples = None
        self.sample_rate = raw.sample_rate
        self.channels = raw.channels
        return self

    @property
    def samples(self) -> npt.NDArray[Any]:
        """The samples as a numpy array (a zero-copy view for shared frames)."""
        if self._samples is None:
            self._samples = np.asarray(self._raw)
        return cast("npt.NDArray[Any]", self._samples)

    metadata_json = _BlockText(
        """JSON text about the audio (remotemedia ``AudioBuffer.metadata_json``)."""
    )

    @property
    def num_frames(self) -> int:
        """Samples per channel."""
        return int(self.samples.shape[0])

    @property
    def duration(self) -> float:
        """Length in seconds."""
        return self.num_frames / self.sample_rate

    def _wire(self) -> Wire:
        array = _contiguous(self.samples)
        return (
            _wire_name(array),
            array.shape,
            array,
            {"sample_rate": self.sample_rate, "channels": self.channels},
        )

    def _describe(self) -> str:
        return f"{self.num_frames} frames x {self.channels} ch @ {self.sample_rate} Hz"


class Video(Frame):
    """One uint8 picture. ``pixels`` is ``(height, width, 3)`` for rgb24,
    ``(height, width, 4)`` for rgba, ``(height, width)`` for gray and the planar
    ``(width*height*3/2,)`` bytes for yuv420p (then give ``width`` and ``height``).

    ``pixel_format="encoded"`` holds one compressed frame instead: ``pixels`` is its
    bitstream as 1-D bytes (opaque: nothing decodes it), ``codec`` one of
    :data:`VIDEO_CODECS`, ``width``/``height`` the picture's size if known.

    ``frame_number``, ``is_keyframe`` and ``codec`` are what remotemedia's ``VideoFrame``
    says beside the pixels (``None`` when unset).
    """

    kind = "video"
    __slots__ = ("_pixels", "height", "pixel_format", "width")

    def __init__(
        self,
        pixels: npt.ArrayLike,
        pixel_format: PixelFormat = "rgb24",
        *,
        width: int | None = None,
        height: int | None = None,
        frame_number: int | None = None,
        is_keyframe: bool | None = None,
        codec: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(metadata)
        array = _checked_array(pixels, "video", ("uint8",))
        if pixel_format not in PIXEL_FORMATS:
            raise FrameError(f"unknown pixel format {pixel_format!r}; use one of {PIXEL_FORMATS}")
        if pixel_format == "encoded":
            if array.ndim != 1:
                raise FrameError(f"encoded video is 1-D bytes, got shape {array.shape}")
            width, height = width or 0, height or 0
        elif pixel_format == "yuv420p":
            if width is None or height is None:
                raise FrameError("yuv420p video needs width= and height=")
        elif array.ndim >= 2:
            height, width = int(array.shape[0]), int(array.shape[1])
        else:
            raise FrameError(
                f"{pixel_format} pixels must be (height, width[, c]), got {array.shape}"
            )
        self._pixels = array
        self.pixel_format: str = pixel_format
        self.width = int(width)
        self.height = int(height)
        if frame_number is not None:
            self.frame_number = frame_number
        if is_keyframe is not None:
            self.is_keyframe = is_keyframe
        if codec is not None:
            self.codec = codec

    @property
    def frame_number(self) -> int | None:
        """The frame's number in its stream."""
        return cast("int | None", self._field("frame_number"))

    @frame_number.setter
    def frame_number(self, value: int | None) -> None:
        if value is not None and (isinstance(value, bool) or not 0 <= int(value) < 2**64):
            raise FrameError(f"frame_number must be an int >= 0, got {value!r}")
        self._set_field("frame_number", None if value is None else int(value))

    @property
    def is_keyframe(self) -> bool:
        """True for a keyframe of an encoded stream."""
        return bool(self._field("is_keyframe"))

    @is_keyframe.setter
    def is_keyframe(self, value: bool) -> None:
        self._set_field("is_keyframe", True if value else None)

    @property
    def codec(self) -> str | None:
        """The codec of an encoded frame (one of :data:`VIDEO_CODECS`)."""
        return cast("str | None", self._field("codec"))

    @codec.setter
    def codec(self, value: str | None) -> None:
        if value is not None and value not in VIDEO_CODECS:
            raise FrameError(f"unknown codec {value!r}; use one of {VIDEO_CODECS}")
        self._set_field("codec", value)

    @classmethod
    def _from(cls, raw: _native.RawFrame) -> Video:
        self = cls.__new__(cls)
        self._adopt(raw)
        self._pixels = None
        self.pixel_format = cast(str, raw.pixel_format)
        self.width = raw.width
        self.height = raw.height
        return self

    @property
    def pixels(self) -> npt.NDArray[np.uint8]:
        """The pixels as a numpy array (a zero-copy view for shared frames)."""
        if self._pixels is None:
            self._pixels = np.asarray(self._raw)
        return cast("npt.NDArray[np.uint8]", self._pixels)

    def _wire(self) -> Wire:
        array = _contiguous(self.pixels)
        meta = {"width": self.width, "height": self.height, "pixel_format": self.pixel_format}
        return "uint8", array.shape, array, meta

    def _describe(self) -> str:
        codec = f" {self.codec}" if self.codec else ""
        return f"{self.width}x{self.height} {self.pixel_format}{codec}"


class Tensor(Frame):
    """An n-dimensional numeric array (up to 8 dimensions). ``layout`` is an optional
    hint such as ``"NCHW"``.

    A tensor that arrived over gRPC as a numpy array goes back as one (same dtype
    spelling, same C or Fortran order); its ``array`` here is always C-ordered.
    """

    kind = "tensor"
    __slots__ = ("_array",)

    def __init__(
        self,
        array: npt.ArrayLike,
        *,
        layout: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(metadata)
        self._array = _checked_array(array, "tensor")
        if layout is not None:
            self.layout = layout

    layout = _BlockText("""A layout hint (remotemedia ``TensorBuffer.layout``).""")

    @classmethod
    def _from(cls, raw: _native.RawFrame) -> Tensor:
        self = cls.__new__(cls)
        self._adopt(raw)
        self._array = None
        return self

    @property
    def array(self) -> npt.NDArray[Any]:
        """The data as a numpy array (a zero-copy view for shared frames)."""
        if self._array is None:
            self._array = np.asarray(self._raw)
        return cast("npt.NDArray[Any]", self._array)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.array.shape)

    @property
    def dtype(self) -> np.dtype[Any]:
        return self.array.dtype

    def _wire(self) -> Wire:
        array = _contiguous(self.array)
        # The payload travels as flat bytes (a 0-d array exports no buffer shape).
        return _wire_name(array), array.shape, array.reshape(-1), {}

    def _describe(self) -> str:
        return f"shape={self.shape}, dtype={self.dtype}"


class Text(Frame):
    """UTF-8 text (a transcript, a reply, a prompt).

    ``channel`` says what the text is for (remotemedia's TTS nodes pass ``"ui"`` text
    through without speaking it); ``language`` its language (``"en"``).
    """

    kind = "text"
    __slots__ = ("_text",)

    def __init__(
        self,
        text: str,
        *,
        channel: str | None = None,
        language: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(metadata)
        if not isinstance(text, str):
            raise FrameError(f"Text needs a str, got {type(text).__name__}")
        self._text: str | None = text
        if channel is not None:
            self.channel = channel
        if language is not None:
            self.language = language

    channel = _BlockText("""What the text is meant for (``"ui"``: shown, not spoken).""")

    language = _BlockText("""The text's language.""")

    @property
    def encoding(self) -> str | None:
        """The encoding a gRPC sender named, when not ``"utf-8"`` (the text is UTF-8)."""
        return cast("str | None", self._field("encoding"))

    @classmethod
    def _from(cls, raw: _native.RawFrame) -> Text:
        self = cls.__new__(cls)
        self._adopt(raw)
        self._text = None
        return self

    @property
    def text(self) -> str:
        if self._text is None:
            self._text = cast(_native.RawFrame, self._raw).text()
        return self._text

    def _wire(self) -> Wire:
        data = self.text.encode()
        return "uint8", (len(data),), data, {}

    def __str__(self) -> str:
        return self.text

    def _describe(self) -> str:
        return repr(self.text if len(self.text) <= 40 else self.text[:37] + "...")


class Json(Frame):
    """A JSON-serialisable value (events, metadata, structured results). ``schema_type``
    names the schema it follows, if any."""

    kind = "json"
    __slots__ = ("_has_value", "_value")

    def __init__(
        self,
        value: Any,
        *,
        schema_type: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(metadata)
        self._value = value
        self._has_value = True
        if schema_type is not None:
            self.schema_type = schema_type

    schema_type = _BlockText(
        """The schema the value follows (remotemedia ``JsonData.schema_type``)."""
    )

    @classmethod
    def _from(cls, raw: _native.RawFrame) -> Json:
        self = cls.__new__(cls)
        self._adopt(raw)
        self._value = None
        self._has_value = False
        return self

    @property
    def value(self) -> Any:
        if not self._has_value:
            text = cast(_native.RawFrame, self._raw).text()
            try:
                self._value = json.loads(text)
            except json.JSONDecodeError as err:
                raise FrameError(f"json frame does not hold valid JSON: {err}") from None
            self._has_value = True
        return self._value

    def _wire(self) -> Wire:
        try:
            data = json.dumps(self.value, separators=(",", ":")).encode()
        except (TypeError, ValueError) as err:
            raise FrameError(f"value is not JSON-serialisable: {err}") from None
        return "uint8", (len(data),), data, {}

    def _describe(self) -> str:
        text = repr(self.value)
        return text if len(text) <= 40 else text[:37] + "..."


class Bytes(Frame):
    """Opaque bytes (encoded media, protobuf, anything); ``mime_type`` says what they
    are. A gRPC file reference arrives as the file's bytes, with :attr:`file` saying
    which file."""

    kind = "bytes"
    __slots__ = ("_data",)

    def __init__(
        self,
        data: bytes | bytearray | memoryview,
        *,
        mime_type: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(metadata)
        self._data: Any = memoryview(data).cast("B")
        if mime_type is not None:
            self.mime_type = mime_type

    mime_type = _BlockText("""The MIME type of the bytes.""")

    @property
    def file(self) -> FileInfo | None:
        """The file reference these bytes were read from (over gRPC), else None."""
        return cast("FileInfo | None", self._field("file"))

    @classmethod
    def _from(cls, raw: _native.RawFrame) -> Bytes:
        self = cls.__new__(cls)
        self._adopt(raw)
        self._data = None
        return self

    @property
    def data(self) -> memoryview:
        """The bytes as a memoryview (zero-copy for shared frames)."""
        if self._data is None:
            self._data = memoryview(cast(_native.RawFrame, self._raw)).cast("B")
        return cast(memoryview, self._data)

    def __bytes__(self) -> bytes:
        return bytes(self.data)

    def _wire(self) -> Wire:
        return "uint8", (self.data.nbytes,), self.data, {}

    def _describe(self) -> str:
        return f"{self.data.nbytes} bytes"


class Control(Frame):
    """A control message (remotemedia ``ControlMessage``), delivered to nodes in order
    with the data it is about.

    Parameters
    ----------
    action : {"cancel_speculation", "batch_hint", "deadline_warning"}, optional
        What it asks; its fields go beside it: ``from_timestamp``/``to_timestamp``
        (cancel_speculation), ``suggested_batch_size`` (batch_hint), ``deadline_us``
        (deadline_warning).
    segment_id : str
        The segment it is about.
    timestamp_ms : int
        When it was sent.
    control_metadata : str
        The message's own metadata string (``ControlMessage.metadata``); the frame's
        tags are :attr:`Frame.metadata` as for every frame.

    Examples
    --------
    >>> from zerohop import Control
    >>> c = Control("cancel_speculation", from_timestamp=0, to_timestamp=500, segment_id="s1")
    >>> (c.action, c.to_timestamp, c.segment_id)
    ('cancel_speculation', 500, 's1')
    """

    kind = "control"
    __slots__ = (
        "action",
        "control_metadata",
        "deadline_us",
        "from_timestamp",
        "segment_id",
        "suggested_batch_size",
        "timestamp_ms",
        "to_timestamp",
    )

    def __init__(
        self,
        action: ControlAction | None = None,
        *,
        segment_id: str = "",
        timestamp_ms: int = 0,
        control_metadata: str = "",
        from_timestamp: int | None = None,
        to_timestamp: int | None = None,
        suggested_batch_size: int | None = None,
        deadline_us: int | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(metadata)
        if action is not None and action not in _native.CONTROL_ACTIONS:
            raise FrameError(
                f"unknown control action {action!r}; use one of {_native.CONTROL_ACTIONS}"
            )
        self.action: str | None = action
        self.segment_id = segment_id
        self.timestamp_ms = timestamp_ms
        self.control_metadata = control_metadata
        self.from_timestamp = from_timestamp
        self.to_timestamp = to_timestamp
        self.suggested_batch_size = suggested_batch_size
        self.deadline_us = deadline_us

    @classmethod
    def _from(cls, raw: _native.RawFrame) -> Control:
        self = cls.__new__(cls)
        self._adopt(raw)
        fields = json.loads(raw.text())  # checked by the core on decode
        self.action = fields.get("action")
        self.segment_id = fields.get("segment_id", "")
        self.timestamp_ms = fields.get("timestamp_ms", 0)
        self.control_metadata = fields.get("metadata", "")
        self.from_timestamp = fields.get("from_timestamp")
        self.to_timestamp = fields.get("to_timestamp")
        self.suggested_batch_size = fields.get("suggested_batch_size")
        self.deadline_us = fields.get("deadline_us")
        # The fields above are the message now: sending re-encodes them (a control
        # message is small), so a node may change one and pass the message on.
        self._meta = dict(raw.meta)
        self._raw = None
        return self

    def _wire(self) -> Wire:
        fields = {
            "action": self.action,
            "from_timestamp": self.from_timestamp,
            "to_timestamp": self.to_timestamp,
            "suggested_batch_size": self.suggested_batch_size,
            "deadline_us": self.deadline_us,
            "segment_id": self.segment_id,
            "timestamp_ms": self.timestamp_ms,
            "metadata": self.control_metadata,
        }
        data = json.dumps({k: v for k, v in fields.items() if v is not None}).encode()
        return "uint8", (len(data),), data, {}

    def _describe(self) -> str:
        return f"{self.action or 'no action'}, segment {self.segment_id!r}"


_CLASSES: dict[str, Any] = {
    cls.kind: cls for cls in (Audio, Video, Tensor, Text, Json, Bytes, Control)
}


def from_raw(raw: _native.RawFrame) -> Frame:
    """Wraps a native frame in the data class of its kind."""
    return cast(Frame, _CLASSES[raw.kind]._from(raw))


def from_bytes(data: bytes | bytearray | memoryview, *, max_payload: int | None = None) -> Frame:
    """Decodes an encoded frame (validating it; raises :class:`FrameError`)."""
    return from_raw(_native.decode_frame(data, max_payload))
