"""Kernels that embed a posterior for a cosine search, in numpy (the heads run without torch).

A projector that ends in a softmax ``p`` over classes with a known closeness ``K`` (keys:
:func:`engine.keys.closeness`; tempi: a Gaussian over log-spaced BPM bins) puts
``p @ psd_root(K)`` in its space: the dot product of two such embeddings is ``p K q``, the
expected closeness of their classes. The same root read back, ``e @ psd_root(K)``, gives
``p K``: the posterior smoothed by the closeness, from which the heads decode a BPM.
"""
from __future__ import annotations

import math

import numpy as np

# The BPM classes of the tempo head and of the tempo projector's posterior: 40-260 BPM,
# 36 per octave (1.9 % apart; acc1 allows 4 %).
BPM_MIN, BPM_MAX, BPM_BINS_PER_OCTAVE = 40.0, 260.0, 36


def bpm_bins() -> np.ndarray:
    """The log-spaced BPM bin centres (98), shared by the tempo head and the tempo projector."""
    n = int(round(BPM_BINS_PER_OCTAVE * math.log2(BPM_MAX / BPM_MIN))) + 1
    return BPM_MIN * 2.0 ** (np.arange(n) / BPM_BINS_PER_OCTAVE)


def psd_root(k: np.ndarray) -> np.ndarray:
    """The symmetric square root of a symmetric positive semi-definite matrix ``[n, n]``
    (negative eigenvalues from rounding are taken as 0)."""
    w, v = np.linalg.eigh(np.asarray(k, dtype=np.float64))
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def tempo_kernel(n_bins: int, width: float) -> np.ndarray:
    """``[n_bins + 1, n_bins + 1]``: a Gaussian ``width`` bins wide over the BPM bins, and
    a last class ("no tempo") close only to itself."""
    i = np.arange(n_bins)
    k = np.zeros((n_bins + 1, n_bins + 1))
    k[:n_bins, :n_bins] = np.exp(-0.5 * ((i[:, None] - i[None, :]) / width) ** 2)
    k[n_bins, n_bins] = 1.0
    return k
