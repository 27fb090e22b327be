"""Project sync: the pitch shift and tempo ratio that play a track in a project's key and BPM.

A producer sets a project key and BPM; every preview is then transposed to the key and
stretched to the tempo, as Loopcloud and Splice do. Two choices make it musical rather than
literal:

* **Key.** A track is moved by the smallest shift, -6..+5 semitones, that puts its key on the
  project's key *or its relative* (same key signature). An A minor loop in a C major
  project stays where it is: its notes are already C major's notes, and that is the pairing
  a producer (and the Camelot wheel, 8A/8B) calls compatible. Moving it to C minor (the
  parallel key) would change its notes for a mode the project does not have. The tritone,
  where up and down are equally far, always goes down (-6): the same pair always gets the
  same answer, and a shift down leaves a sample's formants less audibly altered than one
  up.
* **Tempo.** A track may be heard at its detected BPM, at half or at double it (a 64 BPM
  loop is a 128 BPM loop in half time). Of the three, the one whose ratio to the project
  BPM lies nearest 1 (in log, so x0.5 and x2 are equally far) is taken, then kept within
  the audition's range (:data:`engine.config.TEMPO_RANGE`). A track without a tempo (a
  one-shot, a pad) is never stretched.

The same rules give a result's offset to the query (:func:`offset`): how far its key and
tempo lie from the query's. Labels: :func:`format_sync` ("+2 st, x1.04", "as is") and
:func:`format_offset` ("+2 st", "x0.96").

Pure Python; the app and the engine both use it.

Examples
--------
>>> from engine.keys import parse_key
>>> key_shift(parse_key("D major"), parse_key("C major"))
-2
>>> key_shift(parse_key("A minor"), parse_key("C major"))  # relative: same notes
0
>>> tempo_ratio(64.0, 128.0), round(tempo_ratio(123.0, 128.0), 3)
(1.0, 1.041)
>>> format_sync(project_sync(parse_key("Bb major"), 123.0, parse_key("C major"), 128.0))
'+2 st, x1.04'
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from engine import keys
from engine.config import TEMPO_RANGE

# The largest shift is a tritone; at a tie it goes down (module docstring).
MAX_SHIFT = 6
# Half time, as detected, double time: the readings of a track's tempo a project may take.
TEMPO_MULTIPLES = (1.0, 0.5, 2.0)


@dataclass(frozen=True)
class Sync:
    """A transform: ``semitones`` (an integer shift) and ``tempo`` (ratio, > 1 faster)."""

    semitones: int = 0
    tempo: float = 1.0

    @property
    def identity(self) -> bool:
        return self.semitones == 0 and abs(self.tempo - 1.0) < 5e-3


def _wrap(semitones: int) -> int:
    """``semitones`` folded into -6..+5 (a tritone down rather than up)."""
    return (int(semitones) + MAX_SHIFT) % 12 - MAX_SHIFT


def key_shift(track_key: int | None, project_key: int | None) -> int:
    """Semitones (-6..+5) that move ``track_key`` onto ``project_key`` or its relative.

    A minor track goes to the project key's relative minor when the project key is major
    (and a major track to the relative major of a minor project key): the key with the
    same notes. 0 when either key is unknown (None).

    Examples
    --------
    >>> from engine.keys import parse_key as k
    >>> key_shift(k("E minor"), k("C major")), key_shift(k("F# major"), k("C major"))
    (5, -6)
    """
    if track_key is None or project_key is None:
        return 0
    target = project_key if keys.mode(track_key) == keys.mode(project_key) else keys.relative(project_key)
    return _wrap(keys.tonic(target) - keys.tonic(track_key))


def tempo_ratio(track_bpm: float | None, project_bpm: float | None) -> float:
    """The tempo ratio (> 1 faster) that plays a ``track_bpm`` track at ``project_bpm``.

    The track counts at its BPM, half or double it, whichever gives the ratio nearest 1
    (on a log scale; at an exact tie the detected tempo wins);
    the ratio is then clipped into :data:`engine.config.TEMPO_RANGE`. 1.0 when either
    tempo is unknown (None) or not a positive number.
    """
    if not _positive(track_bpm) or not _positive(project_bpm):
        return 1.0
    ratios = [project_bpm / (m * track_bpm) for m in TEMPO_MULTIPLES]
    best = min(range(len(ratios)), key=lambda i: (round(abs(math.log(ratios[i])), 12), i))
    lo, hi = TEMPO_RANGE
    return min(max(ratios[best], lo), hi)


def project_sync(track_key: int | None, track_bpm: float | None, project_key: int | None,
                 project_bpm: float | None) -> Sync:
    """What a track is played at in a project: :func:`key_shift` and :func:`tempo_ratio`.

    A project without a key (None) shifts nothing; one without a BPM stretches nothing.
    """
    return Sync(key_shift(track_key, project_key), tempo_ratio(track_bpm, project_bpm))


@dataclass(frozen=True)
class Offset:
    """How far a neighbour lies from a query: ``semitones`` (-6..+5) from the query's key
    to the neighbour's (relative keys count as the same key), ``ratio`` the neighbour's
    tempo over the query's (half/double time folded in); None where either is unknown."""

    semitones: int | None
    ratio: float | None


def offset(query_key: int | None, query_bpm: float | None, key: int | None,
           bpm: float | None) -> Offset:
    """The neighbour (``key``, ``bpm``)'s offset from the query: "+2 st" means the
    neighbour sits two semitones above the query, "x0.96" that it runs at 0.96 times the
    query's tempo. Applying the inverse (:func:`project_sync` with the query as the
    project) brings the neighbour to the query.

    >>> from engine.keys import parse_key as k
    >>> o = offset(k("C major"), 125.0, k("D major"), 120.0)
    >>> o.semitones, round(o.ratio, 4)
    (2, 0.96)
    """
    semitones = None if query_key is None or key is None else -key_shift(key, query_key)
    if semitones == MAX_SHIFT:  # -(-6): a tritone either way; said as down, like the shift
        semitones = -MAX_SHIFT
    ratio = None
    if _positive(query_bpm) and _positive(bpm):
        ratio = 1.0 / tempo_ratio(bpm, query_bpm)
    return Offset(semitones, ratio)


def format_sync(sync: Sync) -> str:
    """The label of what a track is played at: ``"+2 st, x1.04"``, ``"x0.96"``, ``"-3 st"``,
    ``"as is"``.

    A part that changes nothing is left out (a ratio that rounds to x1.00 included), so
    that the label says only what is done to the sound.
    """
    parts = []
    if sync.semitones:
        parts.append(f"{sync.semitones:+d} st")
    if f"{sync.tempo:.2f}" != "1.00":
        parts.append(f"x{sync.tempo:.2f}")
    return ", ".join(parts) or "as is"


def format_offset(off: Offset) -> str:
    """A neighbour's offset from the query: ``"+2 st, x0.96"``, ``"0 st, x1.00"`` (same key
    and tempo), one part where the other is unknown, ``""`` where both are."""
    parts = []
    if off.semitones is not None:
        parts.append(f"{off.semitones:+d} st" if off.semitones else "0 st")
    if off.ratio is not None:
        parts.append(f"x{off.ratio:.2f}")
    return ", ".join(parts)


def _positive(x: float | None) -> bool:
    return x is not None and math.isfinite(x) and x > 0


__all__ = ["MAX_SHIFT", "Offset", "Sync", "TEMPO_MULTIPLES", "format_offset", "format_sync", "key_shift",
           "offset", "project_sync", "tempo_ratio"]
