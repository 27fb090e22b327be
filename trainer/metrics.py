"""Retrieval scores of ``loev-train eval`` (paper Fig. 2): kNN precision, key and tempo scores.

Track embeddings are compared by cosine similarity; each query's k nearest other tracks
(k in 1, 3, 5, 10) are scored against the query's labels: family precision@k, the mean
mir_eval weighted key score of the neighbours, tempo acc1 (within 4 %) and acc2 (also
x2, x1/2, x3, x1/3). The (query, neighbour) scores of a benchmark are computed once
(:class:`PairTable`) and reused for every model, baseline and degradation.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from engine.keys import KEY_NAMES, N_KEYS, parse_key

if TYPE_CHECKING:
    from trainer.benchmark import Track

KS = (1, 3, 5, 10)
TEMPO_TOLERANCE = 0.04
TEMPO_FACTORS = (1.0, 2.0, 0.5, 3.0, 1.0 / 3.0)


def key_score(reference: str, estimate: str) -> float:
    """mir_eval's weighted key score (1 same, 0.5 fifth, 0.3 relative, 0.2 parallel)."""
    import mir_eval

    return float(mir_eval.key.weighted_score(reference, estimate))


def tempo_hits(reference: float, estimate: float, *, tolerance: float = TEMPO_TOLERANCE) -> tuple[bool, bool]:
    """(acc1, acc2): ``estimate`` within ``tolerance`` of ``reference`` (acc2: of 1, 2, 1/2, 3 or 1/3 times it)."""
    acc1 = abs(estimate - reference) <= tolerance * reference
    acc2 = any(abs(estimate - f * reference) <= tolerance * f * reference for f in TEMPO_FACTORS)
    return bool(acc1), bool(acc2)


def cosine_similarity(queries: np.ndarray, library: np.ndarray) -> np.ndarray:
    """``[Nq, D]`` x ``[Nl, D]`` -> ``[Nq, Nl]`` cosine similarities."""
    q = queries / np.maximum(np.linalg.norm(queries, axis=1, keepdims=True), 1e-12)
    lib = library / np.maximum(np.linalg.norm(library, axis=1, keepdims=True), 1e-12)
    return q @ lib.T


def nearest(sim: np.ndarray, k: int, *, exclude_self: bool = True) -> np.ndarray:
    """Indices ``[Nq, k]`` of the k most similar library items; item i is never its own neighbour."""
    sim = np.array(sim, dtype=np.float64)
    if exclude_self:
        np.fill_diagonal(sim, -np.inf)
    # stable sort on -sim: ties go to the lower index, so results never depend on the run
    return np.argsort(-sim, axis=1, kind="stable")[:, :k]


def _key_table() -> np.ndarray:
    """``[24, 24]`` mir_eval weighted scores: row = reference key index, column = estimate."""
    return np.array([[key_score(KEY_NAMES[r], KEY_NAMES[e]) for e in range(N_KEYS)] for r in range(N_KEYS)])


def _pair_scores(tracks: Sequence[Track], metric: str) -> tuple[np.ndarray, np.ndarray]:
    """``idx [n]`` (the tracks that carry the label) and ``score [n, n]`` among them
    (query row, neighbour column)."""
    if metric in ("family", "pitch"):
        vals = [getattr(t, metric) for t in tracks]
        idx = np.array([i for i, v in enumerate(vals) if v is not None], dtype=np.int64)
        codes = {v: c for c, v in enumerate(sorted({str(vals[i]) for i in idx}))}
        lab = np.array([codes[str(vals[i])] for i in idx])
        return idx, (lab[:, None] == lab[None, :]).astype(np.float64)
    if metric == "key":
        keys = [parse_key(t.key) for t in tracks]
        idx = np.array([i for i, k in enumerate(keys) if k is not None], dtype=np.int64)
        if len(idx) < 2:
            return idx, np.zeros((len(idx), len(idx)))
        k = np.array([keys[i] for i in idx])
        return idx, _key_table()[k[:, None], k[None, :]]
    if metric in ("tempo_acc1", "tempo_acc2"):
        idx = np.array([i for i, t in enumerate(tracks) if t.tempo is not None], dtype=np.int64)
        ref = np.array([tracks[i].tempo for i in idx], dtype=np.float64)[:, None]
        est = ref.T
        factors = (1.0,) if metric == "tempo_acc1" else TEMPO_FACTORS
        hit = np.zeros((len(idx), len(idx)), dtype=bool)
        for f in factors:
            hit |= np.abs(est - f * ref) <= TEMPO_TOLERANCE * f * ref
        return idx, hit.astype(np.float64)
    raise ValueError(f"unknown metric {metric!r}")


