"""``loev-train fit``: LOEV / LOEV++ pretraining (paper Sections II-III, DESIGN.md section 3).

A small nanoGPT-style loop: Adam (lr 1e-4, constant or cosine with warmup), bf16 autocast
on CUDA, gradient clipping, a CSV log, a progress bar with the loss and views/s, DDP from
torchrun's environment variables (NCCL on GPUs, gloo on CPU) with one master process that
logs and saves.

Resume is exact: all randomness of step s (which tracks, chunks, augmentation parameters,
dropout) is derived from ``(seed, s, rank)`` (``trainer.data.derive_seed``), so the
training state only has to hold the weights, Adam's moments and the step. That state is
``RUN_DIR/train_state.safetensors`` (tensors) + ``RUN_DIR/train_state.json`` (the rest),
written atomically every ``--ckpt-every`` steps together with the app's checkpoint
``RUN_DIR/model.safetensors``. Rerunning the same command continues where it stopped.

With ``--recon-weight W`` (> 0) a decoder (``trainer.recon``) reconstructs each view's
spectrogram from the concatenated subspaces V^++ and its loss is added with weight W; the
decoder's weights and moments are part of the training state, not of the app's checkpoint.

With ``--labels`` the heads also take SemiSupCon label positives; ``--label-weighting
weighted`` gives the invariant head positives weighted by the overlap of the files' GM
program sets (the ``programs`` column) instead of same-family positives.

Methods: ``mule``, ``mule++``, ``loev``, ``loev++`` (``engine.config.METHODS``) and
``mule-mixup`` (a ``mule`` network trained with in-batch mixup as its only augmentation,
as MULE). In a data-parallel run each process contrasts the views of its own batch.
"""
from __future__ import annotations

import argparse
import csv
import functools
import json
import logging
import math
import os
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from engine.config import METHODS, PROFILES, make_config
from trainer.augment import BaseChain, apply_variants
from trainer.data import (TrackLabels, ViewConfig, ViewStream, build_index, derive_seed, group_weights,
                          load_labels, log_skipped, parse_mix, track_groups)
from trainer.describe import parse_variants
from trainer.objective import (combine_positives, contrastive_loss, drop_rows, head_masks, mixup,
                               positive_masks, supervised_masks)
from trainer.timbre import calibrate_timbre

