"""The frame codec as Python sees it: every kind round-trips bit-exactly; bad bytes
give FrameError and never a wrong array."""

from __future__ import annotations

import struct
import uuid

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import zerohop
from zerohop import (
    Audio,
    Bytes,
    Control,
    FrameError,
    Json,
    PayloadTooLargeError,
    Tensor,
    Text,
    Video,
)
from zerohop.data import from_bytes

HEADER = zerohop._native.HEADER_LEN


def round_trip(frame: zerohop.Frame) -> zerohop.Frame:
    decoded = from_bytes(frame.to_bytes())
    assert type(decoded) is type(frame)
    return decoded


def test_audio_round_trips() -> None:
    for dtype in ("float32", "int16", "int32", "float64"):
        samples = (np.arange(960) % 100).astype(dtype).reshape(480, 2)
        out = round_trip(Audio(samples, sample_rate=48_000))
        assert isinstance(out, Audio)
        assert out.sample_rate == 48_000 and out.channels == 2
        assert out.samples.dtype == samples.dtype
        np.testing.assert_array_equal(out.samples, samples)


def test_video_round_trips_every_pixel_format() -> None:
    rng = np.random.default_rng(1)
    cases: list[tuple[str, tuple[int, ...], dict[str, int]]] = [
        ("rgb24", (6, 8, 3), {}),
        ("rgba", (6, 8, 4), {}),
        ("gray", (6, 8), {}),
        ("yuv420p", (8 * 6 * 3 // 2,), {"width": 8, "height": 6}),
    ]
    for fmt, shape, size in cases:
        pixels = rng.integers(0, 256, size=shape, dtype=np.uint8)
        out = round_trip(Video(pixels, fmt, **size))  # type: ignore[arg-type]
        assert isinstance(out, Video)
        assert (out.width, out.height, out.pixel_format) == (8, 6, fmt)
        np.testing.assert_array_equal(out.pixels, pixels)


def test_tensor_text_json_bytes_round_trip() -> None:
    array = np.arange(24, dtype=np.float16).reshape(2, 3, 4)
    out = round_trip(Tensor(array))
    assert isinstance(out, Tensor)
    np.testing.assert_array_equal(out.array, array)
    assert out.array.dtype == np.float16
    scalar = round_trip(Tensor(np.float64(2.5)))
    assert isinstance(scalar, Tensor) and scalar.shape == () and scalar.array[()] == 2.5
    text = round_trip(Text("héllo wörld ✓"))
    assert isinstance(text, Text) and text.text == "héllo wörld ✓"
    js = round_trip(Json({"a": [1, 2.5, None], "b": "x"}))
    assert isinstance(js, Json) and js.value == {"a": [1, 2.5, None], "b": "x"}
    raw = round_trip(Bytes(b"\x00\x01\xffdata"))
    assert isinstance(raw, Bytes) and bytes(raw) == b"\x00\x01\xffdata"


def test_metadata_survives() -> None:
    frame = Tensor(np.zeros(3, dtype=np.int8))
    frame.sequence, frame.timestamp_ns, frame.session_id = 17, 123456789, 99
    out = round_trip(frame)
    assert (out.sequence, out.timestamp_ns, out.session_id) == (17, 123456789, 99)


def test_decoded_arrays_are_views_of_the_frame() -> None:
    out = round_trip(Tensor(np.ones(4, dtype=np.float32)))
    assert isinstance(out, Tensor) and out.raw is not None
    # No copy between the frame's payload and the array.
    assert np.shares_memory(out.array, np.asarray(memoryview(out.raw)))


@pytest.mark.parametrize("dtype", [">f4", ">i2", ">u8", ">f8", "<f4"])
def test_byte_swapped_arrays_arrive_as_the_same_numbers(dtype: str) -> None:
    """Regression: a big-endian array went out as its raw bytes under a native dtype name,
    so it arrived as different numbers. It is now swapped to native order once."""
    values = np.arange(1, 9).astype(dtype)
    tensor = round_trip(Tensor(values))
    assert isinstance(tensor, Tensor) and tensor.array.dtype.isnative
    np.testing.assert_array_equal(tensor.array, values)
    if dtype in (">i2", ">f4", ">f8"):
        audio = round_trip(Audio(values, sample_rate=16_000))
        assert isinstance(audio, Audio)
        np.testing.assert_array_equal(audio.samples, values)


def test_byte_swapped_array_crosses_a_channel() -> None:
    name = f"test-swapped-{uuid.uuid4().hex}"
    values = np.linspace(-1, 1, 7).astype(">f4")
    with zerohop.Sender(name) as tx, zerohop.Receiver(name) as rx:
        tx.send(Tensor(values))
        frame = rx.recv(timeout=10)
        assert isinstance(frame, Tensor)
        np.testing.assert_array_equal(frame.array, values)


def test_unsupported_inputs_are_frame_errors() -> None:
    with pytest.raises(FrameError, match="complex128"):
        Tensor(np.zeros(2, dtype=np.complex128))
    with pytest.raises(FrameError, match="supported: float32"):
        Audio(np.zeros(2, dtype=np.uint8), sample_rate=8000)
    with pytest.raises(FrameError, match="sample_rate"):
        Audio(np.zeros(2, dtype=np.float32), sample_rate=0)
    with pytest.raises(FrameError, match="width= and height="):
        Video(np.zeros(12, dtype=np.uint8), "yuv420p")
    with pytest.raises(FrameError, match="JSON"):
        Json(object()).to_bytes()
    with pytest.raises(FrameError, match="at most 8"):
        Tensor(np.zeros((1,) * 9)).to_bytes()


def encoded(shape: tuple[int, ...] = (4,)) -> bytearray:
    return bytearray(
        Tensor(np.arange(int(np.prod(shape)), dtype=np.float32).reshape(shape)).to_bytes()
    )


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda b: b[:60], "truncated"),
        (lambda b: b[:-1], "truncated"),
        (lambda b: b"XXXX" + b[4:], "bad magic"),
        (lambda b: b[:4] + struct.pack("<H", 3) + b[6:], "version 3"),
        (lambda b: b[:6] + bytes([42]) + b[7:], "unknown kind 42"),
        (lambda b: b[:7] + bytes([77]) + b[8:], "unknown dtype 77"),
        (lambda b: b[:64] + struct.pack("<Q", 5) + b[72:], "needs 20 bytes"),
        (lambda b: b[:8] + bytes([9]) + b[9:], "ndim 9"),
    ],
)
def test_malformed_frames_raise_frame_error(mutate: object, message: str) -> None:
    data = mutate(encoded())  # type: ignore[operator]
    with pytest.raises(FrameError, match=message):
        from_bytes(bytes(data))


