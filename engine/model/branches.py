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

from engine.model.frontend import level
from engine.model.kernels import bpm_bins, psd_root, tempo_kernel
from engine.model.stft import StftSpec

BINS_PER_OCTAVE = 24
PITCH_FMIN = 65.40639  # C2
PITCH_OCTAVES = 6
LAG_MIN_S, LAG_MAX_S, LAGS_PER_OCTAVE = 0.25, 1.5, 24  # 240 down to 40 BPM
# The tempo projector's onset periodicity: finer lags, down to 0.1 s (a beat's subdivisions)
ONSET_LAG_MIN_S, ONSET_LAGS_PER_OCTAVE = 0.1, 36
# ... and its onset tempogram: Fourier magnitudes at 30-600 BPM, 36 per octave
TEMPOGRAM_BPM_MIN, TEMPOGRAM_BPM_MAX, TEMPOGRAM_PER_OCTAVE = 30.0, 600.0, 36


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


def lag_autocorrelation(env: torch.Tensor, lags: torch.Tensor, *, unbiased: bool = False) -> torch.Tensor:
    """Autocorrelation of ``[B, C, N]`` (mean removed, 1 at lag 0) read at fractional lags
    ``[L]`` in frames by linear interpolation: ``[B, C, L]``. ``unbiased`` divides each lag
    by its overlap, so a long lag is not penalised for it."""
    env = env - env.mean(dim=-1, keepdim=True)
    n = env.shape[-1]
    spec = torch.fft.rfft(env, n=2 * n)
    ac = torch.fft.irfft(spec.real.square() + spec.imag.square(), n=2 * n)[..., :n]
    ac = ac / ac[..., :1].clamp_min(1e-6)
    if unbiased:
        ac = ac * (n / torch.arange(n, 0, -1, device=ac.device, dtype=ac.dtype))
    lo = lags.floor().long().clamp(max=n - 2)
    frac = (lags - lo).clamp(0, 1)
    return ac[..., lo] * (1 - frac) + ac[..., lo + 1] * frac


def kernel_root(k: np.ndarray) -> torch.Tensor:
    """:func:`engine.model.kernels.psd_root` as a float32 tensor: rows of ``p @ root`` have
    dot products ``p K q``, the expected kernel value of two posteriors."""
    return torch.from_numpy(psd_root(k).astype(np.float32))


def normalise_channels(x: torch.Tensor) -> torch.Tensor:
    """``[B, C, N]``: remove each channel's mean, scale it to unit norm, flatten."""
    x = x - x.mean(dim=-1, keepdim=True)
    x = x / x.norm(dim=-1, keepdim=True).clamp_min(1e-6)
    return x.flatten(1) / math.sqrt(x.shape[1])


