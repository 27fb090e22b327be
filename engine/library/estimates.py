"""Key, tempo and type estimates of library tracks, read by the heads from stored vectors.

The heads (``engine.model.heads``) run in numpy on the L2-normalised vectors the catalogue
already holds, so estimating a track never decodes it again: a scan estimates each batch
as it commits it, and :func:`backfill` estimates, batch by batch, every ok track that has
no estimate or one made by other heads (a library scanned before the heads existed, or
whose checkpoint's heads were trained again). Estimates are keyed by the track's row and
go with its vectors: a file that changes, or a model switch, drops them.

Heads belong to one model: they are loaded from the checkpoint the library was built
with, and only while that file still holds the library's model.
"""
from __future__ import annotations

import os
from typing import Any

import numpy as np

from engine.errors import LibraryError, LoevError
from engine.library.catalogue import Library
from engine.model import heads as heads_module
from engine.model.checkpoint import read_checkpoint_info
from engine.model.heads import Estimate, Heads

# Tracks estimated per transaction by a backfill (the heads' cost is a few small matrix
# products per batch; the catalogue read dominates).
BATCH = 1024


def load_heads(checkpoint: str | os.PathLike[str] | None) -> Heads | None:
    """``engine.model.heads.load_heads``: the heads in ``checkpoint``, or None (tests
    replace this one name)."""
    return heads_module.load_heads(checkpoint)


def checkpoint_model_id(checkpoint: str | os.PathLike[str]) -> str | None:
    """The model id in a checkpoint's header, or None when it cannot be read."""
    try:
        return read_checkpoint_info(checkpoint).model_id
    except LoevError:
        return None


def heads_for(checkpoint: str | os.PathLike[str] | None, model_id: str | None) -> Heads | None:
    """The heads to estimate a library's tracks with, or None when there are none.

    Parameters
    ----------
    checkpoint : path or None
        The checkpoint the library's vectors were made with (its ``checkpoint`` meta).
        None (an embedder with no checkpoint file) or a file that is gone: no heads.
    model_id : str or None
        The library's model. A checkpoint now holding another model (the shipped default
        replaced by an upgrade) gives no heads: its heads would read foreign vectors.

    Raises
    ------
    CheckpointError
        The checkpoint's heads are damaged.
    """
    if checkpoint is None or not os.path.isfile(checkpoint):
        return None
    if model_id is None or checkpoint_model_id(checkpoint) != model_id:
        return None
    return load_heads(checkpoint)


def predict(heads: Heads, vectors: dict[str, np.ndarray]) -> list[Estimate]:
    """The heads' estimates for ``{subspace: [N, D]}``, one per row.

    Raises
    ------
    LibraryError
        The heads do not fit these vectors (a missing subspace, another dimension), or
        gave an answer of the wrong length.
    """
    n = len(next(iter(vectors.values()))) if vectors else 0
    if n == 0:
        return []
    try:
        out = list(heads.predict({k: np.asarray(v, dtype=np.float32)
                                  for k, v in vectors.items()}))
    except (KeyError, ValueError, IndexError) as e:
        raise LibraryError(f"the key/BPM/type heads do not fit the library's vectors "
                           f"({type(e).__name__}: {e})") from None
    if len(out) != n or not all(isinstance(e, Estimate) for e in out):
        raise LibraryError(f"the key/BPM/type heads gave {len(out)} estimates for {n} tracks")
    return out


def _cancelled(cancel: Any) -> bool:
    if cancel is None:
        return False
    return bool(cancel.is_set()) if hasattr(cancel, "is_set") else bool(cancel())


def backfill(lib: Library, heads: Heads, *, batch: int = BATCH, cancel: Any = None) -> int:
    """Estimate every ok track whose estimate is missing or from other heads.

    Reads the stored vectors ``batch`` tracks at a time and writes each batch's
    estimates in one transaction (a kill loses at most one batch; the next call goes on).
    The caller holds the library's write lock. Nothing is decoded or embedded.

    Returns
    -------
    int
        The number of tracks estimated.
    """
    ids = lib.unestimated(heads.heads_id)
    done = 0
    for i in range(0, len(ids), batch):
        if _cancelled(cancel):
            break
        labels, vecs = lib.vectors_of(ids[i:i + batch])
        if labels:
            done += lib.set_estimates(dict(zip(labels, predict(heads, vecs))), heads.heads_id)
    return done


def compute(lib: Library, heads: Heads, ids: list[int], *, batch: int = BATCH
            ) -> dict[int, Estimate]:
    """Estimates of tracks ``ids`` from their stored vectors, without writing anything
    (a library that cannot be written now: read-only media, another process scanning)."""
    out: dict[int, Estimate] = {}
    for i in range(0, len(ids), batch):
        labels, vecs = lib.vectors_of(ids[i:i + batch])
        out.update(zip(labels, predict(heads, vecs)))
    return out
