"""Self-describing ``.safetensors`` checkpoints (docs/DESIGN.md section 4).

The safetensors metadata holds the JSON ``ModelConfig`` under ``loev_config`` and the
subspace dimensions under ``loev_dims``, so the engine rebuilds the network without the
trainer, and reads a checkpoint's identity without importing torch. Loading never
unpickles: pickle-based files (``.pt``, ``.ckpt``...) are refused before they are opened.

A checkpoint is untrusted input. Its header is parsed here, not by the safetensors
library (a capped length, then JSON), and checked whole before anything is allocated: the
metadata's types, the config's types and ranges (``engine.config.check_config_dict``), the
subspace dimensions, and each tensor's dtype, shape and byte range within the file. Then
the network the config describes is built on the ``meta`` device (no memory) and its
tensor names and shapes are compared with the file's; only then is it built for real.
Every failure is one ``CheckpointError`` line naming the file.

A checkpoint may also carry the key, tempo and type heads (``estimators.*`` tensors and their
``loev_heads`` metadata, :mod:`engine.model.heads`). They are not part of the network and
do not change what the model is: ``loev-train heads`` writes them after the encoder's
bytes, unchanged, and records the encoder's own header under ``loev_encoder``, so that the
model id is the digest of the encoder file they came from, recomputed from the bytes, not
read from a field. Libraries and ONNX exports made with the encoder stay valid.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.config import ModelConfig
from engine.errors import CheckpointError

if TYPE_CHECKING:
    from engine.model.network import LoevNet

FORMAT = "loev-explorer/1"
PICKLE_SUFFIXES = frozenset({".pt", ".pth", ".ckpt", ".bin", ".pkl", ".pickle", ".tar"})
# A LOEV header (a few hundred tensors) is tens of kilobytes: this bounds what an
# untrusted length field can make us read and parse.
_MAX_HEADER = 16 * 1024 * 1024
_DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2}
_MAX_RANK = 8
_MAX_DIM = 65_536  # largest subspace dimension a checkpoint may declare
HEADS_PREFIX = "estimators."  # not "heads.": the network's projection heads are named so
ENCODER_KEY = "loev_encoder"


@dataclass(frozen=True)
class CheckpointInfo:
    """What a checkpoint is, read from its header alone (no torch)."""

    path: Path
    model_id: str
    config: dict[str, Any]
    subspaces: tuple[str, ...]
    dims: dict[str, int]
    tensors: dict[str, tuple[str, tuple[int, ...]]] = field(default_factory=dict, compare=False)
    metadata: dict[str, str] = field(default_factory=dict, compare=False)
    # Where each tensor's bytes lie in the file (absolute start, end), from the checked header.
    spans: dict[str, tuple[int, int]] = field(default_factory=dict, compare=False)

    def model_config(self) -> ModelConfig:
        return ModelConfig.from_dict(self.config)


def _refuse_pickle(path: Path) -> None:
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise CheckpointError(
            f"{path}: refusing to load a pickle-based checkpoint ({path.suffix}); "
            "only .safetensors checkpoints are loaded (loev-train export writes one)")


@dataclass(frozen=True)
class _Header:
    """A checked safetensors header: its metadata, tensor table and where things lie."""

    meta: dict[str, str]
    tensors: dict[str, tuple[str, tuple[int, ...]]]
    offsets: dict[str, tuple[int, int]]
    text: bytes  # the header's bytes as stored (JSON, space-padded)
    data_len: int


def _parse_header(path: Path, text: bytes, data_len: int, *, what: str = "header"
                  ) -> tuple[dict[str, str], dict[str, Any]]:
    try:
        header = json.loads(text)
    except (UnicodeDecodeError, ValueError):
        raise CheckpointError(f"{path}: not a safetensors checkpoint (unreadable {what})") from None
    except RecursionError:
        raise CheckpointError(f"{path}: not a safetensors checkpoint ({what} nested too "
                              "deeply)") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: not a safetensors checkpoint ({what} is a JSON "
                              f"{type(header).__name__}, not an object)")
    meta = header.pop("__metadata__", None)
    if not isinstance(meta, dict) or "loev_config" not in meta:
        raise CheckpointError(f"{path}: safetensors file without a LOEV config in its metadata")
    bad = [k for k, v in meta.items() if not isinstance(v, str)]
    if bad:
        raise CheckpointError(f"{path}: malformed metadata ({str(bad[0])[:40]!r} is not a "
                              "string; safetensors metadata maps strings to strings)")
    return meta, header


def _read_header(path: Path) -> _Header:
    """The checked header of a checkpoint file."""
    _refuse_pickle(path)
    try:
        with open(path, "rb") as f:
            raw = f.read(8)
            if len(raw) < 8:
                raise CheckpointError(f"{path}: not a safetensors checkpoint (file too short)")
            (n,) = struct.unpack("<Q", raw)
            size = os.fstat(f.fileno()).st_size
            if n < 2 or n > min(_MAX_HEADER, size - 8):
                raise CheckpointError(f"{path}: not a safetensors checkpoint (header length "
                                      f"{n} for a file of {size} bytes)")
            text = f.read(n)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: checkpoint not found") from None
    except IsADirectoryError:
        raise CheckpointError(f"{path}: is a directory, not a checkpoint") from None
    except PermissionError:
        raise CheckpointError(f"{path}: permission denied") from None
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read ({e.strerror or e})") from None
    meta, header = _parse_header(path, text, size - 8 - n)
    tensors, offsets = _check_tensors(path, header, size - 8 - n)
    return _Header(meta, tensors, offsets, text, size - 8 - n)


def _check_tensors(path: Path, header: dict[str, Any], data_len: int
                   ) -> tuple[dict[str, tuple[str, tuple[int, ...]]], dict[str, tuple[int, int]]]:
    """Each tensor's dtype, shape and byte range, and that the ranges tile the data."""
    def bad(name: str, reason: str) -> CheckpointError:
        return CheckpointError(f"{path}: malformed tensor {name[:60]!r} ({reason})")

    tensors: dict[str, tuple[str, tuple[int, ...]]] = {}
    offsets_of: dict[str, tuple[int, int]] = {}
    spans = []
    for name, t in header.items():
        if not isinstance(t, dict) or set(t) != {"dtype", "shape", "data_offsets"}:
            raise bad(name, "not a dtype, shape and data_offsets entry")
        dtype, shape, offsets = t["dtype"], t["shape"], t["data_offsets"]
        if dtype not in _DTYPE_BYTES:
            raise bad(name, f"dtype {str(dtype)[:20]!r}; expected one of "
                            f"{', '.join(_DTYPE_BYTES)}")
        if not isinstance(shape, list) or len(shape) > _MAX_RANK or not all(
                type(d) is int and 0 <= d <= data_len for d in shape):
            raise bad(name, f"shape {str(shape)[:40]}")
        if not isinstance(offsets, list) or len(offsets) != 2 or not all(
                type(o) is int for o in offsets) or not 0 <= offsets[0] <= offsets[1] <= data_len:
            raise bad(name, f"data offsets {str(offsets)[:40]} outside the {data_len} data bytes")
        nbytes = math.prod(shape) * _DTYPE_BYTES[dtype]
        if offsets[1] - offsets[0] != nbytes:
            raise bad(name, f"{offsets[1] - offsets[0]} bytes for a {dtype} tensor of shape "
                            f"{shape} ({nbytes} bytes)")
        tensors[name] = (dtype, tuple(shape))
        offsets_of[name] = (offsets[0], offsets[1])
        spans.append((offsets[0], offsets[1], name))
    end = 0
    for start, stop, name in sorted(spans):
        if start != end:
            raise bad(name, "its bytes overlap another tensor's or leave a gap")
        end = stop
    if end != data_len:
        raise CheckpointError(f"{path}: malformed checkpoint (tensors cover {end} of its "
                              f"{data_len} data bytes)")
    return tensors, offsets_of


