"""Map layout time and quality, and the map view's frame time, at 10,000 tracks.

Synthetic library: ``--folders`` folders, each a cluster in a 144-d unit space with a few
sub-clusters and noise (folder = what a producer would expect to land together). Prints,
for the engine's layout (exact t-SNE on landmarks + k-NN placement), PCA and, with
``--sklearn``, scikit-learn's Barnes-Hut t-SNE:

- seconds to lay out ``--n`` points;
- same-folder@10: the fraction of each point's 10 nearest map neighbours from its folder
  (in the 144-d space it is printed as the ceiling);
- trustworthiness@10 (scikit-learn's, on a 2,000-point sample), when scikit-learn is here;

then the incremental update time for 1% new points, and the frame time of
app.mapview.MapView panning and zooming over the 10k points (offscreen rendering to an
image, so it measures pyqtgraph's painting, not a compositor).

    python benchmarks/map_speed.py [--n 10000] [--sklearn] [--threads 2]
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def synthetic(n: int, folders: int, dim: int = 144, seed: int = 0):
    import numpy as np

    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(folders, dim))
    sub = rng.normal(size=(folders, 4, dim))
    lab = rng.integers(0, folders, n)
    x = centres[lab] + 0.7 * sub[lab, rng.integers(0, 4, n)] + 0.9 * rng.normal(size=(n, dim))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32), lab


def same_folder(y, lab, k: int = 10, sample: int = 1000, seed: int = 1) -> float:
    import numpy as np

    rng = np.random.default_rng(seed)
    idx = rng.choice(len(y), min(sample, len(y)), replace=False)
    d = ((y[idx, None, :] - y[None, :, :]) ** 2).sum(-1)
    d[np.arange(len(idx)), idx] = np.inf
    nn = np.argpartition(d, k, axis=1)[:, :k]
    return float((lab[nn] == lab[idx, None]).mean())


def trust(x, y, seed: int = 2) -> float | None:
    try:
        from sklearn.manifold import trustworthiness
    except ImportError:
        return None
    import numpy as np

    idx = np.random.default_rng(seed).choice(len(x), min(2000, len(x)), replace=False)
    return float(trustworthiness(x[idx], y[idx], n_neighbors=10))


def report(name: str, seconds: float, x, y, lab, cpu: float = 0.0) -> None:
    t = trust(x, y)
    print(f"{name:28s} {seconds:7.1f} s wall {cpu:7.1f} s CPU   "
          f"same-folder@10 {same_folder(y, lab):.3f}   "
          f"trustworthiness@10 {'n/a' if t is None else f'{t:.3f}'}", flush=True)


def frame_time(y, lab, frames: int = 60) -> tuple[float, float]:
    """Median wall and CPU seconds per pan or zoom step, repainted."""
    import numpy as np

    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtWidgets import QApplication

    from app.mapview import MapView

    app = QApplication.instance() or QApplication([])
    view = MapView()
    view.resize(1000, 700)
    view.set_points([f"/lib/folder{int(f)}/sample{i}.wav" for i, f in enumerate(lab)], y)
    view.show()
    app.processEvents()
    vb = view.plot.getViewBox()
    times, cpu = [], []
    for i in range(frames):
        t0, c0 = time.perf_counter(), time.process_time()
        (x0, x1), (y0, y1) = vb.viewRange()
        if i % 2:  # pan by 2% of the view, back and forth: the points stay in sight
            sign = 1 if (i // 2) % 2 else -1
            vb.translateBy(x=sign * 0.02 * (x1 - x0), y=sign * 0.02 * (y1 - y0))
        else:
            vb.scaleBy((0.99, 0.99) if (i // 2) % 2 else (1.01, 1.01))
        view.grab()  # one full repaint of the widget
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    view.close()
    return float(np.median(times)), float(np.median(cpu))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--folders", type=int, default=50)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--sklearn", action="store_true", help="also time scikit-learn's t-SNE")
    ap.add_argument("--no-gui", action="store_true")
    ap.add_argument("--gui-only", action="store_true", help="frame time only (PCA layout)")
    args = ap.parse_args()
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(args.threads)
    from engine.library.layout import _pca, layout, place

    x, lab = synthetic(args.n, args.folders)
    if args.gui_only:
        wall, cpu = frame_time(_pca(x), lab)
        print(f"map view pan/zoom at {len(x)} points: median {1000 * wall:.1f} ms wall "
              f"({1 / wall:.0f} frames/s), {1000 * cpu:.1f} ms CPU ({1 / cpu:.0f} frames/s)")
        return
    print(f"{args.n} points, {args.folders} folders, {x.shape[1]}-d, {args.threads} threads, "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print(f"{'144-d space (ceiling)':28s} {'':9s} same-folder@10 "
          f"{same_folder(x, lab):.3f}")
    # CPU seconds too (all threads): on a shared machine the wall time is not the cost.
    t0, c0 = time.perf_counter(), time.process_time()
    y = layout(x)
    report("engine layout", time.perf_counter() - t0, x, y, lab, time.process_time() - c0)
    t0, c0 = time.perf_counter(), time.process_time()
    p = _pca(x)
    report("PCA", time.perf_counter() - t0, x, p, lab, time.process_time() - c0)
    if args.sklearn:
        from sklearn.manifold import TSNE

        t0, c0 = time.perf_counter(), time.process_time()
        s = TSNE(2, init="pca", perplexity=30, max_iter=500, n_jobs=args.threads,
                 random_state=0).fit_transform(x)
        report("scikit-learn t-SNE (BH)", time.perf_counter() - t0, x, s, lab,
               time.process_time() - c0)
    new, new_lab = synthetic(args.n // 100, args.folders, seed=0)
    t0 = time.perf_counter()
    place(new, x, y)
    print(f"incremental: {len(new)} new points placed in {time.perf_counter() - t0:.3f} s")
    if not args.no_gui:
        wall, cpu = frame_time(y, lab)
        print(f"map view pan/zoom at {len(y)} points: median {1000 * wall:.1f} ms wall "
              f"({1 / wall:.0f} frames/s), {1000 * cpu:.1f} ms CPU ({1 / cpu:.0f} frames/s)")


if __name__ == "__main__":
    main()
