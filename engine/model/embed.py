"""Track embeddings: evenly spaced 3 s chunks, batched through the network, averaged per
subspace and L2-normalised (DESIGN.md section 2).

The network runs on one of two backends, chosen when an :class:`Embedder` is built:
torch (:mod:`engine.model.torch_backend`) where it is installed, else onnxruntime
(:mod:`engine.model.onnx_backend`, the bundled app, which ships without torch).
``LOEV_BACKEND=torch|onnxruntime`` or ``Embedder(backend=...)`` forces one (tests,
benchmarks). This module imports neither: the backend module is imported once chosen.
"""
from __future__ import annotations

import importlib
import importlib.util
import os
from pathlib import Path
from typing import Any

import numpy as np

from engine.config import CHUNK_SAMPLES, SAMPLE_RATE
from engine.errors import CheckpointError
from engine.resources import default_checkpoint

BACKEND_ENV = "LOEV_BACKEND"
# name -> (module that runs it, the package it needs)
BACKENDS = {"torch": ("engine.model.torch_backend", "torch"),
            "onnxruntime": ("engine.model.onnx_backend", "onnxruntime")}
_ALIASES = {"onnx": "onnxruntime", "ort": "onnxruntime", "pytorch": "torch"}


def chunk_starts(n_samples: int, *, max_chunks: int = 16, chunk_samples: int = CHUNK_SAMPLES) -> np.ndarray:
    """Start samples of up to ``max_chunks`` chunks spread evenly over a track.

    Chunks overlap rather than leave a gap when the track is shorter than
    ``max_chunks`` chunks; a track shorter than one chunk has a single start at 0.
    """
    if n_samples <= chunk_samples:
        return np.zeros(1, dtype=np.int64)
    n = min(max_chunks, int(np.ceil(n_samples / chunk_samples)))
    return np.linspace(0, n_samples - chunk_samples, n).round().astype(np.int64)


def frame_chunks(y: np.ndarray, *, max_chunks: int = 16, chunk_samples: int = CHUNK_SAMPLES) -> np.ndarray:
    """``y [T]`` -> chunks ``[N, chunk_samples]``.

    A one-shot shorter than a chunk is zero-padded after its end, as a sampler plays it:
    looping it instead would invent a periodicity that the tempo subspace would read.
    """
    y = np.asarray(y, dtype=np.float32)
    if y.size < chunk_samples:
        out = np.zeros((1, chunk_samples), dtype=np.float32)
        out[0, : y.size] = y
        return out
    starts = chunk_starts(y.size, max_chunks=max_chunks, chunk_samples=chunk_samples)
    return np.stack([y[s : s + chunk_samples] for s in starts])


def _normalise(v: np.ndarray) -> np.ndarray:
    return (v / max(float(np.linalg.norm(v)), 1e-12)).astype(np.float32)


def _importable(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # a blocked or half-imported package
        return False


def choose_backend(backend: str | None = None) -> str:
    """The backend an :class:`Embedder` runs on: ``backend``, else ``$LOEV_BACKEND``, else
    torch when it is importable and onnxruntime otherwise."""
    wanted = (backend or os.environ.get(BACKEND_ENV) or "auto").strip().lower()
    wanted = _ALIASES.get(wanted, wanted)
    if wanted == "auto":
        return "torch" if _importable("torch") else "onnxruntime"
    if wanted not in BACKENDS:
        raise ValueError(f"unknown backend {wanted!r} (from {'the argument' if backend else BACKEND_ENV}); "
                         f"expected auto or one of {tuple(BACKENDS)}")
    if not _importable(BACKENDS[wanted][1]):
        raise CheckpointError(f"backend {wanted!r} asked for, but {BACKENDS[wanted][1]} is not installed")
    return wanted


class Embedder:
    """A loaded checkpoint that turns audio into one L2-normalised vector per subspace.

    Parameters
    ----------
    checkpoint : path of a ``.safetensors`` checkpoint; the shipped default when None.
        The onnxruntime backend runs ``NAME.onnx`` beside it (``loev-train export``).
    device : torch device string (torch backend only).
    max_chunks : cap on chunks per track, so that scan cost per track is bounded.
    batch_size : chunks per forward pass.
    backend : ``"torch"``, ``"onnxruntime"`` or ``"auto"``; see :func:`choose_backend`.
    """

    def __init__(self, checkpoint: str | os.PathLike[str] | None = None, *, device: str = "cpu",
                 max_chunks: int = 16, batch_size: int = 32, backend: str | None = None) -> None:
        from engine.model.checkpoint import read_checkpoint_info

        self.checkpoint_path = Path(checkpoint) if checkpoint is not None else default_checkpoint()
        info = read_checkpoint_info(self.checkpoint_path)
        self.model_id: str = info.model_id
        self.dims: dict[str, int] = info.dims
        self.subspaces: tuple[str, ...] = info.subspaces
        self.config = info.model_config()
        self.backend_name = choose_backend(backend)
        module = importlib.import_module(BACKENDS[self.backend_name][0])
        if self.backend_name == "torch":
            self.backend = module.TorchBackend(info, device=device)
        else:
            self.backend = module.OnnxBackend(info)
        self.device, self.max_chunks, self.batch_size = device, max_chunks, batch_size

    def embed_chunks(self, chunks: np.ndarray) -> dict[str, np.ndarray]:
        """Chunk-level embeddings ``{subspace: [N, D]}`` (not normalised) for ``[N, 48000]``."""
        outs: dict[str, list[np.ndarray]] = {s: [] for s in self.subspaces}
        for i in range(0, len(chunks), self.batch_size):
            emb = self.backend(chunks[i : i + self.batch_size])
            for s in self.subspaces:
                outs[s].append(emb[s])
        return {s: np.concatenate(v) for s, v in outs.items()}

    def embed_audio_batch(self, ys: list[np.ndarray]) -> list[dict[str, np.ndarray]]:
        """Track-level embeddings for several 16 kHz signals, their chunks in shared batches."""
        framed = [frame_chunks(y, max_chunks=self.max_chunks) for y in ys]
        if not framed:
            return []
        flat = self.embed_chunks(np.concatenate(framed))
        bounds = np.cumsum([0] + [len(f) for f in framed])
        return [{s: _normalise(flat[s][a:b].mean(axis=0)) for s in self.subspaces}
                for a, b in zip(bounds[:-1], bounds[1:])]

    def embed_audio(self, y: np.ndarray) -> dict[str, np.ndarray]:
        """Track-level embedding ``{subspace: [D]}`` of a 16 kHz mono signal."""
        return self.embed_audio_batch([y])[0]

    def embed_file(self, path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
        """Track-level embedding of an audio file; raises DecodeError for a bad file."""
        from engine.audio.decode import audio_info, read_chunks

        info = audio_info(path)
        n = int(round(info.duration * SAMPLE_RATE))
        starts = chunk_starts(n, max_chunks=self.max_chunks) / SAMPLE_RATE
        chunks = read_chunks(path, starts, chunk_samples=CHUNK_SAMPLES, sr=SAMPLE_RATE)
        if chunks.shape[-1] < CHUNK_SAMPLES:
            chunks = np.pad(chunks, ((0, 0), (0, CHUNK_SAMPLES - chunks.shape[-1])))
        emb = self.embed_chunks(chunks)
        return {s: _normalise(v.mean(axis=0)) for s, v in emb.items()}

    def describe(self) -> dict[str, Any]:
        return {"checkpoint": str(self.checkpoint_path), "model_id": self.model_id,
                "method": self.config.method, "profile": self.config.profile.name, "dims": self.dims,
                "backend": self.backend_name}
