"""Per-subspace vector stores and hnswlib cosine indexes, derived from the catalogue.

For each subspace ``S`` of the library's model the directory ``DIR/vectors/`` holds

``S.g<gen>.npy``
    float32 [n_rows, dim]: row ``i`` is the vector of the track whose label (catalogue row
    id) is ``i``; rows of tracks that are not ``ok`` are zeros.
``S.g<gen>.hnsw``
    the hnswlib index (space ``cosine``) over the non-zero rows, labels = row ids;
    removed tracks are marked deleted rather than rebuilt away.

and ``manifest.json`` names the current generation, the model id, the id of the catalogue
that wrote the files and its ``vec_seq`` they were built at, and each file's size and
SHA-256. The files are derived data: a scan checks them against the manifest (and an index
file's structure) and rebuilds whatever is damaged, missing or from another catalogue from
the vectors in the catalogue; a reader checks an index before hnswlib ever sees it, since
hnswlib trusts the bytes it loads (flipped bytes crash the process). Files of a generation are written under temporary
names and moved into place with ``os.replace``; the manifest is replaced last. A reader
opens the manifest and then exactly the files it names, so it never sees a store and an
index of different generations or a half-written file. The previous generation is kept
for readers that opened it just before a swap.

This module needs numpy and hnswlib only: querying an indexed track never imports torch.
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import struct
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


_INT_FIELDS = ("generation", "vec_seq", "rows")
_ENTRY_INTS = ("dim", "rows", "count", "deleted")


def _damaged(path: Path, reason: str) -> LibraryError:
    return LibraryError(f"{path}: {reason}; run `loev scan` to rebuild the library's "
                        "vector files (they are derived from its catalogue)")


def _check_manifest(doc: Any, path: Path) -> dict[str, Any]:
    """``doc`` if it has the manifest's shape (types and plain file names), else raise."""
    def bad(reason: str) -> LibraryError:
        return _damaged(path, f"damaged vector manifest ({reason})")

    if not isinstance(doc, dict):
        raise bad(f"a JSON {type(doc).__name__}, not an object")
    for key in _INT_FIELDS:
        if type(doc.get(key)) is not int or doc[key] < 0:
            raise bad(f"{key!r} is not a count")
    if not isinstance(doc.get("model_id"), (str, type(None))):
        raise bad("'model_id' is not a string")
    if not isinstance(doc.get("catalogue_id"), (str, type(None))):
        raise bad("'catalogue_id' is not a string")
    subspaces = doc.get("subspaces")
    if not isinstance(subspaces, dict):
        raise bad("'subspaces' is not an object")
    for name, entry in subspaces.items():
        if not isinstance(entry, dict):
            raise bad(f"subspace {name!r} is not an object")
        for key in _ENTRY_INTS:
            if type(entry.get(key)) is not int or entry[key] < 0:
                raise bad(f"{name}.{key} is not a count")
        for key in ("store", "index"):
            file = entry.get(key)
            if not isinstance(file, str) or not file or os.sep in file or "/" in file \
                    or file.startswith("."):
                raise bad(f"{name}.{key} is not a file name")
        for key in ("store_size", "index_size"):
            if key in entry and (type(entry[key]) is not int or entry[key] < 0):
                raise bad(f"{name}.{key} is not a size")
        for key in ("store_sha256", "index_sha256"):
            if key in entry and not isinstance(entry[key], str):
                raise bad(f"{name}.{key} is not a checksum")
    return doc


