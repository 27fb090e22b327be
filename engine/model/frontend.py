"""Spectrogram frontends: one implementation each, shared by the trainer and the engine.

``paper`` is MULE's log-mel (paper Section II; McCallum et al. 2022): 16 kHz, n_fft 2048,
window 400, hop 160, 96 HTK mel bands over 0-8 kHz, power compressed as
``log10(1 + 10000 x)``, 300 frames per 3 s chunk.
"""
from __future__ import annotations

import torch
import torchaudio.functional as AF
from torch import nn

from engine.config import FrontendConfig

LOG_SCALE = 10_000.0


class LogMel(nn.Module):
    """Waveform ``y [B, T]`` -> log-mel ``[B, 1, n_mels, T // hop_length]``.

    The STFT is centred (frames are aligned on ``k * hop_length``) and the trailing
    frame is dropped, so a 48 000-sample chunk gives exactly 300 frames.
    """

    def __init__(self, cfg: FrontendConfig) -> None:
        super().__init__()
        self.cfg = cfg
        fb = AF.melscale_fbanks(
            n_freqs=cfg.n_fft // 2 + 1, f_min=cfg.f_min, f_max=cfg.f_max,
            n_mels=cfg.n_mels, sample_rate=cfg.sample_rate, norm=None, mel_scale="htk",
        )
        self.register_buffer("mel_fb", fb, persistent=False)  # [n_freqs, n_mels]
        self.register_buffer("window", torch.hann_window(cfg.win_length), persistent=False)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        if y.dim() == 1:
            y = y.unsqueeze(0)
        with torch.autocast(device_type=y.device.type, enabled=False):
            spec = torch.stft(
                y.float(), n_fft=self.cfg.n_fft, hop_length=self.cfg.hop_length,
                win_length=self.cfg.win_length, window=self.window, center=True,
                pad_mode="constant", return_complex=True,
            )
            power = spec.real.square() + spec.imag.square()  # [B, F, frames]
            mel = torch.matmul(power.transpose(1, 2), self.mel_fb).transpose(1, 2)
            n_frames = y.shape[-1] // self.cfg.hop_length
            out = torch.log10(1.0 + LOG_SCALE * mel[..., :n_frames])
        return out.unsqueeze(1)


FRONTENDS = {"paper": LogMel}


def build_frontend(cfg: FrontendConfig) -> nn.Module:
    """The frontend module named by ``cfg.kind``."""
    try:
        return FRONTENDS[cfg.kind](cfg)
    except KeyError:
        raise ValueError(f"unknown frontend {cfg.kind!r}; expected one of {tuple(FRONTENDS)}") from None
