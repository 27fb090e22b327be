"""The window's side of the engine's one door (:class:`engine.session.Session`).

No Qt here (napari's habit: models and logic hold no Qt), so it is tested without a
window. It adds what only the window needs: table rows, a label for a blended query, and
an embedder whose network runs in a child process (app.embed_service), so that torch is
never imported into the window's process. Slow methods are called from worker threads.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.embed_service import RemoteEmbedder
from engine import keys
from engine.errors import LoevError
from engine.model.heads import Estimate
from engine.session import Session, blend_weights

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrackRow:
    """One line of the library table."""

    path: str
    name: str
    folder: str
    duration: float | None
    status: str
    reason: str | None
    estimate: Estimate | None = None  # key, BPM and type; None until the heads ran


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


class Backend:
    """The window's view of an :class:`engine.session.Session`, without Qt.

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
        self.session = Session(library_dir, checkpoint, embedder=embedder,
                               make_embedder=RemoteEmbedder)

    @property
    def library_dir(self) -> Path:
        return self.session.library_dir

    @property
    def checkpoint(self) -> Path | None:
        return self.session.checkpoint

    @property
    def embedder(self) -> Any:
        """The embedder; raises CheckpointError when the checkpoint cannot be read."""
        return self.session.embedder

    def has_embedder(self) -> bool:
        return self.session.has_embedder()

    def close(self) -> None:
        """Stop the embedding process, if one was started."""
        self.session.close()

    def folders(self) -> list[str]:
        return self.session.folders()

    def add_folder(self, folder: str | os.PathLike[str]) -> str:
        return self.session.add_folder(folder)

    def remove_folder(self, folder: str, *, cancel: Any = None) -> int:
        """Forget ``folder`` and its tracks (worker thread); returns the tracks removed."""
        return self.session.forget_folder(folder)

    def scan(self, folders: list[str] | None = None, *,
             progress: Callable[[int, int, str | None], None] | None = None,
             cancel: Any = None) -> Any:
        """Scan ``folders`` (the remembered ones when None); worker thread only."""
        return self.session.scan(folders, progress=progress, cancel=cancel)

    def tracks(self) -> list[TrackRow]:
        """Every known file with its status, its estimate and, for a problem file, its reason."""
        estimates = self.estimates()
        return [_track_row(*row, estimates.get(row[0])) for row in self.session.tracks()]

    def estimates(self) -> dict[str, Estimate]:
        """Key, BPM and sound type of every analysed track, by path."""
        return self.session.estimates()

    def analyze(self, paths: list[str]) -> list[dict[str, Any]]:
        """Key, BPM and type of each file, as ``loev analyze --json`` rows (worker thread:
        a file outside the library is embedded)."""
        return self.session.analyze(paths)

    def estimates_of(self, paths: list[str]) -> dict[str, Estimate]:
        """Estimates of ``paths`` that have none stored (a file dropped from outside the
        library), by the path as given; worker thread.

        What cannot be analysed is left out, so that its row simply shows no offsets: a
        file that cannot be read, a model without heads. The reason goes to the log only:
        the query it serves has already answered.
        """
        if not paths:
            return {}
        try:
            rows = self.analyze(list(paths))
        except (LoevError, OSError, ValueError, RuntimeError, MemoryError) as e:
            log.info("no estimates for %d file(s): %s: %s", len(paths), type(e).__name__, e)
            return {}
        found: dict[str, Estimate] = {}
        # One row per path, in order (Session.analyze); a row's own path is the resolved
        # one, which need not be the string the results model knows the file by.
        for path, row in zip(paths, rows):
            if "error" in row:
                log.info("no estimate for %s: %s", path, row["error"])
                continue
            try:
                found[path] = estimate_from_row(row)
            except (KeyError, TypeError, ValueError) as e:
                log.info("no estimate for %s: bad analyze row (%s)", path, e)
        return found

    def compatible(self, path: str, *, k: int = 20) -> QueryResult:
        """Tracks in keys compatible with ``path``'s (its Camelot neighbours and relative),
        ranked by pitch-space similarity (worker thread)."""
        found = self.session.compatible(path, k=k)
        neighbours = [Neighbour(n.path, Path(n.path).name, float(n.distance))
                      for n in found.neighbours]
        return QueryResult(found.query, "compatible keys", neighbours)

    def query(self, path: str, *, by: str | dict[str, float], k: int = 20) -> QueryResult:
        """Nearest neighbours of ``path`` by key, tempo, vibe, or a blend (worker thread)."""
        found = self.session.query(path, by=by, k=k)
        if isinstance(by, dict):
            label = "blend " + " ".join(f"{a}{w:.0%}" for a, w in blend_weights(by).items())
        else:
            label = by
        neighbours = [Neighbour(n.path, Path(n.path).name, float(n.distance))
                      for n in found.neighbours]
        return QueryResult(found.query, label, neighbours)

    def curve(self, path: str, transform: str) -> dict[str, Any]:
        """The invariance curve of ``path`` (cached; worker thread)."""
        return self.session.curve(path, transform)

    def cached_curve(self, path: str, transform: str) -> dict[str, Any] | None:
        return self.session.cached_curve(path, transform)

    def match(self, query_path: str, result_path: str) -> dict[str, Any]:
        """Pitch shift and stretch that bring ``result_path`` closest to ``query_path``."""
        return self.session.match(query_path, result_path)

    def render(self, path: str, *, semitones: float = 0.0, tempo: float = 1.0,
               out: str | os.PathLike[str] | None = None) -> Path:
        """``path`` with a transform applied, as a WAV file (the original when none)."""
        return self.session.render(path, semitones=semitones, tempo=tempo, out=out)


def estimate_from_row(row: dict[str, Any]) -> Estimate:
    """The :class:`Estimate` an analyze row (``Estimate.to_dict`` fields) was made from."""
    key = keys.parse_key(row["key"]) if row["key"] is not None else None
    if row["key"] is not None and key is None:  # not "no key": a name it cannot read
        raise ValueError(f"not a key: {row['key']!r}")
    bpm = float(row["bpm"]) if row["bpm"] is not None else None
    return Estimate(key=key, key_confidence=float(row["key_confidence"]), bpm=bpm,
                    bpm_confidence=float(row["bpm_confidence"]), type=str(row["type"]),
                    type_confidence=float(row["type_confidence"]))


def _track_row(path: str, duration: float | None, status: str, reason: str | None,
               estimate: Estimate | None = None) -> TrackRow:
    p = Path(path)
    return TrackRow(path, p.name, str(p.parent), duration, status, reason, estimate)
