"""Reconstruction objective: decode the input chunk's spectrogram from V^++ (``--recon-weight``).

Wilkins, Ding, Fuentes, Bello (arXiv 2507.22995) pair the contrastive losses that
structure the subspaces with a decoder that reconstructs the input from the concatenated
latent, so that what the invariances throw away is still kept somewhere. Here:

* the target is the frontend's log-mel spectrogram of the view, average-pooled to a
  coarse ``freq x frames`` grid and standardised per example (zero mean, unit variance:
  loudness is not what the subspaces should spend capacity on);
* the decoder is a small MLP from the concatenated subspace embeddings (layer-normalised,
  since the structured branches and the learned tails have different scales) to that grid;
* the loss is the mean squared error, added to the contrastive total with weight ``W``.

The decoder is a training aid: it is kept in the training state (exact resume) but not in
the app's checkpoint, which holds the encoder only.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

# Coarse target grid: 96 mel bands -> 48, 300 frames of a 3-s chunk -> 16.
TARGET_FREQ = 48
TARGET_FRAMES = 16


def recon_target(spec: torch.Tensor, freq: int = TARGET_FREQ, frames: int = TARGET_FRAMES,
                 eps: float = 1e-5) -> torch.Tensor:
    """``[B, 1, F, T]`` (or ``[B, F, T]``) spectrogram -> ``[B, freq * frames]`` standardised grid."""
    if spec.dim() == 3:
        spec = spec.unsqueeze(1)
    grid = F.adaptive_avg_pool2d(spec.float(), (freq, frames)).flatten(1)
    mean = grid.mean(dim=1, keepdim=True)
    std = grid.std(dim=1, unbiased=False, keepdim=True)
    return (grid - mean) / (std + eps)


def recon_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error over every element of the batch (the target is not differentiated)."""
    if pred.shape != target.shape:
        raise ValueError(f"reconstruction {tuple(pred.shape)} does not match target {tuple(target.shape)}")
    return (pred.float() - target.detach().float()).square().mean()


def concat_subspaces(embeddings: Mapping[str, torch.Tensor], order: Sequence[str]) -> torch.Tensor:
    """V^++: the subspace embeddings side by side, in the config's subspace order."""
    return torch.cat([embeddings[name] for name in order], dim=1)


class SpectrogramDecoder(nn.Module):
    """LayerNorm -> Linear -> GELU -> Linear: V^++ ``[B, D]`` -> ``[B, freq * frames]``."""

    def __init__(self, in_dim: int, hidden: int = 512, freq: int = TARGET_FREQ,
                 frames: int = TARGET_FRAMES) -> None:
        super().__init__()
        self.freq, self.frames = freq, frames
        self.net = nn.Sequential(nn.LayerNorm(in_dim), nn.Linear(in_dim, hidden), nn.GELU(),
                                 nn.Linear(hidden, freq * frames))

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        return self.net(v.float())


class WithDecoder(nn.Module):
    """The encoder and its decoder as one module (one DDP wrapper, one optimiser).

    ``forward(y)`` returns the encoder's outputs plus ``"reconstruction"`` (decoded V^++)
    and ``"target"`` (:func:`recon_target` of the encoder's own frontend output).
    """

    def __init__(self, model: nn.Module, decoder: SpectrogramDecoder) -> None:
        super().__init__()
        self.model, self.decoder = model, decoder

    def forward(self, y: torch.Tensor) -> dict[str, object]:
        out = dict(self.model(y))
        v = concat_subspaces(out["embeddings"], self.model.cfg.subspaces)
        out["reconstruction"] = self.decoder(v)
        out["target"] = recon_target(out["spectrogram"].detach(), self.decoder.freq,
                                     self.decoder.frames)
        return out
