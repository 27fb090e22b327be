"""``loev-train projector``: train a projector for the vibe, the tempo or the key space on a frozen
checkpoint.

Vibe (the default): the projector (:class:`engine.model.branches.TimbreProjector`) is a
small MLP over pooled log-mel statistics of each chunk, trained with a cosine-softmax over
labels of the rendered training corpora: the sound type of one-shots and loops (DESIGN
section 8), the GM family of songs. Augmentation: a random transposition of the log-mel (up
to a tritone either way: the type must not depend on the note) and a gain; the two
transpositions of a chunk are pulled together.

Tempo (``--space tempo``): the projector (:class:`engine.model.branches.TempoProjector`) is
a small MLP over the tempo branch's output and the branch's parameter-free onset
periodicity at finer, shorter lags (unless ``--no-onsets``) and onset tempogram (unless
``--no-tempogram``), trained with a cosine-softmax over the heads' log-spaced BPM bins and
"no tempo", on songs and loops, time-stretched copies of them and one-shots. Unless
``--no-posterior`` the projector keeps the softmax's class centres and its output is the
posterior over the bins, embedded by their closeness (a Gaussian two bins wide).

Key (``--space key``): the projector (:class:`engine.model.branches.KeyProjector`) holds
learned major and minor key profiles over the pitch branch's output, read at every tonic,
trained with cross-entropy over the keys of songs and loops; its key posterior enters the
pitch space embedded by the keys' closeness, so "same key" ranks the same key first, then
fifths, relative and parallel keys. It is pitch-equivariant: no transposed copies needed.

The rest of the network is untouched. The output checkpoint is the source's network with
the projector added to that space at ``--share``: a new model id, so libraries rescan, and
no key / tempo / type heads (they read these spaces; retrain them with ``loev-train heads``).
A share of the training files (whole files) is held out for the report (the space's
same-label P@5, or tempo acc1@5, before and after). Held-out material (a ``bench`` split,
the MuseScore_General soundfont) is refused.
"""
from __future__ import annotations

import argparse
import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from engine.config import SAMPLE_RATE
from engine.errors import LoevError
from trainer.heads import find_labels, read_rows
from trainer.metrics import TEMPO_TOLERANCE, cosine_similarity, nearest

ONESHOT_TYPES = ("kick", "snare", "rim", "clap", "hihat", "cymbal", "tom", "percussion")


class ProjectorError(LoevError):
    """The projector cannot be trained: no data, held-out data, a bad argument."""


def label_of(row: dict[str, str]) -> str:
    """A file's class: its sound type, or ``song:FAMILY`` for a song."""
    typ = row.get("type") or ""
    return f"song:{row.get('family') or '?'}" if typ == "song" else typ


def is_oneshot(row: dict[str, str]) -> bool:
    """A corpus one-shot (``*_drum_hit``, ``*_melodic_hit``, ``*_synth_hit``)."""
    from trainer.sounds import ONESHOT_KINDS

    return any(row["file"].endswith(f"_{k}.flac") for k in ONESHOT_KINDS)


def load_sample(csv_path: Path, row: dict[str, str], log: Any = print) -> np.ndarray | None:
    """A corpus file at 16 kHz, a one-shot without its trailing silence (a sample in a
    folder ends where its sound does); None, reported, for an unreadable file."""
    from engine.audio.decode import load_audio
    from engine.errors import DecodeError
    from trainer.sounds import trim_silence

    try:
        y = load_audio(csv_path.parent / row["file"], sr=SAMPLE_RATE)
    except DecodeError as e:
        log(f"  skipped {e}")
        return None
    return trim_silence(y) if is_oneshot(row) else y


