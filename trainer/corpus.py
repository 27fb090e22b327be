"""Render a labelled training corpus offline through a General MIDI soundfont.

The pretraining corpus, and the held-out benchmark (``--split bench``): every
file is 16 kHz mono FLAC of 20-40 s, and ``labels.csv`` says its key (mir_eval style,
``"X"`` for drum-only files), tempo (quarter notes per minute), General MIDI program and
family, where the notes came from, and the seed that rebuilds it.

Note material (DESIGN.md section 7; nothing is downloaded):

- ``music21:<piece>``: Bach pieces from music21's bundled corpus in a x/4 metre whose
  opening key signature agrees with the Krumhansl-Schmuckler estimate of the whole piece
  (the label is then both notated and heard); transposed to a uniformly random tonic,
  played at a random tempo, all parts from one GM family.
- ``procedural:band``: a diatonic chord progression, a bass line, a melody and (often)
  a drum groove; ``procedural:progression``: chords and (sometimes) a bass line;
  ``procedural:bassline``: a bass line on a GM bass program over (often) drums;
  ``procedural:drums``: a drum groove alone on the GM percussion channel (10).

Choices the issues leave open, written down here:

- All pitched parts of a file draw their programs from one GM family, so the ``family``
  label is true of everything pitched in the file; ``program`` is the top part's program
  and ``programs`` lists every program used (128 stands for the percussion bank).
- ``split`` partitions the material by hash, independently of ``seed``: a music21 piece
  belongs to ``bench`` when ``sha256(work) % 5 == 0`` (editions of one chorale share a
  work, see ``piece_group``), a procedural item seed likewise; a benchmark therefore never
  shares a piece or a procedural seed with any training corpus. (Bach harmonised some
  hymn tunes more than once under different BWV numbers; those harmonisations are
  different pieces and may fall in different splits.)
- MuseScore_General is reserved for held-out evaluation (DESIGN.md section 7): it is refused
  unless the caller passes ``allow_heldout_soundfont=True`` (``--allow-heldout-soundfont``).
- Audio is synthesised at 32 kHz and resampled to 16 kHz with soxr, so that the
  soundfont's sample interpolation does not alias into the band the model sees.
"""
from __future__ import annotations

import argparse
import csv
import functools
import hashlib
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np

from engine.config import SAMPLE_RATE
from engine.errors import LoevError
from engine.keys import key_name, make_key

log = logging.getLogger(__name__)

RENDER_SR = 32_000
TEMPO_RANGE = (60.0, 180.0)
DURATION_RANGE = (20.0, 40.0)
SPLITS = ("train", "bench")
BENCH_MODULUS = 5  # one hash bucket in five is the benchmark's
DRUM_CHANNEL = 9  # GM channel 10, zero-based
DRUM_PROGRAM = 128  # "program" of the percussion bank in labels.csv
NO_KEY = "X"  # mir_eval's "no key" label, for drum-only files

LABEL_COLUMNS = (
    "file", "key", "tempo", "program", "family", "source", "seed", "soundfont",
    "programs", "duration", "split",
)

DEFAULT_SOUNDFONTS = (
    Path("/usr/share/sounds/sf2/FluidR3_GM.sf2"),
    Path("/usr/share/sounds/sf2/TimGM6mb.sf2"),
)

# General MIDI program families, eight programs each (GM 1 sound set).
GM_FAMILIES = (
    "piano", "chromatic percussion", "organ", "guitar", "bass", "strings", "ensemble",
    "brass", "reed", "pipe", "synth lead", "synth pad", "synth effects", "ethnic",
    "percussive", "sound effects",
)
# Percussive and sound-effect programs carry no stable pitch: never used for notes.
PITCHED_FAMILIES = GM_FAMILIES[:14]

KIND_WEIGHTS = {
    "music21": 0.35,
    "band": 0.30,
    "progression": 0.15,
    "bassline": 0.10,
    "drums": 0.10,
}

# How often a procedural kind gets a drum groove under it.
DRUM_PROBABILITY = {"band": 0.7, "progression": 0.3, "bassline": 0.7, "drums": 1.0}

MAJOR_SCALE = (0, 2, 4, 5, 7, 9, 11)
MINOR_SCALE = (0, 2, 3, 5, 7, 8, 10)
# Scale degrees (0 = tonic) of progressions that open on the tonic, so that the key is the
# one a listener hears; V in minor takes the harmonic minor's leading tone (see _triad).
MAJOR_PROGRESSIONS = (
    (0, 4, 5, 3), (0, 3, 4, 0), (0, 5, 3, 4), (0, 1, 4, 0), (0, 3, 0, 4), (0, 5, 1, 4),
    (0, 2, 3, 4),
)
MINOR_PROGRESSIONS = (
    (0, 3, 4, 0), (0, 5, 3, 4), (0, 3, 0, 4), (0, 6, 5, 4), (0, 5, 6, 0), (0, 3, 6, 4),
)

