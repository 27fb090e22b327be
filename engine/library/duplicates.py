"""Exact and near-duplicate groups of a library (``loev duplicates``, docs/DESIGN.md 6).

- exact: files with the same content hash (BLAKE2b of their bytes, taken at scan time);
- near: different files whose vibe (all-invariant) vectors lie within ``NEAR_DISTANCE``
  in cosine distance and whose durations differ by at most ``DURATION_TOLERANCE``
  (relative): the same sound re-encoded, resampled or made louder or quieter. Groups
  are the connected components of that relation (union-find).

``NEAR_DISTANCE`` was measured with the shipped model on generated sounds: each of 12
sounds (tones, chords, click tracks, noise bursts, drum hits) as 16-bit WAV, at -6 dB,
as Ogg Vorbis and resampled to 44.1 kHz FLAC, against the other 11 sounds' versions
(see ``benchmarks/duplicate_threshold.py``).
"""
from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from engine.library.catalogue import Library, Track

NEAR_DISTANCE = 0.02
DURATION_TOLERANCE = 0.05


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
               duration_tolerance: float = DURATION_TOLERANCE) -> list[DuplicateGroup]:
    """Exact groups, then near groups, each sorted by path; groups in path order.

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
            groups += _near_groups(lib, name, max_distance, duration_tolerance)
    finally:
        if own:
            lib.close()
    groups.sort(key=lambda g: (g.kind != "exact", g.paths))
    return groups


def _near_groups(lib: Library, subspace: str, max_distance: float,
                 duration_tolerance: float) -> list[DuplicateGroup]:
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
    for a, b in near_pairs(x, durations, max_distance=max_distance,
                           duration_tolerance=duration_tolerance):
        uf.union(a, b)
    comps: dict[int, list[int]] = defaultdict(list)
    for j in range(len(keep)):
        comps[uf.find(j)].append(j)
    return [DuplicateGroup("near", sorted(p for j in js for p in members[keep[j]]))
            for js in comps.values() if len(js) > 1]
