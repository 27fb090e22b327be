"""The contrastive objective against small examples computed by hand (paper eq. 1-3)."""
from __future__ import annotations

import math

import pytest
import torch

from trainer.objective import (contrastive_loss, head_masks, label_positives, nt_xent,
                               parse_key, positive_masks, shifted_keys, supervised_masks)


def _pairs(mask: torch.Tensor) -> set[tuple[int, int]]:
    return {(i, j) for i, j in mask.nonzero().tolist()}


def _sym(*pairs: tuple[int, int]) -> set[tuple[int, int]]:
    return set(pairs) | {(j, i) for i, j in pairs}


def test_positive_masks_by_hand():
    anchor = torch.tensor([0, 0, 0, 1, 1])
    # view 1 pitch-shifted, view 3 time-stretched
    applied = torch.tensor([[0, 0], [1, 0], [0, 0], [0, 1], [0, 0]], dtype=torch.bool)
    m = positive_masks(anchor, applied)
    assert m.shape == (3, 5, 5) and m.dtype == torch.bool
    assert _pairs(m[0]) == _sym((0, 1), (0, 2), (1, 2), (3, 4))
    assert _pairs(m[1]) == _sym((0, 2), (3, 4))  # pitch head: both views unshifted
    assert _pairs(m[2]) == _sym((0, 1), (0, 2), (1, 2))  # tempo head: both unstretched
    assert not m.diagonal(dim1=1, dim2=2).any()


def test_positive_masks_rejects_bad_shapes():
    with pytest.raises(ValueError, match="anchor"):
        positive_masks(torch.zeros(3, dtype=torch.long), torch.zeros(4, 2, dtype=torch.bool))


def test_nt_xent_one_positive_by_hand():
    z = torch.tensor([[1.0, 0.0], [2.0, 0.0], [0.0, 3.0]])  # norms do not matter: cosine
    pos = torch.zeros(3, 3, dtype=torch.bool)
    pos[0, 1] = pos[1, 0] = True  # row 2 has no positive and is left out of the mean
    # row 0: -log(e^1 / (e^1 + e^0)); row 1 the same
    expected = math.log(1 + math.e) - 1
    assert float(nt_xent(z, pos, 1.0)) == pytest.approx(expected, rel=1e-6)


def test_nt_xent_two_positives_and_temperature_by_hand():
    z = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    pos = torch.zeros(4, 4, dtype=torch.bool)
    pos[0, 1] = pos[0, 2] = True
    # tau = 0.5: s01 = 2, s02 = 0, s03 = -2; the denominator runs over j != 0 only
    log_den = math.log(math.exp(2) + 1 + math.exp(-2))
    expected = -((2 - log_den) + (0 - log_den)) / 2
    assert float(nt_xent(z, pos, 0.5)) == pytest.approx(expected, rel=1e-6)


def test_nt_xent_without_positives_is_zero_with_a_graph():
    z = torch.randn(4, 3, requires_grad=True)
    loss = nt_xent(z, torch.zeros(4, 4, dtype=torch.bool), 0.1)
    assert float(loss.detach()) == 0.0
    loss.backward()
    assert z.grad is not None and float(z.grad.abs().sum()) == 0.0


def test_nt_xent_ignores_the_diagonal():
    z = torch.randn(4, 8, generator=torch.Generator().manual_seed(0))
    pos = torch.zeros(4, 4, dtype=torch.bool)
    pos[0, 1] = pos[1, 0] = True
    with_diag = pos | torch.eye(4, dtype=torch.bool)
    assert torch.allclose(nt_xent(z, pos, 0.1), nt_xent(z, with_diag, 0.1))


def test_contrastive_loss_averages_heads():
    g = torch.Generator().manual_seed(1)
    anchor = torch.tensor([0, 0, 1, 1])
    applied = torch.tensor([[0, 0], [1, 0], [0, 0], [0, 0]], dtype=torch.bool)
    masks = head_masks("loev++", ("invariant", "pitch", "tempo"), ("pitch", "tempo"),
                       positive_masks(anchor, applied))
    proj = {h: torch.randn(4, 5, generator=g) for h in ("invariant", "pitch", "tempo")}
    total, per = contrastive_loss(proj, masks, temperature=0.1)
    manual = [float(nt_xent(proj[h], masks[h], 0.1)) for h in proj]
    assert float(total) == pytest.approx(sum(manual) / 3, rel=1e-6)
    assert per["pitch"] == pytest.approx(manual[1], rel=1e-6)
    # MULE++: every head trains on the invariant mask
    mule = head_masks("mule++", ("invariant", "pitch", "tempo"), ("pitch", "tempo"),
                      positive_masks(anchor, applied))
    assert all(torch.equal(m, mule["invariant"]) for m in mule.values())
    assert not torch.equal(masks["pitch"], masks["invariant"])


def test_parse_and_shift_keys():
    assert parse_key("C major") == 0
    assert parse_key("a minor") == 21
    assert parse_key("F#:min") == 18
    assert parse_key("B- minor") == 22 and parse_key("Bb major") == 10
    assert parse_key("E") == 4 and parse_key("e") == 16
    assert parse_key("") is None and parse_key("nonsense") is None
    keys = torch.tensor([0, 21, 11, -1])
    moved = shifted_keys(keys, torch.tensor([2.0, 3.0, 1.0, 2.0]))
    assert moved.tolist() == [2, 12, 0, -1]  # C->D, a->c minor, B->C, unknown stays


def test_label_positives_follow_each_views_augmentation():
    # Two tracks in C major and D major; view 1 (C) shifted +2 lands in D with track 2.
    key = torch.tensor([0, 0, 2, 2, -1])
    semis = torch.tensor([0.0, 2.0, 0.0, 0.0, 0.0])
    tempo = torch.tensor([100.0, 100.0, 120.0, 80.0, 0.0])
    rate = torch.tensor([1.0, 1.2, 1.0, 1.0, 1.0])  # view 1 at 120 BPM
    family = torch.tensor([0, 0, 1, 1, -1])
    sup = supervised_masks(("invariant", "pitch", "tempo"), family=family, key=key,
                           tempo=tempo, semitones=semis, rate=rate)
    assert _pairs(sup["pitch"]) == _sym((1, 2), (1, 3), (2, 3))
    assert _pairs(sup["tempo"]) == _sym((1, 2))
    assert _pairs(sup["invariant"]) == _sym((0, 1), (2, 3))
    # unlabelled view 4 has no supervised positive; tolerance is relative
    assert _pairs(label_positives(torch.tensor([100.0, 103.0, 105.0]), tolerance=0.04)) == \
        _sym((0, 1), (1, 2))
