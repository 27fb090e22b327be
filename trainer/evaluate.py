"""``loev-train eval``: retrieval, probing, invariance curves and robustness (paper Section III).

Everything is measured on a labelled folder (a ``labels.csv`` with ``file, key, tempo,
family`` columns, as ``loev-train corpus`` writes) and written to ``OUT/metrics.json``
plus PNG and CSV files that ``loev-train report`` turns into docs/RESULTS.md.

* Retrieval (paper Fig. 2): track embeddings (mean of chunk embeddings, L2-normalised),
  cosine kNN excluding the query, k in 1, 3, 5, 10: family precision@k, mean mir_eval
  weighted key score of the neighbours, tempo acc1 (within 4 %) / acc2 (also x2, x1/2,
  x3, x1/3) of the neighbours. Per subspace and ``all`` (the normalised subspaces
  concatenated).
* DSP baselines (``--baselines``): the same retrieval with trainer.baselines' descriptors,
  and with essentia's key and BPM estimates where essentia is installed.
* Probing (paper Table I/II, ``--probe``): frozen chunk embeddings, a shallow ReLU MLP with
  dropout trained with Adam; track-averaged predictions on held-out tracks.
* Invariance curves (paper Fig. 3, ``--curves``).
* Robustness (issue 8, ``--degrade``): degraded queries against the clean library.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from engine.config import CHUNK_SAMPLES, SAMPLE_RATE
from engine.errors import LoevError

KS = (1, 3, 5, 10)
TEMPO_TOLERANCE = 0.04
TEMPO_FACTORS = (1.0, 2.0, 0.5, 3.0, 1.0 / 3.0)
PITCH_CLASSES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")
_SEMITONE = {"C": 0, "B#": 0, "C#": 1, "DB": 1, "D": 2, "D#": 3, "EB": 3, "E": 4, "FB": 4, "F": 5,
             "E#": 5, "F#": 6, "GB": 6, "G": 7, "G#": 8, "AB": 8, "A": 9, "A#": 10, "BB": 10,
             "B": 11, "CB": 11}
DEGRADATIONS = ("noise_10db", "lowpass_4k", "bandlimit_7k")


class EvalError(LoevError):
    """The evaluation cannot run: no labelled tracks, a bad argument."""


@dataclass(frozen=True)
class Track:
    """One benchmark track and its labels (``None`` where the label is unknown)."""

    path: Path
    key: str | None = None
    tempo: float | None = None
    family: str | None = None
    pitch: int | None = None  # MIDI note (NSynth)
    tags: tuple[str, ...] | None = None  # multi-label tags (MagnaTagATune, MTG-Jamendo)
    split: str | None = None  # a dataset's own split; None: split_tracks decides

    @property
    def name(self) -> str:
        return self.path.name


# --------------------------------------------------------------------------- labels


def key_index(key: str | None) -> int | None:
    """``"Eb minor"`` -> 24-class index (major 0-11, minor 12-23); None if not a key."""
    if not key:
        return None
    parts = key.strip().split()
    if len(parts) != 2 or parts[1].lower() not in ("major", "minor"):
        return None
    pc = _SEMITONE.get(parts[0][0].upper() + parts[0][1:].upper().replace("♯", "#").replace("♭", "B"))
    if pc is None:
        return None
    return pc + (12 if parts[1].lower() == "minor" else 0)


def key_from_index(index: int) -> str:
    return f"{PITCH_CLASSES[index % 12]} {'minor' if index >= 12 else 'major'}"


def load_tracks(data: str | Path) -> list[Track]:
    """Tracks of a labelled folder (``labels.csv`` inside it, or the CSV itself)."""
    from trainer.corpus import read_labels

    data = Path(data)
    labels = data / "labels.csv" if data.is_dir() else data
    rows = read_labels(labels)
    tracks = []
    for r in rows:
        key = r.get("key") or None
        tempo = r.get("tempo")
        tracks.append(Track(path=Path(r["path"]),
                            key=key if key_index(key) is not None else None,
                            tempo=float(tempo) if tempo and tempo > 0 else None,
                            family=r.get("family") or None))
    if not tracks:
        raise EvalError(f"{labels}: no labelled tracks")
    return tracks


def tracks_from_dataset(name: str, root: str | Path) -> list[Track]:
    """Tracks of one of trainer.datasets' adapters, with the dataset's own split."""
    from trainer.datasets import load_dataset

    tracks = []
    for it in load_dataset(name, root):
        lab = it.labels
        tracks.append(Track(path=it.path, key=lab.get("key"), tempo=lab.get("tempo"), family=lab.get("family"),
                            pitch=lab.get("pitch"), tags=tuple(lab["tags"]) if "tags" in lab else None,
                            split=it.split))
    return tracks


# -------------------------------------------------------------------------- metrics


def key_score(reference: str, estimate: str) -> float:
    """mir_eval's weighted key score (1 same, 0.5 fifth, 0.3 relative, 0.2 parallel)."""
    import mir_eval

    return float(mir_eval.key.weighted_score(reference, estimate))