TRAIN_METHODS = METHODS + ("mule-mixup",)
LABEL_WEIGHTINGS = ("binary", "weighted")
BRANCHES = ("learned", "structured")
SCHEDULES = ("constant", "cosine")
STATE_JSON = "train_state.json"
MODEL_FILE = "model.safetensors"
LOG_FILE = "log.csv"
SKIPPED_FILE = "skipped.csv"  # files left out of the run (unreadable), with the reason

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FitOptions:
    """Everything a run depends on; stored in the training state to guard resumes."""

    data: str
    out: str
    steps: int
    profile: str = "tiny"
    method: str = "loev++"
    variants: str = "psts"
    frontend: str = "paper"
    branches: str = "learned"
    batch_anchors: int = 8
    views: int = 4
    lr: float = 1e-4
    schedule: str = "constant"
    warmup: int = 0
    temperature: float = 0.1
    clip: float = 1.0
    device: str = "auto"
    ckpt_every: int = 100
    seed: int = 0
    workers: int = 1
    labels: str | None = None
    supervised_fraction: float = 1.0
    label_weighting: str = "binary"
    recon_weight: float = 0.0
    init: str | None = None
    progress: bool = True
    timbre_share: float = 0.0
    tempo_plain_share: float = 0.0
    peak_db: float | None = None
    mix: str | None = None

    # Options that change what step s computes: a resume must agree on them.
    RESUME_KEYS = ("profile", "method", "variants", "frontend", "branches", "batch_anchors", "views", "lr",
                   "schedule", "warmup", "temperature", "clip", "seed", "labels",
                   "supervised_fraction", "label_weighting", "recon_weight", "init",
                   "timbre_share", "tempo_plain_share", "peak_db", "mix")

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Refuse a run that cannot train, before any data is read or any file written.

        Raises
        ------
        ValueError
            One line naming the option (as its ``loev-train fit`` flag) and its bad value.
        """
        choices = {"method": TRAIN_METHODS, "profile": tuple(PROFILES), "branches": BRANCHES,
                   "schedule": SCHEDULES, "label_weighting": LABEL_WEIGHTINGS}
        for name, allowed in choices.items():
            value = getattr(self, name)
            if value not in allowed:
                raise ValueError(f"unknown {name.replace('_', ' ')} {value!r}; expected one of {allowed}")
        if self.method != "mule-mixup":  # mule-mixup trains without pitch or tempo views
            parse_variants(self.variants)
        # (flag, value, holds): the smallest values that still train
        bounds = (("--steps", self.steps, self.steps >= 0),
                  ("--batch-anchors", self.batch_anchors, self.batch_anchors >= 1),
                  ("--views", self.views, self.views >= 2),
                  ("--lr", self.lr, self.lr >= 0),
                  ("--warmup", self.warmup, self.warmup >= 0),
                  ("--temperature", self.temperature, self.temperature > 0),
                  ("--clip", self.clip, self.clip >= 0),
                  ("--ckpt-every", self.ckpt_every, self.ckpt_every >= 0),
                  ("--workers", self.workers, self.workers >= 0),
                  ("--supervised-fraction", self.supervised_fraction, 0.0 <= self.supervised_fraction <= 1.0),
                  ("--recon-weight", self.recon_weight, self.recon_weight >= 0),
                  ("--timbre-share", self.timbre_share, 0.0 <= self.timbre_share < 1.0),
                  ("--tempo-plain-share", self.tempo_plain_share, 0.0 <= self.tempo_plain_share < 1.0))
        for flag, value, holds in bounds:
            if not holds:  # also catches NaN, which fails every comparison
                raise ValueError(f"{flag} must be {_BOUND_TEXT[flag]}, got {value}")
        if self.peak_db is not None and not -60.0 <= self.peak_db <= 0.0:
            raise ValueError(f"--peak-db must be within [-60, 0], got {self.peak_db}")
        if self.mix is not None:
            parse_mix(self.mix)


_BOUND_TEXT = {"--steps": ">= 0", "--batch-anchors": ">= 1", "--views": ">= 2 (views are contrasted in pairs)",
               "--lr": ">= 0", "--warmup": ">= 0", "--temperature": "> 0", "--clip": ">= 0 (0: off)",
               "--ckpt-every": ">= 0 (0: at the end)", "--workers": ">= 0",
               "--supervised-fraction": "within [0, 1]", "--recon-weight": ">= 0",
               "--timbre-share": "within [0, 1)", "--tempo-plain-share": "within [0, 1)"}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--profile", default="tiny", choices=tuple(PROFILES))
    p.add_argument("--method", default="loev++", choices=TRAIN_METHODS)
    p.add_argument("--variants", default="psts", help="b, ps, ts, psts (or ps,ts)")
    p.add_argument("--frontend", default="paper")
    p.add_argument("--branches", default="learned", choices=BRANCHES,
                   help="structured: pitch and tempo subspaces from engine/model/branches.py")
    p.add_argument("--data", required=True, help="folder of audio (searched recursively)")
    p.add_argument("--steps", type=int, required=True, help="total optimiser steps of the run")
    p.add_argument("--out", required=True, help="run folder; rerunning with it resumes")
    p.add_argument("--batch-anchors", type=int, default=8, help="anchors per step (x views)")
    p.add_argument("--views", type=int, default=4, help="views per anchor (paper: M = 4)")
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--schedule", default="constant", choices=SCHEDULES)
    p.add_argument("--warmup", type=int, default=0, help="linear warmup steps")
    p.add_argument("--temperature", type=float, default=0.1)
    p.add_argument("--clip", type=float, default=1.0, help="gradient-norm clipping (0: off)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    p.add_argument("--ckpt-every", type=int, default=100, help="save state every N steps (0: at the end)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=1, help="data-loader processes per rank")
    p.add_argument("--labels", default=None,
                   help="labels.csv for SemiSupCon label positives (or a folder: every labels.csv under it)")
    p.add_argument("--supervised-fraction", type=float, default=1.0,
                   help="fraction of tracks whose labels are used (SemiSupCon)")
    p.add_argument("--label-weighting", default="binary", choices=LABEL_WEIGHTINGS,
                   help="weighted: the invariant head's label positives are weighted by the "
                        "overlap of the files' GM program sets (SemiSupCon's weighted variant)")
    p.add_argument("--recon-weight", type=float, default=0.0,
                   help="weight of the spectrogram reconstruction loss from V^++ (0: off)")
    p.add_argument("--init", default=None,
                   help="start from this checkpoint's weights (same model config, or one that differs only "
                        "in the shares below: the tensors of matching shape are loaded): fine-tuning")
    p.add_argument("--timbre-share", type=float, default=None,
                   help="share of the vibe (invariant) space given to a parameter-free timbre descriptor "
                        "(calibrated on the training data before the first step; 0: none; default: "
                        "the --init checkpoint's, else 0)")
    p.add_argument("--tempo-plain-share", type=float, default=None,
                   help="share of the structured tempo space kept by its parameter-free autocorrelation "
                        "(default: the --init checkpoint's, else 0)")
    p.add_argument("--peak-db", type=float, default=None,
                   help="bring each chunk's peak to this level (dBFS) before its spectra, so that a "
                        "file's level is not in its embedding (default: the --init checkpoint's, else off)")
    p.add_argument("--mix", default=None,
                   help="anchor shares by labelled group, e.g. songs=0.4,oneshots=0.4,loops=0.2 "
                        "(needs --labels; default: every file alike)")
    p.add_argument("--no-progress", dest="progress", action="store_false")


def run(args: argparse.Namespace) -> int:
    import signal

    values = {k: getattr(args, k) for k in FitOptions.__dataclass_fields__ if hasattr(args, k)}
    values.update(inherited_settings(values))
    opts = FitOptions(**values)

    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt  # fit() saves the finished steps before leaving

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        fit(opts)
    finally:
        signal.signal(signal.SIGTERM, previous)
    return 0


# --- distributed ----------------------------------------------------------------------

@dataclass(frozen=True)
class Dist:
    rank: int
    world: int
    device: torch.device

    @property
    def master(self) -> bool:
        return self.rank == 0


def setup_distributed(device: str) -> Dist:
    """Read torchrun's RANK / WORLD_SIZE / LOCAL_RANK; NCCL on GPUs, gloo on CPU."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    dev = torch.device(device)
    if world > 1:
        import torch.distributed as dist

        local = int(os.environ.get("LOCAL_RANK", "0"))
        if dev.type == "cuda":
            dev = torch.device("cuda", local)
            torch.cuda.set_device(dev)
        if not dist.is_initialized():
            dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
        if dev.type == "cpu":
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    return Dist(rank, world, dev)


