"""STFT magnitude spectra in numpy: the onnxruntime backend's first step (no torch).

The network's waveform-facing modules (the log-mel frontend, the structured pitch branch)
each describe their STFT with one :class:`StftSpec`; the torch side runs it with
``torch.stft`` and the onnxruntime side with :func:`stft_spectrum`, so that the ONNX graph
starts from the spectra. ONNX Runtime's own ``STFT`` kernel measured 4x slower than
numpy's threaded FFT plus the rest of the network together, which is why the transform
stays outside the graph while everything after it (mel projection, compression, the
encoder) is exported from the torch code.

Layout is time-major, ``[B, frames, bins]``, the order both sides multiply a filterbank in.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class StftSpec:
    """A centred STFT with a periodic Hann window and what is kept of it.

    Attributes
    ----------
    n_fft, hop_length, win_length : int
        As ``torch.stft``; a window shorter than ``n_fft`` is centred in the frame.
    pad_mode : {"constant", "reflect"}
        How the signal is padded by ``n_fft // 2`` on each side (``center=True``).
    power : {1, 2}
        1 keeps the magnitude, 2 the power.
    n_bins : int
        Bins kept from the bottom (``n_fft // 2 + 1`` for all of them).
    drop_last : bool
        Drop the trailing frame, so ``T`` samples give ``T // hop_length`` frames
        instead of ``1 + T // hop_length``.
    peak_db : float or None
        Bring each signal's peak to this level (dBFS) first, :func:`peak_gain`; None: not.
    """

    n_fft: int
    hop_length: int
    win_length: int
    pad_mode: str = "constant"
    power: int = 2
    n_bins: int | None = None
    drop_last: bool = False
    peak_db: float | None = None

    def __post_init__(self) -> None:
        if self.peak_db is not None and (isinstance(self.peak_db, bool) or not isinstance(self.peak_db, (int, float))
                                         or not -60.0 <= self.peak_db <= 0.0):
            raise ValueError(f"peak_db must be a number in [-60, 0] or null, got {self.peak_db!r}")
        if self.pad_mode not in ("constant", "reflect"):
            raise ValueError(f"pad_mode must be 'constant' or 'reflect', got {self.pad_mode!r}")
        if self.power not in (1, 2):
            raise ValueError(f"power must be 1 or 2, got {self.power!r}")
        if not 0 < self.win_length <= self.n_fft:
            raise ValueError(f"win_length must be in 1..n_fft={self.n_fft}, got {self.win_length}")

    @property
    def bins(self) -> int:
        return self.n_fft // 2 + 1 if self.n_bins is None else self.n_bins

    def n_frames(self, n_samples: int) -> int:
        return n_samples // self.hop_length + (0 if self.drop_last else 1)

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, object]) -> StftSpec:
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})  # type: ignore[arg-type]


# The most a quiet signal is raised by ``peak_db``: near-silence stays near-silent.
MAX_GAIN_DB = 40.0


def peak_gain(peak: np.ndarray, peak_db: float) -> np.ndarray:
    """The gain that brings signals of peak ``peak`` to ``peak_db`` dBFS, at most
    :data:`MAX_GAIN_DB` (a silent signal keeps its zeros). The torch frontends use the same
    rule (:func:`engine.model.frontend.level`)."""
    return np.minimum(10.0 ** (peak_db / 20.0) / np.maximum(peak, 1e-12), 10.0 ** (MAX_GAIN_DB / 20.0))


def hann(n: int) -> np.ndarray:
    """Periodic Hann window (``torch.hann_window``'s default)."""
    return (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n) / n)).astype(np.float32)


_POOL: ThreadPoolExecutor | None = None


def _pool() -> ThreadPoolExecutor:
    # numpy's FFT releases the GIL: one chunk per task keeps each complex intermediate
    # a few MB and the cores busy.
    global _POOL
    if _POOL is None:
        threads = int(os.environ.get("OMP_NUM_THREADS") or 0) or os.cpu_count() or 1
        _POOL = ThreadPoolExecutor(max(1, threads), thread_name_prefix="loev-stft")
    return _POOL


def stft_spectrum(y: np.ndarray, spec: StftSpec) -> np.ndarray:
    """Magnitude (or power) spectrum ``[B, frames, bins]`` float32 of ``y [B, T]``.

    Only the ``win_length`` windowed samples of each frame are transformed, zero-padded to
    ``n_fft``: ``torch.stft`` puts them in the middle of the frame instead, which changes
    the phase of every bin but not its magnitude.
    """
    y = np.asarray(y, dtype=np.float32)
    if y.ndim != 2:
        raise ValueError(f"y must be [B, T], got shape {y.shape}")
    if spec.peak_db is not None:
        y = (y * peak_gain(np.abs(y).max(axis=1, keepdims=True), spec.peak_db)).astype(np.float32)
    pad = spec.n_fft // 2
    if spec.pad_mode == "reflect" and y.shape[1] <= pad:
        raise ValueError(f"reflect padding needs more than {pad} samples, got {y.shape[1]}")
    padded = np.pad(y, ((0, 0), (pad, pad)), mode=spec.pad_mode)
    n_frames = spec.n_frames(y.shape[1])
    offset = (spec.n_fft - spec.win_length) // 2
    window = hann(spec.win_length)
    out = np.empty((y.shape[0], n_frames, spec.bins), dtype=np.float32)

    def one(b: int) -> None:
        frames = np.lib.stride_tricks.sliding_window_view(
            padded[b, offset:], spec.win_length)[:: spec.hop_length][:n_frames]
        x = np.fft.rfft(frames * window, n=spec.n_fft, axis=-1)[:, : spec.bins]
        power = np.square(x.real) + np.square(x.imag)
        out[b] = power if spec.power == 2 else np.sqrt(power)

    if y.shape[0] == 1:
        one(0)
    else:
        list(_pool().map(one, range(y.shape[0])))
    return out
