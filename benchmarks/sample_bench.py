"""Held-out sample benchmark: one-shots, loops and songs rendered through MuseScore_General.

For each checkpoint (and the plain baselines), prints the share of the top-5 neighbours
(cosine, query left out) that share the query's label:

- sounds (one-shots and loops in one library, as in a sample folder): same type, per
  class, in the vibe (invariant) space, the key (pitch) space and the tempo space, next to
  20 MFCCs (librosa, mean + std over time, z-scored over the set, cosine); same pitch class
  for the pitched one-shots in the key space, next to 24-bin folded chroma; and the tempo
  salience of one-shots against loops (how well it tells "no tempo" apart, ROC AUC);
- songs: same GM family in the vibe space (MFCC), tempo within 4 % in the tempo space
  (log-lag onset autocorrelation), mir_eval's weighted key score in the key space
  (folded chroma), files without a key left out of the key figures.

Render the sets first (held-out soundfont, benchmark split)::

    MS=/usr/share/sounds/sf3/MuseScore_General.sf3
    loev-train corpus runs/benchv2/oneshots --kind oneshots --minutes 40 --split bench --seed 7 \\
        --allow-heldout-soundfont --soundfont $MS
    loev-train corpus runs/benchv2/loops --kind loops --minutes 20 --split bench --seed 7 \\
        --allow-heldout-soundfont --soundfont $MS
    loev-train corpus runs/bench --minutes 60 --split bench --seed 7 --allow-heldout-soundfont --soundfont $MS

then::

    python benchmarks/sample_bench.py --sounds runs/benchv2 --songs runs/bench \\
        --checkpoint resources/loev-default.safetensors --checkpoint runs/v2/model.safetensors
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from engine.config import SAMPLE_RATE  # noqa: E402

K = 5
TEMPO_TOLERANCE = 0.04


def read_set(folder: Path, *, max_seconds: float) -> tuple[list[dict], list[np.ndarray]]:
    """Every labels.csv under ``folder``: rows and 16 kHz signals (one-shots' silence trimmed)."""
    import soundfile as sf

    from trainer.corpus import read_labels
    from trainer.sounds import ONESHOT_KINDS, trim_silence

    rows, signals = [], []
    for labels in sorted(folder.rglob("labels.csv")):
        for row in read_labels(labels):
            y, sr = sf.read(row["path"], dtype="float32", frames=int(max_seconds * SAMPLE_RATE))
            if sr != SAMPLE_RATE:
                raise SystemExit(f"{row['path']}: {sr} Hz, expected {SAMPLE_RATE}")
            if y.ndim > 1:
                y = y.mean(axis=1)
            if any(row["file"].endswith(f"_{k}.flac") for k in ONESHOT_KINDS):
                y = trim_silence(y)  # a sample ends where its sound does
            rows.append(row)
            signals.append(y)
    return rows, signals


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def neighbours(x: np.ndarray, k: int = K, rows: np.ndarray | None = None) -> np.ndarray:
    """Top-k cosine neighbours ``[n, k]`` within the subset ``rows`` (indices into x)."""
    idx = np.arange(len(x)) if rows is None else rows
    z = unit(x[idx])
    sim = z @ z.T
    np.fill_diagonal(sim, -np.inf)
    return idx[np.argsort(-sim, axis=1)[:, :k]]


def mfcc_matrix(signals: list[np.ndarray]) -> np.ndarray:
    """20 MFCCs (librosa defaults at 16 kHz), mean and std over time, z-scored over the set."""
    import librosa

    feats = []
    for y in signals:
        m = librosa.feature.mfcc(y=y, sr=SAMPLE_RATE, n_mfcc=20)
        feats.append(np.concatenate([m.mean(axis=1), m.std(axis=1)]))
    f = np.array(feats)
    return (f - f.mean(axis=0)) / np.maximum(f.std(axis=0), 1e-9)


def share_same(labels: list, nn: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """Per query: the share of its neighbours with the same label."""
    return np.array([np.mean([labels[j] == labels[q] for j in nn[i]]) for i, q in enumerate(queries)])


def per_class(labels: list, scores: np.ndarray, queries: np.ndarray) -> dict[str, float]:
    by: dict[str, list[float]] = defaultdict(list)
    for s, q in zip(scores, queries):
        by[labels[q]].append(float(s))
    out = {c: float(np.mean(v)) for c, v in sorted(by.items())}
    out["mean"] = float(np.mean(scores))
    return out


def auc(pos: np.ndarray, neg: np.ndarray) -> float:
    """ROC AUC: the chance that a random positive scores above a random negative."""
    pos, neg = np.asarray(pos), np.asarray(neg)
    return float(((pos[:, None] > neg[None, :]).mean() + 0.5 * (pos[:, None] == neg[None, :]).mean()))


def sound_figures(rows: list[dict], spaces: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
    """Same-type P@5 per class in each space; pitch-class P@5 of pitched one-shots."""
    types = [r["type"] for r in rows]
    everyone = np.arange(len(rows))
    out = {}
    for name, x in spaces.items():
        nn = neighbours(x)
        out[f"type@5 {name}"] = per_class(types, share_same(types, nn, everyone), everyone)
    pitched = np.array([i for i, r in enumerate(rows) if r.get("pitch")])
    if len(pitched) > K:
        pcs = [r.get("pitch", "") for r in rows]
        for name, x in spaces.items():
            nn = neighbours(x, rows=pitched)
            out[f"pitch@5 {name}"] = {"mean": float(share_same(pcs, nn, pitched).mean())}
    return out


def song_figures(rows: list[dict], spaces: dict[str, np.ndarray]) -> dict[str, float]:
    """family@5 (vibe), tempo acc1@5 (tempo), weighted key@5 (key), per space given."""
    import mir_eval

    out = {}
    fam = [r["family"] for r in rows]
    everyone = np.arange(len(rows))
    keyed = np.array([i for i, r in enumerate(rows) if r["key"] not in ("X", "no key", "")])
    for name, x in spaces.items():
        nn = neighbours(x)
        out[f"family@5 {name}"] = float(share_same(fam, nn, everyone).mean())
        tempo = np.array([r["tempo"] for r in rows])
        hit = np.abs(np.log(tempo[nn] / tempo[:, None])) < np.log1p(TEMPO_TOLERANCE)
        out[f"tempo acc1@5 {name}"] = float(hit.mean())
        if len(keyed) > K:
            nk = neighbours(x, rows=keyed)
            scores = [np.mean([mir_eval.key.weighted_score(rows[q]["key"], rows[j]["key"]) for j in nk[i]])
                      for i, q in enumerate(keyed)]
            out[f"key@5 {name}"] = float(np.mean(scores))
    return out


def model_spaces(checkpoint: Path, signals: list[np.ndarray]) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The checkpoint's subspaces ``{name: [n, D]}`` and each signal's tempo salience (first chunk)."""
    import torch

    from engine.model.branches import tempo_salience
    from engine.model.embed import Embedder, frame_chunks
    from engine.model.frontend import build_frontend

    emb = Embedder(checkpoint, max_chunks=16, batch_size=32)
    vectors: dict[str, list[np.ndarray]] = defaultdict(list)
    for i in range(0, len(signals), 16):
        for e in emb.embed_audio_batch(signals[i : i + 16]):
            for s, v in e.items():
                vectors[s].append(v)
    frontend = build_frontend(emb.config.frontend)
    with torch.inference_mode():
        first = np.stack([frame_chunks(y, max_chunks=1)[0] for y in signals])
        sal = []
        for i in range(0, len(first), 64):
            spec = frontend(torch.from_numpy(first[i : i + 64]))
            sal.append(tempo_salience(spec).numpy())
    return {s: np.stack(v) for s, v in vectors.items()}, np.concatenate(sal)


def fmt(d: dict[str, float]) -> str:
    return "  ".join(f"{k} {v:.3f}" for k, v in d.items())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sounds", type=Path, help="folder of one-shot and loop corpora (labels.csv under it)")
    p.add_argument("--songs", type=Path, help="folder of a songs benchmark corpus")
    p.add_argument("--checkpoint", type=Path, action="append", default=[], help="a model to measure (repeatable)")
    p.add_argument("--no-baselines", action="store_true", help="skip MFCC, chroma and autocorrelation")
    p.add_argument("--json", type=Path, help="also write every figure to this JSON file")
    args = p.parse_args(argv)

    from trainer.baselines import folded_chroma_24, loglag_autocorrelation

    results: dict[str, dict] = {}
    for label, folder, max_s in (("sounds", args.sounds, 30.0), ("songs", args.songs, 60.0)):
        if folder is None:
            continue
        t0 = time.perf_counter()
        rows, signals = read_set(folder, max_seconds=max_s)
        counts = defaultdict(int)
        for r in rows:
            counts[r["type"] if label == "sounds" else r["family"]] += 1
        print(f"\n== {label}: {len(rows)} files from {folder} ({dict(sorted(counts.items()))})")
        names = ([] if args.no_baselines else ["baseline"]) + [str(ck) for ck in args.checkpoint]
        for name in names:
            sal = None
            if name == "baseline":
                spaces = {
                    "vibe": mfcc_matrix(signals),
                    "key": np.stack([folded_chroma_24(y) for y in signals]),
                    "tempo": np.stack([loglag_autocorrelation(y) for y in signals]),
                }
            else:
                model, sal = model_spaces(Path(name), signals)
                spaces = {"vibe": model["invariant"], "key": model["pitch"], "tempo": model["tempo"]}
            figs = sound_figures(rows, spaces) if label == "sounds" else song_figures(rows, spaces)
            print(f"-- {name}")
            for k, v in figs.items():
                print(f"   {k}: {fmt(v) if isinstance(v, dict) else f'{v:.3f}'}")
            if label == "sounds" and sal is not None:
                oneshot = np.array([r["tempo"] == 0 for r in rows])
                figs["salience"] = {"oneshots": float(sal[oneshot].mean()), "loops": float(sal[~oneshot].mean()),
                                    "auc": auc(sal[~oneshot], sal[oneshot])}
                print(f"   tempo salience: {fmt(figs['salience'])}")
            results.setdefault(label, {})[name] = figs
            sys.stdout.flush()
            if args.json:  # after every candidate: a long run keeps what it measured
                args.json.write_text(json.dumps(results, indent=1))
        print(f"   ({time.perf_counter() - t0:.0f} s)")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
