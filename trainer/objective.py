"""The LOEV / LOEV++ contrastive objective (paper Section II, eq. 1-3; DESIGN.md section 3).

Every anchor chunk gives M views; view ``i`` carries its anchor id and a tracking vector
``t_i`` in {0, 1}^K saying which variant augmentations (pitch shift, time stretch, in
``engine.config.VARIANTS`` order) it received.

* The invariant head (index 0) treats every other view of the same anchor as a positive.
* Head k (one per variant augmentation) only treats views j of the same anchor with
  ``t_jk = t_ik = 0`` as positives: two views that differ by a pitch shift are not
  "the same" for the pitch head, so the pitch subspace is free to keep pitch.
* The loss of a head is NT-Xent (SimCLR's normalised-temperature cross entropy) over
  cosine similarities / temperature with a denominator over all j != i, averaged over the
  positives of each row (SupCon's "outside" average, which reduces to SimCLR for one
  positive). Rows with no positive contribute nothing and are not counted.
* The total is the mean over the K + 1 heads that exist in the configuration.

Everything here is a short pure function of tensors, checked by hand in
``tests/test_objective.py`` (STYLE.md habit 4).

SemiSupCon (Guinot et al., arXiv 2407.13840): with labels, a head's positives also
include the views of *other* anchors that share a label valid for that head
(:func:`label_positives`). Which label serves which head is a choice made here:
the instrument family for the invariant head (it survives pitch and tempo changes),
the key moved by the view's own pitch shift for the pitch head, and the tempo scaled by
the view's own stretch rate for the tempo head. SemiSupCon's weighted variant for
multi-label data gives a pair a weight in [0, 1] from the overlap of its label sets
(:func:`weighted_label_positives`, here the sets of GM programs of each file), and
:func:`nt_xent` then takes the weighted mean of the positives' log-probabilities.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F

# Two tempi are "the same" when they differ by less than 4 % (acc1's tolerance).
TEMPO_TOLERANCE = 0.04


def positive_masks(anchor: torch.Tensor, applied: torch.Tensor) -> torch.Tensor:
    """Positive pairs of the invariant head and of each variant head.

    Parameters
    ----------
    anchor : LongTensor [B]
        Anchor id of each view (views of one anchor share it).
    applied : BoolTensor [B, K]
        Tracking vectors: ``applied[i, k]`` is True when view i got variant augmentation k.

    Returns
    -------
    BoolTensor [K + 1, B, B]
        Index 0: same anchor, j != i. Index k >= 1: same anchor, j != i, and neither view
        got augmentation k - 1 (``t_ik = t_jk = 0``).
    """
    if anchor.dim() != 1 or applied.dim() != 2 or applied.shape[0] != anchor.shape[0]:
        raise ValueError(f"need anchor [B] and applied [B, K], got {tuple(anchor.shape)} "
                         f"and {tuple(applied.shape)}")
    b = anchor.shape[0]
    same = anchor[:, None] == anchor[None, :]
    same &= ~torch.eye(b, dtype=torch.bool, device=anchor.device)
    clean = ~applied.bool()  # [B, K]
    both_clean = clean.T[:, :, None] & clean.T[:, None, :]  # [K, B, B]
    return torch.cat([same[None], same[None] & both_clean], dim=0)


def nt_xent(z: torch.Tensor, positives: torch.Tensor, temperature: float) -> torch.Tensor:
    """NT-Xent over cosine similarity (paper eq. 1-2), optionally with weighted positives.

    ``loss_i = -mean_{p in P(i)} log( exp(s_ip / tau) / sum_{j != i} exp(s_ij / tau) )``,
    averaged over the rows i that have at least one positive. With float weights
    ``w_ij`` in [0, 1] (SemiSupCon's weighted positives) the mean over P(i) becomes
    ``sum_j w_ij log p_ij / sum_j w_ij`` and rows whose weights sum to 0 are left out.

    Parameters
    ----------
    z : Tensor [B, D]
        Projections (normalised here).
    positives : BoolTensor [B, B] or FloatTensor [B, B]
        ``positives[i, j]``: j is a positive of i (bool), or its weight in [0, 1]
        (float). The diagonal is ignored.
    temperature : float

    Returns
    -------
    Tensor []
        The loss; 0 (still attached to ``z``'s graph) when no row has a positive.

    Raises
    ------
    ValueError
        ``temperature <= 0``, or float weights outside [0, 1].
    """
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    b = z.shape[0]
    zn = F.normalize(z.float(), dim=1)
    sim = zn @ zn.T / temperature
    eye = torch.eye(b, dtype=torch.bool, device=z.device)
    sim = sim.masked_fill(eye, float("-inf"))
    log_prob = sim - torch.logsumexp(sim, dim=1, keepdim=True)
    if positives.dtype != torch.bool:
        return _weighted_nt_xent(z, log_prob, positives, eye)
    pos = positives & ~eye
    n_pos = pos.sum(dim=1)
    rows = n_pos > 0
    if not bool(rows.any()):
        return z.sum() * 0.0
    per_row = torch.where(pos, log_prob, torch.zeros_like(log_prob)).sum(dim=1)
    return -(per_row[rows] / n_pos[rows]).mean()


def _weighted_nt_xent(z: torch.Tensor, log_prob: torch.Tensor, weights: torch.Tensor,
                      eye: torch.Tensor) -> torch.Tensor:
    """The float-weights branch of :func:`nt_xent` (``log_prob`` is -inf on the diagonal)."""
    w = weights.to(log_prob.dtype).masked_fill(eye, 0.0)
    if bool(((w < 0) | (w > 1) | w.isnan()).any()):
        raise ValueError("positive weights must lie in [0, 1]")
    w_sum = w.sum(dim=1)
    rows = w_sum > 0
    if not bool(rows.any()):
        return z.sum() * 0.0
    per_row = (torch.where(w > 0, log_prob, torch.zeros_like(log_prob)) * w).sum(dim=1)
    return -(per_row[rows] / w_sum[rows]).mean()


def combine_positives(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Union of two positive masks: OR of two bool masks, else the elementwise max.

    A bool mask counts as weight 1 where True, so self-supervised positives keep weight 1
    next to weighted label positives.
    """
    if a.dtype == torch.bool and b.dtype == torch.bool:
        return a | b
    return torch.maximum(a.float(), b.float())


def head_masks(method: str, heads: Sequence[str], variants: Sequence[str],
               masks: torch.Tensor) -> dict[str, torch.Tensor]:
    """Which positive mask each head of a method trains on.

    LOEV / LOEV++: head ``v`` uses the mask of its variant augmentation. MULE / MULE++
    (and MULE-Mixup, built as ``mule``) use the invariant mask for every head: "the same
    objective for all" (paper Section III baselines).
    """
    out = {}
    for h in heads:
        if h == "invariant" or method.startswith("mule"):
            out[h] = masks[0]
        else:
            out[h] = masks[1 + list(variants).index(h)]
    return out


def contrastive_loss(projections: Mapping[str, torch.Tensor], masks: Mapping[str, torch.Tensor],
                     *, temperature: float = 0.1) -> tuple[torch.Tensor, dict[str, float]]:
    """Mean NT-Xent over the heads (paper eq. 3).

    Parameters
    ----------
    projections : {head: Tensor [B, P]}
    masks : {head: BoolTensor [B, B] or FloatTensor [B, B]}
        From :func:`head_masks` (possibly combined with :func:`label_positives` or
        :func:`weighted_label_positives` by :func:`combine_positives`).
    temperature : float

    Returns
    -------
    (Tensor [], {head: float})
        The total loss and each head's value for logging.
    """
    losses = {h: nt_xent(z, masks[h], temperature) for h, z in projections.items()}
    total = torch.stack(list(losses.values())).mean()
    return total, {h: float(v.detach()) for h, v in losses.items()}


def mixup(y: torch.Tensor, *, generator: torch.Generator, max_ratio: float = 0.5) -> torch.Tensor:
    """MULE-Mixup's only augmentation: mix each view with another view of the batch.

    ``y_i' = (1 - lam_i) y_i + lam_i y_perm(i)`` with ``lam_i ~ U(0, max_ratio)``, so the
    view's own chunk always dominates (MULE, McCallum et al. 2022, in-batch mixup).

    Parameters
    ----------
    y : Tensor [B, T]
    generator : torch.Generator on ``y``'s device
    max_ratio : float

    Returns
    -------
    Tensor [B, T]
    """
    b = y.shape[0]
    perm = torch.randperm(b, generator=generator, device=y.device)
    lam = torch.rand(b, 1, generator=generator, device=y.device) * max_ratio
    return (1 - lam) * y + lam * y[perm]


# --- SemiSupCon label positives -------------------------------------------------------

def shifted_keys(keys: torch.Tensor, semitones: torch.Tensor) -> torch.Tensor:
    """Move keys (``engine.keys`` indices, -1 unknown) by each view's pitch shift, rounded to
    semitones: :func:`engine.keys.transpose` over a batch."""
    steps = torch.round(semitones).long()
    moved = (keys % 12 + steps) % 12 + 12 * (keys >= 12).long()
    return torch.where(keys >= 0, moved, keys)


def label_positives(labels: torch.Tensor, *, valid: torch.Tensor | None = None,
                    tolerance: float | None = None) -> torch.Tensor:
    """Views that share a label (SemiSupCon), diagonal false.

    Parameters
    ----------
    labels : Tensor [B]
        Integer class per view (``tolerance`` None), or a positive real (tempo) compared
        with relative ``tolerance``: ``|log(l_i / l_j)| < log(1 + tolerance)``.
    valid : BoolTensor [B], optional
        Views that have a label; unlabelled views get no supervised positive.
        Default: ``labels >= 0`` (integers) or ``labels > 0`` (reals).

    Returns
    -------
    BoolTensor [B, B]
    """
    b = labels.shape[0]
    if tolerance is None:
        ok = labels >= 0 if valid is None else valid.bool()
        share = labels[:, None] == labels[None, :]
    else:
        ok = labels > 0 if valid is None else valid.bool() & (labels > 0)
        safe = torch.where(labels > 0, labels.double(), torch.ones_like(labels, dtype=torch.float64))
        log_l = torch.log(safe)
        share = (log_l[:, None] - log_l[None, :]).abs() < math.log1p(tolerance)
    eye = torch.eye(b, dtype=torch.bool, device=labels.device)
    return share & ok[:, None] & ok[None, :] & ~eye


def weighted_label_positives(sets: torch.Tensor, valid: torch.Tensor | None = None
                             ) -> torch.Tensor:
    """Multi-label positives weighted by label overlap (SemiSupCon's weighted variant).

    ``w_ij = 2 |L_i & L_j| / (|L_i| + |L_j|)`` (the Dice overlap of the two label sets):
    1 for equal sets, 0 for disjoint ones.

    Parameters
    ----------
    sets : BoolTensor [B, L]
        Multi-hot label set of each view.
    valid : BoolTensor [B], optional
        Views that have labels. Views with an empty set count as unlabelled either way.

    Returns
    -------
    FloatTensor [B, B]
        0 on the diagonal and in the rows and columns of unlabelled views.
    """
    s = sets.bool()
    inter = (s[:, None, :] & s[None, :, :]).sum(dim=2).float()
    size = s.sum(dim=1).float()
    denom = size[:, None] + size[None, :]
    w = 2 * inter / denom.clamp_min(1.0)
    ok = size > 0 if valid is None else valid.bool() & (size > 0)
    keep = ok[:, None] & ok[None, :] & ~torch.eye(s.shape[0], dtype=torch.bool, device=s.device)
    return torch.where(keep, w, torch.zeros_like(w))


def supervised_masks(heads: Sequence[str], *, family: torch.Tensor, key: torch.Tensor,
                     tempo: torch.Tensor, semitones: torch.Tensor, rate: torch.Tensor,
                     programs: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Label positives of each head, each view's label following its own augmentation.

    Parameters
    ----------
    heads : the configuration's heads
    family : LongTensor [B]   instrument family id, -1 unlabelled
    key : LongTensor [B]      key 0..23 of the track, -1 unlabelled
    tempo : Tensor [B]        BPM of the track, 0 unlabelled
    semitones : Tensor [B]    each view's pitch shift (0 when none)
    rate : Tensor [B]         each view's stretch rate (1 when none)
    programs : BoolTensor [B, L], optional
        Multi-hot GM programs of the track (all False unlabelled). When given, the
        invariant head gets :func:`weighted_label_positives` of these sets instead of
        same-family positives (SemiSupCon's weighted variant).

    Returns
    -------
    {head: BoolTensor [B, B]}  (FloatTensor for the invariant head with ``programs``)
        Invariant head: same family. Pitch head: same key after the view's shift (a view
        shifted by +2 has its key moved by 2). Tempo head: tempo x rate within 4 %.
    """
    out = {}
    for h in heads:
        if h == "invariant":
            out[h] = label_positives(family) if programs is None else \
                weighted_label_positives(programs)
        elif h == "pitch":
            out[h] = label_positives(shifted_keys(key, semitones))
        elif h == "tempo":
            out[h] = label_positives(tempo * rate, tolerance=TEMPO_TOLERANCE)
    return out
