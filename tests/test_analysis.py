"""Key, BPM and type estimates in the library, `loev analyze` and "find compatible keys",
with a fake embedder and fake heads whose answers are known (torch-free)."""
from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from engine import cli, keys
from engine.errors import LibraryError
from engine.library import estimates
from engine.library.catalogue import MIGRATIONS, Library
from engine.library.scan import scan
from engine.model.heads import Estimate
from engine.session import Session
from tests.fixtures_audio import SR, FakeEmbedder, clicks, note_hz, tone, write

DATA = Path(__file__).parent / "data"
A = 9  # pitch class of A: the fake embedder's chroma bin 0 is A


class FakeHeads:
    """Known answers from the fake embedder's vectors: the key is the strongest chroma bin
    (minor when the minor third above it is strong too), "no key" and a tempo when the
    tempo histogram has onsets past its first bin, the type from the same."""

    def __init__(self, heads_id: str = "fake-heads-1") -> None:
        self.heads_id = heads_id
        self.rows = 0  # rows predicted, all calls together

    def predict(self, vectors: dict[str, np.ndarray]) -> list[Estimate]:
        pitch = vectors.get("pitch", next(iter(vectors.values())))
        tempo = vectors.get("tempo")
        self.rows += len(pitch)
        out = []
        for i, chroma in enumerate(pitch):
            bins = None if tempo is None else tempo[i][1:]
            beat = bins is not None and float(bins.max()) > 0.01
            bin_ = int(np.argmax(chroma))
            pc = (bin_ + A) % 12
            minor = chroma[(bin_ + 3) % len(chroma)] > 0.3 * chroma[bin_]
            key = None if beat else keys.make_key(pc, "minor" if minor else "major")
            bpm = 60.0 / (0.1 * (int(np.argmax(bins)) + 1) + 0.05) if beat else None
            out.append(Estimate(key, float(chroma.max()), bpm, 0.4 if beat else 0.9,
                                "drum_loop" if beat else "keys", 0.75))
        return out


def chord(root_midi: int, minor: bool, seconds: float = 2.0) -> np.ndarray:
    third = note_hz(root_midi + (3 if minor else 4))
    return (tone(note_hz(root_midi), seconds) + 0.8 * tone(third, seconds)
            + 0.3 * tone(note_hz(root_midi + 7), seconds)) / 2


@pytest.fixture
def heads(monkeypatch):
    """Every checkpoint file holds the fake embedder's model and these fake heads."""
    box = {"heads": FakeHeads(), "model_id": "fake-model-1"}
    monkeypatch.setattr(estimates, "load_heads", lambda checkpoint: box["heads"])
    monkeypatch.setattr(estimates, "checkpoint_model_id", lambda checkpoint: box["model_id"])
    return box


def embedder(tmp_path: Path) -> FakeEmbedder:
    """A fake embedder with a checkpoint file on disk (where the heads are looked for)."""
    ckpt = tmp_path / "fake.safetensors"
    ckpt.write_bytes(b"fake")
    emb = FakeEmbedder()
    emb.checkpoint_path = str(ckpt)
    return emb


def music(root: Path) -> dict[str, Path]:
    return {
        "a4": write(root / "a4.wav", tone(440.0)),
        "c4": write(root / "c4.wav", tone(note_hz(60))),
        "e4": write(root / "e4.wav", tone(note_hz(64))),
        "fsm": write(root / "f# minor.wav", chord(66, minor=True)),
        "click": write(root / "click120.wav", clicks(120)),
        "bad": write(root / "bad.wav", np.zeros(0, dtype=np.float32)),
    }


def _real(p: Path) -> str:
    return os.path.realpath(p)


def stored_estimates(lib_dir: Path) -> dict[str, tuple[Estimate | None, str | None]]:
    with Library(lib_dir, readonly=True) as lib:
        return {t.path: (t.estimate, t.heads_id) for t in lib.tracks(status="ok")}


def expected_estimates(lib_dir: Path) -> dict[str, Estimate]:
    """What fresh fake heads say about the stored vectors."""
    with Library(lib_dir, readonly=True) as lib:
        tracks = lib.tracks(status="ok")
        labels, vecs = lib.vectors_of([t.id for t in tracks])
        by_id = {t.id: t.path for t in tracks}
    return {by_id[i]: e for i, e in zip(labels, FakeHeads().predict(vecs))}


