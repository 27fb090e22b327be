"""``loev-train heads``: train the key, tempo and type heads on a frozen checkpoint.

The encoder is not touched. Every labelled file of the training corpora is embedded with
it, as the library would store it, together with shifted and stretched copies (a pitch
shift transposes the key, a time stretch scales the BPM: the few songs then cover all 24
keys and a wide tempo range), and a small synthetic set rendered here (chord progressions
in known keys, click tracks, single hits, silence). The embeddings are cached (``npz``,
keyed by the model id, the labels file and the augmentation) so a rerun only trains.
Three small MLPs are trained in torch with class-balanced cross-entropy; each keeps the
epoch that scores best on a validation split of the training files (by file, so a file's
copies never straddle it), scored with the shipped numpy decoding
(:class:`engine.model.heads.Heads`). The output is the source checkpoint with the heads
added (:func:`engine.model.checkpoint.save_with_heads`): same model id.

Held-out material (a ``bench`` split, the MuseScore_General soundfont) is refused.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from engine import keys
from engine.config import CHUNK_SAMPLES, SAMPLE_RATE
from engine.errors import LoevError
from engine.model.heads import (BPM_TOLERANCE, HEAD_SUBSPACES, HEADS_FORMAT, NO_KEY, NO_TEMPO,
                                SOUND_TYPES, Estimate, Heads, heads_from_arrays, leading_part)
from engine.model.kernels import bpm_bins

NO_KEY_CLASS = keys.N_KEYS  # class 24
UNKNOWN = -1  # a label the file does not have (a melodic one-shot's key): no loss
MUSIC_TYPES = ("song", "music_loop")


class HeadsError(LoevError):
    """The heads cannot be trained: no data, held-out data, a bad argument."""


# ----------------------------------------------------------------------------- data


@dataclass
class Labelled:
    """Embedded examples: ``vectors {subspace: [N, D]}`` and per-example labels.

    ``key``: 0..23, 24 (no key) or -1 (unknown); ``bpm``: > 0, 0 (no tempo) or -1
    (unknown); ``type``: index in SOUND_TYPES or -1; ``group``: the source file's id, so
    that a file's copies land on one side of the validation split.
    """

    vectors: dict[str, np.ndarray]
    key: np.ndarray
    bpm: np.ndarray
    type: np.ndarray
    group: np.ndarray

    def __len__(self) -> int:
        return len(self.key)

    @staticmethod
    def concat(parts: list[Labelled]) -> Labelled:
        parts = [p for p in parts if len(p)]
        return Labelled({s: np.concatenate([p.vectors[s] for p in parts]) for s in parts[0].vectors},
                        *(np.concatenate([getattr(p, f) for p in parts]) for f in ("key", "bpm", "type", "group")))

    def take(self, idx: np.ndarray) -> Labelled:
        return Labelled({s: v[idx] for s, v in self.vectors.items()}, self.key[idx], self.bpm[idx],
                        self.type[idx], self.group[idx])


def key_class(text: str) -> int:
    text = (text or "").strip()
    if not text:
        return UNKNOWN
    if text.lower() == NO_KEY:
        return NO_KEY_CLASS
    k = keys.parse_key(text)
    return UNKNOWN if k is None else k


def bpm_value(text: str) -> float:
    text = (text or "").strip()
    if text.lower() == NO_TEMPO:
        return 0.0
    try:
        v = float(text)
    except ValueError:
        return float(UNKNOWN)
    return v if v > 0 else float(UNKNOWN)


def type_class(text: str) -> int:
    return SOUND_TYPES.index(text) if text in SOUND_TYPES else UNKNOWN


def find_labels(dirs: list[str]) -> list[Path]:
    """Every ``labels.csv`` under the folders given (a folder may be a corpus root)."""
    out: list[Path] = []
    for d in dirs:
        p = Path(d)
        if p.is_file() and p.name == "labels.csv":
            out.append(p.resolve())
        elif p.is_dir():
            out.extend(sorted(q.resolve() for q in p.rglob("labels.csv")))
        else:
            raise HeadsError(f"{d}: no such folder")
    if not out:
        raise HeadsError(f"no labels.csv under {', '.join(dirs)}")
    return out


def read_rows(csv_path: Path) -> list[dict[str, str]]:
    import csv

    from trainer.corpus import is_heldout_soundfont

    with csv_path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        if r.get("split") == "bench" or is_heldout_soundfont(r.get("soundfont") or "x"):
            raise HeadsError(f"{csv_path}: holds held-out material ({r.get('file')}: split "
                             f"{r.get('split')!r}, soundfont {r.get('soundfont')!r}); the heads "
                             "train on training corpora only")
    return rows


def versions(row: dict[str, str], rng: np.random.Generator, *, shifts: int, stretches: int,
             original_chunks: int = 16, copy_chunks: int = 3) -> list[tuple[int, float, int]]:
    """(semitones, rate, max chunks) of the copies embedded for one file: the original (up
    to ``original_chunks`` chunks; a library uses 16); for music, ``shifts`` pitch-shifted
    copies and ``stretches`` stretched (and shifted) ones; for drum loops, stretched copies
    only. Copies average fewer chunks (``copy_chunks``): more copies for the same time."""
    out = [(0, 1.0, original_chunks)]
    kind = row.get("type") or "song"
    tempo = bpm_value(row.get("tempo", ""))
    rates = _rates(tempo, stretches, rng) if tempo > 0 else []
    if kind in MUSIC_TYPES:
        amounts = [s for s in range(-6, 6) if s != 0]
        for s in rng.choice(amounts, size=min(shifts, len(amounts)), replace=False):
            out.append((int(s), 1.0, copy_chunks))
        for r in rates:
            out.append((int(rng.integers(-6, 6)), r, copy_chunks))
    elif kind == "drum_loop":
        out.extend((0, r, copy_chunks) for r in rates)
    return out


def _rates(tempo: float, n: int, rng: np.random.Generator) -> list[float]:
    """Stretch rates spread over what keeps the tempo in 50-220 BPM and the rate in
    0.6-1.6 (the vocoder's comfortable range)."""
    lo = max(0.6, 50.0 / tempo)
    hi = min(1.6, 220.0 / tempo)
    if n <= 0 or hi <= lo:
        return []
    edges = np.exp(np.linspace(np.log(lo), np.log(hi), n + 1))
    return [float(np.exp(rng.uniform(np.log(a), np.log(b)))) for a, b in zip(edges[:-1], edges[1:])]


def version_chunks(y: np.ndarray, shift: int, rate: float, max_chunks: int) -> np.ndarray:
    """``[N, CHUNK_SAMPLES]`` chunks of ``y`` shifted by ``shift`` semitones and stretched
    by ``rate``, cut where the embedder would cut the transformed file."""
    from engine.audio.transforms import source_samples_needed
    from engine.model import transforms
    from engine.model.embed import chunk_starts, frame_chunks

    if rate != 1.0:
        if y.size <= 4 * CHUNK_SAMPLES:
            y = transforms.time_stretch_np(y, rate)
            chunks = frame_chunks(y, max_chunks=max_chunks)
        else:
            n_out = int(round(y.size / rate))
            need = source_samples_needed(CHUNK_SAMPLES, rate)
            starts = chunk_starts(n_out, max_chunks=max_chunks)
            src = [y[int(s * rate): int(s * rate) + need] for s in starts]
            src = np.stack([np.pad(c, (0, need - c.size)) for c in src])
            chunks = transforms.time_stretch_np(src, rate, out_samples=CHUNK_SAMPLES)
    else:
        chunks = frame_chunks(y, max_chunks=max_chunks)
    if shift:
        chunks = transforms.pitch_shift_np(chunks, float(shift))
    return np.ascontiguousarray(chunks, dtype=np.float32)


class _Batcher:
    """Collects chunks of many examples and embeds them in full batches."""

    def __init__(self, embedder: Any, batch: int = 128) -> None:
        self.embedder, self.batch = embedder, batch
        self.pending: list[np.ndarray] = []
        self.sizes: list[int] = []
        self.out: dict[str, list[np.ndarray]] = {s: [] for s in embedder.subspaces}

    def add(self, chunks: np.ndarray) -> None:
        self.pending.append(chunks)
        self.sizes.append(len(chunks))
        if sum(len(c) for c in self.pending) >= self.batch:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        emb = self.embedder.embed_chunks(np.concatenate(self.pending))
        bounds = np.cumsum([0] + self.sizes)
        for s in self.out:
            m = np.stack([emb[s][a:b].mean(axis=0) for a, b in zip(bounds[:-1], bounds[1:])])
            self.out[s].append(m / np.maximum(np.linalg.norm(m, axis=1, keepdims=True), 1e-12))
        self.pending, self.sizes = [], []

    def vectors(self) -> dict[str, np.ndarray]:
        self.flush()
        return {s: np.concatenate(v).astype(np.float32) if v else np.zeros((0, self.embedder.dims[s]), np.float32)
                for s, v in self.out.items()}


def _cache_path(cache: Path, model_id: str, what: str, params: dict[str, Any]) -> Path:
    digest = hashlib.sha256(json.dumps({"what": what, **params}, sort_keys=True).encode()).hexdigest()[:16]
    return cache / f"{model_id}-{digest}.npz"


def _save(path: Path, data: Labelled) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, key=data.key, bpm=data.bpm, type=data.type, group=data.group,
             **{f"vec_{s}": v for s, v in data.vectors.items()})
    tmp.replace(path)


