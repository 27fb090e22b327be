"""Incremental, resumable scanning of folders into a library (docs/DESIGN.md section 5).

A scan

1. takes the library's write lock (a second writer waits ``lock_timeout`` seconds, then
   fails with ``LibraryError``);
2. binds the library to the embedder's model: a different model id empties every vector
   in the same transaction and marks every file pending, so two models never mix. A new
   checkpoint is loaded first: one whose weights do not load changes nothing. Every
   pending file of the library is embedded in that scan, not only those of the folders
   given, so switching model never leaves part of the library out of the results;
3. walks the folders (symlinks followed, each real directory visited once, so a symlink
   loop ends; an unreadable directory is recorded as a problem and its files are neither
   scanned nor forgotten);
4. forgets files that disappeared, then embeds new, changed (size or mtime) and pending
   files in path order, committing rows and vectors together every ``batch_size`` files
   or ``commit_seconds``: a kill loses at most the uncommitted batch and a restart picks
   up where it stopped, since committed files now match their size and mtime;
5. records a file that cannot be decoded or embedded with its reason and goes on;
6. exports the per-subspace stores and hnswlib indexes atomically (engine.library.vectors),
   also when interrupted (Ctrl-C keeps what was embedded searchable).

When the checkpoint has key/BPM/type heads (engine.model.heads), each committed batch
carries the heads' estimates, read from the vectors just made (no extra decode); at the
end every ok track without an estimate, or with one from other heads, gets one from its
stored vectors (engine.library.estimates), so a library scanned before the heads existed
is estimated without embedding anything. A checkpoint without heads estimates nothing.

Damage costs a rebuild, never the library: a catalogue SQLite reports as damaged is moved
aside and rebuilt, rows whose vectors are missing or malformed are embedded again, and
vector files that fail their checks are rebuilt from the catalogue (``repaired`` lists
what was found).

The GUI calls :func:`scan` from a worker thread with a ``progress`` callback and a
``cancel`` flag; the CLI shows a tqdm bar.
"""
from __future__ import annotations

import hashlib
import os
import stat
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from engine.audio.decode import audio_info, is_audio_path
from engine.errors import DecodeError, EmbedderError, LibraryError, LoevError
from engine.library import estimates, vectors
from engine.library.catalogue import Library
from engine.model.checkpoint import read_checkpoint_info
from engine.resources import default_checkpoint

ProgressCallback = Callable[[int, int, "str | None"], None]


class EmbedderLike(Protocol):
    """What a scan needs of ``engine.model.embed.Embedder``."""

    model_id: str
    config: dict[str, Any]
    subspaces: tuple[str, ...]
    dims: dict[str, int]

    def embed_file(self, path: str) -> dict[str, np.ndarray]: ...


@dataclass
class ScanReport:
    """What one scan did. Paths are absolute and resolved."""

    library: str
    found: int = 0
    added: int = 0
    updated: int = 0
    removed: int = 0
    unchanged: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    problems: list[tuple[str, str]] = field(default_factory=list)
    cancelled: bool = False
    reembedded: bool = False
    repaired: list[str] = field(default_factory=list)
    audio_seconds: float = 0.0
    seconds: float = 0.0
    estimated: int = 0


    def to_dict(self) -> dict[str, Any]:
        return {
            "library": self.library, "found": self.found, "added": self.added,
            "updated": self.updated, "removed": self.removed, "unchanged": self.unchanged,
            "failed": [{"path": p, "reason": r} for p, r in self.failed],
            "problems": [{"path": p, "reason": r} for p, r in self.problems],
            "cancelled": self.cancelled, "reembedded": self.reembedded,
            "repaired": list(self.repaired),
            "audio_seconds": round(self.audio_seconds, 3), "seconds": round(self.seconds, 3),
            "estimated": self.estimated,
        }


# -- walking ---------------------------------------------------------------------------


@dataclass
class WalkResult:
    files: dict[str, tuple[int, int]]  # resolved path -> (size, mtime_ns)
    problems: list[tuple[str, str]]  # (path, reason) of folders that could not be read
    unreadable: list[str]  # resolved folders whose contents are unknown this time
    via: dict[str, str] = field(default_factory=dict)  # resolved path -> path found at


