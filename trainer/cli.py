"""``loev-train``: pretraining, evaluation, corpus rendering (DESIGN.md section 6).

Each subcommand lives in its own module exposing ``add_arguments(parser)`` and
``run(args) -> int``; this file only dispatches.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys

from engine.errors import LoevError

# name -> (module, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "describe": ("trainer.describe", "parameter count and subspace dimensions of a configuration"),
    "fit": ("trainer.fit", "pretrain a LOEV / LOEV++ model on a folder of audio (resumable)"),
    "export": ("trainer.export", "write the app's .safetensors from a run's latest training state"),
    "corpus": ("trainer.corpus", "render a labelled GM-soundfont corpus (key, tempo, family) offline"),
    "heads": ("trainer.heads", "train the key, tempo and type heads on a frozen checkpoint"),
    "projector": ("trainer.projector", "train the vibe space's timbre projector on a frozen checkpoint"),
    "eval": ("trainer.evaluate", "retrieval, probing, invariance curves and robustness on a labelled folder"),
    "level": ("trainer.level", "bring each chunk's peak to one level before a checkpoint's spectra"),
    "report": ("trainer.report", "regenerate docs/RESULTS.md from eval folders' metrics.json"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="loev-train", description="LOEV++ pretraining and evaluation")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module, help_text) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        mod = importlib.import_module(module)
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


class _Stderr(logging.StreamHandler):
    """Writes to the ``sys.stderr`` of the moment (one that was replaced since is not kept)."""

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:
        pass


def show_trainer_log() -> None:
    """The trainer's log lines from info up on stderr, beside the subcommands' own output
    (Python shows only warnings from a logger without a handler)."""
    logger = logging.getLogger("trainer")
    if not any(isinstance(h, _Stderr) for h in logger.handlers):
        handler = _Stderr()
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)


def main(argv: list[str] | None = None) -> int:
    show_trainer_log()
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except (LoevError, ValueError, FileNotFoundError) as e:
        print(f"loev-train: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("loev-train: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
