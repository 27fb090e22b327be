"""loev-train eval: retrieval metrics with known answers, probes, degradations, and the
whole suite end to end on a tiny generated labelled folder with a random tiny checkpoint."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tests.signals import click_track, tone
from trainer import benchmark as bm
from trainer import evaluate as ev
from trainer import metrics as mx
from trainer import probes as pr

SR = 16000


def _tracks(keys, tempi, families):
    return [bm.Track(Path(f"t{i}.wav"), key=k, tempo=t, family=f)
            for i, (k, t, f) in enumerate(zip(keys, tempi, families))]


# ------------------------------------------------------------------ labels and metrics


def test_load_tracks_reads_every_key_spelling_as_mir_evals(tmp_path):
    rows = ["file,key,tempo,program,family,seed", "a.wav,D#:min,120,0,piano,0", "b.wav,Bb maj,0,0,,1",
            "c.wav,C dorian,90,0,bass,2", "d.wav,,100,0,bass,3"]
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    tracks = bm.load_tracks(tmp_path)
    assert [t.key for t in tracks] == ["Eb minor", "Bb major", None, None]
    assert [t.tempo for t in tracks] == [120.0, None, 90.0, 100.0]
    # the keys are scored by mir_eval, which accepts only its own spelling
    assert mx.key_score(tracks[0].key, "Eb minor") == 1.0


def test_tempo_hits():
    assert mx.tempo_hits(120.0, 124.0) == (True, True)  # 3.3 %
    assert mx.tempo_hits(120.0, 126.0) == (False, False)  # 5 %
    assert mx.tempo_hits(120.0, 240.0) == (False, True)
    assert mx.tempo_hits(120.0, 40.5) == (False, True)
    assert mx.tempo_hits(120.0, 180.0) == (False, False)  # 3:2 is not an acc2 relation


def test_perfect_embedding_scores_one_and_k3_averages_all_others():
    # 4 tracks, 2 keys a tritone apart (weighted score 0 between them), tempo and family follow the key
    tracks = _tracks(["C major", "C major", "F# major", "F# major"], [100, 100, 150, 150], ["a", "a", "b", "b"])
    emb = np.array([[1, 0], [0.9, 0.1], [0, 1], [0.1, 0.9]], dtype=float)
    pairs = mx.PairTable(tracks)
    r = mx.retrieval_scores(mx.cosine_similarity(emb, emb), pairs, ks=(1, 3))
    for m in ("key", "tempo_acc1", "tempo_acc2", "family"):
        assert r[m]["1"] == 1.0
        # k = 3 takes every other track: 1 of 3 neighbours shares the label
        assert r[m]["3"] == pytest.approx(1 / 3)


def test_weighted_key_partial_credit_and_acc2():
    # mir_eval's weighted score is asymmetric: G major found for C major is a fifth above (0.5),
    # C major found for G major is a fourth above (0); C major for A minor is relative (0.3)
    tracks = _tracks(["C major", "G major", "A minor"], [100, 200, 300], [None, None, None])
    sim = np.array([[0, 1, 0], [1, 0, 0], [1, 0, 0]], dtype=float)
    r = mx.retrieval_scores(sim, mx.PairTable(tracks), ks=(1,))
    assert r["key"]["1"] == pytest.approx((0.5 + 0.0 + 0.3) / 3)
    assert r["tempo_acc1"]["1"] == 0.0
    # 100 -> 200 (x2), 200 -> 100 (x1/2), 300 -> 100 (x1/3): all acc2 hits
    assert r["tempo_acc2"]["1"] == 1.0
    assert "family" not in r  # no family labels: no family figure rather than a fake one


def test_unlabelled_tracks_take_no_part():
    tracks = _tracks(["C major", None, "C major"], [100, 100, 100], ["a", "a", "a"])
    sim = np.array([[0, 1, 0.5], [1, 0, 0], [0.5, 0, 0]], dtype=float)
    r = mx.retrieval_scores(sim, mx.PairTable(tracks), ks=(1,))
    assert r["key"]["1"] == 1.0  # the unlabelled middle track is never a key neighbour


def test_query_is_never_its_own_neighbour():
    sim = np.eye(3) + 0.1 * np.arange(9).reshape(3, 3)
    nn = mx.nearest(sim, 2)
    assert all(i not in row for i, row in enumerate(nn))


def test_oracle_is_the_best_any_ranking_can_do():
    tracks = _tracks(["C major", "C major", "F# major", "F# major"], [100, 100, 150, 150], ["a"] * 4)
    o = mx.oracle_scores(mx.PairTable(tracks), ks=(1, 3))
    assert o["key"] == {"1": 1.0, "3": pytest.approx(1 / 3)} and o["family"]["3"] == 1.0


def test_chance_is_mean_over_pairs():
    tracks = _tracks(["C major"] * 2 + ["F# major"] * 2, [100] * 4, ["a"] * 4)
    ch = mx.chance_scores(mx.PairTable(tracks))
    assert ch["key"] == pytest.approx(1 / 3) and ch["tempo_acc1"] == 1.0


def test_label_similarity_retrieves_same_estimates():
    tracks = _tracks(["C major", "C major", "F# major", "F# major"], [90, 91, 140, 141], [None] * 4)
    pairs = mx.PairTable(tracks)
    keys = mx.label_similarity(["C major", "C major", "F# major", "F# major"], "key")
    tempi = mx.label_similarity([90.0, 91.0, 140.0, 141.0], "tempo")
    assert mx.retrieval_scores(keys, pairs, ks=(1,))["key"]["1"] == 1.0
    assert mx.retrieval_scores(tempi, pairs, ks=(1,))["tempo_acc1"]["1"] == 1.0


def test_concat_subspaces_is_unit_norm_and_weighs_each_equally():
    emb = {"pitch": np.array([[3.0, 4.0]]), "tempo": np.array([[10.0, 0.0, 0.0]])}
    v = bm.concat_subspaces(emb)
    assert v.shape == (1, 5) and np.linalg.norm(v) == pytest.approx(1.0)
    assert np.linalg.norm(v[0, :2]) == pytest.approx(np.linalg.norm(v[0, 2:]))


# ----------------------------------------------------------------- degradations, split


def test_degradations_measure_what_they_claim():
    y = tone(440.0, 2.0) + tone(6000.0, 2.0)
    noisy = bm.degrade(y, "noise_10db", seed=1)
    snr = 10 * np.log10(np.mean(y ** 2) / np.mean((noisy - y) ** 2))
    assert snr == pytest.approx(10.0, abs=0.3)
    spec = np.abs(np.fft.rfft(bm.degrade(y, "lowpass_4k")))
    freqs = np.fft.rfftfreq(len(y), 1 / SR)
    at = lambda f: spec[np.argmin(np.abs(freqs - f))]  # noqa: E731
    assert at(6000) < 0.01 * at(440)
    with pytest.raises(ValueError, match="unknown degradation"):
        bm.degrade(y, "vinyl")


def test_split_is_deterministic_and_never_empty():
    names = [f"track_{i:03d}.wav" for i in range(20)]
    a, b = pr.split_tracks(names), pr.split_tracks(list(names))
    assert (a == b).all() and a.sum() == 6
    assert pr.split_tracks(["x.wav", "y.wav"]).sum() == 1


# ------------------------------------------------------------------------------ probe


def test_probe_on_separable_toy_set():
    rng = np.random.default_rng(0)
    n_tracks, per = 40, 3
    keys = ["C major", "F# major", "A minor", "Eb minor"]
    key_of = rng.integers(0, 4, n_tracks)
    tempo_of = rng.choice([80.0, 120.0, 160.0], n_tracks)
    fam_of = rng.integers(0, 2, n_tracks)
    tracks = [bm.Track(Path(f"toy{i}.wav"), key=keys[key_of[i]], tempo=float(tempo_of[i]),
                       family=["strings", "piano"][fam_of[i]]) for i in range(n_tracks)]
    owner = np.repeat(np.arange(n_tracks), per)
    centres = rng.standard_normal((4, 8)) * 3
    x = np.concatenate([centres[key_of[owner]], np.repeat(np.log2(tempo_of[owner])[:, None] * 4, 4, axis=1),
                        np.repeat((fam_of[owner] * 4.0)[:, None], 4, axis=1)], axis=1)
    x += 0.3 * rng.standard_normal(x.shape)
    test = pr.split_tracks([t.name for t in tracks])
    r = pr.probe_subspace(x.astype(np.float32), owner, tracks, test,
                          options=pr.ProbeOptions(steps=300, hidden=64))
    assert r["key"] > 0.95
    assert r["family_acc"] > 0.95 and r["family_roc_auc"] > 0.95 and r["family_map"] > 0.95
    assert r["tempo_acc1"] > 0.8


# ------------------------------------------------------------------------- end to end


def _labelled_folder(root: Path) -> Path:
    """6 tracks: 2 keys (tone pairs) x 3 tempi (click tracks), two families."""
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, (f0, key) in enumerate(((261.63, "C major"), (369.99, "F# major"))):
        for j, bpm in enumerate((80.0, 120.0, 160.0)):
            y = 0.5 * (tone(f0, 3.0) + tone(f0 * 1.25, 3.0)) + click_track(bpm, 3.0, seed=3 * i + j)
            name = f"k{i}_t{j}.wav"
            sf.write(root / name, y, SR)
            rows.append({"file": name, "key": key, "tempo": bpm, "program": 0 if i else 40,
                         "family": "piano" if i else "strings", "source": "synthetic", "seed": 3 * i + j,
                         "soundfont": "none"})
    with open(root / "labels.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return root


def test_eval_end_to_end_and_report(tmp_path, tiny_checkpoint, monkeypatch):
    from trainer import baselines
    from trainer.cli import main

    # essentia (when installed) is exercised by the benchmark, not here: keep the test fast
    monkeypatch.setattr(baselines, "essentia_available", lambda: False)
    monkeypatch.setattr(ev, "DEGRADATIONS", ("lowpass_4k",))  # one degradation exercises the path
    data = _labelled_folder(tmp_path / "bench")
    out = tmp_path / "eval"
    rc = main(["eval", "--checkpoint", str(tiny_checkpoint), "--data", str(data), "--out", str(out),
               "--baselines", "--probe", "--degrade", "--probe-steps", "5"])
    assert rc == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["n_tracks"] == 6 and m["labelled"]["key"] == 6
    model = m["models"][tiny_checkpoint.stem]
    assert set(model["retrieval"]) == {"invariant", "pitch", "tempo", "all"}
    for r in model["retrieval"].values():
        assert set(r) == {"family", "key", "tempo_acc1", "tempo_acc2"}  # no pitch labels: no pitch figure
        assert all(0.0 <= v <= 1.0 for metric in r.values() for v in metric.values())
    assert set(model["probe"]) == {"invariant", "pitch", "tempo", "all", "_split"}
    assert set(model["robustness"]) == set(ev.DEGRADATIONS)
    # the tempogram finds each click track's tempo among the other tracks at that tempo
    assert set(m["baselines"]) == set(baselines.DESCRIPTORS)
    assert m["baselines"]["tempogram"]["retrieval"]["tempo_acc1"]["1"] == 1.0
    assert m["baselines"]["chroma12"]["retrieval"]["key"]["1"] == 1.0

    results = tmp_path / "docs" / "RESULTS.md"
    assert main(["report", "--runs", str(out), "--out", str(results)]) == 0
    text = results.read_text()
    for heading in ("training budget", "Retrieval (paper Fig. 2)", "Probing (paper Table I/II)",
                    "Robustness", "What differs from the paper"):
        assert heading in text
    assert "| tiny-loevpp | pitch |" in text and "| baseline: tempogram | tempo |" in text


class ChromaTempoEmbedder:
    """Known answers for the curves: pitch = folded chroma (moves with a shift, returns at an
    octave), tempo = log-lag onset autocorrelation, invariant = a constant."""

    def embed_audio_batch(self, ys):
        from trainer import baselines

        return [{"invariant": np.array([0.6, 0.8], dtype=np.float32), "pitch": baselines.folded_chroma_24(y),
                 "tempo": baselines.loglag_autocorrelation(y)} for y in ys]


def test_curves_known_answers_and_files(tmp_path):
    from tests.signals import harmonic_tone

    y = sum(harmonic_tone(f, 3.0) for f in (261.63, 329.63, 392.0)) + click_track(100.0, 3.0)
    curves = ev.mean_curves(ChromaTempoEmbedder(), [y], n_tracks=1, seconds=3.0)
    pitch, tempo = curves["pitch"], curves["tempo"]
    at = dict(zip(pitch["values"], range(len(pitch["values"]))))
    assert pitch["values"][0] == -12.0 and pitch["values"][-1] == 12.0 and len(pitch["values"]) == 25
    assert max(pitch["subspaces"]["invariant"]) < 1e-6
    assert pitch["subspaces"]["pitch"][at[4.0]] > 0.3 and pitch["subspaces"]["pitch"][at[0.0]] < 0.05
    # octave folding: a 12-semitone shift comes back near the clean chroma
    assert pitch["subspaces"]["pitch"][at[12.0]] < 0.5 * pitch["subspaces"]["pitch"][at[6.0]]
    assert tempo["values"][0] == 0.5 and tempo["values"][-1] == 2.0
    files = ev.write_curves(curves, tmp_path, "toy")
    assert files == ["toy_curve_pitch.csv", "toy_curve_tempo.csv", "toy_curves.png"]
    rows = (tmp_path / "toy_curve_pitch.csv").read_text().splitlines()
    assert rows[0] == "value,invariant,pitch,tempo" and len(rows) == 26
    assert (tmp_path / "toy_curves.png").read_bytes()[:4] == b"\x89PNG"


def test_eval_errors_are_one_line(tmp_path, capsys):
    from trainer.cli import main

    assert main(["eval", "--data", str(tmp_path), "--out", str(tmp_path / "o"), "--baselines"]) == 2
    assert "no such labels file" in capsys.readouterr().err
    assert main(["eval", "--data", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert "nothing to evaluate" in capsys.readouterr().err
    assert main(["report", "--runs", str(tmp_path), "--out", str(tmp_path / "R.md")]) == 2
    assert "no metrics.json" in capsys.readouterr().err


def test_probe_uses_dataset_split_and_scores_tags_and_pitch():
    rng = np.random.default_rng(1)
    n, per = 48, 2
    pitch_of = rng.choice([48, 60, 72], n)
    tag_sets = [("rock", "guitar"), ("jazz",), ("rock",)]
    tag_of = rng.integers(0, 3, n)
    tracks = [bm.Track(Path(f"n{i}.wav"), pitch=int(pitch_of[i]), tags=tag_sets[tag_of[i]],
                       split="test" if i % 4 == 0 else "train") for i in range(n)]
    test = pr.probe_split(tracks)
    assert test.sum() == 12 and all(test[i] == (i % 4 == 0) for i in range(n))
    owner = np.repeat(np.arange(n), per)
    x = np.concatenate([np.eye(3)[np.searchsorted([48, 60, 72], pitch_of[owner])] * 3,
                        np.eye(3)[tag_of[owner]] * 3], axis=1) + 0.2 * rng.standard_normal((n * per, 6))
    r = pr.probe_subspace(x.astype(np.float32), owner, tracks, test, options=pr.ProbeOptions(steps=300, hidden=32))
    assert r["pitch_acc"] == 1.0
    assert r["tags_roc_auc"] > 0.95 and r["tags_map"] > 0.9
    assert "key" not in r and "tempo_acc1" not in r  # no labels, no figure


def test_eval_reads_a_dataset_layout(tmp_path, monkeypatch):
    from trainer import baselines
    from trainer.datasets import DatasetError

    monkeypatch.setattr(baselines, "essentia_available", lambda: False)

    root = tmp_path / "gst"
    for i, bpm in enumerate((90.0, 90.0, 140.0)):
        (root / "annotations" / "tempo").mkdir(parents=True, exist_ok=True)
        (root / "annotations" / "tempo" / f"{i}.LOFI.bpm").write_text(str(bpm))
        (root / "audio").mkdir(exist_ok=True)
        sf.write(root / "audio" / f"{i}.LOFI.wav", click_track(bpm, 4.0, seed=i), SR)
    tracks = bm.tracks_from_dataset("giantsteps_tempo", root)
    assert sorted(t.tempo for t in tracks) == [90.0, 90.0, 140.0]
    m = ev.run_eval([], root, tmp_path / "out", ev.EvalOptions(baselines=True), log=lambda _m: None,
                    dataset="giantsteps_tempo")
    assert m["dataset"] == "giantsteps_tempo" and m["labelled"]["tempo_acc1"] == 3
    assert m["baselines"]["tempogram"]["retrieval"]["tempo_acc1"]["1"] == pytest.approx(2 / 3)
    with pytest.raises(DatasetError):
        bm.tracks_from_dataset("nsynth", root)