def _barrier(d: Dist) -> None:
    if d.world > 1:
        torch.distributed.barrier()


# --- schedule and state ---------------------------------------------------------------

def lr_at(step: int, opts: FitOptions) -> float:
    """Linear warmup, then constant or cosine decay to 0 at ``opts.steps``."""
    if opts.warmup > 0 and step < opts.warmup:
        return opts.lr * (step + 1) / opts.warmup
    if opts.schedule == "cosine":
        span = max(1, opts.steps - opts.warmup)
        return opts.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, (step - opts.warmup) / span)))
    return opts.lr


def save_state(run_dir: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
               step: int, meta: dict[str, Any], decoder: torch.nn.Module | None = None) -> None:
    """Weights (+ the decoder's) + Adam moments as safetensors, step and options as JSON (no pickle)."""
    from safetensors.torch import save_file

    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    if decoder is not None:
        tensors.update({f"decoder.{k}": v.detach().cpu().contiguous()
                        for k, v in decoder.state_dict().items()})
    osd = optimizer.state_dict()
    for pid, st in osd["state"].items():
        for name, v in st.items():
            tensors[f"optim.{pid}.{name}"] = torch.as_tensor(v).detach().cpu().contiguous()
    name = f"train_state-{step:08d}.safetensors"
    save_file(tensors, str(run_dir / (name + ".tmp")))
    os.replace(run_dir / (name + ".tmp"), run_dir / name)
    doc = {"step": step, "tensors": name, "param_groups": osd["param_groups"], **meta}
    tmp = run_dir / (STATE_JSON + ".tmp")
    tmp.write_text(json.dumps(doc, indent=1))
    os.replace(tmp, run_dir / STATE_JSON)
    for old in run_dir.glob("train_state-*.safetensors"):
        if old.name != name:
            old.unlink(missing_ok=True)


def read_state(run_dir: Path) -> dict[str, Any] | None:
    path = Path(run_dir) / STATE_JSON
    return json.loads(path.read_text()) if path.is_file() else None


