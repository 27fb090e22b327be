"""``loev-train fit`` / ``export`` end to end on a tiny generated folder of tones and clicks.

Small batches (2 anchors x 2 views) of the ``tiny`` profile keep each step around a second.
"""
from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from engine.model.checkpoint import load_checkpoint, read_checkpoint_info
from trainer.cli import main

SR = 16000
SMALL = ["--profile", "tiny", "--batch-anchors", "2", "--views", "2", "--workers", "0",
         "--no-progress", "--device", "cpu"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """Four 4-second files: harmonic tones over click tracks at different tempi."""
    root = tmp_path_factory.mktemp("fitdata")
    t = np.arange(4 * SR) / SR
    keys = ["C major", "D major", "a minor", "E major"]
    rows = ["file,key,tempo,program,family,source,seed,soundfont"]
    for i, (midi, bpm) in enumerate([(57, 90), (60, 120), (64, 100), (67, 140)]):
        f = 440 * 2 ** ((midi - 69) / 12)
        y = sum(np.sin(2 * np.pi * f * h * t) / h for h in (1, 2, 3)) * 0.2
        y[(np.arange(len(t)) % int(SR * 60 / bpm)) < 80] += 0.6
        sf.write(root / f"track{i}.wav", y.astype(np.float32), SR)
        rows.append(f"track{i}.wav,{keys[i]},{bpm},0,{'keys' if i % 2 else 'strings'},test,{i},none")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    return root


def _fit(folder: Path, out: Path, steps: int, *extra: str) -> int:
    return main(["fit", "--data", str(folder), "--out", str(out), "--steps", str(steps),
                 *SMALL, *extra])


def _losses(run: Path) -> list[tuple[int, str]]:
    with open(run / "log.csv", newline="") as f:
        return [(int(r["step"]), r["loss"]) for r in csv.DictReader(f)]


def test_fit_resume_is_exact_and_export_loads(folder, tmp_path):
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    assert _fit(folder, whole, 2, "--ckpt-every", "1") == 0
    assert _fit(folder, parts, 1, "--ckpt-every", "1") == 0
    assert _fit(folder, parts, 2, "--ckpt-every", "1") == 0  # same --out: resumes at step 1
    a, b = _losses(whole), _losses(parts)
    assert [s for s, _ in a] == [1, 2] and a == b
    assert all(np.isfinite(float(v)) for _, v in a)
    with open(whole / "log.csv", newline="") as f:
        row = next(csv.DictReader(f))
    assert {"loss_invariant", "loss_pitch", "loss_tempo", "views_per_s", "lr"} <= set(row)
    m1, _ = load_checkpoint(whole / "model.safetensors")
    m2, _ = load_checkpoint(parts / "model.safetensors")
    for (k, v1), v2 in zip(m1.state_dict().items(), m2.state_dict().values()):
        assert torch.equal(v1, v2), k

    info = read_checkpoint_info(whole / "model.safetensors")
    prov = info.config["provenance"]
    assert prov["steps"] == 2 and prov["method"] == "loev++" and prov["seed"] == 0
    assert info.subspaces == ("invariant", "pitch", "tempo")

    exported = tmp_path / "copy.safetensors"
    assert main(["export", str(whole), "--out", str(exported)]) == 0
    model, cfg = load_checkpoint(exported)
    assert cfg.method == "loev++"
    for k, v in model.state_dict().items():
        assert torch.equal(v, m1.state_dict()[k]), k
    with torch.no_grad():
        emb = model(torch.zeros(1, 48000))["embeddings"]
    assert set(emb) == {"invariant", "pitch", "tempo"}
    # ... and its ONNX export beside it, which the onnxruntime backend accepts as its own
    from engine.model.embed import Embedder

    assert exported.with_suffix(".onnx").is_file()
    assert Embedder(exported, backend="onnxruntime").embed_audio(np.zeros(16000, np.float32)).keys() == set(emb)

    # a finished run is left alone; other settings on the same folder are refused
    assert _fit(folder, whole, 2) == 0 and _losses(whole) == a
    assert _fit(folder, whole, 3, "--lr", "3e-4") == 2


def test_mule_mixup_and_semisupcon_runs(folder, tmp_path):
    assert _fit(folder, tmp_path / "mix", 1, "--method", "mule-mixup") == 0
    cfg = read_checkpoint_info(tmp_path / "mix" / "model.safetensors")
    assert cfg.config["method"] == "mule" and cfg.config["provenance"]["method"] == "mule-mixup"
    assert _fit(folder, tmp_path / "sup", 1, "--variants", "ps", "--labels",
                str(folder / "labels.csv"), "--supervised-fraction", "0.5",
                "--schedule", "cosine", "--warmup", "2") == 0
    assert [s for s, _ in _losses(tmp_path / "sup")] == [1]
    # weighted label positives: without a programs column (no invariant label positives) ...
    assert _fit(folder, tmp_path / "w0", 1, "--labels", str(folder / "labels.csv"),
                "--label-weighting", "weighted") == 0
    # ... and with one (files named by absolute path)
    rows = ["file,key,tempo,family,programs"] + [
        f"{folder / f'track{i}.wav'},C major,120,keys,{progs}"
        for i, progs in enumerate(["0;1;2", "1;2", "40", ""])]
    (tmp_path / "programs.csv").write_text("\n".join(rows) + "\n")
    weighted = ("--labels", str(tmp_path / "programs.csv"), "--label-weighting", "weighted")
    assert _fit(folder, tmp_path / "w1", 1, *weighted) == 0
    assert np.isfinite(float(_losses(tmp_path / "w1")[0][1]))
    info = read_checkpoint_info(tmp_path / "w1" / "model.safetensors")
    assert info.config["provenance"]["label_weighting"] == "weighted"
    assert _fit(folder, tmp_path / "w1", 2, "--labels", str(tmp_path / "programs.csv")) == 2


def test_step_masks_weighted_invariant_positives_by_hand():
    from trainer.data import TrackLabels
    from trainer.fit import step_masks

    programs = np.zeros((2, 129), dtype=bool)
    programs[0, [1, 2, 3]] = programs[1, [2, 3]] = True  # weight 2 * 2 / (3 + 2) = 0.8
    labels = TrackLabels(np.array([0, 1]), np.array([0, 0]), np.zeros(2), ("a", "b"), programs)
    batch = {"anchor": torch.tensor([0, 0, 1, 1]), "track": torch.tensor([0, 0, 1, 1]),
             "semitones": torch.zeros(4), "rate": torch.ones(4)}
    args = ("loev++", ("invariant", "pitch", "tempo"), ("pitch", "tempo"), batch,
            torch.zeros(4, 2, dtype=torch.bool), labels, torch.device("cpu"))
    weighted = step_masks(*args, "weighted")
    expected = torch.tensor([[0, 1, .8, .8], [1, 0, .8, .8], [.8, .8, 0, 1], [.8, .8, 1, 0]])
    assert torch.allclose(weighted["invariant"], expected)
    binary = step_masks(*args)
    assert binary["invariant"].dtype == torch.bool  # families differ: only the same anchor
    assert binary["invariant"].tolist() == (expected == 1).tolist()
    assert torch.equal(weighted["pitch"], binary["pitch"])  # single-label heads unchanged
    assert binary["pitch"][0, 2]  # both tracks in C major: a label positive across anchors


def test_recon_weight_with_semisupcon_trains_resumes_exactly_and_exports_the_encoder(folder, tmp_path):
    extra = ("--recon-weight", "0.5", "--labels", str(folder / "labels.csv"),
             "--supervised-fraction", "0.5", "--ckpt-every", "1")
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    assert _fit(folder, whole, 2, *extra) == 0
    assert _fit(folder, parts, 1, *extra) == 0
    assert _fit(folder, parts, 2, *extra) == 0
    assert _losses(whole) == _losses(parts)
    with open(whole / "log.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    # the total is the contrastive mean plus 0.5 x the reconstruction term
    for r in rows:
        heads = [float(r[f"loss_{h}"]) for h in ("invariant", "pitch", "tempo")]
        assert float(r["loss"]) == pytest.approx(np.mean(heads) + 0.5 * float(r["loss_recon"]),
                                                 rel=1e-4)
    info = read_checkpoint_info(whole / "model.safetensors")
    assert info.config["provenance"]["recon_weight"] == 0.5
    model, _ = load_checkpoint(whole / "model.safetensors")  # the encoder alone
    assert not any(k.startswith("decoder") for k in model.state_dict())
    # the decoder's weights travel in the training state
    from safetensors import safe_open

    state = next(whole.glob("train_state-*.safetensors"))
    with safe_open(str(state), "pt") as f:
        assert any(k.startswith("decoder.") for k in f.keys())
    assert _fit(folder, whole, 3, "--recon-weight", "1.0") == 2  # other settings refused
    assert _fit(folder, tmp_path / "neg", 1, "--recon-weight", "-1") == 2


def test_init_starts_from_a_checkpoint_and_records_the_budget(folder, tmp_path):
    assert _fit(folder, tmp_path / "a", 1) == 0
    src = tmp_path / "a" / "model.safetensors"
    assert _fit(folder, tmp_path / "b", 1, "--init", str(src), "--lr", "0") == 0
    m1, _ = load_checkpoint(src)
    m2, _ = load_checkpoint(tmp_path / "b" / "model.safetensors")
    for (k, v1), v2 in zip(m1.state_dict().items(), m2.state_dict().values()):
        assert torch.equal(v1, v2), k  # lr 0: the fine-tune kept the initial weights
    prov = read_checkpoint_info(tmp_path / "b" / "model.safetensors").config["provenance"]
    assert prov["init"] == str(src) and prov["init_steps"] == 1 and prov["steps"] == 1
    # another model config is refused with one line
    assert _fit(folder, tmp_path / "c", 1, "--init", str(src), "--method", "mule++") == 2


def test_a_fine_tune_keeps_the_descriptor_share_and_names_the_projectors_it_drops(folder, tmp_path, capsys):
    """--init from a model with a timbre descriptor, an input level and a key projector, no
    share or level given: the descriptor, its statistics and the level carry over, the
    projector does not and stderr says so, the pitch projection head keeps the columns of
    the branch; a resume keeps the run's shares."""
    import dataclasses

    from engine.model.checkpoint import save_checkpoint
    from trainer.projector import extended_model

    assert _fit(folder, tmp_path / "a", 1, "--branches", "structured", "--timbre-share", "0.5",
                "--peak-db", "-6") == 0
    m1, cfg1 = load_checkpoint(tmp_path / "a" / "model.safetensors")
    src = save_checkpoint(tmp_path / "key.safetensors",
                          extended_model(m1, dataclasses.replace(cfg1, pitch_learned_share=0.85), "pitch", 0))
    capsys.readouterr()
    assert _fit(folder, tmp_path / "b", 1, "--branches", "structured", "--init", str(src), "--lr", "0") == 0
    err = capsys.readouterr().err
    assert "--timbre-share 0.5, --peak-db -6 taken from it" in err
    assert "its key projector is not carried" in err
    m2, cfg2 = load_checkpoint(tmp_path / "b" / "model.safetensors")
    assert cfg2.timbre_share == 0.5 and cfg2.frontend.peak_db == -6.0 and m2.key_projector is None
    assert torch.equal(m2.timbre.loc, m1.timbre.loc)  # the source's statistics, not recalibrated
    w1, w2 = m1.state_dict()["heads.pitch.net.0.weight"], m2.state_dict()["heads.pitch.net.0.weight"]
    assert torch.equal(w1, w2)  # the projector's columns cut off again, the branch's kept
    assert _fit(folder, tmp_path / "b", 2, "--branches", "structured", "--init", str(src), "--lr", "0") == 0
    # given on the command line, a share wins over the checkpoint's
    assert _fit(folder, tmp_path / "c", 1, "--branches", "structured", "--init", str(src), "--lr", "0",
                "--timbre-share", "0") == 0
    assert load_checkpoint(tmp_path / "c" / "model.safetensors")[1].timbre_share == 0.0


def test_export_of_a_folder_without_state_fails(tmp_path):
    assert main(["export", str(tmp_path)]) == 2


@pytest.mark.skipif(shutil.which("torchrun", path=os.path.dirname(sys.executable)) is None,
                    reason="torchrun not installed next to this interpreter")
def test_torchrun_two_cpu_processes(folder, tmp_path):
    out = tmp_path / "ddp"
    cmd = [os.path.join(os.path.dirname(sys.executable), "torchrun"), "--standalone",
           "--nproc_per_node", "2", "-m", "trainer.cli", "fit", "--data", str(folder),
           "--out", str(out), "--steps", "2", *SMALL]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env,
                          cwd=Path(__file__).resolve().parents[1])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert [s for s, _ in _losses(out)] == [1, 2]
    info = read_checkpoint_info(out / "model.safetensors")
    assert info.config["provenance"]["batch_views"] == 2 * 2 * 2
    load_checkpoint(out / "model.safetensors")


@pytest.mark.parametrize(("change", "message"), [
    ({"method": "simclr"}, "unknown method 'simclr'; expected one of ('mule', 'mule++', 'loev', 'loev++', "
                           "'mule-mixup')"),
    ({"profile": "huge"}, "unknown profile 'huge'"),
    ({"branches": "fixed"}, "unknown branches 'fixed'"),
    ({"schedule": "linear"}, "unknown schedule 'linear'"),
    ({"label_weighting": "soft"}, "unknown label weighting 'soft'; expected one of ('binary', 'weighted')"),
    ({"variants": "pt"}, "unknown variants 'pt'"),
    ({"steps": -1}, "--steps must be >= 0, got -1"),
    ({"batch_anchors": 0}, "--batch-anchors must be >= 1, got 0"),
    ({"views": 1}, "--views must be >= 2 (views are contrasted in pairs), got 1"),
    ({"lr": -1e-4}, "--lr must be >= 0, got -0.0001"),
    ({"lr": float("nan")}, "--lr must be >= 0, got nan"),
    ({"warmup": -5}, "--warmup must be >= 0, got -5"),
    ({"temperature": 0.0}, "--temperature must be > 0, got 0.0"),
    ({"clip": -1.0}, "--clip must be >= 0 (0: off), got -1.0"),
    ({"ckpt_every": -1}, "--ckpt-every must be >= 0 (0: at the end), got -1"),
    ({"workers": -2}, "--workers must be >= 0, got -2"),
    ({"supervised_fraction": 1.5}, "--supervised-fraction must be within [0, 1], got 1.5"),
    ({"recon_weight": -1.0}, "--recon-weight must be >= 0, got -1.0"),
])
def test_fit_options_refuse_a_bad_value_naming_it(change, message):
    from trainer.fit import FitOptions

    with pytest.raises(ValueError) as e:
        FitOptions(**{"data": "d", "out": "o", "steps": 1, **change})
    assert message in str(e.value) and "\n" not in str(e.value)


def test_fit_options_accept_the_edges():
    from trainer.fit import FitOptions

    FitOptions(data="d", out="o", steps=0, views=2, lr=0.0, clip=0.0, ckpt_every=0, workers=0,
               supervised_fraction=0.0, recon_weight=0.0)
    FitOptions(data="d", out="o", steps=1, method="mule-mixup", variants="anything")  # mule-mixup has no variants


def test_fit_refuses_a_bad_option_before_touching_the_run_folder(folder, tmp_path, capsys):
    out = tmp_path / "run"
    assert _fit(folder, out, 1, "--temperature", "0") == 2
    assert capsys.readouterr().err.strip() == "loev-train: error: --temperature must be > 0, got 0.0"
    assert not out.exists()


def test_v2_fine_tune_from_an_older_config_calibrates_the_descriptor(folder, tmp_path):
    """--init from a checkpoint without the timbre descriptor: learned tensors carry over,
    the descriptor is calibrated on the training data, the shares are in the config."""
    assert _fit(folder, tmp_path / "a", 1, "--branches", "structured", "--method", "loev++") == 0
    src = tmp_path / "a" / "model.safetensors"
    assert _fit(folder, tmp_path / "b", 1, "--branches", "structured", "--method", "loev++", "--init", str(src),
                "--lr", "0", "--timbre-share", "0.5", "--tempo-plain-share", "0.5",
                "--labels", str(folder / "labels.csv"), "--mix", "songs=1") == 0
    m1, _ = load_checkpoint(src)
    m2, cfg = load_checkpoint(tmp_path / "b" / "model.safetensors")
    assert cfg.timbre_share == 0.5 and cfg.tempo_plain_share == 0.5
    assert torch.equal(m1.state_dict()["trunk.slow_stem.0.weight"], m2.state_dict()["trunk.slow_stem.0.weight"])
    assert not torch.equal(m2.timbre.scale, torch.ones_like(m2.timbre.scale))  # calibrated
    assert _fit(folder, tmp_path / "c", 1, "--mix", "drums=1") == 2  # one clear line, no run