def walk_audio(folders: Iterable[str | os.PathLike[str]]) -> WalkResult:
    """Find audio files (by extension, any case) under ``folders``, recursively.

    Symbolic links are followed, but every real directory is entered once (by device
    and inode), so a link loop cannot recurse. A folder argument may also be a single
    audio file.

    Raises
    ------
    LibraryError
        A folder argument does not exist.
    """
    result = WalkResult({}, [], [])
    seen_dirs: set[tuple[int, int]] = set()
    stack: list[str] = []
    for folder in folders:
        path = os.path.abspath(os.path.expanduser(os.fspath(folder)))
        if not os.path.exists(path):
            raise LibraryError(f"{path}: no such folder")
        if os.path.isdir(path):
            stack.append(path)
        elif is_audio_path(path):
            _add_file(result, path, None)
        else:
            raise LibraryError(f"{path}: not a folder or an audio file")
    while stack:
        folder = stack.pop()
        try:
            st = os.stat(folder)
            key = (st.st_dev, st.st_ino)
            if key in seen_dirs:
                continue
            seen_dirs.add(key)
            with os.scandir(folder) as it:
                entries = list(it)
        except OSError as e:
            result.problems.append((folder, f"cannot read folder: {e.strerror or e}"))
            result.unreadable.append(os.path.realpath(folder))
            continue
        for entry in sorted(entries, key=lambda e: e.name, reverse=True):
            try:
                if entry.is_dir():
                    stack.append(entry.path)
                elif is_audio_path(entry.name) and entry.is_file():
                    _add_file(result, entry.path, None)
            except OSError as e:
                result.problems.append((entry.path, f"cannot stat: {e.strerror or e}"))
    return result


def _add_file(result: WalkResult, path: str, _unused: Any) -> None:
    try:
        st = os.stat(path)
    except OSError as e:
        result.problems.append((path, f"cannot stat: {e.strerror or e}"))
        return
    if stat.S_ISREG(st.st_mode):
        real = os.path.realpath(path)
        result.files[real] = (st.st_size, st.st_mtime_ns)
        result.via.setdefault(real, path)


def _under(path: str, roots: list[str]) -> bool:
    return any(path == r or path.startswith(r.rstrip(os.sep) + os.sep) for r in roots)


# -- scanning --------------------------------------------------------------------------


def _is_cancelled(cancel: Any) -> bool:
    if cancel is None:
        return False
    if hasattr(cancel, "is_set"):
        return bool(cancel.is_set())
    return bool(cancel())


def _model_identity(embedder: EmbedderLike | None, checkpoint: str | os.PathLike[str] | None
                    ) -> dict[str, Any]:
    """Model id, config, subspaces and dims, from the embedder or the checkpoint header."""
    if embedder is not None:
        return {"model_id": embedder.model_id,
                "checkpoint": str(getattr(embedder, "checkpoint_path", "") or "") or None,
                "config": dict(embedder.config if isinstance(embedder.config, dict)
                               else embedder.config.to_dict()),
                "subspaces": tuple(embedder.subspaces), "dims": dict(embedder.dims)}
    if checkpoint is None:
        checkpoint = default_checkpoint()
    info = read_checkpoint_info(checkpoint)
    return {"model_id": info.model_id, "checkpoint": str(Path(info.path).absolute()),
            "config": info.config, "subspaces": info.subspaces, "dims": info.dims}