def _encoder_header(path: Path, h: _Header) -> tuple[bytes, int] | None:
    """The header bytes and data length of the encoder file a checkpoint with heads came
    from, checked to describe exactly the same encoder tensors at the same places; None
    for a checkpoint written as it is (no ``loev_encoder`` record)."""
    heads = [k for k in h.tensors if k.startswith(HEADS_PREFIX)]
    if ENCODER_KEY not in h.meta:
        return None
    try:
        record = json.loads(h.meta[ENCODER_KEY])
        text = record["header"].encode("utf-8")
        recorded_id = record["id"]
        if not isinstance(recorded_id, str):
            raise TypeError("id is not a string")
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError):
        raise CheckpointError(f"{path}: malformed {ENCODER_KEY} record in its metadata") from None
    encoder = {k: v for k, v in h.tensors.items() if k not in heads}
    enc_len = max((h.offsets[k][1] for k in encoder), default=0)
    meta, table = _parse_header(path, text, enc_len, what="encoder header")
    tensors, offsets = _check_tensors(path, table, enc_len)
    same_meta = all(meta.get(k) == h.meta.get(k) for k in ("format", "loev_config", "loev_dims"))
    if (tensors != encoder or offsets != {k: h.offsets[k] for k in encoder} or not same_meta
            or any(k.startswith(HEADS_PREFIX) for k in meta)):
        raise CheckpointError(f"{path}: its {ENCODER_KEY} record does not describe its encoder "
                              "tensors (a damaged or hand-edited checkpoint)")
    return text, enc_len


