"""The onnxruntime backend against the torch one: same spectra, same embeddings (cosine >=
0.9999 per subspace), same neighbours; and the onnxruntime path never imports torch.

Fixtures: a tiny random LOEV++ checkpoint (learned branches) exported to ONNX here, and the
shipped default model (structured branches) with its shipped ONNX file.
"""
from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from engine.config import FrontendConfig, make_config
from engine.errors import CheckpointError
from engine.library.query import query
from engine.library.scan import scan
from engine.model.branches import PitchBranch
from engine.model.checkpoint import read_checkpoint_info, save_checkpoint
from engine.model.embed import Embedder, choose_backend
from engine.model.frontend import LogMel
from engine.model.network import build_model
from engine.model.onnx_backend import onnx_path
from engine.model.stft import StftSpec, stft_spectrum
from engine.resources import default_checkpoint
from tests.signals import click_track, harmonic_tone, tone

ROOT = Path(__file__).resolve().parents[1]
SR = 16000
COSINE = 0.9999


def signals() -> list[np.ndarray]:
    """Tones, a chord, click tracks, noise, a one-shot shorter than a chunk, a quiet tone.

    Not digital silence: its pitch embedding normalises constant channels, which is float
    noise in torch and exactly zero in onnxruntime; no direction to compare.
    """
    rng = np.random.default_rng(0)
    chord = sum(harmonic_tone(f, 7.0) for f in (220.0, 277.18, 329.63)) / 3
    return [tone(440.0, 10.0), harmonic_tone(110.0, 4.0), chord.astype(np.float32),
            click_track(120.0, 8.0), click_track(93.0, 6.5, seed=1) + 0.3 * tone(311.1, 6.5),
            (0.1 * rng.standard_normal(5 * SR)).astype(np.float32), tone(880.0, 0.4),
            tone(523.25, 1.5, amp=0.001)]


@pytest.fixture(scope="module")
def tiny_export(tmp_path_factory):
    """A tiny random checkpoint and its ONNX file, written by `loev-train export CHECKPOINT`."""
    from trainer.cli import main

    torch.manual_seed(3)
    path = tmp_path_factory.mktemp("onnx") / "tiny.safetensors"
    save_checkpoint(path, build_model(make_config("tiny", "loev++", "psts")).eval())
    assert main(["export", str(path)]) == 0
    return path


def cosines(a: list[dict[str, np.ndarray]], b: list[dict[str, np.ndarray]]) -> dict[str, float]:
    return {s: min(float(np.dot(x[s], y[s])) for x, y in zip(a, b)) for s in a[0]}


@pytest.mark.parametrize("module, n_samples", [(LogMel(FrontendConfig()), 48000), (PitchBranch(), 48000),
                                                 (LogMel(FrontendConfig()), 20050), (PitchBranch(), 20050)])
def test_numpy_stft_matches_the_torch_modules(module, n_samples):
    """Both sides of the frontend and the pitch branch's STFT, from one StftSpec."""
    y = np.stack([s[:n_samples] for s in signals()[:3]])
    with torch.inference_mode():
        ref = module.spectrum(torch.from_numpy(y)).numpy()
    got = stft_spectrum(y, module.stft_spec)
    assert got.shape == ref.shape
    assert np.abs(got - ref).max() <= 1e-5 * np.abs(ref).max()


def test_numpy_power_through_the_torch_mel_is_the_log_mel():
    """Frontend parity end to end: numpy STFT + the mel/compression the ONNX graph carries."""
    fe = LogMel(FrontendConfig())
    y = np.stack([s[:48000] for s in signals()[:4]])
    with torch.inference_mode():
        ref = fe(torch.from_numpy(y)).numpy()
        got = fe.from_spectrum(torch.from_numpy(stft_spectrum(y, fe.stft_spec))).numpy()
    assert ref.shape == got.shape == (4, 1, 96, 300)
    assert np.abs(got - ref).max() < 1e-4


def test_stft_spec_rejects_what_it_cannot_compute():
    with pytest.raises(ValueError, match="pad_mode"):
        StftSpec(n_fft=512, hop_length=128, win_length=512, pad_mode="edge")
    with pytest.raises(ValueError, match="win_length"):
        StftSpec(n_fft=512, hop_length=128, win_length=1024)


@pytest.mark.parametrize("which", ["tiny-random", "shipped"])
def test_backends_agree_per_subspace(which, tiny_export):
    ckpt = tiny_export if which == "tiny-random" else default_checkpoint()
    ys = signals()
    ref = Embedder(ckpt, backend="torch").embed_audio_batch(ys)
    got = Embedder(ckpt, backend="onnxruntime").embed_audio_batch(ys)
    worst = cosines(ref, got)
    assert set(worst) == set(read_checkpoint_info(ckpt).subspaces)
    assert all(c >= COSINE for c in worst.values()), worst


def test_backends_find_the_same_neighbours(tmp_path):
    """One small library per backend, the same queries by key, tempo and vibe."""
    music = tmp_path / "music"
    music.mkdir()
    for i, y in enumerate(signals()[:7]):
        sf.write(music / f"{i}.wav", y, SR)
    outside = tmp_path / "query.wav"
    sf.write(outside, harmonic_tone(233.08, 6.0) + 0.5 * click_track(120.0, 6.0), SR)
    found = {}
    for backend in ("torch", "onnxruntime"):
        emb = Embedder(backend=backend)
        lib = tmp_path / f"lib-{backend}"
        scan([music], library=lib, embedder=emb)
        found[backend] = {(by, i): [(Path(n.path).name, n.distance) for n in r.neighbours]
                          for by in ("key", "tempo", "vibe")
                          for i, r in enumerate(query([outside, music / "0.wav"], by=by, k=4,
                                                      library=lib, embedder=emb))}
    assert len(found["torch"]) == 6 and all(len(v) == 4 for v in found["torch"].values())
    for q, ref in found["torch"].items():
        got = found["onnxruntime"][q]
        assert [name for name, _ in got] == [name for name, _ in ref], q
        assert np.allclose([d for _, d in got], [d for _, d in ref], atol=1e-3), q


