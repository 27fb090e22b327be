"""``loev-train report``: docs/RESULTS.md regenerated from ``loev-train eval`` folders.

Every figure in the document comes from a ``metrics.json`` (and each model's training
budget from its checkpoint's provenance metadata); nothing is typed in by hand. It opens
with one screen: the shipped model against the DSP baselines, per aspect. Then tables
that follow the paper: Table I/II (probing), Fig. 2 (retrieval per subspace and k), Fig. 3
(invariance curves), with the DSP baselines beside every model. Paths are shown relative
to the working folder (or by their last component), never as the machine had them.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from engine.errors import LoevError

METRIC_NAMES = {"key": "key (weighted)", "tempo_acc1": "tempo acc1", "tempo_acc2": "tempo acc2",
                "family": "family P@k", "pitch": "pitch P@k"}
PROBE_COLUMNS = (("key", "key"), ("tempo_acc1", "tempo acc1"), ("tempo_acc2", "tempo acc2"),
                 ("family_acc", "family acc"), ("family_roc_auc", "family ROC-AUC"), ("family_map", "family mAP"),
                 ("pitch_acc", "pitch acc"), ("tags_roc_auc", "tags ROC-AUC"), ("tags_map", "tags mAP"))

DIFFERENCES = """\
- **Scale.** The paper pretrains SF-NFNet-F0 (53M / 78M parameters) on about 100k hours of
  music on GPUs; the models here are CPU-sized profiles trained for the budget listed above
  on a corpus rendered from MIDI through General MIDI soundfonts.
- **Data.** The paper probes on MTG-Jamendo, MagnaTagATune, GiantSteps key, NSynth and the
  AllTempo sets. Here every figure is measured on a benchmark rendered by
  `loev-train corpus --split bench` with the held-out MuseScore_General soundfont: pieces,
  seeds and the soundfont are disjoint from training, but the music is still synthetic
  (rendered MIDI), the labels are exact (no annotation noise), and it holds few tracks, so
  differences of a few points are within noise. `trainer/datasets.py` reads the paper's
  datasets from a local copy for whoever has them.
- **Input.** 16 kHz mono, 3 s chunks as in the paper; a checkpoint may use another frontend
  or structured pitch/tempo branches (see each model's row), which the paper does not.
- **Probing.** One probe per task on track-averaged chunk predictions, a deterministic
  70/30 split of the benchmark's tracks (no separate validation set, no hyper-parameter
  search); tempo is regressed on log2 BPM with time-stretch augmentation 0.8-1.2 of the
  training chunks instead of the paper's classification over tempo classes.
- **Retrieval.** Tracks are the benchmark's own files; the relevance of a neighbour is the
  mir_eval weighted key score, tempo within 4 % (acc1) or at a 2x/3x relation (acc2), and
  equality of GM instrument family, averaged over the k neighbours.
- **Robustness.** Queries degraded by white noise at 10 dB SNR, a 4 kHz low-pass, and a
  7 kHz band limit standing in for a low-bitrate MP3 (16 kHz audio has no content above 8 kHz).
"""


class ReportError(LoevError):
    """The report cannot be written: a missing or malformed metrics.json."""


def load_run(path: str | os.PathLike[str]) -> dict[str, Any]:
    """One eval folder's ``metrics.json`` (or the file itself), with ``_dir`` set to its folder."""
    path = Path(path)
    file = path / "metrics.json" if path.is_dir() else path
    try:
        metrics = json.loads(file.read_text())
    except FileNotFoundError:
        raise ReportError(f"{file}: no metrics.json (run loev-train eval --out {path} first)") from None
    except json.JSONDecodeError as e:
        raise ReportError(f"{file}: not valid JSON ({e})") from None
    metrics["_dir"] = str(file.parent)
    return metrics