def test_payload_maximum_is_enforced() -> None:
    data = encoded((1000,))
    with pytest.raises(PayloadTooLargeError, match="exceeds the maximum of 3999"):
        from_bytes(bytes(data), max_payload=3999)
    assert isinstance(from_bytes(bytes(data), max_payload=4000), Tensor)


def test_invalid_utf8_text_is_rejected() -> None:
    data = bytearray(Text("ab").to_bytes())
    data[HEADER] = 0xFF
    with pytest.raises(FrameError, match="UTF-8"):
        from_bytes(bytes(data))


@settings(max_examples=400, deadline=None)
@given(st.binary(min_size=0, max_size=400))
def test_arbitrary_bytes_never_crash(data: bytes) -> None:
    try:
        frame = from_bytes(data)
    except FrameError:
        return
    # Whatever decodes must re-encode to exactly the bytes it came from.
    assert frame.to_bytes() == data[: len(frame.to_bytes())]


@settings(max_examples=300, deadline=None)
@given(
    st.integers(0, 199),
    st.integers(0, 255),
    st.sampled_from(["float32", "int16", "uint8", "float64"]),
    st.lists(st.integers(0, 5), min_size=0, max_size=4),
)
def test_mutated_headers_never_give_a_wrong_array(
    position: int, value: int, dtype: str, shape: list[int]
) -> None:
    array = np.arange(int(np.prod(shape)), dtype=dtype).reshape(shape)
    data = bytearray(Tensor(array).to_bytes())
    if position < len(data):
        data[position] = value
    try:
        frame = from_bytes(bytes(data))
    except FrameError:
        return
    assert isinstance(frame, Tensor | Audio | Video | Text | Json | Bytes)
    # If it decoded, its array covers exactly the payload the header announces.
    raw = frame.raw
    assert raw is not None
    assert memoryview(raw).nbytes == raw.nbytes == len(data) - HEADER


