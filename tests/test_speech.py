"""Speech to speech with the real models of the ``speech`` extra (installed by .ci/run):
Piper makes the speech, the pipeline of examples/speech_to_speech.json hears it and
answers, and Whisper listens to the answer."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import wave
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from zerohop import Audio, Frame, Json, NodeContext, Pipeline, RuntimeConfig, Text
from zerohop.errors import ManifestError, NodeCrashedError, NodeInitError
from zerohop.manifest import load_manifest
from zerohop.nodes.intent import IntentReplyNode
from zerohop.nodes.vad import SileroVADNode
from zerohop.nodes.whisper import WhisperSTTNode

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
sys.path.insert(0, str(EXAMPLES))
import speech_stream as s2s  # noqa: E402

pytestmark = pytest.mark.speech

SENTENCES = ["please turn on the kitchen lights", "set a timer for five minutes"]
REPLIES = ["Turning on the kitchen lights.", "Timer set for five minutes."]
_NUMBERS = dict(
    enumerate(
        ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"]
    )
)


def words(text: str) -> list[str]:
    found = re.findall(r"[a-z0-9']+", text.lower())
    return [_NUMBERS.get(int(w), w) if w.isdigit() else w for w in found]


def wer(reference: str, hypothesis: str) -> float:
    """Word error rate: word-level edit distance / reference length."""
    ref, hyp = words(reference), words(hypothesis)
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        prev, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (r != h))
    return row[-1] / max(len(ref), 1)


def context() -> NodeContext:
    return NodeContext("node", "test", progress=lambda *_: None, emit=lambda *_: None)


@pytest.fixture(scope="module")
def utterances() -> list[np.ndarray[Any, Any]]:
    """SENTENCES spoken by Piper, 16 kHz float32 (one Piper session for the module)."""
    return s2s.say(SENTENCES)


def transcribe(clips: list[tuple[np.ndarray[Any, Any], int]]) -> list[str]:
    """What Whisper hears in each (samples, rate) clip, in its own session."""
    pipe = Pipeline("listen").node("asr", "WhisperSTTNode")
    inputs = [Audio(s2s.resample(samples, rate, 16_000), 16_000) for samples, rate in clips]
    return [
        f.value["transcript"]
        for f in pipe.run(inputs)
        if isinstance(f, Json) and f.source == "asr.info"
    ]


def test_wer_is_word_level_edit_distance() -> None:
    assert wer("set a timer for ten minutes", "Set a timer for 10 minutes.") == 0
    assert wer("a b c d", "a x c") == 0.5


@pytest.mark.timeout(400)
def test_pipeline_hears_answers_and_speaks(utterances: list[np.ndarray[Any, Any]]) -> None:
    pipe = load_manifest(EXAMPLES / "speech_to_speech.json").to_pipeline()
    turns, _ = s2s.converse(pipe, s2s.microphone(s2s.recording(utterances)))
    assert len(turns) == len(SENTENCES), [t.transcript for t in turns]
    for turn, sentence, reply in zip(turns, SENTENCES, REPLIES, strict=True):
        # The manifest's VAD sends pause events: every confirmed utterance begins with
        # the audio of the tentative one before it, whose transcript is reused.
        assert turn.speculative, turn
        assert wer(sentence, turn.transcript) <= 0.25, (sentence, turn.transcript)
        assert words(turn.reply) == words(reply), turn.reply
        assert turn.first_audio_ns > turn.heard_ns > turn.end_of_speech_ns > 0
        assert turn.asr_ms > 0 and turn.tts_first_ms > 0
        audio = np.concatenate(turn.reply_audio).astype(np.float32) / 32768
        assert turn.reply_rate == 22_050 and len(audio) > 0.5 * turn.reply_rate
        assert np.sqrt(np.mean(audio**2)) > 0.01  # not silence
    # The replies are speech: Whisper hears them back. Judged over all replies together
    # (corpus WER): Piper samples noise, so one short reply may lose a word in a run.
    heard = transcribe([(np.concatenate(t.reply_audio) / 32768, t.reply_rate) for t in turns])
    assert len(heard) == len(REPLIES), heard
    assert wer(" ".join(REPLIES), " ".join(heard)) <= 0.25, list(zip(REPLIES, heard, strict=True))


@pytest.mark.timeout(300)
def test_inprocess_baseline_runs_the_same_manifest(utterances: list[np.ndarray[Any, Any]]) -> None:
    pipe = load_manifest(EXAMPLES / "speech_to_speech.json").to_pipeline()
    recording = s2s.recording(utterances[:1])
    turns, _ = s2s.converse(pipe, s2s.microphone(recording), executor="inprocess")
    assert [words(t.reply) for t in turns] == [words(REPLIES[0])]
    assert wer(SENTENCES[0], turns[0].transcript) <= 0.25


@pytest.mark.timeout(400)
@pytest.mark.parametrize("executor", ["multiprocess", "inprocess"])
def test_barge_in_cuts_the_reply_off_and_answers_the_new_utterance(
    utterances: list[np.ndarray[Any, Any]], executor: str
) -> None:
    """Live, with the VAD's barge_in: the second command starts 1.2 s after the first
    ends, while the first reply is being made or played. Its first speech cancels the
    reply — the reader gets the cancel frame and no audio of the first reply after it —
    and the second command is answered in full."""
    pause = 1.2
    sent: list[int] = []
    cancels: list[int] = []
    chunks = s2s.microphone(s2s.recording(utterances, pause), realtime=True, sent=sent)
    turns, _ = s2s.converse(s2s.pipeline(barge_in=True), chunks, executor=executor, cancels=cancels)
    onset = sent[s2s.onsets(utterances, pause)[1] // (s2s.RATE // 50)]
    after = [c for c in cancels if c >= onset]
    assert after, "no cancel after the second command began"
    reaction_ms = (after[0] - onset) / 1e6
    print(f"speech began -> reply stopped: {reaction_ms:.0f} ms ({executor})")
    assert reaction_ms < 5000
    first = [t for t in turns if t.end_of_speech_ns < onset]
    assert all(t.last_audio_ns < after[0] for t in first if t.last_audio_ns), (
        "audio after the cancel"
    )
    answered = [t for t in turns if t.end_of_speech_ns > onset]
    assert len(answered) == 1, [t.transcript for t in turns]
    assert wer(SENTENCES[1], answered[0].transcript) <= 0.25, answered[0].transcript
    assert words(answered[0].reply) == words(REPLIES[1])
    assert answered[0].first_audio_ns > after[0]


@pytest.mark.timeout(400)
@pytest.mark.usefixtures("grpc_sockets_closed")
def test_barge_in_over_grpc(utterances: list[np.ndarray[Any, Any]], tmp_path: Path) -> None:
    """The same, streamed live through ``zerohop serve`` by its Python client: the
    client reads a CancelSpeculation once the second command begins, then no reply audio
    until the second command's transcript, whose reply follows in full."""
    import json

    from remotemedia import TOKEN, start_server, stop_server

    from zerohop import Control
    from zerohop.client import Client

    config = tmp_path / "runtime.toml"
    config.write_text("")
    document = json.loads((EXAMPLES / "speech_to_speech.json").read_text())
    document["nodes"][0]["params"]["bargeIn"] = True
    proc, server = start_server(config, TOKEN)
    try:
        with Client(server.address, TOKEN) as client:
            chunks = s2s.microphone(s2s.recording(utterances, 1.2), realtime=True)
            out = list(client.stream(document, chunks))
    finally:
        stop_server(proc)
    heard = [i for i, f in enumerate(out) if isinstance(f, Json) and f.source == "asr.info"]
    assert len(heard) == 2, [f.source for f in out]
    cancels = [i for i, f in enumerate(out) if isinstance(f, Control)]
    # One at each command's first speech; the second comes before the second transcript.
    cut = [c for c in cancels if heard[0] < c < heard[1]]
    assert cut, [f.source for f in out]
    assert not any(isinstance(f, Audio) for f in out[cut[-1] : heard[1]]), "reply audio after"
    assert wer(SENTENCES[1], out[heard[1]].value["transcript"]) <= 0.25  # type: ignore[attr-defined]
    assert any(isinstance(f, Audio) for f in out[heard[1] :])


