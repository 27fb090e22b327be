"""DSP baselines on synthetic signals with known answers: chords in a known key, click
tracks at a known tempo."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.signals import click_track, harmonic_tone
from trainer import baselines as bl
from trainer import benchmark as bm
from trainer import metrics as mx

SR = 16000


def _midi_hz(m: int) -> float:
    return 440.0 * 2 ** ((m - 69) / 12)


def chord(midis, seconds: float = 2.0) -> np.ndarray:
    return sum(harmonic_tone(_midi_hz(m), seconds) for m in midis).astype(np.float32) / len(midis)


def progression(tonic: int, seconds_each: float = 1.5) -> np.ndarray:
    """I - IV - V - I in a major key on ``tonic`` (MIDI)."""
    return np.concatenate([chord([tonic + a, tonic + b, tonic + c], seconds_each)
                           for a, b, c in ((0, 4, 7), (5, 9, 12), (7, 11, 14), (0, 4, 7))])


def test_chroma12_peaks_on_the_triad():
    c = bl.chroma_12(chord([60, 64, 67]))  # C E G
    assert c.shape == (12,) and np.linalg.norm(c) == pytest.approx(1.0, abs=1e-5)
    assert set(np.argsort(c)[-3:]) == {0, 4, 7}


def test_folded_chroma24_peaks_and_is_mean_removed():
    v = bl.folded_chroma_24(chord([62, 66, 69]))  # D F# A: quarter-tone bins 4, 12, 18
    assert v.shape == (24,) and abs(v.sum()) < 1e-5
    assert set(np.argsort(v)[-3:]) == {4, 12, 18}


def test_chroma_retrieves_same_key_progressions():
    # two voicings in each of C major and F# major: the nearest neighbour shares the key
    ys = [progression(60), progression(48), progression(66), progression(54)]
    tracks = [bm.Track(Path(f"{i}.wav"), key=k) for i, k in enumerate(["C major", "C major", "F# major", "F# major"])]
    pairs = mx.PairTable(tracks)
    for name in ("chroma12", "folded_chroma24"):
        x = bl.descriptor_matrix(ys, name)
        assert mx.retrieval_scores(mx.cosine_similarity(x, x), pairs, ks=(1,))["key"]["1"] == 1.0, name


@pytest.mark.parametrize("bpm", [75.0, 100.0, 128.0, 150.0])
def test_tempogram_peak_is_the_beat_period(bpm):
    v = bl.tempogram(click_track(bpm, 10.0))
    lag_s = 0.2 + np.argmax(v) / bl.ONSET_RATE
    assert 60.0 / lag_s == pytest.approx(bpm, rel=0.03)


@pytest.mark.parametrize("bpm", [75.0, 100.0, 128.0, 150.0])
def test_loglag_autocorrelation_peak_is_the_beat_period(bpm):
    v = bl.loglag_autocorrelation(click_track(bpm, 9.0))
    lag_s = bl.log_lags()[np.argmax(v)] / bl.ONSET_RATE
    assert 60.0 / lag_s == pytest.approx(bpm, rel=0.03)


def test_loglag_stretch_is_a_shift():
    # 2 ** (4 / 24): a tempo ratio of four log-lag bins moves the peak by four bins
    a = bl.loglag_autocorrelation(click_track(100.0, 9.0))
    b = bl.loglag_autocorrelation(click_track(100.0 * 2 ** (4 / 24), 9.0))
    assert np.argmax(a) - np.argmax(b) == 4


def test_tempo_descriptors_retrieve_same_tempo_tracks():
    ys = [click_track(90.0, 8.0, seed=0), click_track(90.0, 8.0, seed=1, first=0.4),
          click_track(140.0, 8.0, seed=2), click_track(140.0, 8.0, seed=3, first=0.1)]
    tracks = [bm.Track(Path(f"{i}.wav"), tempo=t) for i, t in enumerate([90.0, 90.0, 140.0, 140.0])]
    pairs = mx.PairTable(tracks)
    for name in ("tempogram", "loglag_autocorr"):
        x = bl.descriptor_matrix(ys, name)
        assert mx.retrieval_scores(mx.cosine_similarity(x, x), pairs, ks=(1,))["tempo_acc1"]["1"] == 1.0, name


def test_short_and_silent_signals_give_finite_vectors():
    for name in bl.DESCRIPTORS:
        for y in (np.zeros(100, np.float32), np.zeros(SR * 4, np.float32)):
            assert np.isfinite(bl.descriptor_matrix([y], name)).all(), name
