"""Shared fixtures. Qt runs offscreen; everything is generated, nothing downloaded."""
from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("OMP_NUM_THREADS", "2")

import pytest


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """A randomly initialised tiny LOEV++ PSTS checkpoint (for plumbing, not quality)."""
    import torch

    from engine.model.checkpoint import save_checkpoint
    from engine.config import make_config
    from engine.model.network import build_model

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "tiny-loevpp.safetensors"
    save_checkpoint(path, build_model(make_config("tiny", "loev++", "psts")), provenance={"trained": False})
    return path


@pytest.fixture(scope="module")
def one_torch_thread():
    """Small tensors on a shared 2-core machine: extra intra-op threads only contend."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