# -- the catalogue ---------------------------------------------------------------------


def test_estimates_are_stored_with_each_scanned_batch(tmp_path, heads, monkeypatch):
    files = music(tmp_path / "music")
    # No backfill: every estimate must come with its batch's commit.
    monkeypatch.setattr(estimates, "backfill", lambda *a, **kw: 0)
    report = scan([tmp_path / "music"], library=tmp_path / "lib", embedder=embedder(tmp_path),
                  batch_size=2)
    got = stored_estimates(tmp_path / "lib")
    assert len(got) == 5 and report.estimated == 5
    # Each file was read once by the heads, with its batch, not again afterwards.
    assert heads["heads"].rows == 5
    assert {p: e for p, (e, _) in got.items()} == expected_estimates(tmp_path / "lib")
    assert {h for _, h in got.values()} == {"fake-heads-1"}
    assert got[_real(files["a4"])][0].key == keys.parse_key("A major")
    assert got[_real(files["fsm"])][0].key == keys.parse_key("F# minor")
    click = got[_real(files["click"])][0]
    assert click.key is None and click.bpm is not None
    with Library(tmp_path / "lib", readonly=True) as lib:
        assert lib.track_by_path(_real(files["bad"])).estimate is None
        assert lib.estimate_counts() == {"estimated": 5, "key": 4, "tempo": 1}


def test_a_library_scanned_without_heads_is_estimated_without_embedding(tmp_path, heads):
    music(tmp_path / "music")
    heads["heads"] = None  # a checkpoint without heads: nothing estimated, nothing fails
    report = scan([tmp_path / "music"], library=tmp_path / "lib", embedder=embedder(tmp_path))
    assert report.estimated == 0 and report.added == 6
    assert all(e is None for e, _ in stored_estimates(tmp_path / "lib").values())

    heads["heads"] = FakeHeads()
    emb = FakeEmbedder()  # analyze reads a track's stored vectors, embeds nothing
    rows = Session(tmp_path / "lib", embedder=emb).analyze([tmp_path / "music" / "a4.wav"])
    assert emb.calls == [] and rows[0]["key"] == "A major"
    emb = embedder(tmp_path)
    report = scan([tmp_path / "music"], library=tmp_path / "lib", embedder=emb)
    assert emb.calls == [] and report.unchanged == 6 and report.estimated == 5
    assert ({p: e for p, (e, _) in stored_estimates(tmp_path / "lib").items()}
            == expected_estimates(tmp_path / "lib"))


def test_session_backfills_on_first_estimates_call_and_new_heads_recompute(tmp_path, heads):
    music(tmp_path / "music")
    heads["heads"] = None
    scan([tmp_path / "music"], library=tmp_path / "lib", embedder=embedder(tmp_path))
    heads["heads"] = FakeHeads("heads-A")
    emb = FakeEmbedder()
    session = Session(tmp_path / "lib", embedder=emb)
    found = session.estimates()
    assert emb.calls == [] and found == expected_estimates(tmp_path / "lib")
    assert {h for _, h in stored_estimates(tmp_path / "lib").values()} == {"heads-A"}
    assert session.estimates() == found and heads["heads"].rows == 5  # stored: not again

    heads["heads"] = FakeHeads("heads-B")  # the checkpoint's heads were trained again
    assert Session(tmp_path / "lib", embedder=emb).estimates() == found
    assert heads["heads"].rows == 5 and emb.calls == []
    assert {h for _, h in stored_estimates(tmp_path / "lib").values()} == {"heads-B"}


def test_a_library_that_cannot_be_written_gets_estimates_for_the_answer(tmp_path, heads):
    music(tmp_path / "music")
    heads["heads"] = None
    scan([tmp_path / "music"], library=tmp_path / "lib", embedder=embedder(tmp_path))
    heads["heads"] = FakeHeads()
    with Library(tmp_path / "lib") as writer:
        writer.acquire_write_lock()  # a scan is running in another process
        found = Session(tmp_path / "lib", embedder=FakeEmbedder()).estimates()
    assert found == expected_estimates(tmp_path / "lib")
    assert all(e is None for e, _ in stored_estimates(tmp_path / "lib").values())


