"""The reconstruction objective (``trainer.recon``): hand-computed targets and losses."""
from __future__ import annotations

import pytest
import torch

from engine.config import make_config
from engine.model.network import build_model
from trainer.recon import (SpectrogramDecoder, WithDecoder, concat_subspaces, recon_loss,
                           recon_target)


def test_target_pools_and_standardises_by_hand():
    # a 2 x 4 spectrogram pooled to 1 x 2: means of the left and right halves are 1 and 3
    spec = torch.tensor([[[[0.0, 2.0, 2.0, 4.0], [2.0, 0.0, 4.0, 2.0]]]])
    t = recon_target(spec, freq=1, frames=2, eps=0.0)
    # (1, 3): mean 2, std 1 -> (-1, 1)
    assert torch.allclose(t, torch.tensor([[-1.0, 1.0]]))
    # loudness does not matter: +10 dB everywhere gives the same target
    assert torch.allclose(recon_target(spec + 10, freq=1, frames=2), recon_target(spec, 1, 2))
    assert recon_target(spec[:, 0], freq=2, frames=2).shape == (1, 4)  # [B, F, T] accepted


def test_loss_is_the_mean_squared_error_by_hand():
    pred = torch.tensor([[1.0, 2.0], [0.0, 0.0]])
    target = torch.tensor([[1.0, 0.0], [1.0, -1.0]])
    # squared errors 0, 4, 1, 1 -> mean 1.5
    assert recon_loss(pred, target).item() == pytest.approx(1.5)
    assert recon_loss(target, target).item() == 0.0
    with pytest.raises(ValueError, match="does not match"):
        recon_loss(pred, target[:, :1])


def test_loss_gradient_reaches_the_prediction_only():
    pred = torch.zeros(1, 2, requires_grad=True)
    target = torch.tensor([[1.0, -1.0]], requires_grad=True)
    recon_loss(pred, target).backward()
    # d/dp mean((p - t)^2) = 2 (p - t) / n = (-1, 1)
    assert torch.allclose(pred.grad, torch.tensor([[-1.0, 1.0]]))
    assert target.grad is None


def test_concat_follows_the_given_order():
    emb = {"pitch": torch.ones(2, 2), "invariant": torch.zeros(2, 3)}
    v = concat_subspaces(emb, ("invariant", "pitch"))
    assert v.shape == (2, 5) and v[:, :3].sum() == 0 and v[:, 3:].sum() == 4


@pytest.mark.parametrize("branches", ["learned", "structured"])
def test_decoder_on_a_loevpp_model_reduces_its_loss(branches, one_torch_thread):
    torch.manual_seed(0)
    model = build_model(make_config("tiny", "loev++", "psts", "paper", branches))
    dec = SpectrogramDecoder(sum(model.embedding_dims.values()), hidden=64)
    both = WithDecoder(model, dec)
    y = torch.randn(2, 48000) * 0.1
    out = both(y)
    assert out["reconstruction"].shape == out["target"].shape == (2, 48 * 16)
    opt = torch.optim.Adam(dec.parameters(), lr=1e-2)
    first = recon_loss(out["reconstruction"], out["target"]).item()
    for _ in range(20):
        out = both(y)
        loss = recon_loss(out["reconstruction"], out["target"])
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.5 * first
