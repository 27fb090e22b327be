"""Probing of ``loev-train eval --probe`` (paper Table I/II): shallow MLPs on frozen embeddings.

A probe is one hidden ReLU layer with dropout, trained with Adam on the chunk embeddings
of the training tracks and scored on the track-averaged predictions of the test tracks:
key (mir_eval weighted score), tempo (log2 BPM regression, acc1/acc2), instrument family
(accuracy, ROC-AUC, mAP), NSynth pitch (accuracy) and tags (ROC-AUC, mAP).
"""
from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from engine.config import CHUNK_SAMPLES, SAMPLE_RATE
from engine.keys import KEY_NAMES, N_KEYS, parse_key
from trainer.benchmark import Track, unit_rows
from trainer.metrics import key_score, tempo_hits


def split_tracks(names: Sequence[str], *, test_fraction: float = 0.3) -> np.ndarray:
    """Deterministic track-level split: True for test tracks (the lowest CRC32s of the names)."""
    order = np.argsort([zlib.crc32(n.encode()) for n in names], kind="stable")
    test = np.zeros(len(names), dtype=bool)
    test[order[: max(1, int(round(test_fraction * len(names))))]] = True
    return test


def probe_split(tracks: Sequence[Track]) -> np.ndarray:
    """Test mask: the dataset's own "test" split where the tracks carry one, else :func:`split_tracks`."""
    if all(t.split is not None for t in tracks) and any(t.split == "test" for t in tracks) \
            and any(t.split != "test" for t in tracks):
        return np.array([t.split == "test" for t in tracks])
    return split_tracks([t.name for t in tracks])


@dataclass(frozen=True)
class ProbeOptions:
    """The probe of paper Section III: one hidden ReLU layer with dropout, Adam."""

    hidden: int = 256
    dropout: float = 0.3
    lr: float = 1e-3
    weight_decay: float = 1e-4
    steps: int = 500
    batch_size: int = 128
    seed: int = 0