class PitchBranch(nn.Module):
    """Waveform ``[B, T]`` -> pitch-class embedding ``[B, (1 + channels) * 24]``."""

    def __init__(self, *, sr: int = 16_000, n_fft: int = 4096, hop_length: int = 160,
                 channels: int = 8, time_pool: int = 10, peak_db: float | None = None) -> None:
        super().__init__()
        self.peak_db = peak_db  # the frontend's input level (engine.model.frontend.level)
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
                        pad_mode="reflect", power=1, n_bins=self.n_used, peak_db=self.peak_db)

    def spectrum(self, y: torch.Tensor) -> torch.Tensor:
        """Waveform ``[B, T]`` -> magnitude spectrum ``[B, frames, n_used]``."""
        with torch.autocast(device_type=y.device.type, enabled=False):
            spec = torch.stft(level(y.float(), self.peak_db), n_fft=self.n_fft, hop_length=self.hop_length,
                              window=self.window, center=True, return_complex=True)[:, : self.n_used].abs()
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

    def __init__(self, *, frame_rate: float = 100.0, n_bands: int = 4, channels: int = 8,
                 plain_share: float = 0.0) -> None:
        super().__init__()
        self.n_bands, self.plain_share = n_bands, plain_share
        self.register_buffer("lags", torch.from_numpy(log_lags(frame_rate).astype(np.float32)), persistent=False)
        fine = log_lags(frame_rate, lag_min_s=ONSET_LAG_MIN_S, per_octave=ONSET_LAGS_PER_OCTAVE)
        self.register_buffer("fine_lags", torch.from_numpy(fine.astype(np.float32)), persistent=False)
        self.onset_dim = (1 + n_bands) * len(fine)
        n_bpm = int(math.floor(TEMPOGRAM_PER_OCTAVE * math.log2(TEMPOGRAM_BPM_MAX / TEMPOGRAM_BPM_MIN))) + 1
        bpm = TEMPOGRAM_BPM_MIN * 2.0 ** (np.arange(n_bpm) / TEMPOGRAM_PER_OCTAVE)
        self.register_buffer("tempogram_hz", torch.from_numpy((bpm / 60.0).astype(np.float32)), persistent=False)
        self.frame_rate = frame_rate
        self.tempogram_dim = (1 + n_bands) * n_bpm
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
        return lag_autocorrelation(env, self.lags)

    def onset_tempogram(self, env: torch.Tensor) -> torch.Tensor:
        """Parameter-free, for the tempo projector: the Fourier magnitude of every band of
        the onset envelope ``env`` (:meth:`onsets`; Hann window, mean removed) at 30-600 BPM,
        36 per octave, each band scaled to unit norm: ``[B, tempogram_dim]``. Where the
        autocorrelation also peaks at multiples of the beat period, this peaks at multiples
        of its frequency; together they tell the metrical levels apart better than either."""
        env = env - env.mean(dim=-1, keepdim=True)
        n = env.shape[-1]
        env = env * torch.hann_window(n, periodic=False, device=env.device, dtype=env.dtype)
        t = torch.arange(n, device=env.device, dtype=env.dtype) / self.frame_rate
        phase = (2 * math.pi) * self.tempogram_hz[:, None] * t[None, :]  # [K, N]
        re, im = env @ torch.cos(phase).T, env @ torch.sin(phase).T
        mag = torch.sqrt(re.square() + im.square() + 1e-12)
        return (mag / mag.norm(dim=-1, keepdim=True).clamp_min(1e-6)).flatten(1)

    def onset_periodicity(self, env: torch.Tensor) -> torch.Tensor:
        """Parameter-free, for the tempo projector: the autocorrelation of every band of the
        onset envelope ``env`` (:meth:`onsets`), each lag divided by its overlap, at finer
        and shorter lags than the branch's own (0.1-1.5 s, 36 per octave), so that a beat's
        subdivisions can tell its metrical level apart: ``[B, onset_dim]``."""
        return lag_autocorrelation(env, self.fine_lags, unbiased=True).flatten(1)

    def projector_features(self, logmel: torch.Tensor, *, periodicity: bool, tempogram: bool) -> torch.Tensor:
        """The parameter-free features a tempo projector reads beside the branch's output:
        the onset periodicity and/or the onset tempogram of one onset envelope, ``[B, D]``."""
        with torch.autocast(device_type=logmel.device.type, enabled=False):
            env = self.onsets(logmel.float())
            parts = ([self.onset_periodicity(env)] if periodicity else []) + \
                    ([self.onset_tempogram(env)] if tempogram else [])
            return torch.cat(parts, dim=1)

    def forward(self, logmel: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=logmel.device.type, enabled=False):
            ac = self.autocorrelation(self.onsets(logmel.float()))  # [B, 1 + bands, L]
        h = F.gelu(self.conv2(F.gelu(self.conv1(ac))))
        out = normalise_channels(torch.cat([ac[:, :1], h], dim=1))
        if not self.plain_share:
            return out
        # The parameter-free channel keeps plain_share of the cosine whatever the training
        # does to the others (it measured better than a trained branch on held-out songs).
        n = ac.shape[-1]
        plain, learned = out[:, :n], out[:, n:]
        c = h.shape[1] + 1
        return torch.cat([plain * math.sqrt(c * self.plain_share),
                          learned * math.sqrt(c / (c - 1) * (1 - self.plain_share))], dim=1)


def dct_matrix(n_out: int, n_in: int) -> np.ndarray:
    """Orthonormal DCT-II ``[n_out, n_in]`` (what MFCCs apply across mel bands)."""
    k = np.arange(n_out)[:, None]
    n = np.arange(n_in)[None, :]
    m = np.cos(np.pi / n_in * (n + 0.5) * k) * math.sqrt(2.0 / n_in)
    m[0] /= math.sqrt(2.0)
    return m.astype(np.float32)


