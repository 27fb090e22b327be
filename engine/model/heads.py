"""Key, tempo and sound-type estimates read from a track's stored embedding.

Three small heads sit on the LOEV++ subspaces, as in the paper's probing experiments: a
key head on the pitch space (24 keys and "no key"), a tempo head on the tempo space (BPM
and "no tempo") and a type head on the invariant space (the vocabulary of docs/DESIGN.md
section 8). They run in numpy on the L2-normalised track vectors the library stores, so
a library scanned before the heads existed gets its estimates without decoding or
embedding anything again. Their weights live in the checkpoint's safetensors file beside
the encoder's (``estimators.*`` tensors, their vocabulary in the metadata); ``loev-train
heads`` trains them on a frozen checkpoint.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from engine import keys
from engine.errors import CheckpointError
from engine.model.kernels import psd_root, tempo_kernel

SOUND_TYPES = ("kick", "snare", "clap", "rim", "hihat", "cymbal", "tom", "percussion", "bass", "keys",
               "guitar", "strings", "brass_wind", "pad", "lead", "vocal", "fx", "drum_loop", "music_loop",
               "song")

# Below this an estimate is shown as uncertain (greyed, with "?"), never hidden.
LOW_CONFIDENCE = 0.5


@dataclass(frozen=True)
class Estimate:
    """What the heads say about one track.

    ``key`` is an :mod:`engine.keys` index (0..23) or None for "no key"; ``bpm`` is None
    for "no tempo"; ``type`` is one of :data:`SOUND_TYPES`. Each confidence lies in [0, 1]
    and is the head's probability for what it says (for the BPM, the probability mass
    within 4 % of it; where the BPM comes from the tempo projector's posterior, that
    posterior's mass under its kernel around the BPM).
    """

    key: int | None
    key_confidence: float
    bpm: float | None
    bpm_confidence: float
    type: str
    type_confidence: float

    def to_dict(self) -> dict[str, Any]:
        """The fields of ``loev analyze --json`` (docs/DESIGN.md section 6), path excepted."""
        return {"key": None if self.key is None else keys.key_name(self.key),
                "camelot": None if self.key is None else keys.camelot(self.key),
                "key_confidence": round(float(self.key_confidence), 4),
                "bpm": None if self.bpm is None else round(float(self.bpm), 2),
                "bpm_confidence": round(float(self.bpm_confidence), 4),
                "type": self.type,
                "type_confidence": round(float(self.type_confidence), 4)}


def aspect_caveat(by: Any, estimate: Estimate | None) -> str:
    """What a key or tempo search cannot mean for a query the heads say has no key or no
    tempo (a drum hit, noise, a one-shot): its neighbours share the aspect's content
    (spectrum, onsets), not a key or a BPM. Empty when the query has one or is unknown."""
    if estimate is None:
        return ""
    if by == "key" and estimate.key is None and estimate.key_confidence >= LOW_CONFIDENCE:
        return ": it has no key (unpitched), so these share its pitch content, not a key"
    if by == "tempo" and estimate.bpm is None and estimate.bpm_confidence >= LOW_CONFIDENCE:
        return ": it has no tempo (a single sound), so these share its onsets, not a BPM"
    return ""


HEADS_FORMAT = "loev-heads/1"
# What each head reads by default (the metadata names each head's subspaces).
HEAD_SUBSPACES = {"key": ("pitch",), "tempo": ("tempo",), "type": ("invariant",)}
NO_KEY, NO_TEMPO = "no key", "no tempo"
BPM_TOLERANCE = 0.04  # acc1's: a BPM within 4 % is right


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def leading_part(x: np.ndarray, width: int) -> np.ndarray:
    """The first ``width`` dimensions of vectors ``[N, D]``, scaled back to unit length (a
    zero vector stays zero): what a head with ``widths`` reads of a subspace."""
    x = x[:, :width]
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


@dataclass(frozen=True)
class _Mlp:
    """One head: standardise, then dense layers with ReLU between them."""

    subspaces: tuple[str, ...]
    labels: tuple[str, ...]
    mean: np.ndarray
    scale: np.ndarray
    layers: tuple[tuple[np.ndarray, np.ndarray], ...]  # (weight [out, in], bias [out])
    # Per subspace, None (the whole vector) or the number of leading dimensions read, that
    # part scaled back to unit length (a space's structured branch without its projector).
    widths: tuple[int | None, ...] = ()

    def inputs(self, vectors: dict[str, np.ndarray], name: str) -> np.ndarray:
        """The head's input ``[N, D]`` from ``{subspace: [N, dim]}`` (or ``[dim]``) vectors."""
        parts = []
        for s, width in zip(self.subspaces, self.widths or (None,) * len(self.subspaces)):
            if s not in vectors:
                raise ValueError(f"the {name} head reads the {s!r} subspace, absent from "
                                 f"the vectors given ({sorted(vectors)})")
            x = np.asarray(vectors[s], dtype=np.float32)
            x = x[None] if x.ndim == 1 else x
            if width is not None and x.ndim == 2 and x.shape[1] >= width:
                x = leading_part(x, width)
            parts.append(x)
        d = self.mean.shape[0]
        if any(x.ndim != 2 for x in parts) or len({len(x) for x in parts}) > 1:
            raise ValueError(f"{'+'.join(self.subspaces)} vectors must be [N, D] arrays of one N")
        x = np.concatenate(parts, axis=1)
        if x.shape[1] != d:
            raise ValueError(f"{'+'.join(self.subspaces)} vectors must be [N, {d}] together, "
                             f"got {[list(p.shape) for p in parts]}")
        return x

    def probabilities(self, x: np.ndarray) -> np.ndarray:
        h = (x - self.mean) * self.scale
        for i, (w, b) in enumerate(self.layers):
            h = h @ w.T + b
            if i < len(self.layers) - 1:
                h = np.maximum(h, 0.0)
        return _softmax(h.astype(np.float64))


