"""The key, tempo and type heads: their file format (pickle-free, checked before use), the
model id they leave alone, and the shipped heads on synthetic signals with known answers."""
from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest

from engine import keys
from engine.errors import CheckpointError
from engine.model.checkpoint import read_checkpoint_info, save_with_heads
from engine.model.heads import (HEADS_FORMAT, NO_KEY, NO_TEMPO, SOUND_TYPES, Estimate, Heads,
                                load_heads)

BPM_BINS = [60.0 * 2 ** (i / 12) for i in range(25)]  # 60..240, a coarse test grid


def hand_heads(dims: dict[str, int], *, seed: int = 0, hidden: int = 8,
               ) -> tuple[dict[str, np.ndarray], str]:
    """Heads tensors and metadata built by hand: random MLPs, except that the key head's
    output follows the first pitch dimension (class = 0 when it is large)."""
    rng = np.random.default_rng(seed)
    labels = {"key": list(keys.KEY_NAMES) + [NO_KEY],
              "tempo": [f"{b:.2f}" for b in BPM_BINS] + [NO_TEMPO],
              "type": list(SOUND_TYPES)}
    subspace = {"key": "pitch", "tempo": "tempo", "type": "invariant"}
    tensors = {}
    for head, labs in labels.items():
        d = dims[subspace[head]]
        tensors[f"estimators.{head}.mean"] = np.zeros(d, np.float32)
        tensors[f"estimators.{head}.scale"] = np.ones(d, np.float32)
        tensors[f"estimators.{head}.0.weight"] = rng.standard_normal((hidden, d)).astype(np.float32)
        tensors[f"estimators.{head}.0.bias"] = np.zeros(hidden, np.float32)
        tensors[f"estimators.{head}.1.weight"] = rng.standard_normal((len(labs), hidden)).astype(np.float32)
        tensors[f"estimators.{head}.1.bias"] = np.zeros(len(labs), np.float32)
    meta = {"format": HEADS_FORMAT, "provenance": {"trainer": "by hand"}}
    for head, labs in labels.items():
        meta[head] = {"subspaces": [subspace[head]], "hidden": [hidden], "labels": labs}
    meta["tempo"]["bpm"] = BPM_BINS
    return tensors, json.dumps(meta)


@pytest.fixture(scope="module")
def with_heads(tiny_checkpoint, tmp_path_factory):
    info = read_checkpoint_info(tiny_checkpoint)
    tensors, meta = hand_heads(info.dims)
    out = tmp_path_factory.mktemp("heads") / "with-heads.safetensors"
    return save_with_heads(out, tiny_checkpoint, tensors, meta)


