"""Self-describing ``.safetensors`` checkpoints (DESIGN.md section 4).

The safetensors metadata holds the JSON ``ModelConfig`` under ``loev_config`` and the
subspace dimensions under ``loev_dims``, so the engine rebuilds the network without the
trainer, and reads a checkpoint's identity without importing torch. Loading never
unpickles: pickle-based files (``.pt``, ``.ckpt``...) are refused before they are opened.
"""
from __future__ import annotations

import hashlib
import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.config import ModelConfig
from engine.errors import CheckpointError

if TYPE_CHECKING:
    from engine.model.network import LoevNet

FORMAT = "loev-explorer/1"
PICKLE_SUFFIXES = frozenset({".pt", ".pth", ".ckpt", ".bin", ".pkl", ".pickle", ".tar"})
_MAX_HEADER = 100 * 1024 * 1024


@dataclass(frozen=True)
class CheckpointInfo:
    """What a checkpoint is, read from its header alone (no torch)."""

    path: Path
    model_id: str
    config: dict[str, Any]
    subspaces: tuple[str, ...]
    dims: dict[str, int]

    def model_config(self) -> ModelConfig:
        return ModelConfig.from_dict(self.config)


def _refuse_pickle(path: Path) -> None:
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise CheckpointError(
            f"{path}: refusing to load a pickle-based checkpoint ({path.suffix}); "
            "only .safetensors checkpoints are loaded (loev-train export writes one)")


def _read_header(path: Path) -> dict[str, Any]:
    _refuse_pickle(path)
    try:
        with open(path, "rb") as f:
            raw = f.read(8)
            if len(raw) < 8:
                raise CheckpointError(f"{path}: not a safetensors checkpoint (file too short)")
            (n,) = struct.unpack("<Q", raw)
            if n > min(_MAX_HEADER, os.fstat(f.fileno()).st_size - 8):
                raise CheckpointError(f"{path}: not a safetensors checkpoint (bad header length)")
            header = json.loads(f.read(n))
    except FileNotFoundError:
        raise CheckpointError(f"{path}: checkpoint not found") from None
    except IsADirectoryError:
        raise CheckpointError(f"{path}: is a directory, not a checkpoint") from None
    except PermissionError:
        raise CheckpointError(f"{path}: permission denied") from None
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise CheckpointError(f"{path}: not a safetensors checkpoint (unreadable header)") from None
    meta = header.get("__metadata__") or {}
    if "loev_config" not in meta:
        raise CheckpointError(f"{path}: safetensors file without a LOEV config in its metadata")
    return meta


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def read_checkpoint_info(path: str | os.PathLike[str]) -> CheckpointInfo:
    """Identity, config and subspace dimensions of a checkpoint, without importing torch."""
    path = Path(path)
    meta = _read_header(path)
    try:
        config = json.loads(meta["loev_config"])
        dims = {k: int(v) for k, v in json.loads(meta["loev_dims"]).items()}
        ModelConfig.from_dict(config)
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: malformed LOEV metadata ({e})") from None
    return CheckpointInfo(path=path, model_id=file_digest(path), config=config,
                          subspaces=tuple(dims), dims=dims)


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
    model = build_model(cfg)
    try:
        state = load_file(str(path), device=str(device))
        model.load_state_dict(state, strict=True)
    except (RuntimeError, OSError, ValueError) as e:
        raise CheckpointError(f"{path}: weights do not match its config ({str(e).splitlines()[0]})") from None
    return model.to(device).eval(), cfg