def file_digest(path: Path, *, header: bytes | None = None, data_len: int | None = None) -> str:
    """The model id: the first 16 hex digits of the file's SHA-256.

    With ``header`` and ``data_len``, the digest of the file those would make: the 8-byte
    length, ``header``, then the first ``data_len`` data bytes of ``path`` (the encoder a
    checkpoint with heads was written from, whose bytes it keeps in front).
    """
    h = hashlib.sha256()
    with open(path, "rb") as f:
        if header is None:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        else:
            (n,) = struct.unpack("<Q", f.read(8))
            f.seek(8 + n)
            h.update(struct.pack("<Q", len(header)))
            h.update(header)
            left = int(data_len or 0)
            while left > 0:
                block = f.read(min(left, 1 << 20))
                if not block:
                    raise CheckpointError(f"{path}: truncated while reading its encoder")
                h.update(block)
                left -= len(block)
    return h.hexdigest()[:16]


def read_checkpoint_info(path: str | os.PathLike[str]) -> CheckpointInfo:
    """Identity, config and subspace dimensions of a checkpoint, without importing torch."""
    path = Path(path)
    header = _read_header(path)
    meta, tensors = header.meta, header.tensors
    try:
        config = json.loads(meta["loev_config"])
        cfg = ModelConfig.from_dict(config)
        raw_dims = json.loads(meta.get("loev_dims", "null"))
        if not isinstance(raw_dims, dict):
            raise ValueError(f"loev_dims must be an object, got {type(raw_dims).__name__}")
        for k, v in raw_dims.items():
            if type(v) is not int or not 1 <= v <= _MAX_DIM:
                raise ValueError(f"dimension of {str(k)[:40]!r} must be an integer in "
                                 f"[1, {_MAX_DIM}], got {str(v)[:40]}")
        if set(raw_dims) != set(cfg.subspaces):
            raise ValueError(f"subspaces {sorted(raw_dims)} do not match the config's "
                             f"{sorted(cfg.subspaces)}")
        dims = {s: raw_dims[s] for s in cfg.subspaces}
    except RecursionError:
        raise CheckpointError(f"{path}: malformed LOEV metadata (nested too deeply)") from None
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: malformed LOEV metadata ({_one_line(e)})") from None
    encoder = _encoder_header(path, header)
    if encoder is None:
        model_id = file_digest(path)
    else:
        model_id = file_digest(path, header=encoder[0], data_len=encoder[1])
        if model_id != json.loads(meta[ENCODER_KEY])["id"]:
            raise CheckpointError(f"{path}: its encoder weights are not those of the model it "
                                  "records (a damaged or hand-edited checkpoint)")
    return CheckpointInfo(path=path, model_id=model_id, config=config,
                          subspaces=tuple(dims), dims=dims, tensors=tensors, metadata=meta,
                          spans={k: (8 + len(header.text) + a, 8 + len(header.text) + b)
                                 for k, (a, b) in header.offsets.items()})


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return text if len(text) <= 300 else text[:300] + "..."


def _check_against_network(info: CheckpointInfo, cfg: ModelConfig) -> None:
    """Compare the file's tensors with those of the network ``cfg`` describes, built on
    the meta device (shapes only, no memory)."""
    import torch

    from engine.model import network

    path = info.path
    try:
        with torch.device("meta"):
            meta_net = network.LoevNet(cfg)
        expected = {k: tuple(v.shape) for k, v in meta_net.state_dict().items()}
        dims = dict(meta_net.embedding_dims)
    except (ValueError, RuntimeError, TypeError, ZeroDivisionError, AssertionError) as e:
        raise CheckpointError(f"{path}: its config does not describe a network this program "
                              f"builds ({_one_line(e)})") from None
    if dims != info.dims:
        raise CheckpointError(f"{path}: declared subspace dimensions {info.dims} differ from "
                              f"its network's {dims}")
    got = {k: shape for k, (_dtype, shape) in info.tensors.items()
           if not k.startswith(HEADS_PREFIX)}
    missing = sorted(set(expected) - set(got))
    extra = sorted(set(got) - set(expected))
    if missing or extra:
        what = (f"missing {missing[0]!r}" if missing else f"unexpected {extra[0][:60]!r}")
        raise CheckpointError(f"{path}: weights do not match its config ({what}; "
                              f"{len(missing)} missing, {len(extra)} unexpected)")
    for name, shape in expected.items():
        if got[name] != shape:
            raise CheckpointError(f"{path}: weights do not match its config ({name} has "
                                  f"shape {list(got[name])}, the network needs {list(shape)})")