def unit_vectors(dims: dict[str, int], n: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    out = {}
    for s, d in dims.items():
        v = rng.standard_normal((n, d)).astype(np.float32)
        out[s] = v / np.linalg.norm(v, axis=1, keepdims=True)
    return out


def test_heads_keep_the_model_id_and_the_network(tiny_checkpoint, with_heads):
    """Adding heads (or training them again) must not change what the model is."""
    import torch

    from engine.model.checkpoint import load_checkpoint

    before, after = read_checkpoint_info(tiny_checkpoint), read_checkpoint_info(with_heads)
    assert after.model_id == before.model_id
    assert after.dims == before.dims and after.config == before.config
    # Again, on a checkpoint that already has heads: they are replaced, the id stays.
    tensors, meta = hand_heads(before.dims, seed=5)
    again = save_with_heads(with_heads.with_name("again.safetensors"), with_heads, tensors, meta)
    assert read_checkpoint_info(again).model_id == before.model_id
    assert load_heads(again).heads_id != load_heads(with_heads).heads_id
    # The encoder loads exactly as before: the heads tensors are not the network's.
    a, _ = load_checkpoint(tiny_checkpoint)
    b, _ = load_checkpoint(again)
    y = torch.randn(1, 48000)
    with torch.inference_mode():
        ea, eb = a(y)["embeddings"], b(y)["embeddings"]
    assert all(torch.equal(ea[s], eb[s]) for s in ea)


def test_a_library_scanned_without_heads_stays_valid_with_them(tiny_checkpoint, with_heads, tmp_path):
    """The library records the model id: scanning again with the checkpoint with heads
    embeds nothing again, and querying it with that checkpoint is allowed."""
    import soundfile as sf

    from engine.library.query import query
    from engine.library.scan import scan
    from tests.signals import cadence, click_track

    music = tmp_path / "music"
    music.mkdir()
    sf.write(music / "a.wav", cadence(60, "major"), 16000)
    sf.write(music / "b.wav", click_track(120.0, 4.0), 16000)
    lib = tmp_path / "lib"
    first = scan([music], library=lib, checkpoint=tiny_checkpoint, workers=1)
    assert first.added == 2
    again = scan([music], library=lib, checkpoint=with_heads, workers=1)
    assert (again.added, again.updated, again.unchanged, again.reembedded) == (0, 0, 2, False)
    hits = query([music / "a.wav"], k=1, library=lib, checkpoint=with_heads)
    assert len(hits) == 1


def test_changed_encoder_bytes_change_the_id(with_heads, tmp_path):
    """The id is recomputed from the encoder's bytes, not read from the record: an edited
    weight is refused rather than passed off as the original model."""
    bad = tmp_path / "edited.safetensors"
    data = bytearray(with_heads.read_bytes())
    (n,) = struct.unpack("<Q", data[:8])
    data[8 + n + 100] ^= 0xFF
    bad.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="not those of the model"):
        read_checkpoint_info(bad)


def rewrite_header(src: Path, dst: Path, edit) -> Path:
    """``src`` with its safetensors header JSON passed through ``edit``, data unchanged."""
    data = src.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    edit(header)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    dst.write_bytes(struct.pack("<Q", len(text)) + text + data[8 + n:])
    return dst


def test_an_encoder_record_that_does_not_match_is_refused(with_heads, tmp_path):
    """The recorded encoder header must describe the file's own encoder tensors: one that
    moves a tensor (or claims another config) cannot lend the file another model's id."""
    def move_a_tensor(header):
        record = json.loads(header["__metadata__"]["loev_encoder"])
        enc = json.loads(record["header"])
        a, b = sorted(k for k in enc if k != "__metadata__")[:2]
        enc[a]["data_offsets"], enc[b]["data_offsets"] = enc[b]["data_offsets"], enc[a]["data_offsets"]
        enc[a]["shape"], enc[b]["shape"] = enc[b]["shape"], enc[a]["shape"]
        enc[a]["dtype"], enc[b]["dtype"] = enc[b]["dtype"], enc[a]["dtype"]
        record["header"] = json.dumps(enc)
        header["__metadata__"]["loev_encoder"] = json.dumps(record)

    def drop_the_record(header):
        header["__metadata__"]["loev_encoder"] = "{not json"

    for edit, message in ((move_a_tensor, "does not describe its encoder"),
                          (drop_the_record, "malformed loev_encoder")):
        bad = rewrite_header(with_heads, tmp_path / f"{edit.__name__}.safetensors", edit)
        with pytest.raises(CheckpointError, match=message):
            read_checkpoint_info(bad)


def test_predict_returns_one_estimate_per_track(with_heads):
    info = read_checkpoint_info(with_heads)
    heads = load_heads(with_heads)
    assert isinstance(heads, Heads) and len(heads.heads_id) == 16
    est = heads.predict(unit_vectors(info.dims, 7))
    assert len(est) == 7 and all(isinstance(e, Estimate) for e in est)
    for e in est:
        assert e.key is None or 0 <= e.key < 24
        assert e.bpm is None or 50.0 <= e.bpm <= 260.0
        assert e.type in SOUND_TYPES
        assert all(0.0 <= c <= 1.0 for c in (e.key_confidence, e.bpm_confidence, e.type_confidence))
        json.dumps(e.to_dict())
    # The same vectors give the same estimates; one vector alone gives the same answer.
    one = heads.predict({s: v[:1] for s, v in unit_vectors(info.dims, 7).items()})
    assert (one[0].key, one[0].type, one[0].bpm is None) == (est[0].key, est[0].type, est[0].bpm is None)
    assert one[0].key_confidence == pytest.approx(est[0].key_confidence, abs=1e-5)