def read_corpus(csv_paths: list[Path], frontend: Any, *, max_chunks: int, log: Any = print
                ) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Log-mel chunks ``[N, F, T]`` (float16), their file index ``[N]`` and each file's label.

    One-shots (the corpus' ``*_hit`` files) lose their trailing silence first, as a sample
    in a folder ends where its sound does. An unreadable file is reported and skipped.
    """
    import torch

    from engine.model.embed import frame_chunks

    mels, owner, labels = [], [], []
    t0 = time.time()
    for csv_path in csv_paths:
        for row in read_rows(csv_path):
            label = label_of(row)
            y = load_sample(csv_path, row, log) if label else None
            if y is None:
                continue
            with torch.inference_mode():
                m = frontend(torch.from_numpy(frame_chunks(y, max_chunks=max_chunks)))[:, 0]
            mels.append(m.numpy().astype(np.float16))
            owner += [len(labels)] * len(m)
            labels.append(label)
        log(f"  {csv_path}: {len(labels)} files, {sum(len(m) for m in mels)} chunks, {time.time() - t0:.0f} s")
    if not labels:
        raise ProjectorError("no labelled file in the corpora given")
    return np.concatenate(mels), np.array(owner), labels


def transpose_mel(mel: Any, semitones: Any, *, f_max: float) -> Any:
    """Log-mel chunks ``[B, F, T]`` as if transposed by ``semitones[i]``: each HTK mel band
    reads the band at its centre frequency divided by the ratio (linear interpolation,
    edge bands repeated), so harmonics move as a pitch shift moves them."""
    import torch

    n_mels = mel.shape[1]
    mel_max = 2595.0 * math.log10(1.0 + f_max / 700.0)
    step = mel_max / (n_mels + 1)
    centres_hz = 700.0 * (10.0 ** (step * torch.arange(1, n_mels + 1) / 2595.0) - 1.0)  # [F]
    ratio = 2.0 ** (semitones.float()[:, None] / 12.0)  # [B, 1]
    src = 2595.0 * torch.log10(1.0 + centres_hz[None, :] / ratio / 700.0) / step - 1.0  # [B, F] band index
    src = src.clamp(0.0, n_mels - 1.0)
    lo = src.floor().long().clamp(max=n_mels - 2)
    frac = (src - lo)[..., None]
    a = torch.gather(mel, 1, lo[..., None].expand(-1, -1, mel.shape[2]))
    b = torch.gather(mel, 1, (lo + 1)[..., None].expand(-1, -1, mel.shape[2]))
    return a * (1.0 - frac) + b * frac


def fit_steps(projector: Any, params: list[Any], weight: Any, loss_of: Any, *, epochs: int, n: int, batch: int,
              lr: float, weight_decay: float, gen: Any, log: Any, log_every: int = 500) -> None:
    """The projectors' training loop: AdamW under a one-cycle schedule, ``max(epochs,
    epochs * n / batch)`` steps (a small corpus still gets a step per epoch), each on
    ``batch`` examples drawn with replacement by ``weight``; ``loss_of(idx)`` gives the
    loss of the drawn indices. Leaves ``projector`` in eval mode."""
    import torch

    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    steps = max(epochs, epochs * n // batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=steps)
    projector.train()
    for step in range(steps):
        loss = loss_of(torch.multinomial(weight, batch, replacement=True, generator=gen))
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % log_every == 0 or step == steps - 1:
            log(f"  step {step + 1}/{steps}: loss {loss.item():.3f}")
    projector.eval()


def train_projector(projector: Any, descriptor: Any, mel: np.ndarray, y: np.ndarray, n_classes: int, *,
                    epochs: int, f_max: float, batch: int = 256, lr: float = 2e-3, max_shift: float = 6.0,
                    scale: float = 16.0, invariance: float = 4.0,
                    seed: int = 0, log: Any = print) -> None:
    """Fit ``projector`` in place (its ``loc``/``scale`` set from ``mel``) on chunk labels ``y``."""
    import torch
    import torch.nn.functional as F

    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    x_all = torch.from_numpy(mel)
    labels = torch.from_numpy(y)

    def inputs(m: Any) -> Any:
        m = m.float()[:, None]
        return projector.pooled(m, descriptor.raw(m))

    with torch.no_grad():
        pooled = torch.cat([inputs(x_all[i:i + 1024]) for i in range(0, len(x_all), 1024)])
        projector.loc.copy_(pooled.mean(dim=0))
        projector.scale.copy_(pooled.std(dim=0).clamp_min(1e-4))
    centres = torch.nn.Parameter(torch.randn(n_classes, projector.out_dim, generator=gen) * 0.1)
    # Class-balanced draws: a rare type weighs as much as the drum hits.
    weight = 1.0 / torch.bincount(labels, minlength=n_classes).clamp_min(1).float()[labels]

    def loss_of(idx: Any) -> Any:
        m = x_all[idx].float()
        # Two transpositions of each chunk: both classified, and pulled together, so the
        # embedding itself (not only its class) stays put when a sound is transposed.
        z = []
        for _ in range(2):
            t = transpose_mel(m, torch.empty(batch).uniform_(-max_shift, max_shift, generator=gen), f_max=f_max)
            t = (t * torch.empty(batch, 1, 1).uniform_(0.8, 1.2, generator=gen))[:, None]
            z.append(F.normalize(projector(t, descriptor.raw(t)), dim=1))
        return sum(F.cross_entropy(scale * zi @ F.normalize(centres, dim=1).T, labels[idx], label_smoothing=0.1)
                   for zi in z) / 2 + invariance * (1.0 - (z[0] * z[1]).sum(dim=1)).mean()

    fit_steps(projector, list(projector.mlp.parameters()) + [centres], weight, loss_of, epochs=epochs,
              n=len(x_all), batch=batch, lr=lr, weight_decay=1e-2, gen=gen, log=log, log_every=200)


def precision_at_5(vectors: np.ndarray, labels: list[str]) -> float:
    """Mean share of each file's 5 cosine neighbours (itself left out) with its label."""
    nn = nearest(cosine_similarity(vectors, vectors), 5)
    lab = np.array(labels)
    return float((lab[nn] == lab[:, None]).mean())