def tempo_hits(reference: float, estimate: float, *, tolerance: float = TEMPO_TOLERANCE) -> tuple[bool, bool]:
    """(acc1, acc2): ``estimate`` within ``tolerance`` of ``reference`` (acc2: of 1, 2, 1/2, 3 or 1/3 times it)."""
    acc1 = abs(estimate - reference) <= tolerance * reference
    acc2 = any(abs(estimate - f * reference) <= tolerance * f * reference for f in TEMPO_FACTORS)
    return bool(acc1), bool(acc2)


def cosine_similarity(queries: np.ndarray, library: np.ndarray) -> np.ndarray:
    """``[Nq, D]`` x ``[Nl, D]`` -> ``[Nq, Nl]`` cosine similarities."""
    q = queries / np.maximum(np.linalg.norm(queries, axis=1, keepdims=True), 1e-12)
    lib = library / np.maximum(np.linalg.norm(library, axis=1, keepdims=True), 1e-12)
    return q @ lib.T


def nearest(sim: np.ndarray, k: int, *, exclude_self: bool = True) -> np.ndarray:
    """Indices ``[Nq, k]`` of the k most similar library items; item i is never its own neighbour."""
    sim = np.array(sim, dtype=np.float64)
    if exclude_self:
        np.fill_diagonal(sim, -np.inf)
    # stable sort on -sim: ties go to the lower index, so results never depend on the run
    return np.argsort(-sim, axis=1, kind="stable")[:, :k]


def _key_table() -> np.ndarray:
    """``[24, 24]`` mir_eval weighted scores: row = reference key index, column = estimate."""
    return np.array([[key_score(key_from_index(r), key_from_index(e)) for e in range(24)] for r in range(24)])


def _pair_scores(tracks: Sequence[Track], metric: str) -> tuple[np.ndarray, np.ndarray]:
    """``idx [n]`` (the tracks that carry the label) and ``score [n, n]`` among them
    (query row, neighbour column)."""
    if metric in ("family", "pitch"):
        vals = [getattr(t, metric) for t in tracks]
        idx = np.array([i for i, v in enumerate(vals) if v is not None], dtype=np.int64)
        codes = {v: c for c, v in enumerate(sorted({str(vals[i]) for i in idx}))}
        lab = np.array([codes[str(vals[i])] for i in idx])
        return idx, (lab[:, None] == lab[None, :]).astype(np.float64)
    if metric == "key":
        keys = [key_index(t.key) for t in tracks]
        idx = np.array([i for i, k in enumerate(keys) if k is not None], dtype=np.int64)
        if len(idx) < 2:
            return idx, np.zeros((len(idx), len(idx)))
        k = np.array([keys[i] for i in idx])
        return idx, _key_table()[k[:, None], k[None, :]]
    if metric in ("tempo_acc1", "tempo_acc2"):
        idx = np.array([i for i, t in enumerate(tracks) if t.tempo is not None], dtype=np.int64)
        ref = np.array([tracks[i].tempo for i in idx], dtype=np.float64)[:, None]
        est = ref.T
        factors = (1.0,) if metric == "tempo_acc1" else TEMPO_FACTORS
        hit = np.zeros((len(idx), len(idx)), dtype=bool)
        for f in factors:
            hit |= np.abs(est - f * ref) <= TEMPO_TOLERANCE * f * ref
        return idx, hit.astype(np.float64)
    raise ValueError(f"unknown metric {metric!r}")


