"""Duplicate groups (exact and near), the query's exact copies, ``loev duplicates``."""
from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
import soxr

from engine.cli import main
from engine.library.duplicates import duplicates, near_pairs
from engine.library.query import Searcher
from engine.library.scan import scan
from engine.session import Session
from tests.fixtures_audio import SR, FakeEmbedder, clicks, note_hz, tone, write


class SpectrumEmbedder(FakeEmbedder):
    """FakeEmbedder whose vibe vector is a level-free log spectrum in 32 bands: the same
    sound at another level, rate or encoding lands on it, another sound does not."""

    dims = {**FakeEmbedder.dims, "invariant": 32}

    def embed_audio(self, y: np.ndarray) -> dict[str, np.ndarray]:
        out = super().embed_audio(y)
        y = np.asarray(y, dtype=np.float32)
        y = y / (np.abs(y).max() + 1e-9)
        spec = np.abs(np.fft.rfft(y[: 4 * SR], n=8192)) ** 2
        edges = np.unique(np.geomspace(8, len(spec) - 1, 33).astype(int))
        bands = np.add.reduceat(spec, edges)[:32]
        v = np.log10(bands + 1e-3 * bands.max())
        v = np.resize(v - v.mean(), 32).astype(np.float32)
        out["invariant"] = v / np.linalg.norm(v)
        return out


class PitchBlindEmbedder(SpectrumEmbedder):
    """A vibe space that puts every sound at the same point: only the duration rule and
    the fingerprint can keep different sounds apart."""

    def embed_audio(self, y: np.ndarray) -> dict[str, np.ndarray]:
        out = super().embed_audio(y)
        out["invariant"] = np.full(32, 32 ** -0.5, dtype=np.float32)
        return out


@pytest.fixture(params=[SpectrumEmbedder, PitchBlindEmbedder])
def planted(tmp_path, request):
    m = tmp_path / "music"
    y = tone(440.0, 2.0)
    files = {
        "a4": write(m / "a4.wav", y),
        "c4": write(m / "c4.wav", tone(note_hz(60), 2.0)),
        "e4": write(m / "e4.wav", tone(note_hz(64), 2.0)),
        "click": write(m / "click120.wav", clicks(120)),
        "a4_long": write(m / "a4 long.wav", tone(440.0, 6.0)),  # same sound, 3x longer
        "quiet": write(m / "copies" / "a4 -6dB.wav", 0.5 * y),
        "flac44": write(m / "copies" / "a4 44k.flac", soxr.resample(y, SR, 44100), sr=44100),
    }
    files["exact"] = m / "copies" / "a4 copy.wav"
    shutil.copyfile(files["a4"], files["exact"])
    files["click_copy"] = m / "other" / "click120 (1).wav"
    files["click_copy"].parent.mkdir()
    shutil.copyfile(files["click"], files["click_copy"])
    scan([m], library=tmp_path / "lib", embedder=request.param())
    return {k: os.path.realpath(v) for k, v in files.items()}


def test_planted_exact_and_near_copies_group_and_distinct_files_do_not(tmp_path, planted):
    groups = [g.to_dict() for g in duplicates(tmp_path / "lib")]
    f = planted
    assert groups == [
        {"kind": "exact", "paths": sorted([f["a4"], f["exact"]])},
        {"kind": "exact", "paths": sorted([f["click"], f["click_copy"]])},
        {"kind": "near", "paths": sorted([f["a4"], f["exact"], f["quiet"], f["flac44"]])},
    ]


def test_near_pairs_needs_both_closeness_and_similar_duration():
    x = np.eye(3, dtype=np.float32)
    x[1] = x[0]
    assert near_pairs(x, np.array([2.0, 2.05, 2.0])) == [(0, 1)]
    assert near_pairs(x, np.array([2.0, 3.0, 2.0])) == []


def test_the_querys_exact_copies_are_not_its_neighbours(tmp_path, planted):
    searcher = Searcher(tmp_path / "lib", embedder=SpectrumEmbedder())
    found = [n.path for n in searcher.query(planted["a4"], by="vibe", k=20).neighbours]
    assert planted["exact"] not in found
    assert planted["quiet"] in found  # a near copy is still a neighbour
    outside = tmp_path / "outside.wav"
    shutil.copyfile(planted["a4"], outside)
    found = [n.path for n in searcher.query(outside, by="vibe", k=20).neighbours]
    assert planted["a4"] not in found and planted["exact"] not in found
    blend = searcher.query_blend(planted["click"], {"vibe": 1.0, "tempo": 1.0}, k=3)
    assert planted["click_copy"] not in [n.path for n in blend.neighbours]
    assert len(blend.neighbours) == 3


def test_loev_duplicates_json(tmp_path, planted, capsys):
    assert main(["duplicates", "--library", str(tmp_path / "lib"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [g["kind"] for g in out["groups"]] == ["exact", "exact", "near"]
    assert main(["duplicates", "--library", str(tmp_path / "nolib")]) == 1
    assert "loev: error: no library" in capsys.readouterr().err


def test_trash_moves_the_file_to_the_trash_and_forgets_it(tmp_path, planted, monkeypatch):
    trashed = []
    monkeypatch.setattr("send2trash.send2trash", lambda p: trashed.append(p) or os.remove(p))
    session = Session(tmp_path / "lib")
    assert session.trash([planted["exact"]]) == [planted["exact"]]
    assert trashed == [planted["exact"]]
    groups = [g.to_dict() for g in session.duplicates()]
    assert {"kind": "exact", "paths": sorted([planted["a4"], planted["exact"]])} not in groups