def test_a_changed_file_gets_a_new_estimate_and_a_reset_drops_it(tmp_path, heads):
    files = music(tmp_path / "music")
    scan([tmp_path / "music"], library=tmp_path / "lib", embedder=embedder(tmp_path))
    assert stored_estimates(tmp_path / "lib")[_real(files["a4"])][0].key == keys.parse_key("A major")
    write(files["a4"], tone(note_hz(62), 2.5))  # now a D
    os.utime(files["a4"], ns=(1, 10**18))
    scan([tmp_path / "music"], library=tmp_path / "lib", embedder=embedder(tmp_path))
    assert stored_estimates(tmp_path / "lib")[_real(files["a4"])][0].key == keys.parse_key("D major")

    with Library(tmp_path / "lib") as lib:
        track = lib.track_by_path(_real(files["c4"]))
        lib.mark_pending([track.id])
        assert lib.track_by_path(_real(files["c4"])).estimate is None
        assert lib.estimate_counts()["estimated"] == 4
        lib.set_model(model_id="another", checkpoint=None, config={}, subspaces=("pitch",),
                      dims={"pitch": 12})
        assert lib.estimate_counts()["estimated"] == 0


def test_heads_of_a_checkpoint_now_holding_another_model_are_not_used(tmp_path, heads):
    music(tmp_path / "music")
    scan([tmp_path / "music"], library=tmp_path / "lib", embedder=embedder(tmp_path))
    con = sqlite3.connect(tmp_path / "lib" / "catalogue.sqlite")
    con.execute("UPDATE tracks SET heads_id = NULL")  # as before the heads existed
    con.commit()
    con.close()
    # An upgrade replaced the checkpoint file with another model (and its heads).
    heads["model_id"], heads["heads"] = "the-upgraded-model", FakeHeads("new-heads")
    assert Session(tmp_path / "lib", embedder=FakeEmbedder()).estimates() == {}
    assert heads["heads"].rows == 0
    heads["model_id"] = "fake-model-1"
    assert len(Session(tmp_path / "lib", embedder=FakeEmbedder()).estimates()) == 5


def _library_from(dump: Path, root: Path) -> Path:
    root.mkdir(parents=True)
    con = sqlite3.connect(root / "catalogue.sqlite")
    con.executescript(dump.read_text("utf-8"))
    con.close()
    return root


@pytest.mark.parametrize("version", [2, 3])
def test_migration_to_estimates_keeps_every_row(tmp_path, version):
    root = _library_from(DATA / f"catalogue_v{version}.sql", tmp_path / "lib")
    before = sqlite3.connect(root / "catalogue.sqlite")
    tracks = before.execute("SELECT id, path, size, mtime_ns, duration, status, error, "
                            "vec_seq FROM tracks ORDER BY id").fetchall()
    vecs = before.execute("SELECT * FROM vectors ORDER BY track_id").fetchall()
    before.close()
    with Library(root, readonly=True) as lib:  # a reader before any scan: no estimates
        assert lib.schema_version == version and lib.estimates() == {}
        assert lib.unestimated("h") == [1, 3, 4]
    with Library(root) as lib:
        assert lib.schema_version == len(MIGRATIONS) == 4
        assert all(t.estimate is None and t.heads_id is None for t in lib.tracks())
        if version == 3:
            assert lib.favourites() == ["/music/kick.wav"]
            assert lib.collection("warm pads") == ["/music/pad é.flac"]
        fake = FakeHeads()
        assert estimates.backfill(lib, fake, batch=2) == 3 and fake.rows == 3
        assert lib.unestimated(fake.heads_id) == []
        got = {t.id: t.estimate for t in lib.tracks(status="ok")}
        labels, stacked = lib.vectors_of([1, 3, 4])
        assert labels == [1, 3, 4] and got == dict(zip(labels, FakeHeads().predict(stacked)))
    after = sqlite3.connect(root / "catalogue.sqlite")
    assert after.execute("SELECT id, path, size, mtime_ns, duration, status, error, vec_seq "
                         "FROM tracks ORDER BY id").fetchall() == tracks
    assert after.execute("SELECT * FROM vectors ORDER BY track_id").fetchall() == vecs


