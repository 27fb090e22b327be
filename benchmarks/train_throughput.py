"""Training throughput of the ``tiny`` profile on this machine: views/s of each stage.

    .venv/bin/python benchmarks/train_throughput.py [--data DIR] [--anchors 8] [--steps 5]

Prints views/s for: reading views (plan + seek + decode), the augmentation chain alone
(variant augmentations + Table IV base chain), the model step alone (forward, NT-Xent over
the heads, backward, Adam) and end to end (``trainer.fit.fit``, data loader included).
Without ``--data`` a folder of generated 10-second tones over clicks is used.

Each stage also prints views per CPU-second of this process (``time.process_time``): on a
machine shared with other jobs the wall-clock rate says more about the neighbours than
about the code, the CPU-time rate much less so (2 busy cores at most double it).
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


class _Clock:
    """Wall and CPU time of a stage."""

    def __enter__(self) -> _Clock:
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self.wall
        self.cpu = time.process_time() - self.cpu

    def report(self, label: str, views: int) -> None:
        print(f"{label:38s} {_rate(views, self.wall):8.1f} views/s wall "
              f"{_rate(views, self.cpu):8.1f} views/CPU-s")


def main() -> None:
    from engine.config import make_config
    from engine.model.network import build_model
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
    import os

    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores; "
          f"torch threads {torch.get_num_threads()}, batch {n} views "
          f"({args.anchors} anchors x 4), {len(tracks)} tracks")

    with _Clock() as c:
        batches = [batch_arrays(tracks, vcfg, seed=0, step=s) for s in range(args.steps)]
    c.report("read views (plan + seek + decode)", n * args.steps)
    batches = [{k: torch.as_tensor(v) for k, v in b.items()} for b in batches]

    views = Views(vcfg, cfg.variants, device=torch.device("cpu"))
    with torch.no_grad():  # warm-up: FFT plans, allocator, first-call set-up are not timed
        views(batches[0], torch.Generator().manual_seed(99))
    out = []
    with _Clock() as c, torch.no_grad():
        for s, b in enumerate(batches):
            out.append(views(b, torch.Generator().manual_seed(s)))
    c.report("augmentation chain alone", n * args.steps)

    torch.manual_seed(0)
    model = build_model(cfg)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    def model_step(b: dict, y: torch.Tensor, applied: torch.Tensor) -> None:
        masks = step_masks(cfg.method, cfg.heads, cfg.variants, b, applied, None, torch.device("cpu"))
        loss, _ = contrastive_loss(model(y)["projections"], masks, temperature=0.1)
        opt.zero_grad()
        loss.backward()
        opt.step()

    model_step(batches[0], *out[0])  # warm-up (first backward sets up kernels), not timed
    with _Clock() as c:
        for b, (y, applied) in zip(batches, out):
            model_step(b, y, applied)
    c.report("model step alone (fwd+loss+bwd+Adam)", n * args.steps)

    with tempfile.TemporaryDirectory() as run:
        opts = FitOptions(data=str(data), out=run, steps=args.steps + 1, method=args.method,
                          batch_anchors=args.anchors, device="cpu", workers=1, progress=False,
                          ckpt_every=0)
        with _Clock() as c:
            fit(opts)
        total = c.wall
        import csv

        with open(Path(run) / "log.csv") as f:
            vps = [float(r["views_per_s"]) for r in csv.DictReader(f)][1:]  # skip warm-up step
    print(f"{'end to end (fit, steady steps)':38s} {np.mean(vps):8.1f} views/s wall "
          f"({args.steps + 1} steps in {total:.1f} s incl. start-up; main-process CPU "
          f"{_rate(n * (args.steps + 1), c.cpu):.1f} views/CPU-s, loader worker not counted)")


if __name__ == "__main__":
    main()