def vibe_vectors(model: Any, mel: np.ndarray, owner: np.ndarray, n_files: int) -> np.ndarray:
    """Track-level vibe vectors (mean of chunk embeddings) from log-mel chunks."""
    import torch

    out = None
    with torch.inference_mode():
        for i in range(0, len(mel), 64):
            v = model.vibe(torch.from_numpy(mel[i:i + 64]).float()[:, None]).numpy()
            if out is None:
                out = np.zeros((n_files, v.shape[1]))
            np.add.at(out, owner[i:i + 64], v)
    return out


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", help="the frozen .safetensors checkpoint (with a timbre descriptor)")
    p.add_argument("--data", nargs="+", required=True, metavar="DIR",
                   help="training corpora: folders holding labels.csv files (loev-train corpus)")
    p.add_argument("--out", required=True, help="the checkpoint to write (heads are not carried over)")
    p.add_argument("--space", choices=tuple(SPACES), default="vibe",
                   help="the subspace that gets the projector (vibe: sound types; tempo: BPM; key: keys)")
    p.add_argument("--share", type=float, default=0.4, help="the subspace's share for the projector")
    p.add_argument("--stretches", type=int, default=3,
                   help="tempo: time-stretched copies of each song and loop (3 chunks each)")
    p.add_argument("--onsets", action=argparse.BooleanOptionalAction, default=True,
                   help="tempo: the projector also reads the branch's onset periodicity (finer, "
                        "shorter lags per onset band)")
    p.add_argument("--tempogram", action=argparse.BooleanOptionalAction, default=True,
                   help="tempo: the projector also reads the branch's onset tempogram (Fourier "
                        "magnitudes per onset band)")
    p.add_argument("--posterior", action=argparse.BooleanOptionalAction, default=True,
                   help="tempo: the projector gives its posterior over BPM bins, embedded by their "
                        "closeness, instead of its features")
    p.add_argument("--synthetic", type=int, default=0,
                   help="tempo: also this many synthetic click tracks, struck chords, hits and silences "
                        "(the heads' kind, another draw)")
    p.add_argument("--timbre-share", type=float, default=None,
                   help="the descriptor's share in the new model (default: the checkpoint's)")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--max-shift", type=float, default=6.0,
                   help="semitones of the random transposition each training chunk gets (either way)")
    p.add_argument("--invariance", type=float, default=4.0,
                   help="weight of the loss pulling two transpositions of a chunk together")
    p.add_argument("--max-chunks", type=int, default=8, help="chunks per file (songs and loops)")
    p.add_argument("--val-fraction", type=float, default=0.15, help="files held out for the report")
    p.add_argument("--seed", type=int, default=0)


