"""A voice assistant listening to a long recording, 20 ms at a time, as it would a
microphone: the speech-to-speech pipeline of ``speech_to_speech.json`` (VAD →
utterances → Whisper → intent reply → Piper, each model in its own process) fed through
``Session.stream``.

The recording is made first: Piper speaks a few commands (one ``PiperTTSNode``
session), they are resampled to 16 kHz and joined with pauses between them. Then every
20 ms chunk is stamped with the time it is sent; the nodes carry the stamp of the end
of each utterance through to the reply audio, so the latency from the end of speech to
the first reply audio is read off each output.

    python examples/speech_stream.py                 # as fast as the pipeline goes
    python examples/speech_stream.py --realtime      # paced like a live microphone
    python examples/speech_stream.py --inprocess     # the one-interpreter baseline
    python examples/speech_stream.py --realtime --barge-in   # talk over the replies
    python examples/speech_stream.py --asr moonshine # the faster recognizer

With ``--barge-in`` the VAD cancels what is in flight when speech begins (the user
talks over the agent): the reply being made stops, reply audio not yet played is
dropped, and the session yields a ``cancel_speculation`` control frame — a player stops
there. The pauses between commands are then shorter than the replies, so each command
after the first cuts the previous reply off; the time from its first speech to the
cancel reaching the player is printed.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from zerohop import Audio, Control, Frame, Json, Pipeline, Text
from zerohop.manifest import Manifest

MANIFEST = Path(__file__).resolve().parent / "speech_to_speech.json"
RATE = 16_000
COMMANDS = [
    "please turn on the kitchen lights",
    "set a timer for five minutes",
    "play some music",
    "what is the weather like today",
    "switch off the bedroom lights",
]


def resample(samples: np.ndarray[Any, Any], rate: int, target: int) -> np.ndarray[Any, Any]:
    """Band-limited resampling of a whole clip (FFT: exact, fine for utterances)."""
    count = round(len(samples) * target / rate)
    spectrum = np.fft.rfft(samples)[: count // 2 + 1]
    return (np.fft.irfft(spectrum, count) * (count / len(samples))).astype(np.float32)


def say(sentences: Sequence[str], rate: int = RATE) -> list[np.ndarray[Any, Any]]:
    """Each sentence spoken by Piper, as float32 mono at ``rate``."""
    pipe = Pipeline("say").node("tts", "PiperTTSNode", output_format="float32")
    outputs = pipe.run([Text(s) for s in sentences])
    audio = [f for f in outputs if isinstance(f, Audio)]
    if len(audio) != len(sentences):
        raise RuntimeError(f"expected one audio frame per sentence, got {len(audio)}")
    return [resample(np.asarray(a.samples, np.float32), a.sample_rate, rate) for a in audio]


#: The recognizers ``--asr`` picks from: node type and params.
RECOGNIZERS = {
    "whisper": ("WhisperSTTNode", {"model": "tiny.en", "language": "en", "cpu_threads": 2}),
    "moonshine": ("MoonshineSTTNode", {"threads": 2}),
}


def pipeline(*, barge_in: bool = False, asr: str = "whisper") -> Pipeline:
    """The pipeline of ``speech_to_speech.json``; with ``barge_in`` its VAD cancels what
    is in flight when speech begins; ``asr`` picks the recognizer (``RECOGNIZERS``)."""
    document = json.loads(MANIFEST.read_text())
    document["nodes"][0]["params"]["bargeIn"] = barge_in
    (recognizer,) = [n for n in document["nodes"] if n["id"] == "asr"]
    recognizer["nodeType"], recognizer["params"] = RECOGNIZERS[asr]
    return Manifest.parse(document, source=str(MANIFEST)).to_pipeline()


def recording(
    utterances: Sequence[np.ndarray[Any, Any]], pause_s: float = 1.0
) -> np.ndarray[Any, Any]:
    """The utterances one after another, with ``pause_s`` of silence around each."""
    gap = np.zeros(int(pause_s * RATE), np.float32)
    return np.concatenate([part for u in utterances for part in (gap, u)] + [gap])


def onsets(utterances: Sequence[np.ndarray[Any, Any]], pause_s: float = 1.0) -> list[int]:
    """Where each utterance's first sound is in ``recording(utterances, pause_s)``
    (sample index: Piper's audio may begin with a little silence)."""
    gap, found, at = int(pause_s * RATE), [], 0
    for u in utterances:
        at += gap
        loud = np.flatnonzero(np.abs(u) > 0.05)
        found.append(at + int(loud[0] if len(loud) else 0))
        at += len(u)
    return found


def microphone(
    samples: np.ndarray[Any, Any],
    chunk_ms: float = 20,
    realtime: bool = False,
    sent: list[int] | None = None,
) -> Iterator[Audio]:
    """``samples`` as int16 chunks of ``chunk_ms``, stamped when sent (each stamp also
    appended to ``sent``); paced like a live microphone with ``realtime``."""
    pcm = (np.clip(samples, -1, 1) * 32767).astype(np.int16)
    step = int(RATE * chunk_ms / 1000)
    start = time.monotonic()
    for i in range(0, len(pcm), step):
        if realtime:
            time.sleep(max(0.0, start + i / RATE - time.monotonic()))
        chunk = Audio(pcm[i : i + step], RATE)
        chunk.timestamp_ns = time.monotonic_ns()
        if sent is not None:
            sent.append(chunk.timestamp_ns)
        yield chunk


@dataclass
class Turn:
    """One utterance and its reply, as the session's outputs showed them."""

    end_of_speech_ns: int
    transcript: str = ""
    reply: str = ""
    asr_ms: float = 0.0
    speculative: bool = False  # transcribed at the VAD's first sign of silence
    intent_ms: float = 0.0
    tts_first_ms: float = 0.0
    tts_ms: float = 0.0
    heard_ns: int = 0  # when the transcript reached us
    first_audio_ns: int = 0
    last_audio_ns: int = 0
    reply_audio: list[np.ndarray[Any, Any]] = field(default_factory=list)
    reply_rate: int = 0

    @property
    def latency_ms(self) -> float:
        """End of speech → first reply audio."""
        return (self.first_audio_ns - self.end_of_speech_ns) / 1e6


class Listener:
    """Reads a conversation off the session's outputs: one :class:`Turn` per utterance
    (keyed by its end-of-speech stamp, which every output carries), and when each
    cancel (barge-in) arrived — a player would stop there."""

    def __init__(self, echo: bool = False) -> None:
        self.turns: dict[int, Turn] = {}
        self.cancels: list[int] = []
        self.echo = echo

    def hear(self, frame: Frame, now: int) -> None:
        if isinstance(frame, Control):
            self.cancels.append(now)
            if self.echo:
                print("[barge-in] the reply is cut off")
            return
        stamp = frame.timestamp_ns or 0
        turn = self.turns.setdefault(stamp, Turn(stamp))
        if isinstance(frame, Json) and frame.source == "asr.info":
            turn.transcript, turn.asr_ms, turn.heard_ns = (
                frame.value["transcript"],
                frame.value["asr_ms"],
                now,
            )
            turn.speculative = frame.value.get("speculative", False)
        elif isinstance(frame, Json) and frame.source == "reply.info":
            turn.reply, turn.intent_ms = frame.value["reply"], frame.value["intent_ms"]
        elif isinstance(frame, Json) and frame.source == "tts.info":
            turn.tts_first_ms, turn.tts_ms = (
                frame.value["first_audio_ms"],
                frame.value["tts_ms"],
            )
        elif isinstance(frame, Audio):
            turn.first_audio_ns = turn.first_audio_ns or now
            turn.last_audio_ns = now
            turn.reply_audio.append(np.array(frame.samples))
            turn.reply_rate = frame.sample_rate
        if self.echo and isinstance(frame, Json):
            after = (now - stamp) / 1e6
            print(f"[{after:6.0f} ms after speech] {frame.source}: {frame.value['message']}")

    def sorted_turns(self) -> list[Turn]:
        return sorted(self.turns.values(), key=lambda t: t.end_of_speech_ns)


def converse(
    pipe: Pipeline,
    frames: Iterator[Audio],
    *,
    executor: str = "multiprocess",
    echo: bool = False,
    cancels: list[int] | None = None,
) -> tuple[list[Turn], float]:
    """Streams ``frames`` through a started-on-demand session of ``pipe``; returns the
    turns (one per utterance, keyed by its end-of-speech stamp) and the wall time from
    the first chunk sent to the last output. When a cancel reaches the outputs (barge-in)
    its arrival time goes to ``cancels``: a player would stop there."""
    listener = Listener(echo)
    with pipe.session(executor=executor) as session:  # type: ignore[arg-type]
        started = time.monotonic()
        for frame in session.stream(frames):
            listener.hear(frame, time.monotonic_ns())
        wall = time.monotonic() - started
    if cancels is not None:
        cancels.extend(listener.cancels)
    return listener.sorted_turns(), wall


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--commands", type=int, default=len(COMMANDS), help="how many to say")
    parser.add_argument("--realtime", action="store_true", help="pace the chunks in real time")
    parser.add_argument("--inprocess", action="store_true", help="one interpreter, threads")
    parser.add_argument("--barge-in", action="store_true", help="talk over the replies")
    parser.add_argument("--asr", choices=sorted(RECOGNIZERS), default="whisper")
    args = parser.parse_args()

    commands = COMMANDS[: args.commands]
    spoken = say(commands)
    pause = 1.2 if args.barge_in else 1.0  # shorter than a reply: the next one cuts in
    audio = recording(spoken, pause)
    print(f"recording: {len(commands)} commands, {len(audio) / RATE:.1f} s at {RATE} Hz")
    pipe = pipeline(barge_in=args.barge_in, asr=args.asr)
    executor = "inprocess" if args.inprocess else "multiprocess"
    sent: list[int] = []
    cancels: list[int] = []
    chunks = microphone(audio, realtime=args.realtime, sent=sent)
    turns, wall = converse(pipe, chunks, executor=executor, echo=True, cancels=cancels)
    for turn in turns:
        print(f"{turn.latency_ms:6.0f} ms  {turn.transcript!r} -> {turn.reply!r}")
    print(f"{len(turns)} replies; {executor} wall time {wall:.2f} s")
    step = RATE // 50  # samples per 20 ms chunk
    for onset in onsets(spoken, pause)[1:]:
        speech = sent[min(onset // step, len(sent) - 1)]
        after = [c for c in cancels if c >= speech]
        if after:
            print(f"speech began -> reply stopped: {(after[0] - speech) / 1e6:.0f} ms")


if __name__ == "__main__":
    main()
