"""Content hashes, favourites and collections: the schema migration and marks that follow
a file's content (torch-free fake embedder)."""
from __future__ import annotations

import os
import shutil
import sqlite3
from pathlib import Path

import pytest

from engine.errors import LibraryError
from engine.library.catalogue import MIGRATIONS, Library
from engine.library.scan import content_hash, scan
from tests.fixtures_audio import FakeEmbedder, note_hz, tone, write

DUMP = Path(__file__).parent / "data" / "catalogue_v2.sql"


def _v2_library(root: Path) -> Path:
    root.mkdir(parents=True)
    con = sqlite3.connect(root / "catalogue.sqlite")
    con.executescript(DUMP.read_text("utf-8"))
    con.close()
    return root


def test_migration_from_format_2_keeps_every_row(tmp_path):
    root = _v2_library(tmp_path / "lib")
    before = sqlite3.connect(root / "catalogue.sqlite")
    assert before.execute("PRAGMA user_version").fetchone()[0] == 2
    tracks = before.execute("SELECT id, path, size, mtime_ns, duration, status, error, "
                            "vec_seq FROM tracks ORDER BY id").fetchall()
    vecs = before.execute("SELECT * FROM vectors ORDER BY track_id").fetchall()
    problems = before.execute("SELECT * FROM problems").fetchall()
    catalogue_id = before.execute("SELECT value FROM meta WHERE key='catalogue_id'").fetchone()
    before.close()
    assert len(tracks) == 5 and len(vecs) == 3

    # A reader opening it before any scan sees its tracks and no marks.
    with Library(root, readonly=True) as lib:
        assert lib.schema_version == 2
        assert lib.favourites() == [] and lib.collections() == []
        assert len(lib.tracks()) == 4

    with Library(root) as lib:
        assert lib.schema_version == len(MIGRATIONS) >= 3
        assert all(t.content_hash is None for t in lib.tracks())
        assert all(t.estimate is None for t in lib.tracks())
    after = sqlite3.connect(root / "catalogue.sqlite")
    assert after.execute("SELECT id, path, size, mtime_ns, duration, status, error, vec_seq "
                         "FROM tracks ORDER BY id").fetchall() == tracks
    assert after.execute("SELECT * FROM vectors ORDER BY track_id").fetchall() == vecs
    assert after.execute("SELECT * FROM problems").fetchall() == problems
    assert after.execute(
        "SELECT value FROM meta WHERE key='catalogue_id'").fetchone() == catalogue_id
    tables = {r[0] for r in after.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"favourites", "collections", "collection_items"} <= tables


def test_a_library_scanned_before_hashes_gets_them_without_re_embedding(tmp_path):
    music = tmp_path / "music"
    a = write(music / "a.wav", tone(440.0))
    b = write(music / "b.wav", tone(note_hz(60)))
    scan([music], library=tmp_path / "lib", embedder=FakeEmbedder())
    con = sqlite3.connect(tmp_path / "lib" / "catalogue.sqlite")
    con.execute("UPDATE tracks SET content_hash = NULL")  # as migrated from format 2
    con.commit()
    con.close()
    emb = FakeEmbedder()
    report = scan([music], library=tmp_path / "lib", embedder=emb)
    assert emb.calls == [] and report.unchanged == 2
    with Library(tmp_path / "lib", readonly=True) as lib:
        hashes = {t.path: t.content_hash for t in lib.tracks()}
    assert hashes == {os.path.realpath(a): content_hash(str(a)),
                      os.path.realpath(b): content_hash(str(b))}


def test_star_and_collections_survive_a_rescan_and_a_move(tmp_path):
    music = tmp_path / "music"
    kick = write(music / "drums" / "kick.wav", tone(60.0, 1.0))
    pad = write(music / "pads" / "pad.wav", tone(note_hz(57), 3.0))
    other = write(music / "pads" / "other.wav", tone(note_hz(64), 3.0))
    lib_dir = tmp_path / "lib"
    scan([music], library=lib_dir, embedder=FakeEmbedder())
    with Library(lib_dir) as lib:
        lib.set_favourite(os.path.realpath(kick))
        lib.add_to_collection("warm pads", [os.path.realpath(pad)])
        lib.add_to_collection("set 1", [os.path.realpath(pad), os.path.realpath(kick)])

    scan([music], library=lib_dir, embedder=FakeEmbedder())  # nothing changed
    moved_kick = music / "moved" / "kick 2.wav"
    moved_kick.parent.mkdir()
    shutil.move(kick, moved_kick)
    shutil.move(pad, music / "pad renamed.wav")
    emb = FakeEmbedder()
    report = scan([music], library=lib_dir, embedder=emb)
    assert report.removed == 2 and report.added == 2
    assert emb.calls == []  # moved files keep their vectors: nothing embedded again
    with Library(lib_dir, readonly=True) as lib:
        assert lib.favourites() == [os.path.realpath(moved_kick)]
        assert lib.collections() == ["set 1", "warm pads"]
        assert lib.collection("warm pads") == [os.path.realpath(music / "pad renamed.wav")]
        assert lib.collection("set 1") == sorted([os.path.realpath(music / "pad renamed.wav"),
                                                  os.path.realpath(moved_kick)])
        assert os.path.realpath(other) not in lib.collection("set 1")
        moved = lib.track_by_path(os.path.realpath(moved_kick))
        assert moved.status == "ok" and moved.duration == pytest.approx(1.0)
        assert lib.vector(moved.id, "pitch") is not None


def test_a_file_edited_in_place_keeps_its_star(tmp_path):
    music = tmp_path / "music"
    a = write(music / "a.wav", tone(440.0))
    scan([music], library=tmp_path / "lib", embedder=FakeEmbedder())
    with Library(tmp_path / "lib") as lib:
        lib.set_favourite(os.path.realpath(a))
        lib.add_to_collection("c", [os.path.realpath(a)])
    write(a, 0.5 * tone(440.0, 2.5))
    os.utime(a, ns=(1, 10**18))
    scan([music], library=tmp_path / "lib", embedder=FakeEmbedder())
    with Library(tmp_path / "lib") as lib:
        assert lib.favourites() == [os.path.realpath(a)]
        assert lib.collection("c") == [os.path.realpath(a)]
        lib.set_favourite(os.path.realpath(a), on=False)
        assert lib.favourites() == []
        with pytest.raises(LibraryError, match="not in the library"):
            lib.set_favourite(str(tmp_path / "nowhere.wav"))
        with pytest.raises(LibraryError, match="no collection"):
            lib.collection("missing")
