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


# --- the timbre descriptor of the vibe space, tempo salience, shares --------------------

def _logmel(y: np.ndarray) -> torch.Tensor:
    return build_frontend(FrontendConfig())(torch.from_numpy(np.asarray(y, dtype=np.float32)))


def test_timbre_descriptor_is_parameter_free_and_standardised():
    from engine.model.branches import TimbreDescriptor

    d = TimbreDescriptor(96)
    assert not list(d.parameters())
    rng = np.random.default_rng(0)
    t = np.arange(CHUNK_SAMPLES) / SAMPLE_RATE
    ys = [0.3 * np.sin(2 * np.pi * f * t) * np.exp(-t / rng.uniform(0.1, 2)) for f in rng.uniform(60, 4000, 12)]
    spec = _logmel(np.stack(ys))
    d.calibrate(spec)
    z = d(spec)
    assert torch.allclose(z.mean(dim=0), torch.zeros(d.out_dim), atol=1e-4)
    assert torch.allclose(z.std(dim=0), torch.ones(d.out_dim), atol=1e-3)


def test_timbre_descriptor_tells_a_low_tone_from_a_bright_one():
    from engine.model.branches import TimbreDescriptor

    d = TimbreDescriptor(96)
    t = np.arange(CHUNK_SAMPLES) / SAMPLE_RATE
    low = [np.sin(2 * np.pi * f * t) * 0.3 for f in (80, 90)]
    high = [np.sin(2 * np.pi * f * t) * 0.3 for f in (3000, 3300)]
    spec = _logmel(np.stack(low + high))
    d.calibrate(spec)
    z = torch.nn.functional.normalize(d(spec), dim=1)
    sim = z @ z.T
    assert sim[0, 1] > sim[0, 2] and sim[2, 3] > sim[1, 3]
    centroid = d.raw(spec)[:, 2 * 20]
    assert centroid[:2].max() < centroid[2:].min()


def test_tempo_salience_separates_a_hit_from_a_groove():
    from engine.model.branches import tempo_salience

    y = np.zeros((2, CHUNK_SAMPLES), dtype=np.float32)
    click = np.exp(-np.arange(800) / 80.0) * np.random.default_rng(0).standard_normal(800)
    y[0, :800] = click  # a one-shot
    for start in range(0, CHUNK_SAMPLES - 800, SAMPLE_RATE // 2):  # 120 BPM
        y[1, start:start + 800] = click
    s = tempo_salience(_logmel(y))
    assert s[0] < 0.3 < 0.7 < s[1]


def test_combine_shares_weights_cosines():
    from engine.model.branches import combine_shares

    a, b = torch.randn(2, 5), torch.randn(2, 7)
    out = combine_shares([a, b], [0.25, 0.75])
    cos = lambda x: torch.nn.functional.cosine_similarity(x[:1], x[1:]).item()  # noqa: E731
    assert math.isclose(cos(out), 0.25 * cos(a) + 0.75 * cos(b), abs_tol=1e-5)


def test_tempo_plain_share_sets_the_plain_channels_weight():
    branch = TempoBranch(plain_share=0.5)
    out = branch(_logmel(np.random.default_rng(1).standard_normal((3, CHUNK_SAMPLES)).astype(np.float32) * 0.1))
    n = len(branch.lags)
    assert torch.allclose(out[:, :n].square().sum(dim=1), torch.full((3,), 0.5), atol=1e-4)
    assert torch.allclose(out.norm(dim=1), torch.ones(3), atol=1e-4)


def test_v2_model_round_trip_and_old_configs_default_off(tmp_path):
    from engine.config import ModelConfig
    from engine.model.checkpoint import load_checkpoint, save_checkpoint

    cfg = make_config("tiny", "loev++", "psts", branches="structured", timbre_share=0.5, tempo_plain_share=0.5)
    net = build_model(cfg).eval()
    y = torch.randn(4, CHUNK_SAMPLES) * 0.1
    with torch.no_grad():
        net.timbre.calibrate(net.frontend(y))
        out = net(y)["embeddings"]
    assert net.embedding_dims["invariant"] == net.trunk.out_dim + net.timbre.out_dim
    loaded, again_cfg = load_checkpoint(save_checkpoint(tmp_path / "v2.safetensors", net))
    assert again_cfg.timbre_share == 0.5 and again_cfg.tempo_plain_share == 0.5
    with torch.no_grad():
        again = loaded(y)["embeddings"]
    assert all(torch.allclose(out[k], again[k], atol=1e-6) for k in out)  # calibration saved too
    old = cfg.to_dict()
    del old["timbre_share"], old["tempo_plain_share"]
    assert ModelConfig.from_dict(old).timbre_share == 0.0
    assert build_model(ModelConfig.from_dict(old)).timbre is None