# Drum grooves on a 16th-note grid of one 4/4 bar: GM percussion key -> steps.
KICK, SNARE, CLOSED_HAT, OPEN_HAT, CRASH, RIDE, CLAP = 36, 38, 42, 46, 49, 51, 39
GROOVES_44 = {
    "rock": {KICK: (0, 8), SNARE: (4, 12), CLOSED_HAT: (0, 2, 4, 6, 8, 10, 12, 14)},
    "four": {KICK: (0, 4, 8, 12), CLAP: (4, 12), OPEN_HAT: (2, 6, 10, 14)},
    "halftime": {KICK: (0, 6, 10), SNARE: (8,), CLOSED_HAT: (0, 2, 4, 6, 8, 10, 12, 14)},
    "funk": {KICK: (0, 3, 8, 10), SNARE: (4, 12), CLOSED_HAT: tuple(range(16))},
    "ride": {KICK: (0, 8), SNARE: (4, 12), RIDE: (0, 4, 6, 8, 12, 14)},
}
GROOVES_34 = {
    "waltz": {KICK: (0,), SNARE: (4, 8), CLOSED_HAT: (0, 2, 4, 6, 8, 10)},
}
DRUM_KITS = (0, 8, 16, 24, 25, 32, 40)


class CorpusError(LoevError):
    """The corpus cannot be rendered: a missing or reserved soundfont, a bad argument."""


# --------------------------------------------------------------------------- labels


