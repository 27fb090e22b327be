"""``loev-train level``: the input level a checkpoint brings each chunk to.

A checkpoint's frontend may bring every 3 s chunk's peak to one level (``peak_db``, dBFS)
before its spectra, so that how loud a file is does not move its embedding: a sample
folder mixes files normalised to 0 dBFS with ones 30 dB quieter. This command writes a
copy of a checkpoint with that setting and every tensor as it was (the setting has no
parameters); the heads are left out, since they were trained on the old embeddings:
run ``loev-train heads`` on the result. ``loev-train fit --peak-db`` sets it for a new run.
"""
from __future__ import annotations

import argparse
import dataclasses

from engine.config import check_config_dict


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", help="a .safetensors checkpoint")
    p.add_argument("--peak-db", type=float, required=True,
                   help="each chunk's peak is brought to this level, dBFS, within [-60, 0] (raised by "
                        "40 dB at most); the rendered corpora's median peak is about -6")
    p.add_argument("--out", required=True, help="the new checkpoint (.safetensors)")


def run(args: argparse.Namespace) -> int:
    from engine.model.checkpoint import load_checkpoint, read_checkpoint_info, save_checkpoint
    from engine.model.network import build_model

    info = read_checkpoint_info(args.checkpoint)  # the header alone: the level is checked before any weight loads
    cfg = info.model_config()
    new_cfg = dataclasses.replace(cfg, frontend=dataclasses.replace(cfg.frontend, peak_db=args.peak_db),
                                  provenance={})
    try:
        check_config_dict(new_cfg.to_dict())  # as a file's config is checked
    except ValueError as e:
        raise ValueError(f"--peak-db: {e}") from None
    source, _ = load_checkpoint(args.checkpoint)
    model = build_model(new_cfg)
    model.load_state_dict(source.state_dict(), strict=True)
    out = save_checkpoint(args.out, model.eval(), provenance={
        "trainer": "loev-train level", "source": info.model_id, "source_provenance": cfg.provenance,
        "peak_db": args.peak_db})
    print(f"wrote {out} (model {read_checkpoint_info(out).model_id}, input peak {args.peak_db:g} dBFS, "
          f"no heads: run loev-train heads on it)")
    return 0
