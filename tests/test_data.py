"""Track index, batch plans and view reading on a small generated folder."""
from __future__ import annotations

import logging
import os

import numpy as np
import pytest
import soundfile as sf
import torch

from engine.audio.transforms import source_samples_needed
from trainer.data import (STRATEGIES, TrackLabels, ViewConfig, ViewStream, batch_arrays,
                          build_index, load_labels, parse_programs, plan_batch, read_batch)

SR = 16000


def _ramp(seconds: float, offset: float = 0.0) -> np.ndarray:
    """A ramp whose value says where it was read from: y[n] = offset + n / 1e6."""
    return (offset + np.arange(int(seconds * SR)) / 1e6).astype(np.float32)


@pytest.fixture()
def corpus(tmp_path):
    root = tmp_path / "corpus"
    (root / "sub").mkdir(parents=True)
    sf.write(root / "a.wav", _ramp(5.0, 0.1), SR, subtype="FLOAT")
    sf.write(root / "sub" / "b.wav", _ramp(4.5, 0.2), SR, subtype="FLOAT")
    sf.write(root / "sub" / "c.flac", (0.1 * np.sin(np.arange(7 * SR) / 10)).astype(np.float32), SR)
    sf.write(root / "short.wav", _ramp(1.0), SR, subtype="FLOAT")
    (root / "broken.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    (root / "notes.txt").write_text("not audio")
    return root


def test_index_skips_bad_and_short_files_and_logs_once(corpus, tmp_path, caplog, monkeypatch):
    cache = tmp_path / "run" / "index.json"
    with caplog.at_level(logging.WARNING, logger="trainer.data"):
        tracks = build_index(corpus, cache_path=cache)
    names = [os.path.basename(t.path) for t in tracks]
    assert names == ["a.wav", "b.wav", "c.flac"]
    assert tracks[0].duration == pytest.approx(5.0)
    assert sum("broken.wav" in r.getMessage() for r in caplog.records) == 1

    calls = []
    import engine.audio.decode

    real = engine.audio.decode.audio_info
    monkeypatch.setattr(engine.audio.decode, "audio_info", lambda p: calls.append(p) or real(p))
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="trainer.data"):
        assert build_index(corpus, cache_path=cache) == tracks
    assert calls == [] and not caplog.records  # cache hit: nothing reopened, nothing re-logged
    sf.write(corpus / "a.wav", _ramp(6.0), SR, subtype="FLOAT")
    os.utime(corpus / "a.wav", ns=(1, 1))
    again = build_index(corpus, cache_path=cache)
    assert len(calls) == 1 and again[0].duration == pytest.approx(6.0)