@pytest.mark.timeout(200)
def test_espeak_voice_is_understood() -> None:
    sentence = "please turn on the kitchen lights and set a timer for ten minutes"
    outputs = Pipeline("espeak").node("tts", "EspeakTTSNode").run([Text(sentence)])
    (audio,) = [f for f in outputs if isinstance(f, Audio)]
    assert audio.sample_rate == 22_050 and audio.samples.dtype == np.int16
    (heard,) = transcribe([(audio.samples / 32768, audio.sample_rate)])
    assert wer(sentence, heard) <= 0.25, heard


def test_tts_passes_ui_text_through_unspoken() -> None:
    """remotemedia's TTS nodes leave text on channel "ui" (for a screen) unspoken."""
    shown = Text("3 results found", channel="ui", metadata={"turn": "2"})
    outputs = Pipeline("espeak").node("tts", "EspeakTTSNode").run([shown, Text("hello")])
    # Order holds within one output, not across the node's two (audio, info).
    (text,) = [f for f in outputs if isinstance(f, Text)]
    assert text.source == "tts"
    assert (text.text, text.channel, text.metadata) == ("3 results found", "ui", {"turn": "2"})
    assert sum(isinstance(f, Audio) for f in outputs) >= 1
    assert [f.value["text"] for f in outputs if isinstance(f, Json)] == ["hello"]


