"""Exact and near-duplicate groups of a library (``loev duplicates``, docs/DESIGN.md 6).

- exact: files with the same content hash (BLAKE2b of their bytes, taken at scan time);
- near: different files that are the same sound re-encoded, resampled, or louder or
  quieter: within ``NEAR_DISTANCE`` (cosine) in the vibe (all-invariant) space, with
  durations within ``DURATION_TOLERANCE`` (relative), and, for those candidates only, a
  level-free band spectrogram within ``FINGERPRINT_DISTANCE``. Groups are the connected
  components of that relation (union-find).

The thresholds were measured on generated sounds (``benchmarks/duplicate_threshold.py``:
12 sounds - tones, chords, click tracks, noise bursts, drum hits - each as 16-bit WAV,
at -6 dB, as Ogg Vorbis and resampled to 44.1 kHz FLAC). With the shipped model, copies
lie within 0.013 of each other in the vibe space, but so do different sounds: a 60 Hz
and a 120 Hz drum hit of the same length at 0.0003 (the space is built to ignore pitch).
The fingerprint separates them: copies at most 0.045 apart, different sounds of similar
length at least 0.149 (C major against A minor chords).
"""
from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from engine.errors import LoevError
from engine.library.catalogue import Library, Track

NEAR_DISTANCE = 0.02
DURATION_TOLERANCE = 0.05
FINGERPRINT_DISTANCE = 0.08
FINGERPRINT_SECONDS = 30.0
_BAND_EDGES = np.unique(np.geomspace(1, 256, 65).astype(int))


@dataclass
class DuplicateGroup:
    kind: str  # "exact" | "near"
    paths: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "paths": list(self.paths)}


class _UnionFind:
    def __init__(self, n: int) -> None:
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def fingerprint(path: str, *, seconds: float = FINGERPRINT_SECONDS) -> np.ndarray:
    """A level-free log spectrogram [frames, bands] of a file's first ``seconds`` (16 kHz
    mono, 512-point Hann frames, hop 256, log-spaced bands, floor 30 dB below the peak).

    Phase-free (a lossy re-encode keeps it) and level-free (so does a gain change), but
    it keeps pitch and envelope, which the vibe space is built to ignore.
    """
    from engine.audio.decode import load_audio

    y = load_audio(path, duration=seconds)
    if len(y) < 512:
        y = np.pad(y, (0, 512 - len(y)))
    frames = np.lib.stride_tricks.sliding_window_view(y, 512)[::256] * np.hanning(512)
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2
    # Log-spaced bands (31 Hz - 8 kHz) and a floor 30 dB below the peak: pooling keeps
    # pitch and envelope but not the bin-level detail or the quiet tails that a lossy
    # codec rewrites (measured: benchmarks/duplicate_threshold.py).
    bands = np.add.reduceat(power, _BAND_EDGES, axis=1)
    return np.log10(bands + bands.max() * 1e-3 + 1e-20).astype(np.float32)


def fingerprint_distance(a: np.ndarray, b: np.ndarray) -> float:
    """1 - correlation of two fingerprints over their common frames (0 = same sound)."""
    n = min(len(a), len(b))
    x, y = a[:n].ravel() - a[:n].mean(), b[:n].ravel() - b[:n].mean()
    den = float(np.linalg.norm(x) * np.linalg.norm(y))
    return 1.0 - float(x @ y) / den if den > 0 else 1.0


def near_pairs(x: np.ndarray, durations: np.ndarray, *, max_distance: float = NEAR_DISTANCE,
               duration_tolerance: float = DURATION_TOLERANCE, block: int = 1024
               ) -> list[tuple[int, int]]:
    """Index pairs (i < j) of unit rows ``x`` within ``max_distance`` (cosine) and of
    durations within ``duration_tolerance`` of each other (relative to the longer)."""
    pairs: list[tuple[int, int]] = []
    n = len(x)
    for i in range(0, n, block):  # blocks: never the n x n matrix at once
        sim = x[i:i + block] @ x[i:].T
        rows, cols = np.nonzero(1.0 - sim <= max_distance)
        for r, c in zip(rows.tolist(), cols.tolist()):
            a, b = i + r, i + c
            if b <= a:
                continue
            da, db = durations[a], durations[b]
            longer = max(da, db)
            if longer > 0 and abs(da - db) / longer > duration_tolerance:
                continue
            pairs.append((a, b))
    return pairs


