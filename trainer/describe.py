"""``loev-train describe``: parameter count and subspace dimensions of a configuration."""
from __future__ import annotations

import argparse
import json

from engine.config import METHODS, PROFILES, VARIANT_SETS, make_config


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--profile", default="tiny", choices=tuple(PROFILES))
    p.add_argument("--method", default="loev++", choices=METHODS)
    p.add_argument("--variants", default="psts",
                   help="variant augmentations: b, ps, ts, psts, or a comma list such as ps,ts")
    p.add_argument("--frontend", default="paper")
    p.add_argument("--json", action="store_true", help="print JSON")


def parse_variants(text: str) -> str:
    """Accept the paper's names (b, ps, ts, psts) or a comma list (``ps,ts``)."""
    key = text.replace(",", "").replace(" ", "").lower()
    if key == "tsps":
        key = "psts"
    if key not in VARIANT_SETS:
        raise ValueError(f"unknown variants {text!r}; expected b, ps, ts, psts or ps,ts")
    return key


def describe(profile: str, method: str, variants: str, frontend: str = "paper") -> dict:
    from engine.model.network import build_model, count_parameters

    cfg = make_config(profile, method, parse_variants(variants), frontend)
    net = build_model(cfg)
    return {
        "parameters": count_parameters(net),
        "subspaces": net.embedding_dims,
        "heads": list(cfg.heads),
        "profile": profile,
        "method": method,
        "variants": list(cfg.variants),
        "frontend": cfg.frontend.kind,
        "trunk_parameters": sum(p.numel() for n, p in net.named_parameters() if n.startswith("trunk.")),
        "branch_parameters": sum(p.numel() for n, p in net.named_parameters() if n.startswith("tails.")),
    }


def run(args: argparse.Namespace) -> int:
    d = describe(args.profile, args.method, args.variants, args.frontend)
    if args.json:
        print(json.dumps(d))
    else:
        print(f"{d['method']} ({d['profile']}, variants {','.join(d['variants']) or 'none'}): "
              f"{d['parameters'] / 1e6:.2f}M parameters")
        for name, dim in d["subspaces"].items():
            print(f"  subspace {name}: {dim}")
    return 0
