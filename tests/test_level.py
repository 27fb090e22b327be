"""The input level a checkpoint brings each chunk to (``peak_db``): a file's loudness is
not part of its embedding, on both backends, and ``loev-train level`` / ``fit`` set it."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.config import ModelConfig, check_config_dict, make_config
from engine.model.checkpoint import load_checkpoint, read_checkpoint_info, save_checkpoint
from engine.model.network import build_model
from engine.model.stft import StftSpec, peak_gain, stft_spectrum
from tests.signals import click_track, harmonic_tone
from trainer.cli import main


@pytest.fixture(scope="module")
def plain_checkpoint(tmp_path_factory):
    """A tiny structured checkpoint with a timbre descriptor and no input level (untrained)."""
    torch.manual_seed(0)
    net = build_model(make_config("tiny", "loev++", "psts", branches="structured", timbre_share=0.2)).eval()
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "plain.safetensors", net)


def _signals() -> list[np.ndarray]:
    chord = sum(harmonic_tone(f, 4.0) for f in (261.6, 329.6, 392.0)).astype(np.float32) / 3
    return [chord, (0.5 * click_track(120, 4.0)).astype(np.float32)]


def test_the_gain_brings_the_peak_to_the_level_and_leaves_silence_silent():
    peaks = np.array([[0.5], [0.001], [0.0]])
    gain = peak_gain(peaks, -6.0)
    assert gain[0, 0] * 0.5 == pytest.approx(10 ** (-6 / 20))
    assert gain[1, 0] == pytest.approx(100.0)  # raised 40 dB at most, not the 54 dB it lacks
    assert np.isfinite(gain[2, 0])
    assert StftSpec.from_dict({"n_fft": 64, "hop_length": 16, "win_length": 64}).peak_db is None  # older exports
    with pytest.raises(ValueError, match="peak_db"):
        StftSpec(n_fft=64, hop_length=16, win_length=64, peak_db=6.0)


def test_the_config_carries_the_level_and_older_configs_stay_as_they_were():
    cfg = make_config("tiny", "loev++", "psts", branches="structured")
    assert "peak_db" not in cfg.to_dict()["frontend"]  # older checkpoints' ids do not move
    levelled = make_config("tiny", "loev++", "psts", branches="structured", peak_db=-6.0)
    assert ModelConfig.from_dict(levelled.to_dict()).frontend.peak_db == -6.0
    d = levelled.to_dict()
    d["frontend"]["peak_db"] = 12.0
    with pytest.raises(ValueError, match="peak_db"):
        check_config_dict(d)


def test_loev_train_level_makes_the_embedding_level_free_on_both_backends(plain_checkpoint, tmp_path):
    pytest.importorskip("onnxruntime")
    from engine.model.embed import Embedder

    out = tmp_path / "level.safetensors"
    assert main(["level", str(plain_checkpoint), "--peak-db", "-6", "--out", str(out)]) == 0
    m1, _ = load_checkpoint(plain_checkpoint)
    m2, cfg = load_checkpoint(out)
    assert cfg.frontend.peak_db == -6.0
    assert read_checkpoint_info(out).config["provenance"]["source"] == read_checkpoint_info(plain_checkpoint).model_id
    for (k, a), b in zip(m1.state_dict().items(), m2.state_dict().values()):
        assert torch.equal(a, b), k  # the setting has no parameters
    loud, quiet = _signals(), [0.03 * y for y in _signals()]  # 30 dB apart
    before = Embedder(plain_checkpoint, backend="torch")
    after = Embedder(out, backend="torch")
    moved = [max(float(1 - a[s] @ b[s]) for s in a)
             for a, b in zip(before.embed_audio_batch(loud), before.embed_audio_batch(quiet))]
    assert max(moved) > 1e-3  # without the setting the level moves the embedding
    for a, b in zip(after.embed_audio_batch(loud), after.embed_audio_batch(quiet)):
        for s in a:
            assert float(a[s] @ b[s]) > 1 - 1e-5, s
    assert main(["export", str(out)]) == 0
    onnx = Embedder(out, backend="onnxruntime")
    for a, b in zip(after.embed_audio_batch(quiet), onnx.embed_audio_batch(quiet)):
        for s in a:
            assert np.allclose(a[s], b[s], atol=1e-4), s
    # numpy's STFT side applies the same gain as the torch frontends
    y = np.stack(quiet)[:, :48000]
    with torch.inference_mode():
        for module in (m2.frontend, m2.structured["pitch"]):
            t = module.spectrum(torch.from_numpy(y)).numpy()
            assert np.allclose(stft_spectrum(y, module.stft_spec), t, rtol=1e-3, atol=1e-3 * t.max())


def test_loev_train_level_refuses_a_level_out_of_range(plain_checkpoint, tmp_path, capsys):
    assert main(["level", str(plain_checkpoint), "--peak-db", "3", "--out", str(tmp_path / "x.safetensors")]) == 2
    assert "peak_db must lie in [-60, 0]" in capsys.readouterr().err
    assert not (tmp_path / "x.safetensors").exists()