def test_zero_vectors_have_no_key_and_no_tempo(with_heads):
    """Digital silence normalises to a zero pitch (and tempo) vector: no key, no tempo,
    whatever the MLP's weights say about the origin."""
    info = read_checkpoint_info(with_heads)
    heads = load_heads(with_heads)
    vectors = unit_vectors(info.dims, 3)
    vectors["pitch"][1] = 0.0
    vectors["tempo"][2] = 0.0
    est = heads.predict(vectors)
    assert est[1].key is None and est[1].key_confidence == 1.0
    assert est[2].bpm is None and est[2].bpm_confidence == 1.0
    assert heads.predict({s: v[:1] for s, v in vectors.items()})[0].key == est[0].key


def test_predict_refuses_vectors_of_the_wrong_size(with_heads):
    info = read_checkpoint_info(with_heads)
    vectors = unit_vectors(info.dims, 2)
    vectors["pitch"] = vectors["pitch"][:, :-1]
    with pytest.raises(ValueError, match="pitch vectors must be"):
        load_heads(with_heads).predict(vectors)


def test_checkpoint_without_heads_has_none(tiny_checkpoint):
    assert load_heads(tiny_checkpoint) is None


@pytest.mark.parametrize("damage, message", [
    (lambda t, m: t.update({"estimators.key.0.weight": t["estimators.key.0.weight"][:, :-1]}), "estimators.key.0.weight"),
    (lambda t, m: t.pop("estimators.type.1.bias"), "missing tensor"),
    (lambda t, m: t.update({"estimators.extra": np.zeros(3, np.float32)}), "unexpected tensor"),
    (lambda t, m: m["type"].update(labels=["kick", "not a type"]), "type head"),
    (lambda t, m: m["key"].update(subspaces=["pitch", "nope"]), "key head reads"),
    (lambda t, m: m["tempo"].update(bpm=[120.0, 60.0, 90.0]), "tempo head"),
    (lambda t, m: m["tempo"].update(posterior={"kernel_bins": 0}), "tempo head: posterior"),
    (lambda t, m: m["tempo"].update(posterior={"kernel_bins": 2.0, "x": 1}), "tempo head: posterior"),
    (lambda t, m: m["key"].update(widths=[0]), "key head: widths"),
    (lambda t, m: m["key"].update(widths=[10_000]), "key head: widths"),
    (lambda t, m: m["key"].update(widths=[4, 4]), "key head: widths"),
    (lambda t, m: m["key"].update(widths=["4"]), "key head: widths"),
    (lambda t, m: t.update({"estimators.tempo.mean": np.full(t["estimators.tempo.mean"].shape, np.nan, np.float32)}),
     "non-finite"),
])
def test_damaged_heads_are_refused(tiny_checkpoint, tmp_path, damage, message):
    info = read_checkpoint_info(tiny_checkpoint)
    tensors, raw = hand_heads(info.dims)
    meta = json.loads(raw)
    damage(tensors, meta)
    path = save_with_heads(tmp_path / "bad.safetensors", tiny_checkpoint, tensors, json.dumps(meta))
    with pytest.raises(CheckpointError, match="damaged key/tempo/type heads") as e:
        load_heads(path)
    assert message in str(e.value) and str(path) in str(e.value)


