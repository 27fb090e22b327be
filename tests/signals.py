"""Synthetic signals with known answers and the measurements that check them.

Shared by the transform, audition and match tests (and the latency benchmark).
"""
from __future__ import annotations

import numpy as np


def tone(freq: float, seconds: float, *, sr: int = 16000, amp: float = 0.5) -> np.ndarray:
    """A sine at ``freq`` Hz, float32 [T]."""
    t = np.arange(int(round(seconds * sr))) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def harmonic_tone(freq: float, seconds: float, *, sr: int = 16000, n_harmonics: int = 4,
                  amp: float = 0.4) -> np.ndarray:
    """A tone with decaying harmonics (more like an instrument than a sine), float32 [T]."""
    t = np.arange(int(round(seconds * sr))) / sr
    y = sum(np.sin(2 * np.pi * freq * h * t) / h for h in range(1, n_harmonics + 1))
    return (amp * y / np.abs(y).max()).astype(np.float32)


def click_track(bpm: float, seconds: float, *, sr: int = 16000, click_ms: float = 8.0,
                seed: int = 0, first: float = 0.25) -> np.ndarray:
    """Decaying noise bursts every beat from ``first`` seconds on, float32 [T]."""
    rng = np.random.default_rng(seed)
    y = np.zeros(int(round(seconds * sr)), dtype=np.float32)
    n = int(click_ms * sr / 1000)
    burst = (rng.standard_normal(n) * np.exp(-np.arange(n) / (n / 5))).astype(np.float32)
    burst *= 0.8 / np.abs(burst).max()
    period = 60.0 / bpm * sr
    for k in range(int(len(y) / period) + 1):
        i = int(round(first * sr + k * period))
        if i + n <= len(y):
            y[i: i + n] += burst
    return y


def peak_frequency(y: np.ndarray, sr: int) -> float:
    """Frequency of the strongest spectral peak, with log-parabolic interpolation (Hz)."""
    y = np.asarray(y, dtype=np.float64)
    n = 1 << int(np.ceil(np.log2(len(y)))) + 2  # zero padding: finer grid, same peak
    spec = np.abs(np.fft.rfft(y * np.hanning(len(y)), n=n))
    k = int(np.argmax(spec[1:-1])) + 1
    a, b, c = np.log(spec[k - 1: k + 2] + 1e-20)
    return float((k + 0.5 * (a - c) / (a - 2 * b + c)) * sr / n)


def cents(f: float, ref: float) -> float:
    return float(1200 * np.log2(f / ref))


def onset_times(y: np.ndarray, sr: int, *, hop: int = 32, merge: float = 0.05) -> np.ndarray:
    """Times (s) of the energy centroids of the bursts of a click track.

    A centroid, unlike the steepest rise, does not move when a vocoder smears a click
    symmetrically over its window, so intervals between centroids measure tempo.
    """
    y = np.asarray(y, dtype=np.float64)
    n_frames = len(y) // hop
    energy = (y[: n_frames * hop].reshape(n_frames, hop) ** 2).mean(axis=1)
    active = np.flatnonzero(energy > 0.02 * energy.max())
    if active.size == 0:
        return np.zeros(0)
    # Split active frames into bursts wherever they are more than ``merge`` apart.
    breaks = np.flatnonzero(np.diff(active) * hop / sr > merge) + 1
    times = []
    for burst in np.split(active, breaks):
        frames = np.arange(burst[0], burst[-1] + 1)
        w = energy[frames]
        times.append((np.sum(frames * w) / np.sum(w) + 0.5) * hop / sr)
    return np.asarray(times)


def tempo_bpm(y: np.ndarray, sr: int) -> float:
    """Tempo of a click track: slope of onset time against beat index (least squares)."""
    t = onset_times(y, sr)
    if len(t) < 3:
        raise AssertionError(f"only {len(t)} onsets found")
    # Beat index from the median interval, so that a missed onset does not bend the fit.
    beat = np.round((t - t[0]) / np.median(np.diff(t)))
    slope = np.polyfit(beat, t, 1)[0]
    return float(60.0 / slope)


def cadence(tonic_midi: int, mode: str, *, seconds_per_chord: float = 1.5, sr: int = 16000,
            n_harmonics: int = 6) -> np.ndarray:
    """I-IV-V-I (major) or i-iv-V-i (minor: the V major, its third the leading tone), a bass
    note under each triad, sustained harmonic tones with a soft attack; float32 [T]."""
    third = 4 if mode == "major" else 3
    sixth = 9 if mode == "major" else 8
    chords = ((0, third, 7), (5, sixth, 12), (7, 11, 14), (0, third, 7))
    hz = lambda midi: 440.0 * 2 ** ((midi - 69) / 12)  # noqa: E731
    t = np.arange(int(round(seconds_per_chord * sr))) / sr
    env = np.minimum(1.0, t / 0.02) * np.exp(-1.0 * t)
    parts = []
    for triad in chords:
        notes = [tonic_midi + i for i in triad] + [tonic_midi + triad[0] - 12]
        parts.append(env * sum(harmonic_tone(hz(m), seconds_per_chord, sr=sr, n_harmonics=n_harmonics)
                               for m in notes))
    y = np.concatenate(parts)
    return (0.4 * y / np.abs(y).max()).astype(np.float32)


def drum_hit(seconds: float = 1.0, *, sr: int = 16000) -> np.ndarray:
    """One kick-like hit (a falling sine with a click) at the start, then silence; float32 [T]."""
    t = np.arange(int(round(seconds * sr))) / sr
    f = 50 + 120 * np.exp(-t / 0.03)
    y = np.sin(2 * np.pi * np.cumsum(f) / sr) * np.exp(-t / 0.12)
    y[: sr // 200] += np.random.default_rng(0).standard_normal(sr // 200) * 0.3
    return (0.8 * y / np.abs(y).max()).astype(np.float32)
