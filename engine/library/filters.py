"""The library's filter box: free text plus ``key:``, ``bpm:`` and ``type:`` constraints.

What a producer types in Mixxx's or Loopcloud's search box::

    kit key:8A bpm:120-128 type:kick

* Free words (quoted for a phrase: ``"kit a"``) must all appear, case-insensitively, in the
  file's path or the other text the caller passes (its status).
* ``key:`` takes a key as :func:`engine.keys.parse_key` reads it (``key:Am``, ``key:F#m``,
  ``key:"A minor"``, ``key:A minor``), a Camelot code (``key:8A``), an Open Key code
  (``key:1m``) or ``none`` (tracks without a key). A lone tonic is the major key whatever
  its case (``key:c`` is C major, as DJ software writes it; ``key:cm`` C minor).
* ``bpm:`` takes a number or a range, inclusive at the precision typed: ``bpm:128`` is
  127.5 <= BPM < 128.5 (what the BPM column shows as 128, to half a unit of the last digit
  typed: ``bpm:127.5`` is 127.45..127.55), ``bpm:120-128`` is 119.5 <= BPM < 128.5;
  ``none`` matches tracks without a tempo. The estimate is matched as it is: a 64 BPM loop
  does not pass ``bpm:120-130`` even though it plays in half time there, because the filter
  keeps what the column shows (:mod:`engine.sync` reads half and double time when a
  project BPM is set).
* ``type:`` takes a sound type of docs/DESIGN.md section 8, a unique prefix of one
  (``type:perc``), or a common short name (``hat``, ``vox``, ``sfx``; ``loop`` is both
  loop types).
* Commas give alternatives (``key:8A,9A``), as does the same field twice; different
  fields must all hold. Low-confidence estimates are matched like any other (the table
  greys them, never hides them); a file without an estimate passes no constraint.
* A word of the form ``field:value`` with an unknown field or an unreadable value is left
  out and reported in :attr:`LibraryFilter.errors`, one line each, while the rest filters.

Pure Python (no Qt): the app's table proxy calls :meth:`LibraryFilter.matches` per row.

Examples
--------
>>> f = parse_filter("kick key:am bpm:120-128")
>>> f.terms, sorted(f.keys), f.bpm
(('kick',), [21], ((119.5, 128.5),))
>>> parse_filter("key:H bpm:fast").errors
('key:H: not a key (e.g. key:Am, key:8A, key:1m)', 'bpm:fast: not a BPM or range (e.g. bpm:128, bpm:120-128)')
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from engine import keys
from engine.model.heads import SOUND_TYPES, Estimate

FIELDS = ("key", "bpm", "type")
TYPE_ALIASES: dict[str, tuple[str, ...]] = {
    "hat": ("hihat",), "hh": ("hihat",), "hats": ("hihat",), "vox": ("vocal",),
    "sfx": ("fx",), "loop": ("drum_loop", "music_loop"),
}

# field:"quoted value", field:value, "a phrase", or a word. A field is two or more letters,
# so that a drive letter ("C:\Samples") stays text.
_TOKEN_RE = re.compile(r'(?P<field>[A-Za-z]{2,}):(?:"(?P<qvalue>[^"]*)"?|(?P<value>\S*))'
                       r'|"(?P<phrase>[^"]*)"?|(?P<word>\S+)')
_TONIC_RE = re.compile(r"^[A-Ga-g][#b\u266f\u266d]?$")
_MODE_WORDS = ("major", "minor", "maj", "min")
_NUMBER = r"(\d+(?:\.\d*)?|\.\d+)"
_BPM_RE = re.compile(rf"^{_NUMBER}(?:\s*-\s*{_NUMBER})?$")

BpmRange = tuple[float, float]


@dataclass(frozen=True)
class LibraryFilter:
    """A parsed filter: ``terms`` (lower-case words and phrases), the allowed ``keys``
    (key indices, None for "no key"), ``bpm`` ranges (``(lo, hi)``, lo <= BPM < hi; None
    for "no tempo") and ``types``; None where the field was not given. ``errors``: one
    line per word left out."""

    terms: tuple[str, ...] = ()
    keys: frozenset[int | None] | None = None
    bpm: tuple[BpmRange | None, ...] | None = None
    types: frozenset[str] | None = None
    errors: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        """True when the filter lets every row through."""
        return not self.terms and self.keys is None and self.bpm is None and self.types is None

    @property
    def constrains_estimates(self) -> bool:
        return self.keys is not None or self.bpm is not None or self.types is not None

    def matches(self, path: str, estimate: Estimate | None, text: str = "") -> bool:
        """True when ``path`` (with ``text``, e.g. its status) and its ``estimate`` pass."""
        if self.terms:
            haystack = f"{path}\n{text}".lower()
            if not all(term in haystack for term in self.terms):
                return False
        if not self.constrains_estimates:
            return True
        if estimate is None:
            return False
        if self.keys is not None and estimate.key not in self.keys:
            return False
        if self.bpm is not None and not any(_in_range(estimate.bpm, r) for r in self.bpm):
            return False
        return self.types is None or estimate.type in self.types


def parse_filter(text: str) -> LibraryFilter:
    """Read the filter box's text (module docstring); never raises."""
    terms: list[str] = []
    found: dict[str, list] = {}
    errors: list[str] = []
    tokens = list(_TOKEN_RE.finditer(text or ""))
    i = 0
    while i < len(tokens):
        m = tokens[i]
        i += 1
        if m["field"] is None:
            term = (m["phrase"] if m["phrase"] is not None else m["word"]).strip().lower()
            if term:
                terms.append(term)
            continue
        field = m["field"].lower()
        value = m["qvalue"] if m["qvalue"] is not None else m["value"]
        word = m.group(0)
        # key:A minor: the mode word after a bare tonic belongs to the key
        if (field == "key" and m["qvalue"] is None and _TONIC_RE.match(value or "") and i < len(tokens)
                and (tokens[i]["word"] or "").lower() in _MODE_WORDS):
            value = f"{value} {tokens[i]['word']}"
            word = f"{word} {tokens[i]['word']}"
            i += 1
        if field not in FIELDS:
            errors.append(f"{word}: unknown filter {field}: (use key:, bpm: or type:)")
            continue
        if not value.strip():
            errors.append(f"{word} needs a value (e.g. {_EXAMPLES[field]})")
            continue
        try:
            values = [_READERS[field](v.strip()) for v in value.split(",") if v.strip()]
        except ValueError as e:
            errors.append(f"{word}: {e}")
            continue
        found.setdefault(field, []).extend(values)
    types = found.get("type")
    return LibraryFilter(
        terms=tuple(terms),
        keys=frozenset(found["key"]) if "key" in found else None,
        bpm=tuple(found["bpm"]) if "bpm" in found else None,
        types=frozenset(t for group in types for t in group) if types is not None else None,
        errors=tuple(errors))


