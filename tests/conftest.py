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

    from engine.checkpoint import save_checkpoint
    from engine.config import make_config
    from engine.model import build_model

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "tiny-loevpp.safetensors"
    save_checkpoint(path, build_model(make_config("tiny", "loev++", "psts")), provenance={"trained": False})
    return path
