"""The paper's log-mel frontend on signals with known answers."""
from __future__ import annotations

import numpy as np
import torch

from engine.config import CHUNK_SAMPLES, SAMPLE_RATE, FrontendConfig
from engine.model.frontend import build_frontend


def hz_to_mel_htk(f):
    return 2595.0 * np.log10(1.0 + np.asarray(f) / 700.0)


def test_shape_300_frames():
    fe = build_frontend(FrontendConfig())
    out = fe(torch.zeros(2, CHUNK_SAMPLES))
    assert out.shape == (2, 1, 96, 300)


def test_silence_is_finite_zero():
    out = build_frontend(FrontendConfig())(torch.zeros(1, CHUNK_SAMPLES))
    assert torch.isfinite(out).all()
    assert out.abs().max() == 0.0  # log10(1 + 10000 * 0)


def test_pure_tone_lands_in_its_mel_band():
    cfg = FrontendConfig()
    t = np.arange(CHUNK_SAMPLES) / SAMPLE_RATE
    for f0 in (220.0, 1000.0, 4000.0):
        y = torch.from_numpy(np.sin(2 * np.pi * f0 * t).astype(np.float32))
        out = build_frontend(cfg)(y)[0, 0]
        band = int(out[:, 10:-10].mean(dim=1).argmax())
        # HTK mel centres: n_mels + 2 points evenly spaced on the mel scale over 0-8 kHz
        centres = np.linspace(hz_to_mel_htk(0.0), hz_to_mel_htk(8000.0), cfg.n_mels + 2)[1:-1]
        expected = int(np.argmin(np.abs(centres - hz_to_mel_htk(f0))))
        assert abs(band - expected) <= 1, (f0, band, expected)


def test_louder_is_larger_and_compressed():
    t = np.arange(CHUNK_SAMPLES) / SAMPLE_RATE
    y = torch.from_numpy(np.sin(2 * np.pi * 440 * t).astype(np.float32))
    fe = build_frontend(FrontendConfig())
    quiet, loud = fe(0.01 * y).max(), fe(y).max()
    assert loud > quiet
    assert loud - quiet < 5.0  # log compression: 40 dB is about 4 decades