# -- analyze ---------------------------------------------------------------------------


@pytest.fixture
def library(tmp_path, heads):
    files = music(tmp_path / "music")
    scan([tmp_path / "music"], library=tmp_path / "lib", embedder=embedder(tmp_path))
    return tmp_path / "lib", files


def run(monkeypatch, capsys, emb, *argv):
    monkeypatch.setattr(cli, "Session", lambda library=None, *a, **kw: Session(
        library, embedder=emb))
    rc = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


FIELDS = ["path", "key", "camelot", "key_confidence", "bpm", "bpm_confidence", "type",
          "type_confidence"]


def test_analyze_json_contract_inside_and_outside_the_library(library, tmp_path, monkeypatch,
                                                              capsys):
    lib, files = library
    outside = write(tmp_path / "elsewhere" / "g minor.wav", chord(67, minor=True))
    emb = FakeEmbedder()
    rc, out, err = run(monkeypatch, capsys, emb, "analyze", files["a4"], outside,
                       files["click"], "--library", lib, "--json")
    assert rc == 0 and err == ""
    rows = json.loads(out)["results"]
    assert [list(r) for r in rows] == [FIELDS] * 3
    assert [r["path"] for r in rows] == [_real(files["a4"]), _real(outside), _real(files["click"])]
    assert (rows[0]["key"], rows[0]["camelot"]) == ("A major", "11B")
    assert (rows[1]["key"], rows[1]["camelot"]) == ("G minor", "6A")
    assert rows[2]["key"] is None and rows[2]["camelot"] is None and rows[2]["bpm"] > 0
    assert rows[0]["bpm"] is None and rows[0]["type"] == "keys"
    assert emb.calls == [_real(outside)]  # library tracks answer from the catalogue


def test_analyze_reports_each_unreadable_file_on_one_line_and_goes_on(library, tmp_path,
                                                                      monkeypatch, capsys):
    lib, files = library
    missing = tmp_path / "no such\x1b[2J file.wav"
    rc, out, err = run(monkeypatch, capsys, FakeEmbedder(), "analyze", files["a4"], missing,
                       files["bad"], files["click"], "--library", lib)
    assert rc == 1
    errors = err.splitlines()
    assert len(errors) == 2 and all(line.startswith("loev: error: ") for line in errors)
    assert "no such\\x1b[2J file.wav: no such file" in errors[0] and "\x1b" not in err
    assert "bad.wav" in errors[1]
    lines = out.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith(_real(files["a4"]) + ":") and "A major (11B)" in lines[0]
    assert "no tempo" in lines[0] and "no key" in lines[1] and "BPM" in lines[1]
    assert "BPM? 40%" in lines[1]  # a low confidence is marked, never hidden
    assert lines[0].endswith("A major (11B) 100%, no tempo 90%, keys 75%")


def test_analyze_without_heads_is_one_clear_error(library, monkeypatch, capsys, heads):
    lib, files = library
    heads["heads"] = None
    rc, out, err = run(monkeypatch, capsys, FakeEmbedder(), "analyze", files["a4"],
                       "--library", lib)
    assert rc == 1 and out == ""
    assert err.count("\n") == 1 and "no key/BPM/type heads" in err


def test_info_counts_estimates(library, monkeypatch, capsys):
    lib, _ = library
    rc, out, _ = run(monkeypatch, capsys, None, "info", "--library", lib, "--json")
    assert rc == 0 and json.loads(out)["estimates"] == {"estimated": 5, "key": 4, "tempo": 1}


# -- compatible keys -------------------------------------------------------------------