def scan(
    folders: Iterable[str | os.PathLike[str]],
    *,
    library: Library | str | os.PathLike[str],
    embedder: EmbedderLike | None = None,
    checkpoint: str | os.PathLike[str] | None = None,
    progress: ProgressCallback | None = None,
    cancel: Any = None,
    batch_size: int = 16,
    commit_seconds: float = 5.0,
    lock_timeout: float = 0.0,
    workers: int = 2,
) -> ScanReport:
    """Scan ``folders`` into ``library``, incrementally.

    Parameters
    ----------
    folders : iterable of path
        Folders (or single audio files) to scan recursively.
    library : Library or path
        An open library, or its directory (created if missing).
    embedder : Embedder, optional
        Embeds audio files. Without one, the model is identified from ``checkpoint``'s
        header (the default checkpoint when None) and an ``engine.model.embed.Embedder`` is only
        built (importing torch) if some file needs embedding.
    checkpoint : path, optional
        Used when ``embedder`` is None.
    progress : callable(done, total, path), optional
        Called with ``(0, total, None)`` once the work is known, then after each file.
    cancel : threading.Event or callable() -> bool, optional
        Checked between files; when set, the work done so far is committed and exported
        and the report says ``cancelled``.
    batch_size, commit_seconds : int, float
        Commit at least every ``batch_size`` files or ``commit_seconds`` seconds.
    lock_timeout : float
        Seconds to wait for another process writing the same library.
    workers : int
        Files decoded and embedded at once (results are still committed in order).

    Returns
    -------
    ScanReport

    Raises
    ------
    LibraryError
        A folder is missing, or another process holds the library.
    CheckpointError
        The checkpoint cannot be read.
    """
    t0 = time.monotonic()
    folders = list(folders)
    # Check the model and the folders before creating or locking anything.
    ident = _model_identity(embedder, checkpoint)
    walk_audio([f for f in folders if not os.path.isdir(f)])
    own = not isinstance(library, Library)
    lib = Library(library, create=True, repair=True) if own else library
    try:
        lib.acquire_write_lock(timeout=lock_timeout)
        try:
            report = _scan_locked(folders, lib, embedder, ident, progress, cancel,
                                  batch_size, commit_seconds, workers)
        finally:
            lib.release_write_lock()
    finally:
        if own:
            lib.close()
    report.seconds = time.monotonic() - t0
    return report