def test_a_head_with_widths_reads_the_leading_part_of_its_subspace(tiny_checkpoint, tmp_path):
    """A key head that reads the first 5 pitch dimensions (scaled back to unit length): its
    answer does not depend on the rest of the vector, and the rest is not dropped silently
    when the vector is too short."""
    info = read_checkpoint_info(tiny_checkpoint)
    tensors, raw = hand_heads(info.dims)
    meta = json.loads(raw)
    meta["key"]["widths"] = [5]
    rng = np.random.default_rng(1)
    tensors["estimators.key.mean"] = np.zeros(5, np.float32)
    tensors["estimators.key.scale"] = np.ones(5, np.float32)
    tensors["estimators.key.0.weight"] = rng.standard_normal((8, 5)).astype(np.float32)
    path = save_with_heads(tmp_path / "widths.safetensors", tiny_checkpoint, tensors, json.dumps(meta))
    heads = load_heads(path)
    vecs = unit_vectors(info.dims, 3)
    other = {k: v.copy() for k, v in vecs.items()}
    other["pitch"][:, 5:] = rng.standard_normal(other["pitch"][:, 5:].shape)
    other["pitch"][:, :5] *= 3.0  # the same direction, another length: rescaled to unit
    p1, p2 = heads.probabilities(vecs)["key"], heads.probabilities(other)["key"]
    assert np.allclose(p1, p2, atol=1e-5)
    x = vecs["pitch"][:, :5] / np.linalg.norm(vecs["pitch"][:, :5], axis=1, keepdims=True)
    w0 = tensors["estimators.key.0.weight"]
    expect = np.maximum(x @ w0.T, 0) @ tensors["estimators.key.1.weight"].T
    expect = np.exp(expect - expect.max(1, keepdims=True))
    assert np.allclose(p1, expect / expect.sum(1, keepdims=True), atol=1e-5)
    with pytest.raises(ValueError, match="pitch"):
        heads.probabilities({**vecs, "pitch": vecs["pitch"][:, :3]})


def test_a_tempo_posterior_in_the_space_gives_the_bpm(tiny_checkpoint, tmp_path):
    """Heads over a tempo space that ends in a tempo projector's posterior (embedded by the
    kernel root) read the BPM from it; the tempo head still says "no tempo"."""
    from engine.model.kernels import psd_root, tempo_kernel

    info = read_checkpoint_info(tiny_checkpoint)
    tensors, raw = hand_heads(info.dims)
    meta = json.loads(raw)
    meta["tempo"]["posterior"] = {"kernel_bins": 2.0}
    tensors["estimators.tempo.1.weight"][:] = 0.0
    tensors["estimators.tempo.1.bias"][:] = 0.0
    tensors["estimators.tempo.1.bias"][-1] = -50.0  # the tempo head: never "no tempo"
    path = save_with_heads(tmp_path / "posterior.safetensors", tiny_checkpoint, tensors, json.dumps(meta))
    heads = load_heads(path)
    n = len(BPM_BINS) + 1
    root = psd_root(tempo_kernel(len(BPM_BINS), 2.0))
    vecs = unit_vectors(info.dims, 3)
    p = np.zeros((3, n))
    p[0, 12] = 1.0  # 120 BPM
    p[1, 12] = p[1, 13] = 0.5  # between 120 and 127.1
    p[2, 3] = 0.2
    p[2, 20] = 0.8  # mostly 190.3
    tempo = np.zeros((3, info.dims["tempo"]))
    tempo[:, -n:] = p @ root
    vecs["tempo"] = (tempo / np.linalg.norm(tempo, axis=1, keepdims=True)).astype(np.float32)
    est = heads.predict(vecs)
    assert est[0].bpm == pytest.approx(120.0, rel=0.005) and est[0].bpm_confidence > 0.95
    assert 120.0 * 1.01 < est[1].bpm < 127.1 / 1.01 and est[1].bpm_confidence > 0.8
    assert est[2].bpm == pytest.approx(BPM_BINS[20], rel=0.01) and est[2].bpm_confidence == pytest.approx(0.8, abs=0.05)
    # The tempo head's "no tempo" still decides.
    tensors["estimators.tempo.1.bias"][-1] = 50.0
    path = save_with_heads(tmp_path / "none.safetensors", tiny_checkpoint, tensors, json.dumps(meta))
    assert all(e.bpm is None for e in load_heads(path).predict(vecs))