def load_state(run_dir: Path, model: torch.nn.Module,
               optimizer: torch.optim.Optimizer | None = None,
               decoder: torch.nn.Module | None = None) -> int:
    """Restore weights (the decoder's, and Adam) from the latest state; returns its step."""
    from safetensors.torch import load_file

    doc = read_state(run_dir)
    if doc is None:
        raise FileNotFoundError(f"{run_dir}: no {STATE_JSON} (not a training run folder?)")
    tensors = load_file(str(Path(run_dir) / doc["tensors"]))
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    if decoder is not None:
        decoder.load_state_dict({k[8:]: v for k, v in tensors.items() if k.startswith("decoder.")})
    if optimizer is not None:
        state: dict[int, dict[str, torch.Tensor]] = {}
        for k, v in tensors.items():
            if k.startswith("optim."):
                _, pid, name = k.split(".", 2)
                state.setdefault(int(pid), {})[name] = v
        optimizer.load_state_dict({"state": state, "param_groups": doc["param_groups"]})
    return int(doc["step"])


# --- one step -------------------------------------------------------------------------

class Views:
    """Batch of source audio -> augmented views and tracking vectors, on the device."""

    def __init__(self, vcfg: ViewConfig, variants: tuple[str, ...], *, device: torch.device) -> None:
        self.vcfg, self.variants, self.device = vcfg, variants, device
        self.chain = BaseChain(sr=vcfg.sr)

    def __call__(self, batch: dict[str, torch.Tensor], generator: torch.Generator
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        b = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
        y = apply_variants(b["source"], semitones=b["semitones"], rate=b["rate"],
                           pitch_applied=b["pitch_applied"], stretch_applied=b["stretch_applied"],
                           chunk_samples=self.vcfg.chunk_samples, sr=self.vcfg.sr)
        if self.vcfg.base_augment:
            y = self.chain(y, generator)
        if self.vcfg.mixup:
            y = mixup(y, generator=generator)
        flags = {"pitch": b["pitch_applied"], "tempo": b["stretch_applied"]}
        applied = torch.stack([flags[v] for v in self.variants], dim=1) if self.variants else \
            torch.zeros(y.shape[0], 0, dtype=torch.bool, device=self.device)
        return y, applied


def step_masks(method: str, heads: tuple[str, ...], variants: tuple[str, ...],
               batch: dict[str, torch.Tensor], applied: torch.Tensor,
               labels: TrackLabels | None, device: torch.device,
               weighting: str = "binary") -> dict[str, torch.Tensor]:
    """Each head's positives: its self-supervised mask, OR label positives (SemiSupCon).

    With ``weighting="weighted"`` the invariant head's label positives are the program-set
    weights (:func:`trainer.objective.weighted_label_positives`), merged with the
    self-supervised mask by elementwise max (a float mask); the other heads' labels are
    single-valued, where weighted and binary agree. Tracks labelled "no tempo" are tempo
    positives of one another; tracks labelled "no key" (drums) have no pitch-head positive,
    so the pitch space is not asked to tell one drum from another.
    """
    anchor = batch["anchor"].to(device)
    masks = head_masks(method, heads, variants, positive_masks(anchor, applied))
    if labels is not None:
        track = batch["track"].numpy()
        sup = supervised_masks(
            heads, family=torch.as_tensor(labels.family[track], device=device),
            key=torch.as_tensor(labels.key[track], device=device),
            tempo=torch.as_tensor(labels.tempo[track], device=device),
            semitones=batch["semitones"].to(device), rate=batch["rate"].to(device),
            programs=torch.as_tensor(labels.programs[track], device=device)
            if weighting == "weighted" else None,
            no_tempo=torch.as_tensor(labels.no_tempo[track], device=device))
        masks = {h: combine_positives(m, sup[h]) if h in sup else m for h, m in masks.items()}
        if "pitch" in masks and method.startswith("loev"):
            masks["pitch"] = drop_rows(masks["pitch"], torch.as_tensor(labels.no_key[track], device=device))
    return masks


# --- the loop -------------------------------------------------------------------------

def _config(opts: FitOptions):
    variants = "b" if opts.method == "mule-mixup" else parse_variants(opts.variants)
    method = "mule" if opts.method == "mule-mixup" else opts.method
    return make_config(opts.profile, method, variants, opts.frontend, opts.branches,
                       timbre_share=opts.timbre_share, tempo_plain_share=opts.tempo_plain_share,
                       peak_db=opts.peak_db)


def _view_config(opts: FitOptions, variants: tuple[str, ...]) -> ViewConfig:
    mix = opts.method == "mule-mixup"
    return ViewConfig(anchors=opts.batch_anchors, views=opts.views,
                      pitch="pitch" in variants, tempo="tempo" in variants,
                      semitone_grid=opts.labels is not None,
                      base_augment=not mix, mixup=mix)


def _check_resume(doc: dict[str, Any], opts: FitOptions) -> None:
    old = doc.get("options", {})
    diff = {k: (old.get(k), getattr(opts, k)) for k in FitOptions.RESUME_KEYS
            if k in old and old.get(k) != getattr(opts, k)}
    if diff:
        raise ValueError(f"{opts.out} holds a run with other settings {diff}; "
                         "use another --out or the same settings to resume")


def _open_log(path: Path, heads: tuple[str, ...], start_step: int) -> tuple[Any, Any]:
    """CSV log; on resume, rows after the resumed step are dropped (they will be redone).

    ``heads`` names the per-term loss columns (the contrastive heads, and ``recon``)."""
    fields = ["step", "loss"] + [f"loss_{h}" for h in heads] + ["views_per_s", "lr"]
    rows = []
    if path.is_file():
        with open(path, newline="") as f:
            rows = [r for r in csv.DictReader(f) if int(r["step"]) <= start_step]
    f = open(path, "w", newline="")
    writer = csv.DictWriter(f, fieldnames=fields)
    writer.writeheader()
    writer.writerows(rows)
    return f, writer


def _provenance(opts: FitOptions, step: int, n_tracks: int, world: int) -> dict[str, Any]:
    return {"trainer": "loev-train fit", "method": opts.method, "steps": step,
            "data": str(Path(opts.data).resolve()), "tracks": n_tracks, "seed": opts.seed,
            "batch_views": opts.batch_anchors * opts.views * world, "lr": opts.lr,
            "schedule": opts.schedule, "labels": opts.labels,
            "supervised_fraction": opts.supervised_fraction if opts.labels else 0.0,
            "label_weighting": opts.label_weighting,
            "recon_weight": opts.recon_weight,
            **({"init": str(opts.init), "init_steps": _init_steps(opts.init)} if opts.init else {})}


@functools.lru_cache(maxsize=8)
def _init_steps(path: str) -> int | None:
    """Optimiser steps behind an ``--init`` checkpoint (its own provenance, chained).

    Read once per run (cached): every checkpoint's provenance repeats it. None when the
    file is gone (a resumed run whose initial checkpoint was since removed)."""
    from engine.model.checkpoint import read_checkpoint_info
    from engine.errors import LoevError

    try:
        prov = read_checkpoint_info(path).config.get("provenance") or {}
    except (LoevError, OSError):
        return None
    steps = prov.get("steps")
    return None if steps is None else int(steps) + int(prov.get("init_steps") or 0)


# Parameter-free settings a fine-tune keeps from its --init checkpoint unless given: option
# -> (where in the checkpoint's config, the value without one).
INHERITED = {"timbre_share": (("timbre_share",), 0.0), "tempo_plain_share": (("tempo_plain_share",), 0.0),
             "peak_db": (("frontend", "peak_db"), None)}


def inherited_settings(values: dict[str, Any]) -> dict[str, Any]:
    """The options of :data:`INHERITED` in ``values`` (run options; None: not given), a
    missing one taken from the run folder's saved options when it resumes, else from the
    ``--init`` checkpoint's config (read from its header), else its default."""
    missing = [k for k in INHERITED if values.get(k) is None]
    out = {k: values[k] for k in INHERITED if k not in missing}
    doc = read_state(Path(values["out"])) if missing and values.get("out") else None
    if doc is not None:  # a resume: the run's own settings
        return {**out, **{k: doc.get("options", {}).get(k, INHERITED[k][1]) for k in missing}}
    theirs: dict[str, Any] = {}
    if missing and values.get("init"):
        from engine.model.checkpoint import read_checkpoint_info

        theirs = read_checkpoint_info(values["init"]).config
    for k in missing:
        path, default = INHERITED[k]
        where = theirs
        for key in path[:-1]:
            where = where.get(key, {})
        out[k] = where.get(path[-1], default)
    taken = [f"--{k.replace('_', '-')} {out[k]:g}" for k in missing if out[k]]
    if taken:
        log.info("--init %s: %s taken from it", values["init"], ", ".join(taken))
    return out


# Config fields a fine-tune may change from its --init checkpoint: they add parameter-free
# parts or projectors, so every learned tensor of matching shape carries over. Projectors
# are not carried (the run's config has none): train them again on the result with
# ``loev-train projector``.
INIT_MAY_DIFFER = ("timbre_share", "timbre_learned_share", "tempo_plain_share", "tempo_learned_share",
                   "pitch_learned_share", "tempo_projector_onsets", "tempo_projector_tempogram",
                   "tempo_projector_posterior")


def _leading(theirs: torch.Tensor, mine: torch.Tensor) -> torch.Tensor:
    """A projection head's first weight read over a space with a projector, cut to the
    columns of this run's space: a projector's dimensions come last in its space."""
    if theirs.dim() == 2 and theirs.shape[0] == mine.shape[0] and theirs.shape[1] > mine.shape[1]:
        return theirs[:, :mine.shape[1]]
    return theirs


def init_weights(model: torch.nn.Module, path: str, cfg) -> list[str]:
    """Load an app checkpoint's weights into a fresh run's model; the configs must agree
    except in ``INIT_MAY_DIFFER``. Returns the names of the tensors left as initialised
    (those the checkpoint lacks or holds in another shape)."""
    from engine.model.checkpoint import load_checkpoint

    source, scfg = load_checkpoint(path)
    mine, theirs = cfg.to_dict(), scfg.to_dict()
    for d in (mine, theirs):
        for k in ("provenance",) + INIT_MAY_DIFFER:
            d.pop(k, None)
        d["frontend"].pop("peak_db", None)  # parameter-free, as the shares
    if mine != theirs:
        diff = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))
        raise ValueError(f"--init {path}: its model differs from this run's in {diff}")
    own = model.state_dict()
    state = {k: _leading(v, own[k]) if k.startswith("heads.") else v
             for k, v in source.state_dict().items() if k in own}
    state = {k: v for k, v in state.items() if own[k].shape == v.shape}
    model.load_state_dict(state, strict=False)
    fresh = sorted(set(own) - set(state))
    if fresh:
        log.info("--init %s: %d tensors left as initialised: %s", path, len(fresh), ", ".join(fresh))
    from trainer.projector import SPACES

    dropped = [space for space, (_, attr) in SPACES.items()
               if getattr(source, attr, None) is not None and getattr(model, attr, None) is None]
    if dropped:
        plural = len(dropped) > 1
        log.info("--init %s: its %s projector%s not carried: train %s again on the result with "
                 "loev-train projector", path, ", ".join(dropped), "s are" if plural else " is",
                 "them" if plural else "it")
    return fresh


