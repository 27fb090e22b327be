"""The library map: t-SNE layout quality on known clusters, the on-disk cache (hit,
rebuild on a model change, incremental update)."""
from __future__ import annotations

import numpy as np
import pytest

from engine.library import layout as layout_mod
from engine.library.catalogue import Library
from engine.library.layout import map_layout, place, tsne


def _clusters(n_per: int, k: int, dim: int = 16, seed: int = 0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, dim)) * 3
    lab = np.repeat(np.arange(k), n_per)
    x = centres[lab] + rng.normal(size=(len(lab), dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32), lab


def _same_cluster_at(y: np.ndarray, lab: np.ndarray, k: int = 5) -> float:
    d = ((y[:, None] - y[None]) ** 2).sum(-1)
    np.fill_diagonal(d, np.inf)
    nn = np.argsort(d, axis=1)[:, :k]
    return float((lab[nn] == lab[:, None]).mean())


def test_tsne_keeps_clusters_apart():
    x, lab = _clusters(30, 4)
    y = tsne(x, iterations=300)
    assert y.shape == (120, 2) and np.all(np.isfinite(y))
    assert _same_cluster_at(y, lab) > 0.95


def test_place_puts_a_copy_on_its_original():
    x, _ = _clusters(10, 3)
    y = np.arange(60, dtype=np.float32).reshape(30, 2)
    assert np.allclose(place(x[[4, 17]], x, y), y[[4, 17]], atol=0.5)


def _library(root, n: int, model_id: str = "m1", seed: int = 0):
    x, lab = _clusters(n // 4, 4, seed=seed)
    lib = Library(root, create=True)
    lib.set_model(model_id=model_id, checkpoint=None, config={}, subspaces=("invariant",),
                  dims={"invariant": x.shape[1]})
    with lib.transaction():
        for i, v in enumerate(x):
            lib.record_track(f"/m/c{lab[i]}/{i}.wav", size=1, mtime_ns=1, duration=1.0,
                             status="ok", vectors={"invariant": v})
    return lib, x


def test_cache_hit_model_change_and_incremental_update(tmp_path, monkeypatch):
    calls = []
    real = layout_mod.layout
    monkeypatch.setattr(layout_mod, "layout", lambda x, **kw: calls.append(len(x)) or real(x, **kw))
    lib, x = _library(tmp_path / "lib", 80)
    first = map_layout(lib, "invariant")
    assert first.recomputed and calls == [80] and len(first.paths) == 80
    assert (tmp_path / "lib" / "maps" / "invariant.npz").exists()

    again = map_layout(lib, "invariant")  # nothing changed: the cache, as it was
    assert calls == [80] and not again.recomputed
    assert np.array_equal(again.positions, first.positions)

    # Two new files (2.5%): placed by their neighbours, the others do not move.
    with lib.transaction():
        lib.record_track("/m/new1.wav", size=1, mtime_ns=1, duration=1.0, status="ok",
                         vectors={"invariant": x[3]})
        lib.record_track("/m/new2.wav", size=1, mtime_ns=1, duration=1.0, status="ok",
                         vectors={"invariant": x[50]})
    inc = map_layout(lib, "invariant")
    assert calls == [80] and inc.placed == 2 and not inc.recomputed
    at = {p: i for i, p in enumerate(inc.paths)}
    for p, pos in zip(first.paths, first.positions):
        assert np.array_equal(inc.positions[at[p]], pos)
    assert np.linalg.norm(inc.positions[at["/m/new1.wav"]] - first.positions[3]) < 1e-3 + \
        0.1 * np.ptp(first.positions[:, 0])

    # Many changes (> 20%): laid out again.
    lib.mark_deleted([t.id for t in lib.tracks()][:30])
    assert map_layout(lib, "invariant").recomputed and calls == [80, 52]

    # Another model: the cache is not taken for it.
    lib.set_model(model_id="m2", checkpoint=None, config={}, subspaces=("invariant",),
                  dims={"invariant": x.shape[1]})
    with lib.transaction():
        for i, v in enumerate(x[:12]):
            lib.record_track(f"/m/c/{i}.wav", size=1, mtime_ns=1, duration=1.0, status="ok",
                             vectors={"invariant": v})
    assert map_layout(lib, "invariant").recomputed and calls[-1] == 12
    lib.close()


def test_a_damaged_cache_is_rebuilt(tmp_path):
    lib, _ = _library(tmp_path / "lib", 20)
    map_layout(lib, "invariant")
    (tmp_path / "lib" / "maps" / "invariant.npz").write_bytes(b"garbage")
    again = map_layout(lib, "invariant")
    assert again.recomputed and np.all(np.isfinite(again.positions))
    lib.close()


@pytest.mark.parametrize("n", [1, 2, 3, 7])
def test_tiny_and_identical_libraries_get_finite_positions(n):
    x = np.random.default_rng(n).normal(size=(n, 8)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    assert np.all(np.isfinite(layout_mod.layout(x)))
    same = np.full((n, 8), 8 ** -0.5, dtype=np.float32)
    assert np.all(np.isfinite(layout_mod.layout(same)))
