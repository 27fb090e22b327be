"""The `loev` command line: docs/DESIGN.md section 6 is a contract (random tiny checkpoint)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from engine.cli import main
from tests.fixtures_audio import SR, clicks, tiny_checkpoint_path, tone, write

pytest.importorskip("torch")
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return tiny_checkpoint_path(tmp_path_factory.mktemp("ckpt"))


@pytest.fixture(scope="module")
def scanned(tmp_path_factory, ckpt):
    root = tmp_path_factory.mktemp("cli")
    music = root / "music"
    write(music / "a.wav", tone(440.0, 3.0))
    write(music / "b.flac", tone(330.0, 2.0), format="FLAC")
    write(music / "c.wav", clicks(120, 3.5))
    (music / "broken.wav").write_bytes(b"RIFF....WAVEfmt garbage")
    return root, music


def run(capsys, *argv: str) -> tuple[int, str, str]:
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def test_scan_info_query_json_contracts(scanned, ckpt, capsys):
    root, music = scanned
    lib = root / "lib"
    rc, out, err = run(capsys, "scan", music, "--library", lib, "--checkpoint", ckpt, "--json")
    assert rc == 0, err
    report = json.loads(out)
    assert (report["found"], report["added"]) == (4, 4)
    assert [f["path"] for f in report["failed"]] == [os.path.realpath(music / "broken.wav")]
    assert "scan" in err  # the tqdm bar went to stderr

    rc, out, err = run(capsys, "info", "--library", lib, "--json")
    info = json.loads(out)
    assert rc == 0 and info["tracks"] == 3 and info["errors"] == 1
    assert set(info["subspaces"]) == {"invariant", "pitch", "tempo"}
    assert info["model"]["method"] == "loev++" and info["index"]["up_to_date"]
    assert [p["path"] for p in info["problems"]] == [os.path.realpath(music / "broken.wav")]

    rc, out, err = run(capsys, "query", music / "a.wav", music / "c.wav", "--by", "vibe",
                       "-k", "5", "--library", lib, "--json")
    assert rc == 0, err
    doc = json.loads(out)
    assert list(doc) == ["results"] and len(doc["results"]) == 2
    for r, q in zip(doc["results"], ("a.wav", "c.wav")):
        assert list(r) == ["query", "neighbours"] and Path(r["query"]).name == q
        assert len(r["neighbours"]) == 2  # 3 tracks minus the query
        for n in r["neighbours"]:
            assert list(n) == ["path", "distance"] and isinstance(n["distance"], float)
            assert n["path"] != r["query"]



def test_query_returns_the_nearest_tracks_in_the_asked_subspace(scanned, ckpt, capsys):
    """Distances and order agree with the model's own vectors, computed here directly."""
    from engine.model.embed import Embedder

    root, music = scanned
    lib = root / "lib"
    if not (lib / "catalogue.sqlite").exists():
        assert main(["scan", str(music), "--library", str(lib), "--checkpoint", str(ckpt)]) == 0
        capsys.readouterr()
    emb = Embedder(ckpt)
    vecs = {os.path.realpath(music / n): emb.embed_file(music / n)
            for n in ("a.wav", "b.flac", "c.wav")}
    query = os.path.realpath(music / "b.flac")
    for by, space in (("key", "pitch"), ("tempo", "tempo"), ("vibe", "invariant")):
        want = sorted((1.0 - float(vecs[query][space] @ v[space]), p)
                      for p, v in vecs.items() if p != query)
        rc, out, err = run(capsys, "query", query, "--by", by, "-k", "1", "--library", lib,
                           "--json")
        assert rc == 0, err
        (r,) = json.loads(out)["results"]
        assert [n["path"] for n in r["neighbours"]] == [want[0][1]], by
        assert r["neighbours"][0]["distance"] == pytest.approx(want[0][0], abs=1e-4)
        rc, out, _ = run(capsys, "query", query, "--by", by, "-k", "1", "--library", lib)
        assert rc == 0 and out.splitlines() == [query, f"    1. {want[0][0]:.4f}  {want[0][1]}"]


