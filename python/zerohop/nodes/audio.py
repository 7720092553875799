"""Audio conversions the speech nodes share."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from ..data import Audio, Frame

__all__ = ["mono_float32"]


def mono_float32(frame: Frame, sample_rate: int, node_type: str) -> npt.NDArray[np.float32]:
    """``frame``'s samples as mono float32 in [-1, 1] at ``sample_rate``; a ``TypeError``
    / ``ValueError`` naming ``node_type`` for anything else (a resampler belongs before
    the node: ``FastResampleNode``)."""
    if not isinstance(frame, Audio):
        raise TypeError(f"{node_type} takes audio frames, got {type(frame).__name__}")
    if frame.sample_rate != sample_rate:
        raise ValueError(
            f"{node_type} takes {sample_rate} Hz audio, got {frame.sample_rate} Hz "
            "(put a FastResampleNode before it)"
        )
    samples = frame.samples
    if samples.ndim == 2:
        samples = samples.mean(axis=1)
    if samples.dtype == np.int16:
        return samples.astype(np.float32) / 32768.0
    if samples.dtype == np.int32:
        return (samples / 2147483648.0).astype(np.float32)
    return samples.astype(np.float32, copy=False)