def test_export_records_the_checkpoint_and_the_spectra(tiny_export):
    import onnx

    meta = {p.key: p.value for p in onnx.load(str(onnx_path(tiny_export))).metadata_props}
    info = read_checkpoint_info(tiny_export)
    assert meta["loev_model_id"] == info.model_id
    assert json.loads(meta["loev_dims"]) == info.dims
    assert json.loads(meta["loev_config"]) == info.config
    assert StftSpec.from_dict(json.loads(meta["loev_spectra"])["power"]) == LogMel(FrontendConfig()).stft_spec


def test_shipped_onnx_belongs_to_the_shipped_checkpoint():
    """Re-export resources/loev-default.onnx when the checkpoint changes (`loev-train export`)."""
    Embedder(backend="onnxruntime")  # raises CheckpointError if the ids differ


def test_onnx_of_another_checkpoint_is_refused(tiny_export, tmp_path):
    """A library built with one checkpoint is never queried with vectors of another."""
    other = tmp_path / "other.safetensors"
    torch.manual_seed(4)
    save_checkpoint(other, build_model(make_config("tiny", "loev++", "psts")).eval())
    shutil.copy(onnx_path(tiny_export), onnx_path(other))
    with pytest.raises(CheckpointError, match="exported from another checkpoint"):
        Embedder(other, backend="onnxruntime")


def test_missing_or_broken_onnx_is_one_clear_error(tiny_export, tmp_path):
    lone = tmp_path / "lone.safetensors"
    shutil.copy(tiny_export, lone)
    with pytest.raises(CheckpointError, match="no ONNX export beside it.*loev-train export"):
        Embedder(lone, backend="onnxruntime")
    onnx_path(lone).write_bytes(b"not a model")
    with pytest.raises(CheckpointError, match="not a readable ONNX model"):
        Embedder(lone, backend="onnxruntime")


def test_backend_choice(monkeypatch):
    monkeypatch.delenv("LOEV_BACKEND", raising=False)
    assert choose_backend() == "torch"  # torch is installed here
    monkeypatch.setenv("LOEV_BACKEND", "onnx")
    assert choose_backend() == "onnxruntime"
    assert choose_backend("torch") == "torch"
    monkeypatch.setenv("LOEV_BACKEND", "tensorflow")
    with pytest.raises(ValueError, match="unknown backend 'tensorflow'"):
        choose_backend()


BLOCK_TORCH = """
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('torch', 'torchaudio') or name == 'safetensors.torch':
            raise ModuleNotFoundError(f"No module named {name!r} (blocked: the bundle has no torch)",
                                      name=name)
sys.meta_path.insert(0, Block())
"""


def test_without_torch_scan_and_query_run_on_onnxruntime(tmp_path):
    """What the bundle does: torch cannot be imported, so onnxruntime is chosen, and scanning
    and querying never reach for torch."""
    music = tmp_path / "music"
    music.mkdir()
    for i, y in enumerate(signals()[:3]):
        sf.write(music / f"{i}.flac", y, SR)
    code = BLOCK_TORCH + f"""
from engine.cli import main
from engine.model.embed import Embedder
lib = {str(tmp_path / 'lib')!r}
assert Embedder().backend_name == 'onnxruntime'
assert main(['scan', {str(music)!r}, '--library', lib]) == 0
assert main(['query', {str(music / '0.flac')!r}, '--by', 'key', '--library', lib, '--json']) == 0
print('torch imported:', 'torch' in sys.modules)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                         env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1",
                              "HOME": str(tmp_path)}, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "torch imported: False" in out.stdout
    results = json.loads(out.stdout[out.stdout.index('{"results"'):].splitlines()[0])["results"]
    assert {Path(n["path"]).name for n in results[0]["neighbours"]} == {"1.flac", "2.flac"}


def test_without_torch_curve_match_and_shifted_query_run_on_the_players_vocoder(tmp_path):
    """The bundle has no torch: curves, the match and transposed search use the audition
    player's vocoder instead of failing."""
    music = tmp_path / "music"
    music.mkdir()
    sf.write(music / "a.wav", tone(440.0, 4.0), SR)
    sf.write(music / "b.wav", tone(523.25, 4.0), SR)
    lib = tmp_path / "lib"
    code = BLOCK_TORCH + f"""
from engine.cli import main
a, b, lib = {str(music / 'a.wav')!r}, {str(music / 'b.wav')!r}, {str(lib)!r}
assert main(['curve', a, '--transform', 'pitch', '--json']) == 0
assert main(['match', a, b, '--json']) == 0
assert main(['scan', {str(music)!r}, '--library', lib]) == 0
assert main(['query', a, '--by', 'key', '--shift', '2', '--library', lib, '--json']) == 0
print('torch imported:', 'torch' in sys.modules)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                         env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1",
                              "HOME": str(tmp_path)}, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "torch imported: False" in out.stdout
    curve = json.loads(out.stdout[out.stdout.index('{"transform"'):].splitlines()[0])
    assert len(curve["subspaces"]["pitch"]) == len(curve["values"]) == 25
    assert all(math.isfinite(d) for d in curve["subspaces"]["pitch"])
    match = json.loads(out.stdout[out.stdout.index('{"shift"'):].splitlines()[0])
    assert abs(match["shift"] + 3.0) <= 0.5  # C5 is three semitones above A4