def test_query_of_outside_file_with_shift_and_stretch(scanned, ckpt, capsys, tmp_path):
    root, music = scanned
    lib = root / "lib"
    if not (lib / "catalogue.sqlite").exists():
        assert main(["scan", str(music), "--library", str(lib), "--checkpoint", str(ckpt)]) == 0
        capsys.readouterr()
    short = write(tmp_path / "short.wav", tone(220.0, 2.0))  # transformed whole
    long = write(tmp_path / "long.wav", tone(220.0, 8.0) + clicks(100, 8.0))  # by chunks
    for outside in (short, long):
        found = {}
        for shift, stretch in (("0", "1"), ("2", "1.1")):
            rc, out, err = run(capsys, "query", outside, "--by", "key", "--shift", shift,
                               "--stretch", stretch, "-k", "3", "--library", lib, "--json")
            assert rc == 0, err
            (r,) = json.loads(out)["results"]
            assert r["query"] == os.path.realpath(outside)
            found[shift] = {n["path"]: n["distance"] for n in r["neighbours"]}
        # the transform reached the query vector: every distance moved
        assert set(found["0"]) == set(found["2"])
        assert all(abs(found["0"][p] - found["2"][p]) > 1e-6 for p in found["0"])


def test_key_or_tempo_query_says_when_the_file_has_none(scanned, ckpt, capsys, monkeypatch):
    """A drum hit has no key and no tempo: its key and tempo neighbours share spectrum and
    onsets, and the text output says so on the query's line (the JSON stays as it is)."""
    from engine.model.heads import Estimate
    from engine.session import Session
    root, music = scanned
    lib = root / "lib"
    if not (lib / "catalogue.sqlite").exists():
        assert main(["scan", str(music), "--library", str(lib), "--checkpoint", str(ckpt)]) == 0
        capsys.readouterr()
    query = os.path.realpath(music / "c.wav")
    # the tiny checkpoint has no heads: no estimate, no caveat
    assert Session(lib).estimate_of(query) is None
    hit = Estimate(key=None, key_confidence=0.9, bpm=None, bpm_confidence=0.8, type="kick",
                   type_confidence=0.9)
    monkeypatch.setattr(Session, "estimate_of", lambda self, path: hit)
    lines = {}
    for by in ("key", "tempo", "vibe"):
        rc, out, err = run(capsys, "query", query, "--by", by, "-k", "1", "--library", lib)
        assert rc == 0, err
        lines[by] = out.splitlines()[0]
    assert lines["key"] == query + ": it has no key (unpitched), so these share its pitch content, not a key"
    assert lines["tempo"] == query + ": it has no tempo (a single sound), so these share its onsets, not a BPM"
    assert lines["vibe"] == query
    rc, out, _ = run(capsys, "query", query, "--by", "key", "-k", "1", "--library", lib, "--json")
    assert rc == 0 and json.loads(out)["results"][0]["query"] == query
    # an uncertain "no key" (below LOW_CONFIDENCE) adds nothing
    monkeypatch.setattr(Session, "estimate_of", lambda self, path: Estimate(
        None, 0.3, 120.0, 0.9, "kick", 0.9))
    for by in ("key", "tempo"):
        rc, out, _ = run(capsys, "query", query, "--by", by, "-k", "1", "--library", lib)
        assert out.splitlines()[0] == query


@pytest.mark.parametrize("transform, n, first, last", [("pitch", 25, -12.0, 12.0),
                                                       ("tempo", 13, 0.5, 2.0)])
def test_curve_json_contract(scanned, ckpt, capsys, transform, n, first, last):
    _, music = scanned
    rc, out, err = run(capsys, "curve", music / "a.wav", "--transform", transform,
                       "--checkpoint", ckpt, "--json")
    assert rc == 0, err
    curve = json.loads(out)
    assert list(curve) == ["transform", "values", "subspaces"]
    assert curve["transform"] == transform and len(curve["values"]) == n
    assert curve["values"][0] == first and curve["values"][-1] == last
    assert set(curve["subspaces"]) == {"invariant", "pitch", "tempo"}
    for dists in curve["subspaces"].values():
        assert len(dists) == n and all(0.0 <= d <= 2.0 for d in dists)
    identity = curve["values"].index(0.0 if transform == "pitch" else 1.0)
    assert all(d[identity] < 1e-2 for d in curve["subspaces"].values())


