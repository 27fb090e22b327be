"""One-shots, loops and synthesised sounds: labels that say what is heard, the held-out split."""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tinysoundfont")
pytest.importorskip("scipy")
sf = pytest.importorskip("soundfile")

from trainer import corpus, sounds  # noqa: E402

TIMGM = Path("/usr/share/sounds/sf2/TimGM6mb.sf2")
needs_timgm = pytest.mark.skipif(not TIMGM.is_file(), reason="apt-get install timgm6mb-soundfont")
SR = 16_000
VOCABULARY = {"kick", "snare", "clap", "rim", "hihat", "cymbal", "tom", "percussion", "bass", "keys",
              "guitar", "strings", "brass_wind", "pad", "lead", "vocal", "fx", "drum_loop", "music_loop", "song"}


def _centroid(y: np.ndarray) -> float:
    p = np.abs(np.fft.rfft(y)) ** 2
    f = np.fft.rfftfreq(len(y), 1 / SR)
    return float((p * f).sum() / p.sum())


def _pitch_class(y: np.ndarray) -> int:
    """Pitch class of the strongest low partial (a harmonic sound's fundamental region)."""
    p = np.abs(np.fft.rfft(y * np.hanning(len(y)), n=1 << 17)) ** 2
    f = np.fft.rfftfreq(1 << 17, 1 / SR)
    band = (f > 25) & (f < 2000)
    midi = np.round(12 * np.log2(f[band] / 440) + 69).astype(int)
    energy = np.bincount(midi % 12, weights=p[band], minlength=12)
    return int(np.argmax(energy))


def test_every_program_has_a_type_of_the_vocabulary() -> None:
    types = {sounds.program_type(p) for p in range(128)}
    assert types <= VOCABULARY
    assert {"keys", "bass", "guitar", "strings", "brass_wind", "pad", "lead", "vocal", "fx"} <= types
    assert sounds.program_type(0) == "keys" and sounds.program_type(33) == "bass"
    assert set(sounds.DRUM_CLASSES) <= VOCABULARY
    with pytest.raises(ValueError):
        sounds.program_type(128)


@pytest.mark.parametrize("kind", ["kick", "hihat"])
def test_synth_drums_sound_like_their_class(kind: str) -> None:
    cents = [_centroid(sounds.synth_sound(np.random.default_rng(s), kind)[0]) for s in range(4)]
    if kind == "kick":
        assert max(cents) < 1500  # a sine sweep to 40-65 Hz, a short click
    else:
        assert min(cents) > 3500  # high-passed noise or metal from 4 kHz


@pytest.mark.parametrize("kind", ["bass", "lead", "pad"])
def test_synth_pitch_label_is_heard(kind: str) -> None:
    for seed in range(3):
        y, typ, pc = sounds.synth_sound(np.random.default_rng(seed), kind)
        assert typ == kind and pc is not None
        assert _pitch_class(y) == pc


def test_processing_keeps_level_in_range_and_tilt_tilts() -> None:
    rng = np.random.default_rng(0)
    noise = rng.standard_normal(SR).astype(np.float32)
    up = sounds.eq_tilt(noise, 12.0)
    f = np.fft.rfftfreq(SR, 1 / SR)
    p, q = np.abs(np.fft.rfft(noise)) ** 2, np.abs(np.fft.rfft(up)) ** 2
    gain_hi = q[f > 4000].sum() / p[f > 4000].sum()
    gain_lo = q[f < 250].sum() / p[f < 250].sum()
    assert 10 * np.log10(gain_hi / gain_lo) > 8
    for seed in range(5):
        y, _ = sounds.process(noise * 0.1, np.random.default_rng(seed))
        peak_db = 20 * np.log10(np.abs(y).max())
        assert -12.01 <= peak_db <= -0.49


def test_bench_split_renders_no_procedural_sound() -> None:
    train = corpus.plan_corpus(6, kind="oneshots", split="train")
    bench = corpus.plan_corpus(6, kind="oneshots", split="bench")
    assert "synth_hit" in {i.kind for i in train}
    assert {i.kind for i in bench} <= {"drum_hit", "melodic_hit"}
    assert not {i.seed for i in train} & {i.seed for i in bench}
    loops = corpus.plan_corpus(2, kind="loops")
    assert {i.kind for i in loops} <= {"drum_loop", "music_loop"} and all(i.duration >= 3.0 for i in loops)
    everything = corpus.plan_corpus(4, kind="all")
    assert [i.index for i in everything] == list(range(len(everything)))


def test_loop_is_whole_bars_at_its_tempo() -> None:
    for seed in range(20):
        plan = corpus.plan_sound("drum_loop" if seed % 2 else "music_loop", seed, pad_to=3.0)
        bar = 4 * 60.0 / float(plan.tempo)
        bars = plan.duration / bar
        assert abs(bars - round(bars)) < 1e-6 and round(bars) in (1, 2, 4, 8)
        assert plan.duration >= 3.0
        assert all(on < plan.duration for on, *_ in plan.notes)


@needs_timgm
def test_rendered_sounds_labels_and_audio(tmp_path: Path) -> None:
    labels = corpus.render_corpus(tmp_path / "o", minutes=0.4, soundfont=TIMGM, seed=2, kind="oneshots")
    rows = corpus.read_labels(labels)
    assert len(rows) == 8
    for row in rows:
        y, sr = sf.read(row["path"], dtype="float32")
        assert sr == SR and abs(len(y) / SR - 3.0) < 1e-3 and np.abs(y).max() > 0.01
        assert row["type"] in VOCABULARY
        assert row["tempo"] == 0.0  # "no tempo"
        if row["type"] in sounds.DRUM_CLASSES and not row["pitch"]:
            assert row["key"] == "no key"
    raw = (tmp_path / "o" / "labels.csv").read_text().splitlines()
    assert raw[0].endswith(",type,pitch") and all(",no tempo," in line for line in raw[1:])


@needs_timgm
def test_drum_hit_classes_are_heard(tmp_path: Path) -> None:
    renderer = corpus.Renderer(TIMGM)
    cents: dict[str, list[float]] = {"kick": [], "hihat": []}
    seed = 0
    while min(len(v) for v in cents.values()) < 2:
        plan = corpus.plan_sound("drum_hit", seed, pad_to=1.0)
        seed += 1
        if plan.type in cents:
            arr = corpus.Arrangement(plan.notes, dict(plan.programs), plan.key, 0.0, "", 9, plan.drum_kit)
            cents[plan.type].append(_centroid(renderer.render(arr, duration=1.0)))
    assert max(cents["kick"]) < min(cents["hihat"])


def test_command_line_kind() -> None:
    p = argparse.ArgumentParser()
    corpus.add_arguments(p)
    assert p.parse_args(["out", "--minutes", "1"]).kind == "songs"
    assert p.parse_args(["out", "--minutes", "1", "--kind", "oneshots"]).kind == "oneshots"
    with pytest.raises(SystemExit):
        p.parse_args(["out", "--minutes", "1", "--kind", "samples"])