def train_probe(x: np.ndarray, y: np.ndarray, *, task: str, n_classes: int = 0,
                options: ProbeOptions = ProbeOptions()) -> Callable[[np.ndarray], np.ndarray]:
    """Fit an MLP probe on frozen features ``x [M, D]``; returns a predictor.

    ``task`` is ``"classify"`` (``y`` int classes; the predictor returns probabilities
    ``[M, n_classes]``), ``"multilabel"`` (``y [M, L]`` 0/1; sigmoid probabilities ``[M, L]``)
    or ``"regress"`` (``y`` float; the predictor returns ``[M]``).
    """
    import torch
    from torch import nn

    gen = torch.Generator().manual_seed(options.seed)
    torch.manual_seed(options.seed)
    mean, std = x.mean(axis=0), x.std(axis=0) + 1e-6
    xt = torch.from_numpy(((x - mean) / std).astype(np.float32))
    out_dim = {"classify": n_classes, "multilabel": int(np.shape(y)[1]) if np.ndim(y) == 2 else 0}.get(task, 1)
    net = nn.Sequential(nn.Linear(x.shape[1], options.hidden), nn.ReLU(), nn.Dropout(options.dropout),
                        nn.Linear(options.hidden, out_dim))
    if task == "classify":
        yt = torch.from_numpy(np.asarray(y, dtype=np.int64))
        loss_fn: Callable[..., Any] = nn.CrossEntropyLoss()
    elif task == "multilabel":
        yt = torch.from_numpy(np.asarray(y, dtype=np.float32))
        loss_fn = nn.BCEWithLogitsLoss()
    else:
        y_mean, y_std = float(np.mean(y)), float(np.std(y)) + 1e-6
        yt = torch.from_numpy(((np.asarray(y) - y_mean) / y_std).astype(np.float32))
        loss_fn = lambda p, t: nn.functional.mse_loss(p[:, 0], t)  # noqa: E731
    opt = torch.optim.Adam(net.parameters(), lr=options.lr, weight_decay=options.weight_decay)
    # A probe's matrices are tiny: several threads only wait on each other (25x slower
    # measured on a loaded 2-core machine), so train on one and give the others back.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.enable_grad():
            net.train()
            step = 0
            while step < options.steps:  # epochs of shuffled minibatches, cut at a fixed step count
                perm = torch.randperm(len(xt), generator=gen)
                for i in range(0, len(xt), options.batch_size):
                    b = perm[i : i + options.batch_size]
                    opt.zero_grad()
                    loss_fn(net(xt[b]), yt[b]).backward()
                    opt.step()
                    step += 1
                    if step >= options.steps:
                        break
    finally:
        torch.set_num_threads(threads)
    net.eval()

    def predict(z: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            out = net(torch.from_numpy(((z - mean) / std).astype(np.float32)))
        if task == "classify":
            return torch.softmax(out, dim=1).numpy()
        if task == "multilabel":
            return torch.sigmoid(out).numpy()
        return out[:, 0].numpy() * y_std + y_mean

    return predict


def _track_mean(values: np.ndarray, owner: np.ndarray, n: int) -> np.ndarray:
    acc = np.zeros((n,) + values.shape[1:])
    np.add.at(acc, owner, values)
    return acc / np.maximum(np.bincount(owner, minlength=n), 1).reshape((n,) + (1,) * (values.ndim - 1))


def probe_subspace(chunks: np.ndarray, owner: np.ndarray, tracks: Sequence[Track], test: np.ndarray, *,
                   stretched: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
                   options: ProbeOptions = ProbeOptions()) -> dict[str, float]:
    """Key, tempo and family probes on one subspace's chunk embeddings ``[M, D]``.

    Trained on the chunks of the training tracks, scored on track-averaged predictions of
    the test tracks. ``stretched`` = (chunks ``[S, D]``, owner ``[S]``, rates ``[S]``): time-
    stretched training chunks whose tempo label follows the stretch (paper: 0.8-1.2).
    """
    n = len(tracks)
    train_c = ~test[owner]
    test_idx = np.flatnonzero(test)
    out: dict[str, float] = {}
    keys = np.array([k if (k := parse_key(t.key)) is not None else -1 for t in tracks])
    if (keys[~test] >= 0).any() and (keys[test] >= 0).any():
        m = train_c & (keys[owner] >= 0)
        pred = train_probe(chunks[m], keys[owner[m]], task="classify", n_classes=N_KEYS, options=options)
        probs = _track_mean(pred(chunks), owner, n)
        scored = [i for i in test_idx if keys[i] >= 0]
        out["key"] = float(np.mean([key_score(KEY_NAMES[keys[i]], KEY_NAMES[int(probs[i].argmax())])
                                    for i in scored]))
    tempi = np.array([t.tempo if t.tempo else np.nan for t in tracks])
    if np.isfinite(tempi[~test]).any() and np.isfinite(tempi[test]).any():
        m = train_c & np.isfinite(tempi[owner])
        x, target = chunks[m], np.log2(tempi[owner[m]])
        if stretched is not None:
            sx, sowner, rates = stretched
            sm = np.isfinite(tempi[sowner]) & ~test[sowner]
            x = np.concatenate([x, sx[sm]])
            target = np.concatenate([target, np.log2(tempi[sowner[sm]] * rates[sm])])
        pred = train_probe(x, target, task="regress", options=options)
        est = 2.0 ** _track_mean(pred(chunks), owner, n)
        hits = np.array([tempo_hits(tempi[i], est[i]) for i in test_idx if np.isfinite(tempi[i])])
        out["tempo_acc1"], out["tempo_acc2"] = float(hits[:, 0].mean()), float(hits[:, 1].mean())
    out.update(_family_probe(chunks, owner, tracks, test, train_c, options))
    out.update(_pitch_probe(chunks, owner, tracks, test, train_c, options))
    out.update(_tags_probe(chunks, owner, tracks, test, train_c, options))
    return out


def _pitch_probe(chunks: np.ndarray, owner: np.ndarray, tracks: Sequence[Track], test: np.ndarray,
                 train_c: np.ndarray, options: ProbeOptions) -> dict[str, float]:
    """NSynth-style pitch classification over MIDI notes 0-127: accuracy."""
    pitch = np.array([t.pitch if t.pitch is not None else -1 for t in tracks])
    if not ((pitch[~test] >= 0).any() and (pitch[test] >= 0).any()):
        return {}
    m = train_c & (pitch[owner] >= 0)
    pred = train_probe(chunks[m], pitch[owner[m]], task="classify", n_classes=128, options=options)
    probs = _track_mean(pred(chunks), owner, len(tracks))
    scored = [i for i in np.flatnonzero(test) if pitch[i] >= 0]
    return {"pitch_acc": float(np.mean([probs[i].argmax() == pitch[i] for i in scored]))}


def _tags_probe(chunks: np.ndarray, owner: np.ndarray, tracks: Sequence[Track], test: np.ndarray,
                train_c: np.ndarray, options: ProbeOptions) -> dict[str, float]:
    """Multi-label tagging (sigmoid outputs, binary cross-entropy): macro ROC-AUC and mAP."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    if not any(t.tags for t in tracks):
        return {}
    vocab = sorted({tag for t in tracks for tag in (t.tags or ())})
    col = {tag: i for i, tag in enumerate(vocab)}
    y = np.zeros((len(tracks), len(vocab)), dtype=np.float32)
    for i, t in enumerate(tracks):
        for tag in t.tags or ():
            y[i, col[tag]] = 1.0
    pred = train_probe(chunks[train_c], y[owner[train_c]], task="multilabel", options=options)
    probs = _track_mean(pred(chunks), owner, len(tracks))[test]
    truth = y[test]
    present = [c for c in range(len(vocab)) if 0 < truth[:, c].sum() < len(truth)]
    if not present:
        return {}
    return {"tags_roc_auc": float(roc_auc_score(truth[:, present], probs[:, present], average="macro")),
            "tags_map": float(average_precision_score(truth[:, present], probs[:, present], average="macro"))}


def _family_probe(chunks: np.ndarray, owner: np.ndarray, tracks: Sequence[Track], test: np.ndarray,
                  train_c: np.ndarray, options: ProbeOptions) -> dict[str, float]:
    from sklearn.metrics import average_precision_score, roc_auc_score

    fams = [t.family for t in tracks]
    classes = sorted({f for f, te in zip(fams, test) if f is not None and not te})
    if len(classes) < 2:
        return {}
    index = {c: i for i, c in enumerate(classes)}
    labels = np.array([index.get(f, -1) if f is not None else -1 for f in fams])
    m = train_c & (labels[owner] >= 0)
    pred = train_probe(chunks[m], labels[owner[m]], task="classify", n_classes=len(classes), options=options)
    probs = _track_mean(pred(chunks), owner, len(tracks))
    scored = np.array([i for i in np.flatnonzero(test) if labels[i] >= 0])
    if len(scored) == 0:
        return {}
    truth = labels[scored]
    out = {"family_acc": float((probs[scored].argmax(axis=1) == truth).mean())}
    onehot = np.eye(len(classes))[truth]
    present = [c for c in range(len(classes)) if 0 < onehot[:, c].sum() < len(scored)]
    if present:
        out["family_roc_auc"] = float(roc_auc_score(onehot[:, present], probs[scored][:, present], average="macro"))
        out["family_map"] = float(average_precision_score(onehot[:, present], probs[scored][:, present],
                                                          average="macro"))
    return out


def stretched_training_chunks(embedder: Any, signals: Sequence[np.ndarray], train: np.ndarray, *,
                              seed: int = 0, low: float = 0.8, high: float = 1.2) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """One time-stretched copy of every training chunk, embedded: ``({s: [S, D]}, owner [S], rates [S])``.

    Each stretched chunk is cut from enough source audio to fill all 3 s (DESIGN.md 3).
    """
    import torch

    from engine.audio.transforms import source_samples_needed
    from engine.model.embed import chunk_starts
    from engine.model.transforms import time_stretch

    rng = np.random.default_rng(seed)
    need = source_samples_needed(CHUNK_SAMPLES, high)
    sources, owner = [], []
    for i in np.flatnonzero(train):
        y = signals[i]
        for s in chunk_starts(max(len(y) - need + CHUNK_SAMPLES, 1), max_chunks=embedder.max_chunks):
            piece = y[s : s + need]
            sources.append(np.pad(piece, (0, need - len(piece))))
            owner.append(i)
    rates = rng.uniform(low, high, size=len(sources)).astype(np.float32)
    outs: dict[str, list[np.ndarray]] = {}
    for a in range(0, len(sources), 32):
        with torch.inference_mode():
            x = time_stretch(torch.from_numpy(np.stack(sources[a : a + 32])), torch.from_numpy(rates[a : a + 32]),
                             out_samples=CHUNK_SAMPLES, sr=SAMPLE_RATE).numpy()
        for s, v in embedder.embed_chunks(x).items():
            outs.setdefault(s, []).append(unit_rows(v))
    return {s: np.concatenate(v) for s, v in outs.items()}, np.array(owner), rates
