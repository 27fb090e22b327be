"""Shifted and stretched versions of a signal, for the match, the curves and transposed queries.

Where torch is installed (the development install, the trainer) these are the batched torch
vocoders of :mod:`engine.model.transforms`, the ones the model was trained with. The bundled
app has no torch: there the audition player's vocoder (:func:`engine.audio.vocoder.render`,
numpy) does the same job, so that matching, curves and transposed search work there too.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from engine.audio.transforms import source_samples_needed
from engine.audio.vocoder import render
from engine.config import SAMPLE_RATE

try:
    from engine.model import transforms as torch_transforms
except ImportError:  # no torch: the bundled app
    torch_transforms = None


def pitch_shift_versions(y: np.ndarray, semitones: Sequence[float], *, sr: int = SAMPLE_RATE,
                         group: int = 4) -> list[np.ndarray]:
    """``y [T]`` shifted by each amount: a list of ``len(semitones)`` float32 ``[T]``."""
    if torch_transforms is not None:
        return torch_transforms.pitch_shift_versions_np(y, list(semitones), sr=sr, group=group)
    y = np.ascontiguousarray(y, dtype=np.float32)
    return [_fit(render(y, sr=sr, semitones=float(s)), y.size) for s in semitones]


def time_stretch_versions(y: np.ndarray, rates: Sequence[float], *, sr: int = SAMPLE_RATE,
                          out_samples: int | None = None, group: int = 4) -> list[np.ndarray]:
    """``y [T]`` stretched by each rate (> 1 faster).

    With ``out_samples`` None, version k is the whole signal stretched (``round(T / rate_k)``
    samples); otherwise every version has ``out_samples`` samples, stretched from the
    ``source_samples_needed(out_samples, rate_k)`` samples centred in ``y``.
    """
    if torch_transforms is not None:
        return torch_transforms.time_stretch_versions_np(y, list(rates), sr=sr,
                                                         out_samples=out_samples, group=group)
    y = np.ascontiguousarray(y, dtype=np.float32)
    if out_samples is None:
        return [render(y, sr=sr, tempo=float(r)) for r in rates]
    out = []
    for r in rates:
        need = source_samples_needed(out_samples, float(r))
        if need > y.size:
            raise ValueError(f"{y.size} samples cannot fill {out_samples} at rate {r} "
                             f"(needs {need})")
        start = (y.size - need) // 2
        out.append(_fit(render(y[start: start + need], sr=sr, tempo=float(r)), out_samples))
    return out


def _fit(y: np.ndarray, n: int) -> np.ndarray:
    """``y`` cut or zero-padded to ``n`` samples."""
    return np.pad(y[:n], (0, max(0, n - y.size))).astype(np.float32, copy=False)