def _scan_locked(folders: list[Any], lib: Library, embedder: EmbedderLike | None,
                 ident: dict[str, Any], progress: ProgressCallback | None, cancel: Any,
                 batch_size: int, commit_seconds: float, workers: int) -> ScanReport:
    report = ScanReport(library=str(lib.root), repaired=list(lib.repaired))
    walk = walk_audio(folders)
    if embedder is None and lib.model_id != ident["model_id"]:
        # Load the new model before anything changes: a checkpoint whose header reads but
        # whose weights do not must not cost the library its vectors.
        embedder = _make_embedder(ident["checkpoint"])
    report.reembedded = lib.set_model(**ident)
    damaged = lib.damaged_vectors(lib.dims)
    if damaged:
        lib.mark_pending(damaged)
        report.repaired.append(f"{len(damaged)} track(s) with missing or malformed vectors "
                               "embedded again")
    report.problems = list(walk.problems)
    heads = _load_heads(ident, report)
    roots = [os.path.realpath(os.path.abspath(os.path.expanduser(os.fspath(f))))
             for f in folders]
    lib.set_problems([(p, "folder", r) for p, r in walk.problems],
                     under=roots + [os.path.abspath(os.path.expanduser(os.fspath(f)))
                                    for f in folders])
    report.found = len(walk.files)

    found_at = roots + [os.path.abspath(os.path.expanduser(os.fspath(f))) for f in folders]
    known = {t.path: t for t in lib.tracks()}
    # A file reached through a symlink in a scanned folder goes with the link.
    gone = [t.id for p, t in known.items() if p not in walk.files
            and not _under(p, walk.unreadable)
            and (_under(p, roots) or (t.via is not None and _under(t.via, found_at))
                 or not os.path.exists(p))]
    # A file that moved or was renamed is the same bytes: it keeps its vectors (read
    # before its old row becomes a tombstone) instead of being embedded again.
    gone_set = set(gone)
    moved = _vectors_by_hash(lib, [t for t in known.values() if t.id in gone_set])
    lib.mark_deleted(gone)
    report.removed = len(gone)
    gone_ids = set(gone)

    files = dict(walk.files)
    for p, t in known.items():
        # Pending files outside these folders (a model switch): embed them now too.
        if t.status == "pending" and p not in files and t.id not in gone_ids:
            try:
                st = os.stat(p)
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode):
                files[p] = (st.st_size, st.st_mtime_ns)
    todo: list[str] = []
    unhashed: list[str] = []
    for path, (size, mtime_ns) in sorted(files.items()):
        t = known.get(path)
        if t is None or t.status == "pending" or (t.size, t.mtime_ns) != (size, mtime_ns):
            todo.append(path)
        else:
            report.unchanged += 1
            if t.content_hash is None:
                unhashed.append(path)
    # Rows scanned before content hashes existed get theirs now, without re-embedding.
    for i in range(0, len(unhashed), batch_size):
        if _is_cancelled(cancel):
            break
        found = {}
        for path in unhashed[i:i + batch_size]:
            try:
                found[path] = content_hash(path)
            except OSError:
                continue  # unreadable now: the next scan tries again
        lib.set_hashes(found)
    if progress is not None:
        progress(0, len(todo), None)

    pending: list[tuple[str, dict[str, Any]]] = []
    last_commit = time.monotonic()

    def commit() -> None:
        nonlocal last_commit, heads
        found = {}
        if heads is not None:
            try:
                found = _estimate_rows(heads, pending)
            except LibraryError as e:  # heads that do not fit: the vectors still go in
                report.problems.append((str(ident["checkpoint"]), str(e)))
                heads = None
        with lib.transaction():
            for i, (path, row) in enumerate(pending):
                lib.record_track(path, **row, estimate=found.get(i),
                                 heads_id=None if heads is None else heads.heads_id)
        report.estimated += len(found)
        pending.clear()
        last_commit = time.monotonic()

    if todo and embedder is None:
        embedder = _make_embedder(ident["checkpoint"])
    rows = _embedded_in_order(embedder, todo, files, cancel, workers, moved)
    try:
        for done, (path, row) in enumerate(rows, 1):
            if row["status"] == "ok":
                report.audio_seconds += row["duration"] or 0.0
            else:
                report.failed.append((path, row["error"]))
            if path in known:
                report.updated += 1
            else:
                report.added += 1
            via = walk.via.get(path)
            pending.append((path, {**row, "via": via if via != path else None}))
            if len(pending) >= batch_size or time.monotonic() - last_commit >= commit_seconds:
                commit()
            if progress is not None:
                progress(done, len(todo), path)
    except (EmbedderError, KeyboardInterrupt):
        # The embedder failed or Ctrl-C: what was embedded is kept and made searchable, then
        # the error goes on; the next scan resumes after it.
        if pending:
            commit()
        vectors.export(lib, full=report.reembedded)
        raise
    report.cancelled = report.added + report.updated < len(todo)
    if pending:
        commit()
    if heads is not None and not report.cancelled:
        try:
            report.estimated += estimates.backfill(lib, heads, cancel=cancel)
        except LibraryError as e:
            report.problems.append((str(ident["checkpoint"]), str(e)))
    report.repaired += vectors.export(lib, full=report.reembedded).repaired
    return report


def _load_heads(ident: dict[str, Any], report: ScanReport) -> Any:
    """The checkpoint's key/BPM/type heads, or None (none there, or unreadable: a scan
    never fails for want of estimates)."""
    try:
        return estimates.heads_for(ident["checkpoint"], ident["model_id"])
    except LoevError as e:
        report.problems.append((str(ident["checkpoint"]),
                                f"no key/BPM/type estimates: {e}"))
        return None


def _estimate_rows(heads: Any, rows: list[tuple[str, dict[str, Any]]]) -> dict[int, Any]:
    """``{position in rows: Estimate}`` for the ok rows, from their new vectors."""
    ok = [i for i, (_, row) in enumerate(rows) if row["status"] == "ok" and row.get("vectors")]
    if not ok:
        return {}
    names = list(rows[ok[0]][1]["vectors"])
    stacked = {n: np.stack([np.asarray(rows[i][1]["vectors"][n], dtype=np.float32)
                            for i in ok]) for n in names}
    return dict(zip(ok, estimates.predict(heads, stacked)))