def display_path(path: str | os.PathLike[str], *, root: str | os.PathLike[str] | None = None) -> str:
    """A path as the report shows it: relative to ``root`` (default: the working folder) when
    inside it, else its last component; the report never says where the machine kept things."""
    p = Path(path)
    if not p.is_absolute():
        return p.as_posix()
    base = Path(root if root is not None else Path.cwd()).resolve()
    try:
        return p.resolve().relative_to(base).as_posix() or "."
    except ValueError:
        return p.name or "."


def _shown(value: Any) -> Any:
    """``value``, with an absolute path replaced by its :func:`display_path`."""
    return display_path(value) if isinstance(value, str) and os.path.isabs(value) else value


def _fmt(v: Any) -> str:
    return f"{v:.3f}" if isinstance(v, (int, float)) else "–"


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) if isinstance(c, str) else _fmt(c) for c in r) + " |" for r in rows]
    return lines + [""]


def budget(model: dict[str, Any]) -> dict[str, Any]:
    """Training provenance of a model: from its checkpoint header when the file is still there."""
    prov = dict(model.get("provenance") or {})
    ckpt = model.get("checkpoint")
    if ckpt and Path(ckpt).is_file():
        from engine.model.checkpoint import read_checkpoint_info

        try:
            prov = dict(read_checkpoint_info(ckpt).config.get("provenance", {})) or prov
        except LoevError:
            pass
    return prov


def total_steps(prov: dict[str, Any]) -> Any:
    """Optimiser steps behind a model, a fine-tune's ``init_steps`` included ("–" if unknown)."""
    if prov.get("steps") is None:
        return "–"
    return int(prov["steps"]) + int(prov.get("init_steps") or 0)


def _budget_section(runs: Sequence[dict[str, Any]]) -> list[str]:
    rows = []
    seen: set[tuple[str, Any]] = set()
    for run in runs:
        for name, m in run.get("models", {}).items():
            if (name, m.get("model_id")) in seen:  # the same model evaluated in two folders
                continue
            seen.add((name, m.get("model_id")))
            p = budget(m)
            extra = ", ".join(f"{k}={_shown(v)}" for k, v in p.items()
                              if k not in ("steps", "tracks", "batch_views", "lr", "data", "labels",
                                           "supervised_fraction", "method"))
            rows.append([name, str(m.get("method")), str(m.get("branches")), str(m.get("profile")),
                         str(total_steps(p)), str(p.get("tracks", "–")), str(p.get("batch_views", "–")),
                         str(_shown(p.get("labels")) or "none") + (f" ({p.get('supervised_fraction')})"
                                                            if p.get("labels") else ""), extra or "–"])
    return ["## Models and training budget", ""] + _table(
        ["model", "method", "branches", "profile", "steps", "tracks", "views/step", "labels", "other"], rows)