class TimbreDescriptor(nn.Module):
    """Log-mel ``[B, 1, n_mels, frames]`` -> a parameter-free timbre descriptor ``[B, D]``.

    What the MFCC baseline measures, computed from the network's own input: the DCT of
    the log-mel across bands (cepstral coefficients), their mean and standard deviation
    over time; plus the mean and spread of the spectral centroid (in bands) and envelope
    statistics that tell a closed hat from an open one (the share of frames within 20 dB
    of the loudest, the energy's temporal centroid, its onset flux). Standardised by fixed
    per-dimension statistics of a training corpus (``loc`` and ``scale`` buffers, set by
    :meth:`calibrate` before training and saved with the checkpoint), as the baseline
    z-scores over its dataset. No learned parameter: an untrained network's vibe space
    already measures what MFCCs do, and the learned features add to it.
    """

    N_ENVELOPE = 5

    def __init__(self, n_mels: int, n_coeffs: int = 20) -> None:
        super().__init__()
        self.register_buffer("dct", torch.from_numpy(dct_matrix(n_coeffs, n_mels)), persistent=False)
        self.register_buffer("bands", torch.arange(n_mels, dtype=torch.float32) / n_mels, persistent=False)
        self.out_dim = 2 * n_coeffs + self.N_ENVELOPE
        self.register_buffer("loc", torch.zeros(self.out_dim))
        self.register_buffer("scale", torch.ones(self.out_dim))

    def raw(self, logmel: torch.Tensor) -> torch.Tensor:
        """The descriptor before standardisation."""
        with torch.autocast(device_type=logmel.device.type, enabled=False):
            x = logmel[:, 0].float()  # [B, F, T], log10(1 + 10^4 power)
            cep = torch.matmul(self.dct, x)  # [B, C, T]
            energy = x.mean(dim=1)  # [B, T]
            w = x.clamp_min(0.0)
            centroid = (w * self.bands[:, None]).sum(dim=1) / w.sum(dim=1).clamp_min(1e-6)  # [B, T]
            ew = energy.clamp_min(0.0) + 1e-6
            ew = ew / ew.sum(dim=-1, keepdim=True)
            c_mean = (centroid * ew).sum(dim=-1)
            c_std = ((centroid - c_mean[:, None]).square() * ew).sum(dim=-1).clamp_min(1e-8).sqrt()
            peak = energy.max(dim=-1, keepdim=True).values
            loud = torch.sigmoid((energy - (peak - 2.0)) * 8.0).mean(dim=-1)  # ~ frames within 20 dB
            t = torch.linspace(0.0, 1.0, energy.shape[-1], device=x.device)
            t_centroid = (ew * t).sum(dim=-1)
            flux = F.relu(energy[:, 1:] - energy[:, :-1]).mean(dim=-1)
            env = torch.stack([c_mean, c_std, loud, t_centroid, flux], dim=1)
            return torch.cat([cep.mean(dim=-1), cep.std(dim=-1), env], dim=1)

    @torch.no_grad()
    def calibrate(self, logmel: torch.Tensor) -> None:
        """Set ``loc`` and ``scale`` to the mean and standard deviation over a batch of chunks."""
        raw = self.raw(logmel)
        self.loc.copy_(raw.mean(dim=0))
        self.scale.copy_(raw.std(dim=0).clamp_min(1e-4))

    def standardise(self, raw: torch.Tensor) -> torch.Tensor:
        """:meth:`raw`'s output -> the descriptor."""
        return (raw - self.loc) / self.scale

    def forward(self, logmel: torch.Tensor) -> torch.Tensor:
        return self.standardise(self.raw(logmel))


class TimbreProjector(nn.Module):
    """Log-mel ``[B, 1, n_mels, frames]`` -> a learned timbre embedding ``[B, out_dim]``.

    A small MLP over pooled log-mel statistics: per band, the mean, spread and peak over
    the chunk and the mean and spread over its active frames (within 30 dB of the loudest,
    so a short one-shot's zero padding does not dilute them), beside the timbre
    descriptor's raw values. Trained alone (``loev-train projector``) with a cosine-softmax
    over sound types and song families of rendered corpora, so that it learns which
    spectral shapes tell a snare from a clap or a closed hat from a ride, which fixed
    statistics cannot. ``loc`` and ``scale`` standardise its input, set from the training
    corpus and saved with the checkpoint like the descriptor's.
    """

    HIDDEN = 512
    OUT_DIM = 128
    ACTIVE_DB = 3.0  # the log-mel is log10(1 + 10^4 power): 3 units = 30 dB

    def __init__(self, n_mels: int, descriptor_dim: int) -> None:
        super().__init__()
        self.in_dim = 5 * n_mels + descriptor_dim
        self.out_dim = self.OUT_DIM
        self.register_buffer("loc", torch.zeros(self.in_dim))
        self.register_buffer("scale", torch.ones(self.in_dim))
        # Dropout only acts in training (loev-train projector); inference is the two layers.
        self.mlp = nn.Sequential(nn.Linear(self.in_dim, self.HIDDEN), nn.GELU(), nn.Dropout(0.3),
                                 nn.Linear(self.HIDDEN, self.OUT_DIM))

    def pooled(self, logmel: torch.Tensor, descriptor_raw: torch.Tensor) -> torch.Tensor:
        """The MLP's input before standardisation, ``[B, in_dim]``."""
        with torch.autocast(device_type=logmel.device.type, enabled=False):
            x = logmel[:, 0].float()  # [B, F, T]
            energy = x.mean(dim=1)
            active = (energy > energy.amax(dim=-1, keepdim=True) - self.ACTIVE_DB).float()
            w = (active / active.sum(dim=-1, keepdim=True))[:, None]  # the loudest frame is always active
            mu = (x * w).sum(dim=-1)
            sd = ((x - mu[..., None]).square() * w).sum(dim=-1).clamp_min(1e-8).sqrt()
            return torch.cat([x.mean(dim=-1), x.std(dim=-1), x.amax(dim=-1), mu, sd, descriptor_raw.float()], dim=1)

    def forward(self, logmel: torch.Tensor, descriptor_raw: torch.Tensor) -> torch.Tensor:
        return self.mlp((self.pooled(logmel, descriptor_raw) - self.loc) / self.scale)


