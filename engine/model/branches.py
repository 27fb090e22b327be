"""Musically structured pitch and tempo branches for a CPU-scale LOEV++.

At the scale this project trains on a CPU, a learned stage-4 copy per subspace does not
learn key or tempo (measured: pitch space 0.20 key@5, tempo space 0.38 acc1@5),
while simple structure does. These branches keep LOEV++'s contract (one pitch-variant and
one tempo-variant subspace beside the learned invariant one) and build the variance in:

* ``PitchBranch``: a 24-bins-per-octave log-frequency spectrum, where a pitch shift is a
  translation; a learned convolution along log-frequency (harmonic templates, as in deep
  chroma extractors), folded into 24 pitch classes and convolved circularly along them, so
  a shift of s semitones rolls the output by 2 s bins (pitch-equivariant by construction).
* ``TempoBranch``: band-wise onset envelopes from the log-mel, their autocorrelation read
  at log-spaced lags, where a time stretch is a translation; a learned convolution along
  the lag axis.

Each branch also carries its parameter-free feature as one channel (time-averaged folded
chroma; full-band onset autocorrelation), so that an untrained branch starts from a known
good descriptor and training can only add to it. Every channel is mean-removed and
L2-normalised before flattening, so each one weighs the same in a cosine distance.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from engine.model.stft import StftSpec

BINS_PER_OCTAVE = 24
PITCH_FMIN = 65.40639  # C2
PITCH_OCTAVES = 6
LAG_MIN_S, LAG_MAX_S, LAGS_PER_OCTAVE = 0.25, 1.5, 24  # 240 down to 40 BPM


def logfreq_filterbank(*, n_fft: int, sr: int, fmin: float = PITCH_FMIN, n_octaves: int = PITCH_OCTAVES,
                       bins_per_octave: int = BINS_PER_OCTAVE) -> np.ndarray:
    """Weights ``[n_fft // 2 + 1, n_octaves * bins_per_octave]`` from STFT bins to log-frequency.

    Triangles one bin wide on the log2-frequency axis; where a triangle holds no STFT bin
    (low frequencies), linear interpolation between the two neighbouring STFT bins.
    """
    n_bins = n_octaves * bins_per_octave
    freqs = np.arange(n_fft // 2 + 1) * sr / n_fft
    centres = fmin * 2.0 ** (np.arange(n_bins) / bins_per_octave)
    logf = np.log2(np.maximum(freqs, 1e-6))
    w = np.maximum(0.0, 1.0 - np.abs(logf[:, None] - np.log2(centres)[None, :]) * bins_per_octave)
    for k in np.flatnonzero(w.sum(axis=0) < 1e-3):
        pos = centres[k] * n_fft / sr
        lo = int(np.floor(pos))
        w[lo, k], w[lo + 1, k] = 1.0 - (pos - lo), pos - lo
    return (w / w.sum(axis=0, keepdims=True)).astype(np.float32)


def log_lags(sr_frames: float, *, lag_min_s: float = LAG_MIN_S, lag_max_s: float = LAG_MAX_S,
             per_octave: int = LAGS_PER_OCTAVE) -> np.ndarray:
    """Log-spaced autocorrelation lags in frames (fractional)."""
    n = int(round(per_octave * math.log2(lag_max_s / lag_min_s))) + 1
    return (lag_min_s * sr_frames) * 2.0 ** (np.arange(n) / per_octave)


def normalise_channels(x: torch.Tensor) -> torch.Tensor:
    """``[B, C, N]``: remove each channel's mean, scale it to unit norm, flatten."""
    x = x - x.mean(dim=-1, keepdim=True)
    x = x / x.norm(dim=-1, keepdim=True).clamp_min(1e-6)
    return x.flatten(1) / math.sqrt(x.shape[1])


class PitchBranch(nn.Module):
    """Waveform ``[B, T]`` -> pitch-class embedding ``[B, (1 + channels) * 24]``."""

    def __init__(self, *, sr: int = 16_000, n_fft: int = 4096, hop_length: int = 160,
                 channels: int = 8, time_pool: int = 10) -> None:
        super().__init__()
        # Frames every time_pool / 2 hops, averaged in pairs: the 256 ms window still covers
        # every sample, at a fifth of the cost of a frame per hop.
        self.n_fft, self.hop_length, self.time_pool = n_fft, hop_length * time_pool // 2, 2
        fb = logfreq_filterbank(n_fft=n_fft, sr=sr)
        self.n_used = int(np.flatnonzero(fb.sum(axis=1) > 0).max()) + 1  # STFT bins the filters touch
        self.register_buffer("fb", torch.from_numpy(fb[: self.n_used]), persistent=False)
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)
        k = 2 * BINS_PER_OCTAVE + 1  # two octaves of harmonics
        self.harmonic = nn.Conv2d(1, channels, (k, 3), padding=(k // 2, 1))
        self.mix = nn.Conv2d(channels, channels, 1)
        self.circular = nn.Conv2d(channels, channels, (5, 3), padding=(2, 1), padding_mode="circular")
        self.out_dim = (1 + channels) * BINS_PER_OCTAVE

    @property
    def stft_spec(self) -> StftSpec:
        """The STFT this branch starts from (the onnxruntime backend runs it in numpy)."""
        return StftSpec(n_fft=self.n_fft, hop_length=self.hop_length, win_length=self.n_fft,
                        pad_mode="reflect", power=1, n_bins=self.n_used)

    def spectrum(self, y: torch.Tensor) -> torch.Tensor:
        """Waveform ``[B, T]`` -> magnitude spectrum ``[B, frames, n_used]``."""
        with torch.autocast(device_type=y.device.type, enabled=False):
            spec = torch.stft(y.float(), n_fft=self.n_fft, hop_length=self.hop_length, window=self.window,
                              center=True, return_complex=True)[:, : self.n_used].abs()
        return spec.transpose(1, 2)

    def logfreq(self, mag: torch.Tensor) -> torch.Tensor:
        """``[B, frames, n_used]`` -> compressed log-frequency magnitude ``[B, 1, 144, frames / time_pool]``."""
        with torch.autocast(device_type=mag.device.type, enabled=False):
            lf = torch.log1p(100.0 * torch.matmul(mag.float(), self.fb).transpose(1, 2))
            lf = F.avg_pool1d(lf, self.time_pool, ceil_mode=True)
        return lf.unsqueeze(1)

    @staticmethod
    def fold(x: torch.Tensor) -> torch.Tensor:
        """Sum octaves: ``[B, C, octaves * 24, T]`` -> ``[B, C, 24, T]``."""
        b, c, f, t = x.shape
        return x.reshape(b, c, f // BINS_PER_OCTAVE, BINS_PER_OCTAVE, t).sum(dim=2)

    def from_spectrum(self, mag: torch.Tensor) -> torch.Tensor:
        """Magnitude spectrum ``[B, frames, n_used]`` -> pitch-class embedding."""
        lf = self.logfreq(mag)
        plain = self.fold(lf).mean(dim=-1)  # [B, 1, 24] parameter-free folded chroma
        h = F.gelu(self.harmonic(lf))
        h = self.fold(F.gelu(self.mix(h)))
        h = F.gelu(self.circular(h)).mean(dim=-1)  # [B, C, 24]
        return normalise_channels(torch.cat([plain, h], dim=1))

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return self.from_spectrum(self.spectrum(y))


class TempoBranch(nn.Module):
    """Log-mel ``[B, 1, n_mels, frames]`` -> log-lag periodicity embedding ``[B, (1 + channels) * L]``."""

    def __init__(self, *, frame_rate: float = 100.0, n_bands: int = 4, channels: int = 8) -> None:
        super().__init__()
        self.n_bands = n_bands
        self.register_buffer("lags", torch.from_numpy(log_lags(frame_rate).astype(np.float32)), persistent=False)
        self.conv1 = nn.Conv1d(1 + n_bands, channels, 7, padding=3)
        self.conv2 = nn.Conv1d(channels, channels, 7, padding=3)
        self.out_dim = (1 + channels) * len(self.lags)

    def onsets(self, logmel: torch.Tensor) -> torch.Tensor:
        """Spectral flux, full band then ``n_bands`` bands: ``[B, 1 + n_bands, frames - 1]``."""
        x = logmel[:, 0]
        flux = F.relu(x[..., 1:] - x[..., :-1])
        bands = flux.reshape(flux.shape[0], self.n_bands, -1, flux.shape[-1]).mean(dim=2)
        return torch.cat([flux.mean(dim=1, keepdim=True), bands], dim=1)

    def autocorrelation(self, env: torch.Tensor) -> torch.Tensor:
        """Normalised autocorrelation of ``[B, C, N]`` read at the log-spaced lags."""
        env = env - env.mean(dim=-1, keepdim=True)
        n = env.shape[-1]
        spec = torch.fft.rfft(env, n=2 * n)
        ac = torch.fft.irfft(spec.real.square() + spec.imag.square(), n=2 * n)[..., :n]
        ac = ac / ac[..., :1].clamp_min(1e-6)
        lo = self.lags.floor().long().clamp(max=n - 2)
        frac = (self.lags - lo).clamp(0, 1)
        return ac[..., lo] * (1 - frac) + ac[..., lo + 1] * frac

    def forward(self, logmel: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=logmel.device.type, enabled=False):
            ac = self.autocorrelation(self.onsets(logmel.float()))  # [B, 1 + bands, L]
        h = F.gelu(self.conv2(F.gelu(self.conv1(ac))))
        return normalise_channels(torch.cat([ac[:, :1], h], dim=1))
