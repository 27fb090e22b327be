"""Incremental, resumable scanning on generated folders (torch-free fake embedder)."""
from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from engine.errors import LibraryError
from engine.library.catalogue import Library
from engine.library.scan import scan, walk_audio
from engine.library.vectors import VectorIndex, read_manifest
from tests.fixtures_audio import (FakeEmbedder, clicks, make_collection, tiny_checkpoint_path,
                                  tone, write)

REPO = Path(__file__).resolve().parents[1]
GOOD = ("a4", "a3", "c4", "c5", "e4", "click120", "click120b", "click90", "unicode")
BAD = ("empty", "corrupt", "notaudio", "truncated")


@pytest.fixture
def collection(tmp_path):
    return make_collection(tmp_path / "music")


def _real(p: Path) -> str:
    return os.path.realpath(p)


def test_first_scan_records_good_and_bad_files(tmp_path, collection):
    emb = FakeEmbedder()
    report = scan([tmp_path / "music"], library=tmp_path / "lib", embedder=emb)
    assert report.found == len(GOOD) + len(BAD)  # readme.txt is not audio; .WAV is
    assert report.added == report.found and not report.cancelled
    failed = dict(report.failed)
    assert set(failed) == {_real(collection[n]) for n in BAD}
    assert failed[_real(collection["empty"])] == "empty file"
    assert "truncated" in failed[_real(collection["truncated"])]
    with Library(tmp_path / "lib") as lib:
        ok = {t.path for t in lib.tracks(status="ok")}
        assert ok == {_real(collection[n]) for n in GOOD}
        assert all(t.duration and t.duration > 1 for t in lib.tracks(status="ok"))
        assert {p for p, _ in lib.errors()} == set(failed)
    vi = VectorIndex(tmp_path / "lib")
    assert vi.model_id == "fake-model-1"
    assert {s: vi.count(s) for s in vi.subspaces} == {s: len(GOOD) for s in emb.dims}


def test_rescan_handles_unchanged_modified_deleted_added(tmp_path, collection):
    lib_dir = tmp_path / "lib"
    scan([tmp_path / "music"], library=lib_dir, embedder=FakeEmbedder())
    emb = FakeEmbedder()
    again = scan([tmp_path / "music"], library=lib_dir, embedder=emb)
    assert emb.calls == [] and again.unchanged == again.found
    gen = read_manifest(lib_dir)["generation"]
    assert again.added == again.updated == again.removed == 0

    write(collection["e4"], tone(300.0, 3.0))  # modified: size changes
    os.utime(collection["c4"], ns=(1, 1))  # modified: mtime only
    collection["a3"].unlink()  # deleted
    added = write(tmp_path / "music" / "new" / "g.aiff", tone(392.0))  # added
    emb = FakeEmbedder()
    report = scan([tmp_path / "music"], library=lib_dir, embedder=emb)
    assert sorted(emb.calls) == sorted(_real(p) for p in (collection["e4"], collection["c4"], added))
    assert (report.added, report.updated, report.removed) == (1, 2, 1)
    with Library(lib_dir) as lib:
        assert lib.track_by_path(_real(collection["a3"])).status == "deleted"
        ok = {t.path for t in lib.tracks(status="ok")}
    vi = VectorIndex(lib_dir)
    assert vi.manifest["generation"] == gen + 1
    assert vi.count("pitch") == len(ok) == len(GOOD)
    np.testing.assert_allclose(
        vi.vector("pitch", Library(lib_dir).track_by_path(_real(collection["e4"])).id),
        FakeEmbedder().embed_file(collection["e4"])["pitch"], atol=1e-6)


def test_walk_follows_links_but_not_loops_and_matches_extensions_in_any_case(tmp_path):
    root = tmp_path / "root"
    write(root / "a" / "one.WaV", tone(440.0, 0.5))
    write(root / "a" / "b" / "two.FLAC", tone(440.0, 0.5), format="FLAC")
    (root / "a" / "b" / "loop").symlink_to(root / "a", target_is_directory=True)
    (root / "self").symlink_to(root, target_is_directory=True)
    (root / "dangling.wav").symlink_to(root / "missing.wav")
    (root / "a" / "three.wav.txt").write_text("no")
    result = walk_audio([root])
    assert sorted(Path(p).name for p in result.files) == ["one.WaV", "two.FLAC"]
    assert result.problems == []