def duplicates(library: Library | str | os.PathLike[str], *, subspace: str | None = None,
               max_distance: float = NEAR_DISTANCE,
               duration_tolerance: float = DURATION_TOLERANCE,
               fingerprint_max: float = FINGERPRINT_DISTANCE) -> list[DuplicateGroup]:
    """Exact groups, then near groups, each sorted by path; groups in path order.

    Decodes the first 30 s of the candidates for near groups (files close in the vibe
    space and of similar duration) only: worker-thread work in the app.

    Parameters
    ----------
    subspace : str, optional
        Where "near" is measured; the vibe (all-invariant) subspace by default.
    """
    from engine.library.query import subspace_for

    own = not isinstance(library, Library)
    lib = Library(library, readonly=True) if own else library
    try:
        live = [t for t in lib.tracks() if t.status != "deleted"]
        by_hash: dict[str, list[Track]] = defaultdict(list)
        for t in live:
            if t.content_hash:
                by_hash[t.content_hash].append(t)
        groups = [DuplicateGroup("exact", sorted(t.path for t in ts))
                  for ts in by_hash.values() if len(ts) > 1]
        if lib.subspaces:
            name = subspace or subspace_for("vibe", lib.subspaces)
            groups += _near_groups(lib, name, max_distance, duration_tolerance,
                                   fingerprint_max)
    finally:
        if own:
            lib.close()
    groups.sort(key=lambda g: (g.kind != "exact", g.paths))
    return groups


def _near_groups(lib: Library, subspace: str, max_distance: float,
                 duration_tolerance: float, fingerprint_max: float) -> list[DuplicateGroup]:
    rows = list(lib.iter_vectors(subspace))
    if len(rows) < 2:
        return []
    tracks = lib.paths_by_id([r[0] for r in rows])
    # One representative per content: exact copies are already their own group.
    reps: dict[str, int] = {}
    members: dict[int, list[str]] = defaultdict(list)
    keep: list[int] = []
    for i, (label, _) in enumerate(rows):
        t = tracks[label]
        key = t.content_hash or f"label:{label}"
        if key not in reps:
            reps[key] = i
            keep.append(i)
        members[reps[key]].append(t.path)
    x = np.stack([rows[i][1] for i in keep]).astype(np.float32)
    durations = np.array([tracks[rows[i][0]].duration or 0.0 for i in keep])
    uf = _UnionFind(len(keep))
    prints: dict[int, np.ndarray | None] = {}

    def print_of(j: int) -> np.ndarray | None:
        if j not in prints:
            try:
                prints[j] = fingerprint(members[keep[j]][0])
            except (LoevError, OSError, ValueError):
                prints[j] = None  # gone or unreadable since the scan: not a duplicate
        return prints[j]

    for a, b in near_pairs(x, durations, max_distance=max_distance,
                           duration_tolerance=duration_tolerance):
        # The vibe space is built to ignore pitch: two drum hits a fifth apart can sit at
        # distance 0 there. The fingerprint, decoded for candidates only, tells them apart.
        fa, fb = print_of(a), print_of(b)
        if fa is not None and fb is not None and \
                fingerprint_distance(fa, fb) <= fingerprint_max:
            uf.union(a, b)
    comps: dict[int, list[int]] = defaultdict(list)
    for j in range(len(keep)):
        comps[uf.find(j)].append(j)
    return [DuplicateGroup("near", sorted(p for j in js for p in members[keep[j]]))
            for js in comps.values() if len(js) > 1]
