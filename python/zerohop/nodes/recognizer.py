"""What every speech recognizer node shares: one utterance per audio frame in, its
transcript out, and speculation with the accumulator's markers.

Input: one utterance per audio frame (16 kHz, as the accumulator emits them). Output on
``out``: the transcript as Text, stamped with the utterance's timestamp (the end of
speech); on ``info``: Json with the transcript, the audio length and the time the model
took.

Speculation: after a Json ``{"event": "tentative"}`` frame (the accumulator's, when the
VAD sends ``speech_pause``), the next audio is the utterance so far while the VAD waits
to confirm its end. It is transcribed at once and the transcript held back. After
``{"event": "confirmed"}`` (no speech came back before the end), the next audio is that
utterance plus the silence after it, and the held transcript is what it emits — so the
model's time overlaps the VAD's silence wait. Any other utterance is transcribed as it
comes. Nothing tentative is ever emitted; a cancel (barge-in) forgets what was held.

Examples
--------
A recognizer is a subclass that says how to transcribe; the markers work the same for
all (here one that "hears" the length of the audio):

>>> import numpy as np
>>> from zerohop import Audio, Json
>>> from zerohop.nodes.recognizer import Recognizer
>>> class Lengths(Recognizer):
...     node_type = "Lengths"
...     def transcribe(self, audio):
...         return f"{len(audio)} samples"
>>> node = Lengths({})
>>> node.initialize_recognizer()
>>> said = list(node.process(Json({"event": "tentative"})))
>>> said += list(node.process(Audio(np.zeros(1600, np.float32), 16000)))
>>> said += list(node.process(Json({"event": "confirmed"})))
>>> [(port, f.value["transcript"], f.value["speculative"]) for port, f in
...  node.process(Audio(np.zeros(3200, np.float32), 16000)) if port == "info"]
[('info', '1600 samples', True)]
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any, ClassVar

import numpy as np

from ..data import Frame, Json, Text
from ..node import MultiprocessNode
from .audio import mono_float32

__all__ = ["MARKERS", "RATE", "Recognizer"]

RATE = 16_000
#: The accumulator's markers (speculation, module docs).
MARKERS = ({"event": "tentative"}, {"event": "confirmed"})


class Recognizer(MultiprocessNode):
    """An utterance → Text node: subclasses load their model in ``initialize`` (calling
    :meth:`initialize_recognizer`) and implement :meth:`transcribe`."""

    #: Utterances, and the accumulator's tentative/confirmed markers (Json).
    accepts = ("audio", "json")
    outputs = ("out", "info")
    input_rate = RATE
    #: How ``info`` messages name the model ("Whisper").
    model_name: ClassVar[str] = "ASR"

    def initialize_recognizer(self) -> None:
        """Speculation's state (module docs): what the next audio is, if a marker said;
        the transcript of the last tentative utterance."""
        self.next_is: str | None = None
        self.held: tuple[np.ndarray[Any, Any], str, float] | None = None

    def transcribe(self, audio: np.ndarray[Any, Any]) -> str:
        """The transcript of ``audio`` (float32 mono, 16 kHz)."""
        raise NotImplementedError

    def timed(self, audio: np.ndarray[Any, Any]) -> tuple[str, float]:
        started = time.perf_counter()
        text = self.transcribe(audio)
        return text, time.perf_counter() - started

    def on_cancel(self) -> None:
        # A new utterance (barge-in): nothing said before it is to be confirmed.
        self.next_is, self.held = None, None

    def process(self, frame: Frame) -> Iterator[tuple[str, Frame]]:
        if isinstance(frame, Json) and frame.value in MARKERS:
            self.next_is = frame.value["event"]
            return
        audio = mono_float32(frame, RATE, self.node_type)
        next_is, self.next_is = self.next_is, None
        if next_is == "tentative":
            self.held = (audio.copy(), *self.timed(audio))
            return
        held, self.held = self.held, None
        if (
            next_is == "confirmed"
            and held is not None
            and len(held[0]) <= len(audio)
            and np.array_equal(held[0], audio[: len(held[0])])
        ):
            text, took, speculative = held[1], held[2], True
        else:
            (text, took), speculative = self.timed(audio), False
        seconds = len(audio) / RATE
        info = Json(
            {
                "transcript": text,
                "audio_s": seconds,
                "asr_ms": took * 1000,
                "speculative": speculative,
                "message": f'heard "{text}" ({seconds:.1f} s; {self.model_name} '
                f"{took * 1000:.0f} ms" + (", started at the pause)" if speculative else ")"),
            }
        )
        info.timestamp_ns = frame.timestamp_ns
        yield "info", info
        if text:
            out = Text(text)
            out.timestamp_ns = frame.timestamp_ns
            yield "out", out