class Heads:
    """The key, tempo and type heads of a checkpoint, run in numpy.

    Built by :func:`load_heads` from a checked checkpoint. ``heads_id`` is a digest of the
    heads' tensors and metadata: estimates stored with one id were made by these weights.
    ``bpm_bins`` are the tempo head's bin centres (BPM, log-spaced), its last class being
    "no tempo".
    """

    def __init__(self, heads: dict[str, _Mlp], bpm_bins: np.ndarray, heads_id: str,
                 provenance: dict[str, Any] | None = None, tempo_kernel_bins: float | None = None) -> None:
        self._heads = heads
        self.bpm_bins = np.asarray(bpm_bins, dtype=np.float64)
        # With a tempo projector's posterior in the tempo space (its last bins + 1 dims),
        # the BPM is read from that posterior, smoothed by its kernel; the tempo head
        # still says "no tempo".
        self._tempo_root = self._tempo_rows = None
        if tempo_kernel_bins is not None:
            kernel = tempo_kernel(len(self.bpm_bins), tempo_kernel_bins)
            self._tempo_root, self._tempo_rows = psd_root(kernel), kernel.sum(axis=1)
        self.heads_id = heads_id
        self.provenance = dict(provenance or {})
        self.subspaces = {name: h.subspaces for name, h in heads.items()}
        self._key_index = [None if lab == NO_KEY else keys.parse_key(lab) for lab in heads["key"].labels]

    def probabilities(self, vectors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Each head's class probabilities ``{head: [N, classes]}``."""
        out = {}
        for name, head in self._heads.items():
            out[name] = head.probabilities(head.inputs(vectors, name))
        lengths = {len(p) for p in out.values()}
        if len(lengths) > 1:
            raise ValueError(f"the subspaces hold different numbers of vectors ({sorted(lengths)})")
        return out

    def _tempo(self, p: np.ndarray, smoothed: np.ndarray | None = None) -> tuple[float | None, float]:
        """BPM (None: no tempo) and confidence from the tempo head's probabilities ``p``, or,
        given ``smoothed`` (the tempo projector's posterior over the BPM bins, smoothed by
        its kernel), from that where the head finds a tempo."""
        bins, p_none = p[:-1], float(p[-1])
        if p_none >= 0.5:
            return None, p_none
        from_posterior = smoothed is not None and smoothed.max() > 0
        if from_posterior:
            bins = np.clip(smoothed, 0.0, None)
        b = int(np.argmax(bins))
        logc = np.log(self.bpm_bins)
        shift, step = 0.0, 0.0
        if 0 < b < len(bins) - 1:
            step = 0.5 * (logc[b + 1] - logc[b - 1])
            # A parabola through the log-probabilities of the peak bin and its neighbours
            # puts the BPM between bin centres: the bins are 2 % apart, acc1 allows 4 %.
            lo, mid, hi = np.log(np.maximum(bins[b - 1: b + 2], 1e-12))
            den = lo - 2 * mid + hi
            if den < 0:
                shift = float(np.clip(0.5 * (lo - hi) / den, -0.5, 0.5))
        bpm = float(np.exp(logc[b] + shift * step))
        if from_posterior:
            # The smoothed posterior's peak, divided by its total and scaled by the kernel's
            # row sum there: the posterior's mass under the kernel around the peak (1 for
            # a certain one), whatever the stored vector's length.
            return bpm, min(1.0, float(bins[b] * self._tempo_rows[b] / bins.sum())) * (1.0 - p_none)
        near = np.abs(np.log(self.bpm_bins / bpm)) <= np.log1p(BPM_TOLERANCE)
        return bpm, float(bins[near].sum())

    def predict(self, vectors: dict[str, np.ndarray]) -> list[Estimate]:
        """One :class:`Estimate` per track of ``vectors`` (``{subspace: [N, D]}``, the
        L2-normalised track vectors as the library stores them)."""
        probs = self.probabilities(vectors)
        smoothed = self._smoothed_tempo(vectors)
        # A zero vector is what normalising nothing gives (digital silence has no chroma
        # and no onsets): no key and no tempo for certain, whatever the MLP would say.
        empty = {name: self._empty(vectors, name) for name in ("key", "tempo")}
        out = []
        type_labels = self._heads["type"].labels
        for i, (pk, pt, py) in enumerate(zip(probs["key"], probs["tempo"], probs["type"])):
            k = int(np.argmax(pk))
            key, key_conf = (None, 1.0) if empty["key"][i] else (self._key_index[k], float(pk[k]))
            bpm, bpm_conf = ((None, 1.0) if empty["tempo"][i]
                             else self._tempo(pt, None if smoothed is None else smoothed[i]))
            t = int(np.argmax(py))
            out.append(Estimate(key=key, key_confidence=key_conf, bpm=bpm, bpm_confidence=bpm_conf,
                                type=type_labels[t], type_confidence=float(py[t])))
        return out

    def _smoothed_tempo(self, vectors: dict[str, np.ndarray]) -> np.ndarray | None:
        """``[N, bins]``: the tempo projector's posterior over the BPM bins, smoothed by its
        kernel, read back from the tempo space's last dimensions; None without one."""
        if self._tempo_root is None:
            return None
        n = len(self._tempo_root)
        x = np.atleast_2d(np.asarray(vectors["tempo"], dtype=np.float64))
        if x.shape[1] < n:
            raise ValueError(f"tempo vectors must hold the tempo posterior's {n} dimensions, got {x.shape[1]}")
        return (x[:, -n:] @ self._tempo_root)[:, :-1]

    def _empty(self, vectors: dict[str, np.ndarray], head: str) -> np.ndarray:
        """[N] bool: the head's vectors are all zero (their norm well below 1)."""
        norms = [np.linalg.norm(np.atleast_2d(np.asarray(vectors[s], dtype=np.float32)), axis=1)
                 for s in self._heads[head].subspaces]
        return np.all(np.stack(norms) < 0.5, axis=0)


def _heads_error(path: Path, reason: str) -> CheckpointError:
    return CheckpointError(f"{path}: damaged key/tempo/type heads ({reason})")


def load_heads(checkpoint: str | os.PathLike[str] | None = None) -> Heads | None:
    """The heads of a checkpoint (the shipped default when None), or None when it has none.

    Pickle-free: the header is checked first (:func:`engine.model.checkpoint.read_checkpoint_info`),
    then the ``loev_heads`` metadata, then every ``estimators.*`` tensor's name, dtype and shape
    against it, and only then are the tensors' bytes read, as little-endian float32 arrays.

    Raises
    ------
    CheckpointError
        The checkpoint is unreadable, or its heads are damaged or do not fit its
        subspaces: one line naming the file. A damaged heads section is an error, not
        "no heads", so that it is reported rather than silently showing no estimates.
    """
    from engine.model.checkpoint import HEADS_PREFIX, read_checkpoint_info
    from engine.resources import default_checkpoint

    path = Path(checkpoint) if checkpoint is not None else default_checkpoint()
    info = read_checkpoint_info(path)
    names = {k: v for k, v in info.tensors.items() if k.startswith(HEADS_PREFIX)}
    raw = info.metadata.get("loev_heads")
    if raw is None:
        if names:
            raise _heads_error(path, f"{len(names)} heads tensors but no loev_heads metadata")
        return None
    try:
        spec = json.loads(raw)
        if not isinstance(spec, dict) or spec.get("format") != HEADS_FORMAT:
            raise ValueError(f"format {str(spec.get('format') if isinstance(spec, dict) else spec)[:40]!r}, "
                             f"expected {HEADS_FORMAT!r}")
        expected, layouts = _expected_tensors(spec, info.dims)
    except RecursionError:
        raise _heads_error(path, "metadata nested too deeply") from None
    except (ValueError, TypeError, KeyError) as e:
        raise _heads_error(path, " ".join(str(e).split())[:300]) from None
    for name, shape in expected.items():
        if name not in names:
            raise _heads_error(path, f"missing tensor {name!r}")
        dtype, got = names[name]
        if dtype != "F32" or got != shape:
            raise _heads_error(path, f"{name} is {dtype} {list(got)}, expected F32 {list(shape)}")
    extra = sorted(set(names) - set(expected))
    if extra:
        raise _heads_error(path, f"unexpected tensor {extra[0][:60]!r}")

    # The bytes are read here, at the places the checked header gives, rather than through
    # the safetensors package: the bundled app ships without it (it only has numpy).
    arrays = {}
    try:
        with open(path, "rb") as f:
            for name in sorted(expected):
                start, stop = info.spans[name]
                f.seek(start)
                buf = f.read(stop - start)
                if len(buf) != stop - start:
                    raise _heads_error(path, f"{name} is cut short")
                arrays[name] = np.frombuffer(buf, dtype="<f4").reshape(expected[name]).astype(np.float32)
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read ({e.strerror or e})") from None
    for name, a in arrays.items():
        if not np.isfinite(a).all():
            raise _heads_error(path, f"{name} holds non-finite values")
    return _assemble(raw, spec, arrays, layouts)


def heads_from_arrays(raw: str, arrays: dict[str, np.ndarray], dims: dict[str, int]) -> Heads:
    """:class:`Heads` from metadata text and ``estimators.*`` arrays held in memory (the
    trainer's model selection runs the shipped decoding this way). ValueError when they
    do not fit each other or ``dims``."""
    spec = json.loads(raw)
    expected, layouts = _expected_tensors(spec, dims)
    for name, shape in expected.items():
        if name not in arrays or tuple(np.shape(arrays[name])) != shape:
            raise ValueError(f"{name}: expected shape {list(shape)}")
    return _assemble(raw, spec, {k: np.asarray(arrays[k], dtype=np.float32) for k in sorted(expected)},
                     layouts)


def _assemble(raw: str, spec: dict[str, Any], arrays: dict[str, np.ndarray],
              layouts: dict[str, tuple[tuple[str, ...], tuple[str, ...], int]]) -> Heads:
    from engine.model.checkpoint import HEADS_PREFIX

    digest = hashlib.sha256(raw.encode("utf-8"))
    for name, a in arrays.items():
        digest.update(name.encode("utf-8"))
        digest.update(np.ascontiguousarray(a, dtype="<f4").tobytes())
    heads = {}
    for head, (subspace, labels, n_layers, widths) in layouts.items():
        p = f"{HEADS_PREFIX}{head}."
        heads[head] = _Mlp(subspaces=subspace, labels=labels, mean=arrays[p + "mean"],
                           scale=arrays[p + "scale"],
                           layers=tuple((arrays[f"{p}{i}.weight"], arrays[f"{p}{i}.bias"])
                                        for i in range(n_layers)), widths=widths)
    posterior = spec["tempo"].get("posterior")
    return Heads(heads, np.asarray(spec["tempo"]["bpm"], dtype=np.float64),
                 digest.hexdigest()[:16], spec.get("provenance"),
                 tempo_kernel_bins=None if posterior is None else float(posterior["kernel_bins"]))


def _expected_tensors(spec: dict[str, Any], dims: dict[str, int]) -> tuple[dict[str, tuple[int, ...]], dict[str, Any]]:
    """The heads tensors the metadata promises (name -> shape), and each head's
    (subspaces, labels, number of layers, widths); ValueError where the metadata is
    inconsistent. A head's optional ``widths`` (one per subspace, an int or null) reads
    only that many leading dimensions of the subspace's vector."""
    from engine.model.checkpoint import HEADS_PREFIX

    expected: dict[str, tuple[int, ...]] = {}
    layouts = {}
    for head in HEAD_SUBSPACES:
        h = spec.get(head)
        if not isinstance(h, dict):
            raise ValueError(f"no {head} head")
        subspace = h.get("subspaces")
        if (not isinstance(subspace, list) or not subspace or len(set(map(str, subspace))) != len(subspace)
                or not all(isinstance(s, str) and s in dims for s in subspace)):
            raise ValueError(f"the {head} head reads {str(subspace)[:60]}; expected distinct "
                             f"subspaces of this checkpoint ({sorted(dims)})")
        subspace = tuple(subspace)
        widths = h.get("widths", [None] * len(subspace))
        if (not isinstance(widths, list) or len(widths) != len(subspace) or not all(
                w is None or (type(w) is int and 1 <= w <= dims[s]) for w, s in zip(widths, subspace))):
            raise ValueError(f"{head} head: widths {str(widths)[:40]}; expected one per subspace, "
                             f"null or 1..its dimensions")
        d_in = sum(dims[s] if w is None else w for s, w in zip(subspace, widths))
        hidden = h.get("hidden")
        if not isinstance(hidden, list) or len(hidden) > 4 or not all(
                type(n) is int and 1 <= n <= 4096 for n in hidden):
            raise ValueError(f"{head} head: hidden sizes {str(hidden)[:40]}")
        labels = h.get("labels")
        if not isinstance(labels, list) or not labels or len(labels) > 1024 or not all(
                isinstance(x, str) for x in labels):
            raise ValueError(f"{head} head: labels must be a list of strings")
        if head == "key":
            if len(set(labels)) != len(labels) or not all(
                    x == NO_KEY or keys.parse_key(x) is not None for x in labels):
                raise ValueError("key head: labels must be distinct key names or 'no key'")
        elif head == "type":
            if len(set(labels)) != len(labels) or not set(labels) <= set(SOUND_TYPES):
                raise ValueError("type head: labels must be distinct names of SOUND_TYPES")
        else:
            bpm = spec[head].get("bpm")
            if (not isinstance(bpm, list) or len(bpm) < 3 or not all(
                    isinstance(b, (int, float)) and 1.0 <= b <= 1000.0 for b in bpm)
                    or not all(b < c for b, c in zip(bpm, bpm[1:]))):
                raise ValueError("tempo head: bpm must be >= 3 increasing bin centres")
            if len(labels) != len(bpm) + 1 or labels[-1] != NO_TEMPO:
                raise ValueError("tempo head: labels must be its bins then 'no tempo'")
            posterior = spec[head].get("posterior")
            if posterior is not None and not (
                    isinstance(posterior, dict) and set(posterior) == {"kernel_bins"}
                    and type(posterior["kernel_bins"]) in (int, float) and 0.1 <= posterior["kernel_bins"] <= 16.0
                    and "tempo" in dims and dims["tempo"] >= len(bpm) + 1):
                raise ValueError(f"tempo head: posterior {str(posterior)[:60]}; expected "
                                 f"{{'kernel_bins': 0.1..16}} over a tempo space of at least {len(bpm) + 1} dims")
        sizes = [d_in, *hidden, len(labels)]
        p = f"{HEADS_PREFIX}{head}."
        expected[p + "mean"] = (d_in,)
        expected[p + "scale"] = (d_in,)
        for i, (a, b) in enumerate(zip(sizes, sizes[1:])):
            expected[f"{p}{i}.weight"] = (b, a)
            expected[f"{p}{i}.bias"] = (b,)
        layouts[head] = (subspace, tuple(labels), len(sizes) - 1,
                         tuple(widths) if any(w is not None for w in widths) else ())
    return expected, layouts
