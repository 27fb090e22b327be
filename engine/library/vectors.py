"""Per-subspace vector stores and hnswlib cosine indexes, derived from the catalogue.

For each subspace ``S`` of the library's model the directory ``DIR/vectors/`` holds

``S.g<gen>.npy``
    float32 [n_rows, dim]: row ``i`` is the vector of the track whose label (catalogue row
    id) is ``i``; rows of tracks that are not ``ok`` are zeros.
``S.g<gen>.hnsw``
    the hnswlib index (space ``cosine``) over the non-zero rows, labels = row ids;
    removed tracks are marked deleted rather than rebuilt away.

and ``manifest.json`` names the current generation, the model id and the catalogue's
``vec_seq`` the files were built at. Files of a generation are written under temporary
names and moved into place with ``os.replace``; the manifest is replaced last. A reader
opens the manifest and then exactly the files it names, so it never sees a store and an
index of different generations or a half-written file. The previous generation is kept
for readers that opened it just before a swap.

This module needs numpy and hnswlib only: querying an indexed track never imports torch.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hnswlib
import numpy as np

from engine.errors import LibraryError
from engine.library.catalogue import Library

MANIFEST = "manifest.json"
VECTORS_DIR = "vectors"
# hnswlib build and search parameters. ef_search is raised to k when k is larger.
HNSW_M = 16
HNSW_EF_CONSTRUCTION = 200
HNSW_EF_SEARCH = 64
# Up to this many tracks a query scans the whole store (exact, and about as fast as the
# graph at this size: a 10k x 144 float32 product is ~0.4 ms on one core); above it,
# hnswlib.
EXACT_MAX = 10_000
# Above this fraction of deleted labels an index is rebuilt rather than extended.
REBUILD_DELETED_FRACTION = 0.3


def _vectors_dir(root: Path) -> Path:
    return Path(root) / VECTORS_DIR


def read_manifest(root: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The current manifest of a library's vector stores, or None if none was written."""
    path = _vectors_dir(Path(root)) / MANIFEST
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise LibraryError(f"cannot read {path}: {e}") from e


