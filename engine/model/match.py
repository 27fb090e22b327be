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

SHIFTS = tuple(float(s) for s in range(-6, 7))
# Six semitones either way reach every key; the stretch grid spans the whole tempo range.
STRETCHES = tuple(float(r) for r in np.geomspace(*TEMPO_RANGE, 25))  # 2 ** (1/12) apart
_GROUP = 4  # candidates per transform call: bounds the vocoder's memory on long excerpts
# The middle of each track that a match looks at: bounded cost and memory for long files.
MATCH_SECONDS = 20.0
TIE_TOLERANCE = 1e-6  # cosine distances this close are the same answer
# Below this a clip is a one-shot: matched in pitch only (a hit has no tempo to match, and
# the slowest stretch candidate would need twice its length).
ONE_SHOT_SECONDS = 1.0
MIN_SECONDS = 0.05  # shorter is not a sound but a click of the mouse
# Candidates whose distance lies within this fraction of the grid's range above the best
# count as equally good: among them the one nearest the identity wins. An embedding cannot
# tell a tempo from its half or double, nor an unpitched loop's keys apart; a producer
# wants the smallest change that fits, not 0.56x where 1.125x sounds the same.
NEAR_BEST = 0.1
RIPPLE = 0.2  # fraction of the strongest onset below which a rise is ripple, not an onset
ONSET_MIN = 0.2  # an onset adds this fraction of an average frame's log spectrum at least
PULSE_MIN = 0.3  # onset autocorrelation peak (0..1) above which a sound has a beat
FLATNESS_MAX = 0.3  # spectral flatness above which a sound has no pitch to shift


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
    mode : str
        ``"loop"`` (pitch and stretch matched), ``"one-shot"`` (shorter than
        ONE_SHOT_SECONDS: pitch only) or ``"no tempo"`` (one of the two has no beat:
        pitch only).
    pitched : bool
        False when the result has no pitch (noise, drums): the shift is then 0.
    """

    shift: float
    stretch: float
    key_distance_before: float
    key_distance_after: float
    tempo_distance_before: float
    tempo_distance_after: float
    key_subspace: str = "pitch"
    tempo_subspace: str = "tempo"
    mode: str = "loop"
    pitched: bool = True

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


def nearest_identity(values: Sequence[float], distances: Sequence[float], identity: float,
                     *, log_scale: bool = False, near: float = NEAR_BEST) -> int:
    """Index of the candidate nearest ``identity`` among those about as close as the best.

    "About as close" is within ``near`` times the spread of ``distances`` above their
    minimum; distances in log2 when ``log_scale`` (a ratio of 0.5 is as far from 1 as 2).
    """
    d = np.asarray(distances, dtype=np.float64)
    v = np.asarray(values, dtype=np.float64)
    if log_scale:
        v, identity = np.log2(v), math.log2(identity)
    ok = np.flatnonzero(d <= d.min() + near * (d.max() - d.min()))
    return int(ok[np.argmin(np.abs(v[ok] - identity))])


def _onset_envelope(y: np.ndarray, sr: int) -> np.ndarray:
    """Spectral flux (64 ms frames every 10 ms, log magnitude) above its median: a held
    note's or a chord's ripple sits at the median, so only onsets stand out."""
    hop, n_fft = max(1, sr // 100), 1024
    if y.size < n_fft + 3 * hop:
        return np.zeros(0)
    frames = np.lib.stride_tricks.sliding_window_view(y.astype(np.float64), n_fft)[::hop]
    mag = np.log1p(100.0 * np.abs(np.fft.rfft(frames * np.hanning(n_fft), axis=1)))
    flux = np.maximum(np.diff(mag, axis=0), 0.0).sum(axis=1)
    floor = float(np.median(flux))
    peak = float(flux.max())
    level = float(mag.sum(axis=1).mean())
    if peak - floor < ONSET_MIN * level:
        return np.zeros(0)  # no rise stands out of the ripple
    return np.maximum(flux - floor - RIPPLE * (peak - floor), 0.0)


def pulse_strength(y: np.ndarray, sr: int = SAMPLE_RATE) -> float:
    """How periodic the onsets of ``y`` are: the peak of the onset envelope's normalised
    autocorrelation over beat periods of 0.25-2 s (240-30 BPM), 0..1.

    A loop scores near 1, a sustained note or a single hit near 0.
    """
    env = _onset_envelope(np.asarray(y, dtype=np.float32), sr)
    lo, hi = 25, min(200, env.size // 2)
    if env.size < 2 * lo or hi <= lo:
        return 0.0
    env = env - env.mean()
    power = float(np.dot(env, env))
    if power <= 1e-12:
        return 0.0
    ac = np.array([np.dot(env[:-k], env[k:]) for k in range(lo, hi + 1)])
    # Unbiased: a lag has fewer overlapping frames than lag 0.
    ac = ac / power * env.size / (env.size - np.arange(lo, hi + 1))
    return float(max(0.0, ac.max()))


def spectral_flatness(y: np.ndarray, sr: int = SAMPLE_RATE) -> float:
    """Median spectral flatness (geometric / arithmetic mean of power, 60 Hz-5 kHz) of
    the loud frames of ``y``: near 0 for a tone, about 0.5 for noise."""
    y = np.asarray(y, dtype=np.float64)
    n_fft = 1024
    if y.size < n_fft:
        y = np.pad(y, (0, n_fft - y.size))
    frames = np.lib.stride_tricks.sliding_window_view(y, n_fft)[:: n_fft // 2]
    rms = np.sqrt((frames ** 2).mean(axis=1))
    loud = frames[rms >= 0.25 * rms.max()] if rms.max() > 0 else frames[:0]
    if len(loud) == 0:
        return 1.0
    power = np.abs(np.fft.rfft(loud * np.hanning(n_fft), axis=1)) ** 2
    freqs = np.fft.rfftfreq(n_fft, 1 / sr)
    power = power[:, (freqs >= 60) & (freqs <= 5000)] + 1e-12
    flat = np.exp(np.log(power).mean(axis=1)) / power.mean(axis=1)
    return float(np.median(flat))


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
    query_full = np.asarray(query_y, dtype=np.float32)
    result_full = np.asarray(result_y, dtype=np.float32)
    for name, y in (("query", query_full), ("result", result_full)):
        if y.size < sr * MIN_SECONDS:
            raise ValueError(f"the {name} is too short to match ({y.size / sr:.2f} s;"
                             f" at least {MIN_SECONDS:g} s)")
    key_space, tempo_space = _space(embedder, "pitch"), _space(embedder, "tempo")
    n = int((MATCH_SECONDS if max_seconds is None else max_seconds) * sr)
    query = _excerpt(query_full, n)
    result = _excerpt(result_full, n)
    if min(query_full.size, result_full.size) < sr * ONE_SHOT_SECONDS:
        mode = "one-shot"
    elif min(pulse_strength(query, sr), pulse_strength(result, sr)) < PULSE_MIN:
        mode = "no tempo"
    else:
        mode = "loop"
    pitched = spectral_flatness(result, sr) < FLATNESS_MAX
    if not pitched:
        shifts = (0.0,)
    if mode != "loop":
        stretches = (1.0,)
    if mode == "one-shot":
        # Silence after the hit, as a sampler plays it: the vocoder needs a few frames.
        pad = int(sr * ONE_SHOT_SECONDS)
        query, result = (np.pad(y, (0, max(0, pad - y.size))) for y in (query, result))
        result_full = result

    # The stretched candidates share one length: what the fastest rate can fill.
    stretch_len = min(n, int(math.floor(result_full.size / max(stretches))))
    stretch_src = _excerpt(result_full, source_samples_needed(stretch_len, max(stretches)))
    stretch_grid = [r for r in stretches if round(r, 9) != 1.0]
    # The unstretched candidate is the result itself at the stretched candidates' length.
    unstretched = [_excerpt(result_full, stretch_len)] if stretch_grid else []
    candidates = (_shifted(result, shifts, sr) + unstretched
                  + _stretched(stretch_src, stretch_grid, sr, stretch_len))
    vecs = embedder.embed_audio_batch([query] + candidates)
    q, shift_vecs = vecs[0], vecs[1: 1 + len(shifts)]
    rest = vecs[1 + len(shifts):]
    identity = rest[0] if stretch_grid else shift_vecs[list(shifts).index(0.0)]
    extra = iter(rest[1:])
    stretch_vecs = [identity if round(r, 9) == 1.0 else next(extra) for r in stretches]

    key_d = np.array([cosine_distance(q[key_space], v[key_space]) for v in shift_vecs])
    tempo_d = np.array([cosine_distance(q[tempo_space], v[tempo_space]) for v in stretch_vecs])
    i_shift = nearest_identity(shifts, key_d, 0.0)
    i_stretch = nearest_identity(stretches, tempo_d, 1.0, log_scale=True)
    shift, stretch = float(shifts[i_shift]), float(stretches[i_stretch])
    key_after, tempo_after = float(key_d[i_shift]), float(tempo_d[i_stretch])
    shift_ref = _refined(shifts, key_d, i_shift)
    stretch_ref = 2.0 ** _refined(np.log2(stretches), tempo_d, i_stretch)

    if refine and (abs(shift_ref - shift) > 1e-6 or abs(stretch_ref - stretch) > 1e-6):
        extra_y = _shifted(result, [shift_ref], sr) + _stretched(stretch_src, [stretch_ref], sr,
                                                                   stretch_len)
        e_shift, e_stretch = embedder.embed_audio_batch(extra_y)
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
        mode=mode,
        pitched=pitched,
    )


def _refined(axis: Sequence[float], distances: np.ndarray, i: int) -> float:
    """Parabolic refinement around grid index ``i`` (the grid value itself at an edge)."""
    axis = np.asarray(axis, dtype=np.float64)
    if i == 0 or i == len(axis) - 1:
        return float(axis[i])
    return parabolic_minimum(axis[i - 1: i + 2], distances[i - 1: i + 2])


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
           "cosine_distance", "nearest_identity", "pulse_strength", "spectral_flatness",
           "SHIFTS", "STRETCHES", "MATCH_SECONDS"]
