"""Self-describing safetensors checkpoints; pickles are refused without being run."""
from __future__ import annotations

import pickle

import pytest
import torch

from engine.model.checkpoint import load_checkpoint, read_checkpoint_info, save_checkpoint
from engine.config import CHUNK_SAMPLES, make_config
from engine.errors import CheckpointError
from engine.model.network import build_model


@pytest.mark.parametrize("method", ["mule", "loev++"])
def test_round_trip_identical_outputs(tmp_path, method):
    torch.manual_seed(1)
    net = build_model(make_config("tiny", method, "psts")).eval()
    # Perturb the zero-initialised skip gains so that every block matters.
    with torch.no_grad():
        for name, p in net.named_parameters():
            if name.endswith("skip_gain"):
                p.fill_(0.5)
    path = save_checkpoint(tmp_path / "m.safetensors", net, provenance={"steps": 3})
    loaded, cfg = load_checkpoint(path)
    assert cfg == net.cfg
    y = torch.randn(2, CHUNK_SAMPLES)
    with torch.inference_mode():
        a, b = net(y), loaded(y)
    for k in a["embeddings"]:
        assert torch.equal(a["embeddings"][k], b["embeddings"][k])
    info = read_checkpoint_info(path)
    assert info.subspaces == cfg.subspaces
    assert info.config["provenance"]["steps"] == 3
    assert len(info.model_id) == 16


class Payload:
    def __reduce__(self):
        import os

        return (os.system, ("touch PWNED_MARKER",))


@pytest.mark.parametrize("suffix", [".pt", ".ckpt", ".safetensors"])
def test_pickle_checkpoint_refused_without_running(tmp_path, monkeypatch, suffix):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / f"evil{suffix}"
    path.write_bytes(pickle.dumps(Payload()))
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(path)
    assert str(path) in str(e.value)
    assert not (tmp_path / "PWNED_MARKER").exists()


def test_missing_and_foreign_files(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        read_checkpoint_info(tmp_path / "nope.safetensors")
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, str(tmp_path / "plain.safetensors"))
    with pytest.raises(CheckpointError, match="without a LOEV config"):
        read_checkpoint_info(tmp_path / "plain.safetensors")


def test_header_read_does_not_import_torch(tiny_checkpoint):
    import subprocess
    import sys

    code = ("import sys; from engine.model.checkpoint import read_checkpoint_info; "
            f"read_checkpoint_info({str(tiny_checkpoint)!r}); print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
