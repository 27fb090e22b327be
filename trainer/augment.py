"""The augmentation chain of the paper's Table IV, batched on the training device.

Base chain (applied in this order, each step with its own probability per view):
gain, polarity inversion, coloured noise with a spectral decay, one of low-pass /
high-pass / band-pass / band-cut filter, reverb, distortion. Variant augmentations
(pitch shift, time stretch) use ``engine.model.transforms`` (the same vocoder the app uses) and
are applied *before* the base chain, to the views that drew them in the data plan
(``trainer.data``): a stretch needs to know, when the audio is read, how much source
audio to cut, so its rate is drawn there; the base parameters are drawn here from a
``torch.Generator`` on the device.

Ranges and probabilities: pitch shift -4..+4 semitones and time stretch 0.7..1.3, each
with p = 0.5, are the paper's. For the base chain we follow Table IV's list; where a
range is not pinned down there we use the defaults of torch-audiomentations (which the
MULE/LOEV code base builds on) and say so in each class. Every transform is a small
callable ``(y [B, T], generator) -> y`` acting on a random subset of the batch, with no
per-sample Python loop.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from engine.config import SAMPLE_RATE


def _uniform(n: int, lo: float, hi: float, g: torch.Generator, device: torch.device) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=g, device=device)


def _chosen(n: int, p: float, g: torch.Generator, device: torch.device) -> torch.Tensor:
    """Which views get a transform: BoolTensor [n]."""
    return torch.rand(n, generator=g, device=device) < p


def _on_chosen(y: torch.Tensor, use: torch.Tensor, fn) -> torch.Tensor:
    """``fn`` on the chosen rows only (the expensive transforms skip the other half)."""
    idx = torch.nonzero(use, as_tuple=True)[0]
    if idx.numel() == 0:
        return y
    out = y.clone()
    out[idx] = fn(y[idx], idx)
    return out


def _rms(y: torch.Tensor) -> torch.Tensor:
    return y.pow(2).mean(dim=-1, keepdim=True).clamp_min(1e-12).sqrt()


@dataclass
class Gain:
    """Random gain in dB (Table IV "gain"; range: torch-audiomentations' -18..+6 dB)."""

    p: float = 0.5
    min_db: float = -18.0
    max_db: float = 6.0

    def __call__(self, y: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        n = y.shape[0]
        db = _uniform(n, self.min_db, self.max_db, g, y.device)
        db = torch.where(_chosen(n, self.p, g, y.device), db, torch.zeros_like(db))
        return y * torch.pow(10.0, db / 20.0)[:, None]


@dataclass
class PolarityInversion:
    """Multiply by -1 (Table IV "polarity inversion")."""

    p: float = 0.5

    def __call__(self, y: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        flip = _chosen(y.shape[0], self.p, g, y.device)
        return torch.where(flip[:, None], -y, y)


@dataclass
class ColoredNoise:
    """Additive noise whose power falls as ``f ** -f_decay`` (Table IV "coloured noise").

    ``f_decay`` -2..2 spans violet (-2), blue, white (0), pink (1) and brown (2) noise;
    SNR 3..30 dB relative to the view's RMS (torch-audiomentations' AddColoredNoise).
    """

    p: float = 0.5
    min_snr_db: float = 3.0
    max_snr_db: float = 30.0
    min_f_decay: float = -2.0
    max_f_decay: float = 2.0
    sr: int = SAMPLE_RATE

    def __call__(self, y: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        n, t = y.shape
        use = _chosen(n, self.p, g, y.device)
        snr = _uniform(n, self.min_snr_db, self.max_snr_db, g, y.device)
        decay = _uniform(n, self.min_f_decay, self.max_f_decay, g, y.device)
        f = torch.fft.rfftfreq(t, 1.0 / self.sr, device=y.device).clamp_min(1.0)

        def add(ys: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
            # White Gaussian noise drawn directly as its spectrum, then coloured:
            # amplitude ~ f^(-decay / 2), i.e. power ~ f^(-decay).
            m = ys.shape[0]
            spec = torch.complex(torch.randn(m, f.shape[0], generator=g, device=y.device),
                                 torch.randn(m, f.shape[0], generator=g, device=y.device))
            spec = spec * torch.pow(f[None, :], -decay[idx, None] / 2.0)
            noise = torch.fft.irfft(spec, n=t)
            return ys + noise / _rms(noise) * _rms(ys) * torch.pow(10.0, -snr[idx] / 20.0)[:, None]

        return _on_chosen(y, use, add)


@dataclass
class RandomFilter:
    """One of low-pass, high-pass, band-pass, band-cut (Table IV "filter"), per view.

    Butterworth magnitude responses of order 1-4 (6-24 dB/octave), applied zero-phase in
    the frequency domain so that one batched FFT serves every view and every filter type.
    Cutoffs: low-pass 150-7500 Hz, high-pass 20-2400 Hz, band-pass / band-cut centre
    200-4000 Hz with bandwidth 0.5-1.99 x the centre (torch-audiomentations' ranges).
    """

    p: float = 0.5
    sr: int = SAMPLE_RATE

    def response(self, kind: torch.Tensor, f: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        """|H(f)| [B, F] for filter kinds 0 low, 1 high, 2 band-pass, 3 band-cut."""
        n, dev = kind.shape[0], kind.device
        order = torch.randint(1, 5, (n,), generator=g, device=dev).float()[:, None]
        lp_fc = torch.exp(_uniform(n, math.log(150), math.log(7500), g, dev))[:, None]
        hp_fc = torch.exp(_uniform(n, math.log(20), math.log(2400), g, dev))[:, None]
        centre = torch.exp(_uniform(n, math.log(200), math.log(4000), g, dev))[:, None]
        bw = _uniform(n, 0.5, 1.99, g, dev)[:, None] * centre
        lo = (centre - bw / 2).clamp_min(10.0)
        hi = centre + bw / 2
        f = f[None, :].clamp_min(1e-3)
        # Every kind as low(f_hi) x high(f_lo): a low-pass has no lower edge, a high-pass no
        # upper one; band-cut is the power complement of its band-pass. Two powers per view.
        inf = torch.full_like(lp_fc, float("inf"))
        f_hi = torch.where((kind == 0)[:, None], lp_fc, torch.where((kind == 1)[:, None], inf, hi))
        f_lo = torch.where((kind == 0)[:, None], torch.zeros_like(lo),
                           torch.where((kind == 1)[:, None], hp_fc, lo))
        h2 = 1.0 / (1 + torch.pow(f / f_hi, 2 * order)) / (1 + torch.pow(f_lo / f, 2 * order))
        h2 = torch.where((kind == 3)[:, None], 1 - h2, h2)
        return h2.clamp(0.0, 1.0).sqrt()

    def __call__(self, y: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        n, t = y.shape
        use = _chosen(n, self.p, g, y.device)
        kind = torch.randint(0, 4, (n,), generator=g, device=y.device)
        f = torch.fft.rfftfreq(t, 1.0 / self.sr, device=y.device)
        return _on_chosen(y, use, lambda ys, idx: torch.fft.irfft(
            torch.fft.rfft(ys) * self.response(kind[idx], f, g), n=t))


@dataclass
class Reverb:
    """Synthetic room: exponentially decaying noise impulse response, FFT convolution.

    RT60 0.1-1.0 s, wet/dry 0.1-0.5 (Table IV "reverb"; a synthetic IR stands in for the
    paper's algorithmic reverb, nothing is downloaded). The tail is cut at ``ir_seconds``
    and the wet signal scaled to the dry RMS before mixing.
    """

    p: float = 0.5
    min_rt60: float = 0.1
    max_rt60: float = 1.0
    min_wet: float = 0.1
    max_wet: float = 0.5
    ir_seconds: float = 1.0
    sr: int = SAMPLE_RATE

    def __call__(self, y: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        n, t = y.shape
        use = _chosen(n, self.p, g, y.device)
        rt60 = _uniform(n, self.min_rt60, self.max_rt60, g, y.device)[:, None]
        wet = _uniform(n, self.min_wet, self.max_wet, g, y.device)[:, None]
        length = int(self.ir_seconds * self.sr)
        time = torch.arange(length, device=y.device) / self.sr
        size = t + length  # linear convolution; 64000 at 3 s + 1 s factors well for the FFT

        def reverb(ys: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
            ir = torch.randn(ys.shape[0], length, generator=g, device=y.device)
            ir = ir * torch.exp(-6.9078 * time / rt60[idx])  # -60 dB at t = RT60
            ir[:, 0] = 1.0  # the direct sound
            wet_y = torch.fft.irfft(torch.fft.rfft(ys, n=size) * torch.fft.rfft(ir, n=size), n=size)[:, :t]
            wet_y = wet_y / _rms(wet_y) * _rms(ys)
            return (1 - wet[idx]) * ys + wet[idx] * wet_y

        return _on_chosen(y, use, reverb)


@dataclass
class Distortion:
    """tanh soft clipping with a drive of 0-20 dB, output RMS kept (Table IV "distortion")."""

    p: float = 0.5
    min_drive_db: float = 0.0
    max_drive_db: float = 20.0

    def __call__(self, y: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        n = y.shape[0]
        use = _chosen(n, self.p, g, y.device)
        drive = torch.pow(10.0, _uniform(n, self.min_drive_db, self.max_drive_db, g, y.device) / 20.0)

        def distort(ys: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
            # Drive relative to the view's peak so quiet and loud views distort alike.
            peak = ys.abs().amax(dim=-1, keepdim=True).clamp_min(1e-6)
            out = torch.tanh(ys / peak * drive[idx, None])
            return out / _rms(out) * _rms(ys)

        return _on_chosen(y, use, distort)


class BaseChain:
    """Table IV's base chain in order: gain, polarity, noise, filter, reverb, distortion."""

    def __init__(self, *, sr: int = SAMPLE_RATE) -> None:
        self.steps = [Gain(), PolarityInversion(), ColoredNoise(sr=sr), RandomFilter(sr=sr),
                      Reverb(sr=sr), Distortion()]

    def __call__(self, y: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        for step in self.steps:
            y = step(y, g)
        return y


def apply_variants(source: torch.Tensor, *, semitones: torch.Tensor, rate: torch.Tensor,
                   pitch_applied: torch.Tensor, stretch_applied: torch.Tensor,
                   chunk_samples: int, sr: int = SAMPLE_RATE) -> torch.Tensor:
    """Time stretch then pitch shift the views that drew them (paper Table IV variants).

    Only the chosen views go through the phase vocoder: a view without the augmentation is
    returned bit-exact, so no head can spot vocoder artefacts on "clean" views.

    Parameters
    ----------
    source : Tensor [B, W]
        Source audio; a stretched view holds at least
        ``source_samples_needed(chunk_samples, rate)`` real samples (``trainer.data``).
    semitones, rate : Tensor [B]
    pitch_applied, stretch_applied : BoolTensor [B]
    chunk_samples : int

    Returns
    -------
    Tensor [B, chunk_samples]
    """
    from engine.model.transforms import pitch_shift, time_stretch

    y = source[:, :chunk_samples].clone()
    idx = torch.nonzero(stretch_applied, as_tuple=True)[0]
    if idx.numel():
        y[idx] = time_stretch(source[idx], rate[idx], out_samples=chunk_samples, sr=sr)
    idx = torch.nonzero(pitch_applied, as_tuple=True)[0]
    if idx.numel():
        y[idx] = pitch_shift(y[idx], semitones[idx], sr=sr)
    return y
