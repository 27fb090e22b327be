"""Fault injection: damaged derived files, catalogues and manifests; broken and hostile
checkpoints; hostile names; a full disk. Each fault must cost nothing but a clear message:
no traceback, no segfault, no lost or stale vectors (run alone with ``-m faults``).

The library faults use the torch-free fake embedder; the checkpoint faults rewrite the
header of a tiny random checkpoint. A crash that could take the test process down (an
index handed to hnswlib) runs in a subprocess.
"""
from __future__ import annotations

import errno
import json
import os
import shutil
import sqlite3
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from engine.errors import CheckpointError, DecodeError, LibraryError, LoevError
from engine.library.catalogue import Library
from engine.library.scan import scan
from engine.library.vectors import VectorIndex, read_manifest
from tests.fixtures_audio import FakeEmbedder, clicks, tone, tiny_checkpoint_path, write

pytestmark = pytest.mark.faults

REPO = Path(__file__).resolve().parents[1]


# -- helpers ----------------------------------------------------------------------------


def _music(root: Path) -> dict[str, Path]:
    return {
        "a4": write(root / "a4.wav", tone(440.0)),
        "c4": write(root / "c4.wav", tone(261.63)),
        "e4": write(root / "e4.flac", tone(329.63)),
        "click": write(root / "click120.wav", clicks(120, 3.0)),
    }


@pytest.fixture
def lib_dir(tmp_path):
    """A library of four good files, scanned with the fake embedder."""
    _music(tmp_path / "music")
    lib = tmp_path / "lib"
    scan([tmp_path / "music"], library=lib, embedder=FakeEmbedder())
    return lib


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return tiny_checkpoint_path(tmp_path_factory.mktemp("faults-ckpt"))


def _cli(argv: list[str], capsys) -> tuple[int, str, str]:
    from engine.cli import main

    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def _one_line_error(rc: int, err: str) -> str:
    assert rc != 0
    lines = err.strip("\n").split("\n")
    assert len(lines) == 1 and lines[0].startswith("loev: error: "), err
    assert "Traceback" not in err
    return lines[0]


def _store_matches_catalogue(lib_dir: Path) -> None:
    """Every stored row is the catalogue's vector of that label, and nothing else."""
    vi = VectorIndex(lib_dir)
    with Library(lib_dir) as lib:
        ok = {t.id for t in lib.tracks(status="ok")}
        for s in vi.subspaces:
            store = np.asarray(vi.store(s))
            present = {int(i) for i in np.flatnonzero(np.any(store != 0, axis=1))}
            assert present == ok
            for tid in ok:
                np.testing.assert_array_equal(store[tid], lib.vector(tid, s))


def _vector_files(lib_dir: Path, kind: str) -> list[Path]:
    m = read_manifest(lib_dir)
    return [lib_dir / "vectors" / e[kind] for e in m["subspaces"].values()]


def _run_py(code: str, *, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env,
                          capture_output=True, text=True, timeout=timeout)


def _read_safetensors(path: Path) -> tuple[dict, bytes]:
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8:8 + n]), raw[8 + n:]


def _write_safetensors(path: Path, header: dict | bytes, data: bytes) -> Path:
    blob = header if isinstance(header, bytes) else json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(blob)) + blob + data)
    return path


def _hostile(ckpt: Path, out: Path, mutate) -> Path:
    """A copy of ``ckpt`` whose header (tensors and metadata) ``mutate`` rewrote in place."""
    header, data = _read_safetensors(ckpt)
    meta = header["__metadata__"]
    cfg, dims = json.loads(meta["loev_config"]), json.loads(meta["loev_dims"])
    before = dict(meta)
    result = mutate(header, cfg, dims)
    if result is not None:
        header, data = result
    else:  # fields the mutation did not set itself are rewritten from cfg and dims
        if meta["loev_config"] == before["loev_config"]:
            meta["loev_config"] = json.dumps(cfg)
        if meta["loev_dims"] == before["loev_dims"]:
            meta["loev_dims"] = json.dumps(dims)
    return _write_safetensors(out, header, data)


# -- 1. hostile names ------------------------------------------------------------------