class TempoProjector(nn.Module):
    """The tempo branch's output ``[B, D]`` (and after it, in models with
    ``tempo_projector_onsets`` the branch's onset periodicity, with
    ``tempo_projector_tempogram`` its onset tempogram) -> a learned tempo embedding
    ``[B, out_dim]``.

    A small MLP trained alone (``loev-train projector --space tempo``) with a cosine-softmax
    over log-spaced BPM bins and "no tempo" on rendered songs, loops and time-stretched
    copies of them: chunks at one tempo gather, whatever their instruments. ``loc`` and
    ``scale`` standardise its input, set from the training corpus.

    With ``posterior`` (config ``tempo_projector_posterior``) it keeps the cosine-softmax's
    class centres and gives the softmax itself, a posterior ``p`` over the BPM bins and "no
    tempo", embedded as ``p K^(1/2)`` with ``K`` a Gaussian kernel two bins wide (3.9 %) and
    "no tempo" apart: the dot product of two embeddings is the expected closeness of their
    tempi, as the key projector's is of their keys.
    """

    HIDDEN = 512
    OUT_DIM = 128
    # The posterior output (classes: the BPM bins, then "no tempo"): the softmax's scale in
    # training and at inference (softer: a file's chunks are averaged), and the kernel's
    # width in bins (2 bins = 3.9 %, acc1's tolerance).
    TRAIN_SCALE, POSTERIOR_SCALE, KERNEL_BINS = 16.0, 8.0, 2.0

    def __init__(self, in_dim: int, *, posterior: bool = False) -> None:
        super().__init__()
        self.in_dim, self.posterior = in_dim, posterior
        self.register_buffer("loc", torch.zeros(in_dim))
        self.register_buffer("scale", torch.ones(in_dim))
        # Dropout only acts in training; inference is the two layers.
        self.mlp = nn.Sequential(nn.Linear(in_dim, self.HIDDEN), nn.GELU(), nn.Dropout(0.3),
                                 nn.Linear(self.HIDDEN, self.OUT_DIM))
        self.out_dim = self.OUT_DIM
        if posterior:
            n = len(self.bpm_bins()) + 1
            self.centres = nn.Parameter(torch.zeros(n, self.OUT_DIM))
            self.register_buffer("root", kernel_root(tempo_kernel(n - 1, self.KERNEL_BINS)), persistent=False)
            self.out_dim = n

    @staticmethod
    def bpm_bins() -> np.ndarray:
        """The posterior's BPM bins: the tempo head's (:func:`engine.model.kernels.bpm_bins`)."""
        return bpm_bins()

    def features(self, tempo: torch.Tensor) -> torch.Tensor:
        """The MLP's output ``[B, 128]``, what the cosine-softmax is trained on."""
        return self.mlp((tempo.float() - self.loc) / self.scale)

    def logits(self, tempo: torch.Tensor, scale: float) -> torch.Tensor:
        """Cosine-softmax logits ``[B, bins + 1]`` against the class centres (posterior only)."""
        z = F.normalize(self.features(tempo), dim=1)
        return scale * z @ F.normalize(self.centres, dim=1).T

    def forward(self, tempo: torch.Tensor) -> torch.Tensor:
        if not self.posterior:
            return self.features(tempo)
        return torch.softmax(self.logits(tempo, self.POSTERIOR_SCALE), dim=1) @ self.root


