"""Queries: nearest tracks by key, tempo or vibe, and blends of the three.

``--by key`` searches the pitch-variant subspace, ``--by tempo`` the tempo-variant one,
``--by vibe`` the all-invariant one (docs/DESIGN.md section 6); a single-space checkpoint
answers all three from its only space.

A file already in the library (unchanged since its scan) is looked up in the vector
store: numpy and hnswlib only, torch is never imported. Files outside the library, files
changed since the scan, and any query with ``shift``/``stretch`` are embedded on the fly
with the library's own checkpoint (a checkpoint of another model is refused, so vectors of
two models are never compared). The query itself never appears in its results.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from engine.audio.decode import load_audio
from engine.errors import DecodeError, LibraryError
from engine.library.catalogue import Library
from engine.library.scan import content_hash
from engine.library.vectors import VectorIndex
from engine.model.checkpoint import read_checkpoint_info
from engine.resources import default_checkpoint

BY_SUBSPACE = {"key": "pitch", "tempo": "tempo", "vibe": "invariant"}


def subspace_for(by: str, subspaces: tuple[str, ...]) -> str:
    """The subspace that answers ``--by by`` for a model with ``subspaces``."""
    name = BY_SUBSPACE.get(by, by)
    if by not in BY_SUBSPACE and by not in subspaces:
        raise LibraryError(f"unknown aspect {by!r}; expected one of {', '.join(BY_SUBSPACE)}")
    if name in subspaces:
        return name
    if len(subspaces) == 1:
        return subspaces[0]  # single-space model: one space answers every aspect
    raise LibraryError(f"the library's model has no {name} subspace for --by {by} "
                       f"(it has {', '.join(subspaces)})")


@dataclass(frozen=True)
class Neighbour:
    path: str
    distance: float

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "distance": self.distance}


@dataclass
class QueryResult:
    query: str
    neighbours: list[Neighbour] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"query": self.query, "neighbours": [n.to_dict() for n in self.neighbours]}


class Searcher:
    """An open library ready for repeated queries (the app keeps one per library).

    Parameters
    ----------
    library : Library or path
        The library (directory) to search.
    embedder : Embedder, optional
        Used for files that must be embedded; built lazily from ``checkpoint`` or, by
        default, the checkpoint the library was built with.
    checkpoint : path, optional

    Raises
    ------
    LibraryError
        No library, an empty one, or vector files that do not match the catalogue's model.
    """

    def __init__(self, library: Library | str | os.PathLike[str], *, embedder: Any = None,
                 checkpoint: str | os.PathLike[str] | None = None) -> None:
        # Read-only: a query never writes, so a library on read-only media still answers.
        self.library = library if isinstance(library, Library) else Library(library,
                                                                            readonly=True)
        self.model_id = self.library.model_id
        if self.library.counts()["ok"] == 0:
            raise LibraryError(f"library {self.library.root} has no tracks; "
                               f"run `loev scan FOLDER --library {self.library.root}` first")
        self.index = VectorIndex(self.library.root)
        if self.index.model_id != self.model_id:
            raise LibraryError(f"library {self.library.root}: its vector index belongs to another "
                               "model (an interrupted re-scan?); run `loev scan` again")
        catalogue_id = self.library.catalogue_id
        if self.index.catalogue_id is not None and self.index.catalogue_id != catalogue_id:
            raise LibraryError(f"library {self.library.root}: its vector files were written for "
                               "another catalogue (was catalogue.sqlite replaced?); run "
                               "`loev scan` again")
        self.subspaces = self.index.subspaces
        self._embedder = embedder
        self._checkpoint = checkpoint

    # -- query vectors --------------------------------------------------------------------

    @property
    def embedder(self) -> Any:
        if self._embedder is None:
            checkpoint = self._checkpoint or self.library.get_meta("checkpoint")
            if checkpoint is None or not Path(checkpoint).exists():
                checkpoint = default_checkpoint()
            info = read_checkpoint_info(checkpoint)
            self._check_model(info.model_id, checkpoint)
            # The network is loaded only when a file has to be embedded.
            from engine.model.embed import Embedder

            self._embedder = Embedder(checkpoint)
        self._check_model(self._embedder.model_id, getattr(self._embedder, "checkpoint_path", "?"))
        return self._embedder

    def _check_model(self, model_id: str, checkpoint: Any) -> None:
        if model_id != self.model_id:
            raise LibraryError(
                f"checkpoint {checkpoint} is model {model_id[:12]}, but library "
                f"{self.library.root} was built with model {str(self.model_id)[:12]}; "
                "scan the library with this checkpoint first")

    def _indexed(self, path: str) -> tuple[int, bool] | None:
        """(label, unchanged-on-disk) of a path in the catalogue, or None."""
        track = self.library.track_by_path(path)
        if track is None or track.status != "ok":
            return None
        st = os.stat(path)
        return track.id, (st.st_size, st.st_mtime_ns) == (track.size, track.mtime_ns)

    def vectors_of(self, path: str | os.PathLike[str], *, shift: float = 0.0,
                   stretch: float = 1.0) -> tuple[str, int | None, dict[str, np.ndarray]]:
        """Resolved path, library label (or None) and ``{subspace: [D]}`` of a query file.

        Raises
        ------
        DecodeError
            The file is missing or cannot be decoded.
        """
        resolved = os.path.realpath(os.path.expanduser(os.fspath(path)))
        if not os.path.isfile(resolved):
            raise DecodeError(path, "no such file" if not os.path.exists(resolved)
                              else "not a file")
        found = self._indexed(resolved)
        label = None if found is None else found[0]
        if found is not None and found[1] and shift == 0.0 and stretch == 1.0:
            vecs = {s: self._stored_vector(s, found[0]) for s in self.subspaces}
            if all(v is not None for v in vecs.values()):
                return resolved, label, vecs  # type: ignore[return-value]
        return resolved, label, self._embed(resolved, shift=shift, stretch=stretch)

    def _stored_vector(self, subspace: str, label: int) -> np.ndarray | None:
        # The store covers rows written up to its vec_seq; later ones are in the catalogue.
        vec = self.index.vector(subspace, label)
        return vec if vec is not None else self.library.vector(label, subspace)

    def _embed(self, path: str, *, shift: float, stretch: float) -> dict[str, np.ndarray]:
        vecs = self._embed_raw(path, shift=shift, stretch=stretch)
        bad = [s for s, v in vecs.items() if not np.all(np.isfinite(v))]
        if bad:
            # NaN distances would sort anywhere and print as "nan": say what is wrong.
            raise DecodeError(path, "the audio holds NaN or infinite samples (its embedding "
                                    "is not finite)")
        return vecs

    def _embed_raw(self, path: str, *, shift: float, stretch: float) -> dict[str, np.ndarray]:
        embedder = self.embedder
        if shift == 0.0 and stretch == 1.0:
            return embedder.embed_file(path)
        # A shifted or stretched query needs the model's vocoders: the model package is
        # reached here only, never for a query on indexed tracks.
        from engine.model import variants

        if hasattr(embedder, "embed_chunks") and variants.torch_transforms is not None:
            found = variants.torch_transforms.transformed_chunks(
                path, shift=shift, stretch=stretch,
                max_chunks=int(getattr(embedder, "max_chunks", 16)))
            if found is not None:
                emb = embedder.embed_chunks(found)
                return {s: _unit(v.mean(axis=0)) for s, v in emb.items()}
        # A short one-shot, an embedder without chunk access or no torch: the whole signal.
        y = load_audio(path)
        if shift != 0.0:
            y = variants.pitch_shift_versions(y, [float(shift)])[0]
        if stretch != 1.0:
            y = variants.time_stretch_versions(y, [float(stretch)])[0]
        return embedder.embed_audio(y)

    # -- searching ------------------------------------------------------------------------

    def _valid(self, labels: np.ndarray, exclude_hash: str | None = None) -> dict[int, str]:
        """Paths of labels that are ok tracks covered by the index's generation, less
        the exact copies (same content hash) of the query."""
        rows = self.library.paths_by_id([int(x) for x in labels])
        return {tid: t.path for tid, t in rows.items()
                if t.status == "ok" and t.vec_seq <= self.index.vec_seq
                and (exclude_hash is None or t.content_hash != exclude_hash)}

    def content_hash_of(self, path: str, label: int | None) -> str | None:
        """The query's content hash: the catalogue's, else read from the file."""
        if label is not None:
            track = self.library.paths_by_id([label]).get(label)
            if track is not None and track.content_hash:
                return track.content_hash
        try:
            return content_hash(path)
        except OSError:
            return None

    def search(self, vec: np.ndarray, *, subspace: str, k: int = 10,
               exclude_label: int | None = None, exclude_path: str | None = None,
               exclude_hash: str | None = None) -> list[Neighbour]:
        """The ``k`` nearest library tracks to ``vec`` [D] in ``subspace``.

        ``exclude_hash`` leaves out every copy of the query's content: an exact copy is
        a duplicate (``loev duplicates``), not a neighbour.
        """
        total = self.index.count(subspace)
        want = k + 1
        while True:
            labels, dists = self.index.search(subspace, vec, k=min(want, total))
            paths = self._valid(labels, exclude_hash)
            out = [Neighbour(paths[int(lab)], float(max(d, 0.0)))
                   for lab, d in zip(labels, dists)
                   if int(lab) in paths and int(lab) != exclude_label
                   and paths[int(lab)] != exclude_path]
            if len(out) >= k or want >= total:
                return out[:k]
            want = min(2 * want + 8, total)

    def query(self, path: str | os.PathLike[str], *, by: str = "vibe", k: int = 10,
              shift: float = 0.0, stretch: float = 1.0) -> QueryResult:
        """Nearest tracks to one file by ``key``, ``tempo`` or ``vibe``."""
        subspace = subspace_for(by, self.subspaces)
        resolved, label, vecs = self.vectors_of(path, shift=shift, stretch=stretch)
        # A shifted query is another sound: its unshifted copies are fair neighbours.
        same = (self.content_hash_of(resolved, label) if shift == 0.0 and stretch == 1.0
                else None)
        return QueryResult(resolved, self.search(vecs[subspace], subspace=subspace, k=k,
                                                 exclude_label=label, exclude_path=resolved,
                                                 exclude_hash=same))

    def query_blend(self, target: str | os.PathLike[str] | dict[str, np.ndarray],
                    weights: dict[str, float], *, k: int = 10) -> QueryResult:
        """Nearest tracks under a weighted mix of the aspects' cosine distances.

        The distance of a track is ``sum_s w_s d_s / sum_s w_s`` over the aspects
        (``key``/``tempo``/``vibe`` or subspace names), computed exactly over the stores.

        Parameters
        ----------
        target : path or dict of {subspace: np.ndarray [D]}
        weights : dict of {aspect: float >= 0}, not all zero
        """
        w: dict[str, float] = {}
        for aspect, weight in weights.items():
            if weight < 0:
                raise ValueError(f"weight of {aspect!r} must be >= 0, got {weight}")
            if weight > 0:
                s = subspace_for(aspect, self.subspaces)
                w[s] = w.get(s, 0.0) + float(weight)
        if not w:
            raise ValueError(f"at least one weight must be > 0, got {weights}")
        same = None
        if isinstance(target, dict):
            resolved, label, vecs = "<vectors>", None, target
        else:
            resolved, label, vecs = self.vectors_of(target)
            same = self.content_hash_of(resolved, label)
        total = sum(w.values())
        dist: np.ndarray | None = None
        for s, weight in w.items():
            store = self.index.store(s)
            d = (weight / total) * (1.0 - store @ np.asarray(vecs[s], dtype=np.float32))
            dist = d if dist is None else dist + d
        assert dist is not None
        present = np.any(self.index.store(next(iter(w))) != 0.0, axis=1)
        if label is not None and label < len(present):
            present[label] = False
        cand = np.flatnonzero(present)
        order = cand[np.argsort(dist[cand], kind="stable")]
        paths: dict[int, str] = {}
        end = 0
        while end < len(order) and len(paths) <= k:  # exact copies dropped: read on
            paths.update(self._valid(order[end:end + k + 16], same))
            end += k + 16
        order = order[:end]
        out = [Neighbour(paths[int(i)], float(max(dist[i], 0.0))) for i in order
               if int(i) in paths and paths[int(i)] != resolved]
        return QueryResult(resolved, out[:k])


def _unit(v: np.ndarray) -> np.ndarray:
    return (v / max(float(np.linalg.norm(v)), 1e-12)).astype(np.float32)


def query(files: list[str | os.PathLike[str]], *, by: str = "vibe", k: int = 10,
          shift: float = 0.0, stretch: float = 1.0,
          library: Library | str | os.PathLike[str], embedder: Any = None,
          checkpoint: str | os.PathLike[str] | None = None) -> list[QueryResult]:
    """Nearest library tracks to each of ``files`` (see :class:`Searcher`)."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    searcher = Searcher(library, embedder=embedder, checkpoint=checkpoint)
    return [searcher.query(f, by=by, k=k, shift=shift, stretch=stretch) for f in files]


def query_blend(target: str | os.PathLike[str] | dict[str, np.ndarray],
                weights: dict[str, float], *, library: Library | str | os.PathLike[str],
                k: int = 10, embedder: Any = None) -> QueryResult:
    """Nearest tracks under a weighted blend of key/tempo/vibe (see ``Searcher.query_blend``)."""
    return Searcher(library, embedder=embedder).query_blend(target, weights, k=k)