METRICS = ("family", "key", "tempo_acc1", "tempo_acc2", "pitch")


@dataclass
class PairTable:
    """The (query, neighbour) label scores of a benchmark, computed once and reused."""

    tracks: Sequence[Track]
    tables: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for m in METRICS:
            self.tables[m] = _pair_scores(self.tracks, m)


def retrieval_scores(sim: np.ndarray, pairs: PairTable, *, ks: Sequence[int] = KS) -> dict[str, dict[str, float]]:
    """Mean neighbour score per metric and k for a square similarity ``[N, N]``.

    Row i holds the similarity of query i to every library item; the query's own entry is
    never a neighbour. Per metric, only tracks that carry the label take part (as queries
    and as neighbours). Returns ``{metric: {str(k): score}}``.
    """
    out: dict[str, dict[str, float]] = {}
    for metric, (idx, sc) in pairs.tables.items():
        if len(idx) < 2:
            continue
        sub = sim[np.ix_(idx, idx)]
        out[metric] = {}
        for k in ks:
            kk = min(k, len(idx) - 1)
            nn = nearest(sub, kk)
            out[metric][str(k)] = float(np.take_along_axis(sc, nn, axis=1).mean())
    return out


def chance_scores(pairs: PairTable) -> dict[str, float]:
    """Expected neighbour score with random neighbours: the mean over all pairs i != j."""
    out = {}
    for metric, (idx, sc) in pairs.tables.items():
        if len(idx) < 2:
            continue
        out[metric] = float((sc.sum() - np.trace(sc)) / (len(idx) * (len(idx) - 1)))
    return out


def oracle_scores(pairs: PairTable, *, ks: Sequence[int] = KS) -> dict[str, dict[str, float]]:
    """The best score any retrieval could reach at each k: every query's k best-scoring others.

    On a small benchmark few tracks share a tempo within 4 %, so acc1@10 cannot be near 1;
    this is the ceiling to read the figures against.
    """
    out: dict[str, dict[str, float]] = {}
    for metric, (idx, sc) in pairs.tables.items():
        if len(idx) < 2:
            continue
        best = np.array(sc, dtype=np.float64)
        np.fill_diagonal(best, -np.inf)
        best = -np.sort(-best, axis=1)
        out[metric] = {str(k): float(best[:, : min(k, len(idx) - 1)].mean()) for k in ks}
    return out


def label_similarity(estimates: Sequence[Any], kind: str, *, seed: int = 0) -> np.ndarray:
    """Similarity ``[N, N]`` for "retrieval by estimated label" (essentia's key or BPM).

    Keys: mir_eval weighted score between the estimates; tempi: minus the log-ratio distance.
    A tiny seeded jitter breaks the many exact ties at random rather than by file order.
    """
    n = len(estimates)
    if kind == "key":
        sim = np.array([[key_score(a, b) for b in estimates] for a in estimates])
    elif kind == "tempo":
        t = np.log2(np.maximum(np.asarray(estimates, dtype=np.float64), 1e-3))
        sim = -np.abs(t[:, None] - t[None, :])
    else:
        raise ValueError(f"kind must be 'key' or 'tempo', got {kind!r}")
    return sim + 1e-9 * np.random.default_rng(seed).random((n, n))


