"""engine.model.match: recover a known transposition and a known tempo change, with a fake
embedder whose key space is a chroma vector and whose tempo space is an onset
autocorrelation (real measurements of the audio, so the answers are not canned)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from engine.model.match import (
    MatchResult,
    best_alignment,
    cosine_distance,
    match_tracks,
    parabolic_minimum,
)
from tests.signals import click_track

SR = 16000


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _unit(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64)
    return v / (np.linalg.norm(v) + 1e-12)


def chroma(y: np.ndarray, sr: int = SR) -> np.ndarray:
    """12 pitch classes, each spectral peak shared between its two nearest classes."""
    n_fft = 4096
    frames = np.lib.stride_tricks.sliding_window_view(y, n_fft)[::1024]
    mag = np.abs(np.fft.rfft(frames * np.hanning(n_fft), axis=1)).mean(axis=0)
    freqs = np.fft.rfftfreq(n_fft, 1 / sr)
    keep = (freqs > 60) & (freqs < 4000)
    pc = (12 * np.log2(freqs[keep] / 440.0)) % 12
    lo = np.floor(pc).astype(int) % 12
    w = pc - np.floor(pc)
    out = np.zeros(12)
    np.add.at(out, lo, (1 - w) * mag[keep] ** 2)
    np.add.at(out, (lo + 1) % 12, w * mag[keep] ** 2)
    return _unit(out)


def onset_autocorrelation(y: np.ndarray, sr: int = SR) -> np.ndarray:
    """Autocorrelation of the onset envelope at lags 0.2-2 s, smoothed over lag."""
    hop = sr // 100
    y = np.pad(y, (0, max(0, int(2.5 * sr) - len(y))))  # a one-shot: as the model pads it
    n = len(y) // hop
    energy = np.log1p(100 * (y[: n * hop].reshape(n, hop) ** 2).mean(axis=1))
    onset = np.maximum(np.diff(energy, prepend=energy[0]), 0)
    onset -= onset.mean()
    ac = np.correlate(onset, onset, mode="full")[n - 1:][20:200]
    kernel = np.exp(-0.5 * (np.arange(-9, 10) / 3.0) ** 2)
    return _unit(np.maximum(np.convolve(ac, kernel, mode="same"), 0))


class FakeEmbedder:
    subspaces = ("invariant", "pitch", "tempo")

    def __init__(self) -> None:
        self.batch_calls = 0
        self.items = 0

    def embed_audio(self, y: np.ndarray) -> dict[str, np.ndarray]:
        return {"invariant": _unit(np.ones(4)), "pitch": chroma(y),
                "tempo": onset_autocorrelation(y)}

    def embed_audio_batch(self, ys: list[np.ndarray]) -> list[dict[str, np.ndarray]]:
        self.batch_calls += 1
        self.items += len(ys)
        return [self.embed_audio(y) for y in ys]


class SingleSpace(FakeEmbedder):
    subspaces = ("all",)

    def embed_audio(self, y):
        return {"all": _unit(np.concatenate([chroma(y), onset_autocorrelation(y)]))}


def chord(root_midi: float, seconds: float = 6.0) -> np.ndarray:
    """A major triad of harmonic tones, synthesised directly at the given root."""
    t = np.arange(int(seconds * SR)) / SR
    y = np.zeros_like(t)
    for interval in (0, 4, 7):
        f0 = 440.0 * 2 ** ((root_midi + interval - 69) / 12)
        for h in range(1, 5):
            y += np.sin(2 * np.pi * f0 * h * t + interval) / h
    return (0.2 * y / np.abs(y).max()).astype(np.float32)


def test_chord_three_semitones_up_is_matched_with_minus_three():
    query = chord(60, 4.0) + click_track(120, 4.0) * 0.5
    result = chord(63, 4.0) + click_track(120, 4.0) * 0.5  # the same, 3 semitones up
    emb = FakeEmbedder()
    m = match_tracks(query, result, emb)
    assert m.shift == pytest.approx(-3, abs=1)
    assert m.key_distance_after < m.key_distance_before
    assert m.key_distance_after < 0.05 < m.key_distance_before
    assert emb.batch_calls <= 2  # all grid candidates in one batch (+ refinement)
    assert emb.items >= 1 + 13 + 25


@pytest.mark.parametrize("result_bpm, expected", [(150, 0.8), (96, 1.25)])
def test_faster_click_track_is_slowed_to_the_query_tempo(result_bpm, expected):
    query = click_track(120, 8.0)
    result = click_track(result_bpm, 8.0, seed=1)
    m = match_tracks(query, result, FakeEmbedder(), shifts=(0.0,))  # tempo only: faster
    assert m.stretch == pytest.approx(expected, rel=0.04)
    assert m.tempo_distance_after < m.tempo_distance_before


def test_single_space_embedder_answers_both_from_all():
    query = chord(57, 3.0) + click_track(120, 3.0) * 0.5
    result = chord(55, 3.0) + click_track(120, 3.0) * 0.5  # 2 semitones down
    m = match_tracks(query, result, SingleSpace(), stretches=(0.9, 1.0, 1.1))
    assert m.key_subspace == m.tempo_subspace == "all"
    assert m.shift == pytest.approx(2, abs=1)


def test_result_dict_is_json():
    m = MatchResult(-3.0, 0.8, 0.4, 0.01, 0.3, 0.02)
    d = json.loads(json.dumps(m.to_dict()))
    assert d["shift"] == -3.0 and d["stretch"] == 0.8
    assert {"key_distance_before", "key_distance_after", "tempo_distance_before",
            "tempo_distance_after"} <= set(d)


def test_parabola_and_alignment_helpers():
    grid = np.arange(-6, 7, dtype=float)
    d = (grid - 1.3) ** 2
    assert parabolic_minimum(grid, d) == pytest.approx(1.3)
    assert parabolic_minimum(grid, -np.abs(grid)) in (-6.0, 6.0)  # edge: no refinement
    q = np.array([1.0, 0.0])
    vecs = [np.array([np.cos(a), np.sin(a)]) for a in (grid - 2.0) * 0.1]
    best, refined, dist = best_alignment(q, vecs, grid)
    assert best == 2.0 and refined == pytest.approx(2.0, abs=0.05)
    assert cosine_distance(q, q) == pytest.approx(0.0)
    assert cosine_distance(q, np.zeros(2)) == 1.0
    rates = np.geomspace(0.5, 2.0, 25)
    vecs = [np.array([np.cos(a), np.sin(a)]) for a in np.log2(rates / 0.8)]
    best, refined, _ = best_alignment(q, vecs, rates, log_scale=True)
    assert refined == pytest.approx(0.8, rel=0.01)


def test_an_empty_clip_is_a_clear_error():
    with pytest.raises(ValueError, match="result is too short"):
        match_tracks(np.zeros(SR), np.zeros(SR // 100), FakeEmbedder())


def test_grids_must_contain_identity():
    with pytest.raises(ValueError):
        match_tracks(np.zeros(SR), np.zeros(SR), FakeEmbedder(), shifts=(1.0, 2.0))


class OctaveBlindTempo(FakeEmbedder):
    """A tempo space that, like a real one, cannot tell a tempo from its half or double:
    the beat period (the onset autocorrelation's peak) is kept only as its position within
    an octave, so 67.5 and 135 BPM embed identically."""

    def embed_audio(self, y):
        out = super().embed_audio(y)
        period = (int(np.argmax(onset_autocorrelation(y))) + 20) / 100  # seconds
        v = np.full(24, 1e-3)
        v[int(round(24 * np.log2(period))) % 24] = 1.0
        out["tempo"] = _unit(v)
        return out


def test_loop_stretch_prefers_the_ratio_near_one_among_half_and_double():
    query = click_track(135, 8.0)
    result = click_track(120, 8.0, seed=1)
    m = match_tracks(query, result, OctaveBlindTempo(), shifts=(0.0,))
    assert m.mode == "loop"
    assert m.stretch == pytest.approx(1.125, rel=0.03)  # not 0.5625


def test_one_shot_gets_a_pitch_only_match():
    from tests.signals import harmonic_tone

    query = harmonic_tone(440.0, 0.6)                    # A4, 0.6 s
    result = harmonic_tone(440.0 * 2 ** (2 / 12), 0.5)  # B4, 0.5 s: two semitones up
    m = match_tracks(query, result, FakeEmbedder())
    assert m.mode == "one-shot"
    assert m.stretch == 1.0
    assert m.shift == pytest.approx(-2, abs=0.5)
    assert m.key_distance_after < m.key_distance_before


def test_a_sound_with_no_tempo_gets_no_stretch():
    query = click_track(120, 6.0)
    result = chord(48, 6.0)  # a sustained bass chord: no pulse to match
    emb = FakeEmbedder()
    m = match_tracks(query, result, emb)
    assert m.mode == "no tempo"
    assert m.stretch == 1.0 and m.tempo_distance_after == m.tempo_distance_before


def test_an_unpitched_loop_keeps_its_pitch_when_no_shift_is_clearly_better():
    query = chord(60, 6.0) + click_track(120, 6.0) * 0.5
    result = click_track(120, 6.0, seed=3)  # noise clicks: every shift looks alike
    m = match_tracks(query, result, FakeEmbedder(), stretches=(0.9, 1.0, 1.1))
    assert abs(m.shift) < 1.0


def test_a_short_hit_is_matched_in_pitch():
    from tests.signals import harmonic_tone

    m = match_tracks(harmonic_tone(440.0, 0.08), harmonic_tone(415.3, 0.08), FakeEmbedder())
    assert m.mode == "one-shot" and m.stretch == 1.0 and m.shift == pytest.approx(1, abs=0.5)
