"""The contrastive objective against small examples computed by hand (paper eq. 1-3)."""
from __future__ import annotations

import math

import pytest
import torch

from trainer.objective import (combine_positives, contrastive_loss, head_masks,
                               label_positives, nt_xent, positive_masks,
                               shifted_keys, supervised_masks, weighted_label_positives)


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


def test_shift_keys():
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


def _multi_hot(*sets: set[int], width: int = 6) -> torch.Tensor:
    out = torch.zeros(len(sets), width, dtype=torch.bool)
    for i, members in enumerate(sets):
        out[i, list(members)] = True
    return out


def test_weighted_label_positives_by_hand():
    sets = _multi_hot({1, 2, 3}, {2, 3}, {4}, set(), {2, 3})
    w = weighted_label_positives(sets)
    assert w.dtype == torch.float32 and w.shape == (5, 5)
    assert float(w[0, 1]) == pytest.approx(0.8)  # 2 * 2 / (3 + 2)
    assert float(w[1, 4]) == pytest.approx(1.0) and float(w[0, 4]) == pytest.approx(0.8)
    assert float(w[0, 2]) == 0.0  # disjoint
    assert not w[3].any() and not w[:, 3].any()  # empty set: unlabelled
    assert not w.diagonal().any() and torch.equal(w, w.T)
    masked = weighted_label_positives(sets, valid=torch.tensor([True, True, True, True, False]))
    assert not masked[4].any() and not masked[:, 4].any()
    assert float(masked[0, 1]) == pytest.approx(0.8)


def test_nt_xent_float_zero_one_weights_equal_the_bool_mask():
    z = torch.randn(6, 4, generator=torch.Generator().manual_seed(2))
    pos = torch.rand(6, 6, generator=torch.Generator().manual_seed(3)) < 0.4
    pos[5] = False  # a row without positives is left out either way
    assert float(nt_xent(z, pos.float(), 0.2)) == pytest.approx(float(nt_xent(z, pos, 0.2)),
                                                                rel=1e-6)


def test_nt_xent_weighted_by_hand():
    z = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]], requires_grad=True)
    w = torch.tensor([[0.0, 1.0, 0.5], [0.5, 0.0, 0.0], [0.0, 0.0, 1.0]])  # row 2: diagonal only
    # tau = 1: rows 0 and 1 both see s = 1 (the twin) and s = 0 (view 2); L = log(e + 1)
    # row 0: (1 (1 - L) + 0.5 (0 - L)) / 1.5 = 2/3 - L;  row 1: 0.5 (1 - L) / 0.5 = 1 - L
    big_l = math.log(math.e + 1)
    expected = -((2 / 3 - big_l) + (1 - big_l)) / 2
    loss = nt_xent(z, w, 1.0)
    assert float(loss.detach()) == pytest.approx(expected, rel=1e-6)
    loss.backward()
    assert torch.isfinite(z.grad).all()
    assert float(nt_xent(z, torch.zeros(3, 3), 1.0).detach()) == 0.0
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        nt_xent(z, torch.full((3, 3), 1.5), 1.0)


def test_combine_positives_or_and_max():
    a = torch.tensor([[False, True], [False, False]])
    b = torch.tensor([[False, False], [True, False]])
    assert torch.equal(combine_positives(a, b), a | b)
    w = torch.tensor([[0.0, 0.4], [0.8, 0.0]])
    assert torch.equal(combine_positives(a, w), torch.tensor([[0.0, 1.0], [0.8, 0.0]]))


def test_supervised_masks_with_programs_weight_the_invariant_head():
    zeros = torch.zeros(3)
    sup = supervised_masks(("invariant", "pitch"), family=torch.tensor([0, 0, 1]),
                           key=torch.tensor([0, 0, 0]), tempo=zeros, semitones=zeros,
                           rate=torch.ones(3), programs=_multi_hot({1, 2, 3}, {2, 3}, {5}))
    assert sup["invariant"].dtype == torch.float32
    assert float(sup["invariant"][0, 1]) == pytest.approx(0.8)
    assert float(sup["invariant"][0, 2]) == 0.0  # same family does not matter any more
    assert sup["pitch"].dtype == torch.bool and _pairs(sup["pitch"]) == _sym((0, 1), (0, 2), (1, 2))
