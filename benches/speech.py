"""Speech-to-speech benchmark: examples/speech_to_speech.json (Silero VAD → utterances →
Whisper tiny.en → MiniLM intent reply → Piper), multiprocess against in-process.

Piper speaks ``--utterances`` commands once; they are joined with 1 s pauses into one
recording and streamed in 20 ms chunks, each stamped when sent. The nodes carry the
stamp of the chunk holding each utterance's last speech through to the reply audio, so
for every reply:

- latency = first reply audio received - end of speech, and where it goes:
  ``until transcript`` (VAD tail: ``min_silence_duration_ms`` of silence must pass, the
  accumulator, Whisper and the hops) of which ``whisper`` is Whisper alone, then
  ``reply`` (MiniLM), ``piper first`` (Piper's first sentence) and the rest (hops,
  waiting for a busy node);

measured in two runs per executor:

- ``live``: chunks paced in real time, as from a microphone (latency as a user meets it);
- ``burst``: chunks sent as fast as the pipeline takes them (total wall time of the
  stream: what overlapping Whisper on utterance N+1 with Piper on reply N buys), and
  the models' busy time (Whisper + reply + Piper, summed: a one-at-a-time baseline).

Run:  python benches/speech.py [--utterances 10] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples"))

import speech_stream as s2s
from executor import machine, percentile

from zerohop.manifest import load_manifest

COMMANDS = [
    "please turn on the kitchen lights",
    "set a timer for five minutes",
    "play some music",
    "what is the weather like today",
    "switch off the bedroom lights",
    "start a ten minute timer",
    "turn on the lights in the living room",
    "will it rain tomorrow",
    "put on some jazz",
    "turn off the hallway lights",
]


def measure(executor: str, recording: Any, realtime: bool, expected: int) -> dict[str, Any]:
    pipe = load_manifest(s2s.MANIFEST).to_pipeline()
    started = time.monotonic()
    turns, wall = s2s.converse(
        pipe, s2s.microphone(recording, realtime=realtime), executor=executor
    )
    total = time.monotonic() - started
    turns = [t for t in turns if t.first_audio_ns]
    if len(turns) != expected:
        print(f"warning: {len(turns)} replies for {expected} utterances", file=sys.stderr)
    latency = [t.latency_ms for t in turns]
    heard = [(t.heard_ns - t.end_of_speech_ns) / 1e6 for t in turns]
    rest = [
        t.latency_ms - h - t.intent_ms - t.tts_first_ms for t, h in zip(turns, heard, strict=True)
    ]
    return {
        "executor": executor,
        "mode": "live" if realtime else "burst",
        "replies": len(turns),
        "wall_s": wall,
        # What running the models one at a time would take (VAD not counted).
        "busy_s": sum(t.asr_ms + t.intent_ms + t.tts_ms for t in turns) / 1000,
        "session_s": total,
        "latency_p50_ms": percentile(latency, 50),
        "latency_p95_ms": percentile(latency, 95),
        "until_transcript_ms": statistics.median(heard),
        "whisper_ms": statistics.median(t.asr_ms for t in turns),
        "reply_ms": statistics.median(t.intent_ms for t in turns),
        "piper_first_ms": statistics.median(t.tts_first_ms for t in turns),
        "rest_ms": statistics.median(rest),
        "transcripts": [t.transcript for t in turns],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--utterances", type=int, default=10)
    parser.add_argument("--json", type=Path, default=Path("bench-results/speech.json"))
    args = parser.parse_args()

    info = machine()
    print(f"# zerohop speech-to-speech benchmark\n\n{json.dumps(info)}\n", flush=True)
    commands = (COMMANDS * (args.utterances // len(COMMANDS) + 1))[: args.utterances]
    recording = s2s.recording(s2s.say(commands))
    seconds = len(recording) / s2s.RATE
    print(f"recording: {len(commands)} utterances, {seconds:.1f} s\n", flush=True)

    runs = []
    for realtime in (True, False):
        for executor in ("multiprocess", "inprocess"):
            runs.append(measure(executor, recording, realtime, len(commands)))
            print(f"done: {executor} {runs[-1]['mode']}", file=sys.stderr, flush=True)

    print(
        "| run | replies | wall s | models busy s | latency p50 / p95 ms | until transcript "
        "| whisper | reply | piper first | rest |\n|---" + "|---:" * 9 + "|"
    )
    for r in runs:
        print(
            f"| {r['executor']} {r['mode']} | {r['replies']} | {r['wall_s']:.2f} "
            f"| {r['busy_s']:.2f} "
            f"| {r['latency_p50_ms']:.0f} / {r['latency_p95_ms']:.0f} "
            f"| {r['until_transcript_ms']:.0f} | {r['whisper_ms']:.0f} | {r['reply_ms']:.0f} "
            f"| {r['piper_first_ms']:.0f} | {r['rest_ms']:.0f} |"
        )
    burst = {r["executor"]: r for r in runs if r["mode"] == "burst"}
    ratio = burst["multiprocess"]["wall_s"] / burst["inprocess"]["wall_s"]
    print(f"\nburst wall time, multiprocess / in-process: {ratio:.2f} (target <= 0.67)")
    for name, r in burst.items():
        print(f"burst wall time / models busy time, {name}: {r['wall_s'] / r['busy_s']:.2f}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(
        json.dumps({"machine": info, "recording_s": seconds, "runs": runs}, indent=2)
    )
    print(f"wrote {args.json}", file=sys.stderr)


if __name__ == "__main__":
    main()