def test_unreadable_folder_is_recorded_and_its_files_kept(tmp_path, collection, monkeypatch):
    lib_dir = tmp_path / "lib"
    scan([tmp_path / "music"], library=lib_dir, embedder=FakeEmbedder())
    locked = tmp_path / "music" / "clicks"
    os.chmod(locked, 0)
    try:
        if os.access(locked, os.R_OK):  # root reads it anyway: make scandir refuse it
            real_scandir = os.scandir

            def scandir(path="."):
                if os.path.realpath(path) == os.path.realpath(locked):
                    raise PermissionError(13, "Permission denied", str(path))
                return real_scandir(path)

            monkeypatch.setattr(os, "scandir", scandir)
        report = scan([tmp_path / "music"], library=lib_dir, embedder=FakeEmbedder())
    finally:
        os.chmod(locked, 0o755)
    assert [p for p, _ in report.problems] == [str(locked)]
    assert "Permission denied" in report.problems[0][1]
    assert report.removed == 0  # its files are unknown this time, not gone
    with Library(lib_dir) as lib:
        assert [(p, r) for p, _k, r in lib.problems()] == report.problems
        assert lib.track_by_path(_real(collection["click90"])).status == "ok"
    write(tmp_path / "other" / "x.wav", tone(300.0, 0.5))
    scan([tmp_path / "other"], library=lib_dir, embedder=FakeEmbedder())  # another folder
    with Library(lib_dir) as lib:
        assert [p for p, _k, _r in lib.problems()] == [str(locked)]
    monkeypatch.undo()
    scan([tmp_path / "music"], library=lib_dir, embedder=FakeEmbedder())  # readable again
    with Library(lib_dir) as lib:
        assert lib.problems() == []


def test_checkpoint_change_reembeds_everything(tmp_path, collection):
    lib_dir = tmp_path / "lib"
    scan([tmp_path / "music"], library=lib_dir, embedder=FakeEmbedder("model-A"))

    class Other(FakeEmbedder):
        def embed_audio(self, y):
            return {k: -v for k, v in super().embed_audio(y).items()}

    emb = Other("model-B")
    report = scan([tmp_path / "music"], library=lib_dir, embedder=emb)
    assert report.reembedded and report.updated == len(GOOD) + len(BAD)
    assert len(emb.calls) == len(GOOD)  # bad files fail at the header, before embedding
    vi = VectorIndex(lib_dir)
    assert vi.model_id == "model-B"
    with Library(lib_dir) as lib:
        assert {t.model_id for t in lib.tracks(status="ok")} == {"model-B"}
        t = lib.track_by_path(_real(collection["a4"]))
    np.testing.assert_allclose(vi.vector("tempo", t.id),
                               emb.embed_file(collection["a4"])["tempo"], atol=1e-6)


def test_progress_and_cancel_then_resume(tmp_path, collection):
    lib_dir = tmp_path / "lib"
    cancel = threading.Event()
    seen: list[tuple[int, int, str | None]] = []

    def progress(done, total, path):
        seen.append((done, total, path))
        if done == 4:
            cancel.set()

    report = scan([tmp_path / "music"], library=lib_dir, embedder=FakeEmbedder(),
                  progress=progress, cancel=cancel, batch_size=3)
    total = len(GOOD) + len(BAD)
    assert report.cancelled and seen[0] == (0, total, None)
    assert [d for d, _, _ in seen[1:]] == [1, 2, 3, 4]
    with Library(lib_dir) as lib:
        assert len(lib.tracks()) == 4  # the partial batch was committed
    assert read_manifest(lib_dir) is not None  # and exported
    emb = FakeEmbedder()
    rest = scan([tmp_path / "music"], library=lib_dir, embedder=emb, cancel=lambda: False)
    assert len(emb.calls) == total - 4 and rest.unchanged == 4


def test_second_writer_fails_with_a_clear_error(tmp_path, collection):
    holder = Library(tmp_path / "lib", create=True)
    holder.acquire_write_lock()
    try:
        with pytest.raises(LibraryError, match="being written by another process"):
            scan([tmp_path / "music"], library=tmp_path / "lib", embedder=FakeEmbedder())
    finally:
        holder.close()


