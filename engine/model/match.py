"""Match to query: the pitch shift and the stretch that bring a result closest to a query.

``loev match QUERY RESULT`` and the app's "match to query" (both through
``engine.session.Session.match``, on the excerpts of :func:`read_pair`). The result audio is
transformed with :mod:`engine.model.transforms` (the model's own augmentations) for every
candidate of a grid (-6..+6 semitones; stretch ratios log-spaced over 0.5..2.0), all
candidates are embedded in one batch, and the one closest to the query wins: by cosine
distance in the key ("pitch") subspace for the shift, in the "tempo" subspace for the
stretch. A parabola through the best grid point and its neighbours refines each answer;
the refined candidates are embedded (one more small batch) and kept only if they are
actually closer.

The embedder is anything with ``subspaces`` and ``embed_audio_batch(list of [T] arrays at
16 kHz) -> list of {subspace: unit vector}`` (``engine.model.embed.Embedder``). A checkpoint
with a single space ("all") answers both questions from it.
"""
from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import numpy as np

from engine.audio.transforms import source_samples_needed
from engine.audio.decode import load_middle
from engine.config import SAMPLE_RATE, TEMPO_RANGE
from engine.model.variants import pitch_shift_versions, time_stretch_versions

# Six semitones either way reach every key; the stretch grid spans the whole tempo range.
SHIFTS = tuple(float(s) for s in range(-6, 7))
STRETCHES = tuple(float(r) for r in np.geomspace(*TEMPO_RANGE, 25))  # 2 ** (1/12) apart
_GROUP = 4  # candidates per transform call: bounds the vocoder's memory on long excerpts
MIN_SECONDS = 1.0  # the slowest stretch candidate still needs half of it
# The middle of each track that a match looks at: bounded cost and memory for long files.
MATCH_SECONDS = 20.0
TIE_TOLERANCE = 1e-6  # cosine distances this close are the same answer


class EmbedderLike(Protocol):
    subspaces: tuple[str, ...]

    def embed_audio_batch(self, ys: list[np.ndarray]) -> list[dict[str, np.ndarray]]: ...


@dataclass(frozen=True)
class MatchResult:
    """What to apply to RESULT to bring it closest to QUERY.

    Attributes
    ----------
    shift : float
        Semitones to apply to the result (pitch subspace).
    stretch : float
        Tempo ratio to apply to the result (> 1 faster; tempo subspace).
    key_distance_before, key_distance_after : float
        Cosine distance to the query in the key subspace, untransformed / shifted.
    tempo_distance_before, tempo_distance_after : float
        The same in the tempo subspace, untransformed / stretched.
    key_subspace, tempo_subspace : str
        The subspaces used ("all" for a single-space checkpoint).
    """

    shift: float
    stretch: float
    key_distance_before: float
    key_distance_after: float
    tempo_distance_before: float
    tempo_distance_after: float
    key_subspace: str = "pitch"
    tempo_subspace: str = "tempo"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def cosine_distance(a: np.ndarray, b: np.ndarray) -> float:
    """1 - cos(a, b) (vectors need not be normalised)."""
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    if na == 0 or nb == 0:
        return 1.0
    return float(1.0 - np.dot(a, b) / (na * nb))


def parabolic_minimum(values: Sequence[float], distances: Sequence[float]) -> float:
    """Refine the argmin of ``distances`` over an evenly spaced grid ``values`` with the
    parabola through it and its two neighbours (the grid point itself at an edge or where
    the parabola does not open upwards)."""
    d = np.asarray(distances, dtype=np.float64)
    v = np.asarray(values, dtype=np.float64)
    i = int(np.argmin(d))
    if i == 0 or i == len(d) - 1:
        return float(v[i])
    a, b, c = d[i - 1], d[i], d[i + 1]
    curvature = a - 2 * b + c
    if curvature <= 0:
        return float(v[i])
    offset = 0.5 * (a - c) / curvature  # in grid steps, within (-0.5, 0.5)
    return float(v[i] + offset * (v[i + 1] - v[i - 1]) / 2)


def best_alignment(
    query_vec: np.ndarray,
    candidate_vecs: Sequence[np.ndarray],
    grid: Sequence[float],
    *,
    log_scale: bool = False,
) -> tuple[float, float, np.ndarray]:
    """The grid value whose candidate is closest to the query, and a refined estimate.

    Parameters
    ----------
    query_vec : np.ndarray [D]
    candidate_vecs : sequence of np.ndarray [D]
        Embedding of the result transformed by each grid value.
    grid : sequence of float
        Evenly spaced (in log2 when ``log_scale``).

    Returns
    -------
    best : float
        Grid value with the smallest cosine distance.
    refined : float
        Parabolic refinement of it (in log2 when ``log_scale``).
    distances : np.ndarray [len(grid)]
    """
    distances = np.array([cosine_distance(query_vec, v) for v in candidate_vecs])
    axis = np.log2(grid) if log_scale else np.asarray(grid, dtype=np.float64)
    # Ties (silence against silence: every candidate is the same) go to the identity,
    # not to the grid's first value: no evidence means no change.
    tied = np.flatnonzero(distances <= distances.min() + TIE_TOLERANCE)
    i = int(tied[np.argmin(np.abs(axis[tied]))])
    best = float(grid[i])
    if len(tied) > 1:
        return best, best, distances
    refined = parabolic_minimum(axis, distances)
    return best, float(2.0 ** refined if log_scale else refined), distances