def _vectors_by_hash(lib: Library, tracks: list[Any]
                     ) -> dict[str, tuple[float | None, dict[str, np.ndarray]]]:
    """``{content hash: (duration, {subspace: vector})}`` of ok tracks of the current
    model (complete vectors only)."""
    out: dict[str, tuple[float | None, dict[str, np.ndarray]]] = {}
    for t in tracks:
        if t.status != "ok" or not t.content_hash or t.model_id != lib.model_id:
            continue
        vecs = {name: lib.vector(t.id, name) for name in lib.subspaces}
        if all(v is not None and len(v) == lib.dims.get(name) for name, v in vecs.items()):
            out[t.content_hash] = (t.duration, vecs)  # type: ignore[assignment]
    return out


def _embedded_in_order(embedder: EmbedderLike | None, todo: list[str],
                       stats: dict[str, tuple[int, int]], cancel: Any, workers: int,
                       moved: dict[str, Any] | None = None
                       ) -> Iterator[tuple[str, dict[str, Any]]]:
    """Rows for ``todo`` in order, ``workers`` files in flight, stopping at ``cancel``.

    Two files in flight overlap one file's decoding (libsndfile releases the GIL) with
    the other's network pass; results still come back, and are committed, in path order.
    """
    if not todo:
        return
    assert embedder is not None
    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="loev-scan") as pool:
        futures: deque[tuple[str, Future[dict[str, Any]]]] = deque()
        queue = iter(todo)
        try:
            while True:
                while len(futures) < max(1, workers) and not _is_cancelled(cancel):
                    path = next(queue, None)
                    if path is None:
                        break
                    futures.append((path, pool.submit(_embed_one, embedder, path, *stats[path],
                                                              moved)))
                if not futures or _is_cancelled(cancel):
                    return  # a cancelled scan drops files not yet handed out
                path, future = futures.popleft()
                yield path, future.result()
        finally:
            for _, future in futures:
                future.cancel()


def _make_embedder(checkpoint: str | None) -> EmbedderLike:
    # The network is loaded only when a file has to be embedded.
    from engine.model.embed import Embedder

    return Embedder(checkpoint)


def content_hash(path: str, *, block: int = 1 << 20) -> str:
    """BLAKE2b-128 of a file's bytes, read in blocks (hex): the identity of its content.

    Two files with the same hash are exact duplicates; a moved file keeps its hash, so its
    star and collections follow it (docs/DESIGN.md section 5).
    """
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        while chunk := f.read(block):
            h.update(chunk)
    return h.hexdigest()


def _embed_one(embedder: EmbedderLike, path: str, size: int, mtime_ns: int,
               moved: dict[str, Any] | None = None) -> dict[str, Any]:
    """Catalogue fields for one file; a failure becomes status 'error' with its reason.

    A file whose content hash is in ``moved`` takes those vectors without being decoded.
    """
    row: dict[str, Any] = {"size": size, "mtime_ns": mtime_ns, "duration": None,
                           "content_hash": None}
    try:
        # The bytes, not the decoded audio: no second decode, and the page cache serves
        # the decoder that follows.
        row["content_hash"] = content_hash(path)
        if moved and row["content_hash"] in moved:
            duration, vecs = moved[row["content_hash"]]
            return {**row, "duration": duration, "status": "ok", "error": None,
                    "vectors": vecs}
        row["duration"] = float(audio_info(path).duration)
        vecs = embedder.embed_file(path)
        bad = [k for k, v in vecs.items() if not np.all(np.isfinite(v))]
        if bad:
            raise DecodeError(path, f"embedding is not finite in {', '.join(bad)}")
    except DecodeError as e:
        return {**row, "status": "error", "error": e.reason}
    except EmbedderError:
        raise  # not this file's fault: the scan stops, the file stays to be embedded
    except (LoevError, OSError, ValueError, RuntimeError, MemoryError) as e:
        # Never stop a scan on one file: record why and go on (beets' habit).
        return {**row, "status": "error", "error": f"{type(e).__name__}: {e}"}
    return {**row, "status": "ok", "error": None, "vectors": vecs}