_DIM = st.one_of(st.integers(0, 6), st.sampled_from([2**31, 2**32 - 1, 2**62, 2**64 - 1]))


@settings(max_examples=500, deadline=None)
@given(
    kind=st.integers(0, 8),
    dtype=st.integers(0, 12),
    ndim=st.integers(0, 10),
    pixel_format=st.integers(0, 6),
    fields=st.lists(st.integers(0, 2**32 - 1), min_size=4, max_size=4),
    shape=st.lists(_DIM, min_size=8, max_size=8),
    payload=st.binary(max_size=64),
    declared=st.one_of(st.none(), st.integers(0, 2**64 - 1)),
)
def test_structured_headers_decode_consistently_or_fail_cleanly(
    kind: int,
    dtype: int,
    ndim: int,
    pixel_format: int,
    fields: list[int],
    shape: list[int],
    payload: bytes,
    declared: int | None,
) -> None:
    """Valid magic, version and header length, every other field random (huge dims,
    lying payload lengths): the decoder either builds a frame that matches its bytes or
    raises FrameError — never another exception, never an allocation from a header."""
    data = bytearray(Bytes(b"").to_bytes())
    data[6], data[7], data[8], data[9] = kind, dtype, ndim, pixel_format
    struct.pack_into("<4I", data, 16, *fields)
    struct.pack_into("<Q", data, 56, len(payload) if declared is None else declared)
    struct.pack_into("<8Q", data, 64, *shape)
    data += payload
    try:
        frame = from_bytes(bytes(data), max_payload=1 << 20)
    except FrameError:
        return
    assert frame.to_bytes() == bytes(data)
    raw = frame.raw
    assert raw is not None and memoryview(raw).nbytes == len(payload)


# ------------------------------------------------------------------ the metadata block


def _every_kind_with_metadata() -> list[zerohop.Frame]:
    tags = {"client": "node", "turn": "7"}
    return [
        Audio(np.zeros(8, np.float32), 16000, metadata_json='{"speaker": "a"}', metadata=tags),
        Video(np.zeros((2, 4, 3), np.uint8), frame_number=12, is_keyframe=True, metadata=tags),
        Video(np.arange(50, dtype=np.uint8), "encoded", width=64, height=48, codec="vp8"),
        Tensor(np.ones((2, 3), np.float32), layout="NC", metadata=tags),
        Text("hola", channel="ui", language="es", metadata=tags),
        Json({"a": 1}, schema_type="event", metadata=tags),
        Bytes(b"RIFF", mime_type="audio/wav", metadata=tags),
        Control(
            "cancel_speculation",
            from_timestamp=10,
            to_timestamp=20,
            segment_id="seg",
            timestamp_ms=5,
            control_metadata='{"why": "barge-in"}',
            metadata=tags,
        ),
    ]


_TYPED = (
    "metadata",
    "metadata_json",
    "frame_number",
    "is_keyframe",
    "codec",
    "pixel_format",
    "width",
    "height",
    "layout",
    "channel",
    "language",
    "schema_type",
    "mime_type",
    "action",
    "from_timestamp",
    "to_timestamp",
    "segment_id",
    "timestamp_ms",
    "control_metadata",
)


