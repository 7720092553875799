"""Speech-to-speech benchmark: examples/speech_to_speech.json (Silero VAD → utterances →
Whisper tiny.en or Moonshine tiny-en → MiniLM intent reply → Piper), multiprocess
against in-process and against sequential execution, and how fast a barge-in stops the
reply.

Piper speaks the commands once — ten short ones and four everyday ones with two or three
requests in a sentence (3 to 4 s of speech) — joined with 1 s pauses into one recording
streamed in 20 ms chunks, each stamped when sent. The nodes carry the stamp of the chunk
holding each utterance's last speech through to the reply audio, so for every reply:

- latency = first reply audio received - end of speech, and where it goes:
  ``until transcript`` (the VAD's silence wait overlapped with recognition, the hops),
  ``asr`` (the recognizer alone), ``reply`` (MiniLM), ``piper first`` (Piper's first
  sentence) and ``rest`` (hops, waiting for a busy node);

measured per run in:

- ``live``: chunks paced in real time, as from a microphone (latency as a user meets
  it), multiprocess and in-process with Whisper, multiprocess with Moonshine;
- ``burst``: chunks sent as fast as the pipeline takes them — multiprocess, in-process,
  and **sequential**: every node in this process, one input at a time carried through
  every node before the next chunk is read (no overlap: the execution model the spec
  compares with). Wall time of the stream and latency;
- ``barge-in``: live, with the VAD's ``barge_in``; each command starts 1.2 s after the
  previous one ended, while its reply is made or played: time from the first speech of
  the command to the cancel reaching the reader (the player stops there).

Run:  python benches/speech.py [--runs 3] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples"))

import speech_stream as s2s
from executor import machine, percentile

from zerohop import Audio, Frame, NodeContext, Pipeline
from zerohop.inprocess import _NativeNode  # the in-process executor's adapter
from zerohop.node import iter_outputs
from zerohop.registry import NativeNodeType

SHORT = [
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
#: Everyday commands with several requests in one sentence.
LONG = [
    "turn on the lights in the living room and set a timer for ten minutes",
    "play some jazz in the kitchen and tell me what the weather is like tomorrow",
    "switch off the bedroom lights, start a five minute timer and play some music",
    "what is the weather like today and will it rain tomorrow in the garden",
]
BARGE_PAUSE_S = 1.2


def stages(turns: list[s2s.Turn]) -> dict[str, Any]:
    """Latency and its stages, p50 and p95 each (ms)."""
    heard = [(t.heard_ns - t.end_of_speech_ns) / 1e6 for t in turns]
    rest = [
        t.latency_ms - h - t.intent_ms - t.tts_first_ms for t, h in zip(turns, heard, strict=True)
    ]
    columns = {
        "latency": [t.latency_ms for t in turns],
        "until_transcript": heard,
        "asr": [t.asr_ms for t in turns],
        "reply": [t.intent_ms for t in turns],
        "piper_first": [t.tts_first_ms for t in turns],
        "rest": rest,
    }
    out: dict[str, Any] = {}
    for name, values in columns.items():
        out[f"{name}_p50_ms"] = percentile(values, 50)
        out[f"{name}_p95_ms"] = percentile(values, 95)
    return out


def sequential(pipe: Pipeline, frames: Iterator[Audio]) -> tuple[list[s2s.Turn], float]:
    """``frames`` through every node of ``pipe`` in this process, one input at a time:
    each node's outputs are carried to the next node at once, depth first, before the
    next chunk is read. The same nodes and outputs as the executors, none overlapping."""
    classes = pipe.node_classes()
    graph = pipe.graph("inprocess")
    specs = {n["id"]: n for n in graph["nodes"]}
    nodes: dict[str, Any] = {}
    for node_id, cls in classes.items():
        params = specs[node_id]["params"]
        if isinstance(cls, NativeNodeType):
            nodes[node_id] = _NativeNode(cls.node_type, params, node_id)
        else:
            nodes[node_id] = cls(params, node_id=node_id)
        ctx = NodeContext(node_id, "sequential", progress=lambda *_: None, emit=lambda *_: None)
        nodes[node_id].initialize(ctx)
    edges: dict[tuple[str, str], list[str]] = {}
    for c in graph["connections"]:
        port = c["from_port"] or type(nodes[c["from"]]).outputs[0]
        edges.setdefault((c["from"], port), []).append(c["to"])
    listener = s2s.Listener()

    def no_event_loop() -> Any:
        raise RuntimeError("the speech nodes are not async")

    def route(node_id: str, result: Any, given: Frame | None) -> None:
        default = type(nodes[node_id]).outputs[0]
        for item in iter_outputs(result, no_event_loop):
            port, out = item if isinstance(item, tuple) else (default, item)
            if given is not None:
                out._inherit(given)
            targets = edges.get((node_id, port))
            if targets:
                for target in targets:
                    route(target, nodes[target].process(out), out)
            else:
                out.source = node_id if port == default else f"{node_id}.{port}"
                listener.hear(out, time.monotonic_ns())

    first = graph["nodes"][0]["id"]
    cpu = time.process_time()
    started = time.monotonic()
    for frame in frames:
        route(first, nodes[first].process(frame), frame)
    for node_id in nodes:  # the graph's order: a flush reaches the nodes after it
        route(node_id, nodes[node_id].flush(), None)
    wall = time.monotonic() - started
    # How many cores one input at a time already keeps busy (the models' own threads):
    # what overlapping them can still win on this machine.
    print(f"sequential: {(time.process_time() - cpu) / wall:.2f} cores busy on average")
    for node in nodes.values():
        node.cleanup()
    return listener.sorted_turns(), wall


def measure(
    name: str, turns: list[s2s.Turn], wall: float, expected: int, commands: list[str]
) -> dict[str, Any]:
    turns = [t for t in turns if t.first_audio_ns]
    if len(turns) != expected:
        print(f"warning: {name}: {len(turns)} replies for {expected} utterances", file=sys.stderr)
    long_turns = [t for t in turns if len(t.transcript.split()) > 8]
    return {
        "run": name,
        "replies": len(turns),
        "wall_s": wall,
        **stages(turns),
        "long_latency_p50_ms": percentile([t.latency_ms for t in long_turns], 50)
        if long_turns
        else None,
        "wer": word_error_rate(commands, [t.transcript for t in turns]),
    }


def word_error_rate(references: list[str], heard: list[str]) -> float:
    """Corpus WER, numbers as words (as tests/test_speech.py counts it)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from test_speech import wer  # the one definition of the tests

    return wer(" ".join(references), " ".join(heard))