def test_a_bad_file_raising_anything_else_is_recorded(tmp_path, collection, monkeypatch):
    class Flaky(FakeEmbedder):
        def embed_file(self, path):
            if path.endswith("c4.flac"):
                raise RuntimeError("network exploded")
            return super().embed_file(path)

    report = scan([tmp_path / "music"], library=tmp_path / "lib", embedder=Flaky())
    assert dict(report.failed)[_real(collection["c4"])] == "RuntimeError: network exploded"


def test_missing_folder_is_an_error_before_anything_is_created(tmp_path):
    with pytest.raises(LibraryError, match="no such folder"):
        scan([tmp_path / "nope"], library=tmp_path / "lib", embedder=FakeEmbedder())
    assert not (tmp_path / "lib").exists()


KILL_SCRIPT = textwrap.dedent("""
    import sys
    sys.path.insert(0, {repo!r})
    from engine.library.scan import scan
    from tests.fixtures_audio import FakeEmbedder
    # No commit on the clock: a batch of three is the only commit, however slow the machine.
    scan([{music!r}], library={lib!r}, embedder=FakeEmbedder(delay=0.15), batch_size=3,
         commit_seconds=1e9)
""")


def test_scan_killed_with_sigkill_resumes_without_loss_or_duplicates(tmp_path):
    music = tmp_path / "music"
    for i in range(24):
        write(music / f"t{i:02d}.wav", clicks(60 + 5 * i, 1.0) + tone(200 + 10 * i, 1.0))
    lib_dir = tmp_path / "lib"
    code = KILL_SCRIPT.format(repo=str(REPO), music=str(music), lib=str(lib_dir))
    proc = subprocess.Popen([sys.executable, "-c", code])
    try:
        deadline = time.monotonic() + 60
        committed = 0
        while time.monotonic() < deadline and committed < 7:
            time.sleep(0.05)
            try:
                con = sqlite3.connect(lib_dir / "catalogue.sqlite", timeout=5)
                committed = con.execute("SELECT COUNT(*) FROM tracks").fetchone()[0]
                con.close()
            except sqlite3.OperationalError:
                committed = 0  # not created yet
        assert proc.poll() is None, "the scan finished before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
    with Library(lib_dir) as lib:
        done = {t.path for t in lib.tracks()}
    assert 7 <= len(done) < 24 and len(done) % 3 == 0  # whole batches only
    emb = FakeEmbedder()
    report = scan([music], library=lib_dir, embedder=emb)
    assert len(emb.calls) == 24 - len(done) and not set(emb.calls) & done
    assert report.unchanged == len(done)
    with Library(lib_dir) as lib:
        paths = [t.path for t in lib.tracks(status="ok")]
        n_vectors = lib._con.execute("SELECT COUNT(*) FROM vectors").fetchone()[0]
    assert sorted(paths) == sorted(_real(p) for p in music.iterdir()) and len(paths) == 24
    assert n_vectors == 24 * 3
    vi = VectorIndex(lib_dir)
    assert all(vi.count(s) == 24 for s in vi.subspaces)
    # labels and vectors line up after the resume: each label holds its own file's vector
    with Library(lib_dir) as lib:
        for t in lib.tracks(status="ok")[::4]:
            want = FakeEmbedder().embed_file(t.path)
            for s in vi.subspaces:
                np.testing.assert_allclose(vi.vector(s, t.id), want[s], atol=1e-6)
            _, dists = vi.search("pitch", want["pitch"], k=1)
            assert dists[0] < 1e-5


def test_no_change_rescan_reads_the_model_from_the_checkpoint_header(tmp_path):
    """A rescan that finds nothing new identifies the model from the checkpoint's header
    and never loads the network: torch stays out of the process."""
    from engine.model.embed import Embedder

    ckpt = tiny_checkpoint_path(tmp_path)
    music, lib = tmp_path / "music", tmp_path / "lib"
    write(music / "a.wav", tone(440.0, 1.0))
    write(music / "b.wav", clicks(120, 1.5))
    assert scan([music], library=lib, embedder=Embedder(ckpt)).added == 2
    code = ("import sys\n"
            "from engine.library.scan import scan\n"
            f"r = scan([{str(music)!r}], library={str(lib)!r}, checkpoint={str(ckpt)!r})\n"
            "print(r.found, r.unchanged, r.reembedded, 'torch' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)), timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["2", "2", "False", "False"]