def fit(opts: FitOptions) -> dict[str, Any]:
    """Train (or resume) a run; returns ``{"step", "losses"}`` of the steps run here."""
    d = setup_distributed(opts.device)
    cfg = _config(opts)
    vcfg = _view_config(opts, cfg.variants)
    run_dir = Path(opts.out)
    run_dir.mkdir(parents=True, exist_ok=True)
    tracks, labels = _load_data(opts, run_dir, d)
    trainee = _build(opts, cfg, d)
    doc = read_state(run_dir)
    start = _restore(run_dir, doc, opts, cfg, trainee, tracks)
    net = _distribute(trainee.module, d)
    meta = {"options": asdict(opts), "config": cfg.to_dict(), "world": d.world, "tracks": len(tracks)}
    save = functools.partial(_checkpoint, run_dir, trainee, meta=meta, opts=opts, n_tracks=len(tracks), d=d)
    log_ = _StepLog(run_dir / LOG_FILE, trainee.terms(cfg), start, total=opts.steps,
                    enabled=d.master, bar=opts.progress)
    step, losses = start, []
    trainee.model.train()
    try:
        for step, loss in _steps(_loader(tracks, vcfg, opts, d, start), net, trainee.optimizer,
                                 Views(vcfg, cfg.variants, device=d.device), cfg, opts, labels, d, log_):
            losses.append(loss)
            if opts.ckpt_every > 0 and step % opts.ckpt_every == 0 and step < opts.steps:
                save(step)
        if step > start or doc is None:
            save(step)
    except KeyboardInterrupt:
        save(step)  # keep the finished steps; rerunning resumes from here
        raise
    finally:
        log_.close()
        if d.world > 1:
            torch.distributed.barrier()
            torch.distributed.destroy_process_group()
    return {"step": step, "losses": losses}


