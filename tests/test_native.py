"""Native Rust nodes in the host, mixed with Python node processes over the same
shared-memory channels: AudioChunkerNode → Python → FastResampleNode → Python."""

from __future__ import annotations

import numpy as np
import pytest

import zerohop
from zerohop import Audio, ManifestError, Pipeline


def sine(freq: float, rate: int, seconds: float) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def frequency(samples: np.ndarray, rate: int) -> float:
    """Zero-crossing frequency estimate."""
    crossings = np.count_nonzero(np.diff(np.signbit(samples)))
    return crossings / 2 / (len(samples) / rate)


def test_mixed_native_and_python_pipeline() -> None:
    pipe = (
        Pipeline("mixed")
        .node("chunk", "AudioChunkerNode", chunk_size=480)
        .node("gain", "Scale", factor=0.5)
        .node(
            "resample", "FastResampleNode", source_rate=48_000, target_rate=16_000, quality="high"
        )
        .node("echo", "Echo")
        .connect("chunk", "gain", "resample", "echo")
    )
    audio = sine(440, 48_000, 1.0)
    inputs = [Audio(part, sample_rate=48_000) for part in np.array_split(audio, 7)]
    with pipe.session() as session:
        pids = session.pids()  # type: ignore[attr-defined]
        out = session.run(inputs)
    assert len(pids) == 2  # only the two Python nodes are processes
    frames = [f for f in out if isinstance(f, Audio)]
    assert frames and all(f.sample_rate == 16_000 and f.source == "echo" for f in frames)
    # 480-sample chunks at 48 kHz become ~160 samples at 16 kHz (the first one shorter:
    # the filter's delay is trimmed so that output and input stay aligned).
    assert all(f.num_frames <= 161 for f in frames)
    result = np.concatenate([f.samples for f in frames])
    assert len(result) == 16_000
    assert frequency(result, 16_000) == pytest.approx(440, rel=0.01)
    assert np.max(np.abs(result[1000:-1000])) == pytest.approx(0.25, rel=0.02)


def test_native_only_pipeline_and_sequences() -> None:
    pipe = (
        Pipeline("native")
        .node("a", "PassThrough")
        .node("b", "AudioFormatNode", target_format="i16")
    )
    pipe.connect("a", "b")
    with pipe.session() as session:
        out = session.run(
            [Audio(np.full(100, 0.5, np.float32), sample_rate=8000) for _ in range(3)]
        )
    assert [f.sequence for f in out] == [0, 1, 2]
    assert all(isinstance(f, Audio) and f.samples.dtype == np.int16 for f in out)
    assert int(out[0].samples[0]) == 16384  # type: ignore[attr-defined]


def test_native_params_are_checked_before_start() -> None:
    with pytest.raises(ManifestError, match=r"nodes\[0\]\.params\.chunk_size") as info:
        Pipeline("bad").node("c", "AudioChunkerNode", chunk_size=0)
    assert info.value.node_id == "c"
    # No target rate: negotiated with the next node when the pipeline is planned; with
    # none, the error names the field.
    lone = Pipeline("bad").node("r", "FastResampleNode")
    with pytest.raises(ManifestError, match=r"nodes\[0\]\.params\.target_rate: .*no node"):
        lone.validate()


def test_native_frame_errors_fail_the_session_naming_the_node() -> None:
    # Echo declares no kinds, so the mismatch is only found at run time.
    pipe = Pipeline("wrong-kind").node("up", "Echo").node("chunk", "AudioChunkerNode")
    pipe.connect("up", "chunk")
    with pytest.raises(zerohop.NodeError, match="'chunk'") as info, pipe.session() as session:
        session.run([zerohop.Text("not audio")])
    assert info.value.node_id == "chunk"