def test_non_utf8_name_is_scanned_shown_and_returned_beside_good_files(tmp_path, ckpt, capsys):
    music = tmp_path / "music"
    files = _music(music)
    bad = os.path.join(os.fsencode(music), b"caf\xe9 \xff.wav")
    os.rename(write(music / "tmp.wav", tone(392.0)), bad)  # soundfile cannot write it
    lib = tmp_path / "lib"
    rc, out, err = _cli(["scan", music, "--library", lib, "--checkpoint", ckpt], capsys)
    assert rc == 0, err
    out.encode("utf-8")  # printable on a UTF-8 terminal: no lone surrogates
    assert "5 added" in out
    with Library(lib) as l:
        paths = {t.path for t in l.tracks(status="ok")}
    name = os.path.realpath(os.fsdecode(bad))
    assert name in paths and len(paths) == 5
    rc, out, err = _cli(["query", files["a4"], "--by", "key", "--library", lib, "--json"], capsys)
    assert rc == 0, err
    returned = [n["path"] for n in json.loads(out)["results"][0]["neighbours"]]
    assert name in returned and os.path.exists(name)  # the JSON path opens the file
    rc, out, err = _cli(["query", files["a4"], "--by", "key", "--library", lib], capsys)
    assert rc == 0 and "caf\\xe9 \\xff.wav" in out
    out.encode("utf-8")


def test_control_characters_in_names_and_metadata_are_escaped(tmp_path, capsys):
    music = tmp_path / "music"
    _music(music)
    evil = music / "x\x1b[2K\rskipped everything\n.wav"
    evil.write_bytes(b"not audio at all")
    emb = FakeEmbedder()
    emb.config = {"method": "fake", "profile": {"name": "\x1b]0;pwned\x07tiny"}}
    lib = tmp_path / "lib"
    scan([music], library=lib, embedder=emb)
    rc, out, err = _cli(["info", "--library", lib], capsys)
    assert rc == 0
    assert "\x1b" not in out and "\x07" not in out and "\r" not in out
    assert "\\x1b]0;pwned\\x07tiny" in out
    problem = [line for line in out.splitlines() if "skipped everything" in line]
    assert len(problem) == 1 and problem[0].startswith("  problem ")  # not forged as a line
    assert "\\x1b[2K\\rskipped everything\\n.wav" in problem[0]
    # an error message naming the file is escaped as well
    rc, out, err = _cli(["query", music / "gone\x1b[2K\n.wav", "--by", "key", "--library", lib],
                        capsys)
    line = _one_line_error(rc, err)
    assert "\x1b" not in line and "\\x1b[2K" in line


# -- 2, 7, 8. broken and hostile checkpoints -------------------------------------------


def test_checkpoint_whose_weights_do_not_load_leaves_the_library_alone(lib_dir, ckpt, tmp_path):
    def rename_a_tensor(header, cfg, dims):
        name = next(k for k in header if k != "__metadata__")
        header["zz_not_a_parameter"] = header.pop(name)

    bad = _hostile(ckpt, tmp_path / "bad.safetensors", rename_a_tensor)
    with Library(lib_dir) as lib:
        before = (lib.model_id, lib.counts(), lib.vector(1, "pitch"))
    with pytest.raises(CheckpointError, match="bad.safetensors"):
        scan([tmp_path / "music"], library=lib_dir, checkpoint=bad)
    with Library(lib_dir) as lib:
        assert lib.model_id == before[0] and lib.counts() == before[1]
        np.testing.assert_array_equal(lib.vector(1, "pitch"), before[2])
    _store_matches_catalogue(lib_dir)


def _set(path: str, value):
    def mutate(header, cfg, dims):
        *parents, last = path.split(".")
        node = cfg
        for p in parents:
            node = node[p]
        node[last] = value
    return mutate


def _tensor(field: str, value):
    def mutate(header, cfg, dims):
        name = sorted(k for k in header if k != "__metadata__")[0]
        header[name][field] = value
    return mutate


def _nested(header, cfg, dims):
    deep = "[" * 100_000 + "]" * 100_000
    header["__metadata__"]["loev_config"] = deep


