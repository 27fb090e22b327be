"""Backfill speed: key/BPM/type estimates of a library scanned before the heads existed.

Builds a catalogue of N tracks with random unit vectors at the default checkpoint's
dimensions (bound to its model, as a scan would), then times
``engine.library.estimates.backfill`` with the shipped heads (nothing is decoded or
embedded: the heads read the stored vectors), the reading of the stored estimates that
``Session.estimates()`` does afterwards, and ``Session.compatible`` (find compatible keys)
of an indexed track. The "audio files" are empty files: only their size and mtime are
read.

Usage: python benchmarks/estimate_backfill.py [--n 20000]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from engine.library import estimates, vectors  # noqa: E402
from engine.library.catalogue import Library  # noqa: E402
from engine.model.checkpoint import read_checkpoint_info  # noqa: E402
from engine.resources import default_checkpoint  # noqa: E402
from engine.session import Session  # noqa: E402


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
        music = Path(tmp) / "music"
        music.mkdir()
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
                path = music / f"{i:06d}.wav"
                path.touch()
                st = os.stat(path)
                lib.record_track(str(path), size=st.st_size, mtime_ns=st.st_mtime_ns,
                                 duration=1.0, status="ok", vectors=vecs)
        build = time.perf_counter() - t0
        t0 = time.perf_counter()
        done = estimates.backfill(lib, heads)
        backfill = time.perf_counter() - t0
        t0 = time.perf_counter()
        stored = lib.estimates()
        read = time.perf_counter() - t0
        vectors.export(lib)
        lib.close()
        session = Session(Path(tmp) / "lib")
        times = []
        keyed = [p for p, (e, _) in stored.items() if e.key is not None][:4]
        if not keyed:
            sys.exit("no track was given a key: nothing to ask compatible keys of")
        for path in keyed:
            t0 = time.perf_counter()
            result = session.compatible(path, k=10)
            times.append(time.perf_counter() - t0)
        session.close()
    dims = ", ".join(f"{k} {v}" for k, v in info.dims.items())
    print(f"{args.n} tracks ({dims}); catalogue built in {build:.1f} s")
    print(f"backfill: {done} estimated in {backfill:.2f} s "
          f"({1e3 * backfill / max(done, 1):.3f} ms/track, batches of {estimates.BATCH})")
    print(f"reading {len(stored)} stored estimates: {read:.3f} s")
    print(f"compatible keys (k=10, {len(result.neighbours)} found): first call "
          f"{times[0]:.3f} s (opens the searcher), then {min(times[1:] or times):.3f} s")


if __name__ == "__main__":
    main()
