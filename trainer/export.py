"""``loev-train export``: the app's ``.safetensors`` checkpoint from a run's latest state.

``loev-train fit`` already writes ``RUN_DIR/model.safetensors`` at every checkpoint; this
command rebuilds it (or writes it elsewhere) from ``RUN_DIR/train_state.json``, e.g. for a
run that was stopped before its first export or to ship a copy under another name.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from engine.config import ModelConfig


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", help="a loev-train fit run folder")
    p.add_argument("--out", default=None, help="output file (default RUN_DIR/model.safetensors)")


def export(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Write the checkpoint of ``run_dir``'s latest training state; returns its path."""
    from engine.model.checkpoint import save_checkpoint
    from engine.model.network import build_model
    from trainer.fit import MODEL_FILE, FitOptions, _provenance, load_state, read_state

    run_dir = Path(run_dir)
    doc = read_state(run_dir)
    if doc is None:
        raise FileNotFoundError(f"{run_dir}: no training state (train_state.json) to export")
    cfg = ModelConfig.from_dict(doc["config"])
    model = build_model(cfg)
    step = load_state(run_dir, model)
    opts = FitOptions(**{k: v for k, v in doc["options"].items() if k in FitOptions.__dataclass_fields__})
    out = Path(out) if out else run_dir / MODEL_FILE
    if out.suffix != ".safetensors":
        raise ValueError(f"{out}: the app loads .safetensors checkpoints; name the file *.safetensors")
    tracks = int(doc.get("tracks", 0))
    return save_checkpoint(out, model.eval(),
                           provenance=_provenance(opts, step, tracks, int(doc.get("world", 1))))


def run(args: argparse.Namespace) -> int:
    path = export(args.run_dir, args.out)
    print(path)
    return 0