# ---------------------------------------------------------------------- embeddings


@dataclass
class Embeddings:
    """Chunk-level embeddings of a benchmark, per subspace, and which track each chunk is from."""

    chunks: dict[str, np.ndarray]  # {subspace: [M, D]}, each row unit norm
    track_of_chunk: np.ndarray  # [M]

    def track_level(self) -> dict[str, np.ndarray]:
        """``{subspace: [N, D]}``: mean of each track's chunks, L2-normalised; plus ``all``."""
        n = int(self.track_of_chunk.max()) + 1
        out = {}
        for s, x in self.chunks.items():
            acc = np.zeros((n, x.shape[1]))
            np.add.at(acc, self.track_of_chunk, x)
            out[s] = _unit_rows(acc)
        if len(out) > 1:
            out["all"] = concat_subspaces(out)
        return out

    def with_all(self) -> dict[str, np.ndarray]:
        """Chunk-level ``{subspace: [M, D]}`` plus ``all``."""
        out = dict(self.chunks)
        if len(out) > 1:
            out["all"] = concat_subspaces(out)
        return out


def _unit_rows(x: np.ndarray) -> np.ndarray:
    return (x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)).astype(np.float32)


def concat_subspaces(emb: dict[str, np.ndarray]) -> np.ndarray:
    """V^++: the unit-normalised subspaces side by side, scaled so the whole is unit norm."""
    parts = [_unit_rows(v) for k, v in emb.items() if k != "all"]
    return (np.concatenate(parts, axis=1) / math.sqrt(len(parts))).astype(np.float32)


def embed_signals(embedder: Any, signals: Sequence[np.ndarray]) -> Embeddings:
    """Embed every chunk of every signal (at most ``embedder.max_chunks`` per track)."""
    from engine.model.embed import frame_chunks

    framed = [frame_chunks(y, max_chunks=embedder.max_chunks) for y in signals]
    owner = np.concatenate([np.full(len(f), i) for i, f in enumerate(framed)])
    flat = embedder.embed_chunks(np.concatenate(framed))
    return Embeddings({s: _unit_rows(v) for s, v in flat.items()}, owner)


# -------------------------------------------------------------------------- signals


def load_signals(tracks: Sequence[Track], *, max_seconds: float = 60.0) -> list[np.ndarray]:
    """Each track's first ``max_seconds`` at 16 kHz mono (bounds the cost of long tracks)."""
    from engine.audio.decode import load_audio

    return [load_audio(t.path, duration=max_seconds) for t in tracks]


def degrade(y: np.ndarray, kind: str, *, sr: int = SAMPLE_RATE, seed: int = 0) -> np.ndarray:
    """A degraded copy of a query (issue 8): ``noise_10db``, ``lowpass_4k`` or ``bandlimit_7k``.

    ``bandlimit_7k`` stands for a low-bitrate MP3's band limit (encoders cut at 11-16 kHz
    at 44.1 kHz; with 16 kHz audio, 7 kHz is the nearest cut still below Nyquist).
    """
    from scipy.signal import butter, sosfiltfilt

    y = np.asarray(y, dtype=np.float64)
    if kind == "noise_10db":
        power = max(float(np.mean(y ** 2)), 1e-12)
        noise = np.random.default_rng(seed).standard_normal(y.size) * math.sqrt(power / 10.0)
        return (y + noise).astype(np.float32)
    cutoffs = {"lowpass_4k": 4000.0, "bandlimit_7k": 7000.0}
    if kind not in cutoffs:
        raise ValueError(f"unknown degradation {kind!r}; expected one of {DEGRADATIONS}")
    sos = butter(8, cutoffs[kind], btype="low", fs=sr, output="sos")
    return sosfiltfilt(sos, y).astype(np.float32)