# --- building a run -------------------------------------------------------------------

def _load_data(opts: FitOptions, run_dir: Path, d: Dist) -> tuple[list[Any], TrackLabels | None]:
    """The audio index (built by the master, then read from its cache by the others) and the labels."""
    if d.master:
        unreadable: list[tuple[str, str]] = []
        tracks = build_index(opts.data, cache_path=run_dir / "data_index.json", skipped=unreadable)
        log_skipped(run_dir / SKIPPED_FILE, unreadable)
    _barrier(d)
    if not d.master:
        tracks = build_index(opts.data, cache_path=run_dir / "data_index.json")
    labels = load_labels(opts.labels, tracks, fraction=opts.supervised_fraction,
                         seed=opts.seed) if opts.labels else None
    if labels is not None and opts.label_weighting == "weighted" and not labels.programs.any():
        log.warning("--label-weighting weighted: %s has no programs, so the invariant head "
                    "gets no label positives", opts.labels)
    return tracks, labels


@dataclass
class Trainee:
    """What the optimiser trains: the model, the reconstruction decoder if any, and the optimiser."""

    model: torch.nn.Module
    decoder: torch.nn.Module | None
    module: torch.nn.Module  # the model, or model + decoder (trainer.recon.WithDecoder)
    optimizer: torch.optim.Optimizer

    def terms(self, cfg) -> tuple[str, ...]:
        """Names of the loss terms: one per contrastive head, and ``recon``."""
        return cfg.heads + (("recon",) if self.decoder is not None else ())