def _systems(run: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    """(row name, subspace or target, result dict) for every model subspace and baseline."""
    out = []
    for name, b in run.get("baselines", {}).items():
        out.append((f"baseline: {name}", b.get("target", ""), b))
    for name, m in run.get("models", {}).items():
        for s in m.get("retrieval", {}):
            out.append((name, s, {"retrieval": m["retrieval"][s],
                                  "robustness": {k: v.get(s, {}) for k, v in m.get("robustness", {}).items()}}))
    return out


def _retrieval_section(run: dict[str, Any]) -> list[str]:
    ks = [str(k) for k in run.get("ks", (1, 3, 5, 10))]
    lines = [f"## Retrieval (paper Fig. 2): {run.get('n_tracks')} tracks, {run.get('audio_minutes')} min",
             "", f"Data: `{_shown(run.get('data'))}`. Chance (random neighbours): "
             + ", ".join(f"{METRIC_NAMES.get(m, m)} {v:.3f}" for m, v in run.get("chance", {}).items()), ""]
    for metric, title in METRIC_NAMES.items():
        rows = [[sys, sub] + [r["retrieval"].get(metric, {}).get(k) for k in ks] for sys, sub, r in _systems(run)
                if metric in r["retrieval"]]
        if rows and metric in run.get("oracle", {}):
            rows.append(["best possible (oracle)", "–"] + [run["oracle"][metric].get(k) for k in ks])
        if rows:
            lines += [f"### {title}", ""] + _table(["system", "subspace / target"] + [f"@{k}" for k in ks], rows)
    return lines


def _probe_section(run: dict[str, Any]) -> list[str]:
    results = [(name, s, r) for name, m in run.get("models", {}).items()
               for s, r in m.get("probe", {}).items() if not s.startswith("_")]
    if not results:
        return []
    columns = [(k, t) for k, t in PROBE_COLUMNS if any(k in r for _, _, r in results)]
    rows = [[name, s] + [r.get(k) for k, _ in columns] for name, s, r in results]
    split = next((m["probe"]["_split"] for m in run["models"].values() if "_split" in m.get("probe", {})), {})
    return ([f"## Probing (paper Table I/II): MLP probes on frozen embeddings, {split.get('train')} train /"
             f" {split.get('test')} test tracks", ""]
            + _table(["model", "subspace"] + [t for _, t in columns], rows))


def _robustness_section(run: dict[str, Any]) -> list[str]:
    kinds = run.get("degradations") or []
    if not kinds:
        return []
    lines = ["## Robustness: degraded queries against the clean library, @5", ""]
    header = ["system", "subspace / target", "clean key", *[f"{k} key" for k in kinds],
              "clean tempo acc1", *[f"{k} tempo acc1" for k in kinds]]
    rows = []
    for sys, sub, r in _systems(run):
        rob = r.get("robustness") or {}
        if not rob:
            continue
        rows.append([sys, sub, r["retrieval"].get("key", {}).get("5"),
                     *[rob.get(k, {}).get("key", {}).get("5") for k in kinds],
                     r["retrieval"].get("tempo_acc1", {}).get("5"),
                     *[rob.get(k, {}).get("tempo_acc1", {}).get("5") for k in kinds]])
    return lines + _table(header, rows)


def _curves_section(run: dict[str, Any], out_dir: Path) -> list[str]:
    lines: list[str] = []
    for name, m in run.get("models", {}).items():
        curves = m.get("curves")
        if not curves:
            continue
        if not lines:
            lines = ["## Invariance curves (paper Fig. 3): cosine distance, clean vs transformed", ""]
        png = next((f for f in m.get("files", []) if f.endswith(".png")), None)
        if png and (Path(run["_dir"]) / png).is_file():
            fig_dir = out_dir / "figures"
            fig_dir.mkdir(parents=True, exist_ok=True)
            dest = fig_dir / f"{Path(run['_dir']).name}_{png}"
            shutil.copyfile(Path(run["_dir"]) / png, dest)
            lines += [f"![{name} invariance curves](figures/{dest.name})", ""]
        pitch = curves["pitch"]
        at = {v: i for i, v in enumerate(pitch["values"])}
        cols = [v for v in (-4.0, 4.0, 12.0) if v in at]
        tempo = curves["tempo"]
        tcols = [i for i, v in enumerate(tempo["values"]) if abs(v - 0.5) < 1e-3 or abs(v - 2.0) < 1e-3
                 or abs(v - 0.7937) < 2e-3 or abs(v - 1.2599) < 2e-3]
        rows = [[name, s] + [pitch["subspaces"][s][at[v]] for v in cols]
                + [tempo["subspaces"][s][i] for i in tcols] for s in pitch["subspaces"]]
        lines += _table(["model", "subspace"] + [f"{v:+g} st" for v in cols]
                        + [f"x{tempo['values'][i]:g}" for i in tcols], rows)
    return lines


# The at-a-glance columns: (header, where the figure lives). ``("ret", sub, metric)``:
# retrieval @5 of a subspace; ``("probe", sub, key)``: a probe on a subspace;
# ``("rob", kind, sub, metric)``: retrieval @5 with degraded queries.
GLANCE_RETRIEVAL = (("invariant family@5", ("ret", "invariant", "family")),
                    ("pitch key@5", ("ret", "pitch", "key")),
                    ("tempo acc1@5", ("ret", "tempo", "tempo_acc1")))
GLANCE_PROBE = (("probe V++ key", ("probe", "all", "key")),
                ("probe V++ tempo acc1", ("probe", "all", "tempo_acc1")),
                ("probe V++ family acc", ("probe", "all", "family_acc")))


def _glance_columns(run: dict[str, Any]) -> list[tuple[str, tuple[str, ...]]]:
    models = run.get("models", {}).values()
    cols = list(GLANCE_RETRIEVAL)
    if any("all" in m.get("probe", {}) for m in models):
        cols += GLANCE_PROBE
    for kind in run.get("degradations") or []:
        cols += [(f"{kind} key@5", ("rob", kind, "pitch", "key")),
                 (f"{kind} tempo acc1@5", ("rob", kind, "tempo", "tempo_acc1"))]
    return cols


def _glance_value(m: dict[str, Any], where: tuple[str, ...]) -> float | None:
    if where[0] == "ret":
        return _at5(m, where[1], where[2])
    if where[0] == "probe":
        return m.get("probe", {}).get(where[1], {}).get(where[2])
    return m.get("robustness", {}).get(where[1], {}).get(where[2], {}).get(where[3], {}).get("5")


def _labels_text(m: dict[str, Any]) -> str:
    p = m.get("provenance") or {}
    text = f"{p.get('supervised_fraction', 0) * 100:.0f} %" if p.get("labels") else "none"
    if p.get("label_weighting") == "weighted":
        text += " weighted"
    return text


def _glance_section(run: dict[str, Any], reference: str | None) -> list[str]:
    """One row per model: the figures the ablations compare, and the deltas vs ``reference``.

    ``run`` may gather the models of several eval folders on one benchmark."""
    models = {n: m for n, m in run.get("models", {}).items() if m.get("method") in ("loev++", "loev")}
    if not models:
        return []
    cols = _glance_columns(run)
    head = ["model", "branches", "labels", "recon W", "steps"] + [c for c, _ in cols]
    rows = [[n, str(m.get("branches", "learned")), _labels_text(m), str((m.get("provenance") or {}).get("recon_weight", 0) or 0),
             str(total_steps(m.get("provenance") or {}))]
            + [_glance_value(m, w) for _, w in cols] for n, m in models.items()]
    lines = [f"## At a glance: {len(models)} LOEV models on `{_shown(run.get('data'))}`", "",
             "@5 retrieval per subspace, probes on V++ (the figures the ablations compare). Key from the pitch subspace, tempo from the tempo subspace, family from the invariant"
             " subspace; degraded columns query with the degraded audio against the clean library.", ""]
    lines += _table(head, rows)
    ref = models.get(reference) if reference else None
    if ref is not None:
        delta_rows = []
        for n, m in models.items():
            if n == reference:
                continue
            vals = []
            for _, w in cols:
                a, b = _glance_value(m, w), _glance_value(ref, w)
                vals.append(None if a is None or b is None else f"{a - b:+.3f}")
            delta_rows.append([n] + vals)
        lines += ["", f"Difference from `{reference}` (positive: better than it):", ""]
        lines += _table(["model"] + [c for c, _ in cols], delta_rows)
    return lines


# The summary's rows: (aspect, retrieval metric, the subspace of a LOEV++ model that serves it)
ASPECTS = (("vibe: same instrument family (P@5)", "family", "invariant"),
           ("key: mir_eval weighted key score @5", "key", "pitch"),
           ("tempo: within 4 % (acc1@5)", "tempo_acc1", "tempo"))
BASELINE_KINDS = ("MFCC", "chroma", "onset autocorrelation", "essentia")


def baseline_kind(name: str) -> str:
    """The family a baseline belongs to in the summary (its own name when none fits)."""
    if name.startswith("mfcc"):
        return "MFCC"
    if "chroma" in name:
        return "chroma"
    if name.startswith("essentia"):
        return "essentia"
    if "tempogram" in name or "autocorr" in name:
        return "onset autocorrelation"
    return name


def shipped_model(runs: Sequence[dict[str, Any]]) -> str | None:
    """The name under which the app's default checkpoint was evaluated (matched by model id)."""
    from engine.model.checkpoint import read_checkpoint_info
    from engine.resources import default_checkpoint

    try:
        model_id = read_checkpoint_info(default_checkpoint()).model_id
    except (LoevError, OSError):
        return None
    return next((name for run in runs for name, m in run.get("models", {}).items()
                 if m.get("model_id") == model_id), None)


def summary_rows(bench: dict[str, Any], shipped: str) -> tuple[list[str], list[list[Any]]]:
    """(header, rows) of the summary table: per aspect, the shipped model's figure @5, the best
    baseline of each kind, chance, the best any ranking could reach, and shipped minus the best
    baseline. ``bench``: every model and baseline measured on one benchmark."""
    model = bench["models"][shipped]
    kinds: dict[str, dict[str, Any]] = {}
    for name, b in bench["baselines"].items():
        kinds.setdefault(baseline_kind(name), {})[name] = b
    order = [k for k in BASELINE_KINDS if k in kinds] + sorted(k for k in kinds if k not in BASELINE_KINDS)
    header = ["aspect", f"shipped `{shipped}`", *order, "chance", "best possible", "shipped - best baseline"]
    rows = []
    for title, metric, sub in ASPECTS:
        space = sub if sub in model.get("retrieval", {}) else "all"
        mine = _at5(model, space, metric)
        row: list[Any] = [title, "–" if mine is None else f"{mine:.3f} ({space})"]
        best: tuple[float, str] | None = None
        for kind in order:
            scored = [(v, n) for n, b in kinds[kind].items()
                      if (v := b.get("retrieval", {}).get(metric, {}).get("5")) is not None]
            top = max(scored) if scored else None
            row.append("–" if top is None else f"{top[0]:.3f} ({top[1]})")
            if top is not None and (best is None or top > best):
                best = top
        row += [bench.get("chance", {}).get(metric), bench.get("oracle", {}).get(metric, {}).get("5")]
        row.append("–" if mine is None or best is None else f"{mine - best[0]:+.3f} vs {best[1]}")
        rows.append(row)
    return header, rows


def _summary_section(benches: Sequence[dict[str, Any]], shipped: str | None) -> list[str]:
    lines = ["## The shipped model against the baselines", ""]
    found = [b for b in benches if shipped and shipped in b["models"]]
    if not found:
        return lines + ["No run here evaluated the shipped model (the app's default checkpoint); "
                        "`loev-train report --shipped NAME` names it.", ""]
    for bench in found:
        lines += [f"`{shipped}`, the app's default model, on the benchmark `{_shown(bench.get('data'))}` "
                  f"({bench.get('n_tracks')} tracks, {bench.get('audio_minutes')} min), next to DSP baselines "
                  "on the same tracks. Each figure is retrieval @5: for every track, the mean score of its 5 "
                  "nearest other tracks. The model answers each aspect from its own subspace (in brackets); "
                  "a baseline kind shows its best descriptor on that aspect. Chance: random neighbours; best "
                  "possible: the best any ranking could do with these labels. Higher is better.", ""]
        lines += _table(*summary_rows(bench, shipped))
    return lines + ["Below: every model's training budget, the ablations at a glance, and for each eval folder "
                    "the claims, retrieval at k = 1, 3, 5, 10, probes, invariance curves and robustness; last, "
                    "what differs from the paper's setting.", ""]


def _at5(result: dict[str, Any], subspace: str, metric: str) -> float | None:
    return result.get("retrieval", {}).get(subspace, {}).get(metric, {}).get("5")


def _curve_ratio(model: dict[str, Any]) -> tuple[float, float] | None:
    """Mean cosine distance at -4 and +4 semitones: (pitch subspace, invariant subspace)."""
    c = model.get("curves", {}).get("pitch")
    if not c or "pitch" not in c["subspaces"] or "invariant" not in c["subspaces"]:
        return None
    idx = [i for i, v in enumerate(c["values"]) if abs(abs(v) - 4.0) < 1e-6]
    if not idx:
        return None
    mean = lambda s: sum(c["subspaces"][s][i] for i in idx) / len(idx)  # noqa: E731
    return mean("pitch"), mean("invariant")


def claim_rows(run: dict[str, Any], baselines: dict[str, Any] | None = None,
               others: dict[str, Any] | None = None) -> list[list[Any]]:
    """LOEV++'s claims (each subspace wins its own aspect and beats the baselines), checked on
    one run: (model, claim, measured, met).

    ``baselines`` and ``others`` (models): measured on the same data in other eval folders,
    so that each model can be evaluated on its own (the run's own entries win)."""
    rows: list[list[Any]] = []

    def add(model: str, claim: str, a: float | None, b: float | None, met: bool | None, fmt: str) -> None:
        if a is None or b is None:
            return
        rows.append([model, claim, fmt.format(a=a, b=b), "yes" if met else "**no**"])

    models = run.get("models", {})
    mules = {n: m for n, m in {**(others or {}), **models}.items() if m.get("method") == "mule++"}
    base = {**(baselines or {}), **run.get("baselines", {})}
    for name, m in models.items():
        if m.get("method") != "loev++":
            continue
        kp, ki = _at5(m, "pitch", "key"), _at5(m, "invariant", "key")
        add(name, "pitch beats invariant on key@5", kp, ki, (kp or 0) > (ki or 0), "{a:.3f} vs {b:.3f}")
        tt, ti = _at5(m, "tempo", "tempo_acc1"), _at5(m, "invariant", "tempo_acc1")
        add(name, "tempo beats invariant on tempo acc1@5", tt, ti, (tt or 0) > (ti or 0), "{a:.3f} vs {b:.3f}")
        ratio = _curve_ratio(m)
        if ratio:
            add(name, "pitch curve at +-4 st >= 3x invariant's", ratio[0], ratio[1], ratio[0] >= 3 * ratio[1],
                "{a:.3f} vs {b:.3f}")
        for un, u in mules.items():
            ku, tu, fu = _at5(u, "all", "key"), _at5(u, "all", "tempo_acc1"), _at5(u, "all", "family")
            add(name, f"pitch beats {un} (all) on key@5", kp, ku, (kp or 0) > (ku or 0), "{a:.3f} vs {b:.3f}")
            add(name, f"tempo beats {un} (all) on tempo acc1@5", tt, tu, (tt or 0) > (tu or 0), "{a:.3f} vs {b:.3f}")
            fi = _at5(m, "invariant", "family")
            add(name, f"invariant within 2 points of {un} (all) on family@5", fi, fu,
                fi is not None and fu is not None and fi >= fu - 0.02, "{a:.3f} vs {b:.3f}")
        for bn, b in base.items():
            metric, sub = ("key", "pitch") if b.get("target") == "key" else ("tempo_acc1", "tempo")
            label = "key@5" if metric == "key" else "tempo acc1@5"
            mv, bv = _at5(m, sub, metric), b.get("retrieval", {}).get(metric, {}).get("5")
            add(name, f"{sub} beats baseline {bn} on {label}", mv, bv, (mv or 0) > (bv or 0), "{a:.3f} vs {b:.3f}")
    return rows


def _claims_section(run: dict[str, Any], baselines: dict[str, Any] | None = None,
                    others: dict[str, Any] | None = None) -> list[str]:
    rows = claim_rows(run, baselines, others)
    if not rows:
        return []
    return ["## LOEV++ claims checked on this benchmark", ""] + _table(["model", "claim", "measured", "met"], rows)


def render(runs: Sequence[dict[str, Any]], out_dir: Path, *, title: str = "LOEV Explorer: results",
           reference: str | None = None, shipped: str | None = None) -> str:
    """The Markdown text of RESULTS.md for ``runs`` (figures copied next to it).

    ``reference``: a model name; benchmarks holding it get a table of differences from it.
    ``shipped``: the name of the app's default model among the runs' models; it opens the
    report against the baselines.
    """
    args = (f" --reference {reference}" if reference else "") + (f" --shipped {shipped}" if shipped else "")
    lines = [f"# {title}", "",
             "Regenerated by `loev-train report --runs " + " ".join(display_path(r["_dir"]) for r in runs)
             + args + " --out <this file>` from each folder's `metrics.json` (written by `loev-train eval`)."
             " Do not edit by hand.", ""]
    # Everything measured on one benchmark folder, across eval folders: the claims compare
    # with baselines and MULE++ models evaluated separately, the glance table lists them all.
    shared: dict[str, dict[str, Any]] = {}
    for run in runs:
        d = shared.setdefault(str(run.get("data")), {"data": run.get("data"), "models": {}, "baselines": {},
                                                     "degradations": [], "n_tracks": run.get("n_tracks"),
                                                     "audio_minutes": run.get("audio_minutes"),
                                                     "chance": run.get("chance", {}), "oracle": run.get("oracle", {})})
        for name, m in run.get("models", {}).items():  # one model in two folders: union of figures
            d["models"][name] = {**d["models"].get(name, {}), **m}
        d["baselines"].update(run.get("baselines", {}))
        d["degradations"] += [k for k in run.get("degradations") or [] if k not in d["degradations"]]
    lines += _summary_section(list(shared.values()), shipped)
    lines += _budget_section(runs)
    for d in shared.values():
        lines += _glance_section(d, reference)
    for run in runs:
        lines += [f"# Benchmark `{Path(run['_dir']).name}`", ""]
        d = shared[str(run.get("data"))]
        lines += _claims_section(run, d["baselines"], d["models"])
        lines += _retrieval_section(run) + _probe_section(run) + _curves_section(run, out_dir)
        lines += _robustness_section(run)
    lines += ["## What differs from the paper's setting", "", DIFFERENCES]
    return "\n".join(lines)


def write_report(run_dirs: Sequence[str | os.PathLike[str]], out: str | os.PathLike[str], *,
                 reference: str | None = None, shipped: str | None = None) -> Path:
    """Write RESULTS.md (atomically) from eval folders; returns its path.

    ``shipped``: the app's default model's name in the runs; by default the model whose id
    is the default checkpoint's.
    """
    out = Path(out)
    runs = [load_run(d) for d in run_dirs]
    if not runs:
        raise ReportError("no eval folders given (--runs DIR...)")
    if shipped is not None and not any(shipped in r.get("models", {}) for r in runs):
        raise ReportError(f"--shipped {shipped}: no such model in the eval folders")
    out.parent.mkdir(parents=True, exist_ok=True)
    text = render(runs, out.parent, reference=reference, shipped=shipped or shipped_model(runs))
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(out)
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``loev-train report``."""
    parser.add_argument("--runs", nargs="+", required=True, help="eval output folders (each with metrics.json)")
    parser.add_argument("--out", type=Path, default=Path("docs/RESULTS.md"), help="default docs/RESULTS.md")
    parser.add_argument("--reference", default=None,
                        help="model name to compare the others with (ablations' base)")
    parser.add_argument("--shipped", default=None,
                        help="the app's default model's name in the eval folders (default: found by its model id)")


def run(args: argparse.Namespace) -> int:
    path = write_report(args.runs, args.out, reference=args.reference, shipped=args.shipped)
    print(f"{path}: written from {len(args.runs)} eval folder(s)")
    return 0