def _read_key(value: str) -> int | None:
    if value.lower() == "none":
        return None
    if _TONIC_RE.match(value):
        value = value[0].upper() + value[1:] + " major"  # a lone tonic is major, any case
    index = keys.parse_key(value)
    if index is None:
        raise ValueError(f"not a key (e.g. {_EXAMPLES['key']})")
    return index


def _read_bpm(value: str) -> BpmRange | None:
    if value.lower() == "none":
        return None
    m = _BPM_RE.match(value)
    if not m:
        raise ValueError(f"not a BPM or range (e.g. {_EXAMPLES['bpm']})")
    lo_text, hi_text = m.group(1), m.group(2) or m.group(1)
    (lo, lo_tol), (hi, hi_tol) = _number(lo_text), _number(hi_text)
    if lo <= 0 or hi <= 0:
        raise ValueError("a BPM is above 0")
    if lo > hi:  # bpm:128-120 means the same range
        (lo, lo_tol), (hi, hi_tol) = (hi, hi_tol), (lo, lo_tol)
    return lo - lo_tol, hi + hi_tol


def _number(text: str) -> tuple[float, float]:
    """The number and half a unit of its last digit: "128" -> (128, 0.5), "127.5" -> (127.5, 0.05)."""
    decimals = len(text.split(".")[1]) if "." in text else 0
    return float(text), 0.5 * 10.0 ** -decimals


def _read_type(value: str) -> tuple[str, ...]:
    word = value.lower().replace("-", "").replace(" ", "")
    if word in SOUND_TYPES:
        return (word,)
    if word in TYPE_ALIASES:
        return TYPE_ALIASES[word]
    matches = [t for t in SOUND_TYPES if t.startswith(word) or t.replace("_", "").startswith(word)]
    if len(matches) == 1:
        return (matches[0],)
    if matches:
        raise ValueError(f"could be {', '.join(matches)}")
    raise ValueError(f"not a sound type ({', '.join(SOUND_TYPES)})")


def _in_range(bpm: float | None, r: BpmRange | None) -> bool:
    if r is None or bpm is None:
        return r is None and bpm is None
    return r[0] <= bpm < r[1]


_READERS = {"key": _read_key, "bpm": _read_bpm, "type": _read_type}
_EXAMPLES = {"key": "key:Am, key:8A, key:1m", "bpm": "bpm:128, bpm:120-128", "type": "type:kick"}

__all__ = ["FIELDS", "LibraryFilter", "TYPE_ALIASES", "parse_filter"]
