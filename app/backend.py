"""The app's one door into the engine: library, scans, queries, curves, match, render.

No Qt here (napari's habit: models and logic hold no Qt), so it is tested without a
window. Slow methods (scan, query, curve, match, render) are called from worker threads;
the network itself runs in a child process (app.embed_service), so torch is never
imported into the window's process.
"""
from __future__ import annotations

import json
import os
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from engine.errors import LibraryError

FOLDERS_FILE = "folders.json"
BY_SUBSPACE = {"key": "pitch", "tempo": "tempo", "vibe": "invariant"}


@dataclass(frozen=True)
class TrackRow:
    """One line of the library table."""

    path: str
    name: str
    folder: str
    duration: float | None
    status: str
    reason: str | None


@dataclass(frozen=True)
class Neighbour:
    path: str
    name: str
    distance: float


@dataclass(frozen=True)
class QueryResult:
    """A query and its neighbours, nearest first (the query itself excluded)."""

    query: str
    by: str
    neighbours: list[Neighbour]


def warm_imports() -> None:
    """Import, on the calling (GUI) thread at start-up, the torch-free modules that the
    worker threads need.

    An import holds the GIL while it loads a C extension (libsndfile, hnswlib, soxr): done
    first in a worker during a scan, it froze the event loop for 0.7 s on a busy machine.
    """
    import concurrent.futures.thread  # noqa: F401
    import multiprocessing.connection  # noqa: F401
    import multiprocessing.popen_spawn_posix  # noqa: F401
    import multiprocessing.spawn  # noqa: F401

    import hnswlib  # noqa: F401
    import soundfile  # noqa: F401
    import soxr  # noqa: F401

    import app.embed_service  # noqa: F401
    import engine.audio.decode  # noqa: F401
    import engine.model.curves  # noqa: F401
    import engine.library.query  # noqa: F401
    import engine.library.scan  # noqa: F401
    import engine.library.vectors  # noqa: F401


