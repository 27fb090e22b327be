"""DSP descriptors that the model's key and tempo subspaces are compared with.

A user who wants "tracks in this key" or "tracks at this tempo" would otherwise reach for
a chroma vector or a tempogram; retrieval with these descriptors, on the same tracks and
with the same cosine kNN, is the bar the pitch and tempo subspaces have to clear.

* :func:`chroma_12`: time-averaged 12-bin chroma of a log-frequency spectrum.
* :func:`folded_chroma_24`: mean-removed, octave-folded 24-bins-per-octave chroma (the
  parameter-free channel of ``engine.model.branches.PitchBranch``).
* :func:`tempogram`: autocorrelation of an onset envelope at linear lags, averaged over
  local windows.
* :func:`loglag_autocorrelation`: onset autocorrelation read at log-spaced lags (the
  parameter-free channel of ``engine.model.branches.TempoBranch``), per 3 s chunk, averaged.
* :func:`essentia_estimates`: essentia's KeyExtractor / RhythmExtractor2013 labels, when
  essentia is installed (benchmark-only dependency).

Everything here is numpy: one track in, one vector out.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np

from engine.model.branches import PITCH_OCTAVES, logfreq_filterbank
from engine.config import CHUNK_SAMPLES, SAMPLE_RATE

ONSET_RATE = 100.0  # onset envelope frames per second (hop 160 at 16 kHz)


def stft_magnitude(y: np.ndarray, *, n_fft: int, hop_length: int) -> np.ndarray:
    """Hann-windowed magnitude STFT, centred frames: ``y [T]`` -> ``[n_fft // 2 + 1, frames]``."""
    y = np.asarray(y, dtype=np.float32)
    pad = n_fft // 2
    y = np.pad(y, (pad, pad))
    if y.size < n_fft:
        y = np.pad(y, (0, n_fft - y.size))
    frames = np.lib.stride_tricks.sliding_window_view(y, n_fft)[::hop_length]
    window = np.hanning(n_fft + 1)[:-1].astype(np.float32)
    return np.abs(np.fft.rfft(frames * window, axis=-1)).T.astype(np.float32)


def _unit(v: np.ndarray) -> np.ndarray:
    return (v / max(float(np.linalg.norm(v)), 1e-12)).astype(np.float32)


def _folded(y: np.ndarray, *, sr: int, bins_per_octave: int, n_fft: int = 4096,
            hop_length: int = 800) -> np.ndarray:
    """Time-averaged, log-compressed, octave-folded log-frequency spectrum ``[bins_per_octave]``."""
    spec = stft_magnitude(y, n_fft=n_fft, hop_length=hop_length)
    fb = logfreq_filterbank(n_fft=n_fft, sr=sr, bins_per_octave=bins_per_octave)
    lf = np.log1p(100.0 * (fb.T @ spec))  # [octaves * bpo, frames]
    return lf.reshape(PITCH_OCTAVES, bins_per_octave, -1).sum(axis=0).mean(axis=-1)


def chroma_12(y: np.ndarray, *, sr: int = SAMPLE_RATE) -> np.ndarray:
    """Plain chroma: 12 pitch classes (C first), time-averaged, unit norm. ``[T]`` -> ``[12]``."""
    return _unit(_folded(y, sr=sr, bins_per_octave=12))


def folded_chroma_24(y: np.ndarray, *, sr: int = SAMPLE_RATE) -> np.ndarray:
    """Mean-removed octave-folded 24-bin chroma (quarter tones), unit norm. ``[T]`` -> ``[24]``.

    Removing the mean leaves the *shape* of the pitch-class profile, so that loud and
    quiet or dense and sparse tracks in one key still point the same way.
    """
    v = _folded(y, sr=sr, bins_per_octave=24)
    return _unit(v - v.mean())


def onset_envelope(y: np.ndarray, *, sr: int = SAMPLE_RATE, n_fft: int = 1024) -> np.ndarray:
    """Spectral flux of the log-magnitude STFT at 100 frames per second: ``[T]`` -> ``[frames - 1]``."""
    hop = int(round(sr / ONSET_RATE))
    logmag = np.log1p(100.0 * stft_magnitude(y, n_fft=n_fft, hop_length=hop))
    return np.maximum(0.0, np.diff(logmag, axis=1)).mean(axis=0)


def _autocorrelation(env: np.ndarray) -> np.ndarray:
    """Autocorrelation of ``[..., N]`` (mean removed), normalised by lag 0."""
    env = env - env.mean(axis=-1, keepdims=True)
    n = env.shape[-1]
    spec = np.fft.rfft(env, n=2 * n, axis=-1)
    ac = np.fft.irfft(np.abs(spec) ** 2, n=2 * n, axis=-1)[..., :n]
    return ac / np.maximum(ac[..., :1], 1e-9)


def tempogram(y: np.ndarray, *, sr: int = SAMPLE_RATE, lag_min_s: float = 0.2, lag_max_s: float = 2.0,
              win_s: float = 6.0, hop_s: float = 2.0) -> np.ndarray:
    """Autocorrelation tempogram at linear lags, averaged over windows; mean-removed, unit norm.

    Returns ``[round((lag_max_s - lag_min_s) * 100) + 1]``: one value per 10 ms lag.
    """
    env = onset_envelope(y, sr=sr)
    win, hop = int(win_s * ONSET_RATE), int(hop_s * ONSET_RATE)
    lo, hi = int(round(lag_min_s * ONSET_RATE)), int(round(lag_max_s * ONSET_RATE))
    if env.size < win:
        env = np.pad(env, (0, win - env.size))
    frames = np.lib.stride_tricks.sliding_window_view(env, win)[::hop]
    v = _autocorrelation(frames)[:, lo : hi + 1].mean(axis=0)
    return _unit(v - v.mean())


def log_lags(*, lag_min_s: float = 0.25, lag_max_s: float = 1.5, per_octave: int = 24) -> np.ndarray:
    """Log-spaced lags in onset frames (fractional), 240 down to 40 BPM by default."""
    n = int(round(per_octave * np.log2(lag_max_s / lag_min_s))) + 1
    return lag_min_s * ONSET_RATE * 2.0 ** (np.arange(n) / per_octave)


def loglag_autocorrelation(y: np.ndarray, *, sr: int = SAMPLE_RATE) -> np.ndarray:
    """Onset autocorrelation per 3 s chunk, read at log-spaced lags and averaged; mean-removed, unit norm.

    On a log-lag axis a time stretch is a translation, as in the model's tempo branch.
    """
    env = onset_envelope(y, sr=sr)
    win = int(CHUNK_SAMPLES / sr * ONSET_RATE)
    if env.size < win:
        env = np.pad(env, (0, win - env.size))
    frames = np.lib.stride_tricks.sliding_window_view(env, win)[:: win // 2]
    ac = _autocorrelation(frames)
    lags = log_lags()
    lo = np.minimum(np.floor(lags).astype(int), win - 2)
    frac = np.clip(lags - lo, 0.0, 1.0)
    v = (ac[:, lo] * (1 - frac) + ac[:, lo + 1] * frac).mean(axis=0)
    return _unit(v - v.mean())


DESCRIPTORS: dict[str, tuple[str, Callable[..., np.ndarray]]] = {
    # name -> (what it stands in for, function)
    "chroma12": ("key", chroma_12),
    "folded_chroma24": ("key", folded_chroma_24),
    "tempogram": ("tempo", tempogram),
    "loglag_autocorr": ("tempo", loglag_autocorrelation),
}


def descriptor_matrix(signals: list[np.ndarray], name: str, *, sr: int = SAMPLE_RATE) -> np.ndarray:
    """One descriptor for each of ``signals``: ``[N, D]`` unit rows."""
    fn = DESCRIPTORS[name][1]
    return np.stack([fn(y, sr=sr) for y in signals])


# ------------------------------------------------------------------------ essentia


def essentia_available() -> bool:
    try:
        import essentia.standard  # noqa: F401
    except Exception:  # noqa: BLE001 - any import failure means "not installed here"
        return False
    return True


def essentia_estimates(y: np.ndarray, *, sr: int = SAMPLE_RATE) -> dict[str, object]:
    """essentia's key (``"C major"`` style) and BPM estimates of one 16 kHz track."""
    import essentia.standard as es

    # essentia's extractors assume 44.1 kHz: resample rather than trust a sampleRate argument
    import soxr

    y44 = soxr.resample(np.asarray(y, dtype=np.float32), sr, 44100).astype(np.float32)
    key, scale, _strength = es.KeyExtractor()(y44)
    bpm = es.RhythmExtractor2013(method="multifeature")(y44)[0]
    return {"key": f"{key} {scale}", "tempo": float(bpm)}