def gm_family(program: int) -> str:
    """GM family name of a program 0-127, ``"drums"`` for ``DRUM_PROGRAM``."""
    if program == DRUM_PROGRAM:
        return "drums"
    if not 0 <= program < 128:
        raise CorpusError(f"GM program {program} is outside 0-127")
    return GM_FAMILIES[program // 8]


def read_labels(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Read a corpus ``labels.csv``.

    Returns one dict per file with the CSV's columns, ``tempo`` and ``duration`` as float,
    ``program`` and ``seed`` as int, ``programs`` as a list of int, and ``path``: the audio
    file's absolute path (``file`` is relative to the CSV's folder).
    """
    path = Path(path)
    if not path.is_file():
        raise CorpusError(f"{path}: no such labels file")
    rows = []
    with path.open(newline="") as f:
        for row in csv.DictReader(f):
            item: dict[str, Any] = dict(row)
            item["tempo"] = float(row["tempo"])
            item["program"] = int(row["program"])
            item["seed"] = int(row["seed"])
            if row.get("duration"):
                item["duration"] = float(row["duration"])
            if row.get("programs"):
                item["programs"] = [int(p) for p in row["programs"].split(";")]
            item["path"] = str((path.parent / row["file"]).resolve())
            rows.append(item)
    return rows


# ----------------------------------------------------------------- soundfont choice


def default_soundfont() -> Path:
    """The first installed GM soundfont of ``DEFAULT_SOUNDFONTS`` (FluidR3 before TimGM6mb)."""
    for path in DEFAULT_SOUNDFONTS:
        if path.is_file():
            return path
    raise CorpusError(
        "no General MIDI soundfont found (looked for "
        + ", ".join(str(p) for p in DEFAULT_SOUNDFONTS)
        + "); install Debian's fluid-soundfont-gm or timgm6mb-soundfont, or pass --soundfont"
    )


def is_heldout_soundfont(path: str | os.PathLike[str]) -> bool:
    """True for MuseScore_General, by name or through a symlink (default-GM.sf2 may point at it)."""
    names = {Path(path).name, Path(path).resolve().name}
    return any("musescore" in n.lower() for n in names)


def check_soundfont(
    path: str | os.PathLike[str] | None, *, allow_heldout_soundfont: bool = False
) -> Path:
    """Resolve the soundfont to render with, refusing the held-out one for training."""
    sf = default_soundfont() if path is None else Path(path)
    if not sf.is_file():
        raise CorpusError(f"{sf}: soundfont not found")
    if is_heldout_soundfont(sf) and not allow_heldout_soundfont:
        raise CorpusError(
            f"{sf}: MuseScore_General is reserved for held-out evaluation (DESIGN.md section 7);"
            " pass --allow-heldout-soundfont only to render a held-out benchmark"
        )
    return sf


# ------------------------------------------------------------------------- the plan


@dataclass(frozen=True)
class ItemSpec:
    """One file of the corpus: everything needed to rebuild it bit for bit."""

    index: int
    kind: str  # a key of KIND_WEIGHTS
    seed: int  # the item's own seed, in the split's part of the hash space
    duration: float  # seconds
    split: str = "train"


def _hash_int(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")


def split_of(name: str | int) -> str:
    """``"bench"`` for one hash bucket in ``BENCH_MODULUS``, else ``"train"``."""
    return "bench" if _hash_int(f"split:{name}") % BENCH_MODULUS == 0 else "train"


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise CorpusError(f"split {split!r} is not one of {SPLITS}")


def plan_corpus(minutes: float, *, seed: int = 0, split: str = "train") -> list[ItemSpec]:
    """Draw the items of a corpus of at least ``minutes`` of audio.

    Item seeds are hashes of (``seed``, position) kept only when they fall in ``split``'s
    part of the hash space, so that train and bench never share a procedural seed.
    """
    _check_split(split)
    if not minutes > 0:
        raise CorpusError(f"minutes must be positive, got {minutes}")
    kinds = list(KIND_WEIGHTS)
    weights = np.array([KIND_WEIGHTS[k] for k in kinds])
    remaining = minutes * 60.0
    items: list[ItemSpec] = []
    attempt = 0
    while remaining > 1e-6:
        item_seed = _hash_int(f"corpus:{seed}:{attempt}")
        attempt += 1
        if split_of(item_seed) != split:
            continue
        rng = np.random.default_rng(item_seed)
        kind = str(rng.choice(kinds, p=weights / weights.sum()))
        duration = float(rng.uniform(*DURATION_RANGE))
        # The last file shrinks to what is left, but never below the shortest length.
        duration = round(min(duration, max(DURATION_RANGE[0], remaining)), 2)
        items.append(ItemSpec(len(items), kind, item_seed, duration, split))
        remaining -= duration
    return items


# ------------------------------------------------------------------ the arrangement


@dataclass
class Arrangement:
    """Notes to play and the labels they deserve.

    ``notes`` rows are (onset s, duration s, channel, MIDI pitch, velocity); ``programs``
    maps a channel to its GM program (``DRUM_PROGRAM`` for channel 10).
    """

    notes: list[tuple[float, float, int, int, int]]
    programs: dict[int, int]
    key: str
    tempo: float
    source: str
    top_channel: int = 0
    drum_kit: int = 0
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def program(self) -> int:
        return self.programs[self.top_channel]


def _draw_tempo(rng: np.random.Generator) -> float:
    return round(float(rng.uniform(*TEMPO_RANGE)), 1)


def _draw_family_programs(
    rng: np.random.Generator, n_parts: int, *, family: str | None = None
) -> list[int]:
    """One GM family for the file, a program of that family for each part."""
    if family is None:
        family = str(rng.choice(PITCHED_FAMILIES))
    base = 8 * GM_FAMILIES.index(family)
    same = rng.random() < 0.5  # half the files: one program for every part
    first = base + int(rng.integers(8))
    return [first if same else base + int(rng.integers(8)) for _ in range(n_parts)]


def _octave_shift(family: str) -> int:
    # Bass programs sound an octave below their written range in real arrangements.
    return -12 if family == "bass" else 0


def _triad(degree: int, tonic: int, mode: str, *, seventh: bool = False) -> list[int]:
    """Pitch classes of the diatonic triad (or seventh chord) on a 0-based scale degree."""
    scale = list(MAJOR_SCALE if mode == "major" else MINOR_SCALE)
    if mode == "minor" and degree in (4, 6):
        scale[6] = 11  # harmonic minor: V and vii take the leading tone
    steps = (0, 2, 4, 6) if seventh else (0, 2, 4)
    return [(tonic + scale[(degree + s) % 7]) % 12 for s in steps]


def _nearest_pitch(pc: int, center: float) -> int:
    """The MIDI pitch of class ``pc`` nearest to ``center``."""
    base = int(round(center)) - 6
    return base + (pc - base) % 12


def _chord_part(
    rng: np.random.Generator, chords: Sequence[list[int]], *, beat: float, beats_per_chord: int,
    n_chords: int, channel: int, center: float,
) -> list[tuple[float, float, int, int, int]]:
    style = str(rng.choice(["block", "half", "stabs", "arpeggio"]))
    notes = []
    for i in range(n_chords):
        t0 = i * beats_per_chord * beat
        pitches = sorted(_nearest_pitch(pc, center + rng.uniform(-3, 3)) for pc in chords[i % len(chords)])
        vel = int(rng.integers(60, 82))
        if style == "block":
            notes += [(t0, beats_per_chord * beat * 0.95, channel, p, vel) for p in pitches]
        elif style in ("half", "stabs"):
            step = 2 if style == "half" else 1
            length = step * beat * (0.9 if style == "half" else 0.45)
            for b in range(0, beats_per_chord, step):
                notes += [(t0 + b * beat, length, channel, p, vel) for p in pitches]
        else:  # eighth-note arpeggio up and down the chord
            cycle = pitches + [pitches[0] + 12] + pitches[1:][::-1]
            for k in range(2 * beats_per_chord):
                notes.append((t0 + k * beat / 2, beat / 2 * 0.95, channel, cycle[k % len(cycle)], vel))
    return notes


def _bass_part(
    rng: np.random.Generator, chords: Sequence[list[int]], *, scale_pcs: Sequence[int], beat: float,
    beats_per_chord: int, n_chords: int, channel: int, center: float = 40.0,
) -> list[tuple[float, float, int, int, int]]:
    style = str(rng.choice(["whole", "roots", "root-fifth", "eighths", "walking"]))
    notes = []
    for i in range(n_chords):
        chord = chords[i % len(chords)]
        t0 = i * beats_per_chord * beat
        root = _nearest_pitch(chord[0], center)
        fifth = _nearest_pitch(chord[2], root + 6)
        vel = int(rng.integers(80, 100))
        if style == "whole":
            notes.append((t0, beats_per_chord * beat * 0.95, channel, root, vel))
        elif style == "roots":
            notes += [(t0 + b * beat, beat * 0.8, channel, root, vel) for b in range(beats_per_chord)]
        elif style == "root-fifth":
            notes += [(t0 + b * beat, beat * 0.8, channel, root if b % 2 == 0 else fifth, vel)
                      for b in range(beats_per_chord)]
        elif style == "eighths":
            notes += [(t0 + k * beat / 2, beat / 2 * 0.8, channel, root, vel - 10 * (k % 2))
                      for k in range(2 * beats_per_chord)]
        else:  # walking: chord tones and scale steps, one per beat
            pool = [root, _nearest_pitch(chord[1], root + 4), fifth]
            pool += [_nearest_pitch(pc, root + 5) for pc in scale_pcs]
            notes.append((t0, beat * 0.85, channel, root, vel))
            notes += [(t0 + b * beat, beat * 0.85, channel, int(rng.choice(pool)), vel - 8)
                      for b in range(1, beats_per_chord)]
    return notes


def _melody_part(
    rng: np.random.Generator, chords: Sequence[list[int]], *, scale_pcs: Sequence[int], beat: float,
    beats_per_chord: int, n_chords: int, channel: int, center: float = 72.0,
) -> list[tuple[float, float, int, int, int]]:
    """A random walk on the scale, landing on chord tones on strong beats."""
    low = int(center) - 10
    scale = [p for p in range(low, low + 22) if p % 12 in scale_pcs]
    idx = len(scale) // 2
    notes = []
    for i in range(n_chords):
        chord = chords[i % len(chords)]
        t = 0.0
        while t < beats_per_chord - 1e-6:
            length = float(rng.choice([0.5, 1.0, 1.0, 2.0], p=[0.35, 0.35, 0.2, 0.1]))
            length = min(length, beats_per_chord - t)
            idx = int(np.clip(idx + rng.choice([-2, -1, -1, 0, 1, 1, 2]), 0, len(scale) - 1))
            if t == int(t) and int(t) % 2 == 0:
                # Strong beats: the nearest chord tone, so the melody states the harmony.
                tones = [j for j, p in enumerate(scale) if p % 12 in chord]
                idx = min(tones, key=lambda j: abs(j - idx))
            if rng.random() > 0.1:  # one note in ten is a rest
                onset = (i * beats_per_chord + t) * beat
                notes.append((onset, length * beat * 0.9, channel, scale[idx], int(rng.integers(85, 106))))
            t += length
    return notes


def _drum_part(
    rng: np.random.Generator, *, beat: float, beats_per_bar: int, n_bars: int,
) -> list[tuple[float, float, int, int, int]]:
    grooves = GROOVES_34 if beats_per_bar == 3 else GROOVES_44
    groove = grooves[str(rng.choice(list(grooves)))]
    step = beat / 4
    phrase = int(rng.choice([4, 8]))
    notes = []
    for bar in range(n_bars):
        t0 = bar * beats_per_bar * beat
        if bar % phrase == 0:
            notes.append((t0, 0.2, DRUM_CHANNEL, CRASH, 100))
        for key, steps in groove.items():
            for s in steps:
                accent = 20 if s % 4 == 0 else 0  # beats louder than off-beats
                vel = int(np.clip(80 + accent + rng.integers(-8, 9), 1, 127))
                notes.append((t0 + s * step, 0.1, DRUM_CHANNEL, key, vel))
    return notes


def _procedural(spec: ItemSpec) -> Arrangement:
    """Chords, bass, melody and drums in a random key and tempo, as ``spec.kind`` asks."""
    rng = np.random.default_rng([spec.seed, 1])
    tempo = _draw_tempo(rng)
    beat = 60.0 / tempo
    mode = str(rng.choice(["major", "minor"]))
    tonic = int(rng.integers(12))
    beats_per_bar = 3 if rng.random() < 0.2 else 4
    bars_per_chord = 1 if tempo < 110 else int(rng.choice([1, 2]))
    beats_per_chord = beats_per_bar * bars_per_chord
    n_chords = int(np.ceil(spec.duration / (beats_per_chord * beat))) + 1
    n_bars = n_chords * bars_per_chord
    progression = (MAJOR_PROGRESSIONS if mode == "major" else MINOR_PROGRESSIONS)
    degrees = progression[int(rng.integers(len(progression)))]
    sevenths = rng.random() < 0.3
    chords = [_triad(d, tonic, mode, seventh=sevenths) for d in degrees]
    scale_pcs = sorted({(tonic + s) % 12 for s in (MAJOR_SCALE if mode == "major" else MINOR_SCALE)})
    grid = dict(beat=beat, beats_per_chord=beats_per_chord, n_chords=n_chords)

    notes: list[tuple[float, float, int, int, int]] = []
    programs: dict[int, int] = {}
    with_drums = rng.random() < DRUM_PROBABILITY[spec.kind]
    if spec.kind == "drums":
        key = NO_KEY
        top = DRUM_CHANNEL
    else:
        key = key_name(make_key(tonic, mode))
        family = "bass" if spec.kind == "bassline" else str(rng.choice(PITCHED_FAMILIES))
        parts = {"band": ("melody", "chords", "bass"), "progression": ("chords", "bass"),
                 "bassline": ("bass",)}[spec.kind]
        if spec.kind == "progression" and rng.random() < 0.5:
            parts = ("chords",)
        progs = _draw_family_programs(rng, len(parts), family=family)
        shift = _octave_shift(family) if spec.kind != "bassline" else 0
        for ch, (part, prog) in enumerate(zip(parts, progs)):
            programs[ch] = prog
            if part == "chords":
                notes += _chord_part(rng, chords, channel=ch, center=60 + shift, **grid)
            elif part == "bass":
                # Bass lines stay in the bass register whatever the family.
                notes += _bass_part(rng, chords, scale_pcs=scale_pcs, channel=ch, center=40, **grid)
            else:
                notes += _melody_part(rng, chords, scale_pcs=scale_pcs, channel=ch, center=72 + shift, **grid)
        top = 0
    drum_kit = 0
    if with_drums:
        programs[DRUM_CHANNEL] = DRUM_PROGRAM
        drum_kit = int(rng.choice(DRUM_KITS))
        notes += _drum_part(rng, beat=beat, beats_per_bar=beats_per_bar, n_bars=n_bars)
    return Arrangement(notes, programs, key, tempo, f"procedural:{spec.kind}", top, drum_kit,
                       meta={"degrees": degrees, "tonic": tonic, "mode": mode})


# ---------------------------------------------------------------- music21 material


def music21_pieces(split: str = "train") -> list[str]:
    """Bach pieces of music21's bundled corpus in ``split``, as corpus names (``bach/bwv1.6``)."""
    _check_split(split)
    return [name for name in _all_bach_pieces() if split_of(piece_group(name)) == split]


def piece_group(name: str) -> str:
    """The work a corpus name belongs to: editions of one chorale (``bach/bwv248.9-1``,
    ``bach/bwv248.9-s``) share ``bach/bwv248.9`` and so always land in the same split."""
    return name.split("-", 1)[0]


@functools.lru_cache(maxsize=1)
def _all_bach_pieces() -> tuple[str, ...]:
    try:
        from music21 import corpus
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise CorpusError(f"music21 is not installed ({err}); pip install music21") from err
    names = set()
    for path in corpus.getComposer("bach"):
        rel = Path(path).as_posix().split("/corpus/", 1)[1]
        if "choraleAnalyses" in rel:  # roman-numeral analyses of the same chorales
            continue
        names.add(rel.rsplit(".", 1)[0] if rel.endswith((".mxl", ".xml", ".krn")) else rel)
    return tuple(sorted(names))


@dataclass(frozen=True)
class Piece:
    """A parsed piece: notes in quarter lengths, its key, its metre."""

    name: str
    notes: tuple[tuple[float, float, int, int], ...]  # (offset ql, duration ql, part, MIDI pitch)
    n_parts: int
    tonic: int
    mode: str
    length_ql: float


@functools.lru_cache(maxsize=None)
def load_piece(name: str) -> Piece | None:
    """Parse a corpus piece; None when its key or metre would make a label doubtful.

    Kept: at most nine parts, a x/4 metre (the tempo label counts quarter notes), a notated key signature
    whose major or relative minor is the Krumhansl-Schmuckler estimate of the whole piece
    with correlation at least 0.75.
    """
    from music21 import corpus

    try:
        score = corpus.parse(name)
    except Exception as err:  # music21 raises many kinds; a bad piece is skipped, never fatal
        log.warning("music21 piece %s skipped: %s", name, err)
        return None
    sigs = list(score.recurse().getElementsByClass("TimeSignature"))
    keysigs = list(score.recurse().getElementsByClass("KeySignature"))
    if not sigs or not keysigs or any(ts.denominator != 4 for ts in sigs):
        return None
    if len(score.parts) > DRUM_CHANNEL:  # part i plays on channel i; channel 10 is drums
        return None
    estimate = score.analyze("key")
    if estimate.sharps != keysigs[0].sharps or estimate.correlationCoefficient < 0.75:
        return None
    notes = [note for i, part in enumerate(score.parts) for note in _part_notes(part, i)]
    if not notes:
        return None
    mode = "minor" if estimate.mode == "minor" else "major"
    length = max(o + d for o, d, _, _ in notes)
    return Piece(name, tuple(sorted(notes)), len(score.parts), estimate.tonic.pitchClass, mode, length)


def _part_notes(part: Any, part_index: int) -> list[tuple[float, float, int, int]]:
    """(offset ql, duration ql, part, MIDI pitch) of a music21 part, tied notes merged.

    Does what ``Stream.stripTies`` does for this purpose at a fraction of its cost (it was
    half of the parse time).
    """
    notes: list[tuple[float, float, int, int]] = []
    open_ties: dict[int, int] = {}  # MIDI pitch -> index in notes of the note being tied
    for el in part.flatten().notes:
        if el.quarterLength <= 0:  # grace notes
            continue
        onset, end = float(el.offset), float(el.offset + el.quarterLength)
        for member in (el.notes if el.isChord else (el,)):
            pitch = int(member.pitch.midi)
            tie = member.tie if member.tie is not None else el.tie
            kind = tie.type if tie is not None else None
            if kind in ("continue", "stop") and pitch in open_ties:
                i = open_ties[pitch]
                notes[i] = (notes[i][0], end - notes[i][0], part_index, pitch)
            else:
                i = len(notes)
                notes.append((onset, end - onset, part_index, pitch))
            if kind in ("start", "continue"):
                open_ties[pitch] = i
            else:
                open_ties.pop(pitch, None)
    return notes


def _music21(spec: ItemSpec) -> Arrangement | None:
    """A piece transposed to a random tonic at a random tempo, repeated to fill the file."""
    rng = np.random.default_rng([spec.seed, 2])
    pieces = music21_pieces(spec.split)
    if not pieces:
        return None
    for name in rng.permutation(pieces)[:20]:  # the first that passes load_piece's checks
        piece = load_piece(str(name))
        if piece is not None:
            break
    else:
        return None
    tempo = _draw_tempo(rng)
    beat = 60.0 / tempo
    target = int(rng.integers(12))
    transpose = (target - piece.tonic + 6) % 12 - 6  # at most a tritone away
    progs = _draw_family_programs(rng, piece.n_parts)
    family = gm_family(progs[0])
    shift = _octave_shift(family)
    notes = []
    offset_ql = 0.0
    while offset_ql * beat < spec.duration:
        for o, d, part, pitch in piece.notes:
            p = int(np.clip(pitch + transpose + shift, 21, 108))
            notes.append(((offset_ql + o) * beat, d * beat * 0.95, part, p, int(rng.integers(70, 96))))
        offset_ql += np.ceil(piece.length_ql)
    programs = {part: progs[part] for part in range(piece.n_parts)}
    key = key_name(make_key(piece.tonic + transpose, piece.mode))
    return Arrangement(notes, programs, key, tempo, f"music21:{piece.name}", 0,
                       meta={"transpose": transpose})


def arrange(spec: ItemSpec) -> Arrangement:
    """The notes and labels of one item (music21 falls back to ``band`` if no piece fits)."""
    if spec.kind not in KIND_WEIGHTS:
        raise CorpusError(f"unknown corpus item kind {spec.kind!r}")
    if spec.kind == "music21":
        arrangement = _music21(spec)
        if arrangement is not None:
            return arrangement
        spec = ItemSpec(spec.index, "band", spec.seed, spec.duration, spec.split)
    return _procedural(spec)


# ------------------------------------------------------------------------ rendering


class Renderer:
    """A tinysoundfont synth with one soundfont loaded, reused across items.

    Silencing the synth (and rendering its quick release away) and fresh program
    selections between items make each render depend on its item alone, so that the
    number of workers and the order of items never change a file.
    """

    def __init__(self, soundfont: str | os.PathLike[str]) -> None:
        try:
            import tinysoundfont
        except ImportError as err:  # pragma: no cover - depends on the environment
            raise CorpusError(
                f"tinysoundfont is not installed ({err}); pip install --no-deps tinysoundfont"
            ) from err
        self.soundfont = Path(soundfont)
        self.synth = tinysoundfont.Synth(samplerate=RENDER_SR)
        try:
            self.sfid = self.synth.sfload(str(self.soundfont))
        except Exception as err:
            raise CorpusError(f"{self.soundfont}: cannot load soundfont: {err}") from err

    def _select(self, channel: int, program: int, kit: int) -> int:
        """Select a program (or drum kit) and return the one that was available."""
        if program == DRUM_PROGRAM:
            kit = kit if self.synth.sfpreset_name(self.sfid, 128, kit) else 0
            self.synth.program_select(channel, self.sfid, 128, kit, True)
            return program
        if not self.synth.sfpreset_name(self.sfid, 0, program):
            program = 8 * (program // 8)  # the family's first program
        self.synth.program_select(channel, self.sfid, 0, program)
        return program

    def _flush(self) -> None:
        # sounds_off only starts a quick release: render it away, or the previous item's
        # tails would leak into the next one and make a file depend on render order.
        self.synth.sounds_off()
        self.synth.generate_simple(RENDER_SR // 4)

    def render(self, arrangement: Arrangement, *, duration: float) -> np.ndarray:
        """Synthesise ``duration`` seconds: float32 mono at ``SAMPLE_RATE``, shape (n,)."""
        import soxr

        synth = self.synth
        self._flush()
        for channel, program in arrangement.programs.items():
            arrangement.programs[channel] = self._select(channel, program, arrangement.drum_kit)
        n_total = int(round(duration * RENDER_SR))
        events = []
        for onset, length, channel, pitch, velocity in arrangement.notes:
            start = int(round(onset * RENDER_SR))
            if start >= n_total:
                continue
            # Sort key: note-offs (0) before note-ons (1) at the same sample, so that a
            # repeated pitch is re-struck rather than cut.
            events.append((start, 1, channel, pitch, velocity))
            events.append((start + max(1, int(round(length * RENDER_SR))), 0, channel, pitch, 0))
        events.sort()
        chunks = []
        position = 0
        for when, is_on, channel, pitch, velocity in events:
            when = min(when, n_total)
            if when > position:
                chunks.append(np.frombuffer(synth.generate_simple(when - position), np.float32))
                position = when
            if position >= n_total:
                break
            if is_on:
                synth.noteon(channel, pitch, velocity)
            else:
                synth.noteoff(channel, pitch)
        if position < n_total:
            chunks.append(np.frombuffer(synth.generate_simple(n_total - position), np.float32))
        self._flush()
        stereo = np.concatenate(chunks).reshape(-1, 2)
        y = soxr.resample(stereo.mean(axis=1), RENDER_SR, SAMPLE_RATE)
        if float(np.sqrt(np.mean(y**2))) < 1e-4:
            # Normalising would hide it: a preset with no samples in the played range.
            log.warning("%s: %s rendered (nearly) silent with programs %s", self.soundfont.name,
                        arrangement.source, arrangement.programs)
        return _normalise(y.astype(np.float32))


def _normalise(y: np.ndarray, *, rms_db: float = -20.0, fade: float = 0.05) -> np.ndarray:
    """Fade the cut end, bring the RMS to ``rms_db`` dBFS, keep peaks below full scale."""
    n_fade = min(len(y), int(fade * SAMPLE_RATE))
    if n_fade:
        y[-n_fade:] *= np.linspace(1.0, 0.0, n_fade, dtype=np.float32)
    rms = float(np.sqrt(np.mean(y.astype(np.float64) ** 2)))
    if rms > 0:
        y *= 10 ** (rms_db / 20) / rms
    peak = float(np.abs(y).max(initial=0.0))
    if peak > 0.99:
        y *= 0.99 / peak
    return y


def render_item(spec: ItemSpec, renderer: Renderer) -> tuple[np.ndarray, dict[str, Any]]:
    """Render one item: its audio (float32, shape (n,), 16 kHz) and its label row (no ``file``)."""
    arrangement = arrange(spec)
    y = renderer.render(arrangement, duration=spec.duration)
    programs = sorted(set(arrangement.programs.values()))
    row = {
        "key": arrangement.key,
        "tempo": arrangement.tempo,
        "program": arrangement.program,
        "family": gm_family(arrangement.program),
        "source": arrangement.source,
        "seed": spec.seed,
        "soundfont": renderer.soundfont.name,
        "programs": ";".join(str(p) for p in programs),
        "duration": round(len(y) / SAMPLE_RATE, 3),
        "split": spec.split,
    }
    return y, row


# Per-process renderer for the worker pool: loading FluidR3 (148 MB) takes ~0.5 s.
_WORKER_RENDERER: Renderer | None = None


def _init_worker(soundfont: str) -> None:
    global _WORKER_RENDERER
    _WORKER_RENDERER = Renderer(soundfont)


def _render_to_file(spec: ItemSpec, out_dir: str) -> dict[str, Any]:
    import soundfile as sf

    assert _WORKER_RENDERER is not None, "worker not initialised"
    y, row = render_item(spec, _WORKER_RENDERER)
    name = f"{spec.split}_{spec.index:05d}_{spec.kind}.flac"
    sf.write(Path(out_dir) / name, y, SAMPLE_RATE, format="FLAC", subtype="PCM_16")
    return {"file": name, **row}


def _map_items(
    items: Sequence[ItemSpec], out_dir: Path, soundfont: Path, workers: int
) -> Iterator[dict[str, Any]]:
    if workers <= 1:
        _init_worker(str(soundfont))
        for spec in items:
            yield _render_to_file(spec, str(out_dir))
        return
    # spawn: the caller may already hold torch's threads, which fork would copy badly.
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn"), initializer=_init_worker,
                             initargs=(str(soundfont),)) as pool:
        yield from pool.map(_render_to_file, items, [str(out_dir)] * len(items), chunksize=1)


def render_corpus(
    out_dir: str | os.PathLike[str],
    *,
    minutes: float,
    soundfont: str | os.PathLike[str] | None = None,
    seed: int = 0,
    split: str = "train",
    workers: int = 1,
    progress: Callable[[int, int], None] | None = None,
    allow_heldout_soundfont: bool = False,
) -> Path:
    """Render a labelled corpus of at least ``minutes`` of audio into ``out_dir``.

    Parameters
    ----------
    out_dir : folder to write ``<split>_<index>_<kind>.flac`` files and ``labels.csv`` into
    minutes : total length of audio to render
    soundfont : a GM soundfont (.sf2/.sf3); ``None`` picks ``default_soundfont()``
    seed : corpus seed; the same (seed, split, minutes, soundfont) gives the same files
    split : ``"train"`` or ``"bench"``: disjoint music21 pieces and procedural seeds
    workers : render processes (results do not depend on it)
    progress : called as ``progress(done, total)`` after each file
    allow_heldout_soundfont : permit MuseScore_General (held-out benchmarks only)

    Returns
    -------
    Path of ``labels.csv``
    """
    sf_path = check_soundfont(soundfont, allow_heldout_soundfont=allow_heldout_soundfont)
    items = plan_corpus(minutes, seed=seed, split=split)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for done, row in enumerate(_map_items(items, out, sf_path, max(1, int(workers))), 1):
        rows.append(row)
        if progress is not None:
            progress(done, len(items))
    stale = sorted(set(p.name for p in out.glob("*.flac")) - {row["file"] for row in rows})
    if stale:
        # Left alone (they may be the user's), but a trainer reading the folder would see them.
        log.warning("%s: %d audio files not in this corpus's labels.csv, e.g. %s", out, len(stale), stale[0])
    labels = out / "labels.csv"
    tmp = labels.with_suffix(".csv.tmp")
    with tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=LABEL_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    tmp.replace(labels)  # a half-written labels.csv never looks finished
    return labels


# ---------------------------------------------------------------------- the command


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``loev-train corpus``."""
    parser.add_argument("out", type=Path, help="folder for the audio files and labels.csv")
    parser.add_argument("--minutes", type=float, required=True, help="minutes of audio to render")
    parser.add_argument("--soundfont", type=Path, default=None,
                        help="GM soundfont (default: FluidR3_GM, else TimGM6mb, from /usr/share/sounds/sf2)")
    parser.add_argument("--seed", type=int, default=0, help="corpus seed (default 0)")
    parser.add_argument("--split", choices=SPLITS, default="train",
                        help="train, or bench: pieces and seeds disjoint from every training corpus")
    parser.add_argument("--workers", type=int, default=1, help="render processes (default 1)")
    parser.add_argument("--allow-heldout-soundfont", action="store_true",
                        help="permit MuseScore_General, for a held-out benchmark only")


def run(args: argparse.Namespace) -> int:
    """Run ``loev-train corpus``: render, print where the labels went and the render rate."""
    import time

    from tqdm import tqdm

    # Refuse a missing or reserved soundfont before drawing a progress bar.
    check_soundfont(args.soundfont, allow_heldout_soundfont=args.allow_heldout_soundfont)
    start = time.perf_counter()
    bar = tqdm(unit="file", desc="corpus")

    def progress(done: int, total: int) -> None:
        bar.total = total
        bar.update(done - bar.n)

    try:
        labels = render_corpus(
            args.out, minutes=args.minutes, soundfont=args.soundfont, seed=args.seed,
            split=args.split, workers=args.workers, progress=progress,
            allow_heldout_soundfont=args.allow_heldout_soundfont,
        )
    finally:
        bar.close()
    rows = read_labels(labels)
    audio_min = sum(r["duration"] for r in rows) / 60
    elapsed = time.perf_counter() - start
    print(f"{labels}: {len(rows)} files, {audio_min:.1f} min of audio in {elapsed:.1f} s "
          f"({elapsed / max(audio_min, 1e-9):.2f} s per minute of audio)")
    return 0