def test_vad_marks_each_utterance(utterances: list[np.ndarray[Any, Any]]) -> None:
    vad = SileroVADNode({"min_silence_duration_ms": 300})
    vad.initialize(context())
    recording = s2s.recording(utterances, pause_s=1.0)
    events, speech = [], 0
    for chunk in s2s.microphone(recording):
        for frame in vad.process(chunk):
            if isinstance(frame, Json):
                events.append(frame.value)
            else:
                speech += len(frame.samples)
    events += [f.value for f in vad.flush() if isinstance(f, Json)]
    assert [e["event"] for e in events] == ["speech_start", "speech_end"] * 2
    for (start, end), clip, offset in zip(
        zip(events[::2], events[1::2], strict=True),
        utterances,
        [1.0, 2.0 + len(utterances[0]) / 16_000],
        strict=True,
    ):
        # Within 0.4 s of where each clip's speech is (Piper leaves short silences).
        assert offset - 0.1 <= start["start_s"] <= offset + 0.4
        assert (
            offset + len(clip) / 16_000 - 0.6 <= end["end_s"] <= offset + len(clip) / 16_000 + 0.4
        )
    assert speech >= sum(e["speech_ms"] for e in events[1::2]) * 16


def test_vad_pause_events_precede_each_end(utterances: list[np.ndarray[Any, Any]]) -> None:
    vad = SileroVADNode({"min_silence_duration_ms": 300, "pause_events": True})
    vad.initialize(context())
    events = [
        frame.value
        for chunk in s2s.microphone(s2s.recording(utterances, pause_s=1.0))
        for frame in vad.process(chunk)
        if isinstance(frame, Json)
    ]
    ends = [i for i, e in enumerate(events) if e["event"] == "speech_end"]
    assert len(ends) == 2, events
    for i in ends:
        # The pause that began the silence which ended the utterance, no resume after it.
        last = [e for e in events[:i] if e["event"] in ("speech_pause", "speech_resume")][-1]
        assert last == {"event": "speech_pause", "end_s": events[i]["end_s"]}, events


