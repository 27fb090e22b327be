"""Queries by key, tempo and vibe on known-answer fixtures (fake embedder: chroma, IOIs)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from engine.errors import DecodeError, LibraryError
from engine.library.query import Searcher, query, query_blend, subspace_for
from engine.library.scan import scan
from tests.fixtures_audio import FakeEmbedder, make_collection, note_hz, tone, write

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("query")
    files = make_collection(root / "music")
    scan([root / "music"], library=root / "lib", embedder=FakeEmbedder())
    return root, {k: Path(os.path.realpath(v)) for k, v in files.items()}


def _names(result) -> list[str]:
    return [Path(n.path).name for n in result.neighbours]


def test_subspace_for_each_aspect():
    full = ("invariant", "pitch", "tempo")
    assert [subspace_for(b, full) for b in ("key", "tempo", "vibe")] == ["pitch", "tempo", "invariant"]
    assert {subspace_for(b, ("all",)) for b in ("key", "tempo", "vibe")} == {"all"}
    with pytest.raises(LibraryError, match="no tempo subspace"):
        subspace_for("tempo", ("invariant", "pitch"))


def test_by_key_finds_the_same_pitch_class_and_never_the_query(built):
    root, files = built
    (res,) = query([files["a4"]], by="key", k=3, library=root / "lib")
    assert res.query == str(files["a4"])
    assert _names(res)[0] == "A3 é.WAV"
    assert str(files["a4"]) not in [n.path for n in res.neighbours]
    assert len(res.neighbours) == 3
    d = [n.distance for n in res.neighbours]
    assert d == sorted(d) and all(x >= 0 for x in d)


def test_by_tempo_and_several_queries(built):
    root, files = built
    results = query([files["click120"], files["click90"]], by="tempo", k=2, library=root / "lib")
    assert [r.query for r in results] == [str(files["click120"]), str(files["click90"])]
    assert _names(results[0])[0] == "click120b.wav"
    assert "click90.wav" not in _names(results[1])


def test_k_larger_than_the_library_returns_every_other_track(built):
    root, files = built
    (res,) = query([files["c4"]], by="vibe", k=100, library=root / "lib")
    assert len(res.neighbours) == 8  # 9 good tracks minus the query


def test_outside_file_is_embedded_on_the_fly(built, tmp_path):
    root, files = built
    outside = write(tmp_path / "elsewhere.wav", tone(note_hz(57) * 4))  # an A
    emb = FakeEmbedder()
    (res,) = query([outside], by="key", k=2, library=root / "lib", embedder=emb)
    assert emb.calls == [os.path.realpath(outside)]
    assert set(_names(res)) == {"a4.wav", "A3 é.WAV"}


def test_indexed_query_does_not_embed(built):
    root, files = built
    emb = FakeEmbedder()
    query([files["e4"]], by="key", library=root / "lib", embedder=emb)
    assert emb.calls == []


def test_another_model_is_refused(built, tmp_path):
    root, _ = built
    outside = write(tmp_path / "x.wav", tone(300.0))
    with pytest.raises(LibraryError, match="was built with model"):
        query([outside], by="key", library=root / "lib", embedder=FakeEmbedder("other"))


def test_shift_transposes_the_query_first(built):
    pytest.importorskip("torch")
    root, files = built
    emb = FakeEmbedder()
    # A up 3 semitones is C: the C tones come first
    (res,) = query([files["a4"]], by="key", k=2, shift=3.0, library=root / "lib", embedder=emb)
    assert emb.calls == [] and set(_names(res)) == {"c4.flac", "c5.ogg"}
    (plain,) = query([files["a4"]], by="key", k=2, library=root / "lib")
    assert "c4.flac" not in _names(plain)


def test_missing_query_file_and_empty_library(built, tmp_path):
    root, _ = built
    with pytest.raises(DecodeError, match="no such file"):
        query([tmp_path / "nope.wav"], by="key", library=root / "lib")
    (tmp_path / "empty").mkdir()
    scan([tmp_path / "empty"], library=tmp_path / "lib", embedder=FakeEmbedder())
    with pytest.raises(LibraryError, match="no tracks"):
        query([root / "music" / "tones" / "a4.wav"], by="key", library=tmp_path / "lib")


def test_blend_of_one_aspect_matches_the_plain_query_and_mixes(built):
    root, files = built
    searcher = Searcher(root / "lib")
    plain = searcher.query(files["click120"], by="tempo", k=4)
    blend = searcher.query_blend(files["click120"], {"tempo": 1.0}, k=4)
    assert _names(blend)[0] == _names(plain)[0] == "click120b.wav"  # the rest are ties
    np.testing.assert_allclose([n.distance for n in blend.neighbours],
                               [n.distance for n in plain.neighbours], atol=1e-4)
    mixed = query_blend(files["a4"], {"key": 0.5, "vibe": 0.5}, library=root / "lib", k=3)
    assert "a4.wav" not in _names(mixed) and len(mixed.neighbours) == 3
    with pytest.raises(ValueError, match="at least one weight"):
        searcher.query_blend(files["a4"], {"key": 0.0})


def test_cli_query_of_an_indexed_track_does_not_import_torch(built):
    root, files = built
    code = (
        "import sys, json\n"
        "from engine.cli import main\n"
        f"rc = main(['query', {str(files['a4'])!r}, '--by', 'key', '-k', '2', '--library', "
        f"{str(root / 'lib')!r}, '--json'])\n"
        "assert rc == 0, rc\n"
        "mods = [m for m in sys.modules if m == 'torch' or m.startswith('torch.')]\n"
        "sys.stderr.write('TORCH=' + json.dumps(mods))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert "TORCH=[]" in out.stderr
    result = json.loads(out.stdout)
    assert [Path(n["path"]).name for n in result["results"][0]["neighbours"]][0] == "A3 é.WAV"