def _excerpt(y: np.ndarray, n: int, centre: int | None = None) -> np.ndarray:
    """``n`` samples around the middle (or ``centre``) of ``y``, inside it."""
    n = min(n, y.size)
    c = y.size // 2 if centre is None else centre
    start = max(0, min(c - n // 2, y.size - n))
    return y[start: start + n]


def _shifted(y: np.ndarray, shifts: Sequence[float], sr: int) -> list[np.ndarray]:
    return pitch_shift_versions(y, list(shifts), sr=sr, group=_GROUP)


def _stretched(y: np.ndarray, rates: Sequence[float], sr: int, out_samples: int
               ) -> list[np.ndarray]:
    return time_stretch_versions(y, list(rates), sr=sr, out_samples=out_samples,
                                    group=_GROUP)


def _space(embedder: EmbedderLike, wanted: str) -> str:
    subspaces = tuple(embedder.subspaces)
    if wanted in subspaces:
        return wanted
    if "all" in subspaces:
        return "all"
    raise ValueError(f"embedder has no {wanted!r} or 'all' subspace: {subspaces}")


def match_tracks(
    query_y: np.ndarray,
    result_y: np.ndarray,
    embedder: EmbedderLike,
    *,
    sr: int = SAMPLE_RATE,
    shifts: Sequence[float] = SHIFTS,
    stretches: Sequence[float] = STRETCHES,
    refine: bool = True,
    max_seconds: float | None = None,
) -> MatchResult:
    """Find the pitch shift and the stretch of ``result_y`` closest to ``query_y``.

    Parameters
    ----------
    query_y, result_y : np.ndarray [T]
        Mono audio at ``sr`` (16 kHz for the model).
    embedder : EmbedderLike
    shifts : sequence of float
        Semitone grid, evenly spaced; must contain 0.
    stretches : sequence of float
        Ratio grid, log-evenly spaced; must contain 1.
    refine : bool
        Try the parabolic refinement of each answer (one more batch of two).
    max_seconds : float, optional
        Only the middle ``max_seconds`` (default MATCH_SECONDS) of each track are used,
        bounding the cost.

    Returns
    -------
    MatchResult
    """
    if 0.0 not in shifts or 1.0 not in [round(r, 9) for r in stretches]:
        raise ValueError("the shift grid must contain 0 and the stretch grid 1")
    for name, y in (("query", query_y), ("result", result_y)):
        if np.asarray(y).size < sr * MIN_SECONDS:
            raise ValueError(f"the {name} is too short to match ({np.asarray(y).size / sr:.2f} s;"
                             f" at least {MIN_SECONDS:g} s)")
    key_space, tempo_space = _space(embedder, "pitch"), _space(embedder, "tempo")
    n = int((MATCH_SECONDS if max_seconds is None else max_seconds) * sr)
    query = _excerpt(np.asarray(query_y, dtype=np.float32), n)
    result_full = np.asarray(result_y, dtype=np.float32)
    result = _excerpt(result_full, n)
    # The stretched candidates share one length: what the fastest rate can fill.
    stretch_len = min(n, int(math.floor(result_full.size / max(stretches))))
    stretch_src = _excerpt(result_full, source_samples_needed(stretch_len, max(stretches)))

    candidates = _shifted(result, shifts, sr) + _stretched(stretch_src, stretches, sr,
                                                            stretch_len)
    vecs = embedder.embed_audio_batch([query] + candidates)
    q, shift_vecs, stretch_vecs = vecs[0], vecs[1: 1 + len(shifts)], vecs[1 + len(shifts):]

    shift, shift_ref, key_d = best_alignment(
        q[key_space], [v[key_space] for v in shift_vecs], shifts)
    stretch, stretch_ref, tempo_d = best_alignment(
        q[tempo_space], [v[tempo_space] for v in stretch_vecs], stretches, log_scale=True)
    key_after, tempo_after = float(key_d.min()), float(tempo_d.min())

    if refine and (shift_ref != shift or stretch_ref != stretch):
        extra = _shifted(result, [shift_ref], sr) + _stretched(stretch_src, [stretch_ref], sr,
                                                               stretch_len)
        e_shift, e_stretch = embedder.embed_audio_batch(extra)
        d = cosine_distance(q[key_space], e_shift[key_space])
        if d < key_after:
            shift, key_after = shift_ref, d
        d = cosine_distance(q[tempo_space], e_stretch[tempo_space])
        if d < tempo_after:
            stretch, tempo_after = stretch_ref, d

    return MatchResult(
        shift=round(float(shift), 3),
        stretch=round(float(stretch), 4),
        key_distance_before=float(key_d[list(shifts).index(0.0)]),
        key_distance_after=key_after,
        tempo_distance_before=float(tempo_d[int(np.argmin(np.abs(np.log(stretches))))]),
        tempo_distance_after=tempo_after,
        key_subspace=key_space,
        tempo_subspace=tempo_space,
    )


def read_pair(query_path: str | os.PathLike[str], result_path: str | os.PathLike[str], *,
              seconds: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The audio a match looks at: the middle ``seconds`` (default MATCH_SECONDS) of the
    query and, for the result, as much of its middle as the fastest stretch candidate
    needs to fill that.

    A long track is never decoded whole. Raises DecodeError for a bad file.

    Returns
    -------
    query_y, result_y : np.ndarray [T], 16 kHz mono
    """
    seconds = MATCH_SECONDS if seconds is None else seconds
    return (load_middle(query_path, seconds),
            load_middle(result_path, seconds * max(STRETCHES)))


__all__ = ["MatchResult", "best_alignment", "match_tracks", "read_pair", "parabolic_minimum",
           "cosine_distance", "SHIFTS", "STRETCHES", "MATCH_SECONDS"]
