"""Structured branches: a pitch shift rolls the pitch-class axis, a stretch shifts the lag axis."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from engine.model.branches import BINS_PER_OCTAVE, PitchBranch, TempoBranch, log_lags
from engine.config import CHUNK_SAMPLES, SAMPLE_RATE, FrontendConfig, make_config
from engine.model.frontend import build_frontend
from engine.model.network import build_model


def harmonic_tone(f0: float, n: int = CHUNK_SAMPLES) -> torch.Tensor:
    t = np.arange(n) / SAMPLE_RATE
    y = sum(np.sin(2 * np.pi * f0 * h * t) / h for h in range(1, 5))
    return torch.from_numpy((0.3 * y).astype(np.float32))


def click_track(bpm: float, n: int = CHUNK_SAMPLES) -> torch.Tensor:
    y = np.zeros(n, dtype=np.float32)
    period = 60.0 / bpm * SAMPLE_RATE
    for k in range(int((n - 160) / period) + 1):
        i = int(round(k * period))
        y[i : i + 160] += np.hanning(320)[160:].astype(np.float32) * np.sign(np.random.default_rng(k).standard_normal(160))
    return torch.from_numpy(y)


@pytest.mark.parametrize("semitones", [1, 3, 7])
def test_pitch_class_of_a_shifted_tone_rolls(semitones):
    torch.manual_seed(0)
    branch = PitchBranch().eval()
    f0 = 220.0
    with torch.no_grad():
        a = branch(harmonic_tone(f0)[None])[0, :BINS_PER_OCTAVE]
        b = branch(harmonic_tone(f0 * 2 ** (semitones / 12))[None])[0, :BINS_PER_OCTAVE]
    shift = (int(b.argmax()) - int(a.argmax())) % BINS_PER_OCTAVE
    assert shift == 2 * semitones
    # the whole learned output is equivariant too: rolling by 2 s bins aligns the channels
    with torch.no_grad():
        full_a = branch(harmonic_tone(f0)[None]).reshape(-1, BINS_PER_OCTAVE)
        full_b = branch(harmonic_tone(f0 * 2 ** (semitones / 12))[None]).reshape(-1, BINS_PER_OCTAVE)
    rolled = torch.roll(full_a, 2 * semitones, dims=1)
    # not exact: the harmonic convolution's zero padding at the lowest and highest octave
    cos = torch.nn.functional.cosine_similarity
    assert cos(rolled.flatten(), full_b.flatten(), dim=0) > 0.8
    assert cos(rolled.flatten(), full_b.flatten(), dim=0) > cos(full_a.flatten(), full_b.flatten(), dim=0)


def test_tempo_peak_moves_by_the_stretch():
    fe = build_frontend(FrontendConfig())
    branch = TempoBranch().eval()
    lags = log_lags(100.0)
    peaks = {}
    with torch.no_grad():
        for bpm in (100.0, 125.0):
            ac = branch.autocorrelation(branch.onsets(fe(click_track(bpm)[None])))[0, 0].numpy()
            peaks[bpm] = lags[int(np.argmax(ac))] / 100.0  # seconds
    for bpm, period in peaks.items():
        beat = 60.0 / bpm
        # the strongest lag is the beat period or one of its small multiples
        assert min(abs(period / (m * beat) - 1.0) for m in (1, 2)) < 0.04, (bpm, period)


def test_structured_model_shapes_and_round_trip(tmp_path):
    from engine.model.checkpoint import load_checkpoint, save_checkpoint

    net = build_model(make_config("tiny", "loev++", "psts", branches="structured")).eval()
    y = torch.randn(2, CHUNK_SAMPLES) * 0.1
    with torch.no_grad():
        out = net(y)
    dims = net.embedding_dims
    assert {k: v.shape[1] for k, v in out["embeddings"].items()} == dims
    assert dims["pitch"] % BINS_PER_OCTAVE == 0
    loaded, cfg = load_checkpoint(save_checkpoint(tmp_path / "s.safetensors", net))
    assert cfg.branches == "structured"
    with torch.no_grad():
        again = loaded(y)["embeddings"]
    assert all(torch.allclose(out["embeddings"][k], again[k]) for k in dims)


def test_structured_needs_a_branched_method():
    with pytest.raises(ValueError, match="branched"):
        make_config("tiny", "loev", "psts", branches="structured")


def test_lags_are_log_spaced():
    lags = log_lags(100.0)
    ratios = lags[1:] / lags[:-1]
    assert np.allclose(ratios, 2 ** (1 / 24))
    assert math.isclose(lags[0], 25.0) and lags[-1] <= 150.0 + 1e-6