# --------------------------------------------------------------------------- probing


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
    keys = np.array([key_index(t.key) if t.key else -1 for t in tracks])
    if (keys[~test] >= 0).any() and (keys[test] >= 0).any():
        m = train_c & (keys[owner] >= 0)
        pred = train_probe(chunks[m], keys[owner[m]], task="classify", n_classes=24, options=options)
        probs = _track_mean(pred(chunks), owner, n)
        scored = [i for i in test_idx if keys[i] >= 0]
        out["key"] = float(np.mean([key_score(key_from_index(keys[i]), key_from_index(int(probs[i].argmax())))
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

    from engine.model.embed import chunk_starts
    from engine.audio.transforms import source_samples_needed
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
            outs.setdefault(s, []).append(_unit_rows(v))
    return {s: np.concatenate(v) for s, v in outs.items()}, np.array(owner), rates


# ---------------------------------------------------------------------------- curves


def mean_curves(embedder: Any, signals: Sequence[np.ndarray], *, n_tracks: int = 8,
                seconds: float = 9.0) -> dict[str, dict[str, Any]]:
    """Invariance curves (paper Fig. 3) averaged over the first ``n_tracks`` tracks."""
    from engine.model.curves import invariance_curve

    out: dict[str, dict[str, Any]] = {}
    for transform in ("pitch", "tempo"):
        curves = [invariance_curve(y, transform, embedder, seconds=seconds) for y in signals[:n_tracks]]
        subs = {s: np.mean([c["subspaces"][s] for c in curves], axis=0).tolist() for s in curves[0]["subspaces"]}
        out[transform] = {"values": curves[0]["values"], "subspaces": subs, "n_tracks": len(curves)}
    return out


def write_curves(curves: dict[str, dict[str, Any]], out_dir: Path, prefix: str) -> list[str]:
    """``{prefix}_curve_{pitch,tempo}.csv`` and ``{prefix}_curves.png``; returns the file names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = []
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for ax, (transform, c) in zip(axes, curves.items()):
        name = f"{prefix}_curve_{transform}.csv"
        with open(out_dir / name, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["value", *c["subspaces"]])
            for i, v in enumerate(c["values"]):
                w.writerow([v, *(f"{c['subspaces'][s][i]:.6f}" for s in c["subspaces"])])
        files.append(name)
        for s, ys in c["subspaces"].items():
            ax.plot(c["values"], ys, marker="o", ms=3, label=s)
        if transform == "tempo":
            ax.set_xscale("log", base=2)
        ax.set_xlabel("semitones" if transform == "pitch" else "stretch ratio")
        ax.set_ylabel("cosine distance to clean")
        ax.set_title(f"{prefix}: {transform}")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    png = f"{prefix}_curves.png"
    fig.savefig(out_dir / png, dpi=100)
    plt.close(fig)
    return files + [png]


# ------------------------------------------------------------------------- the suite


@dataclass(frozen=True)
class EvalOptions:
    subspaces: tuple[str, ...] = ("invariant", "pitch", "tempo", "all")
    baselines: bool = False
    probe: bool = False
    curves: bool = False
    degrade: bool = False
    max_seconds: float = 60.0
    max_chunks: int = 16
    curve_tracks: int = 8
    curve_seconds: float = 9.0
    probe_options: ProbeOptions = ProbeOptions()


def _select(emb: dict[str, np.ndarray], wanted: Sequence[str]) -> dict[str, np.ndarray]:
    """The wanted subspaces that exist; a single-space model (``all`` only) answers every name."""
    if set(emb) == {"all"}:
        return {"all": emb["all"]}
    return {s: v for s, v in emb.items() if s in wanted}


def evaluate_model(checkpoint: Path, tracks: Sequence[Track], signals: Sequence[np.ndarray], pairs: PairTable,
                   degraded: dict[str, list[np.ndarray]], opts: EvalOptions, out_dir: Path, name: str) -> dict[str, Any]:
    """Every requested figure for one checkpoint."""
    from engine.model.checkpoint import read_checkpoint_info
    from engine.model.embed import Embedder

    info = read_checkpoint_info(checkpoint)
    embedder = Embedder(checkpoint, max_chunks=opts.max_chunks)
    t0 = time.perf_counter()
    emb = embed_signals(embedder, signals)
    track_emb = _select(emb.track_level(), opts.subspaces)
    res: dict[str, Any] = {
        "checkpoint": str(checkpoint), "model_id": info.model_id, "dims": info.dims,
        "method": info.config.get("method"), "branches": info.config.get("branches", "learned"),
        "profile": info.config.get("profile", {}).get("name"),
        "frontend": info.config.get("frontend", {}).get("kind"),
        "provenance": info.config.get("provenance", {}),
        "retrieval": {s: retrieval_scores(cosine_similarity(v, v), pairs) for s, v in track_emb.items()},
    }
    if opts.degrade:
        res["robustness"] = {}
        for kind, sigs in degraded.items():
            q = _select(embed_signals(embedder, sigs).track_level(), opts.subspaces)
            res["robustness"][kind] = {s: retrieval_scores(cosine_similarity(q[s], track_emb[s]), pairs)
                                       for s in track_emb}
    if opts.probe:
        res["probe"] = _probe_all(embedder, emb, tracks, signals, opts)
    if opts.curves:
        res["curves"] = mean_curves(embedder, signals, n_tracks=opts.curve_tracks, seconds=opts.curve_seconds)
        res["files"] = write_curves(res["curves"], out_dir, name)
    res["seconds"] = round(time.perf_counter() - t0, 1)
    return res


def _probe_all(embedder: Any, emb: Embeddings, tracks: Sequence[Track], signals: Sequence[np.ndarray],
               opts: EvalOptions) -> dict[str, Any]:
    test = probe_split(tracks)
    st, sowner, rates = stretched_training_chunks(embedder, signals, ~test)
    stretched_all = Embeddings(st, sowner).with_all()
    chunks = _select(emb.with_all(), opts.subspaces)
    return {s: probe_subspace(x, emb.track_of_chunk, tracks, test, options=opts.probe_options,
                              stretched=(stretched_all[s], sowner, rates))
            for s, x in chunks.items()} | {"_split": {"train": int((~test).sum()), "test": int(test.sum())}}


def evaluate_baselines(tracks: Sequence[Track], signals: Sequence[np.ndarray], pairs: PairTable,
                       degraded: dict[str, list[np.ndarray]], opts: EvalOptions) -> dict[str, Any]:
    """The DSP descriptors (and essentia's estimates, where installed) through the same retrieval."""
    from trainer import baselines

    out: dict[str, Any] = {}
    for name, (target, _fn) in baselines.DESCRIPTORS.items():
        t0 = time.perf_counter()
        x = baselines.descriptor_matrix(list(signals), name)
        res: dict[str, Any] = {"target": target, "retrieval": retrieval_scores(cosine_similarity(x, x), pairs)}
        if opts.degrade:
            res["robustness"] = {kind: retrieval_scores(cosine_similarity(baselines.descriptor_matrix(sigs, name), x),
                                                        pairs) for kind, sigs in degraded.items()}
        res["seconds"] = round(time.perf_counter() - t0, 1)
        out[name] = res
    if baselines.essentia_available():
        out.update(_essentia_baselines(signals, pairs, degraded, opts))
    return out


def _essentia_baselines(signals: Sequence[np.ndarray], pairs: PairTable, degraded: dict[str, list[np.ndarray]],
                        opts: EvalOptions) -> dict[str, Any]:
    from trainer import baselines

    est = [baselines.essentia_estimates(y) for y in signals]
    out: dict[str, Any] = {}
    for kind, target in (("key", "key"), ("tempo", "tempo")):
        vals = [e[kind] for e in est]
        res: dict[str, Any] = {"target": target, "retrieval": retrieval_scores(label_similarity(vals, kind), pairs)}
        res["estimates_vs_truth"] = _estimate_accuracy(vals, pairs.tracks, kind)
        out[f"essentia_{kind}"] = res
    if opts.degrade:
        for kind_deg, sigs in degraded.items():
            dest = [baselines.essentia_estimates(y) for y in sigs]
            for kind in ("key", "tempo"):
                sim = _cross_label_similarity([e[kind] for e in dest], [e[kind] for e in est], kind)
                out[f"essentia_{kind}"].setdefault("robustness", {})[kind_deg] = retrieval_scores(sim, pairs)
    return out


def _cross_label_similarity(queries: Sequence[Any], library: Sequence[Any], kind: str) -> np.ndarray:
    both = label_similarity(list(queries) + list(library), kind)
    n = len(queries)
    return both[:n, n:]


def _estimate_accuracy(values: Sequence[Any], tracks: Sequence[Track], kind: str) -> dict[str, float]:
    """How good the estimator is as an estimator (not as retrieval): key score, tempo acc1/acc2."""
    if kind == "key":
        s = [key_score(t.key, v) for t, v in zip(tracks, values) if t.key]
        return {"key": float(np.mean(s))} if s else {}
    hits = np.array([tempo_hits(t.tempo, v) for t, v in zip(tracks, values) if t.tempo])
    return {"tempo_acc1": float(hits[:, 0].mean()), "tempo_acc2": float(hits[:, 1].mean())} if len(hits) else {}


def _model_names(checkpoints: Sequence[Path]) -> list[str]:
    names: list[str] = []
    for c in checkpoints:
        base = c.stem if c.stem not in ("model", "checkpoint") else f"{c.parent.name}"
        name, i = base, 2
        while name in names:
            name, i = f"{base}-{i}", i + 1
        names.append(name)
    return names


def run_eval(checkpoints: Sequence[Path], data: Path, out_dir: Path, opts: EvalOptions,
             log: Callable[[str], None] = print, *, dataset: str | None = None) -> dict[str, Any]:
    """Run the suite and write ``out_dir/metrics.json``; returns what it wrote.

    ``data`` is a labelled folder (``labels.csv``), or with ``dataset`` the root of one of
    trainer.datasets' layouts.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    tracks = load_tracks(data) if dataset is None else tracks_from_dataset(dataset, data)
    t0 = time.perf_counter()
    signals = load_signals(tracks, max_seconds=opts.max_seconds)
    pairs = PairTable(tracks)
    degraded = ({k: [degrade(y, k, seed=i) for i, y in enumerate(signals)] for k in DEGRADATIONS}
                if opts.degrade else {})
    metrics: dict[str, Any] = {
        "data": str(Path(data).resolve()), "dataset": dataset or "labels.csv", "n_tracks": len(tracks), "ks": list(KS),
        "audio_minutes": round(sum(len(y) for y in signals) / SAMPLE_RATE / 60, 2),
        "labelled": {m: len(idx) for m, (idx, _s) in pairs.tables.items()},
        "chance": chance_scores(pairs), "oracle": oracle_scores(pairs), "degradations": list(degraded), "models": {},
    }
    log(f"eval: {len(tracks)} tracks, {metrics['audio_minutes']} min loaded in {time.perf_counter() - t0:.1f} s")
    if opts.baselines:
        metrics["baselines"] = evaluate_baselines(tracks, signals, pairs, degraded, opts)
        log(f"eval: baselines done ({', '.join(metrics['baselines'])})")
    for ckpt, name in zip(checkpoints, _model_names(checkpoints)):
        metrics["models"][name] = evaluate_model(ckpt, tracks, signals, pairs, degraded, opts, out_dir, name)
        log(f"eval: {name} done in {metrics['models'][name]['seconds']} s")
    tmp = out_dir / "metrics.json.tmp"
    tmp.write_text(json.dumps(metrics, indent=1))
    tmp.replace(out_dir / "metrics.json")
    return metrics


# ------------------------------------------------------------------------- the command


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``loev-train eval``."""
    parser.add_argument("--checkpoint", type=Path, nargs="*", default=[], help="checkpoints to evaluate")
    parser.add_argument("--data", type=Path, required=True,
                        help="labelled folder (with labels.csv), or a dataset root with --dataset")
    parser.add_argument("--dataset", default=None,
                        help="read --data as this dataset's standard layout (trainer.datasets: mtg_jamendo, "
                             "magnatagatune, giantsteps_key, mtg_giantsteps_key, nsynth, gtzan, acm_mirum, "
                             "hainsworth, giantsteps_tempo)")
    parser.add_argument("--out", type=Path, required=True, help="folder for metrics.json, PNG and CSV")
    parser.add_argument("--subspaces", default="invariant,pitch,tempo,all",
                        help="comma list of invariant, pitch, tempo, all (default: all four)")
    parser.add_argument("--baselines", action="store_true", help="DSP descriptors (and essentia) on the same tracks")
    parser.add_argument("--probe", action="store_true", help="MLP probes on frozen embeddings")
    parser.add_argument("--curves", action="store_true", help="invariance curves (PNG + CSV)")
    parser.add_argument("--degrade", action="store_true", help="robustness: degraded queries, clean library")
    parser.add_argument("--max-seconds", type=float, default=60.0, help="seconds read per track (default 60)")
    parser.add_argument("--curve-tracks", type=int, default=8, help="tracks averaged per curve (default 8)")
    parser.add_argument("--curve-seconds", type=float, default=9.0,
                        help="seconds of each track a curve looks at (default 9)")
    parser.add_argument("--probe-steps", type=int, default=500, help="probe training steps (default 500)")


def run(args: argparse.Namespace) -> int:
    """Run ``loev-train eval``."""
    subspaces = tuple(s.strip() for s in args.subspaces.split(",") if s.strip())
    bad = [s for s in subspaces if s not in ("invariant", "pitch", "tempo", "all")]
    if bad:
        raise EvalError(f"unknown subspace(s) {', '.join(bad)}; expected invariant, pitch, tempo, all")
    if not args.checkpoint and not args.baselines:
        raise EvalError("nothing to evaluate: give --checkpoint FILE... and/or --baselines")
    opts = EvalOptions(subspaces=subspaces, baselines=args.baselines, probe=args.probe, curves=args.curves,
                       degrade=args.degrade, max_seconds=args.max_seconds, curve_tracks=args.curve_tracks,
                       curve_seconds=args.curve_seconds,
                       probe_options=ProbeOptions(steps=args.probe_steps))
    metrics = run_eval(list(args.checkpoint), args.data, args.out, opts, dataset=args.dataset)
    print(f"{args.out / 'metrics.json'}: {len(metrics['models'])} model(s), "
          f"{len(metrics.get('baselines', {}))} baseline(s) on {metrics['n_tracks']} tracks")
    for name, b in metrics.get("baselines", {}).items():
        r = b["retrieval"]
        print(f"  {name:18s} key@5 {r.get('key', {}).get('5', float('nan')):.3f}  "
              f"tempo acc1@5 {r.get('tempo_acc1', {}).get('5', float('nan')):.3f}  "
              f"family@5 {r.get('family', {}).get('5', float('nan')):.3f}")
    for name, m in metrics["models"].items():
        for s, r in m["retrieval"].items():
            print(f"  {name}/{s:10s} key@5 {r.get('key', {}).get('5', float('nan')):.3f}  "
                  f"tempo acc1@5 {r.get('tempo_acc1', {}).get('5', float('nan')):.3f}  "
                  f"family@5 {r.get('family', {}).get('5', float('nan')):.3f}")
    return 0