def barge_in(executor: str, spoken: list[Any]) -> dict[str, Any]:
    """Each command after the first starts while the previous reply is made or played:
    how long from its first speech to the cancel reaching the reader."""
    sent: list[int] = []
    cancels: list[int] = []
    recording = s2s.recording(spoken, BARGE_PAUSE_S)
    chunks = s2s.microphone(recording, realtime=True, sent=sent)
    turns, _ = s2s.converse(s2s.pipeline(barge_in=True), chunks, executor=executor, cancels=cancels)
    step = s2s.RATE // 50
    reactions, mid_reply = [], 0
    for onset in s2s.onsets(spoken, BARGE_PAUSE_S)[1:]:
        speech = sent[min(onset // step, len(sent) - 1)]
        after = [c for c in cancels if c >= speech]
        if after:
            reactions.append((after[0] - speech) / 1e6)
        # Was the reply before it playing: begun, and not yet over at real-time pace?
        mid_reply += any(
            t.first_audio_ns
            and t.first_audio_ns < speech
            and t.first_audio_ns + sum(len(a) for a in t.reply_audio) / t.reply_rate * 1e9 > speech
            for t in turns
        )
    return {
        "run": f"{executor} barge-in",
        "barge_ins": len(reactions),
        "reaction_p50_ms": percentile(reactions, 50),
        "reaction_p95_ms": percentile(reactions, 95),
        "reaction_max_ms": max(reactions),
        "mid_reply": mid_reply,
        "answered": len([t for t in turns if t.first_audio_ns]),
    }


def one_run(commands: list[str], spoken: list[Any], recording: Any) -> list[dict[str, Any]]:
    rows = []
    for executor, asr in (
        ("multiprocess", "whisper"),
        ("inprocess", "whisper"),
        ("multiprocess", "moonshine"),
    ):
        pipe = s2s.pipeline(asr=asr)
        turns, wall = s2s.converse(
            pipe, s2s.microphone(recording, realtime=True), executor=executor
        )
        rows.append(measure(f"{executor} live {asr}", turns, wall, len(commands), commands))
        print(f"done: {rows[-1]['run']}", file=sys.stderr, flush=True)
    for executor in ("multiprocess", "inprocess", "sequential"):
        pipe = s2s.pipeline()
        if executor == "sequential":
            turns, wall = sequential(pipe, s2s.microphone(recording))
        else:
            turns, wall = s2s.converse(pipe, s2s.microphone(recording), executor=executor)
        rows.append(measure(f"{executor} burst", turns, wall, len(commands), commands))
        print(f"done: {rows[-1]['run']}", file=sys.stderr, flush=True)
    for executor in ("multiprocess", "inprocess"):
        rows.append(barge_in(executor, spoken[:6]))
        print(f"done: {rows[-1]['run']}", file=sys.stderr, flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", type=Path, default=Path("bench-results/speech.json"))
    args = parser.parse_args()

    info = machine()
    print(f"# zerohop speech-to-speech benchmark\n\n{json.dumps(info)}\n", flush=True)
    commands = SHORT + LONG
    spoken = s2s.say(commands)
    recording = s2s.recording(spoken)
    seconds = len(recording) / s2s.RATE
    print(f"recording: {len(commands)} utterances ({len(LONG)} long), {seconds:.1f} s\n")
    runs = []
    for n in range(args.runs):
        load = Path("/proc/loadavg").read_text().split()[:3]
        rows = one_run(commands, spoken, recording)
        runs.append({"run": n + 1, "load_before": load, "rows": rows})
        print(f"\n## run {n + 1} (load average before: {' '.join(load)})\n")
        print(
            "| run | replies | wall s | latency p50 / p95 | long p50 | until transcript "
            "| asr | reply | piper first | rest | WER |\n|---" + "|---:" * 10 + "|"
        )
        for r in rows:
            if "barge_ins" in r:
                continue
            long_p50 = r["long_latency_p50_ms"]
            print(
                f"| {r['run']} | {r['replies']} | {r['wall_s']:.2f} "
                f"| {r['latency_p50_ms']:.0f} / {r['latency_p95_ms']:.0f} "
                f"| {'-' if long_p50 is None else f'{long_p50:.0f}'} "
                + " ".join(
                    f"| {r[f'{s}_p50_ms']:.0f} / {r[f'{s}_p95_ms']:.0f}"
                    for s in ("until_transcript", "asr", "reply", "piper_first", "rest")
                )
                + f" | {r['wer']:.3f} |"
            )
        burst = {r["run"].split()[0]: r for r in rows if r["run"].endswith("burst")}
        print(
            "\nburst wall time, multiprocess / sequential: "
            f"{burst['multiprocess']['wall_s'] / burst['sequential']['wall_s']:.2f}, "
            f"in-process / sequential: "
            f"{burst['inprocess']['wall_s'] / burst['sequential']['wall_s']:.2f} (spec: < 0.60)"
        )
        for r in rows:
            if "barge_ins" in r:
                print(
                    f"{r['run']}: {r['barge_ins']} barge-ins, speech onset -> reply stopped "
                    f"p50 {r['reaction_p50_ms']:.0f} ms, p95 {r['reaction_p95_ms']:.0f} ms, "
                    f"max {r['reaction_max_ms']:.0f} ms; {r['mid_reply']} while a reply "
                    f"played; {r['answered']} replies"
                )
        sys.stdout.flush()
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(
        json.dumps({"machine": info, "recording_s": seconds, "runs": runs}, indent=2)
    )
    print(f"wrote {args.json}", file=sys.stderr)


if __name__ == "__main__":
    main()