def read_manifest(root: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The current manifest of a library's vector stores, or None if none was written.

    Raises
    ------
    LibraryError
        The manifest is unreadable or not a manifest (a scan rebuilds it).
    """
    path = _vectors_dir(Path(root)) / MANIFEST
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise LibraryError(f"cannot read {path}: {e.strerror or e}") from None
    except (ValueError, RecursionError) as e:
        raise _damaged(path, f"damaged vector manifest (not JSON: {str(e)[:80]})") from None
    return _check_manifest(doc, path)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _write_atomic(path: Path, write: Any, check: Any = None) -> tuple[int, str]:
    """Write through ``write(tmp_path)``, check what landed, then move into place.

    ``check(tmp_path)`` raises ``LibraryError`` if the file is not what was meant (a
    writer that does not report a full disk leaves a short file). Returns the file's
    size and SHA-256.

    Raises
    ------
    LibraryError
        The file could not be written (a full disk, no permission) or failed ``check``;
        the file in place before stays as it was.
    """
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        write(tmp)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        if check is not None:
            check(tmp)
        size, digest = tmp.stat().st_size, sha256_file(tmp)
        os.replace(tmp, path)
        return size, digest
    except OSError as e:
        reason = e.strerror or str(e)
        if e.errno == errno.ENOSPC:
            reason = f"{os.strerror(errno.ENOSPC)} (free some space and scan again)"
        raise LibraryError(f"cannot write {path}: {reason}") from None
    finally:
        if tmp.exists():
            tmp.unlink()


def _hnsw_save(index: Any, path: Path) -> None:
    """hnswlib's save (it reports no write error: :func:`check_hnsw_file` looks after)."""
    index.save_index(str(path))


_HNSW_HEADER = struct.Struct("<6QiI3QdQ")


def check_hnsw_file(path: Path, dim: int) -> None:
    """Check an hnswlib index file's structure before hnswlib reads it.

    hnswlib trusts the file: a short file gives an exception, a flipped neighbour id a
    read out of bounds. This walks the layout ``saveIndex`` writes (header, level-0
    block, one link list per element) and checks sizes, counts and neighbour ids.

    Raises
    ------
    LibraryError
    """
    def bad(reason: str) -> LibraryError:
        return _damaged(path, f"damaged hnsw index ({reason})")

    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(_HNSW_HEADER.size)
            if len(head) < _HNSW_HEADER.size:
                raise bad("shorter than its header")
            (off0, max_el, count, per_el, label_off, data_off, max_level, entry, max_m,
             max_m0, m, _mult, _efc) = _HNSW_HEADER.unpack(head)
            if not (off0 == 0 and 2 <= m <= 4096 and max_m == m and max_m0 == 2 * m
                    and data_off == 4 + 4 * max_m0 and label_off == data_off + 4 * dim
                    and per_el == label_off + 8 and count <= max_el and -1 <= max_level < 64
                    and (count == 0 or entry < count)):
                raise bad("inconsistent header")
            level0 = count * per_el
            if _HNSW_HEADER.size + level0 + 4 * count > size:
                raise bad(f"{size} bytes, fewer than its {count} elements need")
            block = np.frombuffer(f.read(level0), dtype=np.uint8).reshape(count, per_el)
            links = block[:, :data_off].copy().view(np.uint32)
            n_links = links[:, 0] & 0xFFFF
            if np.any(n_links > max_m0):
                raise bad("a level-0 link list is too long")
            cols = np.arange(max_m0)[None, :] < n_links[:, None]
            if np.any(links[:, 1:][cols] >= count):
                raise bad("a level-0 link points outside the index")
            upper = 4 + 4 * max_m
            pos = _HNSW_HEADER.size + level0
            for _ in range(count):
                raw = f.read(4)
                if len(raw) < 4:
                    raise bad("truncated link lists")
                (n,) = struct.unpack("<I", raw)
                pos += 4
                if n:
                    if n % upper or n // upper > 64 or pos + n > size:
                        raise bad("a link list has an impossible size")
                    lists = np.frombuffer(f.read(n), dtype=np.uint32).reshape(-1, max_m + 1)
                    if np.any((lists[:, 0] & 0xFFFF) > max_m) or np.any(
                            lists[:, 1:][np.arange(max_m)[None, :] < (lists[:, :1] & 0xFFFF)]
                            >= count):
                        raise bad("an upper-level link points outside the index")
                    pos += n
            if pos != size:
                raise bad(f"{size} bytes where its structure takes {pos}")
    except OSError as e:
        raise LibraryError(f"cannot read {path}: {e.strerror or e}") from None


def _check_npy(path: Path, shape: tuple[int, int]) -> None:
    try:
        arr = np.load(path, mmap_mode="r")
    except (OSError, ValueError) as e:
        raise _damaged(path, f"damaged vector store ({str(e)[:80]})") from None
    if arr.shape != shape or arr.dtype != np.float32:
        raise _damaged(path, f"damaged vector store (shape {arr.shape} {arr.dtype}, "
                             f"expected {shape} float32)")


def verify_files(root: str | os.PathLike[str], manifest: dict[str, Any], *,
                 full: bool = True) -> list[str]:
    """What is wrong with the files a manifest names (empty when all is well).

    Sizes, store shapes and index structure are always checked; ``full`` also compares
    each file's SHA-256 and each store's count of rows with the manifest.
    """
    vdir = _vectors_dir(Path(root))
    problems: list[str] = []
    for name, entry in manifest["subspaces"].items():
        for kind in ("store", "index"):
            path = vdir / entry[kind]
            try:
                size = path.stat().st_size
            except OSError as e:
                problems.append(f"{kind} {path.name}: {e.strerror or 'missing'}")
                continue
            want = entry.get(f"{kind}_size")
            if want is not None and size != want:
                problems.append(f"{kind} {path.name}: {size} bytes, the manifest says {want}")
                continue
            digest = entry.get(f"{kind}_sha256")
            if full and digest is not None and sha256_file(path) != digest:
                problems.append(f"{kind} {path.name}: checksum differs from the manifest's")
                continue
            try:
                if kind == "store":
                    _check_npy(path, (entry["rows"], entry["dim"]))
                    if full:
                        store = np.load(path, mmap_mode="r")
                        count = int(np.count_nonzero(np.any(store != 0.0, axis=1)))
                        if count != entry["count"]:
                            problems.append(f"store {path.name}: {count} vectors, the "
                                            f"manifest says {entry['count']}")
                else:
                    check_hnsw_file(path, entry["dim"])
            except LibraryError as e:
                problems.append(f"{kind} {path.name}: {str(e).split('; run')[0]}")
    return problems


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
    repaired: list[str] = field(default_factory=list)  # damage found and rebuilt


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
    repaired: list[str] = []
    try:
        old = read_manifest(root)
    except LibraryError as e:
        old = None
        repaired.append(str(e).split("; run")[0])
    model_id = library.model_id
    dims = library.dims
    seq = int(library.get_meta("vec_seq", 0))
    if old is not None:
        damage = verify_files(root, old, full=True)
        repaired += [f"vector {d}" for d in damage]
        if damage or any("index_sha256" not in e for e in old["subspaces"].values()):
            full = True  # damaged, or written before files had checksums
        elif old.get("catalogue_id") != library.catalogue_id:
            full = True  # left by another catalogue (a deleted one): its labels mean nothing
            if old.get("catalogue_id") is not None:
                repaired.append("vector files of another catalogue discarded")
    if old is None or old.get("model_id") != model_id or \
            set(old.get("subspaces", {})) != set(dims):
        full = True
    if not full and int(old.get("vec_seq", -1)) == seq:
        return ExportReport(generation=int(old["generation"]))  # nothing new to export
    gen = (old or {}).get("generation", 0) + 1
    n_rows = library.max_id() + 1
    report = ExportReport(generation=gen, repaired=repaired)
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
    manifest = {"format": 1, "generation": gen, "model_id": model_id,
                "catalogue_id": library.catalogue_id, "vec_seq": seq, "rows": n_rows,
                "subspaces": entries}

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
            check_hnsw_file(vdir / prev["index"], dim)  # verified above; hnswlib trusts it
            index = hnswlib.Index(space="cosine", dim=dim)
            index.load_index(str(vdir / prev["index"]), max_elements=max(n_rows, 16))
    else:
        removed = []
    labels, vecs = [], []
    for tid, vec in library.iter_vectors(name, since_seq=0 if index is None else since):
        if vec.shape != (dim,):
            raise LibraryError(f"track {tid}: {name} vector has shape {vec.shape}, expected "
                               f"({dim},); run `loev scan` to embed it again")
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
    store_size, store_sha = _write_atomic(vdir / store_name, lambda tmp: _save_npy(tmp, store),
                                          lambda tmp: _check_npy(tmp, store.shape))
    index_size, index_sha = _write_atomic(vdir / index_name, lambda tmp: _hnsw_save(index, tmp),
                                          lambda tmp: check_hnsw_file(tmp, dim))
    entry = {"dim": dim, "rows": n_rows, "count": count, "deleted": deleted,
             "store": store_name, "index": index_name,
             "store_size": store_size, "store_sha256": store_sha,
             "index_size": index_size, "index_sha256": index_sha}
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
        self.catalogue_id: str | None = manifest.get("catalogue_id")
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
            entry = self._entry(subspace)
            path = _vectors_dir(self.root) / entry["store"]
            try:
                size = path.stat().st_size
            except OSError as e:
                raise _damaged(path, f"vector store unreadable ({e.strerror or e})") from None
            if entry.get("store_size", size) != size:
                raise _damaged(path, f"damaged vector store ({size} bytes, the manifest says "
                                     f"{entry['store_size']})")
            _check_npy(path, (entry["rows"], entry["dim"]))
            self._stores[subspace] = np.load(path, mmap_mode="r")
        return self._stores[subspace]

    def index(self, subspace: str) -> Any:
        if subspace not in self._indexes:
            entry = self._entry(subspace)
            path = _vectors_dir(self.root) / entry["index"]
            # Checked before hnswlib reads a byte: it would crash on a damaged file.
            digest = entry.get("index_sha256")
            try:
                if digest is not None and sha256_file(path) != digest:
                    raise _damaged(path, "damaged hnsw index (checksum differs from the "
                                         "manifest's)")
            except OSError as e:
                raise _damaged(path, f"hnsw index unreadable ({e.strerror or e})") from None
            check_hnsw_file(path, int(entry["dim"]))
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