def _load(path: Path) -> Labelled:
    with np.load(path, allow_pickle=False) as z:
        return Labelled({k[4:]: z[k] for k in z.files if k.startswith("vec_")},
                        z["key"], z["bpm"], z["type"], z["group"])


def embed_labels(embedder: Any, csv_path: Path, *, cache: Path, shifts: int, stretches: int,
                 seed: int, group_base: int, original_chunks: int = 16, copy_chunks: int = 3,
                 max_files: int = 0, block: int = 100, log: Any = print) -> Labelled:
    """Embed one labels file's files and their copies, ``block`` files per cache entry (a
    killed run resumes); at most ``max_files`` files (a seeded draw) when > 0."""
    rows = read_rows(csv_path)
    stat = csv_path.stat()
    order = np.random.default_rng([seed, 7]).permutation(len(rows))
    if max_files > 0:
        order = np.sort(order[:max_files])
    else:
        order = np.arange(len(rows))
    parts = []
    t0 = time.time()
    for start in range(0, len(order), block):
        idx = order[start:start + block]
        params = {"csv": str(csv_path), "size": stat.st_size, "mtime": stat.st_mtime_ns,
                  "rows": idx.tolist(), "shifts": shifts, "stretches": stretches, "seed": seed,
                  "chunks": [original_chunks, copy_chunks], "v": 2}
        path = _cache_path(cache, embedder.model_id, "labels", params)
        if path.is_file():
            parts.append(_load(path))
            continue
        data = _embed_rows(embedder, csv_path, rows, idx, shifts=shifts, stretches=stretches, seed=seed,
                           original_chunks=original_chunks, copy_chunks=copy_chunks)
        _save(path, data)
        parts.append(data)
        log(f"  {csv_path.parent.name}: {min(start + block, len(order))}/{len(order)} files, "
            f"{sum(len(p) for p in parts)} examples, {time.time() - t0:.0f} s")
    data = Labelled.concat(parts)
    data.group = data.group + group_base  # row indices within the file -> global file ids
    log(f"  {csv_path}: {len(data)} examples from {len(order)} files")
    return data


