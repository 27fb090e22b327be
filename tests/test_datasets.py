"""Dataset adapters, each on a tiny fixture in its standard layout built in tmp_path."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from trainer import datasets as ds


def wav(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, np.zeros(800, dtype=np.float32), 16000)
    return path


def test_mtg_jamendo_splits_and_tags(tmp_path):
    splits = tmp_path / "data" / "splits" / "split-0"
    splits.mkdir(parents=True)
    head = "TRACK_ID\tARTIST_ID\tALBUM_ID\tPATH\tDURATION\tTAGS\n"
    rows = {"train": ["track_0000214\tartist_1\talbum_1\t14/214.mp3\t212.7\tgenre---rock\tmood/theme---happy"],
            "validation": ["track_0000315\tartist_2\talbum_2\t15/315.mp3\t100.0\tinstrument---piano"],
            "test": ["track_0000416\tartist_3\talbum_3\t16/416.mp3\t90.0\tgenre---jazz",
                     "track_0000417\tartist_3\talbum_3\t17/417.mp3\t90.0\tgenre---jazz"]}  # audio missing
    for split, lines in rows.items():
        (splits / f"autotagging_top50tags-{split}.tsv").write_text(head + "\n".join(lines) + "\n")
    wav(tmp_path / "14" / "214.wav")  # a transcoded copy: any audio extension reads
    wav(tmp_path / "15" / "315.mp3.wav")
    wav(tmp_path / "16" / "416.wav")
    items = ds.mtg_jamendo(tmp_path)
    assert [(i.path.name, i.split) for i in items] == [("214.wav", "train"), ("315.mp3.wav", "validation"),
                                                       ("416.wav", "test")]
    assert items[0].labels["tags"] == ["genre---rock", "mood/theme---happy"]
    with pytest.raises(ds.DatasetError, match="split file not found"):
        ds.mtg_jamendo(tmp_path / "14")


def test_magnatagatune_canonical_split_and_top_tags(tmp_path):
    header = ['"clip_id"', '"guitar"', '"rock"', '"rare"', '"mp3_path"']
    rows = [("2", "1", "1", "0", "f/artist-song-0-29.mp3"),
            ("6", "1", "0", "0", "0/artist-song-1-30.mp3"),
            ("10", "0", "1", "1", "c/artist-song-2-31.mp3"),
            ("12", "1", "1", "0", "b/artist-song-3-32.mp3")]
    text = "\t".join(header) + "\n" + "\n".join("\t".join(f'"{c}"' for c in r) for r in rows) + "\n"
    (tmp_path / "annotations_final.csv").write_text(text)
    for *_, p in rows:
        wav((tmp_path / p).with_suffix(".wav"))
    items = {i.labels["clip_id"]: i for i in ds.magnatagatune(tmp_path, top_n=2)}
    assert {k: v.split for k, v in items.items()} == {"2": "test", "6": "train", "10": "validation", "12": "train"}
    assert items["2"].labels["tags"] == ["guitar", "rock"]
    assert items["10"].labels["tags"] == ["rock"]  # "rare" is not among the top 2
    assert ds.mtat_split("d/x.mp3") == "test"


@pytest.mark.parametrize("ann_dir", ["annotations/key", "annotations"])
def test_giantsteps_key_both_layouts(tmp_path, ann_dir):
    for stem, text in (("1001.LOFI", "Eb minor"), ("1002.LOFI", "f# major\n"), ("1003.LOFI", "-"),
                       ("1004.LOFI", "C minor")):
        (tmp_path / ann_dir).mkdir(parents=True, exist_ok=True)
        (tmp_path / ann_dir / f"{stem}.key").write_text(text)
    for stem in ("1001.LOFI", "1002.LOFI", "1003.LOFI"):  # 1004 has no audio
        wav(tmp_path / "audio" / f"{stem}.wav")
    items = ds.giantsteps_key(tmp_path)
    assert [(i.path.name, i.labels["key"]) for i in items] == [("1001.LOFI.wav", "Eb minor"),
                                                               ("1002.LOFI.wav", "F# major")]
    assert {i.split for i in ds.mtg_giantsteps_key(tmp_path)} == {"train"}


def test_nsynth_pitch_and_family(tmp_path):
    for folder, names in (("nsynth-train", ["guitar_acoustic_001-060-100"]),
                          ("nsynth-valid", ["keyboard_electronic_002-069-075"]),
                          ("nsynth-test", ["bass_synthetic_033-036-050"])):
        meta = {n: {"pitch": int(n.split("-")[1]), "velocity": int(n.split("-")[2]),
                    "instrument_family_str": n.split("_")[0], "instrument_source_str": n.split("_")[1]}
                for n in names}
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "examples.json").write_text(json.dumps(meta))
        for n in names:
            wav(tmp_path / folder / "audio" / f"{n}.wav")
    items = ds.nsynth(tmp_path)
    assert [(i.split, i.labels["pitch"], i.labels["family"]) for i in items] == [
        ("train", 60, "guitar"), ("validation", 69, "keyboard"), ("test", 36, "bass")]


def _tempo_set(root: Path, pairs: dict[str, tuple[str, str]]) -> Path:
    for audio, (ann, text) in pairs.items():
        wav(root / audio)
        (root / ann).parent.mkdir(parents=True, exist_ok=True)
        (root / ann).write_text(text)
    return root


def test_tempo_sets_match_annotations_to_audio(tmp_path):
    gtzan = _tempo_set(tmp_path / "gtzan", {
        "genres/blues/blues.00000.wav": ("tempo/gtzan_blues_00000.bpm", "121.6\n"),
        "genres/jazz/jazz.00001.wav": ("tempo/gtzan_jazz_00001.bpm", "92"),
    })
    giant = _tempo_set(tmp_path / "gst", {
        "audio/3111.LOFI.wav": ("annotations/tempo/3111.LOFI.bpm", "128.0"),
        "audio/3112.LOFI.wav": ("annotations/tempo/3112.LOFI.bpm", "not a tempo"),
    })
    hains = _tempo_set(tmp_path / "hains", {"wavs/001.wav": ("annotations/001.txt", "76.3 152.6 0.7")})
    items = ds.gtzan_tempo(gtzan)
    assert sorted((i.path.name, i.labels["tempo"]) for i in items) == [("blues.00000.wav", 121.6),
                                                                      ("jazz.00001.wav", 92.0)]
    assert [i.labels["tempo"] for i in ds.giantsteps_tempo(giant)] == [128.0]
    assert [i.labels["tempo"] for i in ds.hainsworth(hains)] == [76.3]  # MIREX style: first tempo


def test_all_tempo_one_vs_rest(tmp_path):
    roots = {"gtzan": _tempo_set(tmp_path / "g", {"a.wav": ("a.bpm", "100")}),
             "acm_mirum": _tempo_set(tmp_path / "m", {"b.wav": ("b.bpm", "120"), "c.wav": ("c.bpm", "90")}),
             "hainsworth": _tempo_set(tmp_path / "h", {"d.wav": ("d.bpm", "80")})}
    items = ds.all_tempo(roots, test="acm_mirum")
    assert sorted((i.path.name, i.split, i.labels["dataset"]) for i in items) == [
        ("a.wav", "train", "gtzan"), ("b.wav", "test", "acm_mirum"), ("c.wav", "test", "acm_mirum"),
        ("d.wav", "train", "hainsworth")]
    assert [name for name, _ in ds.all_tempo_folds(roots)] == ["gtzan", "acm_mirum", "hainsworth"]
    with pytest.raises(ds.DatasetError, match="held-out set"):
        ds.all_tempo(roots, test="ballroom")


def test_bad_roots_say_what_is_missing(tmp_path):
    with pytest.raises(ds.DatasetError, match="not a folder"):
        ds.nsynth(tmp_path / "nope")
    with pytest.raises(ds.DatasetError, match="no NSynth notes"):
        ds.nsynth(tmp_path)
    with pytest.raises(ds.DatasetError, match="annotations_final.csv"):
        ds.magnatagatune(tmp_path)
    with pytest.raises(ds.DatasetError, match="unknown dataset"):
        ds.load_dataset("imagenet", tmp_path)
