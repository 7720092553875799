"""``MoonshineSTTNode``: speech recognition with Moonshine tiny (English) on onnxruntime.

Why a second recognizer: Whisper always encodes a 30 s window, so even a one-second
command costs it the same fixed encoder pass, and a voice agent waits for that after
every utterance. Moonshine's encoder takes the utterance as it is, so its cost follows
what was said: on this machine's two cores a short command takes about a quarter of
Whisper tiny.en's time (BENCHMARKS.md, "Speech to speech"), with the same words heard on
the test recordings.

The weights are the tiny-en model files shipped inside the PyPI wheel
``moonshine-voice==0.1.0`` (later releases download them instead), installed
``--no-deps`` (``requirements-speech-nodeps.txt``: its declared dependencies are for
its own audio capture, which zerohop does not use). The package is never imported:
its files are found through the import system and checked against their sha256, and
the two onnxruntime sessions (encoder; decoder with its key/value cache) are run here
with greedy decoding.

What it takes and gives, and speculation with the accumulator's markers, are every
recognizer's (:mod:`zerohop.nodes.recognizer`).

Examples
--------
Params are checked when the pipeline is built, before the model loads:

>>> from zerohop import Pipeline
>>> Pipeline("asr").node("asr", "MoonshineSTTNode", tokens_per_second=0)
Traceback (most recent call last):
    ...
zerohop.errors.ManifestError: nodes[0].params.tokens_per_second: Input should be greater
than 0 ...
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field

from ..errors import NodeInitError
from ..node import NodeContext
from ..registry import register_node
from .model_paths import ModelPath
from .packaged import packaged_file, require
from .params import NodeParams
from .recognizer import RATE, Recognizer

__all__ = ["MoonshineSTTNode"]

PACKAGE = "moonshine_voice"
FILES = ("encoder_model.ort", "decoder_model_merged.ort", "tokenizer.bin")
START, END = 1, 2  # <s>, </s>; ids up to END are not text
SPACE = "\u2581"  # the tokenizer's word boundary


def read_vocabulary(path: Path) -> list[bytes]:
    """``tokenizer.bin``: each token's bytes, prefixed by their length (one byte, or two
    when the first has its high bit set: low 7 bits first)."""
    data = path.read_bytes()
    tokens, at = [], 0
    while at < len(data):
        length = data[at]
        at += 1
        if length >= 128:
            length = (length & 0x7F) | (data[at] << 7)
            at += 1
        tokens.append(data[at : at + length])
        at += length
    return tokens


@register_node
class MoonshineSTTNode(Recognizer):
    """Moonshine tiny-en speech recognition (onnxruntime): utterance → Text."""

    model_name = "Moonshine"

    class Params(NodeParams):
        #: A directory with the three model files (default: the packaged tiny-en).
        model_path: ModelPath | None = None
        language: str = Field("en", pattern="^en$")
        #: Threads for onnxruntime; 0: the node's thread budget, else 2.
        threads: int = Field(0, ge=0)
        #: Decoding stops after this many tokens per second of audio (a loop guard:
        #: speech runs at 2 to 4 tokens a second).
        tokens_per_second: float = Field(6.5, gt=0)
        sample_rate: int = Field(RATE, ge=RATE, le=RATE)

    def initialize(self, ctx: NodeContext) -> None:
        ort = require("onnxruntime", self.node_type)
        ctx.progress(0.1, "locating the Moonshine model")
        if self.params.model_path is None:
            paths = [
                packaged_file(
                    PACKAGE, f"assets/tiny-en/{name}", self.node_type, package="moonshine-voice"
                )
                for name in FILES
            ]
        else:
            paths = [Path(self.params.model_path) / name for name in FILES]
            missing = [str(p) for p in paths if not p.is_file()]
            if missing:
                raise NodeInitError(f"{self.node_type}: model files missing: {', '.join(missing)}")
        ctx.progress(0.4, "loading Moonshine tiny-en (onnxruntime)")
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.params.threads or ctx.threads or 2
        options.inter_op_num_threads = 1
        providers = ["CPUExecutionProvider"]
        try:
            self.encoder = ort.InferenceSession(str(paths[0]), options, providers=providers)
            self.decoder = ort.InferenceSession(str(paths[1]), options, providers=providers)
        except Exception as err:
            raise NodeInitError(f"{self.node_type}: cannot load {paths[0].parent}: {err}") from None
        self.vocabulary = read_vocabulary(paths[2])
        inputs = self.decoder.get_inputs()
        self.cache_names = [i.name for i in inputs if i.name.startswith("past_key_values")]
        shape = next(i.shape for i in inputs if i.name in self.cache_names)
        self.empty_cache = np.zeros((1, shape[1], 0, shape[3]), np.float32)
        self.initialize_recognizer()
        ctx.progress(1.0, "Moonshine tiny-en ready")

    def transcribe(self, audio: np.ndarray[Any, Any]) -> str:
        samples = np.ascontiguousarray(audio, np.float32)[np.newaxis, :]
        mask = np.ones(samples.shape, np.int64)
        hidden = self.encoder.run(None, {"input_values": samples, "attention_mask": mask})[0]
        cache = dict.fromkeys(self.cache_names, self.empty_cache)
        token = np.array([[START]], np.int64)
        said: list[int] = []
        limit = int(samples.shape[1] / RATE * self.params.tokens_per_second) + 10
        for step in range(limit):
            out = self.decoder.run(
                None,
                {
                    "input_ids": token,
                    "encoder_hidden_states": hidden,
                    "encoder_attention_mask": mask,
                    "use_cache_branch": np.array([step > 0]),
                    **cache,
                },
            )
            best = int(out[0][0, -1].argmax())
            if best == END:
                break
            said.append(best)
            token = np.array([[best]], np.int64)
            for name, value in zip(self.cache_names, out[1:], strict=True):
                # The encoder's keys and values come once, with the first step.
                if step == 0 or ".decoder." in name:
                    cache[name] = value
        text = b"".join(self.vocabulary[t] for t in said if t > END)
        return text.decode("utf-8", "replace").replace(SPACE, " ").strip()
