"""``loev-train eval``: retrieval, probing, invariance curves and robustness (paper Section III).

Everything is measured on a labelled benchmark (:mod:`trainer.benchmark`) and written to
``OUT/metrics.json`` plus PNG and CSV files that ``loev-train report`` turns into
docs/RESULTS.md.

* Retrieval (paper Fig. 2, :mod:`trainer.metrics`): track embeddings (mean of chunk
  embeddings, L2-normalised), cosine kNN excluding the query, k in 1, 3, 5, 10. Per
  subspace and ``all`` (the normalised subspaces concatenated).
* DSP baselines (``--baselines``): the same retrieval with trainer.baselines' descriptors,
  and with essentia's key and BPM estimates where essentia is installed.
* Probing (paper Table I/II, ``--probe``, :mod:`trainer.probes`).
* Invariance curves (paper Fig. 3, ``--curves``).
* Robustness (``--degrade``): degraded queries against the clean library.
"""
from __future__ import annotations

import argparse
import csv
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from engine.config import SAMPLE_RATE
from trainer.benchmark import (DEGRADATIONS, Embeddings, EvalError, Track, degrade, embed_signals,
                               load_signals, load_tracks, tracks_from_dataset)
from trainer.metrics import (KS, PairTable, chance_scores, cosine_similarity, estimate_accuracy,
                             label_similarity, oracle_scores, retrieval_scores)
from trainer.probes import ProbeOptions, probe_split, probe_subspace, stretched_training_chunks


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
        res["estimates_vs_truth"] = estimate_accuracy(vals, pairs.tracks, kind)
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