def test_heads_load_without_pickle_or_torch(with_heads):
    """The heads are read with numpy alone, as in the bundled app: no torch, no safetensors
    package, nothing unpickled."""
    import subprocess
    import sys

    code = ("import sys, pickle; sys.modules['torch'] = sys.modules['safetensors'] = None\n"
            "def refuse(*a, **k): raise AssertionError('unpickled')\n"
            "pickle.load = pickle.loads = pickle.Unpickler = refuse\n"
            "from engine.model.heads import load_heads\n"
            f"h = load_heads({str(with_heads)!r}); print(h.heads_id)")
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True,
                         env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == load_heads(with_heads).heads_id


def test_heads_checkpoint_runs_on_the_onnx_export_of_its_encoder(tmp_path):
    """The shipped ONNX export names the encoder's model id: a checkpoint with heads
    beside it (same id) is accepted by the onnxruntime backend."""
    pytest.importorskip("onnxruntime")
    from engine.model.embed import Embedder
    from engine.resources import default_checkpoint

    src = default_checkpoint()
    info = read_checkpoint_info(src)
    tensors, meta = hand_heads(info.dims)
    out = save_with_heads(tmp_path / "m.safetensors", src, tensors, meta)
    shutil.copy(src.with_suffix(".onnx"), out.with_suffix(".onnx"))
    emb = Embedder(out, backend="onnxruntime")
    assert emb.model_id == info.model_id
    v = emb.embed_audio(np.zeros(16000, np.float32) + 0.01 * np.sin(np.arange(16000) * 0.3).astype(np.float32))
    assert set(v) == set(info.dims)


# ------------------------------------------------------------- the shipped heads


@pytest.fixture(scope="module")
def shipped():
    from engine.model.embed import Embedder

    heads = load_heads()
    assert heads is not None, "the shipped checkpoint has no heads (loev-train heads)"
    return Embedder(), heads


def estimate(shipped, y: np.ndarray) -> Estimate:
    embedder, heads = shipped
    return heads.predict({s: v[None] for s, v in embedder.embed_audio(y).items()})[0]


@pytest.mark.parametrize("tonic, mode", [(60, "major"), (57, "minor"), (67, "major"), (64, "minor")])
def test_shipped_heads_find_the_key_of_a_cadence(shipped, tonic, mode):
    from tests.signals import cadence

    e = estimate(shipped, np.tile(cadence(tonic, mode), 2))
    assert e.key is not None, "a cadence has a key"
    assert keys.key_name(e.key) == keys.key_name(keys.make_key(tonic, mode))


@pytest.mark.parametrize("bpm", [100.0, 128.0])
def test_shipped_heads_find_the_tempo_of_a_click_track(shipped, bpm):
    from tests.signals import click_track

    e = estimate(shipped, click_track(bpm, 12.0))
    assert e.bpm is not None, "a click track has a tempo"
    assert abs(e.bpm - bpm) <= 0.04 * bpm, e.bpm
    assert e.key is None, "a click track has no key"


@pytest.mark.parametrize("what", ["silence", "drum hit"])
def test_shipped_heads_say_no_key_and_no_tempo(shipped, what):
    from tests.signals import drum_hit

    y = np.zeros(3 * 16000, np.float32) if what == "silence" else drum_hit(1.0)
    e = estimate(shipped, y)
    assert e.key is None and e.bpm is None, e


def test_shipped_heads_keep_the_model_id_the_onnx_export_names():
    import onnx

    from engine.resources import default_checkpoint

    info = read_checkpoint_info(default_checkpoint())
    model = onnx.load(str(default_checkpoint().with_suffix(".onnx")), load_external_data=False)
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["loev_model_id"] == info.model_id
    assert load_heads() is not None


# ------------------------------------------------------------------- loev-train heads


def write_corpus(folder: Path, rows: list[tuple[str, np.ndarray, str, str, str]], split: str = "train") -> Path:
    import soundfile as sf

    folder.mkdir(parents=True, exist_ok=True)
    lines = ["file,key,tempo,program,family,source,seed,soundfont,programs,duration,split,type,pitch"]
    for name, y, key, tempo, typ in rows:
        sf.write(folder / name, y, 16000)
        lines.append(f"{name},{key},{tempo},0,x,test,0,FluidR3_GM.sf2,0,{len(y) / 16000:.2f},{split},{typ},")
    (folder / "labels.csv").write_text("\n".join(lines) + "\n")
    return folder