def save_checkpoint(path: str | os.PathLike[str], model: LoevNet, *,
                    provenance: dict[str, Any] | None = None) -> Path:
    """Write ``model`` with its config as one ``.safetensors`` file (atomically)."""
    # torch-side imports stay inside the two functions that need them: this module's
    # header reader identifies a checkpoint for processes that never load torch.
    from safetensors.torch import save_file

    path = Path(path)
    cfg = model.cfg.to_dict()
    if provenance:
        cfg["provenance"] = {**cfg.get("provenance", {}), **provenance}
    tensors = {k: v.detach().float().cpu().contiguous() for k, v in model.state_dict().items()}
    meta = {"format": FORMAT, "loev_config": json.dumps(cfg), "loev_dims": json.dumps(model.embedding_dims)}
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata=meta)
    os.replace(tmp, path)
    return path


def load_checkpoint(path: str | os.PathLike[str], device: str = "cpu") -> tuple[LoevNet, ModelConfig]:
    """Rebuild the network a checkpoint describes and load its weights (no unpickling)."""
    from safetensors.torch import load_file

    from engine.model.network import build_model

    path = Path(path)
    info = read_checkpoint_info(path)
    cfg = info.model_config()
    _check_against_network(info, cfg)  # before a single weight is allocated
    model = build_model(cfg)
    try:
        state = {k: v for k, v in load_file(str(path), device=str(device)).items()
                 if not k.startswith(HEADS_PREFIX)}
        model.load_state_dict(state, strict=True)
    except (RuntimeError, OSError, ValueError, TypeError) as e:
        raise CheckpointError(f"{path}: weights do not load ({_one_line(e)})") from None
    return model.to(device).eval(), cfg


def save_with_heads(path: str | os.PathLike[str], source: str | os.PathLike[str],
                    heads: dict[str, Any], heads_meta: str) -> Path:
    """Write ``source``'s encoder with ``heads`` (``estimators.*`` float32 numpy arrays) and
    their ``loev_heads`` metadata as a new checkpoint, atomically.

    The encoder's data bytes are copied unchanged to the front of the new file and its
    header is recorded under ``loev_encoder``, so :func:`read_checkpoint_info` gives the
    new file ``source``'s model id. Heads ``source`` already had are replaced. numpy only.
    """
    import numpy as np

    path, source = Path(path), Path(source)
    info = read_checkpoint_info(source)
    h = _read_header(source)
    encoder = _encoder_header(source, h)
    if encoder is None:
        enc_text, enc_len = h.text, h.data_len
    else:
        enc_text, enc_len = encoder
    table: dict[str, Any] = {k: {"dtype": dt, "shape": list(shape), "data_offsets": list(h.offsets[k])}
                             for k, (dt, shape) in h.tensors.items() if not k.startswith(HEADS_PREFIX)}
    blobs, end = [], enc_len
    for name in sorted(heads):
        if not name.startswith(HEADS_PREFIX):
            raise ValueError(f"head tensor names start with {HEADS_PREFIX!r}, got {name!r}")
        a = np.ascontiguousarray(heads[name], dtype="<f4")
        table[name] = {"dtype": "F32", "shape": list(a.shape), "data_offsets": [end, end + a.nbytes]}
        blobs.append(a.tobytes())
        end += a.nbytes
    meta = {k: v for k, v in h.meta.items() if k not in ("loev_heads", ENCODER_KEY)}
    meta[ENCODER_KEY] = json.dumps({"id": info.model_id, "header": enc_text.decode("utf-8")})
    meta["loev_heads"] = heads_meta
    text = json.dumps({"__metadata__": meta, **table}, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)  # data starts 8-byte aligned, as safetensors writes it
    tmp = path.with_name(path.name + ".tmp")
    with open(source, "rb") as src, open(tmp, "wb") as out:
        src.seek(8 + len(h.text))
        out.write(struct.pack("<Q", len(text)))
        out.write(text)
        out.write(src.read(enc_len))
        for b in blobs:
            out.write(b)
    try:
        if read_checkpoint_info(tmp).model_id != info.model_id:
            raise CheckpointError(f"{path}: written with another model id than {source}")
    except CheckpointError:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)
    return path
