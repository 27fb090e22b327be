"""Query speed: in-process p50 at 100k tracks with recall@10, and `loev query` end to end.

Targets (2-core machine): in-process query p50 <= 1 ms with recall@10 >= 0.95
against brute force at 100k tracks; `loev query` of an indexed track in a 10k-track
library <= 0.3 s wall, end to end.

The vectors are random unit vectors (uniform on the sphere): the hardest case for HNSW,
since real embeddings cluster. Dimension defaults to the default checkpoint's (or 144, the
tiny profile's, when no checkpoint is shipped).

Usage: python benchmarks/query_speed.py [--n 100000] [--cli-n 10000] [--queries 500]
"""
from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from engine.library import vectors  # noqa: E402
from engine.library.catalogue import Library  # noqa: E402


def default_dim() -> tuple[int, str]:
    try:
        from engine.model.checkpoint import read_checkpoint_info
        from engine.resources import default_checkpoint

        info = read_checkpoint_info(default_checkpoint())
        return int(info.dims.get("pitch", next(iter(info.dims.values())))), "default checkpoint"
    except Exception as e:  # no shipped model yet
        return 144, f"tiny profile (no default checkpoint: {e})"


def random_unit(n: int, dim: int, seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def clustered_unit(n: int, dim: int, seed: int, *, per_cluster: int = 100,
                   spread: float = 0.5) -> np.ndarray:
    """Tracks in groups (albums, sample packs): unit centres plus isotropic noise."""
    rng = np.random.default_rng(seed)
    centres = random_unit(max(1, n // per_cluster), dim, seed + 1000)
    v = centres[rng.integers(0, len(centres), n)]
    v = v + spread * rng.standard_normal((n, dim)).astype(np.float32) / np.sqrt(dim)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def in_process(n: int, dim: int, n_queries: int, efs: list[int], data_kind: str) -> None:
    if data_kind == "sphere":
        data, queries = random_unit(n, dim, 0), random_unit(n_queries, dim, 1)
    else:
        both = clustered_unit(n + n_queries, dim, 0)
        data, queries = both[:n], both[n:]
    labels = np.arange(n)
    t0 = time.perf_counter()
    index = vectors.build_index(data, labels)
    print(f"build: {n} x {dim} in {time.perf_counter() - t0:.1f} s "
          f"(M={vectors.HNSW_M}, ef_construction={vectors.HNSW_EF_CONSTRUCTION})")
    index.set_num_threads(1)
    truth = np.argsort(-(queries @ data.T), axis=1)[:, :10]
    exact = []
    for q in queries[:100]:
        t1 = time.perf_counter()
        d = 1.0 - data @ q
        top = np.argpartition(d, 9)[:10]
        top[np.argsort(d[top])]
        exact.append(time.perf_counter() - t1)
    print(f"  exact scan of the store: p50 {np.percentile(exact, 50) * 1e3:.3f} ms, recall 1.0")
    for ef in efs:
        index.set_ef(ef)
        times, hits = [], 0
        for q, t in zip(queries, truth):
            t1 = time.perf_counter()
            got, _ = index.knn_query(q[None], k=10)
            times.append(time.perf_counter() - t1)
            hits += len(set(got[0]) & set(t))
        recall = hits / (10 * n_queries)
        p50, p95 = np.percentile(times, 50) * 1e3, np.percentile(times, 95) * 1e3
        mark = " <- engine default" if ef == vectors.HNSW_EF_SEARCH else ""
        print(f"  ef={ef:4d}: p50 {p50:.3f} ms, p95 {p95:.3f} ms, recall@10 {recall:.3f}{mark}")


def cli_library(root: Path, n: int, dim: int) -> Path:
    """A library of ``n`` tracks (empty files, random vectors) bound to a fake model."""
    music = root / "music"
    music.mkdir()
    lib = Library(root / "lib", create=True)
    dims = {"invariant": dim, "pitch": dim, "tempo": dim}
    lib.set_model(model_id="benchmark", checkpoint=None, config={}, subspaces=tuple(dims),
                  dims=dims)
    vecs = {s: random_unit(n, dim, i) for i, s in enumerate(dims)}
    with lib.transaction():
        for i in range(n):
            p = music / f"track{i:05d}.wav"
            p.touch()
            st = p.stat()
            lib.record_track(str(p), size=st.st_size, mtime_ns=st.st_mtime_ns, duration=60.0,
                             status="ok", vectors={s: v[i] for s, v in vecs.items()})
    vectors.export(lib)
    lib.close()
    return music / f"track{n // 2:05d}.wav"


def cli(n: int, dim: int, runs: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        track = cli_library(Path(tmp), n, dim)
        print(f"library: {n} tracks built in {time.perf_counter() - t0:.1f} s")
        cmd = [sys.executable, "-m", "engine.cli", "query", str(track), "--by", "key",
               "--library", str(Path(tmp) / "lib"), "--json"]
        walls, cpus = [], []
        for _ in range(runs):
            r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
            t1 = time.perf_counter()
            out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
            walls.append(time.perf_counter() - t1)
            r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpus.append(r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime)
            if out.returncode != 0:
                raise SystemExit(out.stderr)
        bare, bare_cpu = [], []
        for _ in range(runs):
            r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
            t1 = time.perf_counter()
            subprocess.run([sys.executable, "-c", "import numpy"], check=True)
            bare.append(time.perf_counter() - t1)
            r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
            bare_cpu.append(r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime)
        print(f"`loev query` of an indexed track, {n} tracks: wall median "
              f"{statistics.median(walls):.3f} s (min {min(walls):.3f} s), CPU time median "
              f"{statistics.median(cpus):.3f} s, over {runs} runs; load average "
              f"{os.getloadavg()[0]:.2f}")
        print(f"  for scale, `python -c 'import numpy'`: wall median {statistics.median(bare):.3f} s, "
              f"CPU time median {statistics.median(bare_cpu):.3f} s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=None)
    ap.add_argument("--queries", type=int, default=500)
    ap.add_argument("--ef", type=int, nargs="+", default=[32, 64, vectors.HNSW_EF_SEARCH, 200])
    ap.add_argument("--cli-n", type=int, default=10_000)
    ap.add_argument("--cli-runs", type=int, default=7)
    ap.add_argument("--skip-in-process", action="store_true")
    ap.add_argument("--data", choices=("sphere", "clustered"), default="sphere",
                    help="sphere: uniform random unit vectors (worst case); clustered: "
                         "groups of 100 tracks around random centres (spread 0.5)")
    args = ap.parse_args()
    dim, source = (args.dim, "--dim") if args.dim else default_dim()
    print(f"dimension {dim} ({source}); {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}")
    if not args.skip_in_process:
        print(f"data: {args.data}")
        in_process(args.n, dim, args.queries, sorted(set(args.ef)), args.data)
    if args.cli_n:
        cli(args.cli_n, dim, args.cli_runs)


if __name__ == "__main__":
    main()
