"""Accuracy of the key, tempo and type heads on the held-out sets, next to essentia.

Sets (rendered through the held-out MuseScore_General soundfont, benchmark split; see
benchmarks/sample_bench.py for the commands): songs (``--songs``, a labels.csv folder),
one-shots and loops (``--sounds``: a folder with ``oneshots/`` and ``loops/``). Prints:

- key: mir_eval's weighted score (``mir_eval.key.weighted_score``; an estimate of "no key"
  scores 0) on songs and music loops with a key; "no key" accuracy on drum one-shots, drum
  loops and songs labelled "X";
- BPM: acc1 (within 4 %) and acc2 (within 4 % of x1, x2, x3, x1/2 or x1/3) on songs and
  loops ("no tempo" counts as wrong); "no tempo" accuracy on one-shots;
- type: top-1 on every file (SOUND_TYPES, docs/DESIGN.md section 8);

and, on the same files, essentia's KeyExtractor (defaults) and RhythmExtractor2013
(``multifeature``). Essentia has no "no key" or "no tempo": its figures are on the pitched
files (key) and the files with a tempo (BPM) only. Our vectors are computed as a scan
stores them (``Embedder.embed_file``); they and essentia's results are cached in ``--cache``.

Usage::

    python benchmarks/analyze_accuracy.py --songs runs/bench --sounds runs/benchv2 \\
        [--checkpoint resources/loev-default.safetensors] [--no-essentia]
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engine import keys  # noqa: E402
from engine.model.heads import NO_KEY, NO_TEMPO, load_heads  # noqa: E402
from trainer.heads import acc1, acc2  # noqa: E402


def read_set(folder: Path) -> list[dict[str, str]]:
    with (folder / "labels.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        r["path"] = str(folder / r["file"])
    return rows


def embed(rows: list[dict[str, str]], checkpoint: Path | None, cache: Path) -> dict[str, np.ndarray]:
    """The files' vectors as a scan stores them, cached by model id and file list (the
    heads do not change them)."""
    from engine.model.checkpoint import read_checkpoint_info
    from engine.model.embed import Embedder
    from engine.resources import default_checkpoint

    model_id = read_checkpoint_info(checkpoint or default_checkpoint()).model_id
    tag = hashlib.sha256(json.dumps([[r["path"], Path(r["path"]).stat().st_mtime_ns] for r in rows])
                         .encode()).hexdigest()[:16]
    path = cache / f"vectors-{model_id}-{tag}.npz"
    if path.is_file():
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    emb = Embedder(checkpoint)
    vecs = [emb.embed_file(r["path"]) for r in rows]
    out = {s: np.stack([v[s] for v in vecs]) for s in emb.subspaces}
    cache.mkdir(parents=True, exist_ok=True)
    np.savez(path, **out)
    return out


def essentia_results(rows: list[dict[str, str]], cache: Path) -> list[dict[str, object]]:
    """(key name, bpm) per file from essentia's KeyExtractor and RhythmExtractor2013."""
    import essentia
    import essentia.standard as es

    essentia.log.infoActive = False
    essentia.log.warningActive = False
    cache.mkdir(parents=True, exist_ok=True)
    key_ex = es.KeyExtractor()
    rhythm = es.RhythmExtractor2013(method="multifeature")
    out = []
    for r in rows:
        p = Path(r["path"])
        tag = hashlib.sha256(f"{p.resolve()}:{p.stat().st_size}:{p.stat().st_mtime_ns}:{essentia.__version__}"
                             .encode()).hexdigest()[:20]
        c = cache / f"{tag}.json"
        if c.is_file():
            out.append(json.loads(c.read_text()))
            continue
        audio = es.MonoLoader(filename=str(p), sampleRate=44100)()
        key, scale, strength = key_ex(audio)
        bpm = float(rhythm(audio)[0]) if len(audio) > 44100 else 0.0
        res = {"key": f"{key} {scale}", "key_strength": float(strength), "bpm": bpm}
        c.write_text(json.dumps(res))
        out.append(res)
    return out


def mean(xs: list[float]) -> str:
    return f"{np.mean(xs):.3f} (n={len(xs)})" if xs else "n/a"


