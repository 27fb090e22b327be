"""A 2-D map of the library per aspect (vibe / key / tempo), cached on disk.

The layout is t-SNE (van der Maaten and Hinton, 2008) computed exactly, in numpy, on at
most ``LANDMARKS`` tracks; every other track is placed at the similarity-weighted mean of
its ``K_PLACE`` nearest landmarks' positions (cosine, in the aspect's subspace). Exact
t-SNE on landmarks bounds the time whatever the library's size and needs no new
dependency (scikit-learn and scipy add ~190 MB to the bundle; umap-learn adds numba and
llvmlite); benchmarks/map_speed.py measures its time and quality against scikit-learn's
Barnes-Hut t-SNE and PCA at 10,000 tracks.

The map is derived data, cached per library, model and subspace in ``DIR/maps/S.npz``
(labels, positions, the catalogue's ``vec_seq`` and ids it was built at), written under a
temporary name and moved into place. A cache from another model or catalogue, or one
that does not load, is rebuilt. When few tracks changed since (at most
``INCREMENTAL_FRACTION`` of the map), the old positions stay and only new or re-embedded
tracks are placed by their nearest unchanged neighbours, so the map does not jump.
"""
from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.errors import LibraryError
from engine.library.catalogue import Library

MAPS_DIR = "maps"
# Landmarks laid out by exact t-SNE: O(n^2) memory and time per iteration, so bounded.
LANDMARKS = 2000
K_PLACE = 5
# Above this fraction of added, changed or removed tracks the map is recomputed.
INCREMENTAL_FRACTION = 0.2
PERPLEXITY = 30.0
ITERATIONS = 500
EXAGGERATION_ITERS = 125
CACHE_VERSION = 1


# -- t-SNE ------------------------------------------------------------------------------


def _affinities(x: np.ndarray, perplexity: float) -> np.ndarray:
    """Symmetric t-SNE input affinities P [n, n] of rows ``x`` (exact, binary search)."""
    n = len(x)
    sq = (x * x).sum(1)
    d = np.maximum(sq[:, None] + sq[None, :] - 2.0 * (x @ x.T), 0.0).astype(np.float64)
    np.fill_diagonal(d, np.inf)
    d -= d.min(axis=1, keepdims=True)  # per-row shift: same P, no underflow
    np.fill_diagonal(d, 1e30)  # exp(-1e30 beta) = 0 and 1e30 * 0 = 0: no inf * 0
    target = np.log(min(perplexity, (n - 1) / 3.0))
    lo = np.full(n, 0.0)
    hi = np.full(n, np.inf)
    beta = np.ones(n)
    for _ in range(64):  # bisection on each row's precision, all rows at once
        p = np.exp(-d * beta[:, None])
        s = np.maximum(p.sum(1), 1e-300)
        entropy = np.log(s) + beta * (d * p).sum(1) / s
        high = entropy > target  # too flat: raise the precision
        lo = np.where(high, beta, lo)
        hi = np.where(high, hi, beta)
        beta = np.where(np.isinf(hi), beta * 2.0, (lo + hi) / 2.0)
    p = np.exp(-d * beta[:, None])
    p /= p.sum(1, keepdims=True)
    p = (p + p.T) / (2.0 * n)
    return np.maximum(p, 1e-12).astype(np.float32)


