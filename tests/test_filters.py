"""The filter box's syntax (engine/library/filters.py): free text with key:, bpm: and
type: constraints, alternatives, and one clear message per word it cannot read."""
from __future__ import annotations

import doctest

import pytest

from engine import keys
from engine.library import filters
from engine.library.filters import parse_filter
from engine.model.heads import SOUND_TYPES, Estimate

K = keys.parse_key


def est(key="A minor", bpm=124.0, type_="kick", conf=0.9):
    return Estimate(key=None if key is None else K(key), key_confidence=conf, bpm=bpm,
                    bpm_confidence=conf, type=type_, type_confidence=conf)


def test_doctests():
    assert doctest.testmod(filters).failed == 0


def test_plain_text_is_every_word_in_the_path_case_insensitively():
    f = parse_filter("Kit  SNARE")
    assert f.terms == ("kit", "snare") and not f.constrains_estimates and not f.errors
    assert f.matches("/s/Kit A/snare 01.wav", None)
    assert not f.matches("/s/Kit A/kick 01.wav", None)
    assert parse_filter('"kit a"').matches("/s/Kit A/x.wav", None)
    assert not parse_filter('"kit a"').matches("/s/a kit/x.wav", None)
    # the caller's extra text (the status column) is searched too
    assert parse_filter("error").matches("/s/x.wav", None, "error: cannot decode")
    assert parse_filter("").empty and parse_filter("   ").matches("/x.wav", None)


@pytest.mark.parametrize("text", ["key:8A", "key:Am", "key:am", "key:A minor", 'key:"A minor"',
                                  "key:a:min", "key:1m", "KEY:8a"])
def test_key_spellings_all_mean_a_minor(text):
    f = parse_filter(text)
    assert f.keys == {K("A minor")} and not f.errors and f.terms == ()
    assert f.matches("/x.wav", est("A minor"))
    assert not f.matches("/x.wav", est("C major"))  # the relative is another key


@pytest.mark.parametrize("text, name", [("key:c", "C major"), ("key:C", "C major"),
                                         ("key:bb", "Bb major"), ("key:F#m", "F# minor"),
                                         ("key:ebm", "Eb minor"), ("key:8B", "C major"),
                                         ("key:1d", "C major")])
def test_short_forms_and_a_lone_tonic_is_major(text, name):
    assert parse_filter(text).keys == {K(name)}


def test_alternatives_and_no_key():
    f = parse_filter("key:8A,9A key:none")
    assert f.keys == {K("A minor"), K("E minor"), None}
    assert f.matches("/x", est("E minor")) and f.matches("/x", est(None))
    assert not f.matches("/x", est("D minor"))


def test_bpm_exact_is_what_the_column_shows_at_the_precision_typed():
    f = parse_filter("bpm:128")
    assert f.bpm == ((127.5, 128.5),)
    assert f.matches("/x", est(bpm=127.6)) and f.matches("/x", est(bpm=128.4))
    assert not f.matches("/x", est(bpm=128.6)) and not f.matches("/x", est(bpm=127.4))
    f = parse_filter("bpm:127.5")
    assert f.bpm == (pytest.approx((127.45, 127.55)),)


def test_bpm_range_is_inclusive_and_either_way_round():
    f = parse_filter("bpm:120-128")
    assert f.bpm == ((119.5, 128.5),) == parse_filter("bpm:128-120").bpm
    assert all(f.matches("/x", est(bpm=b)) for b in (119.6, 120.0, 124.0, 128.0, 128.4))
    assert not any(f.matches("/x", est(bpm=b)) for b in (119.4, 128.5, 140.0))


def test_bpm_matches_the_estimate_not_half_or_double_time():
    f = parse_filter("bpm:120-130")
    assert not f.matches("/x", est(bpm=64.0)) and not f.matches("/x", est(bpm=250.0))


def test_bpm_none_is_no_tempo():
    f = parse_filter("bpm:none")
    assert f.matches("/x", est(bpm=None)) and not f.matches("/x", est(bpm=120.0))
    assert not parse_filter("bpm:120").matches("/x", est(bpm=None))


@pytest.mark.parametrize("text, types", [("type:kick", {"kick"}), ("type:KICK", {"kick"}),
                                          ("type:perc", {"percussion"}), ("type:hat", {"hihat"}),
                                          ("type:hi-hat", {"hihat"}), ("type:brass", {"brass_wind"}),
                                          ("type:drumloop", {"drum_loop"}),
                                          ("type:loop", {"drum_loop", "music_loop"}),
                                          ("type:kick,snare", {"kick", "snare"})])
def test_types_exact_prefix_and_short_names(text, types):
    f = parse_filter(text)
    assert f.types == types and not f.errors


def test_every_sound_type_can_be_asked_for():
    for t in SOUND_TYPES:
        assert parse_filter(f"type:{t}").types == {t}


def test_fields_combine_with_text():
    f = parse_filter("kit key:8A bpm:120-128 type:kick")
    assert f.matches("/s/Kit/k1.wav", est("A minor", 124.0, "kick"))
    assert not f.matches("/s/Kit/k1.wav", est("A minor", 124.0, "snare"))
    assert not f.matches("/s/Kit/k1.wav", est("A minor", 140.0, "kick"))
    assert not f.matches("/s/Kit/k1.wav", est("B minor", 124.0, "kick"))
    assert not f.matches("/s/Other/k1.wav", est("A minor", 124.0, "kick"))
    # without an estimate (not analysed yet) no constraint passes, plain text still does
    assert not f.matches("/s/Kit/k1.wav", None)
    assert parse_filter("kit").matches("/s/Kit/k1.wav", None)


def test_low_confidence_estimates_are_filtered_like_any_other():
    assert parse_filter("type:kick").matches("/x", est(type_="kick", conf=0.1))


@pytest.mark.parametrize("text, message", [
    ("key:H", "key:H: not a key"),
    ('key:"C dorian"', 'key:"C dorian": not a key'),
    ("bpm:fast", "bpm:fast: not a BPM or range"),
    ("bpm:0", "bpm:0: a BPM is above 0"),
    ("type:c", "type:c: could be clap, cymbal"),
    ("type:banjo", "type:banjo: not a sound type (kick, snare"),
    ("mood:dark", "mood:dark: unknown filter mood: (use key:, bpm: or type:)"),
    ("key:", "key: needs a value"),
])
def test_bad_words_say_why_and_the_rest_still_filters(text, message):
    f = parse_filter(f"kit {text} type:kick" if not text.startswith("type") else f"kit {text} bpm:124")
    assert len(f.errors) == 1 and f.errors[0].startswith(message), f.errors
    assert "kit" in f.terms
    assert f.types == {"kick"} or f.bpm == ((123.5, 124.5),)


def test_a_drive_letter_or_a_time_is_text():
    assert parse_filter(r"C:\Samples").terms == (r"c:\samples",)
    assert parse_filter("take 1:30").errors == ()


def test_a_bad_value_leaves_its_field_unconstrained():
    f = parse_filter("bass key:H")
    assert f.keys is None and f.matches("/d bass.wav", est("D major"))
    f = parse_filter("key:8A,H")  # one bad alternative: the whole word is left out
    assert f.keys is None and len(f.errors) == 1