def key_score(ref: str, est: str | None) -> float:
    import mir_eval

    if est is None:
        return 0.0
    return float(mir_eval.key.weighted_score(ref, est))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--songs", type=Path, required=True, help="folder with labels.csv (held-out songs)")
    ap.add_argument("--sounds", type=Path, required=True, help="folder with oneshots/ and loops/")
    ap.add_argument("--checkpoint", type=Path, default=None, help="default: the shipped model")
    ap.add_argument("--no-essentia", action="store_true")
    ap.add_argument("--cache", type=Path, default=ROOT / "runs" / "analyze-cache")
    args = ap.parse_args(argv)

    heads = load_heads(args.checkpoint)
    if heads is None:
        print("the checkpoint has no heads (loev-train heads)", file=sys.stderr)
        return 2
    sets = {"songs": read_set(args.songs), "loops": read_set(args.sounds / "loops"),
            "one-shots": read_set(args.sounds / "oneshots")}
    print(f"heads {heads.heads_id}; files: " + ", ".join(f"{k} {len(v)}" for k, v in sets.items()))
    t0 = time.time()
    ours = {name: heads.predict(embed(rows, args.checkpoint, args.cache)) for name, rows in sets.items()}
    print(f"embedded and estimated in {time.time() - t0:.0f} s")
    theirs = None
    if not args.no_essentia:
        t0 = time.time()
        theirs = {name: essentia_results(rows, args.cache / "essentia") for name, rows in sets.items()}
        print(f"essentia in {time.time() - t0:.0f} s")

    lines = []

    def row(label: str, a: list[float], b: list[float] | None) -> None:
        lines.append(f"| {label} | {mean(a)} | {mean(b) if b is not None else '-'} |")

    lines.append("| figure | LOEV heads | essentia |")
    lines.append("|---|---|---|")
    for name, rows in (("songs", sets["songs"]), ("music loops", sets["loops"])):
        sel = [i for i, r in enumerate(rows) if keys.parse_key(r["key"]) is not None]
        src = "songs" if name == "songs" else "loops"
        a = [key_score(keys.canonical_key(rows[i]["key"]),
                       None if ours[src][i].key is None else keys.key_name(ours[src][i].key)) for i in sel]
        b = None if theirs is None else [key_score(keys.canonical_key(rows[i]["key"]),
                                                   keys.canonical_key(str(theirs[src][i]["key"]))) for i in sel]
        row(f"key weighted score, {name}", a, b)
    for name in ("one-shots", "loops"):
        rows = sets[name]
        sel = [i for i, r in enumerate(rows) if r["key"].strip().lower() == NO_KEY]
        row(f'"no key" accuracy, drum {name}', [float(ours[name][i].key is None) for i in sel], None)
    rows = sets["songs"]  # mir_eval's "X": a song without a key (drums and percussion only)
    sel = [i for i, r in enumerate(rows) if r["key"].strip() == "X"]
    row('"no key" accuracy, songs labelled X', [float(ours["songs"][i].key is None) for i in sel], None)
    for name in ("songs", "loops"):
        rows = sets[name]
        sel = [i for i, r in enumerate(rows) if r["tempo"] not in ("", NO_TEMPO)]
        ref = [float(rows[i]["tempo"]) for i in sel]
        for label, fn in (("acc1", acc1), ("acc2", acc2)):
            a = [float(fn(ours[name][i].bpm, t)) for i, t in zip(sel, ref)]
            b = None if theirs is None else [float(fn(float(theirs[name][i]["bpm"]) or None, t))
                                             for i, t in zip(sel, ref)]
            row(f"BPM {label}, {name}", a, b)
    rows = sets["one-shots"]
    row('"no tempo" accuracy, one-shots',
        [float(ours["one-shots"][i].bpm is None) for i, r in enumerate(rows) if r["tempo"] == NO_TEMPO], None)
    every = []
    for name, rows in sets.items():
        t = [float(e.type == r["type"]) for e, r in zip(ours[name], rows) if r.get("type")]
        row(f"type top-1, {name}", t, None)
        every += t
    row("type top-1, all files", every, None)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