def tsne(x: np.ndarray, *, perplexity: float = PERPLEXITY, iterations: int = ITERATIONS,
         seed: int = 0) -> np.ndarray:
    """Exact t-SNE of ``x`` [n, D] to [n, 2] (float32).

    PCA initialisation (scaled to std 1e-4), early exaggeration 12 for the first
    ``EXAGGERATION_ITERS`` iterations, learning rate max(n / 48, 50), momentum 0.5 then
    0.8 with per-coordinate gains: scikit-learn's defaults, without Barnes-Hut.
    """
    x = np.asarray(x, dtype=np.float32)
    n = len(x)
    if n < 3:
        return np.zeros((n, 2), np.float32) + np.arange(n, dtype=np.float32)[:, None]
    p = _affinities(x, perplexity)
    y = _pca(x)
    y = (y / max(float(y[:, 0].std()), 1e-12) * 1e-4).astype(np.float32)
    y += np.random.default_rng(seed).normal(0, 1e-6, y.shape).astype(np.float32)
    update = np.zeros_like(y)
    gains = np.ones_like(y)
    lr = max(n / 48.0, 50.0)
    for it in range(iterations):
        exaggeration = 12.0 if it < EXAGGERATION_ITERS else 1.0
        momentum = 0.5 if it < EXAGGERATION_ITERS else 0.8
        sq = (y * y).sum(1)
        num = 1.0 / (1.0 + np.maximum(sq[:, None] + sq[None, :] - 2.0 * (y @ y.T), 0.0))
        np.fill_diagonal(num, 0.0)
        q = num / max(float(num.sum()), 1e-12)
        pq = (exaggeration * p - q) * num
        grad = 4.0 * (pq.sum(1)[:, None] * y - pq @ y)
        same = np.sign(grad) == np.sign(update)
        gains = np.maximum(np.where(same, gains * 0.8, gains + 0.2), 0.01)
        update = momentum * update - lr * gains * grad
        y = y + update
    return (y - y.mean(0)).astype(np.float32)


def _pca(x: np.ndarray) -> np.ndarray:
    xc = x - x.mean(0)
    # The 2 leading directions from the D x D covariance: cheap for any n.
    _, vecs = np.linalg.eigh(xc.T @ xc)
    return xc @ vecs[:, ::-1][:, :2]


def place(x_new: np.ndarray, x_ref: np.ndarray, y_ref: np.ndarray, *,
          k: int = K_PLACE) -> np.ndarray:
    """Positions of ``x_new`` rows: the similarity-weighted mean of their ``k`` nearest
    ``x_ref`` rows' positions ``y_ref`` (cosine on unit vectors)."""
    out = np.empty((len(x_new), 2), np.float32)
    if len(x_new) == 0:
        return out
    k = min(k, len(x_ref))
    for i in range(0, len(x_new), 1024):  # blocks: never an n x m matrix at once
        sim = x_new[i:i + 1024] @ x_ref.T
        nn = np.argpartition(-sim, k - 1, axis=1)[:, :k]
        dist = np.maximum(1.0 - np.take_along_axis(sim, nn, axis=1), 0.0)
        w = 1.0 / (dist + 1e-4) ** 2  # the nearest dominate: a copy lands on its original
        out[i:i + 1024] = (w[:, :, None] * y_ref[nn]).sum(1) / w.sum(1, keepdims=True)
    return out


def layout(x: np.ndarray, *, landmarks: int = LANDMARKS, seed: int = 0) -> np.ndarray:
    """2-D positions [n, 2] of unit vectors ``x`` [n, D]: t-SNE on up to ``landmarks``
    rows, the rest placed by their nearest landmarks."""
    x = np.asarray(x, dtype=np.float32)
    n = len(x)
    if n <= landmarks:
        return tsne(x, seed=seed)
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(n, landmarks, replace=False))
    y = np.empty((n, 2), np.float32)
    y[chosen] = tsne(x[chosen], seed=seed)
    rest = np.setdiff1d(np.arange(n), chosen)
    y[rest] = place(x[rest], x[chosen], y[chosen])
    return y


# -- the cached map of a library ----------------------------------------------------------


@dataclass
class MapLayout:
    """Positions of a library's ok tracks in one subspace.

    ``paths[i]`` is at ``positions[i]``; ``labels`` are the catalogue row ids.
    ``recomputed`` says whether the whole map was laid out again (else reused or
    extended), ``placed`` how many tracks were placed incrementally.
    """

    subspace: str
    labels: np.ndarray
    positions: np.ndarray
    paths: list[str]
    recomputed: bool = False
    placed: int = 0


def _cache_path(root: Path, subspace: str) -> Path:
    return Path(root) / MAPS_DIR / f"{subspace}.npz"