# --space -> (the subspace its projector extends, the network's attribute that holds it)
SPACES = {"vibe": ("invariant", "timbre_mlp"), "tempo": ("tempo", "tempo_mlp"), "key": ("pitch", "key_projector")}


def extended_model(source: Any, new_cfg: Any, space: str, seed: int) -> Any:
    """``source``'s network rebuilt with ``new_cfg`` (a projector added to ``space``): every
    tensor carried over but the projector's own (a projector the source already has is
    trained again from scratch, from weights seeded by ``seed``)."""
    import torch

    from engine.model.network import build_model

    attr = {sub: name for sub, name in SPACES.values()}[space]
    head = f"heads.{space}.net.0.weight"
    torch.manual_seed(seed)
    model = build_model(new_cfg)
    new_state = model.state_dict()
    # The space's columns before its projector (the projector comes last in the space).
    kept = model.embedding_dims[space] - getattr(model, attr).out_dim
    for k, v in source.state_dict().items():
        if k.startswith(attr + "."):
            continue
        if k == head and v.shape != new_state[k].shape:
            # The projection head (used in training only) reads the projector's dimensions
            # with zero weights, so a later fine-tune starts from the source's head.
            w = torch.zeros_like(new_state[k])
            w[:, :kept] = v[:, :kept]
            v = w
        new_state[k] = v
    model.load_state_dict(new_state, strict=True)
    return model.eval()


def split_files(n_files: int, fraction: float, seed: int) -> np.ndarray:
    """The files (sorted indices) held out for the report."""
    rng = np.random.default_rng(seed)
    return np.sort(rng.permutation(n_files)[:int(round(fraction * n_files))])


def run(args: argparse.Namespace) -> int:
    import dataclasses

    from engine.model.checkpoint import load_checkpoint, read_checkpoint_info, save_checkpoint

    if args.epochs < 1 or not 0.0 <= args.val_fraction < 0.9 or args.max_chunks < 1:
        raise ProjectorError("--epochs and --max-chunks must be >= 1, --val-fraction in [0, 0.9)")
    source, cfg = load_checkpoint(args.checkpoint)
    try:
        if args.space == "key":
            new_cfg = dataclasses.replace(cfg, pitch_learned_share=args.share, provenance={})
        elif args.space == "tempo":
            new_cfg = dataclasses.replace(cfg, tempo_learned_share=args.share,
                                          tempo_projector_onsets=args.onsets,
                                          tempo_projector_tempogram=args.tempogram,
                                          tempo_projector_posterior=args.posterior, provenance={})
        else:
            timbre_share = cfg.timbre_share if args.timbre_share is None else args.timbre_share
            new_cfg = dataclasses.replace(cfg, timbre_share=timbre_share, timbre_learned_share=args.share,
                                          provenance={})
    except ValueError as e:
        raise ProjectorError(f"--share / --timbre-share: {e}") from None
    source_id = read_checkpoint_info(args.checkpoint).model_id
    print(f"{args.space} projector for model {source_id} ({args.checkpoint}), share {args.share}")
    csv_paths = find_labels(args.data)
    if args.space == "key":
        model, report, t_read, t_train = _key(args, source, new_cfg, csv_paths)
    elif args.space == "tempo":
        model, report, t_read, t_train = _tempo(args, source, new_cfg, csv_paths)
    else:
        model, report, t_read, t_train = _vibe(args, source, new_cfg, csv_paths)
    provenance = {"trainer": "loev-train projector", "space": args.space, "source": source_id,
                  "data": [str(Path(*p.parts[-4:])) for p in csv_paths], "epochs": args.epochs,
                  "max_chunks": args.max_chunks, "seed": args.seed, "train_seconds": round(t_train, 1), **report}
    out = save_checkpoint(args.out, model, provenance=provenance)
    print(f"wrote {out} (model {read_checkpoint_info(out).model_id}, {out.stat().st_size / 1e6:.2f} MB, "
          f"no heads: run loev-train heads on it); reading {t_read:.0f} s, training {t_train:.0f} s")
    return 0