def _embed_rows(embedder: Any, csv_path: Path, rows: list[dict[str, str]], idx: np.ndarray, *,
                shifts: int, stretches: int, seed: int, original_chunks: int, copy_chunks: int) -> Labelled:
    from engine.audio.decode import load_audio
    from engine.errors import DecodeError

    batcher = _Batcher(embedder)
    key, bpm, typ, group = [], [], [], []
    for i in idx:
        row = rows[int(i)]
        rng = np.random.default_rng([seed, int(i), int(hashlib.sha256(str(csv_path).encode()).hexdigest()[:8], 16)])
        try:
            y = load_audio(csv_path.parent / row["file"], sr=SAMPLE_RATE)
        except DecodeError as e:
            print(f"  skipped {e}")
            continue
        k0, b0, t = key_class(row.get("key", "")), bpm_value(row.get("tempo", "")), type_class(row.get("type", ""))
        for shift, rate, max_chunks in versions(row, rng, shifts=shifts, stretches=stretches,
                                                original_chunks=original_chunks, copy_chunks=copy_chunks):
            batcher.add(version_chunks(y, shift, rate, max_chunks))
            key.append(keys.transpose(k0, shift) if 0 <= k0 < NO_KEY_CLASS else k0)
            bpm.append(b0 * rate if b0 > 0 else b0)
            typ.append(t)
            group.append(int(i))
    vectors = batcher.vectors()
    return Labelled(vectors, np.array(key, np.int64), np.array(bpm, np.float64),
                    np.array(typ, np.int64), np.array(group, np.int64))


# ------------------------------------------------------------------ synthetic set


def _envelope(n: int, decay_s: float, sr: int = SAMPLE_RATE) -> np.ndarray:
    t = np.arange(n) / sr
    return np.minimum(1.0, t / 0.005) * np.exp(-t / decay_s)


def _voice(freq: float, n: int, rng: np.random.Generator, sr: int = SAMPLE_RATE) -> np.ndarray:
    t = np.arange(n) / sr
    n_h = int(rng.integers(1, 9))
    tilt = rng.uniform(0.5, 2.0)
    return sum(np.sin(2 * np.pi * freq * h * t + rng.uniform(0, 2 * np.pi)) / h ** tilt
               for h in range(1, n_h + 1) if freq * h < sr / 2 - 500)


# Scale degrees (0 = tonic) of each bar: cadences and common progressions.
PROGRESSIONS = {"major": [(0, 3, 4, 0), (0, 5, 3, 4), (1, 4, 0, 0), (0, 4, 5, 3), (3, 4, 0, 0)],
                "minor": [(0, 3, 4, 0), (0, 5, 3, 4), (0, 2, 4, 0), (3, 4, 0, 0), (0, 6, 5, 4)]}
SCALES = {"major": (0, 2, 4, 5, 7, 9, 11), "minor": (0, 2, 3, 5, 7, 8, 10)}