class Backend:
    """Library, model and the operations the window offers, without Qt.

    Parameters
    ----------
    library_dir : path, optional
        The library directory; platformdirs' user data dir for loev-explorer when None.
    checkpoint : path, optional
        The model; the shipped default when None.
    embedder : object, optional
        A ready embedder (tests pass a fake); otherwise an
        :class:`app.embed_service.RemoteEmbedder` (the network in a child process).
    """

    def __init__(self, library_dir: str | os.PathLike[str] | None = None,
                 checkpoint: str | os.PathLike[str] | None = None, *,
                 embedder: Any = None) -> None:
        from engine.library.catalogue import default_library_dir

        self.library_dir = Path(library_dir) if library_dir else default_library_dir()
        self.checkpoint = Path(checkpoint) if checkpoint else None
        self._embedder = embedder
        self._embedder_lock = threading.Lock()
        self._searcher: Any = None
        self._searcher_lock = threading.RLock()
        self._curves: dict[tuple[str, int, str, str], dict[str, Any]] = {}
        self._renders: dict[tuple[str, float, float], Path] = {}
        self._tmp = Path(tempfile.mkdtemp(prefix="loev-render-"))

    # -- model ----------------------------------------------------------------------------

    @property
    def embedder(self) -> Any:
        """The embedder (identity read from the checkpoint header; network loaded lazily).

        Raises CheckpointError when the checkpoint is missing or unreadable.
        """
        with self._embedder_lock:
            if self._embedder is None:
                from app.embed_service import RemoteEmbedder

                self._embedder = RemoteEmbedder(self.checkpoint)
            return self._embedder

    def close(self) -> None:
        """Stop the embedding process, if one was started."""
        self.library_changed()
        close = getattr(self._embedder, "close", None)
        if close is not None:
            close()

    def has_embedder(self) -> bool:
        """True when an embedder was given or already made (no checkpoint to find)."""
        return self._embedder is not None

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

    def remove_folder(self, folder: str, *, cancel: Any = None) -> int:
        """Forget ``folder`` and its tracks (worker thread: rewrites the indexes).

        Returns the number of tracks removed.
        """
        from engine.library import vectors
        from engine.library.catalogue import Library

        self._save_folders([f for f in self.folders() if f != folder])
        if not (self.library_dir / "catalogue.sqlite").exists():
            return 0
        root = os.path.realpath(folder).rstrip(os.sep) + os.sep
        with Library(self.library_dir) as lib:
            lib.acquire_write_lock(timeout=30.0)
            ids = [t.id for t in lib.tracks() if t.path.startswith(root)]
            lib.mark_deleted(ids)
            if lib.model_id is not None:
                vectors.export(lib)
        self.library_changed()
        return len(ids)

    # -- scanning -------------------------------------------------------------------------

    def scan(self, folders: list[str] | None = None, *,
             progress: Callable[[int, int, str | None], None] | None = None,
             cancel: Any = None) -> Any:
        """Scan ``folders`` (all remembered folders when None) incrementally.

        Worker thread only. Returns ``engine.library.scan.ScanReport``.
        """
        from engine.library.scan import scan

        folders = self.folders() if folders is None else folders
        missing = [f for f in folders if not os.path.exists(f)]
        present = [f for f in folders if os.path.exists(f)]
        if not present:
            if missing:
                raise LibraryError(f"{missing[0]}: folder not found (unplugged drive?)")
            raise LibraryError("no folder to scan: add a folder first")
        try:
            return scan(present, library=self.library_dir, embedder=self.embedder,
                        progress=progress, cancel=cancel, lock_timeout=30.0)
        finally:
            self.library_changed()

    # -- reading the catalogue ----------------------------------------------------------

    def tracks(self) -> list[TrackRow]:
        """Every known file with its status and, for a problem file, its reason."""
        from engine.library.catalogue import Library

        if not (self.library_dir / "catalogue.sqlite").exists():
            return []
        with Library(self.library_dir) as lib:
            rows = [_track_row(t.path, t.duration, t.status, t.error) for t in lib.tracks()]
            rows += [_track_row(p, None, "error", f"{kind}: {reason}")
                     for p, kind, reason in lib.problems()]
        return rows

    # -- queries --------------------------------------------------------------------------

    def searcher(self) -> Any:
        """The open ``engine.library.query.Searcher``, reopened after the library changed."""
        from engine.library.query import Searcher

        with self._searcher_lock:
            if self._searcher is None:
                self._searcher = Searcher(self.library_dir, embedder=self.embedder)
            return self._searcher

    def library_changed(self) -> None:
        """Forget the open searcher (a scan or a removal rewrote the indexes)."""
        with self._searcher_lock:
            if self._searcher is not None:
                self._searcher.library.close()
            self._searcher = None

    def query(self, path: str, *, by: str | dict[str, float], k: int = 20) -> QueryResult:
        """Nearest neighbours of ``path`` by key, tempo, vibe, or a blend of the three.

        Worker thread: an indexed, unchanged track is looked up without torch, anything
        else is embedded.

        Parameters
        ----------
        by : "key" | "tempo" | "vibe" or {"key": w, "tempo": w, "vibe": w}
            A dict is Sononym's aspect dial: weights over the three aspects.
        """
        searcher = self.searcher()
        with self._searcher_lock:
            if isinstance(by, dict):
                found = searcher.query_blend(path, _blend_weights(by), k=k)
                label = "blend " + " ".join(f"{a}{w:.0%}" for a, w in _blend_weights(by).items())
            else:
                if by not in BY_SUBSPACE:
                    raise ValueError(f"by must be key, tempo or vibe, not {by!r}")
                found = searcher.query(path, by=by, k=k)
                label = by
        neighbours = [Neighbour(n.path, Path(n.path).name, float(n.distance))
                      for n in found.neighbours]
        return QueryResult(found.query, label, neighbours)

    # -- invariance curves ----------------------------------------------------------------

    def curve(self, path: str, transform: str) -> dict[str, Any]:
        """The invariance curve of ``path`` (cached by path, mtime, transform and model).

        Worker thread only: it embeds about two dozen transformed copies of the track.
        """
        key = (path, _mtime_ns(path), transform, str(self.embedder.model_id))
        if key not in self._curves:
            service = getattr(self.embedder, "service", None)
            if service is not None:  # torch stays in the embedding process
                self._curves[key] = service.call("curve", path, transform)
            else:
                self._curves[key] = curve_of(path, transform, self.embedder)
        return self._curves[key]

    def cached_curve(self, path: str, transform: str) -> dict[str, Any] | None:
        if self._embedder is None:
            return None
        key = (path, _mtime_ns(path), transform, str(self._embedder.model_id))
        return self._curves.get(key)

    # -- match and render ---------------------------------------------------------------

    def match(self, query_path: str, result_path: str) -> dict[str, float]:
        """Pitch shift and stretch that bring ``result_path`` closest to ``query_path``."""
        service = getattr(self.embedder, "service", None)
        if service is not None:
            return service.call("match", query_path, result_path)
        return match_of(query_path, result_path, self.embedder)

    def render(self, path: str, *, semitones: float = 0.0, tempo: float = 1.0,
               out: str | os.PathLike[str] | None = None) -> Path:
        """``path`` with a transform applied, as a WAV file (temp file unless ``out``).

        With no transform the original file is returned as it is (dragged unchanged).
        """
        if abs(semitones) < 1e-3 and abs(tempo - 1.0) < 1e-4 and out is None:
            return Path(path)
        key = (path, round(semitones, 2), round(tempo, 3))
        if out is None and key in self._renders and self._renders[key].exists():
            return self._renders[key]
        import soundfile as sf

        from engine.audio.audition import render

        from engine.audio.decode import audio_info

        # Keep the file's own rate (within what a DAW takes): a producer drags the clip
        # into a session, not into the model.
        sr = int(min(max(audio_info(path).sample_rate, 22050), 96000))
        y = render(path, semitones=semitones, tempo=tempo, sr=sr)
        temporary = out is None
        if out is None:
            stem = Path(path).stem
            tag = f"{semitones:+.1f}st" if abs(semitones) >= 1e-3 else ""
            tag += f"x{tempo:.2f}" if abs(tempo - 1) >= 1e-4 else ""
            out = self._tmp / f"{stem} {tag}.wav"
        # Float WAV: a pitch shift can push peaks past full scale; 16-bit would clip them.
        sf.write(str(out), np.asarray(y, dtype=np.float32), sr, subtype="FLOAT")
        if temporary:
            self._renders[key] = Path(out)
        return Path(out)