def _build(opts: FitOptions, cfg, d: Dist) -> Trainee:
    from engine.model.network import build_model

    torch.manual_seed(opts.seed)
    model = build_model(cfg).to(d.device)
    decoder = None
    module: torch.nn.Module = model
    if opts.recon_weight > 0:
        from trainer.recon import SpectrogramDecoder, WithDecoder

        decoder = SpectrogramDecoder(sum(model.embedding_dims.values())).to(d.device)
        module = WithDecoder(model, decoder)
    return Trainee(model, decoder, module, torch.optim.Adam(module.parameters(), lr=opts.lr))


def _restore(run_dir: Path, doc: dict[str, Any] | None, opts: FitOptions, cfg, trainee: Trainee,
             tracks: list[Any]) -> int:
    """Resume from the run's state (same settings only), or start from ``--init``; returns the first step."""
    if doc is not None:
        _check_resume(doc, opts)
        return load_state(run_dir, trainee.model, trainee.optimizer, trainee.decoder)
    fresh = init_weights(trainee.model, opts.init, cfg) if opts.init else ["timbre.loc"]
    # The descriptor's statistics come from the training data, unless --init brought some.
    if "timbre.loc" in fresh and calibrate_timbre(trainee.model, tracks, seed=opts.seed):
        log.info("timbre descriptor calibrated on training chunks")
    return 0


def _distribute(module: torch.nn.Module, d: Dist) -> torch.nn.Module:
    """``module`` wrapped in DistributedDataParallel in a data-parallel run, else itself."""
    if d.world == 1:
        return module
    from torch.nn.parallel import DistributedDataParallel as DDP

    return DDP(module, device_ids=[d.device.index] if d.device.type == "cuda" else None)


def _loader(tracks: list[Any], vcfg: ViewConfig, opts: FitOptions, d: Dist,
            start: int) -> torch.utils.data.DataLoader:
    """Batches of steps ``start`` .. ``opts.steps - 1`` of this rank (each batch knows its step)."""
    weights = None
    if opts.mix:
        if not opts.labels:
            raise ValueError("--mix needs --labels (the groups are read from its type column)")
        weights = group_weights(track_groups(opts.labels, tracks), parse_mix(opts.mix))
    stream = ViewStream(tracks, vcfg, seed=opts.seed, rank=d.rank, start_step=start, stop_step=opts.steps,
                        skip_log=Path(opts.out) / SKIPPED_FILE, weights=weights)
    return torch.utils.data.DataLoader(stream, batch_size=None, num_workers=opts.workers,
                                       pin_memory=d.device.type == "cuda", persistent_workers=False)


# --- the loop -------------------------------------------------------------------------

