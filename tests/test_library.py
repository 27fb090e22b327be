"""The catalogue (schema, transactions, write lock) and the vector stores / indexes."""
from __future__ import annotations

import sqlite3
import threading

import numpy as np
import pytest

from engine.library import vectors
from engine.errors import LibraryError
from engine.library.catalogue import MIGRATIONS, Library
from engine.library.vectors import VectorIndex, read_manifest

DIMS = {"invariant": 8, "pitch": 6}


def _bind(lib: Library, model_id: str = "m1") -> bool:
    return lib.set_model(model_id=model_id, checkpoint=None, config={"method": "x"},
                         subspaces=tuple(DIMS), dims=DIMS)


def _unit(rng: np.random.Generator, d: int) -> np.ndarray:
    v = rng.standard_normal(d).astype(np.float32)
    return v / np.linalg.norm(v)


def _add(lib: Library, path: str, rng: np.random.Generator) -> int:
    vecs = {s: _unit(rng, d) for s, d in DIMS.items()}
    return lib.record_track(path, size=1, mtime_ns=1, duration=1.0, status="ok", vectors=vecs)


def test_new_library_has_schema_wal_and_format(tmp_path):
    with pytest.raises(LibraryError, match="no library"):
        Library(tmp_path / "lib")
    with Library(tmp_path / "lib", create=True) as lib:
        assert lib.get_meta("format_version") == 1
    con = sqlite3.connect(tmp_path / "lib" / "catalogue.sqlite")
    assert con.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"meta", "tracks", "vectors", "problems"} <= tables


def test_newer_format_is_refused(tmp_path):
    Library(tmp_path, create=True).close()
    con = sqlite3.connect(tmp_path / "catalogue.sqlite")
    con.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    con.close()
    with pytest.raises(LibraryError, match="newer"):
        Library(tmp_path)


def test_transaction_rolls_back_everything(tmp_path):
    rng = np.random.default_rng(0)
    with Library(tmp_path, create=True) as lib:
        _bind(lib)
        with pytest.raises(RuntimeError):
            with lib.transaction():
                _add(lib, "/a.wav", rng)
                _add(lib, "/b.wav", rng)
                raise RuntimeError("boom")
        assert lib.tracks() == []
        assert lib.vector(1, "pitch") is None


def test_update_keeps_label_and_model_change_forgets_vectors(tmp_path, ):
    rng = np.random.default_rng(1)
    with Library(tmp_path, create=True) as lib:
        assert _bind(lib) is False
        a = _add(lib, "/a.wav", rng)
        assert _add(lib, "/a.wav", rng) == a  # changed file: same label
        b = _add(lib, "/b.wav", rng)
        lib.mark_deleted([b])
        assert [t.path for t in lib.tracks()] == ["/a.wav"]
        assert lib.track_by_path("/b.wav").status == "deleted"
        assert _bind(lib, "m1") is False
        assert _bind(lib, "m2") is True
        assert lib.counts()["pending"] == 1 and lib.counts()["deleted"] == 0
        assert lib.vector(a, "pitch") is None


def test_second_writer_fails_then_waits(tmp_path):
    first = Library(tmp_path, create=True)
    second = Library(tmp_path)
    first.acquire_write_lock()
    with pytest.raises(LibraryError, match="another process"):
        second.acquire_write_lock()
    released = threading.Event()

    def release() -> None:
        released.set()
        first.release_write_lock()

    threading.Timer(0.3, release).start()
    second.acquire_write_lock(timeout=30)
    assert released.is_set()  # it waited for the first writer instead of failing
    second.close()
    first.close()


def _brute(store: np.ndarray, q: np.ndarray, k: int) -> list[int]:
    ok = np.flatnonzero(np.any(store != 0, axis=1))
    d = 1 - store[ok] @ q
    return list(ok[np.argsort(d)[:k]])


def test_export_extends_and_matches_full_rebuild(tmp_path):
    rng = np.random.default_rng(2)
    with Library(tmp_path, create=True) as lib:
        _bind(lib)
        ids = [_add(lib, f"/t{i:03d}.wav", rng) for i in range(60)]
        first = vectors.export(lib)
        assert all(first.rebuilt.values())
        lib.mark_deleted(ids[:5])
        ids += [_add(lib, f"/n{i:03d}.wav", rng) for i in range(10)]
        _add(lib, "/t010.wav", rng)  # changed: new vector, same label
        second = vectors.export(lib)
        assert not any(second.rebuilt.values())
        assert second.generation == first.generation + 1
        vi = VectorIndex(tmp_path)
        assert vi.count("pitch") == 65
        store = np.asarray(vi.store("pitch"))
        assert not np.any(store[ids[:5]])
        np.testing.assert_allclose(store[ids[10]], lib.vector(ids[10], "pitch"))
        for q_id in (ids[10], ids[30], ids[-1]):
            exact, _ = vi.search("pitch", store[q_id], k=10)
            assert list(exact) == _brute(store, store[q_id], 10)
            labels, dists = vi.search("pitch", store[q_id], k=10, ef=64)  # the extended graph
            assert labels[0] == q_id and dists[0] < 1e-5
            assert not set(labels) & set(ids[:5])
            assert len(set(labels) & set(exact)) >= 9
        # the previous generation stays for readers that opened it; older ones go
        files = {p.name for p in (tmp_path / "vectors").iterdir()}
        assert f"pitch.g{first.generation}.npy" in files
        vectors.export(lib, full=True)
        files = {p.name for p in (tmp_path / "vectors").iterdir()}
        assert f"pitch.g{first.generation}.npy" not in files


def test_a_crash_during_export_leaves_the_previous_generation(tmp_path, monkeypatch):
    rng = np.random.default_rng(3)
    with Library(tmp_path, create=True) as lib:
        _bind(lib)
        for i in range(20):
            _add(lib, f"/t{i}.wav", rng)
        vectors.export(lib)
        before = read_manifest(tmp_path)
        _add(lib, "/late.wav", rng)

        def crash(*args, **kwargs):
            raise OSError("disk full")

        monkeypatch.setattr(vectors, "_save_npy", crash)
        with pytest.raises(LibraryError, match="disk full"):  # one line, not a traceback
            vectors.export(lib)
        assert read_manifest(tmp_path) == before
        assert not [p for p in (tmp_path / "vectors").iterdir() if ".tmp" in p.name]
        vi = VectorIndex(tmp_path)
        assert vi.count("invariant") == 20
        for ef in (None, 32):
            labels, _ = vi.search("invariant", vi.vector("invariant", 1), k=3, ef=ef)
            assert labels[0] == 1
        monkeypatch.undo()
        (tmp_path / "vectors" / ".pitch.g9.npy.tmp123").write_bytes(b"half")  # a kill -9
        vectors.export(lib)
        assert not [p for p in (tmp_path / "vectors").iterdir() if ".tmp" in p.name]
        assert VectorIndex(tmp_path).count("invariant") == 21


def test_reader_of_a_library_without_index(tmp_path):
    Library(tmp_path, create=True).close()
    with pytest.raises(LibraryError, match="no vector index"):
        VectorIndex(tmp_path)
