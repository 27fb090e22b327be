"""Training throughput of the ``tiny`` profile on this machine: views/s of each stage.

    .venv/bin/python benchmarks/train_throughput.py [--data DIR] [--anchors 8] [--steps 5]

Prints views/s for: reading views (plan + seek + decode), the augmentation chain alone
(variant augmentations + Table IV base chain), the model step alone (forward, NT-Xent over
the heads, backward, Adam) and end to end (``trainer.fit.fit``, data loader included).
Without ``--data`` a folder of generated 10-second tones over clicks is used.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def _generate(root: Path, n: int = 8) -> Path:
    import soundfile as sf

    sr = 16000
    t = np.arange(10 * sr) / sr
    for i in range(n):
        y = 0.2 * np.sin(2 * np.pi * 220 * 2 ** (i / 12) * t)
        y[(np.arange(len(t)) % int(sr * 60 / (80 + 10 * i))) < 80] += 0.5
        sf.write(root / f"gen{i}.wav", y.astype(np.float32), sr)
    return root


def _rate(views: int, seconds: float) -> float:
    return views / max(seconds, 1e-9)


def main() -> None:
    from engine.config import make_config
    from engine.model import build_model
    from trainer.data import ViewConfig, batch_arrays, build_index
    from trainer.fit import FitOptions, Views, fit, step_masks
    from trainer.objective import contrastive_loss

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=None)
    ap.add_argument("--anchors", type=int, default=8)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--method", default="loev++")
    args = ap.parse_args()

    tmp = tempfile.TemporaryDirectory()
    data = Path(args.data) if args.data else _generate(Path(tmp.name))
    tracks = build_index(data)
    cfg = make_config("tiny", args.method, "psts")
    vcfg = ViewConfig(anchors=args.anchors, views=4)
    n = vcfg.batch_views
    print(f"torch threads {torch.get_num_threads()}, batch {n} views "
          f"({args.anchors} anchors x 4), {len(tracks)} tracks")

    t0 = time.perf_counter()
    batches = [batch_arrays(tracks, vcfg, seed=0, step=s) for s in range(args.steps)]
    print(f"read views (plan + seek + decode):  {_rate(n * args.steps, time.perf_counter() - t0):8.1f} views/s")
    batches = [{k: torch.as_tensor(v) for k, v in b.items()} for b in batches]

    views = Views(vcfg, cfg.variants, device=torch.device("cpu"))
    t0 = time.perf_counter()
    out = []
    with torch.no_grad():
        for s, b in enumerate(batches):
            out.append(views(b, torch.Generator().manual_seed(s)))
    print(f"augmentation chain alone:           {_rate(n * args.steps, time.perf_counter() - t0):8.1f} views/s")

    torch.manual_seed(0)
    model = build_model(cfg)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    t0 = time.perf_counter()
    for b, (y, applied) in zip(batches, out):
        masks = step_masks(cfg.method, cfg.heads, cfg.variants, b, applied, None, torch.device("cpu"))
        loss, _ = contrastive_loss(model(y)["projections"], masks, temperature=0.1)
        opt.zero_grad()
        loss.backward()
        opt.step()
    print(f"model step alone (fwd+loss+bwd+Adam): {_rate(n * args.steps, time.perf_counter() - t0):6.1f} views/s")

    with tempfile.TemporaryDirectory() as run:
        opts = FitOptions(data=str(data), out=run, steps=args.steps + 1, method=args.method,
                          batch_anchors=args.anchors, device="cpu", workers=1, progress=False,
                          ckpt_every=0)
        t0 = time.perf_counter()
        fit(opts)
        total = time.perf_counter() - t0
        import csv

        with open(Path(run) / "log.csv") as f:
            vps = [float(r["views_per_s"]) for r in csv.DictReader(f)][1:]  # skip warm-up step
    print(f"end to end (fit, steady steps):     {np.mean(vps):8.1f} views/s "
          f"({args.steps + 1} steps in {total:.1f} s incl. start-up)")


if __name__ == "__main__":
    main()
