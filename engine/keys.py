"""Musical keys: the 24 major and minor keys, their names, and the ways to spell them.

A key is an integer index in 0..23: the tonic's pitch class (C = 0 ... B = 11) for the
major keys, plus 12 for the minor keys. Names are mir_eval's spellings (``"C# major"``,
``"Eb minor"``: the pitch classes of :data:`PITCH_CLASSES`), so that a name can go
straight into ``mir_eval.key`` and a labels file. :func:`parse_key` reads the spellings
found in datasets and label files (``"eb min"``, ``"D#:minor"``, music21's ``"B- minor"``,
a lone tonic, Camelot ``"8A"`` and Open Key ``"1m"`` codes) and :func:`key_name` writes
the canonical one.

Pure Python: the app, the engine and the trainer all read keys through this module.

Examples
--------
>>> key_name(parse_key("D#:min"))
'Eb minor'
>>> key_name(transpose(parse_key("A minor"), 3))
'C minor'
>>> camelot(parse_key("A minor")), open_key(parse_key("C major"))
('8A', '1d')
"""
from __future__ import annotations

import re

PITCH_CLASSES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")
MODES = ("major", "minor")
N_KEYS = 24
KEY_NAMES = tuple(f"{pc} {mode}" for mode in MODES for pc in PITCH_CLASSES)

_NATURALS = {"c": 0, "d": 2, "e": 4, "f": 5, "g": 7, "a": 9, "b": 11}
_ACCIDENTALS = {"#": 1, "\u266f": 1, "b": -1, "\u266d": -1, "-": -1}  # "-": music21's flat
_MODE_WORDS = {"major": False, "maj": False, "M": False, "minor": True, "min": True, "m": True}
# Tonic, accidentals, an optional separator, an optional mode word, then anything after a
# word boundary (annotation files add comments); without a mode word nothing may follow.
_KEY_RE = re.compile(r"""^\s*(?P<tonic>[A-Ga-g])(?P<acc>[#b\u266f\u266d-]*)\s*[:_\s]?\s*
                         (?:(?P<mode>major|minor|maj|min|m|M)\b(?P<rest>.*)|(?P<bare>.*))$""",
                     re.VERBOSE | re.DOTALL)
_MODE_RE = re.compile(r"major|minor|maj|min", re.IGNORECASE)
_CODE_RE = re.compile(r"^\s*(?P<number>\d{1,2})\s*(?P<letter>[ABdm])\s*$", re.IGNORECASE)


def make_key(tonic: int, mode: str) -> int:
    """The index of the key on pitch class ``tonic`` (any integer, taken mod 12) in ``mode``.

    Raises
    ------
    ValueError
        ``mode`` is neither ``"major"`` nor ``"minor"``.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be 'major' or 'minor', got {mode!r}")
    return int(tonic) % 12 + (12 if mode == "minor" else 0)


def _check(index: int) -> int:
    if not 0 <= int(index) < N_KEYS or int(index) != index:
        raise ValueError(f"a key index lies in 0..23, got {index!r}")
    return int(index)


def key_name(index: int) -> str:
    """mir_eval's name of a key index: ``15`` -> ``"Eb minor"``."""
    return KEY_NAMES[_check(index)]


def tonic(index: int) -> int:
    """The tonic's pitch class (0..11) of a key index."""
    return _check(index) % 12


