"""The labelled benchmark of ``loev-train eval``: its tracks, their audio, degraded copies, embeddings.

A benchmark is a labelled folder (a ``labels.csv`` with ``file, key, tempo, family``
columns, as ``loev-train corpus`` writes) or one of trainer.datasets' layouts. Its tracks
are read once, decoded once (the first ``max_seconds`` at 16 kHz mono) and embedded once
per model; :mod:`trainer.metrics` and :mod:`trainer.probes` score what comes out.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from engine.config import SAMPLE_RATE
from engine.errors import LoevError
from engine.keys import canonical_key

DEGRADATIONS = ("noise_10db", "lowpass_4k", "bandlimit_7k")


class EvalError(LoevError):
    """The evaluation cannot run: no labelled tracks, a bad argument."""


@dataclass(frozen=True)
class Track:
    """One benchmark track and its labels (``None`` where the label is unknown)."""

    path: Path
    key: str | None = None
    tempo: float | None = None
    family: str | None = None
    pitch: int | None = None  # MIDI note (NSynth)
    tags: tuple[str, ...] | None = None  # multi-label tags (MagnaTagATune, MTG-Jamendo)
    split: str | None = None  # a dataset's own split; None: split_tracks decides

    @property
    def name(self) -> str:
        return self.path.name


# -------------------------------------------------------------------------- tracks


def load_tracks(data: str | Path) -> list[Track]:
    """Tracks of a labelled folder (``labels.csv`` inside it, or the CSV itself)."""
    from trainer.corpus import read_labels

    data = Path(data)
    labels = data / "labels.csv" if data.is_dir() else data
    rows = read_labels(labels)
    tracks = []
    for r in rows:
        tempo = r.get("tempo")
        tracks.append(Track(path=Path(r["path"]), key=canonical_key(r.get("key")),
                            tempo=float(tempo) if tempo and tempo > 0 else None,
                            family=r.get("family") or None))
    if not tracks:
        raise EvalError(f"{labels}: no labelled tracks")
    return tracks


def tracks_from_dataset(name: str, root: str | Path) -> list[Track]:
    """Tracks of one of trainer.datasets' adapters, with the dataset's own split."""
    from trainer.datasets import load_dataset

    tracks = []
    for it in load_dataset(name, root):
        lab = it.labels
        tracks.append(Track(path=it.path, key=lab.get("key"), tempo=lab.get("tempo"), family=lab.get("family"),
                            pitch=lab.get("pitch"), tags=tuple(lab["tags"]) if "tags" in lab else None,
                            split=it.split))
    return tracks


# -------------------------------------------------------------------------- signals


def load_signals(tracks: Sequence[Track], *, max_seconds: float = 60.0) -> list[np.ndarray]:
    """Each track's first ``max_seconds`` at 16 kHz mono (bounds the cost of long tracks)."""
    from engine.audio.decode import load_audio

    return [load_audio(t.path, duration=max_seconds) for t in tracks]


def degrade(y: np.ndarray, kind: str, *, sr: int = SAMPLE_RATE, seed: int = 0) -> np.ndarray:
    """A degraded copy of a query: ``noise_10db``, ``lowpass_4k`` or ``bandlimit_7k``.

    ``bandlimit_7k`` stands for a low-bitrate MP3's band limit (encoders cut at 11-16 kHz
    at 44.1 kHz; with 16 kHz audio, 7 kHz is the nearest cut still below Nyquist).
    """
    from scipy.signal import butter, sosfiltfilt

    y = np.asarray(y, dtype=np.float64)
    if kind == "noise_10db":
        power = max(float(np.mean(y ** 2)), 1e-12)
        noise = np.random.default_rng(seed).standard_normal(y.size) * math.sqrt(power / 10.0)
        return (y + noise).astype(np.float32)
    cutoffs = {"lowpass_4k": 4000.0, "bandlimit_7k": 7000.0}
    if kind not in cutoffs:
        raise ValueError(f"unknown degradation {kind!r}; expected one of {DEGRADATIONS}")
    sos = butter(8, cutoffs[kind], btype="low", fs=sr, output="sos")
    return sosfiltfilt(sos, y).astype(np.float32)


# ---------------------------------------------------------------------- embeddings


@dataclass
class Embeddings:
    """Chunk-level embeddings of a benchmark, per subspace, and which track each chunk is from."""

    chunks: dict[str, np.ndarray]  # {subspace: [M, D]}, each row unit norm
    track_of_chunk: np.ndarray  # [M]

    def track_level(self) -> dict[str, np.ndarray]:
        """``{subspace: [N, D]}``: mean of each track's chunks, L2-normalised; plus ``all``."""
        n = int(self.track_of_chunk.max()) + 1
        out = {}
        for s, x in self.chunks.items():
            acc = np.zeros((n, x.shape[1]))
            np.add.at(acc, self.track_of_chunk, x)
            out[s] = unit_rows(acc)
        if len(out) > 1:
            out["all"] = concat_subspaces(out)
        return out

    def with_all(self) -> dict[str, np.ndarray]:
        """Chunk-level ``{subspace: [M, D]}`` plus ``all``."""
        out = dict(self.chunks)
        if len(out) > 1:
            out["all"] = concat_subspaces(out)
        return out


def unit_rows(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (zero rows stay zero), as float32."""
    return (x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)).astype(np.float32)


def concat_subspaces(emb: dict[str, np.ndarray]) -> np.ndarray:
    """V^++: the unit-normalised subspaces side by side, scaled so the whole is unit norm."""
    parts = [unit_rows(v) for k, v in emb.items() if k != "all"]
    return (np.concatenate(parts, axis=1) / math.sqrt(len(parts))).astype(np.float32)


def embed_signals(embedder: Any, signals: Sequence[np.ndarray]) -> Embeddings:
    """Embed every chunk of every signal (at most ``embedder.max_chunks`` per track)."""
    from engine.model.embed import frame_chunks

    framed = [frame_chunks(y, max_chunks=embedder.max_chunks) for y in signals]
    owner = np.concatenate([np.full(len(f), i) for i, f in enumerate(framed)])
    flat = embedder.embed_chunks(np.concatenate(framed))
    return Embeddings({s: unit_rows(v) for s, v in flat.items()}, owner)