@pytest.mark.parametrize("name", ["hit", "changes"])
def test_a_tempo_curve_starts_from_its_own_reference(tmp_path, ckpt, name):
    """At rate 1 the stretched version is the reference itself: for a one-shot (stretched
    whole, attack included) and for a track whose start differs from its middle."""
    from engine.model.curves import invariance_curve
    from engine.model.embed import Embedder

    t = np.arange(int(0.5 * SR)) / SR
    hit = (np.sin(2 * np.pi * 220 * t) * np.exp(-t / 0.08)).astype(np.float32)
    changes = np.concatenate([tone(220.0, 6.0), clicks(90, 6.0) + 0.2 * tone(660.0, 6.0),
                              tone(440.0, 6.0)]).astype(np.float32)
    curve = invariance_curve({"hit": hit, "changes": changes}[name], "tempo", Embedder(ckpt, backend="torch"))
    identity = curve["values"].index(1.0)
    for space, dists in curve["subspaces"].items():
        assert dists[identity] < 1e-4, (space, dists[identity])


def test_match_json_contract(scanned, ckpt, capsys):
    pytest.importorskip("engine.model.match")
    _, music = scanned
    rc, out, err = run(capsys, "match", music / "a.wav", music / "b.flac", "--checkpoint", ckpt,
                       "--json")
    assert rc == 0, err
    result = json.loads(out)
    assert isinstance(result["shift"], (int, float)) and isinstance(result["stretch"], (int, float))


def test_checkpoint_change_reembeds(tmp_path, ckpt, capsys):
    music = tmp_path / "music"
    write(music / "x.wav", tone(500.0, 1.0))
    other = tiny_checkpoint_path(tmp_path, seed=1)
    assert main(["scan", str(music), "--library", str(tmp_path / "lib"), "--checkpoint", str(ckpt)]) == 0
    capsys.readouterr()
    rc, out, _ = run(capsys, "scan", music, "--library", tmp_path / "lib", "--checkpoint", other,
                     "--json")
    assert rc == 0 and json.loads(out)["reembedded"] and json.loads(out)["updated"] == 1


def _one_error_line(rc: int, err: str, *needles: str) -> None:
    assert rc != 0
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("loev: error: "), err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_user_mistakes_are_one_line_errors(scanned, ckpt, capsys, tmp_path):
    root, music = scanned
    lib = root / "lib"
    bad_ckpt = tmp_path / "model.safetensors"
    bad_ckpt.write_bytes(b"not a checkpoint at all")
    (tmp_path / "empty").mkdir()
    cases = [
        (["query", tmp_path / "missing.wav", "--by", "key", "--library", lib], "no such file"),
        (["scan", tmp_path / "no-folder", "--library", tmp_path / "l1", "--checkpoint", ckpt],
         "no such folder"),
        (["scan", music, "--library", tmp_path / "l2", "--checkpoint", bad_ckpt], "model.safetensors"),
        (["curve", music / "a.wav", "--transform", "pitch", "--checkpoint", bad_ckpt], "model.safetensors"),
        (["curve", tmp_path / "missing.wav", "--transform", "pitch", "--checkpoint", ckpt], "no such file"),
        (["info", "--library", tmp_path / "nothing"], "no library"),
        (["query", music / "a.wav", "--by", "key", "--library", tmp_path / "nothing"], "no library"),
        (["query", music / "a.wav", "--by", "colour", "--library", lib], "--by"),
        (["query", music / "a.wav", "--by", "key", "-k", "0", "--library", lib], "-k"),
    ]
    for argv, needle in cases:
        rc, _, err = run(capsys, *argv)
        _one_error_line(rc, err, needle)
    assert main(["scan", str(tmp_path / "empty"), "--library", str(tmp_path / "l3"),
                 "--checkpoint", str(ckpt)]) == 0
    capsys.readouterr()
    rc, _, err = run(capsys, "query", music / "a.wav", "--by", "key", "--library", tmp_path / "l3")
    _one_error_line(rc, err, "no tracks")


def test_python_dash_m_entry_point(tmp_path):
    out = subprocess.run([sys.executable, "-m", "engine.cli", "info", "--library",
                          str(tmp_path / "none")], cwd=REPO, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 1 and out.stderr.startswith("loev: error: no library")