class KeyProjector(nn.Module):
    """The pitch branch's output ``[B, channels * 24]`` -> a key embedding ``[B, 24]``.

    Learned key profiles: two templates (major, minor) per branch channel over the 24
    pitch-class bins, read at each of the 12 tonics by rolling the input (a circular
    correlation, as in template key finding), give 24 key logits; their softmax, a key
    posterior ``p``, is embedded as ``p @ K^(1/2)`` with ``K`` the symmetric key closeness
    of :func:`engine.keys.closeness` (same key 1, a fifth 0.25, relative 0.3, parallel 0.2),
    so that the dot product of two embeddings is the expected closeness of their keys.

    Keys are interleaved, output ``2 t + m`` for tonic ``t`` (C = 0) and mode ``m`` (0
    major, 1 minor), so a transposition by ``s`` semitones, which rolls the branch's bins by
    ``2 s``, rolls the output by ``2 s`` too: the pitch space stays pitch-equivariant.
    Trained alone (``loev-train projector --space key``) with cross-entropy over the keys
    of rendered songs and loops.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        from engine.keys import N_KEYS, closeness_table

        self.channels, self.out_dim = channels, N_KEYS
        self.templates = nn.Parameter(torch.zeros(2, channels, BINS_PER_OCTAVE))
        self.bias = nn.Parameter(torch.zeros(2))
        self.log_gain = nn.Parameter(torch.tensor(math.log(10.0)))
        per = BINS_PER_OCTAVE // 12
        tonic = torch.arange(12)
        # read[t, b]: the input bin that template bin b meets at tonic t
        self.register_buffer("read", (torch.arange(BINS_PER_OCTAVE)[None, :] + per * tonic[:, None])
                             % BINS_PER_OCTAVE, persistent=False)
        k = np.array(closeness_table())
        order = [t + 12 * m for t in range(12) for m in range(2)]  # interleaved -> engine.keys index
        self.register_buffer("root", kernel_root(k[np.ix_(order, order)]), persistent=False)

    @staticmethod
    def key_of_output(i: int) -> int:
        """The :mod:`engine.keys` index of output ``i`` (interleaved tonic and mode)."""
        return i // 2 + 12 * (i % 2)

    def logits(self, pitch: torch.Tensor) -> torch.Tensor:
        """Key logits ``[B, 24]``, interleaved, scaled by the learned gain."""
        x = pitch.float().reshape(pitch.shape[0], self.channels, BINS_PER_OCTAVE)[:, :, self.read]  # [B, C, 12, 24]
        out = torch.einsum("mcb,nctb->ntm", self.templates, x) + self.bias
        return out.reshape(pitch.shape[0], -1) * self.log_gain.exp()

    def forward(self, pitch: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.logits(pitch), dim=1) @ self.root


def combine_shares(parts: list[torch.Tensor], shares: list[float]) -> torch.Tensor:
    """Concatenate L2-normalised parts scaled by ``sqrt(share)``: the cosine of the result is
    the share-weighted mean of the parts' cosines."""
    total = sum(shares)
    return torch.cat([F.normalize(p, dim=1) * math.sqrt(s / total) for p, s in zip(parts, shares)], dim=1)


def tempo_salience(logmel: torch.Tensor, frame_rate: float = 100.0) -> torch.Tensor:
    """How periodic a chunk's onsets are, ``[B]`` in [0, 1]: 0 for a one-shot, high for a loop.

    The largest value of the full-band onset envelope's normalised autocorrelation over the
    tempo lags (0.25-1.5 s). A single hit has one onset and no repetition at those lags;
    a groove repeats at its beat. Parameter-free, for telling "no tempo" apart.
    """
    x = logmel[:, 0].float()
    flux = F.relu(x[..., 1:] - x[..., :-1]).mean(dim=1)  # [B, N]
    env = flux - flux.mean(dim=-1, keepdim=True)
    n = env.shape[-1]
    spec = torch.fft.rfft(env, n=2 * n)
    ac = torch.fft.irfft(spec.real.square() + spec.imag.square(), n=2 * n)[..., :n]
    # Unbiased: each lag divided by its overlap, so a long lag is not penalised for it.
    overlap = torch.arange(n, 0, -1, device=x.device, dtype=ac.dtype) / n
    ac = ac / overlap / ac[..., :1].clamp_min(1e-9)
    lo = int(LAG_MIN_S * frame_rate)
    hi = min(n - n // 4, int(LAG_MAX_S * frame_rate))
    return ac[..., lo:hi].amax(dim=-1).clamp(0.0, 1.0)