def test_whisper_reuses_a_tentative_transcript_only_when_confirmed(
    utterances: list[np.ndarray[Any, Any]],
) -> None:
    asr = WhisperSTTNode({})
    asr.initialize(context())
    speech = utterances[0]
    silence = np.zeros(3200, np.float32)

    def feed(*frames: Frame) -> list[dict[str, Any]]:
        return [f.value for frame in frames for port, f in asr.process(frame) if port == "info"]

    tentative, confirmed = Json({"event": "tentative"}), Json({"event": "confirmed"})
    assert feed(tentative, Audio(speech, 16_000)) == []  # held, never emitted
    (info,) = feed(confirmed, Audio(np.concatenate([speech, silence]), 16_000))
    assert info["speculative"] and wer(SENTENCES[0], info["transcript"]) <= 0.25, info
    # Speech went on after the tentative part: the whole utterance is transcribed.
    half = speech[: len(speech) // 2]
    (info,) = feed(tentative, Audio(half, 16_000), Audio(speech, 16_000))
    assert not info["speculative"] and wer(SENTENCES[0], info["transcript"]) <= 0.25, info


def test_intent_reply_matches_clauses_and_fills_slots() -> None:
    manifest = load_manifest(EXAMPLES / "speech_to_speech.json")
    (params,) = [n.params for n in manifest.nodes if n.id == "reply"]
    node = IntentReplyNode(params)
    node.initialize(context())
    text, matched = node.reply("Switch the hallway lights off, then play some jazz.")
    assert text == "Turning off the hallway lights. Playing some music."
    assert [m["intent"] for m in matched] == ["lights_off", "music"]
    text, matched = node.reply("What is the capital of France?")
    assert matched == [] and text.startswith("Sorry")


def test_params_take_both_spellings_and_name_bad_fields() -> None:
    pipe = Pipeline("p").node("vad", "SileroVADNode", minSilenceDurationMs=200)
    pipe.node("vad2", "SileroVADNode", min_silence_duration_ms=200)
    with pytest.raises(ManifestError, match=r"params\.threshold") as err:
        Pipeline("p").node("vad", "SileroVADNode", threshold=2)
    assert err.value.node_id == "vad"
    with pytest.raises(ManifestError, match="thresold"):
        Pipeline("p").node("vad", "SileroVADNode", thresold=0.4)
    bad = {"name": "x", "examples": ["hi"], "reply": "{transcript.__class__}"}
    with pytest.raises(ManifestError, match="reply template"):
        Pipeline("p").node("reply", "IntentReplyNode", intents=[bad])


class WhisperWithoutPackage(WhisperSTTNode):
    """WhisperSTTNode in a process where faster-whisper cannot be imported."""

    def initialize(self, ctx: NodeContext) -> None:
        sys.modules["faster_whisper"] = None  # type: ignore[assignment]  # import → ImportError
        super().initialize(ctx)


def test_missing_speech_packages_are_clear_init_errors(tmp_path: Path) -> None:
    pipe = Pipeline("no-whisper").node("asr", WhisperWithoutPackage)
    with pytest.raises(
        NodeInitError, match=r"'faster-whisper'.*pip install 'zerohop\[speech\]'"
    ) as e:
        pipe.session()
    assert e.value.node_id == "asr"
    config = RuntimeConfig.model_validate({"nodes": {"model_dirs": [str(tmp_path)]}})
    missing = Pipeline("no-model", config=config).node(
        "reply",
        "IntentReplyNode",
        intents=[{"name": "x", "examples": ["hi"], "reply": "hello"}],
        model_path=str(tmp_path / "minilm.onnx"),
    )
    with pytest.raises(NodeInitError, match=r"no such file .*minilm\.onnx") as e:
        missing.session()
    assert e.value.node_id == "reply"


def test_a_changed_model_file_is_refused() -> None:
    import importlib.util

    spec = importlib.util.find_spec("silero_vad")
    assert spec is not None and spec.submodule_search_locations
    model = Path(next(iter(spec.submodule_search_locations))) / "data" / "silero_vad_half.onnx"
    pipe = Pipeline("p").node("vad", "SileroVADNode", model_path=str(model), model_sha256="0" * 64)
    with pytest.raises(NodeInitError, match="sha256"):
        pipe.session()


@pytest.mark.timeout(300)
def test_a_model_node_crashing_mid_stream_ends_the_session(
    utterances: list[np.ndarray[Any, Any]],
) -> None:
    pipe = load_manifest(EXAMPLES / "speech_to_speech.json").to_pipeline()
    recording = s2s.recording(utterances * 3)
    with pytest.raises(NodeCrashedError) as err, pipe.session() as session:
        (asr,) = [s.pid for s in session.status() if s.node_id == "asr"]
        assert asr is not None
        for frame in session.stream(s2s.microphone(recording)):
            if frame.source == "asr.info":  # the first utterance is done: kill Whisper
                os.kill(asr, signal.SIGKILL)
    assert err.value.node_id == "asr" and err.value.signal == signal.SIGKILL
    assert "asr" in str(err.value)


@pytest.mark.timeout(300)
def test_readme_first_command_speaks_the_reply(tmp_path: Path) -> None:
    """`zerohop run examples/speech_to_speech.json --input examples/hello.wav --output
    reply.wav`: progress, the transcript and reply with timings, the spoken reply."""
    reply = tmp_path / "reply.wav"
    out = subprocess.run(
        [sys.executable, "-m", "zerohop.cli", "run", str(EXAMPLES / "speech_to_speech.json"),
         "--input", str(EXAMPLES / "hello.wav"), "--output", str(reply)],
        capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "5 nodes ready in" in out.stderr
    heard = re.search(
        r'asr\.info: heard "(.*?)" \(.*Whisper \d+ ms(, started at the pause)?\)', out.stderr
    )
    assert heard, out.stderr
    assert (
        wer("please turn on the kitchen lights and set a timer for ten minutes", heard[1]) <= 0.25
    )
    assert re.search(
        r'reply\.info: reply "Turning on the kitchen lights\. Timer set for', out.stderr
    )
    assert re.search(r"tts\.info: spoke \d\.\d s \(first audio after \d+ ms", out.stderr)
    with wave.open(str(reply)) as w:
        assert w.getframerate() == 22_050 and w.getnframes() > 22_050


def test_run_reads_raw_pcm(tmp_path: Path) -> None:
    """`zerohop run --pcm 16000`: raw int16 PCM (a microphone pipe) in 20 ms chunks."""
    from zerohop.cli import read_input

    pcm = tmp_path / "mic.raw"
    pcm.write_bytes(np.arange(800, dtype="<i2").tobytes())
    chunks = list(read_input(str(pcm), 20, pcm_rate=16_000))
    assert [len(c.samples) for c in chunks] == [320, 320, 160]
    assert all(c.sample_rate == 16_000 and c.samples.dtype == np.int16 for c in chunks)
    assert np.concatenate([c.samples for c in chunks]).tolist() == list(range(800))


def test_native_accumulator_assembles_utterances_between_vad_events() -> None:
    """The Rust AudioBufferAccumulatorNode, as the in-process executor runs it (its own
    cases are Rust unit tests in rust/nodes/accumulator.rs)."""
    pipe = Pipeline("acc", executor="inprocess").node(
        "acc", "AudioBufferAccumulatorNode", minUtteranceDurationMs=100
    )

    def window(value: float, n: int = 800) -> Audio:
        return Audio(np.full(n, value, np.float32), 16_000)

    end = Json({"event": "speech_end"})
    end.timestamp_ns = 123
    frames = [window(0.9), Json({"event": "speech_start"}), window(0.1), window(0.2), end]
    frames += [Json({"event": "speech_start"}), window(0.3), Json({"event": "speech_end"})]
    (utterance,) = pipe.run(frames)
    assert isinstance(utterance, Audio) and utterance.timestamp_ns == 123
    assert utterance.samples.tolist() == [np.float32(0.1)] * 800 + [np.float32(0.2)] * 800
    with pytest.raises(ManifestError, match=r"params\.max_utterance_duration_ms"):
        Pipeline("p").node("acc", "AudioBufferAccumulatorNode", max_utterance_duration_ms=1)


# ------------------------------------------------- params remotemedia-sdk documents


def hello() -> np.ndarray[Any, Any]:
    """examples/hello.wav (real speech, 16 kHz mono) as float32."""
    with wave.open(str(EXAMPLES / "hello.wav"), "rb") as w:
        assert (w.getframerate(), w.getnchannels()) == (16_000, 1)
        pcm = np.frombuffer(w.readframes(w.getnframes()), np.int16)
    return pcm.astype(np.float32) / 32768.0


def vad_events(params: dict[str, Any], samples: np.ndarray[Any, Any], rate: int) -> list[Any]:
    """The VAD's events for ``samples`` fed as 20 ms chunks at ``rate``."""
    vad = SileroVADNode(params)
    vad.initialize(context())
    step = rate // 50
    events = [
        frame.value
        for i in range(0, len(samples), step)
        for frame in vad.process(Audio(samples[i : i + step].copy(), rate))
        if isinstance(frame, Json)
    ]
    return events + [f.value for f in vad.flush() if isinstance(f, Json)]


def spans(events: list[Any]) -> list[tuple[float, float]]:
    return [(e["start_s"], e["end_s"]) for e in events if e["event"] == "speech_end"]


def test_vad_neg_threshold_keeps_speech_through_quieter_windows() -> None:
    """hello.wav has a dip between its words: without hysteresis (neg_threshold equal to
    threshold) it ends speech there; with a low neg_threshold speech goes on to the end."""
    audio = hello()
    none = vad_events({"min_silence_duration_ms": 0, "neg_threshold": 0.5}, audio, 16_000)
    low = vad_events({"min_silence_duration_ms": 0, "neg_threshold": 0.05}, audio, 16_000)
    assert len([e for e in none if e["event"] == "speech_start"]) >= 2, none
    assert [e["event"] for e in low] == ["speech_start", "speech_end"], low
    assert spans(low)[0][1] > spans(none)[0][1]
    # The default is threshold - 0.15; above threshold it is an error naming the field.
    with pytest.raises(ManifestError, match=r"params\.neg_threshold: .*at most threshold"):
        Pipeline("p").node("vad", "SileroVADNode", threshold=0.4, neg_threshold=0.6)


def test_vad_runs_at_8_khz_with_either_spelling() -> None:
    """The v6 model at 8 kHz (256-sample windows) finds the same speech as at 16 kHz."""
    audio = hello()
    at16 = spans(vad_events({}, audio, 16_000))
    at8 = spans(vad_events({"sample_rate": 8_000}, s2s.resample(audio, 16_000, 8_000), 8_000))
    assert len(at8) == len(at16) == 1
    assert abs(at8[0][0] - at16[0][0]) <= 0.1 and abs(at8[0][1] - at16[0][1]) <= 0.2
    vad = SileroVADNode({"sampling_rate": 8_000})
    vad.initialize(context())
    with pytest.raises(ValueError, match="takes 8000 Hz audio, got 16000 Hz"):
        list(vad.process(Audio(audio[:320].copy(), 16_000)))
    with pytest.raises(ManifestError, match=r"params\.sampling_rate"):
        Pipeline("p").node("vad", "SileroVADNode", sampling_rate=44_100)
    with pytest.raises(ManifestError, match="more than once"):
        Pipeline("p").add_node("vad", "SileroVADNode", {"sample_rate": 8000, "sampling_rate": 8000})


def test_vad_splits_speech_longer_than_max_speech_duration() -> None:
    events = vad_events({"max_speech_duration_s": 0.5}, hello(), 16_000)
    parts = spans(events)
    assert len(parts) >= 4, events
    for start, end in parts:
        assert end - start <= 0.5 + 512 / 16_000
    # Each part begins where the last ended, marked as a split.
    starts = [e for e in events if e["event"] == "speech_start"]
    assert all(s.get("split") for s in starts[1:])
    assert [s["start_s"] for s in starts[1:]] == [end for _, end in parts[: len(starts) - 1]]


def test_vad_pre_speech_pad_is_speech_pad() -> None:
    vad = SileroVADNode({"pre_speech_pad_ms": 200})
    assert vad.params.speech_pad_ms == 200
    vad.initialize(context())
    audio = hello()
    first = next(
        f
        for i in range(0, len(audio), 320)
        for f in vad.process(Audio(audio[i : i + 320].copy(), 16_000))
        if isinstance(f, Audio)
    )
    # The speech_start audio carries the padding before it: 200 ms → 7 windows of 512.
    assert len(first.samples) == 512 * 8


def test_whisper_task() -> None:
    pipe = Pipeline("p").node("asr", "WhisperSTTNode", task="transcribe")
    assert pipe.graph()["nodes"][0]["params"]["task"] == "transcribe"
    with pytest.raises(ManifestError, match=r"params\.task: .*English-only") as err:
        Pipeline("p").node("asr", "WhisperSTTNode", task="translate")
    assert err.value.node_id == "asr"
    with pytest.raises(ManifestError, match=r"params\.task"):
        Pipeline("p").node("asr", "WhisperSTTNode", task="summarize")
    pipe = Pipeline("p").node("asr", "WhisperSTTNode", task="transcribe")
    texts = [f.text for f in pipe.run([Audio(hello(), 16_000)]) if isinstance(f, Text)]
    assert "kitchen" in words(" ".join(texts))