METRICS = ("family", "key", "tempo_acc1", "tempo_acc2", "pitch")


@dataclass
class PairTable:
    """The (query, neighbour) label scores of a benchmark, computed once and reused."""

    tracks: Sequence[Track]
    tables: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for m in METRICS:
            self.tables[m] = _pair_scores(self.tracks, m)


def retrieval_scores(sim: np.ndarray, pairs: PairTable, *, ks: Sequence[int] = KS) -> dict[str, dict[str, float]]:
    """Mean neighbour score per metric and k for a square similarity ``[N, N]``.

    Row i holds the similarity of query i to every library item; the query's own entry is
    never a neighbour. Per metric, only tracks that carry the label take part (as queries
    and as neighbours). Returns ``{metric: {str(k): score}}``.
    """
    out: dict[str, dict[str, float]] = {}
    for metric, (idx, sc) in pairs.tables.items():
        if len(idx) < 2:
            continue
        sub = sim[np.ix_(idx, idx)]
        out[metric] = {}
        for k in ks:
            kk = min(k, len(idx) - 1)
            nn = nearest(sub, kk)
            out[metric][str(k)] = float(np.take_along_axis(sc, nn, axis=1).mean())
    return out


def chance_scores(pairs: PairTable) -> dict[str, float]:
    """Expected neighbour score with random neighbours: the mean over all pairs i != j."""
    out = {}
    for metric, (idx, sc) in pairs.tables.items():
        if len(idx) < 2:
            continue
        out[metric] = float((sc.sum() - np.trace(sc)) / (len(idx) * (len(idx) - 1)))
    return out


def oracle_scores(pairs: PairTable, *, ks: Sequence[int] = KS) -> dict[str, dict[str, float]]:
    """The best score any retrieval could reach at each k: every query's k best-scoring others.

    On a small benchmark few tracks share a tempo within 4 %, so acc1@10 cannot be near 1;
    this is the ceiling to read the figures against.
    """
    out: dict[str, dict[str, float]] = {}
    for metric, (idx, sc) in pairs.tables.items():
        if len(idx) < 2:
            continue
        best = np.array(sc, dtype=np.float64)
        np.fill_diagonal(best, -np.inf)
        best = -np.sort(-best, axis=1)
        out[metric] = {str(k): float(best[:, : min(k, len(idx) - 1)].mean()) for k in ks}
    return out


def label_similarity(estimates: Sequence[Any], kind: str, *, seed: int = 0) -> np.ndarray:
    """Similarity ``[N, N]`` for "retrieval by estimated label" (essentia's key or BPM).

    Keys: mir_eval weighted score between the estimates; tempi: minus the log-ratio distance.
    A tiny seeded jitter breaks the many exact ties at random rather than by file order.
    """
    n = len(estimates)
    if kind == "key":
        sim = np.array([[key_score(a, b) for b in estimates] for a in estimates])
    elif kind == "tempo":
        t = np.log2(np.maximum(np.asarray(estimates, dtype=np.float64), 1e-3))
        sim = -np.abs(t[:, None] - t[None, :])
    else:
        raise ValueError(f"kind must be 'key' or 'tempo', got {kind!r}")
    return sim + 1e-9 * np.random.default_rng(seed).random((n, n))


def estimate_accuracy(values: Sequence[Any], tracks: Sequence[Track], kind: str) -> dict[str, float]:
    """How good the estimator is as an estimator (not as retrieval): key score, tempo acc1/acc2."""
    if kind == "key":
        s = [key_score(t.key, v) for t, v in zip(tracks, values) if t.key]
        return {"key": float(np.mean(s))} if s else {}
    hits = np.array([tempo_hits(t.tempo, v) for t, v in zip(tracks, values) if t.tempo])
    return {"tempo_acc1": float(hits[:, 0].mean()), "tempo_acc2": float(hits[:, 1].mean())} if len(hits) else {}