MIXED: dict[str, object] = {
    "version": "v1",
    "metadata": {"name": "mixed"},
    "nodes": [
        {"id": "chunk", "node_type": "AudioChunkerNode", "params": {"chunk_size": 480}},
        {"id": "gain", "node_type": "Scale", "params": {"factor": 0.5}},
        {
            "id": "resample",
            "nodeType": "FastResampleNode",
            "params": {"source_rate": 48_000, "target_rate": 16_000, "quality": "high"},
        },
        {"id": "echo", "node_type": "Echo"},
    ],
    "connections": [
        {"from": "chunk", "to": "gain"},
        {"from": "gain", "to": "resample"},
        {"from": "resample", "to": "echo"},
    ],
}


def checksums(frames: list[zerohop.Frame]) -> list[tuple[str, int | None, int, str]]:
    import hashlib

    assert all(f.timestamp_ns for f in frames)  # stamped at send, as channels do
    return [
        (
            f.source or "",
            f.sequence,
            f.sample_rate,
            hashlib.sha256(f.samples.tobytes()).hexdigest(),
        )
        for f in frames
        if isinstance(f, Audio)
    ]


def test_same_manifest_gives_the_same_bytes_with_multiprocess_on_and_off() -> None:
    """chunker → Python → resampler → Python: bit-identical with the native nodes in the
    host's native threads and Python nodes as processes, or all in-process."""
    import copy

    from zerohop.manifest import Manifest

    rng = np.random.default_rng(7)
    audio = (sine(440, 48_000, 0.5) + rng.normal(0, 0.05, 24_000)).astype(np.float32)
    inputs = [Audio(part, sample_rate=48_000) for part in np.array_split(audio, 9)]
    results = {}
    for enabled in (True, False):
        data = copy.deepcopy(MIXED)
        data["metadata"] = {"name": "mixed", "multiprocess": {"enabled": enabled}}
        pipe = Manifest.parse(data).to_pipeline()
        with pipe.session() as session:
            pids = [s.pid for s in session.status() if s.pid is not None]
            results[enabled] = checksums(session.run(inputs))
        assert len(pids) == (2 if enabled else 0)  # only the Python nodes are processes
    assert results[True] == results[False]
    assert len(results[True]) >= 50 and {rate for _, _, rate, _ in results[True]} == {16_000}
    assert [seq for _, seq, _, _ in results[True]] == list(range(len(results[True])))


def test_native_node_object() -> None:
    """`_native.NativeNode` takes RawFrames or encoded bytes, and flushes what it holds."""
    node = zerohop._native.NativeNode("AudioChunkerNode", '{"chunk_size": 4}')
    assert node.node_type == "AudioChunkerNode"
    six = Audio(np.arange(6, dtype=np.float32), sample_rate=8000)
    out = node.process(six.to_bytes())
    assert [np.asarray(r).tolist() for r in out] == [[0, 1, 2, 3]]
    assert [np.asarray(r).tolist() for r in node.process(out[0])] == [[4, 5, 0, 1]]
    assert [np.asarray(r).tolist() for r in node.flush()] == [[2, 3]]
    with pytest.raises(zerohop.FrameError, match="takes audio"):
        node.process(zerohop.Text("no").to_bytes())
    with pytest.raises(zerohop.FrameError):
        node.process(b"garbage")
    with pytest.raises(ManifestError, match=r"params\.chunk_size") as info:
        zerohop._native.NativeNode("AudioChunkerNode", '{"chunk_size": 0}')
    assert info.value.path == "params.chunk_size"
    with pytest.raises(ManifestError, match="not a native node type"):
        zerohop._native.NativeNode("Echo")


def test_knowable_kind_mismatches_are_refused_before_start() -> None:
    pipe = Pipeline("wrong-kind").node("up", "UpperCase").node("chunk", "AudioChunkerNode")
    pipe.connect("up", "chunk")
    with pytest.raises(ManifestError, match="emits text frames, but node 'chunk'") as info:
        pipe.session()
    assert info.value.path == "connections[0]"
    audio_to_text = Pipeline("a2t").node("r", "FastResampleNode", target_rate=8000)
    with pytest.raises(ManifestError, match=r"connections\[0\]: .* takes text"):
        audio_to_text.node("sfx", "Suffix").connect("r", "sfx").validate()