def _write_atomic(path: Path, write: Any) -> None:
    """Write through ``write(tmp_path)`` then move into place (fsync'd first)."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        write(tmp)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _new_index(dim: int, capacity: int) -> Any:
    index = hnswlib.Index(space="cosine", dim=dim)
    index.init_index(max_elements=max(capacity, 16), M=HNSW_M,
                     ef_construction=HNSW_EF_CONSTRUCTION, random_seed=0)
    return index


def build_index(vectors: np.ndarray, labels: np.ndarray, *, num_threads: int = -1) -> Any:
    """A fresh hnswlib cosine index over ``vectors`` [N, D] with ``labels`` [N]."""
    index = _new_index(vectors.shape[1], len(labels))
    if len(labels):
        index.add_items(vectors, labels, num_threads=num_threads)
    return index


@dataclass
class ExportReport:
    generation: int
    rebuilt: dict[str, bool] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)


def export(library: Library, *, full: bool = False) -> ExportReport:
    """Bring ``DIR/vectors/`` up to date with the catalogue (the caller holds the write lock).

    Extends the previous generation's store and index with the vectors written since its
    ``vec_seq`` and marks removed labels deleted; rebuilds from scratch when asked, when
    the model changed, or when too many labels are deleted.
    """
    root = library.root
    vdir = _vectors_dir(root)
    vdir.mkdir(exist_ok=True)
    for stale in vdir.glob(".*.tmp*"):  # left by a killed writer (we hold the lock now)
        stale.unlink(missing_ok=True)
    old = read_manifest(root)
    model_id = library.model_id
    dims = library.dims
    seq = int(library.get_meta("vec_seq", 0))
    if old is None or old.get("model_id") != model_id or \
            set(old.get("subspaces", {})) != set(dims):
        full = True
    if not full and int(old.get("vec_seq", -1)) == seq:
        return ExportReport(generation=int(old["generation"]))  # nothing new to export
    gen = (old or {}).get("generation", 0) + 1
    n_rows = library.max_id() + 1
    report = ExportReport(generation=gen)
    entries: dict[str, Any] = {}
    for name, dim in dims.items():
        prev = None if full else old["subspaces"].get(name)
        if prev is not None and prev.get("dim") != dim:
            prev = None
        entry, rebuilt = _export_subspace(library, vdir, name, dim, n_rows, gen, prev,
                                          0 if prev is None else int(old["vec_seq"]))
        entries[name] = entry
        report.rebuilt[name] = rebuilt
        report.counts[name] = entry["count"]
    manifest = {"format": 1, "generation": gen, "model_id": model_id, "vec_seq": seq,
                "rows": n_rows, "subspaces": entries}

    def write_manifest(tmp: Path) -> None:
        tmp.write_text(json.dumps(manifest, indent=1), encoding="utf-8")

    _write_atomic(vdir / MANIFEST, write_manifest)
    _remove_old_generations(vdir, keep={gen, gen - 1})
    return report


def _export_subspace(library: Library, vdir: Path, name: str, dim: int, n_rows: int,
                     gen: int, prev: dict[str, Any] | None, since: int
                     ) -> tuple[dict[str, Any], bool]:
    store = np.zeros((n_rows, dim), dtype=np.float32)
    index = None
    if prev is not None:
        old_store = np.load(vdir / prev["store"], mmap_mode="r")
        rows = min(len(old_store), n_rows)
        store[:rows] = old_store[:rows]
        removed = library.removed_since(since)
        deleted = int(prev.get("deleted", 0)) + len(removed)
        if deleted <= REBUILD_DELETED_FRACTION * max(int(prev.get("count", 0)), 1):
            index = hnswlib.Index(space="cosine", dim=dim)
            index.load_index(str(vdir / prev["index"]), max_elements=max(n_rows, 16))
    else:
        removed = []
    labels, vecs = [], []
    for tid, vec in library.iter_vectors(name, since_seq=0 if index is None else since):
        if vec.shape != (dim,):
            raise LibraryError(f"track {tid}: {name} vector has shape {vec.shape}, expected ({dim},)")
        labels.append(tid)
        vecs.append(vec)
    for tid in removed:
        if tid < n_rows:
            store[tid] = 0.0
    if labels:
        store[np.asarray(labels)] = np.stack(vecs)
    rebuilt = index is None
    if index is None:
        if prev is not None:
            # Rebuilding: only rows written in the catalogue now (all ok ones) count.
            store[:] = 0.0
            store[np.asarray(labels, dtype=np.int64)] = np.stack(vecs) if labels else 0.0
        ok = np.flatnonzero(np.any(store != 0.0, axis=1))
        index = build_index(store[ok], ok)
        deleted = 0
    else:
        present = set(index.get_ids_list())
        if index.get_max_elements() < n_rows:
            index.resize_index(n_rows)
        for tid in labels:
            if tid in present:
                # A changed file keeps its label; it may have been removed and come back.
                try:
                    index.unmark_deleted(tid)
                except RuntimeError:
                    pass  # it was not deleted
        if labels:
            index.add_items(np.stack(vecs), np.asarray(labels))
        deleted = int(prev.get("deleted", 0))
        updated = set(labels)
        for tid in removed:
            if tid in present or tid in updated:
                try:
                    index.mark_deleted(tid)
                    deleted += 1
                except RuntimeError:
                    pass  # already deleted
    count = int(np.count_nonzero(np.any(store != 0.0, axis=1)))
    store_name, index_name = f"{name}.g{gen}.npy", f"{name}.g{gen}.hnsw"
    _write_atomic(vdir / store_name, lambda tmp: _save_npy(tmp, store))
    _write_atomic(vdir / index_name, lambda tmp: index.save_index(str(tmp)))
    entry = {"dim": dim, "rows": n_rows, "count": count, "deleted": deleted,
             "store": store_name, "index": index_name}
    return entry, rebuilt


def _save_npy(path: Path, array: np.ndarray) -> None:
    with open(path, "wb") as f:
        np.save(f, array)


def _remove_old_generations(vdir: Path, *, keep: set[int]) -> None:
    for p in vdir.iterdir():
        parts = p.name.split(".")
        if len(parts) == 3 and parts[1].startswith("g") and parts[1][1:].isdigit() \
                and int(parts[1][1:]) not in keep:
            try:
                p.unlink()
            except OSError:
                pass  # a reader on another platform may hold it; the next export retries


class VectorIndex:
    """Read side: the stores and indexes named by one manifest (loaded lazily).

    Parameters
    ----------
    root : path
        The library directory.

    Raises
    ------
    LibraryError
        No vector store was written yet.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        manifest = read_manifest(self.root)
        if manifest is None:
            raise LibraryError(f"library {self.root} has no vector index yet; run `loev scan`")
        self.manifest = manifest
        self.model_id: str = manifest["model_id"]
        self.vec_seq: int = int(manifest["vec_seq"])
        self._stores: dict[str, np.ndarray] = {}
        self._indexes: dict[str, Any] = {}
        self._present: dict[str, np.ndarray] = {}

    @property
    def subspaces(self) -> tuple[str, ...]:
        return tuple(self.manifest["subspaces"])

    def count(self, subspace: str) -> int:
        return int(self._entry(subspace)["count"])

    def _entry(self, subspace: str) -> dict[str, Any]:
        try:
            return self.manifest["subspaces"][subspace]
        except KeyError:
            raise LibraryError(f"library {self.root} has no {subspace!r} subspace "
                               f"(it has {', '.join(self.subspaces)})") from None

    def store(self, subspace: str) -> np.ndarray:
        """float32 [n_rows, dim], memory-mapped; zero rows are absent tracks."""
        if subspace not in self._stores:
            path = _vectors_dir(self.root) / self._entry(subspace)["store"]
            try:
                self._stores[subspace] = np.load(path, mmap_mode="r")
            except (OSError, ValueError) as e:
                raise LibraryError(f"cannot read vector store {path}: {e}") from e
        return self._stores[subspace]

    def index(self, subspace: str) -> Any:
        if subspace not in self._indexes:
            entry = self._entry(subspace)
            path = _vectors_dir(self.root) / entry["index"]
            index = hnswlib.Index(space="cosine", dim=int(entry["dim"]))
            try:
                index.load_index(str(path), max_elements=0)
            except (RuntimeError, OSError) as e:
                raise LibraryError(f"cannot read index {path}: {e}") from e
            index.set_num_threads(1)
            self._indexes[subspace] = index
        return self._indexes[subspace]

    def vector(self, subspace: str, label: int) -> np.ndarray | None:
        store = self.store(subspace)
        if label >= len(store) or not np.any(store[label]):
            return None
        return np.asarray(store[label], dtype=np.float32)

    def search(self, subspace: str, vec: np.ndarray, *, k: int, ef: int | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
        """The k nearest labels and cosine distances for one vector [D].

        Exact over the store up to ``EXACT_MAX`` tracks, hnswlib above (or whenever
        ``ef`` is given).

        Returns
        -------
        labels : np.ndarray [<=k] int
        distances : np.ndarray [<=k] float32, cosine distance ``1 - cos``, ascending
        """
        count = self.count(subspace)
        k = min(k, count)
        if k <= 0:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
        vec = np.asarray(vec, dtype=np.float32)
        if count <= EXACT_MAX and ef is None:
            return self._exact(subspace, vec, k)
        index = self.index(subspace)
        index.set_ef(max(ef or HNSW_EF_SEARCH, k))
        labels, dists = index.knn_query(vec[None, :], k=k)
        return labels[0].astype(np.int64), dists[0]

    def _exact(self, subspace: str, vec: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        store = self.store(subspace)
        if subspace not in self._present:
            self._present[subspace] = np.any(store != 0.0, axis=1)
        norm = float(np.linalg.norm(vec)) or 1.0
        dists = 1.0 - (store @ vec) / norm  # stored rows are L2-normalised
        dists[~self._present[subspace]] = np.inf
        top = np.argpartition(dists, k - 1)[:k] if k < len(dists) else np.arange(len(dists))
        top = top[np.argsort(dists[top], kind="stable")]
        return top.astype(np.int64), dists[top].astype(np.float32)