def _steps(loader: torch.utils.data.DataLoader, net: torch.nn.Module, optimizer: torch.optim.Optimizer,
           views: Views, cfg, opts: FitOptions, labels: TrackLabels | None, d: Dist,
           log_: _StepLog) -> Iterator[tuple[int, float]]:
    """Run the loader's steps, logging each; yields (steps done, loss) after each one."""
    t_last = time.perf_counter()
    for batch in loader:
        step = int(batch["step"])
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, opts)
        loss, per_head = train_step(net, optimizer, views, batch, cfg, opts, labels, d, step)
        now = time.perf_counter()
        vps = views.vcfg.batch_views * d.world / max(now - t_last, 1e-9)
        t_last = now
        log_.row(step + 1, loss, per_head, views_per_s=vps, lr=lr_at(step, opts))
        yield step + 1, loss


def _checkpoint(run_dir: Path, trainee: Trainee, at: int, *, meta: dict[str, Any], opts: FitOptions,
                n_tracks: int, d: Dist) -> None:
    """The training state and the app's checkpoint after ``at`` steps (the master writes both)."""
    from engine.model.checkpoint import save_checkpoint

    if d.master:
        save_state(run_dir, trainee.model, trainee.optimizer, at, meta, trainee.decoder)
        save_checkpoint(run_dir / MODEL_FILE, trainee.model, provenance=_provenance(opts, at, n_tracks, d.world))


class _StepLog:
    """The CSV log and the progress bar of the master process (nothing on the others)."""

    def __init__(self, path: Path, terms: tuple[str, ...], start: int, *, total: int, enabled: bool,
                 bar: bool) -> None:
        self.file, self.writer = _open_log(path, terms, start) if enabled else (None, None)
        self.bar = _progress(enabled and bar, start, total)

    def row(self, step: int, loss: float, per_head: dict[str, float], *, views_per_s: float, lr: float) -> None:
        if self.writer is None:
            return
        self.writer.writerow({"step": step, "loss": f"{loss:.6f}", "views_per_s": f"{views_per_s:.1f}",
                              "lr": f"{lr:.3e}", **{f"loss_{h}": f"{v:.6f}" for h, v in per_head.items()}})
        self.file.flush()
        self.bar.update(1)
        self.bar.set_postfix(loss=f"{loss:.3f}", views_s=f"{views_per_s:.0f}")

    def close(self) -> None:
        self.bar.close()
        if self.file is not None:
            self.file.close()


def train_step(net: torch.nn.Module, optimizer: torch.optim.Optimizer, views: Views,
               batch: dict[str, torch.Tensor], cfg, opts: FitOptions, labels: TrackLabels | None,
               d: Dist, step: int) -> tuple[float, dict[str, float]]:
    """Augment, forward, NT-Xent over the heads (+ W x reconstruction), backward, clip, Adam."""
    seed = derive_seed(opts.seed, step, d.rank, stream=1)
    gen = torch.Generator(device=d.device)
    gen.manual_seed(seed)
    torch.manual_seed(derive_seed(opts.seed, step, d.rank, stream=2))  # dropout, drop-path
    with torch.no_grad():
        y, applied = views(batch, gen)
    masks = step_masks(cfg.method, cfg.heads, cfg.variants, batch, applied, labels, d.device,
                       opts.label_weighting)
    with torch.autocast(device_type=d.device.type, dtype=torch.bfloat16,
                        enabled=d.device.type == "cuda"):
        out = net(y)
    loss, per_head = contrastive_loss({h: z.float() for h, z in out["projections"].items()},
                                      masks, temperature=opts.temperature)
    if "reconstruction" in out:
        from trainer.recon import recon_loss

        rec = recon_loss(out["reconstruction"], out["target"])
        loss = loss + opts.recon_weight * rec
        per_head = {**per_head, "recon": float(rec.detach())}
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if opts.clip > 0:
        torch.nn.utils.clip_grad_norm_(net.parameters(), opts.clip)
    optimizer.step()
    value = loss.detach()
    if d.world > 1:
        value = value.clone()
        torch.distributed.all_reduce(value)
        value /= d.world
    return float(value), per_head


class _NoBar:
    def update(self, n: int) -> None: ...
    def set_postfix(self, **kw: Any) -> None: ...
    def close(self) -> None: ...


def _progress(enabled: bool, start: int, total: int):
    if not enabled:
        return _NoBar()
    from tqdm import tqdm

    return tqdm(total=total, initial=start, unit="step", dynamic_ncols=True)

