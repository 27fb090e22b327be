"""The network: every method forward and backward, shapes, finiteness, paper sizes."""
from __future__ import annotations

import pytest
import torch

from engine.config import CHUNK_SAMPLES, METHODS, make_config
from engine.model.network import build_model, count_parameters


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("variants", ["b", "ps", "psts"])
def test_forward_backward_tiny(method, variants):
    torch.manual_seed(0)
    cfg = make_config("tiny", method, variants)
    net = build_model(cfg).train()
    y = torch.randn(3, CHUNK_SAMPLES) * 0.1
    out = net(y)
    assert set(out["projections"]) == set(cfg.heads)
    assert set(out["embeddings"]) == set(cfg.subspaces)
    for name, e in out["embeddings"].items():
        assert e.shape == (3, net.embedding_dims[name])
        assert torch.isfinite(e).all()
    loss = sum(p.square().mean() for p in out["projections"].values())
    loss.backward()
    grads = [p.grad for p in net.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


def test_small_profile_forward():
    net = build_model(make_config("small", "loev++", "psts")).eval()
    with torch.inference_mode():
        out = net(torch.randn(2, CHUNK_SAMPLES))
    assert {k: v.shape for k, v in out["embeddings"].items()} == {
        "invariant": (2, 432), "pitch": (2, 432), "tempo": (2, 432)}


def test_heads_follow_variants():
    assert make_config("tiny", "loev++", "ps").heads == ("invariant", "pitch")
    assert make_config("tiny", "loev++", "ps").subspaces == ("invariant", "pitch")
    assert make_config("tiny", "mule", "psts").heads == ("invariant",)
    assert make_config("tiny", "loev", "psts").subspaces == ("all",)


def test_paper_sizes():
    """Paper Table III / Appendix C: LOEV 53M, LOEV++ 78M; output 1536 + 192 = 1728."""
    loev = build_model(make_config("paper", "loev", "psts"))
    loevpp = build_model(make_config("paper", "loev++", "psts"))
    n_loev, n_pp = count_parameters(loev), count_parameters(loevpp)
    assert 45e6 <= n_loev <= 70e6
    assert 18e6 <= n_pp - n_loev <= 32e6
    assert loevpp.embedding_dims == {"invariant": 1728, "pitch": 1728, "tempo": 1728}


def test_eval_is_deterministic():
    net = build_model(make_config("tiny", "loev++", "psts")).eval()
    y = torch.randn(2, CHUNK_SAMPLES)
    with torch.inference_mode():
        a, b = net(y)["embeddings"], net(y)["embeddings"]
    assert all(torch.equal(a[k], b[k]) for k in a)