def _vibe(args: argparse.Namespace, source: Any, new_cfg: Any, csv_paths: list[Path]
          ) -> tuple[Any, dict[str, Any], float, float]:
    t0 = time.time()
    mel, owner, labels = read_corpus(csv_paths, source.frontend, max_chunks=args.max_chunks)
    classes = sorted(set(labels))
    file_y = np.array([classes.index(c) for c in labels])
    val_files = split_files(len(labels), args.val_fraction, args.seed)
    n_val = len(val_files)
    is_val = np.isin(owner, val_files)
    t_read = time.time() - t0
    print(f"{len(labels)} files, {len(mel)} chunks, {len(classes)} classes, read in {t_read:.0f} s")
    model = extended_model(source, new_cfg, "invariant", args.seed)
    if not model.timbre.loc.abs().sum():
        raise ProjectorError(f"{args.checkpoint}: its timbre descriptor was never calibrated")
    t1 = time.time()
    train_idx = np.flatnonzero(~is_val)
    train_projector(model.timbre_mlp, model.timbre, mel[train_idx], file_y[owner[train_idx]], len(classes),
                    epochs=args.epochs, f_max=new_cfg.frontend.f_max,
                    max_shift=args.max_shift, invariance=args.invariance, seed=args.seed)
    t_train = time.time() - t1
    report: dict[str, Any] = {"classes": classes}
    if n_val > 5:
        remap = {f: i for i, f in enumerate(val_files)}
        v_owner = np.array([remap[o] for o in owner[is_val]])
        v_labels = [labels[f] for f in val_files]
        before = precision_at_5(vibe_vectors(source, mel[is_val], v_owner, n_val), v_labels)
        after = precision_at_5(vibe_vectors(model, mel[is_val], v_owner, n_val), v_labels)
        report.update(val_files=n_val, vibe_p5_before=round(before, 4), vibe_p5_after=round(after, 4))
        print(f"validation ({n_val} files): vibe same-label P@5 {before:.3f} -> {after:.3f}")
    return model, report, t_read, t_train


# ------------------------------------------------------------------------- the tempo space


