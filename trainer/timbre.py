"""Calibrating the vibe space's timbre descriptor on a training corpus.

The descriptor (``engine.model.branches.TimbreDescriptor``) is standardised by fixed
per-dimension statistics, as the MFCC baseline z-scores over its dataset; they are
measured once, on chunks drawn from the training data before the first step, and saved
with the checkpoint.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from trainer.data import Track


def calibration_chunks(tracks: Sequence[Track], *, n: int = 512, seed: int = 0,
                       chunk_samples: int = 48_000, sr: int = 16_000) -> np.ndarray:
    """``[n, chunk_samples]`` chunks at random places of random tracks (deterministic in ``seed``)."""
    from engine.audio.decode import read_chunks

    rng = np.random.default_rng([seed, 31])
    out = np.zeros((n, chunk_samples), dtype=np.float32)
    for i, t in enumerate(rng.integers(len(tracks), size=n)):
        latest = max(0.0, tracks[t].duration - chunk_samples / sr)
        start = float(rng.uniform(0, latest))
        y = read_chunks(tracks[t].path, [start], chunk_samples=chunk_samples, sr=sr)[0]
        out[i, : len(y)] = y[:chunk_samples]
    return out


@torch.no_grad()
def calibrate_timbre(model: torch.nn.Module, tracks: Sequence[Track], *, n: int = 512, seed: int = 0) -> bool:
    """Set the model's descriptor statistics from ``n`` training chunks; False if it has none."""
    timbre = getattr(model, "timbre", None)
    if timbre is None:
        return False
    chunks = torch.from_numpy(calibration_chunks(tracks, n=n, seed=seed))
    device = timbre.loc.device
    specs = [model.frontend(chunks[i : i + 64].to(device)) for i in range(0, len(chunks), 64)]
    timbre.calibrate(torch.cat(specs))
    return True