def _meta_not_str(header, cfg, dims):
    header["__metadata__"]["loev_config"] = cfg  # an object, not a JSON string


def _extra_subspace(header, cfg, dims):
    dims["rhythm"] = 64


def _dims_list(header, cfg, dims):
    header["__metadata__"]["loev_dims"] = json.dumps(list(dims.values()))


def _huge_dims(header, cfg, dims):
    dims["pitch"] = 10 ** 9


def _header_not_object(header, cfg, dims):
    return b"[1, 2, 3]", b""


def _header_deep(header, cfg, dims):
    return b"{\"a\":" * 50_000 + b"1" + b"}" * 50_000, b""


HOSTILE = {
    "bad-offsets": _tensor("data_offsets", [0, 10 ** 12]),
    "overlapping-offsets": _tensor("data_offsets", [0, 4]),
    "bad-dtype": _tensor("dtype", "Q99"),
    "shape-as-string": _tensor("shape", "64"),
    "non-string-metadata": _meta_not_str,
    "extra-subspace": _extra_subspace,
    "hop-length-0": _set("frontend.hop_length", 0),
    "string-for-number": _set("frontend.n_mels", "96"),
    "bool-for-number": _set("profile.proj_dim", True),
    "dims-as-list": _dims_list,
    "nested-json": _nested,
    "dims-1e9": _huge_dims,
    "giant-profile": _set("profile.channels", [100_000, 100_000, 100_000, 100_000]),
    "unknown-field": _set("profile.evil", 1),
    "header-not-object": _header_not_object,
    "header-deeply-nested": _header_deep,
}


@pytest.mark.parametrize("fault", sorted(HOSTILE))
def test_hostile_checkpoint_is_one_clear_line_before_any_network_is_built(
        fault, ckpt, tmp_path, capsys, monkeypatch):
    import engine.model.network as network

    bad = _hostile(ckpt, tmp_path / f"{fault}.safetensors", HOSTILE[fault])
    built = []
    real = network.build_model
    monkeypatch.setattr(network, "build_model", lambda cfg: built.append(cfg) or real(cfg))
    audio = write(tmp_path / "a.wav", tone(440.0))
    rc, out, err = _cli(["curve", audio, "--transform", "pitch", "--checkpoint", bad], capsys)
    line = _one_line_error(rc, err)
    assert str(bad) in line
    assert built == []  # refused from the header: nothing allocated for it


def test_checkpoint_tensor_shapes_are_checked_against_the_config_before_allocating(
        ckpt, tmp_path, monkeypatch):
    """A config that passes every range check but disagrees with the tensors in the file
    (a network far larger than the file's weights) is refused before it is built."""
    import engine.model.network as network

    bad = _hostile(ckpt, tmp_path / "wide.safetensors", _set("profile.proj_hidden", 4096))
    built = []
    monkeypatch.setattr(network, "build_model", lambda cfg: built.append(cfg))
    from engine.model.checkpoint import load_checkpoint

    with pytest.raises(CheckpointError, match="wide.safetensors"):
        load_checkpoint(bad)
    assert built == []


def test_good_checkpoint_still_loads(ckpt):
    from engine.model.checkpoint import load_checkpoint, read_checkpoint_info

    model, cfg = load_checkpoint(ckpt)
    assert read_checkpoint_info(ckpt).subspaces == cfg.subspaces


# -- 3, 4, 14. damaged derived files ---------------------------------------------------


def _flip(path: Path) -> None:
    raw = bytearray(path.read_bytes())
    rng = np.random.default_rng(0)
    for i in rng.integers(0, len(raw), 64):
        raw[int(i)] ^= 0xFF
    raw[100:400] = b"\xff" * 300  # the first element's links: out-of-range neighbours
    path.write_bytes(bytes(raw))


DAMAGE = {
    "flip": _flip,
    "truncate": lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]),
    "delete": lambda p: p.unlink(),
}


