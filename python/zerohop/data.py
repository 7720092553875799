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
"""

from __future__ import annotations

import json
from typing import Any, ClassVar, Literal, TypeAlias, cast

import numpy as np
import numpy.typing as npt

from . import _native
from .errors import FrameError

__all__ = [
    "AUDIO_DTYPES",
    "DTYPES",
    "PIXEL_FORMATS",
    "Audio",
    "Bytes",
    "Frame",
    "Json",
    "PixelFormat",
    "Tensor",
    "Text",
    "Video",
    "from_bytes",
    "from_raw",
]

PixelFormat: TypeAlias = Literal["rgb24", "rgba", "yuv420p", "gray"]
DTYPES: tuple[str, ...] = tuple(_native.DTYPES)
AUDIO_DTYPES = ("float32", "float64", "int16", "int32")
PIXEL_FORMATS: tuple[str, ...] = tuple(_native.PIXEL_FORMATS)

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
    __slots__ = ("_raw", "_sent", "port", "sequence", "session_id", "source", "timestamp_ns")

    def __init__(self) -> None:
        self._raw: _native.RawFrame | None = None
        self._sent = False
        self.sequence: int | None = None
        self.timestamp_ns: int | None = None
        self.session_id = 0
        self.port: str | None = None
        self.source: str | None = None

    def _adopt(self, raw: _native.RawFrame) -> None:
        self._raw = raw
        self._sent = False
        self.sequence = raw.sequence
        self.timestamp_ns = raw.timestamp_ns
        self.session_id = raw.session_id
        self.port = None
        self.source = None

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
        """Encodes the frame (header + payload) as bytes."""
        if self._raw is not None and not self.is_loan:
            return self._raw.to_bytes()
        dtype, shape, payload, meta = self._wire()
        return _native.encode_frame(
            self.kind,
            dtype,
            shape,
            payload,
            session_id=self.session_id,
            sequence=self.sequence or 0,
            timestamp_ns=self.timestamp_ns or 0,
            **meta,
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
    """

    kind = "audio"
    __slots__ = ("_samples", "channels", "sample_rate")

    def __init__(self, samples: npt.ArrayLike, sample_rate: int) -> None:
        super().__init__()
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
    ``(width*height*3/2,)`` bytes for yuv420p (then give ``width`` and ``height``)."""

    kind = "video"
    __slots__ = ("_pixels", "height", "pixel_format", "width")

    def __init__(
        self,
        pixels: npt.ArrayLike,
        pixel_format: PixelFormat = "rgb24",
        *,
        width: int | None = None,
        height: int | None = None,
    ) -> None:
        super().__init__()
        array = _checked_array(pixels, "video", ("uint8",))
        if pixel_format not in PIXEL_FORMATS:
            raise FrameError(f"unknown pixel format {pixel_format!r}; use one of {PIXEL_FORMATS}")
        if pixel_format == "yuv420p":
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
        return f"{self.width}x{self.height} {self.pixel_format}"


class Tensor(Frame):
    """An n-dimensional numeric array (up to 8 dimensions)."""

    kind = "tensor"
    __slots__ = ("_array",)

    def __init__(self, array: npt.ArrayLike) -> None:
        super().__init__()
        self._array = _checked_array(array, "tensor")

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
    """UTF-8 text (a transcript, a reply, a prompt)."""

    kind = "text"
    __slots__ = ("_text",)

    def __init__(self, text: str) -> None:
        super().__init__()
        if not isinstance(text, str):
            raise FrameError(f"Text needs a str, got {type(text).__name__}")
        self._text: str | None = text

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
    """A JSON-serialisable value (events, metadata, structured results)."""

    kind = "json"
    __slots__ = ("_has_value", "_value")

    def __init__(self, value: Any) -> None:
        super().__init__()
        self._value = value
        self._has_value = True

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
    """Opaque bytes (encoded media, protobuf, anything)."""

    kind = "bytes"
    __slots__ = ("_data",)

    def __init__(self, data: bytes | bytearray | memoryview) -> None:
        super().__init__()
        self._data: Any = memoryview(data).cast("B")

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


_CLASSES: dict[str, Any] = {cls.kind: cls for cls in (Audio, Video, Tensor, Text, Json, Bytes)}


def from_raw(raw: _native.RawFrame) -> Frame:
    """Wraps a native frame in the data class of its kind."""
    return cast(Frame, _CLASSES[raw.kind]._from(raw))


def from_bytes(data: bytes | bytearray | memoryview, *, max_payload: int | None = None) -> Frame:
    """Decodes an encoded frame (validating it; raises :class:`FrameError`)."""
    return from_raw(_native.decode_frame(data, max_payload))
