"""Table IV augmentations: each transform on synthetic signals with known answers."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.audio.transforms import source_samples_needed
from trainer.augment import (BaseChain, ColoredNoise, Distortion, Gain, PolarityInversion,
                             RandomFilter, Reverb, apply_variants)

SR = 16000


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _tones(freqs, seconds: float = 1.0) -> torch.Tensor:
    t = torch.arange(int(seconds * SR)) / SR
    return torch.stack([0.5 * torch.sin(2 * torch.pi * f * t) for f in freqs])


def _peak_hz(y: torch.Tensor) -> float:
    spec = torch.fft.rfft(y * torch.hann_window(y.shape[-1])).abs()
    return float(spec.argmax()) * SR / y.shape[-1]


def test_probability_zero_is_identity_and_one_changes_every_view():
    y = _tones([220, 440, 880, 1760])
    for cls in (Gain, PolarityInversion, ColoredNoise, RandomFilter, Reverb, Distortion):
        assert torch.equal(cls(p=0.0)(y, _gen()), y), cls.__name__
        out = cls(p=1.0)(y, _gen())
        assert out.shape == y.shape and torch.isfinite(out).all()
        assert ((out - y).abs().amax(dim=1) > 1e-4).all(), cls.__name__


def test_same_generator_state_same_parameters():
    y = _tones([300, 500, 700])
    chain = BaseChain()
    assert torch.equal(chain(y, _gen(5)), chain(y, _gen(5)))
    assert not torch.equal(chain(y, _gen(5)), chain(y, _gen(6)))


def test_gain_within_range_and_polarity_flips():
    y = _tones([440] * 64, seconds=0.1)
    ratio = (Gain(p=1.0)(y, _gen()).abs().amax(dim=1) / y.abs().amax(dim=1))
    db = 20 * torch.log10(ratio)
    assert db.min() >= -18.0 - 1e-3 and db.max() <= 6.0 + 1e-3 and db.std() > 3
    flipped = PolarityInversion(p=1.0)(y, _gen())
    assert torch.equal(flipped, -y)


def test_coloured_noise_snr_and_slope():
    y = _tones([440] * 2, seconds=2.0)
    noisy = ColoredNoise(p=1.0, min_snr_db=10, max_snr_db=10)(y, _gen())
    noise = noisy - y
    snr = 10 * torch.log10(y.pow(2).mean(1) / noise.pow(2).mean(1))
    assert torch.allclose(snr, torch.full_like(snr, 10.0), atol=0.01)

    def low_high_ratio(decay: float) -> float:
        n = ColoredNoise(p=1.0, min_f_decay=decay, max_f_decay=decay)(y, _gen())[0] - y[0]
        spec = torch.fft.rfft(n).abs().pow(2)
        f = torch.fft.rfftfreq(n.shape[0], 1 / SR)
        return float(spec[(f > 50) & (f < 500)].mean() / spec[(f > 4000) & (f < 7500)].mean())

    assert low_high_ratio(2.0) > 100 > 1 > 0.01 > low_high_ratio(-2.0)  # brown vs violet
    assert 0.3 < low_high_ratio(0.0) < 3  # white


def test_filter_responses_have_their_shape():
    filt = RandomFilter(p=1.0)
    f = torch.fft.rfftfreq(SR, 1 / SR)
    kinds = torch.tensor([0, 1, 2, 3])
    h = filt.response(kinds, f, _gen(3))
    lo, hi = slice(1, 20), slice(7800, 8000)  # 1-20 Hz and 7.8-8 kHz
    assert h[0, lo].mean() > 0.9 and h[0, hi].mean() < h[0, lo].mean()      # low-pass
    assert h[1, hi].mean() > 0.9 and h[1, lo].mean() < h[1, hi].mean()      # high-pass
    mid = h[2].argmax()
    assert h[2, mid] > h[2, lo].mean() and h[2, mid] > h[2, hi].mean()      # band-pass
    assert h[3].min() < 0.5 and h[3, lo].mean() > 0.9                       # band-cut
    assert (h >= 0).all() and (h <= 1 + 1e-6).all()


def test_reverb_leaves_a_decaying_tail():
    y = torch.zeros(2, SR)
    y[:, :400] = _tones([1000, 1000], seconds=0.025)
    wet = Reverb(p=1.0, min_wet=0.5, max_wet=0.5, min_rt60=0.5, max_rt60=0.5)(y, _gen())
    early = wet[:, 2000:4000].pow(2).mean(1)
    late = wet[:, 8000:10000].pow(2).mean(1)
    assert (early > 1e-6).all() and (late < early).all()


def test_distortion_keeps_rms_and_lowers_crest_factor():
    y = _tones([440] * 3)
    out = Distortion(p=1.0, min_drive_db=20, max_drive_db=20)(y, _gen())
    rms = lambda x: x.pow(2).mean(1).sqrt()  # noqa: E731
    assert torch.allclose(rms(out), rms(y), rtol=1e-4)
    assert ((out.abs().amax(1) / rms(out)) < (y.abs().amax(1) / rms(y)) - 0.2).all()


def test_apply_variants_only_touches_chosen_views():
    chunk = SR
    rate = torch.tensor([1.0, 1.25, 1.0, 0.8])
    semis = torch.tensor([0.0, 0.0, 4.0, 0.0])
    need = source_samples_needed(chunk, 1.25)
    src = _tones([440, 440, 440, 440], seconds=need / SR + 0.01)
    out = apply_variants(src, semitones=semis, rate=rate,
                         pitch_applied=torch.tensor([False, False, True, False]),
                         stretch_applied=torch.tensor([False, True, False, True]),
                         chunk_samples=chunk)
    assert out.shape == (4, chunk)
    assert torch.equal(out[0], src[0, :chunk])  # untouched view: bit-exact, no vocoder
    assert _peak_hz(out[1]) == pytest.approx(440, abs=3)  # stretch keeps pitch
    assert _peak_hz(out[2]) == pytest.approx(440 * 2 ** (4 / 12), abs=4)
    # a stretched view is filled with audio to its last sample (no zero padding)
    assert out[1, -SR // 10:].abs().max() > 0.2 and out[3, -SR // 10:].abs().max() > 0.2


def test_apply_variants_refuses_short_source():
    src = torch.zeros(1, SR)
    with pytest.raises(ValueError, match="needs"):
        apply_variants(src, semitones=torch.zeros(1), rate=torch.tensor([1.2]),
                       pitch_applied=torch.tensor([False]), stretch_applied=torch.tensor([True]),
                       chunk_samples=SR)


def test_chain_on_three_second_batch_is_finite():
    y = torch.from_numpy(np.random.default_rng(0).standard_normal((8, 48000)).astype(np.float32)) * 0.1
    out = BaseChain()(y, _gen())
    assert out.shape == y.shape and torch.isfinite(out).all()
