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
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from zerohop import Audio, Json, Pipeline, Text
from zerohop.manifest import load_manifest

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


def recording(
    utterances: Sequence[np.ndarray[Any, Any]], pause_s: float = 1.0
) -> np.ndarray[Any, Any]:
    """The utterances one after another, with ``pause_s`` of silence around each."""
    gap = np.zeros(int(pause_s * RATE), np.float32)
    return np.concatenate([part for u in utterances for part in (gap, u)] + [gap])


def microphone(
    samples: np.ndarray[Any, Any], chunk_ms: float = 20, realtime: bool = False
) -> Iterator[Audio]:
    """``samples`` as int16 chunks of ``chunk_ms``, stamped when sent; paced like a
    live microphone with ``realtime``."""
    pcm = (np.clip(samples, -1, 1) * 32767).astype(np.int16)
    step = int(RATE * chunk_ms / 1000)
    start = time.monotonic()
    for i in range(0, len(pcm), step):
        if realtime:
            time.sleep(max(0.0, start + i / RATE - time.monotonic()))
        chunk = Audio(pcm[i : i + step], RATE)
        chunk.timestamp_ns = time.monotonic_ns()
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
    reply_audio: list[np.ndarray[Any, Any]] = field(default_factory=list)
    reply_rate: int = 0

    @property
    def latency_ms(self) -> float:
        """End of speech → first reply audio."""
        return (self.first_audio_ns - self.end_of_speech_ns) / 1e6


def converse(
    pipe: Pipeline, frames: Iterator[Audio], *, executor: str = "multiprocess", echo: bool = False
) -> tuple[list[Turn], float]:
    """Streams ``frames`` through a started-on-demand session of ``pipe``; returns the
    turns (one per utterance, keyed by its end-of-speech stamp) and the wall time from
    the first chunk sent to the last output."""
    turns: dict[int, Turn] = {}
    with pipe.session(executor=executor) as session:  # type: ignore[arg-type]
        started = time.monotonic()
        for frame in session.stream(frames):
            now = time.monotonic_ns()
            stamp = frame.timestamp_ns or 0
            turn = turns.setdefault(stamp, Turn(stamp))
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
                turn.reply_audio.append(np.array(frame.samples))
                turn.reply_rate = frame.sample_rate
            if echo and isinstance(frame, Json):
                after = (now - stamp) / 1e6
                print(f"[{after:6.0f} ms after speech] {frame.source}: {frame.value['message']}")
        wall = time.monotonic() - started
    return sorted(turns.values(), key=lambda t: t.end_of_speech_ns), wall


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--commands", type=int, default=len(COMMANDS), help="how many to say")
    parser.add_argument("--realtime", action="store_true", help="pace the chunks in real time")
    parser.add_argument("--inprocess", action="store_true", help="one interpreter, threads")
    args = parser.parse_args()

    commands = COMMANDS[: args.commands]
    audio = recording(say(commands))
    print(f"recording: {len(commands)} commands, {len(audio) / RATE:.1f} s at {RATE} Hz")
    pipe = load_manifest(MANIFEST).to_pipeline()
    executor = "inprocess" if args.inprocess else "multiprocess"
    chunks = microphone(audio, realtime=args.realtime)
    turns, wall = converse(pipe, chunks, executor=executor, echo=True)
    for turn in turns:
        print(f"{turn.latency_ms:6.0f} ms  {turn.transcript!r} -> {turn.reply!r}")
    print(f"{len(turns)} replies; {executor} wall time {wall:.2f} s")


if __name__ == "__main__":
    main()