def _triad(degree: int, tonic: int, mode: str) -> list[int]:
    """Pitch classes of the diatonic triad on ``degree``; the minor key's V is major
    (its third is the raised seventh), as in a cadence."""
    scale = SCALES[mode]
    pcs = [scale[(degree + j) % 7] for j in (0, 2, 4)]
    if mode == "minor" and degree == 4:
        pcs[1] = 11
    return [(tonic + p) % 12 for p in pcs]


def synthetic_progression(key: int, bpm: float, rng: np.random.Generator, *, seconds: float = 8.0,
                          struck: bool = True) -> np.ndarray:
    """Diatonic chords (a cadence) in ``key``, each held for a bar: restruck every beat when
    ``struck``, else sustained; a bass note on the root."""
    sr, mode, tonic = SAMPLE_RATE, keys.mode(key), keys.tonic(key)
    n = int(seconds * sr)
    y = np.zeros(n, np.float64)
    beat = 60.0 / bpm
    prog = PROGRESSIONS[mode][int(rng.integers(len(PROGRESSIONS[mode])))]
    bar = 4 * beat if struck else max(4 * beat, 1.5)
    base_oct = int(rng.integers(3, 5))
    decay = rng.uniform(0.15, 0.6)
    t, i = float(rng.uniform(0, 0.2)), 0
    while t < seconds:
        pcs = _triad(prog[i % len(prog)], tonic, mode)
        notes = [12 * (base_oct + 1) + pc for pc in pcs] + [12 * (base_oct - 1 + 1) + pcs[0]]
        hits = [t + b * beat for b in range(4)] if struck else [t]
        for h in hits:
            a = int(h * sr)
            if a >= n:
                break
            m = min(n - a, int((beat if struck else bar) * sr) + sr // 4)
            env = _envelope(m, decay if struck else 4.0)
            for note in notes:
                f = 440.0 * 2 ** ((note - 69) / 12)
                y[a:a + m] += env * _voice(f, m, rng)
        t += bar
        i += 1
    return (0.5 * y / max(np.abs(y).max(), 1e-9)).astype(np.float32)


def synthetic_clicks(bpm: float, rng: np.random.Generator, *, seconds: float = 8.0) -> np.ndarray:
    sr = SAMPLE_RATE
    n = int(seconds * sr)
    y = np.zeros(n, np.float64)
    hit = _hit(rng, kind=str(rng.choice(["noise", "kick", "click"])))
    period = 60.0 / bpm * sr
    first = rng.uniform(0, period)
    k = 0
    while True:
        a = int(round(first + k * period))
        if a >= n:
            break
        gain = 1.0 if k % 4 == 0 else rng.uniform(0.5, 1.0)
        m = min(len(hit), n - a)
        y[a:a + m] += gain * hit[:m]
        k += 1
    return (0.7 * y / max(np.abs(y).max(), 1e-9)).astype(np.float32)


def _hit(rng: np.random.Generator, *, kind: str) -> np.ndarray:
    sr = SAMPLE_RATE
    if kind == "kick":
        m = int(rng.uniform(0.15, 0.5) * sr)
        t = np.arange(m) / sr
        f = rng.uniform(45, 70) + rng.uniform(80, 200) * np.exp(-t / 0.03)
        return np.sin(2 * np.pi * np.cumsum(f) / sr) * _envelope(m, rng.uniform(0.05, 0.2))
    m = int(rng.uniform(0.004, 0.2) * sr)
    return rng.standard_normal(m) * _envelope(m, m / sr / 5)


def synthetic_set(n: int, seed: int) -> list[tuple[np.ndarray, int, float, int]]:
    """(signal, key class, bpm, type class) of ``n`` synthetic examples: chord progressions
    in known keys (struck on the beat: that tempo; sustained: tempo unknown), click tracks
    at known BPMs (no key), single hits and silence (no key, no tempo)."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        r = i % 10
        bpm = float(np.exp(rng.uniform(np.log(55), np.log(200))))
        if r < 5:
            struck = r < 3
            key = int(rng.integers(keys.N_KEYS))
            y = synthetic_progression(key, bpm, rng, struck=struck, seconds=float(rng.uniform(6, 12)))
            out.append((y, key, bpm if struck else float(UNKNOWN), type_class("music_loop")))
        elif r < 7:
            out.append((synthetic_clicks(bpm, rng, seconds=float(rng.uniform(4, 10))), NO_KEY_CLASS, bpm,
                        type_class("drum_loop")))
        elif r < 9:
            kind = str(rng.choice(["noise", "kick"]))
            m = int(rng.uniform(1.0, 3.0) * SAMPLE_RATE)
            y = np.zeros(m)
            hit = _hit(rng, kind=kind)[:m]
            a = int(rng.uniform(0, 0.1) * SAMPLE_RATE)
            y[a:a + hit.size] = hit[: m - a]
            y = 0.8 * y / max(np.abs(y).max(), 1e-9)
            out.append((y.astype(np.float32), NO_KEY_CLASS, 0.0, type_class("kick" if kind == "kick" else "percussion")))
        else:
            m = int(rng.uniform(1.0, 6.0) * SAMPLE_RATE)
            # Digital silence or a faint noise floor (a fade, a room tone).
            level = 0.0 if rng.random() < 0.5 else rng.uniform(0, 1e-3)
            y = (level * rng.standard_normal(m)).astype(np.float32)
            out.append((y, NO_KEY_CLASS, 0.0, UNKNOWN))
    return out


def embed_synthetic(embedder: Any, n: int, *, cache: Path, seed: int, group_base: int,
                    log: Any = print) -> Labelled:
    params = {"n": n, "seed": seed, "v": 2}
    path = _cache_path(cache, embedder.model_id, "synthetic", params)
    if path.is_file():
        data = _load(path)
        log(f"  synthetic: {len(data)} examples (cached)")
    else:
        t0 = time.time()
        items = synthetic_set(n, seed)
        batcher = _Batcher(embedder)
        for y, *_ in items:
            batcher.add(version_chunks(y, 0, 1.0, 16))
        data = Labelled(batcher.vectors(), np.array([k for _, k, _, _ in items], np.int64),
                        np.array([b for _, _, b, _ in items], np.float64),
                        np.array([t for *_, t in items], np.int64), np.arange(len(items), dtype=np.int64))
        _save(path, data)
        log(f"  synthetic: {len(data)} examples in {time.time() - t0:.0f} s")
    data.group = data.group + group_base
    return data


# ------------------------------------------------------------------------ scoring


def score(estimates: list[Estimate], key: np.ndarray, bpm: np.ndarray, typ: np.ndarray) -> dict[str, float]:
    """Accuracy figures of estimates against labels coded as in :class:`Labelled`:
    key accuracy (labelled keys and "no key"), BPM acc1 and acc2 (tempo labels), "no
    tempo" accuracy, type top-1. NaN where a set has no such label."""
    def mean(xs: list[bool]) -> float:
        return float(np.mean(xs)) if xs else float("nan")

    k_ok, a1, a2, nt, t_ok = [], [], [], [], []
    for e, k, b, t in zip(estimates, key, bpm, typ):
        if k >= 0:
            k_ok.append((e.key is None) if k == NO_KEY_CLASS else (e.key == k))
        if b > 0:
            a1.append(acc1(e.bpm, b))
            a2.append(acc2(e.bpm, b))
        elif b == 0:
            nt.append(e.bpm is None)
        if t >= 0:
            t_ok.append(e.type == SOUND_TYPES[t])
    return {"key": mean(k_ok), "acc1": mean(a1), "acc2": mean(a2), "no_tempo": mean(nt),
            "type": mean(t_ok)}


def acc1(est: float | None, ref: float, tol: float = BPM_TOLERANCE) -> bool:
    return est is not None and abs(est - ref) <= tol * ref


def acc2(est: float | None, ref: float, tol: float = BPM_TOLERANCE) -> bool:
    """acc1 up to the usual octave errors: x2, x3, x1/2, x1/3."""
    return est is not None and any(acc1(est, ref * f, tol) for f in (1, 2, 3, 1 / 2, 1 / 3))


# ------------------------------------------------------------------------ training


def _soft_tempo_targets(bpm: np.ndarray, bins: np.ndarray, sigma: float = 0.75) -> np.ndarray:
    """[N, bins + 1]: a Gaussian over the log-BPM bins (sigma in bins) for a tempo, the
    last class for "no tempo"; rows of unknown tempo are zero (no loss)."""
    step = math.log2(bins[1] / bins[0])
    out = np.zeros((len(bpm), len(bins) + 1), np.float32)
    has = bpm > 0
    d = (np.log2(np.maximum(bpm[has], 1e-6))[:, None] - np.log2(bins)[None, :]) / step
    g = np.exp(-0.5 * (d / sigma) ** 2)
    out[has, :-1] = g / np.maximum(g.sum(axis=1, keepdims=True), 1e-12)
    out[bpm == 0, -1] = 1.0
    return out


def _class_weights(labels: np.ndarray, n: int) -> np.ndarray:
    """Per-example weights making each class present weigh the same in total."""
    w = np.zeros(len(labels), np.float32)
    ok = labels >= 0
    counts = np.bincount(labels[ok], minlength=n).astype(np.float64)
    present = (counts > 0).sum()
    w[ok] = (ok.sum() / (present * counts[labels[ok]]))
    return w


def _head_inputs(data: Labelled, subspaces: tuple[str, ...], widths: tuple[int | None, ...] = ()) -> np.ndarray:
    """A head's input as :meth:`engine.model.heads._Mlp.inputs` builds it from stored vectors."""
    ws = widths or (None,) * len(subspaces)
    return np.concatenate([data.vectors[s] if w is None else leading_part(data.vectors[s], w)
                           for s, w in zip(subspaces, ws)], axis=1).astype(np.float32)


def train_heads(train: Labelled, val: Labelled, dims: dict[str, int], *, epochs: int = 60,
                hidden: int = 1024, seed: int = 0, lr: float = 2e-3, weight_decay: float = 1e-2,
                dropout: float = 0.3, noise: float = 0.2, subspaces: dict[str, tuple[str, ...]] | None = None,
                widths: dict[str, tuple[int | None, ...]] | None = None, key_roll: int = 0,
                tempo_kernel_bins: float | None = None, log: Any = print) -> tuple[dict[str, np.ndarray], dict[str, Any], dict[str, Any]]:
    """Train the three heads; return their tensors, their metadata (without provenance)
    and the validation figures of the epoch kept for each.

    ``key_roll`` > 0: the key head's input is ``[channels, key_roll]`` pitch-class bins
    (the structured pitch branch: 24 per octave, a shift of s semitones rolls them by
    2 s), and each example is transposed at random every epoch by rolling them, its key
    label with it; so every key is seen from every song. Its standardisation is then per
    channel, so that it commutes with the roll. ``widths``: per head, how many leading
    dimensions of each of its subspaces it reads (None: all), that part scaled back to unit
    length. ``tempo_kernel_bins``: the tempo space ends in a tempo projector's posterior
    over these BPM bins, embedded with a Gaussian kernel that many bins wide; the BPM is
    read from it (the tempo head still says "no tempo").
    """
    import torch
    from torch import nn

    torch.manual_seed(seed)
    subspaces = {**HEAD_SUBSPACES, **(subspaces or {})}
    bins = bpm_bins()
    labels = {"key": list(keys.KEY_NAMES) + [NO_KEY],
              "tempo": [f"{b:.2f}" for b in bins] + [NO_TEMPO],
              "type": list(SOUND_TYPES)}
    tempo_class = np.where(train.bpm > 0, 0, np.where(train.bpm == 0, 1, -1))
    targets = {
        "key": (torch.from_numpy(train.key), torch.from_numpy(_class_weights(train.key, 25))),
        "tempo": (torch.from_numpy(_soft_tempo_targets(train.bpm, bins)),
                  torch.from_numpy(_class_weights(tempo_class, 2))),
        "type": (torch.from_numpy(train.type), torch.from_numpy(_class_weights(train.type, len(SOUND_TYPES)))),
    }
    meta: dict[str, Any] = {"format": HEADS_FORMAT}
    widths = {head: tuple(w) for head, w in (widths or {}).items() if any(x is not None for x in w)}
    for head in HEAD_SUBSPACES:
        meta[head] = {"subspaces": list(subspaces[head]), "hidden": [hidden], "labels": labels[head]}
        if head in widths:
            meta[head]["widths"] = list(widths[head])
    meta["tempo"]["bpm"] = [float(b) for b in bins]
    if tempo_kernel_bins is not None:
        meta["tempo"]["posterior"] = {"kernel_bins": float(tempo_kernel_bins)}
    raw_meta = json.dumps(meta)

    nets, stats, best = {}, {}, {}
    xs = {}
    for head in HEAD_SUBSPACES:
        x = _head_inputs(train, subspaces[head], widths.get(head, ()))
        mean, std = x.mean(axis=0), x.std(axis=0)
        if head == "key" and key_roll:
            xc = x.reshape(len(x), -1, key_roll)
            mean = np.repeat(xc.mean(axis=(0, 2)), key_roll)
            std = np.repeat(xc.std(axis=(0, 2)), key_roll)
        scale = 1.0 / np.maximum(std, 1e-3 * max(float(std.max()), 1e-9))
        stats[head] = (mean.astype(np.float32), scale.astype(np.float32))
        xs[head] = torch.from_numpy((x - mean) * scale)
        nets[head] = nn.Sequential(nn.Dropout(0.1), nn.Linear(x.shape[1], hidden), nn.ReLU(),
                                   nn.Dropout(dropout), nn.Linear(hidden, len(labels[head])))
    params = [p for n_ in nets.values() for p in n_.parameters()]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    n = len(train)
    batch = 256
    steps = epochs * math.ceil(n / batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    gen = torch.Generator().manual_seed(seed)
    val_targets = (val.key, val.bpm, val.type)
    metric = {"key": "key", "tempo": "tempo", "type": "type"}

    def tensors_now() -> dict[str, np.ndarray]:
        out = {}
        for head, net in nets.items():
            p = f"estimators.{head}."
            out[p + "mean"], out[p + "scale"] = stats[head]
            lin = [m for m in net if isinstance(m, nn.Linear)]
            for i, m in enumerate(lin):
                out[f"{p}{i}.weight"] = m.weight.detach().cpu().numpy().copy()
                out[f"{p}{i}.bias"] = m.bias.detach().cpu().numpy().copy()
        return out

    t0 = time.time()
    for epoch in range(epochs):
        for net in nets.values():
            net.train()
        perm = torch.randperm(n, generator=gen)
        for i in range(0, n, batch):
            idx = perm[i:i + batch]
            loss = 0.0
            for head, net in nets.items():
                x = xs[head][idx]
                tgt, w = targets[head][0][idx], targets[head][1][idx]
                if head == "key" and key_roll:
                    x, tgt = _roll_keys(x, tgt, key_roll, gen)
                x = x + noise * torch.randn(x.shape, generator=gen)
                logits = net(x)
                if head == "tempo":
                    per = -(tgt * torch.log_softmax(logits, dim=1)).sum(dim=1)
                else:
                    per = nn.functional.cross_entropy(logits, tgt.clamp_min(0), reduction="none")
                    per = per * (tgt >= 0)
                loss = loss + (per * w).sum() / w.sum().clamp_min(1e-6)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        for net in nets.values():
            net.eval()
        arrays = tensors_now()
        heads = heads_from_arrays(raw_meta, arrays, dims)
        s = score(heads.predict(val.vectors), *val_targets)
        figures = {"key": s["key"], "tempo": _mean_finite(s["acc1"], s["no_tempo"]), "type": s["type"]}
        for head in nets:
            if head not in best or figures[metric[head]] > best[head]["score"]:
                best[head] = {"score": figures[metric[head]], "epoch": epoch + 1,
                              "tensors": {k: v for k, v in arrays.items() if k.startswith(f"estimators.{head}.")},
                              "val": s}
        if (epoch + 1) % 5 == 0 or epoch == 0:
            log(f"  epoch {epoch + 1}/{epochs}: val key {s['key']:.3f} acc1 {s['acc1']:.3f} acc2 "
                f"{s['acc2']:.3f} no-tempo {s['no_tempo']:.3f} type {s['type']:.3f} ({time.time() - t0:.0f} s)")
    tensors = {k: v for head in best.values() for k, v in head["tensors"].items()}
    report = {head: {"epoch": b["epoch"], "val": b["val"]} for head, b in best.items()}
    return tensors, meta, report


def _roll_keys(x: Any, key: Any, bins: int, gen: Any) -> tuple[Any, Any]:
    """Transpose each example by a random 0..11 semitones: roll its pitch-class bins
    (``bins`` per octave) and move its key label with it ("no key" and unknown stay)."""
    import torch

    b = x.shape[0]
    s = torch.randint(0, 12, (b,), generator=gen)
    per = bins // 12
    j = torch.arange(bins)
    src = (j[None, :] - per * s[:, None]) % bins  # out[j] = in[j - 2 s]: np.roll by +2 s
    xr = x.reshape(b, -1, bins)
    xr = torch.gather(xr, 2, src[:, None, :].expand(-1, xr.shape[1], -1)).reshape(b, -1)
    keyed = (key >= 0) & (key < NO_KEY_CLASS)
    moved = (key % 12 + s) % 12 + 12 * (key // 12)
    return xr, torch.where(keyed, moved, key)


def _mean_finite(*xs: float) -> float:
    v = [x for x in xs if not math.isnan(x)]
    return float(np.mean(v)) if v else 0.0


def split_groups(data: Labelled, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Train and validation indices: whole files (groups) drawn for validation."""
    groups = np.unique(data.group)
    rng = np.random.default_rng(seed)
    val_groups = set(rng.choice(groups, size=int(round(fraction * len(groups))), replace=False).tolist())
    is_val = np.array([g in val_groups for g in data.group])
    return np.flatnonzero(~is_val), np.flatnonzero(is_val)


# ----------------------------------------------------------------------------- CLI


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", help="the frozen .safetensors checkpoint (its heads, if any, are replaced)")
    p.add_argument("--data", nargs="+", required=True, metavar="DIR",
                   help="training corpora: folders holding labels.csv files (loev-train corpus)")
    p.add_argument("--out", required=True, help="the checkpoint to write (may be CHECKPOINT itself)")
    p.add_argument("--epochs", type=int, default=60)
    p.add_argument("--hidden", type=int, default=1024, help="hidden units of each head")
    p.add_argument("--shifts", type=int, default=0,
                   help="vocoded pitch-shifted copies per song or music loop (the key head already "
                        "sees every transposition by rolling pitch-class bins)")
    p.add_argument("--stretches", type=int, default=2, help="time-stretched copies per song or loop")
    p.add_argument("--original-chunks", type=int, default=8,
                   help="chunks averaged for a file itself (a library uses 16)")
    p.add_argument("--copy-chunks", type=int, default=3, help="chunks averaged for a shifted or stretched copy")
    p.add_argument("--max-files", type=int, default=1200,
                   help="at most this many files per labels.csv (a seeded draw; 0: all)")
    p.add_argument("--synthetic", type=int, default=800,
                   help="synthetic examples (progressions, click tracks, hits, silence)")
    p.add_argument("--val-fraction", type=float, default=0.15,
                   help="files of the training corpora held out for model selection")
    p.add_argument("--type-subspaces", default="invariant",
                   help="comma-separated subspaces the type head reads")
    p.add_argument("--cache", default="runs/heads-cache", help="folder of cached embeddings")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--backend", default="torch", help="embedder backend (torch or onnxruntime)")
    p.add_argument("--key-reads-projector", action="store_true",
                   help="with a key projector in the pitch space, the key head reads its part too "
                        "(by default it reads the pitch branch's part alone)")


def run(args: argparse.Namespace) -> int:
    from engine.model.checkpoint import read_checkpoint_info, save_with_heads
    from engine.model.embed import Embedder

    if args.epochs < 1 or not 0.0 < args.val_fraction < 0.9:
        raise HeadsError("--epochs must be >= 1 and --val-fraction in (0, 0.9)")
    info = read_checkpoint_info(args.checkpoint)
    type_sub = tuple(s.strip() for s in args.type_subspaces.split(",") if s.strip())
    unknown = [s for s in type_sub if s not in info.dims]
    if unknown or not type_sub:
        raise HeadsError(f"--type-subspaces: {unknown or 'none'} not among {sorted(info.dims)}")
    t0 = time.time()
    print(f"heads for model {info.model_id} ({args.checkpoint})")
    embedder = Embedder(args.checkpoint, backend=args.backend, batch_size=64)
    cache = Path(args.cache)
    parts, base = [], 0
    for csv_path in find_labels(args.data):
        d = embed_labels(embedder, csv_path, cache=cache, shifts=args.shifts,
                         stretches=args.stretches, seed=args.seed, group_base=base,
                         original_chunks=args.original_chunks, copy_chunks=args.copy_chunks,
                         max_files=args.max_files)
        parts.append(d)
        base = int(d.group.max()) + 1 if len(d) else base
    if args.synthetic > 0:
        parts.append(embed_synthetic(embedder, args.synthetic, cache=cache, seed=args.seed, group_base=base))
    data = Labelled.concat(parts)
    t_embed = time.time() - t0
    tr, va = split_groups(data, args.val_fraction, args.seed)
    print(f"{len(data)} examples ({len(tr)} train, {len(va)} validation) embedded in {t_embed:.0f} s")
    t1 = time.time()
    from engine.model.branches import BINS_PER_OCTAVE

    roll = BINS_PER_OCTAVE if (info.config.get("branches") == "structured"
                               and info.dims.get("pitch", 1) % BINS_PER_OCTAVE == 0) else 0
    # With a key projector in the pitch space the key head reads the pitch branch's part
    # alone, unless told otherwise (measured: the projector's part makes it call more drum
    # hits keyed).
    widths = {}
    if info.config.get("pitch_learned_share") and not args.key_reads_projector:
        from engine.keys import N_KEYS

        widths["key"] = (info.dims["pitch"] - N_KEYS,)
    kernel_bins = None
    if info.config.get("tempo_projector_posterior"):
        from engine.model.branches import TempoProjector

        kernel_bins = TempoProjector.KERNEL_BINS
    tensors, meta, report = train_heads(data.take(tr), data.take(va), info.dims, epochs=args.epochs,
                                        hidden=args.hidden, seed=args.seed, subspaces={"type": type_sub},
                                        widths=widths, key_roll=roll, tempo_kernel_bins=kernel_bins)
    t_train = time.time() - t1
    meta["provenance"] = {
        "trainer": "loev-train heads", "encoder": info.model_id,
        # The corpora by their last folders: provenance, not this machine's layout.
        "data": [str(Path(*p.parts[-4:])) for p in find_labels(args.data)], "examples": int(len(data)),
        "synthetic": args.synthetic, "shifts": args.shifts, "stretches": args.stretches,
        "original_chunks": args.original_chunks, "copy_chunks": args.copy_chunks,
        "max_files": args.max_files,
        "epochs": args.epochs, "seed": args.seed, "hidden": args.hidden, "key_roll": roll,
        "key_widths": list(widths.get("key", ())),
        "selection": {h: {"epoch": r["epoch"], **{k: round(v, 4) for k, v in r["val"].items()
                                                  if not math.isnan(v)}} for h, r in report.items()},
        "train_seconds": round(t_train, 1)}
    out = save_with_heads(args.out, args.checkpoint, tensors, json.dumps(meta))
    for head, r in report.items():
        v = r["val"]
        print(f"{head}: epoch {r['epoch']}, validation key {v['key']:.3f} acc1 {v['acc1']:.3f} "
              f"acc2 {v['acc2']:.3f} no-tempo {v['no_tempo']:.3f} type {v['type']:.3f}")
    print(f"wrote {out} (model {read_checkpoint_info(out).model_id}, {out.stat().st_size / 1e6:.2f} MB); "
          f"embedding {t_embed:.0f} s, training {t_train:.0f} s")
    return 0
