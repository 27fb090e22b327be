"""One door into the engine: a library and a model, and the questions asked of them.

The ``loev`` command line and the desktop app both call a :class:`Session`, so that the
same question gets the same answer from both (a match, a curve, a query). The session
imports no torch: the model package is reached only when audio has to be embedded or
transformed, and an embedder whose network lives in another process (the app's) answers
the curve and the match there (see :meth:`Session.curve`).
"""
from __future__ import annotations

import json
import os
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from engine import keys
from engine.audio.render import render_file
from engine.config import check_semitones, check_tempo
from engine.errors import DecodeError, EmbedderError, LibraryError, LoevError
from engine.library import estimates as library_estimates
from engine.library import vectors
from engine.library.catalogue import Library, default_library_dir
from engine.library.duplicates import duplicates as find_duplicates
from engine.library.layout import map_layout
from engine.library.query import BY_SUBSPACE, Neighbour, QueryResult, Searcher, subspace_for
from engine.library.scan import scan as scan_folders
from engine.model.checkpoint import read_checkpoint_info
from engine.model.heads import Estimate
from engine.resources import default_checkpoint

FOLDERS_FILE = "folders.json"
CATALOGUE_FILE = "catalogue.sqlite"


class Session:
    """A library directory and a model checkpoint, with the operations offered on them.

    Parameters
    ----------
    library_dir : path, optional
        The library directory; platformdirs' user data dir for loev-explorer when None.
    checkpoint : path, optional
        The model. When None: the shipped default for scans, curves and matches; for
        queries, the checkpoint the library was built with.
    embedder : object, optional
        A ready embedder (tests pass a fake): ``model_id``, ``subspaces``, ``dims``,
        ``config``, ``embed_file``, ``embed_audio``, ``embed_audio_batch``. An embedder
        that also has ``session_call(op, *args)`` runs ``curve`` and ``match`` itself
        (where its network lives) and returns their plain-data results.
    make_embedder : callable, optional
        ``make_embedder(checkpoint) -> embedder``, called once, on first use. Without it
        (and without ``embedder``) the library code builds an
        ``engine.model.embed.Embedder`` only when a file has to be embedded, so that a
        query on indexed tracks never imports torch.

    Notes
    -----
    Methods that embed, decode or rewrite the indexes are slow: the app calls them from
    worker threads. The embedder is made once, under a lock.
    """

    def __init__(self, library_dir: str | os.PathLike[str] | None = None,
                 checkpoint: str | os.PathLike[str] | None = None, *,
                 embedder: Any = None,
                 make_embedder: Callable[[Path | None], Any] | None = None) -> None:
        self._library_dir = Path(library_dir) if library_dir else None
        self.checkpoint = Path(checkpoint) if checkpoint else None
        self._embedder = embedder
        self._make_embedder = make_embedder
        self._embedder_lock = threading.Lock()
        self._searcher: Any = None
        self._searcher_lock = threading.RLock()
        self._curves: dict[tuple[str, int, str, str], dict[str, Any]] = {}
        self._heads: dict[tuple[str | None, str | None, int], Any] = {}
        self._heads_lock = threading.Lock()
        self._renders: dict[tuple[str, float, float], Path] = {}
        self._render_dir: Path | None = None

    @property
    def library_dir(self) -> Path:
        if self._library_dir is None:
            self._library_dir = default_library_dir()
        return self._library_dir

    # -- model ----------------------------------------------------------------------------

    @property
    def embedder(self) -> Any:
        """The embedder, made on first use.

        Raises CheckpointError when the checkpoint is missing or unreadable (read from
        its header before the network is loaded).
        """
        with self._embedder_lock:
            if self._embedder is None:
                make = self._make_embedder or _local_embedder
                self._embedder = make(self.checkpoint)
            return self._embedder

    def has_embedder(self) -> bool:
        """True when an embedder was given or already made."""
        return self._embedder is not None

    def _library_embedder(self) -> Any:
        """The embedder to hand to scan and query: None lets them build one lazily."""
        if self._embedder is None and self._make_embedder is None:
            return None
        return self.embedder

    def close(self) -> None:
        """Close the open searcher and the embedder (an embedding process, if any)."""
        self.library_changed()
        close = getattr(self._embedder, "close", None)
        if close is not None:
            close()

    # -- folders --------------------------------------------------------------------------

    def folders(self) -> list[str]:
        """The folders the user added, in the order they were added."""
        try:
            data = json.loads((self.library_dir / FOLDERS_FILE).read_text("utf-8"))
        except (OSError, ValueError):
            return []
        return [str(f) for f in data.get("folders", [])]

    def _save_folders(self, folders: list[str]) -> None:
        self.library_dir.mkdir(parents=True, exist_ok=True)
        path = self.library_dir / FOLDERS_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"folders": folders}, indent=1), "utf-8")
        os.replace(tmp, path)  # atomic: a crash never leaves half a list

    def add_folder(self, folder: str | os.PathLike[str]) -> str:
        """Remember ``folder`` (absolute); raises LibraryError if it is not a folder."""
        path = os.path.abspath(os.path.expanduser(os.fspath(folder)))
        if not os.path.isdir(path):
            raise LibraryError(f"{path}: not a folder")
        folders = self.folders()
        if path not in folders:
            self._save_folders(folders + [path])
        return path

    def forget_folder(self, folder: str | os.PathLike[str]) -> int:
        """Forget ``folder``: its tracks and its problem files leave the library.

        Only paths inside the folder go (``/a/b`` never takes ``/a/bc`` with it). The
        indexes are rewritten, so this is worker-thread work.

        Returns
        -------
        int
            The number of tracks removed.
        """
        folder = os.fspath(folder)
        self._save_folders([f for f in self.folders() if f != folder])
        if not (self.library_dir / CATALOGUE_FILE).exists():
            return 0
        root = os.path.realpath(folder).rstrip(os.sep)
        with Library(self.library_dir) as lib:
            lib.acquire_write_lock(timeout=30.0)
            ids = [t.id for t in lib.tracks() if _inside(t.path, root)]
            lib.mark_deleted(ids)
            lib.set_problems([], under=[root])
            if lib.model_id is not None:
                vectors.export(lib)
        self.library_changed()
        return len(ids)

    # -- scanning -------------------------------------------------------------------------

    def scan(self, folders: list[str] | None = None, *,
             progress: Callable[[int, int, str | None], None] | None = None,
             cancel: Any = None, lock_timeout: float = 30.0) -> Any:
        """Scan ``folders`` into the library, incrementally and resumably.

        Parameters
        ----------
        folders : list of path, optional
            Folders or audio files; each must exist (LibraryError otherwise). When None,
            the remembered folders, skipping those that are gone (an unplugged drive)
            while another one is there.

        Returns
        -------
        engine.library.scan.ScanReport
        """
        if folders is None:
            remembered = self.folders()
            folders = [f for f in remembered if os.path.exists(f)]
            if not folders:
                if remembered:
                    raise LibraryError(f"{remembered[0]}: folder not found (unplugged drive?)")
                raise LibraryError("no folder to scan: add a folder first")
        try:
            return scan_folders(list(folders), library=self.library_dir,
                        embedder=self._library_embedder(), checkpoint=self.checkpoint,
                        progress=progress, cancel=cancel, lock_timeout=lock_timeout)
        finally:
            self.library_changed()

    # -- reading the library --------------------------------------------------------------

    def tracks(self) -> list[tuple[str, float | None, str, str | None]]:
        """``(path, duration, status, reason)`` of every known file and problem path."""
        if not (self.library_dir / CATALOGUE_FILE).exists():
            return []
        with Library(self.library_dir, readonly=True) as lib:
            rows = [(t.path, t.duration, t.status, t.error) for t in lib.tracks()]
            rows += [(p, None, "error", f"{kind}: {reason}") for p, kind, reason in lib.problems()]
        return rows

    def info(self) -> dict[str, Any]:
        """Tracks, subspaces, model, index state and problem files (``loev info --json``)."""
        with Library(self.library_dir, readonly=True) as lib:  # reading never writes
            counts = lib.counts()
            manifest = vectors.read_manifest(lib.root) or {}
            config = lib.get_meta("model_config") or {}
            seq = int(lib.get_meta("vec_seq", 0))
            problems = [{"path": p, "reason": r} for p, r in lib.errors()]
            problems += [{"path": p, "reason": r} for p, _kind, r in lib.problems()]
            return {
                "library": str(lib.root),
                "tracks": counts["ok"],
                "errors": counts["error"],
                "pending": counts["pending"],
                "model": {"id": lib.model_id, "checkpoint": lib.get_meta("checkpoint"),
                          "method": config.get("method"),
                          "profile": (config.get("profile") or {}).get("name")},
                "subspaces": lib.dims,
                "index": {"generation": manifest.get("generation"),
                          "up_to_date": bool(manifest) and manifest.get("vec_seq") == seq
                          and manifest.get("model_id") == lib.model_id},
                "estimates": lib.estimate_counts(),
                "problems": problems,
            }

    # -- queries --------------------------------------------------------------------------

    def searcher(self) -> Any:
        """The open ``engine.library.query.Searcher``, reopened after the library changed."""
        with self._searcher_lock:
            if self._searcher is None:
                self._searcher = Searcher(self.library_dir, embedder=self._library_embedder(),
                                          checkpoint=self.checkpoint)
            return self._searcher

    def library_changed(self) -> None:
        """Forget the open searcher (a scan or a removal rewrote the indexes)."""
        with self._searcher_lock:
            if self._searcher is not None:
                self._searcher.library.close()
            self._searcher = None

    def query(self, path: str | os.PathLike[str], *, by: str | dict[str, float] = "vibe",
              k: int = 10, shift: float = 0.0, stretch: float = 1.0) -> Any:
        """Nearest library tracks to ``path`` by key, tempo, vibe, or a blend of them.

        An indexed, unchanged track is looked up without torch; anything else is
        embedded with the library's model.

        Parameters
        ----------
        by : "key" | "tempo" | "vibe" or {"key": w, "tempo": w, "vibe": w}
            A dict weighs the three aspects (any non-negative scale).
        shift, stretch : float
            Transform the query audio first (semitones; ratio, > 1 faster); not with a
            blend.

        Returns
        -------
        engine.library.query.QueryResult
            Neighbours nearest first, the query itself excluded.
        """
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        shift, stretch = check_semitones(shift), check_tempo(stretch)
        searcher = self.searcher()
        with self._searcher_lock:
            if isinstance(by, dict):
                if shift != 0.0 or stretch != 1.0:
                    raise ValueError("a blended query takes no shift or stretch")
                return searcher.query_blend(path, blend_weights(by), k=k)
            return searcher.query(path, by=by, k=k, shift=shift, stretch=stretch)

    # -- key, tempo and type estimates ----------------------------------------------------

    def _heads_checkpoint(self, lib: Library) -> str | None:
        """The checkpoint whose heads read ``lib``'s vectors: the one it was built with,
        else (moved or reinstalled) the session's or the shipped one if it is the same
        model."""
        stored = lib.get_meta("checkpoint")
        if stored and os.path.isfile(stored):
            return str(stored)
        for candidate in (self.checkpoint, default_checkpoint()):
            if candidate is None or not os.path.isfile(candidate):
                continue
            try:
                if read_checkpoint_info(candidate).model_id == lib.model_id:
                    return str(candidate)
            except LoevError:
                continue
        return None

    def _library_heads(self, lib: Library) -> Any:
        """The heads for ``lib``'s model (loaded once per session), or None."""
        checkpoint, model_id = self._heads_checkpoint(lib), lib.model_id
        key = (checkpoint, model_id, _mtime_ns(checkpoint) if checkpoint else 0)
        with self._heads_lock:
            if key not in self._heads:
                self._heads[key] = library_estimates.heads_for(checkpoint, model_id)
            return self._heads[key]

    def _own_heads(self, model_id: str) -> Any:
        """The heads of the session's checkpoint (the shipped one when None), for files
        analysed without a library."""
        checkpoint = str(self.checkpoint or default_checkpoint())
        key = (checkpoint, model_id, _mtime_ns(checkpoint))
        with self._heads_lock:
            if key not in self._heads:
                self._heads[key] = library_estimates.heads_for(checkpoint, model_id)
            return self._heads[key]

    def _has_library(self) -> bool:
        return (self.library_dir / CATALOGUE_FILE).exists()

    def _ensure_estimates(self) -> tuple[Any, dict[int, Estimate]]:
        """Estimate, and store, the ok tracks whose estimate is missing or from other heads.

        Returns the heads (None: the model has none) and ``{label: Estimate}`` of the
        tracks that could not be stored (the library cannot be written now: read-only
        media, a scan running), computed for this answer only.
        """
        with Library(self.library_dir, readonly=True) as lib:
            heads = self._library_heads(lib)
            if heads is None or not lib.unestimated(heads.heads_id):
                return heads, {}
        try:
            with Library(self.library_dir) as lib:
                lib.acquire_write_lock(timeout=0.0)
                library_estimates.backfill(lib, heads)
            return heads, {}
        except (LibraryError, OSError):
            with Library(self.library_dir, readonly=True) as lib:
                return heads, library_estimates.compute(lib, heads,
                                                        lib.unestimated(heads.heads_id))

    def estimates(self) -> dict[str, Estimate]:
        """``{path: Estimate}`` of every ok track of the library that has one.

        Tracks with no estimate, or one made by other heads, are estimated first from
        their stored vectors (nothing decoded) and the estimates stored; when the library
        cannot be written now (read-only media, a scan running) they are computed for
        this answer only. A model without heads gives the estimates already stored.
        """
        if not self._has_library():
            return {}
        heads, unstored = self._ensure_estimates()
        with Library(self.library_dir, readonly=True) as lib:
            stored = lib.estimates()
            rows = lib.paths_by_id(list(unstored))
        if heads is None:
            return {p: e for p, (e, _) in stored.items()}
        out = {p: e for p, (e, h) in stored.items() if h == heads.heads_id}
        out.update({rows[tid].path: e for tid, e in unstored.items() if tid in rows})
        return out

    def _analyser(self) -> tuple[Any, Any]:
        """``(searcher or None, heads)`` for analysing files; raises LibraryError when the
        model has no heads."""
        searcher = None
        if self._has_library():
            with Library(self.library_dir, readonly=True) as lib:
                usable = lib.model_id is not None and lib.counts()["ok"] > 0
            if usable:
                searcher = self.searcher()
        if searcher is not None:
            heads = self._library_heads(searcher.library)
            where = f"the model of library {searcher.library.root}"
        else:
            # The model's id from the embedder if there is one, else from the header (a
            # checkpoint without heads is refused before any network loads).
            model_id = (self._embedder.model_id if self._embedder is not None else
                        read_checkpoint_info(self.checkpoint or default_checkpoint()).model_id)
            heads = self._own_heads(str(model_id))
            where = f"checkpoint {self.checkpoint or default_checkpoint()}"
        if heads is None:
            raise LibraryError(f"{where} has no key/BPM/type heads; train them with "
                               "`loev-train heads` or use the shipped model")
        return searcher, heads

    def _estimate_file(self, path: str | os.PathLike[str], searcher: Any, heads: Any
                       ) -> tuple[str, int | None, dict[str, np.ndarray], Estimate]:
        """Resolved path, library label (or None), vectors and estimate of one file.

        A library track unchanged since its scan answers from the catalogue; anything
        else is embedded with the library's model (or the session's, with no library).
        """
        resolved = os.path.realpath(os.path.expanduser(os.fspath(path)))
        if not os.path.isfile(resolved):
            raise DecodeError(path, "no such file" if not os.path.exists(resolved)
                              else "not a file")
        if searcher is None:
            vecs = self.embedder.embed_file(resolved)
            if not all(np.all(np.isfinite(v)) for v in vecs.values()):
                raise DecodeError(path, "the audio holds NaN or infinite samples")
            label = None
        else:
            with self._searcher_lock:
                resolved, label, vecs = searcher.vectors_of(resolved)
                track = searcher.library.track_by_path(resolved)
            st = os.stat(resolved)
            if (track is not None and track.status == "ok" and track.estimate is not None
                    and track.heads_id == heads.heads_id
                    and (track.size, track.mtime_ns) == (st.st_size, st.st_mtime_ns)):
                return resolved, label, vecs, track.estimate
        one = {name: np.asarray(v, dtype=np.float32)[None, :] for name, v in vecs.items()}
        return resolved, label, vecs, library_estimates.predict(heads, one)[0]

    def analyze(self, paths: list[str | os.PathLike[str]]) -> list[dict[str, Any]]:
        """Key, BPM and sound type of each file (``loev analyze``).

        Files inside the library answer from their stored estimate; files outside it, or
        changed since its scan, are embedded with the library's model (the session's
        checkpoint when there is no library) and read by its heads.

        Returns
        -------
        list of dict
            One per path, in order: ``{"path", "key", "camelot", "key_confidence", "bpm",
            "bpm_confidence", "type", "type_confidence"}`` (docs/DESIGN.md section 6), or
            ``{"path", "error"}`` for a file that cannot be read; the others go on.

        Raises
        ------
        LibraryError
            The model has no heads, or the library's model does not match the
            checkpoint given (nothing can be analysed).
        """
        searcher, heads = self._analyser()
        rows: list[dict[str, Any]] = []
        for path in paths:
            try:
                resolved, _, _, estimate = self._estimate_file(path, searcher, heads)
            except DecodeError as e:
                rows.append({"path": os.fspath(path), "error": e.reason})
                continue
            except (EmbedderError, LibraryError):
                raise  # not this file's fault
            except (LoevError, OSError, ValueError, RuntimeError, MemoryError) as e:
                rows.append({"path": os.fspath(path), "error": f"{type(e).__name__}: {e}"})
                continue
            rows.append({"path": resolved, **estimate.to_dict()})
        return rows

    def estimate_of(self, path: str | os.PathLike[str]) -> Estimate | None:
        """The heads' estimate of one file, as :meth:`analyze` makes it; None when the
        model has no heads or the file cannot be read (a caption, never a failure)."""
        try:
            searcher, heads = self._analyser()
            return self._estimate_file(path, searcher, heads)[3]
        except (LoevError, OSError, ValueError, RuntimeError):
            return None

    def compatible(self, path: str | os.PathLike[str], k: int = 10) -> QueryResult:
        """Library tracks in a key that mixes with ``path``'s, nearest in pitch first.

        The keys are :func:`engine.keys.compatible_keys` of the query's estimated key
        (itself, a fifth up and down, the relative major or minor); among the tracks
        estimated in one of them, the ranking is the cosine distance in the pitch
        subspace. The query and its exact copies are left out.

        Returns
        -------
        engine.library.query.QueryResult
            Shaped as :meth:`query`'s.

        Raises
        ------
        LibraryError
            The query has no key ("no key": drums, noise), or the model has no heads.
        DecodeError
            The file is missing or cannot be decoded.
        """
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        searcher, heads = self._analyser()
        if searcher is None:
            raise LibraryError(f"library {self.library_dir} has no tracks; run `loev scan "
                               f"FOLDER --library {self.library_dir}` first")
        resolved, label, vecs, estimate = self._estimate_file(path, searcher, heads)
        if estimate.key is None:
            raise LibraryError(f"{path}: no key detected (unpitched or atonal); compatible "
                               "keys need a key")
        wanted = keys.compatible_keys(estimate.key)
        _, unstored = self._ensure_estimates()
        with self._searcher_lock:
            lib = searcher.library
            same = searcher.content_hash_of(resolved, label)
            tracks = lib.tracks_in_keys(wanted, heads.heads_id)
            if unstored:
                extra = [tid for tid, e in unstored.items() if e.key in wanted]
                tracks += [t for t in lib.paths_by_id(extra).values() if t.status == "ok"]
            tracks = [t for t in tracks if t.path != resolved and t.id != label
                      and (same is None or t.content_hash != same)]
            tracks.sort(key=lambda t: t.path)
            pitch = subspace_for("key", searcher.subspaces)
            store = searcher.index.store(pitch)
            rows = []
            for t in tracks:
                vec = (store[t.id] if t.id < len(store) and t.vec_seq <= searcher.index.vec_seq
                       else None)
                if vec is None or not np.any(vec):
                    vec = lib.vector(t.id, pitch)
                if vec is not None:
                    rows.append((t.path, vec))
        if not rows:
            return QueryResult(resolved, [])
        q = np.asarray(vecs[pitch], dtype=np.float32)
        dist = 1.0 - np.stack([v for _, v in rows]).astype(np.float32) @ q
        order = np.argsort(dist, kind="stable")[:k]
        return QueryResult(resolved, [Neighbour(rows[i][0], float(max(dist[i], 0.0)))
                                      for i in order])

    # -- duplicates, the map, favourites and collections ---------------------------------

    def duplicates(self) -> list[Any]:
        """Exact (same content) and near (same sound) duplicate groups of the library.

        Returns
        -------
        list of engine.library.duplicates.DuplicateGroup
            ``kind`` "exact" or "near" and the ``paths``, exact groups first.
        """
        with Library(self.library_dir, readonly=True) as lib:
            return find_duplicates(lib)

    def trash(self, paths: list[str]) -> list[str]:
        """Send files to the desktop's trash (never unlinked) and forget them.

        The caller asks the user first. Returns the paths trashed; a file that cannot be
        trashed raises LibraryError naming it, after those before it went.
        """
        from send2trash import send2trash
        from send2trash.exceptions import TrashPermissionError

        done: list[str] = []
        try:
            for path in paths:
                try:
                    send2trash(path)
                except (OSError, TrashPermissionError) as e:
                    raise LibraryError(f"{path}: cannot move to the trash ({e})") from None
                done.append(path)
        finally:
            if done and (self.library_dir / CATALOGUE_FILE).exists():
                with Library(self.library_dir) as lib:
                    lib.acquire_write_lock(timeout=30.0)
                    gone = [t.id for t in (lib.track_by_path(os.path.realpath(p)) for p in done)
                            if t is not None]
                    lib.mark_deleted(gone)
                    if lib.model_id is not None:
                        vectors.export(lib)
                self.library_changed()
        return done

    def map_layout(self, by: str = "vibe") -> Any:
        """The library's 2-D map for an aspect (key, tempo or vibe), cached on disk.

        Returns
        -------
        engine.library.layout.MapLayout
            ``paths`` and ``positions`` [n, 2] (and the catalogue ``labels``).
        """
        from engine.library.query import subspace_for

        with Library(self.library_dir) as lib:
            return map_layout(lib, subspace_for(by, lib.subspaces))

    def set_favourite(self, path: str, on: bool = True) -> None:
        with Library(self.library_dir) as lib:
            lib.set_favourite(os.path.realpath(path), on)

    def favourites(self) -> list[str]:
        if not (self.library_dir / CATALOGUE_FILE).exists():
            return []
        with Library(self.library_dir, readonly=True) as lib:
            return lib.favourites()

    def collections(self) -> dict[str, list[str]]:
        """``{name: [paths]}`` of every collection."""
        if not (self.library_dir / CATALOGUE_FILE).exists():
            return {}
        with Library(self.library_dir, readonly=True) as lib:
            return {name: lib.collection(name) for name in lib.collections()}

    def add_to_collection(self, name: str, paths: list[str]) -> None:
        with Library(self.library_dir) as lib:
            lib.add_to_collection(name, [os.path.realpath(p) for p in paths])

    def remove_from_collection(self, name: str, paths: list[str]) -> None:
        with Library(self.library_dir) as lib:
            lib.remove_from_collection(name, [os.path.realpath(p) for p in paths])

    # -- invariance curves ----------------------------------------------------------------

    def curve(self, path: str | os.PathLike[str], transform: str) -> dict[str, Any]:
        """The invariance curve of a file (``engine.model.curves.invariance_curve``).

        Cached by path, modification time, transform and model.

        Returns
        -------
        dict
            ``{"transform", "values": [...], "subspaces": {name: [distance per value]}}``
        """
        path = _existing_file(path)
        if transform not in ("pitch", "tempo"):
            raise ValueError(f"transform must be 'pitch' or 'tempo', got {transform!r}")
        embedder = self.embedder
        key = (path, _mtime_ns(path), transform, str(embedder.model_id))
        if key not in self._curves:
            remote = getattr(embedder, "session_call", None)
            if remote is not None:
                self._curves[key] = remote("curve", path, transform)
            else:
                from engine.model.curves import invariance_curve

                self._curves[key] = invariance_curve(path, transform, embedder)
        return self._curves[key]

    def cached_curve(self, path: str, transform: str) -> dict[str, Any] | None:
        """The curve if it was already computed, else None (never embeds)."""
        if self._embedder is None:
            return None
        return self._curves.get((path, _mtime_ns(path), transform, str(self._embedder.model_id)))

    # -- match and render -----------------------------------------------------------------

    def match(self, query_path: str | os.PathLike[str],
              result_path: str | os.PathLike[str]) -> dict[str, Any]:
        """The pitch shift and stretch that bring ``result_path`` closest to ``query_path``.

        Both files are read as bounded middle excerpts (``engine.model.match.read_pair``),
        whoever asks.

        Returns
        -------
        dict
            ``engine.model.match.MatchResult.to_dict()``: ``shift`` (semitones), ``stretch``
            (ratio, > 1 faster), the key and tempo distances before and after, and the
            subspaces used.
        """
        query_path, result_path = _existing_file(query_path), _existing_file(result_path)
        embedder = self.embedder
        remote = getattr(embedder, "session_call", None)
        if remote is not None:
            return dict(remote("match", query_path, result_path))
        from engine.model.match import match_tracks, read_pair

        query_y, result_y = read_pair(query_path, result_path)
        return match_tracks(query_y, result_y, embedder).to_dict()

    def render(self, path: str | os.PathLike[str], *, semitones: float = 0.0,
               tempo: float = 1.0, out: str | os.PathLike[str] | None = None) -> Path:
        """``path`` pitch-shifted and stretched as the audition player sounds it, as a
        24-bit WAV (:func:`engine.audio.render.render_file`).

        Without ``out``, a temporary file (cached per path and transform), and with no
        transform the original file itself (a drag carries it unchanged).
        """
        semitones, tempo = check_semitones(semitones), check_tempo(tempo)
        path = _existing_file(path)
        if abs(semitones) < 1e-3 and abs(tempo - 1.0) < 1e-4 and out is None:
            return Path(path)
        key = (path, round(semitones, 2), round(tempo, 3))
        if out is None and key in self._renders and self._renders[key].exists():
            return self._renders[key]
        temporary = out is None
        if out is None:
            if self._render_dir is None:
                self._render_dir = Path(tempfile.mkdtemp(prefix="loev-render-"))
            stem = Path(path).stem
            tag = f"{semitones:+.1f}st" if abs(semitones) >= 1e-3 else ""
            tag += f"x{tempo:.2f}" if abs(tempo - 1) >= 1e-4 else ""
            out = self._render_dir / f"{stem} {tag}.wav"
        # 24-bit WAV at the file's own rate and channels: a producer drags the clip into
        # a session, not into the model.
        render_file(path, shift=semitones, stretch=tempo, out=out)
        if temporary:
            self._renders[key] = Path(out)
        return Path(out)


def blend_weights(weights: dict[str, float]) -> dict[str, float]:
    """Aspect weights (key/tempo/vibe, any non-negative scale) to weights summing to 1."""
    w = {k: max(0.0, float(v)) for k, v in weights.items() if k in BY_SUBSPACE and v > 0}
    total = sum(w.values())
    if total <= 0:
        raise ValueError("turn at least one aspect dial up")
    return {k: v / total for k, v in w.items()}


def _local_embedder(checkpoint: Path | None) -> Any:
    """An in-process ``engine.model.embed.Embedder``; the header is read first, so that a
    bad checkpoint is one clear CheckpointError before the network package loads."""
    read_checkpoint_info(checkpoint if checkpoint is not None else default_checkpoint())
    from engine.model.embed import Embedder

    return Embedder(checkpoint)


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root + os.sep)


def _existing_file(path: str | os.PathLike[str]) -> str:
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise DecodeError(path, "no such file" if not os.path.exists(path) else "not a file")
    return path


def _mtime_ns(path: str) -> int:
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return 0
