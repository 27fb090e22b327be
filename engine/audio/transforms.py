"""Sizes shared by the model's vocoders (``engine.model.transforms``) and their callers.

Torch-free, so that the library and the match can size an excerpt without loading the
model package.
"""
from __future__ import annotations

import math

from engine.config import SAMPLE_RATE


def default_n_fft(sr: int) -> int:
    """1024 at 16 kHz (64 ms), scaled to the nearest power of two at other rates."""
    return int(2 ** round(math.log2(1024 * sr / SAMPLE_RATE)))


def source_samples_needed(out_samples: int, rate: float) -> int:
    """Input samples a ``time_stretch(..., rate, out_samples=out_samples)`` call needs.

    The trainer cuts this much source audio for a stretched view, so that the view is
    filled without padding (docs/DESIGN.md section 3).
    """
    if out_samples < 0 or not rate > 0:
        raise ValueError(f"need out_samples >= 0 and rate > 0, got {out_samples}, {rate}")
    return int(math.ceil(out_samples * rate - 1e-9))