def test_compatible_lists_only_camelot_neighbours_nearest_in_pitch_first(tmp_path, heads):
    root = tmp_path / "music"
    write(root / "a4.wav", tone(440.0))
    same = write(root / "a3.wav", tone(220.0, 3.0))                 # A major: same key
    fifth_up = write(root / "e4.wav", tone(note_hz(64)))            # E major: 12B
    fifth_down = write(root / "d4.wav", chord(62, minor=False))     # D major: 10B
    relative = write(root / "f# minor.wav", chord(66, minor=True))  # F# minor: 11A
    write(root / "c4.wav", tone(note_hz(60)))                       # C major: 8B, no
    write(root / "b minor.wav", chord(71, minor=True))              # B minor: 10A, no
    write(root / "click.wav", clicks(120))                          # no key
    copy = root / "copy of a4.wav"
    copy.write_bytes((root / "a4.wav").read_bytes())                # an exact copy: left out
    scan([root], library=tmp_path / "lib", embedder=embedder(tmp_path))
    session = Session(tmp_path / "lib", embedder=FakeEmbedder())

    result = session.compatible(root / "a4.wav", k=10)
    wanted = {_real(p) for p in (same, fifth_up, fifth_down, relative)}
    assert result.query == _real(root / "a4.wav")
    assert {n.path for n in result.neighbours} == wanted
    emb = FakeEmbedder()
    q = emb.embed_file(str(root / "a4.wav"))["pitch"]
    truth = sorted((1.0 - float(emb.embed_file(p)["pitch"] @ q), p) for p in wanted)
    assert [n.path for n in result.neighbours] == [p for _, p in truth]
    assert [n.distance for n in result.neighbours] == pytest.approx([d for d, _ in truth],
                                                                    abs=1e-5)
    assert len(session.compatible(root / "a4.wav", k=2).neighbours) == 2

    # A query outside the library is estimated on the fly.
    outside = write(tmp_path / "out" / "e.wav", tone(note_hz(76)))  # E major
    found = {n.path for n in session.compatible(outside).neighbours}
    assert found == {_real(p) for p in (fifth_up, same, root / "a4.wav", copy)}
    with pytest.raises(LibraryError, match="no key"):
        session.compatible(root / "click.wav")


def test_analyze_without_a_library_uses_the_sessions_model_and_creates_nothing(tmp_path,
                                                                               heads):
    a = write(tmp_path / "a.wav", tone(440.0))
    emb = FakeEmbedder()
    rows = Session(tmp_path / "no library", embedder=emb).analyze([a, tmp_path / "gone.wav"])
    assert rows[0] == {"path": _real(a), **FakeHeads().predict(
        {k: v[None] for k, v in FakeEmbedder().embed_file(str(a)).items()})[0].to_dict()}
    assert rows[1] == {"path": str(tmp_path / "gone.wav"), "error": "no such file"}
    assert emb.calls == [_real(a)] and not (tmp_path / "no library").exists()


def test_heads_that_do_not_fit_cost_the_estimates_not_the_scan(tmp_path, heads):
    class Misfit(FakeHeads):
        def predict(self, vectors):
            raise ValueError("the key head reads [N, 216], got [N, 12]")

    music(tmp_path / "music")
    heads["heads"] = Misfit()
    report = scan([tmp_path / "music"], library=tmp_path / "lib", embedder=embedder(tmp_path))
    assert report.added == 6 and report.estimated == 0 and len(report.failed) == 1
    assert [r for _, r in report.problems] == [
        "the key/BPM/type heads do not fit the library's vectors (ValueError: the key head "
        "reads [N, 216], got [N, 12])"]
    with Library(tmp_path / "lib", readonly=True) as lib:
        assert lib.counts()["ok"] == 5 and lib.estimate_counts()["estimated"] == 0


def test_compatible_keys_while_a_scan_holds_the_library(tmp_path, heads):
    """Estimates that cannot be stored now are computed for the answer."""
    root = tmp_path / "music"
    write(root / "a4.wav", tone(440.0))
    e4 = write(root / "e4.wav", tone(note_hz(64)))
    write(root / "c4.wav", tone(note_hz(60)))
    heads["heads"] = None
    scan([root], library=tmp_path / "lib", embedder=embedder(tmp_path))
    heads["heads"] = FakeHeads()
    with Library(tmp_path / "lib") as writer:
        writer.acquire_write_lock()
        result = Session(tmp_path / "lib", embedder=FakeEmbedder()).compatible(root / "a4.wav")
    assert [n.path for n in result.neighbours] == [_real(e4)]
    assert all(e is None for e, _ in stored_estimates(tmp_path / "lib").values())