@pytest.mark.parametrize("kind", ["index", "store"])
@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_damaged_derived_files_are_detected_and_rebuilt(lib_dir, tmp_path, kind, damage):
    for p in _vector_files(lib_dir, kind):
        DAMAGE[damage](p)
    # A later scan, with one file added, in a subprocess: a bad index must not segfault.
    write(tmp_path / "music" / "g4.wav", tone(392.0))
    code = f"""
        from engine.library.scan import scan
        from engine.library.vectors import VectorIndex
        from tests.fixtures_audio import FakeEmbedder
        r = scan([{str(tmp_path / 'music')!r}], library={str(lib_dir)!r}, embedder=FakeEmbedder())
        print("REPAIRED", bool(r.repaired), r.added)
        vi = VectorIndex({str(lib_dir)!r})
        for s in vi.subspaces:
            labels, d = vi.search(s, vi.store(s)[1], k=3, ef=16)  # through hnswlib
            assert d[0] < 1e-5 and (s == "tempo" or labels[0] == 1), (s, labels, d)
        print("OK")
    """
    proc = _run_py(code)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "REPAIRED True 1" in proc.stdout and "OK" in proc.stdout
    _store_matches_catalogue(lib_dir)


@pytest.mark.parametrize("kind", ["index", "store"])
def test_scan_repairs_damage_instead_of_saying_unchanged(lib_dir, tmp_path, kind):
    for p in _vector_files(lib_dir, kind):
        DAMAGE["truncate"](p)
    report = scan([tmp_path / "music"], library=lib_dir, embedder=FakeEmbedder())
    assert report.unchanged == 4 and report.repaired
    assert any(kind in r for r in report.repaired)
    _store_matches_catalogue(lib_dir)
    # the manifest's checksums are those of the files now on disk
    from engine.library.vectors import verify_files

    assert verify_files(lib_dir, read_manifest(lib_dir), full=True) == []


def test_query_of_a_damaged_index_is_a_clear_error_not_a_crash(lib_dir):
    for p in _vector_files(lib_dir, "index"):
        _flip(p)
    code = f"""
        from engine.errors import LibraryError
        from engine.library.vectors import VectorIndex
        vi = VectorIndex({str(lib_dir)!r})
        try:
            vi.search("pitch", vi.store("pitch")[1], k=2, ef=16)
        except LibraryError as e:
            print("ERROR", e)
    """
    proc = _run_py(code)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "ERROR" in proc.stdout and "loev scan" in proc.stdout


def test_damaged_vectors_in_the_catalogue_are_re_embedded(lib_dir, tmp_path):
    with Library(lib_dir) as lib:
        victim = lib.tracks(status="ok")[0]
    con = sqlite3.connect(lib_dir / "catalogue.sqlite")
    con.execute("UPDATE vectors SET vec = x'0000' WHERE track_id = ? AND subspace = 'pitch'",
                (victim.id,))
    con.commit()
    con.close()
    emb = FakeEmbedder()
    report = scan([tmp_path / "music"], library=lib_dir, embedder=emb)
    assert emb.calls == [victim.path] and report.updated == 1
    _store_matches_catalogue(lib_dir)


@pytest.mark.parametrize("text", ["[1, 2]", "\"x\"", "{\"generation\": \"a\"}", "{not json"])
def test_manifest_that_is_not_an_object_is_rebuilt(lib_dir, tmp_path, text, capsys):
    (lib_dir / "vectors" / "manifest.json").write_text(text)
    rc, out, err = _cli(["query", tmp_path / "music" / "a4.wav", "--by", "key",
                         "--library", lib_dir], capsys)
    line = _one_line_error(rc, err)
    assert "manifest.json" in line and "loev scan" in line
    report = scan([tmp_path / "music"], library=lib_dir, embedder=FakeEmbedder())
    assert report.repaired
    _store_matches_catalogue(lib_dir)