def _fields(frame: zerohop.Frame) -> dict[str, object]:
    return {name: getattr(frame, name) for name in _TYPED if hasattr(frame, name)}


def test_metadata_and_typed_fields_survive_encoding() -> None:
    for frame in _every_kind_with_metadata():
        back = from_bytes(frame.to_bytes())
        assert type(back) is type(frame)
        assert _fields(back) == _fields(frame), frame
        raw = back.raw
        if raw is not None:  # the payload stays 64-byte aligned after the block
            assert (len(raw.to_bytes()) - raw.nbytes) % 64 == 0


def test_metadata_crosses_a_channel_and_can_be_changed_on_the_way() -> None:
    name = f"meta-{uuid.uuid4().hex[:8]}"
    with zerohop.Sender(name) as tx, zerohop.Receiver(name) as rx:
        for frame in _every_kind_with_metadata():
            tx.send(frame)
            got = rx.recv(timeout=5)
            assert _fields(got) == _fields(frame)
        # A received frame passed on keeps its block; changed, it carries the change.
        tx.send(Text("x", channel="ui", metadata={"a": "1"}))
        got = rx.recv(timeout=5)
        tx.send(got)
        again = rx.recv(timeout=5)
        assert (again.metadata, again.channel) == ({"a": "1"}, "ui")  # type: ignore[attr-defined]
        again.metadata["b"] = "2"
        tx.send(again)
        assert rx.recv(timeout=5).metadata == {"a": "1", "b": "2"}
        # A loan given metadata after it was loaned still carries it (one copy then).
        loan = tx.loan_bytes(3)
        loan.data[:] = b"abc"
        loan.metadata = {"loaned": "yes"}
        tx.send(loan)
        got = rx.recv(timeout=5)
        assert (bytes(got), got.metadata) == (b"abc", {"loaned": "yes"})  # type: ignore[call-overload]


def test_metadata_is_bounded_and_typed() -> None:
    with pytest.raises(FrameError, match=f"cap of {zerohop.data.MAX_META} bytes"):
        Text("x", metadata={"k": "v" * (zerohop.data.MAX_META + 1)}).to_bytes()
    with pytest.raises(FrameError, match="str to str"):
        Text("x", metadata={"k": 1})  # type: ignore[dict-item]
    with pytest.raises(FrameError, match="unknown codec"):
        Video(np.zeros(4, np.uint8), "encoded", codec="mpeg1")
    with pytest.raises(FrameError, match="1-D bytes"):
        Video(np.zeros((2, 2), np.uint8), "encoded")
    with pytest.raises(FrameError, match="unknown control action"):
        Control("reboot")  # type: ignore[arg-type]
    with pytest.raises(FrameError, match="does not belong"):
        Control("batch_hint", deadline_us=3).to_bytes()


def test_a_copy_owns_its_metadata() -> None:
    import copy

    text = Text("x", metadata={"a": "1"})
    twin = copy.copy(text)
    twin.metadata["b"] = "2"
    assert text.metadata == {"a": "1"}


@pytest.mark.parametrize(
    "block",
    [
        b"not json",
        b"[1]",
        b'{"channel": 5}',
        b'{"channel": "\xff"}',
        b'{"numpy": {"order": "Z"}}',
    ],
)
def test_corrupt_metadata_blocks_raise_frame_error(block: bytes) -> None:
    data = bytearray(Bytes(b"abc").to_bytes())
    header_len = (128 + 4 + len(block) + 63) // 64 * 64
    frame = bytearray(header_len) + data[128:]
    frame[:128] = data[:128]
    struct.pack_into("<I", frame, 12, header_len)
    struct.pack_into("<I", frame, 128, len(block))
    frame[132 : 132 + len(block)] = block
    with pytest.raises(FrameError, match="metadata block"):
        from_bytes(bytes(frame))
    # The same block length pointing past the frame's end.
    struct.pack_into("<I", frame, 128, 1 << 20)
    with pytest.raises(FrameError, match=r"cap|header length"):
        from_bytes(bytes(frame))
