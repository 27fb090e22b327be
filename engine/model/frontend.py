"""Spectrogram frontends: one implementation each, shared by the trainer and the engine.

``paper`` is MULE's log-mel (paper Section II; McCallum et al. 2022): 16 kHz, n_fft 2048,
window 400, hop 160, 96 HTK mel bands over 0-8 kHz, power compressed as
``log10(1 + 10000 x)``, 300 frames per 3 s chunk. With ``peak_db`` each chunk's peak is
brought to that level first (:func:`level`).
"""
from __future__ import annotations

import torch
import torchaudio.functional as AF
from torch import nn

from engine.config import FrontendConfig
from engine.model.stft import MAX_GAIN_DB, StftSpec

LOG_SCALE = 10_000.0


def level(y: torch.Tensor, peak_db: float | None) -> torch.Tensor:
    """Waveforms ``[B, T]`` with each one's peak brought to ``peak_db`` dBFS (raised by at
    most ``MAX_GAIN_DB``), :func:`engine.model.stft.peak_gain` in torch; None: as they are."""
    if peak_db is None:
        return y
    peak = y.abs().amax(dim=-1, keepdim=True).clamp_min(1e-12)
    return y * (10.0 ** (peak_db / 20.0) / peak).clamp(max=10.0 ** (MAX_GAIN_DB / 20.0))


class LogMel(nn.Module):
    """Waveform ``y [B, T]`` -> log-mel ``[B, 1, n_mels, T // hop_length]``.

    The STFT is centred (frames are aligned on ``k * hop_length``) and the trailing
    frame is dropped, so a 48 000-sample chunk gives exactly 300 frames.
    """

    def __init__(self, cfg: FrontendConfig) -> None:
        super().__init__()
        self.cfg = cfg
        # On the CPU even inside a meta-device build (a checkpoint's shapes are checked on
        # a meta network before any weight is allocated): the filterbank reads values.
        with torch.device("cpu"):
            fb = AF.melscale_fbanks(
                n_freqs=cfg.n_fft // 2 + 1, f_min=cfg.f_min, f_max=cfg.f_max,
                n_mels=cfg.n_mels, sample_rate=cfg.sample_rate, norm=None, mel_scale="htk",
            )
            window = torch.hann_window(cfg.win_length)
        self.register_buffer("mel_fb", fb, persistent=False)  # [n_freqs, n_mels]
        self.register_buffer("window", window, persistent=False)

    @property
    def stft_spec(self) -> StftSpec:
        """The STFT this frontend starts from (the onnxruntime backend runs it in numpy)."""
        c = self.cfg
        return StftSpec(n_fft=c.n_fft, hop_length=c.hop_length, win_length=c.win_length,
                        pad_mode="constant", power=2, drop_last=True, peak_db=c.peak_db)

    def spectrum(self, y: torch.Tensor) -> torch.Tensor:
        """Waveform ``[B, T]`` -> power spectrum ``[B, T // hop_length, n_fft // 2 + 1]``."""
        with torch.autocast(device_type=y.device.type, enabled=False):
            spec = torch.stft(
                level(y.float(), self.cfg.peak_db), n_fft=self.cfg.n_fft,
                hop_length=self.cfg.hop_length,
                win_length=self.cfg.win_length, window=self.window, center=True,
                pad_mode="constant", return_complex=True,
            )
            power = spec.real.square() + spec.imag.square()  # [B, F, frames]
            return power[..., : y.shape[-1] // self.cfg.hop_length].transpose(1, 2)

    def from_spectrum(self, power: torch.Tensor) -> torch.Tensor:
        """Power spectrum ``[B, frames, F]`` -> log-mel ``[B, 1, n_mels, frames]``."""
        with torch.autocast(device_type=power.device.type, enabled=False):
            mel = torch.matmul(power.float(), self.mel_fb).transpose(1, 2)
            return torch.log10(1.0 + LOG_SCALE * mel).unsqueeze(1)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        if y.dim() == 1:
            y = y.unsqueeze(0)
        return self.from_spectrum(self.spectrum(y))


FRONTENDS = {"paper": LogMel}


def build_frontend(cfg: FrontendConfig) -> nn.Module:
    """The frontend module named by ``cfg.kind``."""
    try:
        return FRONTENDS[cfg.kind](cfg)
    except KeyError:
        raise ValueError(f"unknown frontend {cfg.kind!r}; expected one of {tuple(FRONTENDS)}") from None