def read_tempo_corpus(csv_paths: list[Path], model: Any, *, max_chunks: int, stretches: int, seed: int,
                      max_oneshots: int = 400, synthetic: int = 0, log: Any = print
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """What ``model``'s tempo projector reads for every chunk ``[N, D]`` (the tempo branch's
    output first, see ``tempo_projector_input``), their version index ``[N]``, each
    version's BPM (0: "no tempo") and file index (the original comes first). A version is a
    file as it is (up to ``max_chunks`` chunks) or, for a file with a tempo, one of
    ``stretches`` time-stretched copies (3 chunks each) spread over 50-220 BPM; at most
    ``max_oneshots`` one-shots per labels file, as "no tempo" examples. ``synthetic`` > 0
    adds that many of the heads' synthetic examples (click tracks and struck chords at
    known tempi, single hits, silence; :func:`trainer.heads.synthetic_set`), drawn with
    another seed than the heads' own, so that their validation stays unseen."""
    import torch

    from trainer.heads import _rates, bpm_value, synthetic_set, version_chunks

    feats, owner, bpm, files = [], [], [], []
    t0 = time.time()

    def add(y: np.ndarray, b: float, rng: np.random.Generator) -> None:
        files_so_far = files[-1] + 1 if files else 0
        versions = [(1.0, max_chunks)] + [(r, 3) for r in (_rates(b, stretches, rng) if b > 0 else [])]
        for rate, chunks in versions:
            with torch.inference_mode():
                spec = model.frontend(torch.from_numpy(version_chunks(y, 0, rate, chunks)))
                t = model.tempo_projector_input(model.structured["tempo"](spec), spec).numpy()
            feats.append(t)
            owner.extend([len(bpm)] * len(t))
            bpm.append(b * rate)
            files.append(files_so_far)

    for csv_path in csv_paths:
        rows = read_rows(csv_path)
        n_oneshots = 0
        for i, row in enumerate(rows):
            b = bpm_value(row.get("tempo", ""))
            oneshot = is_oneshot(row)
            if b < 0 or (oneshot and n_oneshots >= max_oneshots):
                continue
            y = load_sample(csv_path, row, log)
            if y is None:
                continue
            n_oneshots += oneshot
            add(y, b, np.random.default_rng([seed, i, len(rows)]))
        log(f"  {csv_path}: {len(bpm)} versions, {sum(len(f) for f in feats)} chunks, {time.time() - t0:.0f} s")
    if synthetic > 0:
        for i, (y, _, b, _) in enumerate(synthetic_set(synthetic, seed + 1_000_003)):
            if b >= 0:
                add(np.asarray(y, dtype=np.float32), b, np.random.default_rng([seed, i, synthetic]))
        log(f"  synthetic: {len(bpm)} versions, {sum(len(f) for f in feats)} chunks, {time.time() - t0:.0f} s")
    if not bpm:
        raise ProjectorError("no file with a tempo label in the corpora given")
    return np.concatenate(feats).astype(np.float32), np.array(owner), np.array(bpm), np.array(files)


def train_tempo_projector(projector: Any, x: np.ndarray, bpm: np.ndarray, *, epochs: int, batch: int = 256,
                          lr: float = 2e-3, scale: float = 16.0, seed: int = 0, log: Any = print) -> None:
    """Fit ``projector`` in place on tempo-branch outputs ``x`` and their BPM (0: "no tempo"):
    a cosine-softmax over the heads' log-spaced BPM bins and "no tempo", with Gaussian soft
    targets over neighbouring bins, class-balanced draws."""
    import torch
    import torch.nn.functional as F

    from engine.model.kernels import bpm_bins
    from trainer.heads import _soft_tempo_targets

    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    bins = bpm_bins()
    targets = torch.from_numpy(_soft_tempo_targets(bpm, bins))
    x_all = torch.from_numpy(x)
    with torch.no_grad():
        projector.loc.copy_(x_all.mean(dim=0))
        projector.scale.copy_(x_all.std(dim=0).clamp_min(1e-4))
    hard = targets.argmax(dim=1)
    weight = 1.0 / torch.bincount(hard, minlength=targets.shape[1]).clamp_min(1).float()[hard]
    start = torch.randn(targets.shape[1], projector.OUT_DIM, generator=gen) * 0.1
    if projector.posterior:  # the centres are kept: the projector's output is the softmax
        with torch.no_grad():
            projector.centres.copy_(start)
        centres = projector.centres
    else:
        centres = torch.nn.Parameter(start)

    def loss_of(idx: Any) -> Any:
        z = F.normalize(projector.features(x_all[idx]), dim=1)
        logp = F.log_softmax(scale * z @ F.normalize(centres, dim=1).T, dim=1)
        return -(targets[idx] * logp).sum(dim=1).mean()

    fit_steps(projector, list(projector.mlp.parameters()) + [centres], weight, loss_of, epochs=epochs,
              n=len(x_all), batch=batch, lr=lr, weight_decay=1e-2, gen=gen, log=log)


def tempo_acc1_at_5(vectors: np.ndarray, bpm: np.ndarray, tolerance: float = TEMPO_TOLERANCE) -> float:
    """Mean share of each track's 5 cosine neighbours within ``tolerance`` of its BPM."""
    nn = nearest(cosine_similarity(vectors, vectors), 5)
    return float((np.abs(np.log(bpm[nn] / bpm[:, None])) < np.log1p(tolerance)).mean())


def _tempo(args: argparse.Namespace, source: Any, new_cfg: Any, csv_paths: list[Path]
           ) -> tuple[Any, dict[str, Any], float, float]:
    import torch

    model = extended_model(source, new_cfg, "tempo", args.seed)
    branch_dim = model.structured["tempo"].out_dim
    t0 = time.time()
    x, owner, bpm, files = read_tempo_corpus(csv_paths, model, max_chunks=args.max_chunks,
                                             stretches=args.stretches, seed=args.seed, synthetic=args.synthetic)
    # Held out by file, so a file's stretched copies never straddle the split; the report
    # is on the held-out originals with a tempo.
    val_files = split_files(int(files.max()) + 1, args.val_fraction, args.seed)
    in_val = np.isin(files, val_files)
    first = np.r_[True, files[1:] != files[:-1]]
    val = np.flatnonzero(in_val)
    t_read = time.time() - t0
    print(f"{len(bpm)} versions, {len(x)} chunks, read in {t_read:.0f} s")
    t1 = time.time()
    keep = ~np.isin(owner, val)
    train_tempo_projector(model.tempo_mlp, x[keep], bpm[owner[keep]], epochs=args.epochs, seed=args.seed)
    t_train = time.time() - t1
    report: dict[str, Any] = {"stretches": args.stretches, "synthetic": args.synthetic}
    timed = np.flatnonzero(in_val & first & (bpm > 0))
    if len(timed) > 5:
        rows = np.isin(owner, timed)
        remap = {v: i for i, v in enumerate(timed)}
        o = np.array([remap[v] for v in owner[rows]])
        with torch.inference_mode():
            after_chunks = model.with_tempo(torch.from_numpy(x[rows, :branch_dim]),
                                            torch.from_numpy(x[rows])).numpy()
        scores = []
        for chunks in (x[rows, :branch_dim], after_chunks):
            tracks = np.zeros((len(timed), chunks.shape[1]))
            np.add.at(tracks, o, chunks)
            scores.append(tempo_acc1_at_5(tracks, bpm[timed]))
        report.update(val_versions=int(len(timed)), tempo_acc1_before=round(scores[0], 4),
                      tempo_acc1_after=round(scores[1], 4))
        print(f"validation ({len(timed)} versions with a tempo): tempo acc1@5 {scores[0]:.3f} -> {scores[1]:.3f}")
    return model, report, t_read, t_train


# --------------------------------------------------------------------------- the key space


def read_key_corpus(csv_paths: list[Path], model: Any, *, max_chunks: int, log: Any = print
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The pitch branch's output for every chunk ``[N, D]`` of each file with a key (songs
    and loops; one-shots and "no key" files have none to learn), their file index ``[N]``
    and each file's :mod:`engine.keys` index. No transposed copies: the key projector is
    pitch-equivariant, so it learns every transposition of what it sees at once."""
    import torch

    from engine import keys
    from engine.model.embed import frame_chunks

    feats, owner, key = [], [], []
    t0 = time.time()
    for csv_path in csv_paths:
        for row in read_rows(csv_path):
            k = keys.parse_key(row.get("key") or "")
            if k is None or is_oneshot(row):
                continue
            y = load_sample(csv_path, row, log)
            if y is None:
                continue
            with torch.inference_mode():
                p = model.structured["pitch"](torch.from_numpy(frame_chunks(y, max_chunks=max_chunks))).numpy()
            feats.append(p)
            owner += [len(key)] * len(p)
            key.append(k)
        log(f"  {csv_path}: {len(key)} files with a key, {sum(len(f) for f in feats)} chunks, {time.time() - t0:.0f} s")
    if not key:
        raise ProjectorError("no file with a key label in the corpora given")
    return np.concatenate(feats).astype(np.float32), np.array(owner), np.array(key)


def train_key_projector(projector: Any, x: np.ndarray, key: np.ndarray, *, epochs: int, batch: int = 256,
                        lr: float = 1e-2, weight_decay: float = 1e-2, seed: int = 0, log: Any = print) -> None:
    """Fit ``projector`` in place on pitch-branch outputs ``x`` and their keys
    (:mod:`engine.keys` indices): cross-entropy over its 24 key logits, major and minor
    chunks drawn equally often."""
    import torch
    import torch.nn.functional as F

    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    x_all = torch.from_numpy(x)
    target = torch.from_numpy(2 * (key % 12) + key // 12)  # interleaved, as the projector's outputs
    minor = torch.from_numpy(key >= 12)
    n_minor = int(minor.sum())
    weight = torch.where(minor, 1.0 / max(n_minor, 1), 1.0 / max(len(key) - n_minor, 1)).double()
    fit_steps(projector, list(projector.parameters()), weight,
              lambda idx: F.cross_entropy(projector.logits(x_all[idx]), target[idx]), epochs=epochs,
              n=len(x_all), batch=batch, lr=lr, weight_decay=weight_decay, gen=gen, log=log)


def key_at_5(vectors: np.ndarray, key: np.ndarray) -> float:
    """Mean mir_eval weighted key score of each track's 5 cosine neighbours."""
    from trainer.metrics import _key_table

    nn = nearest(cosine_similarity(vectors, vectors), 5)
    return float(_key_table()[key[:, None], key[nn]].mean())


def _key(args: argparse.Namespace, source: Any, new_cfg: Any, csv_paths: list[Path]
         ) -> tuple[Any, dict[str, Any], float, float]:
    import torch

    model = extended_model(source, new_cfg, "pitch", args.seed)
    t0 = time.time()
    x, owner, key = read_key_corpus(csv_paths, model, max_chunks=args.max_chunks)
    val_files = split_files(len(key), args.val_fraction, args.seed)
    is_val = np.isin(owner, val_files)
    t_read = time.time() - t0
    print(f"{len(key)} files with a key ({int((key >= 12).sum())} minor), {len(x)} chunks, read in {t_read:.0f} s")
    t1 = time.time()
    train_key_projector(model.key_projector, x[~is_val], key[owner[~is_val]], epochs=args.epochs, seed=args.seed)
    t_train = time.time() - t1
    report: dict[str, Any] = {}
    if len(val_files) > 5:
        remap = {f: i for i, f in enumerate(val_files)}
        o = np.array([remap[v] for v in owner[is_val]])
        with torch.inference_mode():
            after_chunks = model.with_key(torch.from_numpy(x[is_val])).numpy()
            estimate = model.key_projector.logits(torch.from_numpy(x[is_val])).numpy()
        scores = []
        for chunks in (x[is_val], after_chunks):
            tracks = np.zeros((len(val_files), chunks.shape[1]))
            np.add.at(tracks, o, chunks)
            scores.append(key_at_5(tracks, key[val_files]))
        logits = np.zeros((len(val_files), estimate.shape[1]))
        np.add.at(logits, o, estimate)
        guess = np.array([model.key_projector.key_of_output(i) for i in logits.argmax(axis=1)])
        accuracy = float((guess == key[val_files]).mean())
        report.update(val_files=int(len(val_files)), key_at_5_before=round(scores[0], 4),
                      key_at_5_after=round(scores[1], 4), key_accuracy=round(accuracy, 4))
        print(f"validation ({len(val_files)} files): key@5 {scores[0]:.3f} -> {scores[1]:.3f}; "
              f"the projector's own key right for {accuracy:.3f}")
    return model, report, t_read, t_train