def tiny_corpus(folder: Path, split: str = "train") -> Path:
    from tests.signals import cadence, click_track, drum_hit

    return write_corpus(folder, [
        ("a.wav", click_track(120.0, 5.0), "no key", "120", "drum_loop"),
        ("b.wav", cadence(60, "major"), "C major", "100", "song"),
        ("c.wav", drum_hit(1.0), "no key", "no tempo", "kick"),
        ("d.wav", cadence(57, "minor"), "A minor", "90", "music_loop"),
    ], split)


def test_loev_train_heads_adds_heads_and_keeps_the_model_id(tiny_checkpoint, tmp_path, one_torch_thread):
    from trainer.cli import main

    data = tiny_corpus(tmp_path / "corpus")
    out = tmp_path / "with-heads.safetensors"
    args = ["heads", str(tiny_checkpoint), "--data", str(data), "--out", str(out), "--epochs", "2",
            "--synthetic", "10", "--stretches", "1", "--cache", str(tmp_path / "cache"),
            "--val-fraction", "0.3"]
    assert main(args) == 0
    heads = load_heads(out)
    assert heads is not None
    assert read_checkpoint_info(out).model_id == read_checkpoint_info(tiny_checkpoint).model_id
    assert heads.provenance["trainer"] == "loev-train heads"
    # Retrain from the checkpoint with heads into itself: they are replaced, the id stays.
    first = load_heads(out).heads_id
    assert main(["heads", str(out), "--data", str(data), "--out", str(out)] + args[6:] + ["--seed", "1"]) == 0
    assert load_heads(out).heads_id != first
    assert read_checkpoint_info(out).model_id == read_checkpoint_info(tiny_checkpoint).model_id


def test_loev_train_heads_refuses_held_out_material(tiny_checkpoint, tmp_path, capsys):
    from trainer.cli import main

    data = tiny_corpus(tmp_path / "bench", split="bench")
    out = tmp_path / "never.safetensors"
    assert main(["heads", str(tiny_checkpoint), "--data", str(data), "--out", str(out)]) == 2
    assert "held-out" in capsys.readouterr().err
    assert not out.exists()


def test_key_roll_moves_the_label_with_the_bins():
    """The key augmentation: rolling pitch-class bins by 2 s is a shift of s semitones."""
    import torch

    from trainer.heads import _roll_keys

    x = torch.zeros(3, 2 * 24)
    x[:, 0] = 1.0  # energy on pitch class C (bin 0) in the first channel
    key = torch.tensor([keys.parse_key("C major"), keys.parse_key("A minor"), 24])
    xr, moved = _roll_keys(x, key, 24, torch.Generator().manual_seed(1))
    for row, k0, k in zip(xr, key.tolist(), moved.tolist()):
        s = int(torch.argmax(row[:24])) // 2
        assert k == (24 if k0 == 24 else keys.transpose(k0, s))


def test_tempo_decoding_interpolates_between_bins_and_says_no_tempo(with_heads):
    """A peak between two bin centres lands between them (acc1's 4 % needs finer than the
    bins); "no tempo" wins from half the probability up; the confidence is the mass
    within 4 % of the BPM said."""
    heads = load_heads(with_heads)
    bins = heads.bpm_bins
    target = float(np.sqrt(bins[10] * bins[11]))  # half-way between two centres, in log
    logp = -0.5 * ((np.log(bins) - np.log(target)) / np.log(bins[1] / bins[0])) ** 2
    p = np.exp(logp)
    p = np.append(0.8 * p / p.sum(), 0.2)
    bpm, conf = heads._tempo(p)
    assert abs(np.log(bpm / target)) < 0.2 * np.log(bins[1] / bins[0])
    near = np.abs(np.log(bins / bpm)) <= np.log(1.04)
    assert conf == pytest.approx(p[:-1][near].sum())
    assert heads._tempo(np.append(0.4 * p[:-1] / p[:-1].sum(), 0.6)) == (None, pytest.approx(0.6))