def test_index_of_missing_folder_raises(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        build_index(tmp_path / "nowhere")


def test_plan_is_a_function_of_seed_step_rank(corpus):
    tracks = build_index(corpus)
    cfg = ViewConfig(anchors=3, views=4)
    p1, p2 = (plan_batch(tracks, cfg, seed=1, step=7, rank=0) for _ in range(2))
    assert all(np.array_equal(getattr(p1, k), getattr(p2, k)) for k in ("track", "start", "rate", "semitones"))
    other = [plan_batch(tracks, cfg, seed=1, step=8, rank=0), plan_batch(tracks, cfg, seed=1, step=7, rank=1)]
    assert all(not np.array_equal(p1.start, o.start) for o in other)
    assert p1.anchor.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    assert len(set(p1.track[::4].tolist())) == 3  # anchors from distinct tracks when possible
    for a in range(3):
        assert len(set(p1.track[a * 4:(a + 1) * 4].tolist())) == 1  # views of an anchor: one track


def test_plan_reads_enough_source_for_stretched_views(corpus):
    tracks = build_index(corpus)
    cfg = ViewConfig(anchors=3, views=4)
    stretched = 0
    for step in range(20):
        p = plan_batch(tracks, cfg, seed=0, step=step)
        for i in range(len(p.track)):
            n_track = int(tracks[p.track[i]].duration * SR)
            assert 0 <= p.start[i] and p.start[i] + p.samples[i] <= n_track
            if p.stretch_applied[i]:
                stretched += 1
                assert 0.7 <= p.rate[i] <= 1.3
                assert p.samples[i] == source_samples_needed(cfg.chunk_samples, float(p.rate[i]))
            else:
                assert p.rate[i] == 1.0 and p.samples[i] == cfg.chunk_samples
            assert (p.semitones[i] != 0) == p.pitch_applied[i] and abs(p.semitones[i]) <= 4
    assert 60 < stretched < 180  # p = 0.5 of 240 views


def test_strategies_and_probabilities(corpus):
    tracks = build_index(corpus)
    same = ViewConfig(anchors=3, views=4, strategy_probs=(1, 0, 0), pitch=False, tempo=False)
    for step in range(5):
        p = plan_batch(tracks, same, seed=0, step=step)
        assert (p.strategy == 0).all()
        assert all(len(set(p.start[a * 4:(a + 1) * 4].tolist())) == 1 for a in range(3))
    adj = ViewConfig(anchors=3, views=4, strategy_probs=(0, 1, 0), pitch=False, tempo=False)
    p = plan_batch(tracks, adj, seed=0, step=0)
    assert (p.strategy == 1).all()
    counts = np.bincount(np.concatenate([plan_batch(tracks, ViewConfig(anchors=3), seed=0, step=s).strategy
                                         for s in range(100)]), minlength=3)
    assert counts.min() > 70, dict(zip(STRATEGIES, counts))  # uniform by default (300 draws)
    # Grid mode: a shifted view moves by a whole, non-zero number of semitones (so that its
    # key label can follow it exactly), every step of the grid is used, and an unshifted
    # view stays at 0; the default mode draws continuous amounts.
    grid = ViewConfig(anchors=3, semitone_grid=True)
    plans = [plan_batch(tracks, grid, seed=0, step=s) for s in range(20)]
    semis = np.concatenate([p.semitones for p in plans])
    applied = np.concatenate([p.pitch_applied for p in plans])
    assert applied.any() and (~applied).any()
    assert np.all(semis[~applied] == 0)
    shifted = semis[applied]
    assert np.array_equal(shifted, np.round(shifted)) and np.all(shifted != 0)
    assert set(shifted.tolist()) == {-4, -3, -2, -1, 1, 2, 3, 4}
    continuous = np.concatenate([plan_batch(tracks, ViewConfig(anchors=3), seed=0, step=s)
                                 .semitones for s in range(20)])
    assert not np.array_equal(continuous, np.round(continuous))


def test_read_batch_reads_the_planned_frames(corpus, monkeypatch):
    tracks = build_index(corpus)[:2]  # the two ramps
    cfg = ViewConfig(anchors=2, views=4)
    reads = []
    import engine.audio.decode

    orig = engine.audio.decode.read_chunks
    monkeypatch.setattr(engine.audio.decode, "read_chunks",
                        lambda path, starts, **kw: reads.append(kw["chunk_samples"]) or orig(path, starts, **kw))
    p = plan_batch(tracks, cfg, seed=3, step=0)
    src = read_batch(tracks, p, cfg)
    assert src.shape == (8, p.samples.max())
    assert reads == p.samples.tolist()  # only the frames each view needs
    for i in range(8):
        offset = 0.1 if p.track[i] == 0 else 0.2
        expect = offset + (p.start[i] + np.arange(p.samples[i])) / 1e6
        np.testing.assert_allclose(src[i, :p.samples[i]], expect, atol=1e-6)


def test_view_stream_order_does_not_depend_on_workers(corpus):
    tracks = build_index(corpus)
    cfg = ViewConfig(anchors=2, views=2)
    stream = ViewStream(tracks, cfg, seed=4, start_step=3, stop_step=7)
    one = list(torch.utils.data.DataLoader(stream, batch_size=None, num_workers=0))
    two = list(torch.utils.data.DataLoader(stream, batch_size=None, num_workers=2))
    assert [int(b["step"]) for b in one] == [3, 4, 5, 6] == [int(b["step"]) for b in two]
    for a, b in zip(one, two):
        assert torch.equal(a["source"], b["source"]) and torch.equal(a["rate"], b["rate"])
    direct = batch_arrays(tracks, cfg, seed=4, step=5)
    assert np.array_equal(one[2]["source"].numpy(), direct["source"])


def test_labels_and_supervised_fraction(corpus):
    tracks = build_index(corpus)
    (corpus / "labels.csv").write_text(
        "file,key,tempo,program,family,source,seed,soundfont\n"
        "a.wav,C major,120,0,piano,gen,1,x\n"
        "sub/b.wav,a minor,90.5,40,strings,gen,2,x\n"
        "sub/c.flac,??,,33,bass,gen,3,x\n")
    lab = load_labels(corpus / "labels.csv", tracks)
    assert lab.key.tolist() == [0, 21, -1]
    assert lab.tempo.tolist() == [120.0, 90.5, 0.0]
    assert [lab.families[i] for i in lab.family] == ["piano", "strings", "bass"]
    assert lab.programs.shape == (3, 129) and not lab.programs.any()  # no programs column
    none = load_labels(corpus / "labels.csv", tracks, fraction=0.0)
    assert none.labelled == 0 and (none.key == -1).all()
    with pytest.raises(FileNotFoundError):
        load_labels(corpus / "missing.csv", tracks)


def test_program_labels(corpus):
    tracks = build_index(corpus)
    (corpus / "labels.csv").write_text(
        "file,key,tempo,family,programs\n"
        "a.wav,C major,120,piano,0;1;128\n"
        "sub/b.wav,,,, 40 ;x;200\n"
        "sub/c.flac,C major,,bass,\n")
    lab = load_labels(corpus / "labels.csv", tracks)
    assert [np.flatnonzero(p).tolist() for p in lab.programs] == [[0, 1, 128], [40], []]
    assert lab.labelled == 3  # b.wav is labelled by its programs alone
    assert not load_labels(corpus / "labels.csv", tracks, fraction=0.0).programs.any()
    assert np.flatnonzero(parse_programs("58;60;62")).tolist() == [58, 60, 62]
    assert not parse_programs("").any()
    old_style = TrackLabels(np.array([0, -1]), np.array([-1, -1]), np.zeros(2), ("piano",))
    assert old_style.programs.shape == (2, 129) and not old_style.programs.any()


def test_labels_from_a_folder_read_every_labels_csv_under_it(corpus):
    tracks = build_index(corpus)
    (corpus / "labels.csv").write_text("file,key,tempo,family\na.wav,C major,120,piano\n")
    (corpus / "sub" / "labels.csv").write_text("file,key,tempo,family\nb.wav,a minor,90,strings\n")
    lab = load_labels(corpus, tracks)  # each file relative to its own CSV's folder
    assert lab.key.tolist() == [0, 21, -1]
    assert lab.tempo.tolist() == [120.0, 90.0, 0.0]
    with pytest.raises(FileNotFoundError):
        load_labels(corpus / "sub" / "nothing", tracks)
    (corpus / "empty").mkdir()
    with pytest.raises(FileNotFoundError):
        load_labels(corpus / "empty", tracks)