def _read_cache(path: Path, expect: dict[str, object]) -> dict[str, object] | None:
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            labels = np.asarray(z["labels"], dtype=np.int64)
            positions = np.asarray(z["positions"], dtype=np.float32)
    except (OSError, ValueError, KeyError, EOFError):
        return None  # missing or damaged: derived data, rebuilt
    if not isinstance(meta, dict) or any(meta.get(k) != v for k, v in expect.items()):
        return None
    if positions.shape != (len(labels), 2) or not np.all(np.isfinite(positions)):
        return None
    return {"labels": labels, "positions": positions, "vec_seq": int(meta.get("vec_seq", 0))}


def _write_cache(path: Path, labels: np.ndarray, positions: np.ndarray,
                 meta: dict[str, object]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            np.savez(f, labels=labels, positions=positions, meta=np.array(json.dumps(meta)))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)  # atomic: a reader sees the old map or the new one
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink()
        # A map that cannot be cached (read-only media) is still returned.


def map_layout(library: Library | str | os.PathLike[str], subspace: str, *,
               seed: int = 0) -> MapLayout:
    """The 2-D map of ``library``'s ok tracks in ``subspace``, from the cache when valid.

    Raises
    ------
    LibraryError
        The library has no tracks, or its model has no such subspace.
    """
    own = not isinstance(library, Library)
    lib = Library(library, readonly=True) if own else library
    try:
        return _map_layout(lib, subspace, seed)
    finally:
        if own:
            lib.close()


def _map_layout(lib: Library, subspace: str, seed: int) -> MapLayout:
    if subspace not in lib.subspaces:
        raise LibraryError(f"the library's model has no {subspace} subspace "
                           f"(it has {', '.join(lib.subspaces) or 'none'})")
    seq = int(lib.get_meta("vec_seq", 0))
    rows = list(lib.iter_vectors(subspace))
    if not rows:
        raise LibraryError(f"library {lib.root} has no tracks; run `loev scan FOLDER "
                           f"--library {lib.root}` first")
    labels = np.array([r[0] for r in rows], dtype=np.int64)
    x = np.stack([r[1] for r in rows]).astype(np.float32)
    tracks = lib.paths_by_id([int(t) for t in labels])
    paths = [tracks[int(t)].path for t in labels]
    expect = {"version": CACHE_VERSION, "model_id": lib.model_id,
              "catalogue_id": lib.catalogue_id, "subspace": subspace, "seed": seed}
    path = _cache_path(lib.root, subspace)
    cached = _read_cache(path, expect)
    if cached is not None and cached["vec_seq"] == seq and np.array_equal(cached["labels"], labels):
        return MapLayout(subspace, labels, cached["positions"], paths)

    positions: np.ndarray | None = None
    placed = 0
    if cached is not None:
        old_labels: np.ndarray = cached["labels"]  # type: ignore[assignment]
        old_pos: np.ndarray = cached["positions"]  # type: ignore[assignment]
        changed = {t for t, _ in lib.iter_vectors(subspace, since_seq=int(cached["vec_seq"]))}
        old_at = {int(t): i for i, t in enumerate(old_labels)}
        keep = np.array([int(t) in old_at and int(t) not in changed for t in labels])
        removed = len(set(old_at) - set(int(t) for t in labels))
        moved = int((~keep).sum()) + removed
        if keep.sum() >= K_PLACE and moved <= INCREMENTAL_FRACTION * max(len(old_labels), 1):
            positions = np.empty((len(labels), 2), np.float32)
            positions[keep] = old_pos[[old_at[int(t)] for t in labels[keep]]]
            positions[~keep] = place(x[~keep], x[keep], positions[keep])
            placed = int((~keep).sum())
    recomputed = positions is None
    if positions is None:
        positions = layout(x, seed=seed)
    _write_cache(path, labels, positions, {**expect, "vec_seq": seq})
    return MapLayout(subspace, labels, positions, paths, recomputed=recomputed, placed=placed)
