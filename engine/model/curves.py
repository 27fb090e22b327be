"""Invariance curves: how far each subspace moves when a track is transposed or stretched.

For a LOEV++ model the invariant subspace should stay put under both transforms while
the pitch (tempo) subspace moves with a pitch shift (time stretch): paper Section V's
picture of what each head keeps. The transforms are the trainer's augmentations where
torch is installed, the player's vocoder otherwise (engine.model.variants); every
transformed version is embedded in one batch.
"""
from __future__ import annotations

import os
from typing import Any

import numpy as np

from engine.audio.decode import load_middle
from engine.config import CHUNK_SAMPLES, PITCH_RANGE, SAMPLE_RATE, TEMPO_RANGE
from engine.model.variants import pitch_shift_versions, time_stretch_versions

PITCH_VALUES = tuple(float(s) for s in range(int(PITCH_RANGE[0]), int(PITCH_RANGE[1]) + 1))
TEMPO_VALUES = tuple(float(r) for r in np.round(np.geomspace(*TEMPO_RANGE, 13), 4))  # rates
# Seconds of the track (its middle) that the curve looks at: bounded cost for long files.
EXCERPT_SECONDS = 12.0


def invariance_curve(path_or_y: str | os.PathLike[str] | np.ndarray, transform: str,
                     embedder: Any, *, values: list[float] | None = None,
                     seconds: float = EXCERPT_SECONDS) -> dict[str, Any]:
    """Cosine distance between the clean and the transformed track embedding.

    Parameters
    ----------
    path_or_y : path or np.ndarray [T]
        An audio file, or a 16 kHz mono signal.
    transform : {"pitch", "tempo"}
        Pitch shift in semitones (default -12..+12, step 1) or time stretch by a rate
        (default 13 log-spaced values 0.5..2.0; > 1 is faster).
    embedder : Embedder
    values : list of float, optional
    seconds : float
        Length of the excerpt (the middle of a file) the curve is computed on; for
        ``tempo`` the transformed excerpts are this long and are cut from twice as much
        audio where the track has it, so that even rate 2.0 is not padded; the reference
        is the same middle, unstretched. A track too short to fill a chunk that way (a
        one-shot) is stretched whole, its reference the whole track.

    Returns
    -------
    dict
        ``{"transform", "values": [...], "subspaces": {name: [distance per value]}}``.
    """
    if transform not in ("pitch", "tempo"):
        raise ValueError(f"transform must be 'pitch' or 'tempo', got {transform!r}")
    vals = list(values) if values is not None else list(
        PITCH_VALUES if transform == "pitch" else TEMPO_VALUES)
    span = seconds * (max(max(vals), 1.0) if transform == "tempo" else 1.0)
    if isinstance(path_or_y, np.ndarray):
        y = np.asarray(path_or_y, dtype=np.float32)
        y = y[: int(span * SAMPLE_RATE)]
    else:
        y = load_middle(path_or_y, span)
    if not np.all(np.isfinite(y)):
        # NaN embeddings give NaN distances, drawn as a flat, "perfectly invariant" line.
        from engine.errors import DecodeError

        where = path_or_y if not isinstance(path_or_y, np.ndarray) else "<signal>"
        raise DecodeError(where, "the audio holds NaN or infinite samples")
    clean, transformed = _transformed(y, transform, vals)
    embs = embedder.embed_audio_batch([clean] + list(transformed))
    ref, rest = embs[0], embs[1:]
    subspaces = {s: [float(max(0.0, 1.0 - float(np.dot(ref[s], e[s])))) for e in rest]
                 for s in ref}
    return {"transform": transform, "values": [float(v) for v in vals], "subspaces": subspaces}


def _transformed(y: np.ndarray, transform: str, vals: list[float]
                 ) -> tuple[np.ndarray, list[np.ndarray]]:
    """The clean reference [T'] and one transformed version [T'] per value."""
    if transform == "pitch":
        return y, pitch_shift_versions(y, vals, sr=SAMPLE_RATE)
    # One output length for all rates: as much as the fastest rate can fill, from the middle
    # of the track, where the stretched versions are cut from too (rate 1 is the reference).
    out = int(len(y) / max(max(vals), 1.0))
    if out < CHUNK_SAMPLES:
        # A sound shorter than that is padded to a chunk anyway: stretch all of it, as a
        # producer plays a one-shot faster or slower, not its middle alone.
        return y, time_stretch_versions(y, vals, sr=SAMPLE_RATE)
    start = (len(y) - out) // 2
    return y[start : start + out], time_stretch_versions(y, vals, sr=SAMPLE_RATE, out_samples=out)