def mode(index: int) -> str:
    """``"major"`` or ``"minor"``."""
    return MODES[_check(index) // 12]


def parse_key(text: str | None) -> int | None:
    """A key's index from one of its spellings; None when ``text`` names no key.

    Reads a tonic letter (either case), any accidentals (``#``, ``b``, ``-``, ``♯``, ``♭``),
    an optional ``:``/``_``/space and a mode word (``major``, ``maj``, ``M``, ``minor``,
    ``min``, ``m``; case-insensitive except ``M``/``m``). With the mode word left out the
    case of the tonic decides, as in music21 (``"E"`` major, ``"e"`` minor). Camelot
    (``"8A"``) and Open Key (``"1m"``) codes are read too.

    Examples
    --------
    >>> [parse_key(s) for s in ("C major", "a minor", "F#:min", "B- minor", "ebm", "8B")]
    [0, 21, 18, 22, 15, 0]
    >>> parse_key("C dorian") is None and parse_key("H major") is None
    True
    """
    if not text:
        return None
    code = _CODE_RE.match(text)
    if code:
        return _from_code(int(code["number"]), code["letter"])
    m = _KEY_RE.match(text)
    if not m:
        return None
    pc = _NATURALS[m["tonic"].lower()] + sum(_ACCIDENTALS[a] for a in m["acc"])
    if m["mode"] is not None:
        word = m["mode"] if m["mode"] in ("m", "M") else m["mode"].lower()
        minor = _MODE_WORDS[word]
    elif m["bare"].strip():
        # a mode word in another case ("C MAJOR", "a Minor") is still a mode word
        word = _MODE_RE.fullmatch(m["bare"].split()[0])
        if word is None:
            return None
        minor = word[0].lower().startswith("min")
    else:
        minor = m["tonic"].islower()
    return pc % 12 + (12 if minor else 0)


def canonical_key(text: str | None) -> str | None:
    """mir_eval's spelling of any spelling :func:`parse_key` reads: ``"D#:min"`` -> ``"Eb minor"``."""
    index = parse_key(text)
    return None if index is None else KEY_NAMES[index]


def transpose(index: int, semitones: int) -> int:
    """The key ``semitones`` (any integer, either sign) above ``index``; the mode is kept."""
    if int(semitones) != semitones:
        raise ValueError(f"keys transpose by whole semitones, got {semitones!r}")
    i = _check(index)
    return (i % 12 + int(semitones)) % 12 + (i // 12) * 12


def relative(index: int) -> int:
    """The relative minor of a major key, the relative major of a minor one (same key signature)."""
    i = _check(index)
    return (i + 9) % 12 + 12 if i < 12 else (i + 3) % 12


def parallel(index: int) -> int:
    """The same tonic in the other mode: C major <-> C minor."""
    return (_check(index) + 12) % 24


def _wheel_number(index: int) -> int:
    """1..12: the key's place on the circle of fifths, counted as Open Key does (C major = 1)."""
    major = index if index < 12 else relative(index)
    return (7 * major) % 12 + 1


def camelot(index: int) -> str:
    """Camelot wheel code: ``"8B"`` for C major, ``"8A"`` for A minor; neighbours differ by a fifth."""
    i = _check(index)
    return f"{(_wheel_number(i) + 6) % 12 + 1}{'A' if i >= 12 else 'B'}"


def open_key(index: int) -> str:
    """Open Key code: ``"1d"`` for C major, ``"1m"`` for A minor."""
    i = _check(index)
    return f"{_wheel_number(i)}{'m' if i >= 12 else 'd'}"


def compatible_keys(index: int) -> list[int]:
    """The keys a DJ mixes ``index`` with: itself, its Camelot neighbours (a fifth up and
    down, same mode) and its relative major or minor, in that order.

    >>> [camelot(k) for k in compatible_keys(parse_key("A minor"))]
    ['8A', '9A', '7A', '8B']
    """
    i = _check(index)
    return [i, transpose(i, 7), transpose(i, -7), relative(i)]


def closeness(a: int, b: int) -> float:
    """How close two keys are, symmetric: 1 for the same key, 0.25 a fifth apart either way,
    0.3 relative, 0.2 parallel, 0 otherwise. mir_eval's weighted key score (0.5 for an
    estimate a fifth *above* the reference) averaged over both directions, so that
    :func:`closeness_table` is a positive definite kernel (its smallest eigenvalue is 0.21)
    and its square root embeds keys for a cosine search (the key projector).

    >>> closeness(parse_key("C major"), parse_key("G major")), closeness(parse_key("C major"), parse_key("A minor"))
    (0.25, 0.3)
    """
    i, j = _check(a), _check(b)
    if i == j:
        return 1.0
    if (i < 12) == (j < 12):
        return 0.25 if (j - i) % 12 in (5, 7) else 0.0
    if relative(i) == j:
        return 0.3
    return 0.2 if parallel(i) == j else 0.0


def closeness_table() -> list[list[float]]:
    """``[24][24]`` :func:`closeness` of every pair of key indices."""
    return [[closeness(a, b) for b in range(N_KEYS)] for a in range(N_KEYS)]


def _from_code(number: int, letter: str) -> int | None:
    if not 1 <= number <= 12:
        return None
    if letter in ("A", "B", "a", "b"):  # Camelot: 8B = C major = Open Key 1d
        number = (number + 4) % 12 + 1
        minor = letter in ("A", "a")
    else:
        minor = letter.lower() == "m"
    major = (7 * (number - 1)) % 12  # 7 is its own inverse mod 12
    return relative(major) if minor else major


__all__ = ["KEY_NAMES", "MODES", "N_KEYS", "PITCH_CLASSES", "camelot", "canonical_key", "compatible_keys", "key_name", "make_key",
           "mode", "open_key", "parallel", "parse_key", "relative", "tonic", "transpose"]
