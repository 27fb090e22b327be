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


@dataclass(frozen=True)
class CheckpointInfo:
    """What a checkpoint is, read from its header alone (no torch)."""

    path: Path
    model_id: str
    config: dict[str, Any]
    subspaces: tuple[str, ...]
    dims: dict[str, int]
    tensors: dict[str, tuple[str, tuple[int, ...]]] = field(default_factory=dict, compare=False)

    def model_config(self) -> ModelConfig:
        return ModelConfig.from_dict(self.config)


def _refuse_pickle(path: Path) -> None:
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise CheckpointError(
            f"{path}: refusing to load a pickle-based checkpoint ({path.suffix}); "
            "only .safetensors checkpoints are loaded (loev-train export writes one)")


def _read_header(path: Path) -> tuple[dict[str, str], dict[str, tuple[str, tuple[int, ...]]]]:
    """The metadata and the tensor table (name -> dtype, shape) of a checked header."""
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
        header = json.loads(text)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: checkpoint not found") from None
    except IsADirectoryError:
        raise CheckpointError(f"{path}: is a directory, not a checkpoint") from None
    except PermissionError:
        raise CheckpointError(f"{path}: permission denied") from None
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read ({e.strerror or e})") from None
    except (UnicodeDecodeError, ValueError):
        raise CheckpointError(f"{path}: not a safetensors checkpoint (unreadable header)") from None
    except RecursionError:
        raise CheckpointError(f"{path}: not a safetensors checkpoint (header nested too "
                              "deeply)") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: not a safetensors checkpoint (header is a JSON "
                              f"{type(header).__name__}, not an object)")
    meta = header.pop("__metadata__", None)
    if not isinstance(meta, dict) or "loev_config" not in meta:
        raise CheckpointError(f"{path}: safetensors file without a LOEV config in its metadata")
    bad = [k for k, v in meta.items() if not isinstance(v, str)]
    if bad:
        raise CheckpointError(f"{path}: malformed metadata ({str(bad[0])[:40]!r} is not a "
                              "string; safetensors metadata maps strings to strings)")
    return meta, _check_tensors(path, header, size - 8 - n)


def _check_tensors(path: Path, header: dict[str, Any], data_len: int
                   ) -> dict[str, tuple[str, tuple[int, ...]]]:
    """Each tensor's dtype, shape and byte range, and that the ranges tile the data."""
    def bad(name: str, reason: str) -> CheckpointError:
        return CheckpointError(f"{path}: malformed tensor {name[:60]!r} ({reason})")

    tensors: dict[str, tuple[str, tuple[int, ...]]] = {}
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
        spans.append((offsets[0], offsets[1], name))
    end = 0
    for start, stop, name in sorted(spans):
        if start != end:
            raise bad(name, "its bytes overlap another tensor's or leave a gap")
        end = stop
    if end != data_len:
        raise CheckpointError(f"{path}: malformed checkpoint (tensors cover {end} of its "
                              f"{data_len} data bytes)")
    return tensors


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def read_checkpoint_info(path: str | os.PathLike[str]) -> CheckpointInfo:
    """Identity, config and subspace dimensions of a checkpoint, without importing torch."""
    path = Path(path)
    meta, tensors = _read_header(path)
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
    return CheckpointInfo(path=path, model_id=file_digest(path), config=config,
                          subspaces=tuple(dims), dims=dims, tensors=tensors)


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
    got = {k: shape for k, (_dtype, shape) in info.tensors.items()}
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
        state = load_file(str(path), device=str(device))
        model.load_state_dict(state, strict=True)
    except (RuntimeError, OSError, ValueError, TypeError) as e:
        raise CheckpointError(f"{path}: weights do not load ({_one_line(e)})") from None
    return model.to(device).eval(), cfg
