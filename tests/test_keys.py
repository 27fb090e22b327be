"""engine.keys: one key vocabulary for the engine, the app and the trainer, checked on all 24 keys."""
from __future__ import annotations

import numpy as np
import pytest

from engine import keys

# Camelot and Open Key codes of the 24 keys, from the published wheels (not from the formula)
CAMELOT = {"C major": "8B", "G major": "9B", "D major": "10B", "A major": "11B", "E major": "12B",
           "B major": "1B", "F# major": "2B", "C# major": "3B", "Ab major": "4B", "Eb major": "5B",
           "Bb major": "6B", "F major": "7B", "A minor": "8A", "E minor": "9A", "B minor": "10A",
           "F# minor": "11A", "C# minor": "12A", "Ab minor": "1A", "Eb minor": "2A", "Bb minor": "3A",
           "F minor": "4A", "C minor": "5A", "G minor": "6A", "D minor": "7A"}
OPEN_KEY = {"C major": "1d", "G major": "2d", "D major": "3d", "A major": "4d", "E major": "5d",
            "B major": "6d", "F# major": "7d", "C# major": "8d", "Ab major": "9d", "Eb major": "10d",
            "Bb major": "11d", "F major": "12d", "A minor": "1m", "E minor": "2m", "B minor": "3m",
            "F# minor": "4m", "C# minor": "5m", "Ab minor": "6m", "Eb minor": "7m", "Bb minor": "8m",
            "F minor": "9m", "C minor": "10m", "G minor": "11m", "D minor": "12m"}
RELATIVE = {"C": "A", "C#": "Bb", "D": "B", "Eb": "C", "E": "C#", "F": "D", "F#": "Eb", "G": "E",
            "Ab": "F", "A": "F#", "Bb": "G", "B": "Ab"}  # major tonic -> its relative minor's tonic


def test_names_are_mir_eval_spellings_and_round_trip():
    mir_key = pytest.importorskip("mir_eval.key")
    assert keys.key_name(0) == "C major" and keys.key_name(13) == "C# minor" and keys.key_name(22) == "Bb minor"
    for i in range(keys.N_KEYS):
        mir_key.validate_key(keys.key_name(i))
        assert keys.parse_key(keys.key_name(i)) == i
        assert keys.make_key(keys.tonic(i), keys.mode(i)) == i
    assert len(set(keys.KEY_NAMES)) == 24


@pytest.mark.parametrize(("text", "index"), [
    ("C major", 0), ("a minor", 21), ("F#:min", 18), ("B- minor", 22), ("Bb major", 10), ("bb minor", 22),
    ("Eb minor", 15), ("D# minor", 15), ("eb min", 15), ("D#:minor", 15), ("Bb maj", 10), ("E", 4), ("e", 16),
    ("c#m", 13), ("Am", 21), ("AM", 9), ("C MAJOR", 0), ("a Minor", 21), ("B# major", 0), ("Cb major", 11),
    ("F\u266f minor", 18), ("B\u266d major", 10), ("G_minor", 19), ("  Ab  major ", 8), ("Eb minor (?)", 15),
    ("8A", 21), ("8B", 0), ("1m", 21), ("12d", 5),
])
def test_spellings_parse_to_one_index(text, index):
    assert keys.parse_key(text) == index


@pytest.mark.parametrize("text", ["", None, "-", "nonsense", "H major", "C dorian", "Ebmaj7", "C minority",
                                  "13A", "0d", "8C"])
def test_non_keys_parse_to_none(text):
    assert keys.parse_key(text) is None and keys.canonical_key(text) is None


def test_canonical_key_spells_like_mir_eval():
    assert keys.canonical_key("D#:minor") == "Eb minor"
    assert keys.canonical_key("Bb maj") == "Bb major"
    assert keys.canonical_key("a minor") == "A minor"
    assert keys.canonical_key("db") == "C# minor"


def test_transpose_moves_the_tonic_and_keeps_the_mode():
    assert keys.key_name(keys.transpose(keys.parse_key("A minor"), 3)) == "C minor"
    assert keys.key_name(keys.transpose(keys.parse_key("C major"), -1)) == "B major"
    for i in range(24):
        assert keys.transpose(i, 12) == keys.transpose(i, -12) == keys.transpose(i, 0) == i
        assert keys.transpose(keys.transpose(i, 5), -5) == i
        assert keys.mode(keys.transpose(i, 7)) == keys.mode(i)
    with pytest.raises(ValueError, match="0.5"):
        keys.transpose(0, 0.5)
    with pytest.raises(ValueError, match="24"):
        keys.key_name(24)


def test_relative_and_parallel_for_all_24_keys():
    for major, minor in RELATIVE.items():
        i, j = keys.parse_key(f"{major} major"), keys.parse_key(f"{minor} minor")
        assert keys.relative(i) == j and keys.relative(j) == i
    for i in range(24):
        assert keys.relative(keys.relative(i)) == i
        assert keys.parallel(i) != i and keys.tonic(keys.parallel(i)) == keys.tonic(i)


def test_camelot_and_open_key_for_all_24_keys():
    for name in keys.KEY_NAMES:
        i = keys.parse_key(name)
        assert keys.camelot(i) == CAMELOT[name], name
        assert keys.open_key(i) == OPEN_KEY[name], name
        assert keys.parse_key(CAMELOT[name]) == i and keys.parse_key(OPEN_KEY[name]) == i
        # a relative pair shares its wheel number
        assert keys.camelot(keys.relative(i))[:-1] == keys.camelot(i)[:-1]


def test_the_trainers_batched_key_shift_agrees_with_transpose():
    torch = pytest.importorskip("torch")
    from trainer.objective import shifted_keys

    idx = torch.arange(24).repeat_interleave(25)
    shift = torch.arange(-12, 13).repeat(24).float()
    moved = shifted_keys(idx, shift).tolist()
    assert moved == [keys.transpose(int(i), int(s)) for i, s in zip(idx, shift)]


def test_compatible_keys_are_the_camelot_neighbours_and_the_relative_key():
    for i in range(24):
        codes = [keys.camelot(k) for k in keys.compatible_keys(i)]
        number, letter = int(keys.camelot(i)[:-1]), keys.camelot(i)[-1]
        up, down = number % 12 + 1, (number - 2) % 12 + 1
        other = "B" if letter == "A" else "A"
        assert codes == [f"{number}{letter}", f"{up}{letter}", f"{down}{letter}", f"{number}{other}"]


def test_key_closeness_is_mir_evals_weighted_score_both_ways_and_positive_definite():
    mir_eval = pytest.importorskip("mir_eval")
    table = np.array(keys.closeness_table())
    for a in range(24):
        for b in range(24):
            ab = mir_eval.key.weighted_score(keys.key_name(a), keys.key_name(b))
            ba = mir_eval.key.weighted_score(keys.key_name(b), keys.key_name(a))
            assert table[a, b] == pytest.approx((ab + ba) / 2)
    assert np.allclose(table, table.T) and np.linalg.eigvalsh(table).min() > 0.2
    c, g, am, cm = (keys.parse_key(k) for k in ("C major", "G major", "A minor", "C minor"))
    assert (keys.closeness(c, c), keys.closeness(c, g), keys.closeness(c, am), keys.closeness(c, cm)) == (1.0, 0.25, 0.3, 0.2)
