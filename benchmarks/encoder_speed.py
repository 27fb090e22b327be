"""Inference speed of the encoder: 3 s chunks per second, batch of 64, on this CPU.

Target: the ``tiny`` profile embeds at least 100 chunks/s on the 2-core machine,
since the app scans libraries with it.

    .venv/bin/python benchmarks/encoder_speed.py [--profiles tiny small] [--repeats 5]
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

from engine.config import CHUNK_SAMPLES, make_config
from engine.model.network import build_model, count_parameters


def chunks_per_second(profile: str, method: str, *, batch: int, repeats: int) -> tuple[float, float]:
    net = build_model(make_config(profile, method, "psts")).eval()
    y = torch.randn(batch, CHUNK_SAMPLES) * 0.1
    times = []
    with torch.inference_mode():
        net(y)  # warm-up
        for _ in range(repeats):
            t0 = time.perf_counter()
            net(y)
            times.append(time.perf_counter() - t0)
    return batch / statistics.median(times), count_parameters(net) / 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profiles", nargs="+", default=["tiny", "small"])
    ap.add_argument("--method", default="loev++")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} cpus")
    for prof in args.profiles:
        cps, mparams = chunks_per_second(prof, args.method, batch=args.batch, repeats=args.repeats)
        print(f"{prof:6s} {args.method}: {mparams:6.2f}M params  {cps:8.1f} chunks/s "
              f"({cps * 3:7.0f} s of audio per s)")


if __name__ == "__main__":
    main()
