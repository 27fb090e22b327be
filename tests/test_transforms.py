"""engine.model.transforms: known answers for pitch and tempo, batching, shapes, devices."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.audio.transforms import source_samples_needed
from engine.model.transforms import pitch_shift, pitch_shift_np, time_stretch, time_stretch_np
from tests.signals import cents, click_track, harmonic_tone, peak_frequency, tempo_bpm, tone

SR = 16000
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_tone_up_three_semitones_is_c5():
    out = pitch_shift_np(tone(440.0, 2.0), 3.0)
    f = peak_frequency(out[4000:-4000], SR)
    assert abs(cents(f, 523.2511)) < 10, f


@pytest.mark.parametrize("semitones", [-12.0, -4.0, -0.37, 1.5, 4.0, 7.0, 12.0])
def test_continuous_shifts_land_within_ten_cents(semitones):
    y = harmonic_tone(196.0, 1.5)
    out = pitch_shift_np(y, semitones)
    expected = 196.0 * 2 ** (semitones / 12)
    assert abs(cents(peak_frequency(out[3000:-3000], SR), expected)) < 10
    assert out.shape == y.shape
    # Loudness is kept to within a factor of two (the lobe of a partial scales with p).
    assert 0.5 < out[3000:-3000].std() / y.std() < 2.0


def test_zero_shift_is_transparent():
    y = harmonic_tone(300.0, 1.0)
    out = pitch_shift_np(y, 0.0)
    np.testing.assert_allclose(out[1000:-1000], y[1000:-1000], atol=2e-3)


def test_click_track_stretched_by_1_25_is_150_bpm():
    y = click_track(120, 6.0)
    assert tempo_bpm(y, SR) == pytest.approx(120, rel=1e-3)
    out = time_stretch_np(y, 1.25)
    assert len(out) == 76800
    assert tempo_bpm(out, SR) == pytest.approx(150, rel=0.01)


@pytest.mark.parametrize("rate", [0.5, 0.7, 0.9, 1.3, 2.0])
def test_stretch_tempo_and_pitch(rate):
    y = click_track(100, 5.0)
    assert tempo_bpm(time_stretch_np(y, rate), SR) == pytest.approx(100 * rate, rel=0.01)
    stretched_tone = time_stretch_np(tone(330.0, 2.0), rate)
    assert abs(cents(peak_frequency(stretched_tone[3000:-3000], SR), 330.0)) < 10


def test_out_samples_needs_enough_source_and_gives_exactly_that_many():
    assert source_samples_needed(48000, 1.3) == 62400
    assert source_samples_needed(48000, 0.7) == 33600
    assert source_samples_needed(3, 1 / 3) == 1
    y = torch.from_numpy(click_track(120, 4.0))[: source_samples_needed(48000, 1.3)]
    out = time_stretch(y, 1.3, out_samples=48000)
    assert out.shape == (48000,)
    assert tempo_bpm(out.numpy(), SR) == pytest.approx(156, rel=0.01)
    # The tail is real audio, not padding: energy in the last 100 ms of the output.
    assert out[-1600:].abs().max() > 0 or y[-2080:].abs().max() == 0
    with pytest.raises(ValueError, match="needs 62400 input samples"):
        time_stretch(y[:62399], 1.3, out_samples=48000)
    # float32 rates (1.3 is stored as 1.3000000477) need no extra sample.
    for rate in (0.7, 0.9, 1.1, 1.3):
        n = source_samples_needed(48000, rate)
        out = time_stretch(y[:n].expand(2, -1), torch.tensor([rate, rate]), out_samples=48000)
        assert out.shape == (2, 48000)


def test_batched_amounts_equal_single_calls():
    rng = np.random.default_rng(1)
    ys = torch.from_numpy(rng.standard_normal((3, 20000)).astype(np.float32) * 0.1)
    ys[1] = torch.from_numpy(harmonic_tone(250, 20000 / SR))
    semis = torch.tensor([-3.3, 0.0, 4.0])
    batched = pitch_shift(ys, semis)
    for i in range(3):
        torch.testing.assert_close(batched[i], pitch_shift(ys[i], float(semis[i])),
                                   atol=1e-5, rtol=1e-4)
    rates = torch.tensor([0.7, 1.0, 1.3])
    out = 15000
    stretched = time_stretch(ys, rates, out_samples=out)
    assert stretched.shape == (3, out)
    for i in range(3):
        single = time_stretch(ys[i, : source_samples_needed(out, float(rates[i])) + 7],
                              float(rates[i]), out_samples=out)
        # Same analysis frames: equal except near the very end (the padding of the STFT
        # sees the longer batch tensor).
        torch.testing.assert_close(stretched[i, :-1200], single[:-1200], atol=1e-5, rtol=1e-4)


def test_different_rates_without_out_samples_is_refused():
    with pytest.raises(ValueError, match="out_samples"):
        time_stretch(torch.zeros(2, 8000), torch.tensor([1.0, 1.2]))


@pytest.mark.parametrize("device", DEVICES)
def test_shapes_dtypes_devices_and_finite(device):
    y = torch.randn(4, 16000, device=device) * 0.3
    for out in (pitch_shift(y, 2.5), pitch_shift(y, torch.tensor([-4.0, -1, 1, 4])),
                time_stretch(y, 1.1)):
        assert out.device == y.device and out.dtype == y.dtype
        assert torch.isfinite(out).all()
    assert pitch_shift(y, 1.0).shape == (4, 16000)
    assert time_stretch(y, 1.25).shape == (4, 12800)
    silent = torch.zeros(2, 9000, device=device)
    assert torch.equal(pitch_shift(silent, 3.0), silent)
    assert torch.isfinite(time_stretch(silent, 0.8)).all()
    half = pitch_shift(y.half() if device == "cuda" else y.bfloat16(), 1.0)
    assert half.dtype in (torch.float16, torch.bfloat16) and torch.isfinite(half.float()).all()


def test_bad_arguments_say_what_was_wrong():
    with pytest.raises(ValueError, match="semitones"):
        pitch_shift(torch.zeros(8000), 13.0)
    with pytest.raises(ValueError, match="rate"):
        time_stretch(torch.zeros(8000), 0.0)
    with pytest.raises(ValueError, match="3 values for a batch of 2"):
        pitch_shift(torch.zeros(2, 8000), torch.tensor([1.0, 2.0, 3.0]))
    with pytest.raises(ValueError, match="too short"):
        pitch_shift(torch.zeros(100), 1.0)
    with pytest.raises(ValueError):
        pitch_shift(np.zeros(8000), 1.0)


def test_versions_helpers_match_single_calls():
    from engine.model.transforms import pitch_shift_versions_np, time_stretch_versions_np

    y = click_track(120, 3.0)
    shifted = pitch_shift_versions_np(y, [-2.0, 0.0, 5.0, 1.0, 3.0], group=2)
    assert len(shifted) == 5 and all(v.shape == y.shape for v in shifted)
    np.testing.assert_allclose(shifted[2], pitch_shift_np(y, 5.0), atol=1e-5)
    whole = time_stretch_versions_np(y, [0.5, 2.0])
    assert [len(v) for v in whole] == [96000, 24000]
    same = time_stretch_versions_np(y, [0.8, 1.0, 1.25], out_samples=36000)
    assert all(v.shape == (36000,) for v in same)
    assert tempo_bpm(same[2], SR) == pytest.approx(150, rel=0.01)
    with pytest.raises(ValueError, match="cannot fill"):
        time_stretch_versions_np(y, [2.0], out_samples=30000)  # needs 60000 of 48000
