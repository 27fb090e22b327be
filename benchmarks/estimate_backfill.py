"""Backfill speed: key/BPM/type estimates of a library scanned before the heads existed.

Builds a catalogue of N tracks with random unit vectors at the default checkpoint's
dimensions (bound to its model, as a scan would), then times
``engine.library.estimates.backfill`` with the shipped heads (nothing is decoded or
embedded: the heads read the stored vectors) and the reading of the stored estimates
that ``Session.estimates()`` does afterwards.

Usage: python benchmarks/estimate_backfill.py [--n 20000]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from engine.library import estimates  # noqa: E402
from engine.library.catalogue import Library  # noqa: E402
from engine.model.checkpoint import read_checkpoint_info  # noqa: E402
from engine.resources import default_checkpoint  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20000)
    args = parser.parse_args()
    info = read_checkpoint_info(default_checkpoint())
    heads = estimates.heads_for(str(default_checkpoint()), info.model_id)
    if heads is None:
        sys.exit("the default checkpoint has no heads: nothing to measure")
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        lib = Library(Path(tmp) / "lib", create=True)
        lib.set_model(model_id=info.model_id, checkpoint=str(default_checkpoint()),
                      config=info.config, subspaces=info.subspaces, dims=info.dims)
        t0 = time.perf_counter()
        with lib.transaction():
            for i in range(args.n):
                vecs = {}
                for name, dim in info.dims.items():
                    v = rng.standard_normal(dim).astype(np.float32)
                    vecs[name] = v / np.linalg.norm(v)
                lib.record_track(f"/music/{i:06d}.wav", size=1, mtime_ns=1, duration=1.0,
                                 status="ok", vectors=vecs)
        build = time.perf_counter() - t0
        t0 = time.perf_counter()
        done = estimates.backfill(lib, heads)
        backfill = time.perf_counter() - t0
        t0 = time.perf_counter()
        stored = lib.estimates()
        read = time.perf_counter() - t0
        lib.close()
    dims = ", ".join(f"{k} {v}" for k, v in info.dims.items())
    print(f"{args.n} tracks ({dims}); catalogue built in {build:.1f} s")
    print(f"backfill: {done} estimated in {backfill:.2f} s "
          f"({1e3 * backfill / max(done, 1):.3f} ms/track, batches of {estimates.BATCH})")
    print(f"reading {len(stored)} stored estimates: {read:.3f} s")


if __name__ == "__main__":
    main()