def _blend_weights(weights: dict[str, float]) -> dict[str, float]:
    """Aspect dial values (key/tempo/vibe, any scale) to weights summing to 1."""
    w = {k: max(0.0, float(v)) for k, v in weights.items() if k in BY_SUBSPACE and v > 0}
    total = sum(w.values())
    if total <= 0:
        raise ValueError("turn at least one aspect dial up")
    return {k: v / total for k, v in w.items()}


def curve_of(path: str, transform: str, embedder: Any) -> dict[str, Any]:
    """engine.model.curves.invariance_curve of a file (imports torch: worker or child only)."""
    from engine.model.curves import invariance_curve

    return invariance_curve(path, transform=transform, embedder=embedder)


def match_of(query_path: str, result_path: str, embedder: Any) -> dict[str, float]:
    """engine.match.match_tracks of two files, as a plain dict (crosses a process pipe)."""
    from engine.match import match_tracks

    m = match_tracks(_middle(query_path), _middle(result_path), embedder)
    return {"shift": float(m.shift), "stretch": float(m.stretch),
            "key_distance_before": float(m.key_distance_before),
            "key_distance_after": float(m.key_distance_after),
            "tempo_distance_before": float(m.tempo_distance_before),
            "tempo_distance_after": float(m.tempo_distance_after),
            "mode": str(m.mode), "pitched": bool(m.pitched)}


def _middle(path: str, seconds: float = 30.0) -> np.ndarray:
    """The middle ``seconds`` of a track at 16 kHz (match looks at no more than that, and a
    long track need not be decoded whole)."""
    from engine.audio.decode import audio_info, load_audio

    duration = audio_info(path).duration
    offset = max(0.0, (duration - seconds) / 2)
    return load_audio(path, offset=offset, duration=min(seconds, duration))


def _track_row(path: str, duration: float | None, status: str, reason: str | None) -> TrackRow:
    p = Path(path)
    return TrackRow(path, p.name, str(p.parent), duration, status, reason)


def _mtime_ns(path: str) -> int:
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return 0
