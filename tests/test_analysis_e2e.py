"""`loev scan`, `loev analyze` and `loev info` end to end with real heads: hand-made heads
written into a tiny checkpoint, and the shipped default's (torch)."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

from engine import keys
from engine.cli import main
from engine.library.catalogue import Library
from engine.model.checkpoint import read_checkpoint_info, save_with_heads
from engine.model.heads import load_heads
from tests.fixtures_audio import clicks, note_hz, tone, write
from tests.test_heads import hand_heads

pytest.importorskip("torch")


def run(capsys, *argv):
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture(scope="module")
def checkpoint_with_heads(tiny_checkpoint, tmp_path_factory):
    tensors, meta = hand_heads(read_checkpoint_info(tiny_checkpoint).dims)
    out = tmp_path_factory.mktemp("heads") / "tiny-with-heads.safetensors"
    return save_with_heads(out, tiny_checkpoint, tensors, meta)


def test_scan_stores_what_analyze_computes_on_the_fly(checkpoint_with_heads, tmp_path, capsys):
    from engine.model.embed import Embedder

    music = tmp_path / "music"
    a = write(music / "a.wav", tone(440.0, 3.0))
    c = write(music / "c.wav", clicks(120, 3.5))
    outside = write(tmp_path / "elsewhere" / "e.wav", tone(note_hz(64), 3.0))
    lib = tmp_path / "lib"
    rc, out, err = run(capsys, "scan", music, "--library", lib, "--checkpoint",
                       checkpoint_with_heads, "--json")
    assert rc == 0, err
    assert json.loads(out)["estimated"] == 2

    heads = load_heads(checkpoint_with_heads)
    embedder = Embedder(checkpoint_with_heads)
    want = {os.path.realpath(p): heads.predict(
        {s: v[None] for s, v in embedder.embed_file(str(p)).items()})[0].to_dict()
        for p in (a, c, outside)}
    with Library(lib, readonly=True) as catalogue:
        tracks = catalogue.tracks(status="ok")
        assert {t.heads_id for t in tracks} == {heads.heads_id}
        assert {t.path: t.estimate.to_dict() for t in tracks} == {
            p: want[p] for p in (os.path.realpath(a), os.path.realpath(c))}

    rc, out, err = run(capsys, "analyze", a, outside, c, "--library", lib, "--json")
    assert rc == 0, err
    rows = json.loads(out)["results"]
    assert [r.pop("path") for r in rows] == [os.path.realpath(p) for p in (a, outside, c)]
    assert rows == [want[os.path.realpath(p)] for p in (a, outside, c)]

    rc, out, err = run(capsys, "info", "--library", lib, "--json")
    assert json.loads(out)["estimates"]["estimated"] == 2


def test_a_library_without_heads_takes_them_when_the_checkpoint_gets_them(
        tiny_checkpoint, tmp_path, capsys):
    """Scanned with a checkpoint without heads, then the same model with heads: the
    estimates come from the stored vectors and nothing is embedded again."""
    import shutil

    ckpt = tmp_path / "model.safetensors"
    shutil.copyfile(tiny_checkpoint, ckpt)
    music = tmp_path / "music"
    write(music / "a.wav", tone(440.0, 3.0))
    lib = tmp_path / "lib"
    rc, out, err = run(capsys, "scan", music, "--library", lib, "--checkpoint", ckpt, "--json")
    assert rc == 0 and json.loads(out)["estimated"] == 0
    rc, out, err = run(capsys, "analyze", music / "a.wav", "--library", lib)
    assert rc == 1 and "no key/BPM/type heads" in err and err.count("\n") == 1

    tensors, meta = hand_heads(read_checkpoint_info(ckpt).dims)
    save_with_heads(ckpt, ckpt, tensors, meta)  # heads trained on the same encoder
    rc, out, err = run(capsys, "scan", music, "--library", lib, "--checkpoint", ckpt, "--json")
    report = json.loads(out)
    assert rc == 0 and (report["unchanged"], report["added"], report["estimated"]) == (1, 0, 1)


def test_loev_analyze_with_the_shipped_model(tmp_path, capsys):
    """A chord and a click track written to disk, analysed without a library."""
    from tests.signals import cadence, click_track

    if load_heads() is None:
        pytest.fail("the shipped checkpoint has no heads")
    chord = write(tmp_path / "cadence in G.wav", np.tile(cadence(67, "major"), 2))
    click = write(tmp_path / "click 128.wav", click_track(128.0, 12.0))
    missing = tmp_path / "missing.wav"
    rc, out, err = run(capsys, "analyze", chord, missing, click, "--library",
                       tmp_path / "no library", "--json")
    assert rc == 1 and err.count("\n") == 1 and "missing.wav: no such file" in err
    first, second = json.loads(out)["results"]
    assert (first["key"], first["camelot"]) == ("G major", keys.camelot(keys.parse_key("G major")))
    assert second["key"] is None and abs(second["bpm"] - 128.0) <= 0.04 * 128.0
    assert not (tmp_path / "no library").exists()


def test_compatible_keys_with_the_shipped_model(tmp_path):
    """Cadences in seven keys: G major's compatible keys are G, D and C major and E minor."""
    from engine.session import Session
    from tests.signals import cadence

    music = tmp_path / "music"
    for name, tonic, mode in [("G", 67, "major"), ("D", 62, "major"), ("C", 60, "major"),
                              ("Em", 64, "minor"), ("Am", 57, "minor"),
                              ("F#", 66, "major"), ("Bb", 70, "major")]:
        write(music / f"{name}.wav", np.tile(cadence(tonic, mode), 2))
    session = Session(tmp_path / "lib")
    report = session.scan([str(music)])
    assert report.estimated == 7
    found = session.estimates()
    assert {os.path.basename(p): keys.key_name(e.key) for p, e in found.items()} == {
        "G.wav": "G major", "D.wav": "D major", "C.wav": "C major", "Em.wav": "E minor",
        "Am.wav": "A minor", "F#.wav": "F# major", "Bb.wav": "Bb major"}
    result = session.compatible(music / "G.wav", k=10)
    assert sorted(os.path.basename(n.path) for n in result.neighbours) == [
        "C.wav", "D.wav", "Em.wav"]
    distances = [n.distance for n in result.neighbours]
    assert distances == sorted(distances)
    session.close()