def test_hnsw_save_on_a_full_disk_is_detected_before_moving_into_place(lib_dir, tmp_path,
                                                                     monkeypatch):
    import engine.library.vectors as vectors

    before = read_manifest(lib_dir)
    real = vectors._hnsw_save

    def short_write(index, path):  # what a full disk leaves: hnswlib reports nothing
        real(index, path)
        with open(path, "r+b") as f:
            f.truncate(os.path.getsize(path) // 3)

    monkeypatch.setattr(vectors, "_hnsw_save", short_write)
    write(tmp_path / "music" / "g4.wav", tone(392.0))
    with pytest.raises(LibraryError, match="hnsw"):
        scan([tmp_path / "music"], library=lib_dir, embedder=FakeEmbedder())
    assert read_manifest(lib_dir) == before  # the old generation still serves
    monkeypatch.undo()
    scan([tmp_path / "music"], library=lib_dir, embedder=FakeEmbedder())
    _store_matches_catalogue(lib_dir)


def test_full_disk_while_writing_the_store_is_one_clear_line(lib_dir, tmp_path, monkeypatch,
                                                            capsys):
    import builtins

    real_open = builtins.open

    class Full:
        def __init__(self, f):
            self._f = f

        def write(self, b):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        def __getattr__(self, name):
            return getattr(self._f, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self._f.close()

    def full_open(file, mode="r", *a, **k):
        f = real_open(file, mode, *a, **k)
        if "w" in mode and "vectors" in str(file):
            return Full(f)
        return f

    before = read_manifest(lib_dir)
    write(tmp_path / "music" / "g4.wav", tone(392.0))
    monkeypatch.setattr(builtins, "open", full_open)
    with pytest.raises(LibraryError) as info:
        scan([tmp_path / "music"], library=lib_dir, embedder=FakeEmbedder())
    monkeypatch.undo()
    assert "No space left on device" in str(info.value) and "\n" not in str(info.value)
    assert read_manifest(lib_dir) == before
    assert not [p for p in (lib_dir / "vectors").iterdir() if ".tmp" in p.name]
    report = scan([tmp_path / "music"], library=lib_dir, embedder=FakeEmbedder())
    _store_matches_catalogue(lib_dir)


def test_full_catalogue_disk_is_one_clear_line(lib_dir, tmp_path, monkeypatch):
    real = sqlite3.connect

    def small(*a, **k):  # SQLite's own "database or disk is full", at the current size
        con = real(*a, **k)
        pages = con.execute("PRAGMA page_count").fetchone()[0]
        con.execute(f"PRAGMA max_page_count = {pages}")
        return con

    monkeypatch.setattr(sqlite3, "connect", small)
    for i in range(30):
        write(tmp_path / "music" / f"more{i:02d}.wav", tone(200.0 + 10 * i, 0.5))
    with pytest.raises(LibraryError) as info:
        scan([tmp_path / "music"], library=lib_dir, embedder=FakeEmbedder(), batch_size=40)
    assert "full" in str(info.value) and "catalogue.sqlite" in str(info.value)
    monkeypatch.undo()
    with Library(lib_dir) as lib:
        assert lib.counts()["ok"] == 4  # the batch rolled back whole; nothing half-written
    _store_matches_catalogue(lib_dir)


# -- 5, 8. the catalogue ---------------------------------------------------------------


def test_deleted_catalogue_does_not_serve_stale_vectors(lib_dir, tmp_path):
    for p in lib_dir.glob("catalogue.sqlite*"):
        p.unlink()
    write(tmp_path / "music" / "00 first.wav", tone(493.88))  # sorts first: labels shift
    report = scan([tmp_path / "music"], library=lib_dir, embedder=FakeEmbedder())
    assert report.added == 5
    _store_matches_catalogue(lib_dir)
    with Library(lib_dir) as lib:
        assert read_manifest(lib_dir)["catalogue_id"] == lib.catalogue_id


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_corrupt_catalogue_is_a_clear_line_and_is_moved_aside_by_the_next_scan(
        lib_dir, tmp_path, damage, capsys):
    cat = lib_dir / "catalogue.sqlite"
    if damage == "garbage":
        cat.write_bytes(b"this is not a database" * 100)
    else:
        raw = cat.read_bytes()
        cat.write_bytes(raw[:100] + b"\x00" * 50 + raw[150:len(raw) // 2])
    for p in lib_dir.glob("catalogue.sqlite-*"):
        p.unlink()
    rc, out, err = _cli(["info", "--library", lib_dir], capsys)
    line = _one_line_error(rc, err)
    assert "catalogue.sqlite" in line and "loev scan" in line
    report = scan([tmp_path / "music"], library=lib_dir, embedder=FakeEmbedder())
    assert report.added == 4 and report.repaired
    assert any("moved aside" in r for r in report.repaired)
    assert list(lib_dir.glob("catalogue.sqlite.corrupt-*"))
    _store_matches_catalogue(lib_dir)


# -- 10. read-only library -------------------------------------------------------------


def test_read_only_library_can_be_queried(tmp_path):
    # Root ignores permissions: query as an unprivileged user when running as root.
    import tempfile

    base = Path(tempfile.mkdtemp(prefix="loev-ro-"))
    try:
        _music(base / "music")
        lib = base / "lib"
        scan([base / "music"], library=lib, embedder=FakeEmbedder())
        for p in [base, *base.rglob("*")]:
            p.chmod(0o555 if p.is_dir() else 0o444)
        code = f"""
            import mmap, os  # imported first: the unprivileged user may not read lib-dynload
            from engine.library.query import query
            if os.geteuid() == 0:
                os.setgid(65534); os.setuid(65534)
            r = query([{str(base / "music" / "a4.wav")!r}], by="key", k=2, library={str(lib)!r})
            print("N", len(r[0].neighbours))
        """
        before = sorted(p.name for p in lib.iterdir())
        proc = _run_py(code)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert "N 2" in proc.stdout
        assert sorted(p.name for p in lib.iterdir()) == before
    finally:
        for p in [base, *base.rglob("*")]:
            p.chmod(0o755)
        shutil.rmtree(base)


# -- 11. NaN / Inf audio ----------------------------------------------------------------


def test_nan_audio_as_outside_query_is_a_clear_error_and_json_is_valid(lib_dir, tmp_path,
                                                                     ckpt, capsys):
    y = tone(440.0)
    y[1000:2000] = np.nan
    y[5000] = np.inf
    nan = write(tmp_path / "nan.wav", y, format="WAV", )
    import soundfile as sf

    sf.write(str(nan), y, 16000, subtype="FLOAT")
    from engine.library.query import Searcher

    searcher = Searcher(lib_dir, embedder=FakeEmbedder())
    with pytest.raises(DecodeError, match="NaN|finite"):
        searcher.query(nan, by="key")
    rc, out, err = _cli(["curve", nan, "--transform", "pitch", "--checkpoint", ckpt, "--json"],
                        capsys)
    line = _one_line_error(rc, err)
    assert "nan.wav" in line and ("NaN" in line or "finite" in line)
    from engine.cli import _print_json

    with pytest.raises(ValueError):
        _print_json({"distance": float("nan")})


# -- 12. switching checkpoint for one folder ------------------------------------------


def test_switching_model_for_one_folder_re_embeds_the_rest_of_the_library(tmp_path):
    a = _music(tmp_path / "a")
    write(tmp_path / "b" / "g4.wav", tone(392.0))
    lib = tmp_path / "lib"
    scan([tmp_path / "a", tmp_path / "b"], library=lib, embedder=FakeEmbedder("model-1"))
    emb = FakeEmbedder("model-2")
    report = scan([tmp_path / "b"], library=lib, embedder=emb)
    assert report.reembedded
    assert len(emb.calls) == 5  # folder b and the rest of the library
    with Library(lib) as l:
        assert l.counts()["pending"] == 0 and l.counts()["ok"] == 5
        assert {t.model_id for t in l.tracks(status="ok")} == {"model-2"}
    _store_matches_catalogue(lib)


# -- 6. training on a truncated FLAC -----------------------------------------------------


def test_fit_skips_a_truncated_flac_and_lists_it_in_the_run_log(tmp_path):
    import soundfile as sf

    data = tmp_path / "data"
    rng = np.random.default_rng(0)
    for i in range(3):
        write(data / f"good{i}.wav", (tone(220.0 * (i + 1), 4.0) + 0.01 * rng.standard_normal(64000)).astype(np.float32))
    bad = data / "bad.flac"
    sf.write(str(bad), (0.3 * rng.standard_normal(16000 * 20)).astype(np.float32), 16000)
    raw = bad.read_bytes()
    bad.write_bytes(raw[: len(raw) // 10])  # the header still says 20 s
    from engine.audio.decode import audio_info

    assert audio_info(bad).duration == pytest.approx(20.0)
    from trainer.cli import main

    out = tmp_path / "run"
    rc = main(["fit", "--data", str(data), "--out", str(out), "--steps", "1",
               "--profile", "tiny", "--batch-anchors", "4", "--views", "2", "--workers", "0",
               "--no-progress", "--device", "cpu", "--seed", "3"])
    assert rc == 0
    skipped = (out / "skipped.csv").read_text()
    assert "bad.flac" in skipped and "truncated" in skipped
    assert "good" not in skipped


def test_view_stream_skips_an_unreadable_track_and_keeps_going(tmp_path):
    import soundfile as sf

    from trainer.data import Track, ViewConfig, ViewStream

    rng = np.random.default_rng(0)
    good = write(tmp_path / "good.wav", tone(440.0, 4.0))
    bad = tmp_path / "bad.flac"
    sf.write(str(bad), (0.3 * rng.standard_normal(16000 * 20)).astype(np.float32), 16000)
    raw = bad.read_bytes()
    bad.write_bytes(raw[: len(raw) // 10])
    log = tmp_path / "skipped.csv"
    tracks = [Track(str(bad), 20.0), Track(str(good), 4.0)]
    stream = ViewStream(tracks, ViewConfig(anchors=2, views=2, pitch=False, tempo=False),
                        seed=0, stop_step=4, skip_log=log)
    batches = list(stream)
    assert [int(b["step"]) for b in batches] == [0, 1, 2, 3]
    assert all((b["track"] == 1).all() for b in batches)
    assert "bad.flac" in log.read_text()


# -- 9, 14. match ------------------------------------------------------------------------


def test_match_reads_a_bounded_excerpt_of_long_files(tmp_path):
    from engine.model.match import MATCH_SECONDS, STRETCHES, read_pair

    long = write(tmp_path / "long.wav", tone(440.0, 200.0))
    query_y, result_y = read_pair(str(long), str(long))
    assert len(query_y) <= MATCH_SECONDS * 16000 + 1
    assert len(result_y) <= MATCH_SECONDS * max(STRETCHES) * 16000 + 1  # never the whole file


def test_match_of_silence_against_silence_is_identity():
    from engine.model.match import match_tracks

    class Constant:
        subspaces = ("invariant", "pitch", "tempo")

        def embed_audio_batch(self, ys):
            v = np.ones(4, dtype=np.float32) / 2
            return [{s: v for s in self.subspaces} for _ in ys]

    silence = np.zeros(int(16000 * 1.5), dtype=np.float32)
    r = match_tracks(silence, silence, Constant())
    assert r.shift == 0.0 and r.stretch == 1.0


# -- 14. interrupted first scan, symlinks ---------------------------------------------------


def test_interrupted_first_scan_still_writes_an_index(tmp_path):
    _music(tmp_path / "music")
    lib = tmp_path / "lib"
    seen = []

    def progress(done, total, path):
        if path is not None:
            seen.append(path)
            if len(seen) == 2:
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        scan([tmp_path / "music"], library=lib, embedder=FakeEmbedder(), progress=progress,
             workers=1)
    vi = VectorIndex(lib)
    assert vi.count("pitch") == 2
    _store_matches_catalogue(lib)


def test_symlink_target_outside_the_folder_is_removed_with_the_link(tmp_path):
    outside = write(tmp_path / "elsewhere" / "target.wav", tone(440.0))
    music = tmp_path / "music"
    _music(music)
    link = music / "link.wav"
    link.symlink_to(outside)
    lib = tmp_path / "lib"
    scan([music], library=lib, embedder=FakeEmbedder())
    with Library(lib) as l:
        assert os.path.realpath(outside) in {t.path for t in l.tracks(status="ok")}
    link.unlink()
    report = scan([music], library=lib, embedder=FakeEmbedder())
    assert report.removed == 1
    with Library(lib) as l:
        assert os.path.realpath(outside) not in {t.path for t in l.tracks(status="ok")}
    _store_matches_catalogue(lib)
