"""Project sync: the shift to the project key, the half/double-time stretch to the project
BPM, the neighbour offsets and their labels (engine/sync.py)."""
from __future__ import annotations

import doctest
import math

import pytest

from engine import keys, sync
from engine.config import TEMPO_RANGE
from engine.sync import (Offset, Sync, format_offset, format_sync, key_shift, offset,
                         project_sync, tempo_ratio)

K = keys.parse_key


def test_doctests():
    assert doctest.testmod(sync).failed == 0


@pytest.mark.parametrize("track, project, shift", [
    ("C major", "C major", 0),
    ("D major", "C major", -2),
    ("Bb major", "C major", 2),
    ("G major", "C major", 5),      # up a fourth, not down a fifth
    ("F major", "C major", -5),     # down a fourth, not up a fifth
    ("F# major", "C major", -6),    # the tritone: always down
    ("C major", "F# major", -6),
    ("A minor", "A minor", 0),
    ("B minor", "A minor", -2),
])
def test_shift_is_the_smallest_in_minus_six_to_five(track, project, shift):
    assert key_shift(K(track), K(project)) == shift


def test_every_pair_lands_on_the_project_key_or_its_relative_within_range():
    for track in range(24):
        for project in range(24):
            s = key_shift(track, project)
            assert -6 <= s <= 5
            landed = keys.transpose(track, s)
            assert landed in (project, keys.relative(project))
            # a same-mode pair lands on the project key itself
            assert (landed == project) == (keys.mode(track) == keys.mode(project))


@pytest.mark.parametrize("track, project, shift", [
    ("A minor", "C major", 0),      # relative: same notes, nothing to do
    ("E minor", "C major", 5),      # to A minor, C major's relative
    ("C major", "A minor", 0),
    ("D major", "A minor", -2),     # to C major, A minor's relative
    ("C minor", "C major", -3),     # to A minor, not 0 (the parallel key)
])
def test_minor_against_major_goes_to_the_relative(track, project, shift):
    assert key_shift(K(track), K(project)) == shift


def test_unknown_keys_shift_nothing():
    assert key_shift(None, K("C major")) == 0
    assert key_shift(K("D major"), None) == 0


@pytest.mark.parametrize("track_bpm, project_bpm, ratio", [
    (128.0, 128.0, 1.0),
    (120.0, 126.0, 1.05),
    (64.0, 128.0, 1.0),             # half time: heard at 128, not stretched x2
    (256.0, 128.0, 1.0),            # double time
    (70.0, 128.0, 128.0 / 140.0),   # 70 counted as 140: x0.914, not x1.83
    (90.0, 174.0, 174.0 / 180.0),   # drum & bass over a 90 BPM loop: half time
    (100.0, 100.0 * math.sqrt(2), math.sqrt(2)),  # exact tie: the detected tempo wins
])
def test_stretch_reads_half_or_double_time_for_the_ratio_nearest_one(track_bpm, project_bpm, ratio):
    assert tempo_ratio(track_bpm, project_bpm) == pytest.approx(ratio)


def test_stretch_stays_within_the_auditions_range():
    assert tempo_ratio(30.0, 300.0) == TEMPO_RANGE[1]
    assert tempo_ratio(300.0, 30.0) == TEMPO_RANGE[0]
    for bpm in range(40, 241, 7):
        for project in range(60, 181, 11):
            r = tempo_ratio(float(bpm), float(project))
            assert TEMPO_RANGE[0] <= r <= TEMPO_RANGE[1]
            if 1 / (2 * math.sqrt(2)) <= project / bpm <= 2 * math.sqrt(2):
                # half or double time always brings the ratio within a half octave
                assert 1 / math.sqrt(2) - 1e-9 <= r <= math.sqrt(2) + 1e-9


@pytest.mark.parametrize("track_bpm, project_bpm", [(None, 128.0), (120.0, None), (0.0, 128.0),
                                                    (float("nan"), 128.0), (None, None)])
def test_no_tempo_means_no_stretch(track_bpm, project_bpm):
    assert tempo_ratio(track_bpm, project_bpm) == 1.0


def test_project_sync_combines_both():
    s = project_sync(K("Bb major"), 123.0, K("C major"), 128.0)
    assert s.semitones == 2 and s.tempo == pytest.approx(128 / 123)
    assert project_sync(K("Bb major"), 123.0, None, None) == Sync(0, 1.0)
    assert project_sync(None, None, K("C major"), 128.0) == Sync(0, 1.0)


def test_offset_is_the_neighbour_relative_to_the_query():
    o = offset(K("C major"), 125.0, K("D major"), 120.0)
    assert o.semitones == 2 and o.ratio == pytest.approx(0.96)
    # the inverse of syncing the neighbour to the query
    s = project_sync(K("D major"), 120.0, K("C major"), 125.0)
    assert (s.semitones, s.tempo) == (-2, pytest.approx(1 / 0.96))
    assert offset(K("C major"), 120.0, K("A minor"), 60.0) == Offset(0, 1.0)  # relative, half time
    assert offset(K("C major"), 120.0, K("F# major"), None) == Offset(-6, None)
    assert offset(None, None, K("C major"), 120.0) == Offset(None, None)


def test_offsets_stay_in_minus_six_to_five():
    assert {offset(q, None, n, None).semitones for q in range(24) for n in range(24)} == set(range(-6, 6))


def test_labels():
    assert format_sync(Sync(2, 1.04)) == "+2 st, x1.04"
    assert format_sync(Sync(-3, 1.0)) == "-3 st"
    assert format_sync(Sync(0, 0.956)) == "x0.96"
    assert format_sync(Sync(0, 1.001)) == "as is"   # rounds to x1.00: nothing said
    assert format_sync(Sync(0, 1.0)) == "as is"
    assert format_offset(Offset(2, 0.96)) == "+2 st, x0.96"
    assert format_offset(Offset(0, 1.0)) == "0 st, x1.00"
    assert format_offset(Offset(-1, None)) == "-1 st"
    assert format_offset(Offset(None, 1.04)) == "x1.04"
    assert format_offset(Offset(None, None)) == ""
