"""loev-train report: RESULTS.md from hand-made metrics.json files with known claims."""
from __future__ import annotations

import json
import re

import pytest

from trainer import report


def _ret(key, tempo, family):
    return {"key": {"5": key}, "tempo_acc1": {"5": tempo}, "family": {"5": family}}


def _metrics():
    curve = {"pitch": {"values": [-4.0, 0.0, 4.0],
                       "subspaces": {"invariant": [0.01, 0.0, 0.03], "pitch": [0.2, 0.0, 0.1], "tempo": [0, 0, 0]}},
             "tempo": {"values": [0.5, 1.0, 2.0], "subspaces": {"invariant": [0, 0, 0], "pitch": [0, 0, 0],
                                                                 "tempo": [0.3, 0, 0.3]}}}
    return {"data": "/bench", "n_tracks": 40, "audio_minutes": 20.0, "ks": [5], "chance": {"key": 0.08},
            "degradations": [],
            "baselines": {"chroma12": {"target": "key", "retrieval": _ret(0.60, 0.1, 0.3)},
                          "tempogram": {"target": "tempo", "retrieval": _ret(0.1, 0.86, 0.3)}},
            "models": {
                "loevpp": {"method": "loev++", "branches": "structured", "profile": "tiny",
                           "provenance": {"steps": 1200, "tracks": 300, "batch_views": 64},
                           "retrieval": {"invariant": _ret(0.08, 0.30, 0.78), "pitch": _ret(0.65, 0.2, 0.4),
                                         "tempo": _ret(0.1, 0.90, 0.4), "all": _ret(0.5, 0.6, 0.7)},
                           "curves": curve},
                "mulepp": {"method": "mule++", "branches": "learned", "profile": "tiny", "provenance": {},
                           "retrieval": {"all": _ret(0.30, 0.50, 0.79)}}}}


def test_claims_are_checked_from_the_figures():
    rows = {(r[0], r[1]): (r[2], r[3]) for r in report.claim_rows(_metrics())}
    assert rows[("loevpp", "pitch beats invariant on key@5")] == ("0.650 vs 0.080", "yes")
    assert rows[("loevpp", "pitch curve at +-4 st >= 3x invariant's")] == ("0.150 vs 0.020", "yes")
    assert rows[("loevpp", "invariant within 2 points of mulepp (all) on family@5")] == ("0.780 vs 0.790", "yes")
    assert rows[("loevpp", "pitch beats baseline chroma12 on key@5")] == ("0.650 vs 0.600", "yes")
    assert rows[("loevpp", "tempo beats baseline tempogram on tempo acc1@5")] == ("0.900 vs 0.860", "yes")
    assert not any(m == "mulepp" for m, _ in rows)  # claims are about LOEV++ models


def test_report_renders_every_section(tmp_path):
    run = tmp_path / "eval_a"
    run.mkdir()
    (run / "metrics.json").write_text(json.dumps(_metrics()))
    out = report.write_report([run], tmp_path / "docs" / "RESULTS.md")
    text = out.read_text()
    assert "| loevpp | loev++ | structured | tiny | 1200 | 300 | 64 |" in text
    assert "| baseline: chroma12 | key | 0.600 |" in text and "| loevpp | pitch | 0.650 |" in text
    assert "What differs from the paper's setting" in text
    assert "| loevpp | pitch | 0.200 | 0.100 |" in text  # curve table at -4 and +4 semitones


def test_glance_table_and_differences_from_the_reference(tmp_path):
    m = _metrics()
    m["degradations"] = ["noise_10db"]
    ssl = m["models"]["loevpp"]
    ssl["robustness"] = {"noise_10db": {"pitch": {"key": {"5": 0.5}}, "tempo": {"tempo_acc1": {"5": 0.7}}}}
    ssl["probe"] = {"all": {"key": 0.4, "tempo_acc1": 0.3, "family_acc": 0.6}}
    sup = json.loads(json.dumps(ssl))
    sup["provenance"].update(labels="labels.csv", supervised_fraction=0.5, recon_weight=1.0, init_steps=300)
    sup["retrieval"]["pitch"]["key"]["5"] = 0.70
    sup["robustness"]["noise_10db"]["pitch"]["key"]["5"] = 0.45
    m["models"]["sup"] = sup
    run = tmp_path / "eval_b"
    run.mkdir()
    (run / "metrics.json").write_text(json.dumps(m))
    text = report.write_report([run], tmp_path / "R.md", reference="loevpp").read_text()
    # model, branches, labels, recon W, steps, family, key, tempo, 3 probes, noise key, noise tempo
    assert "| loevpp | structured | none | 0 | 1200 | 0.780 | 0.650 | 0.900 | 0.400 | 0.300 | 0.600 | 0.500 | 0.700 |" in text
    assert "| sup | structured | 50 % | 1.0 | 1500 | 0.780 | 0.700 |" in text
    assert "| sup | +0.000 | +0.050 | +0.000 | +0.000 | +0.000 | +0.000 | -0.050 | +0.000 |" in text
    assert "--reference loevpp" in text
    assert "mulepp |" not in text.split("At a glance")[1].split("Retrieval")[0]  # LOEV models only


def test_claims_use_baselines_measured_on_the_same_data_in_another_folder(tmp_path):
    base, models = _metrics(), _metrics()
    base["models"], models["baselines"] = {}, {}
    other = _metrics()
    other["data"], other["baselines"] = "/elsewhere", {}
    for name, m in (("b", base), ("m", models)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "metrics.json").write_text(json.dumps(m))
    text = report.write_report([tmp_path / "b", tmp_path / "m"], tmp_path / "R.md").read_text()
    assert "| loevpp | pitch beats baseline chroma12 on key@5 | 0.650 vs 0.600 | yes |" in text
    assert text.count("| loevpp | pitch beats mulepp (all) on key@5 | 0.650 vs 0.300 | yes |") == 1
    assert text.count("## At a glance: 1 LOEV models on `bench`") == 1  # one table per benchmark
    other["data"] = "/elsewhere"
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / "metrics.json").write_text(json.dumps(other))
    text = report.write_report([tmp_path / "b", tmp_path / "o"], tmp_path / "R.md").read_text()
    assert "beats baseline" not in text  # another benchmark's baselines are not used


def test_a_model_evaluated_in_two_folders_is_listed_once_with_the_figures_of_both(tmp_path):
    a, b = _metrics(), _metrics()
    a["degradations"] = b["degradations"] = ["noise_10db"]
    a["models"]["loevpp"]["robustness"] = {"noise_10db": {"pitch": {"key": {"5": 0.5}}}}
    b["models"]["loevpp"]["probe"] = {"all": {"key": 0.4}}
    for name, m in (("a", a), ("b", b)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "metrics.json").write_text(json.dumps(m))
    text = report.write_report([tmp_path / "a", tmp_path / "b"], tmp_path / "R.md").read_text()
    assert text.count("| loevpp | loev++ | structured | tiny | 1200 |") == 1  # budget table
    row = next(line for line in text.splitlines() if line.startswith("| loevpp | structured | none"))
    assert "| 0.400 |" in row and "| 0.500 |" in row


def _write(tmp_path, metrics, name="eval_a"):
    run = tmp_path / name
    run.mkdir()
    (run / "metrics.json").write_text(json.dumps(metrics))
    return run


def test_report_opens_with_the_shipped_model_against_each_kind_of_baseline(tmp_path):
    m = _metrics()
    m["oracle"] = {"key": {"5": 0.9}}
    m["baselines"]["essentia_key"] = {"target": "key", "retrieval": _ret(0.70, 0.05, 0.1)}
    m["baselines"]["mfcc20"] = {"target": "family", "retrieval": _ret(0.2, 0.1, 0.5)}
    text = report.write_report([_write(tmp_path, m)], tmp_path / "R.md", shipped="loevpp").read_text()
    headings = [line for line in text.splitlines() if line.startswith("## ")]
    assert headings[0] == "## The shipped model against the baselines"
    summary = text.split(headings[0])[1].split(headings[1])[0]
    assert ("| aspect | shipped `loevpp` | MFCC | chroma | onset autocorrelation | essentia | chance | best possible"
            " | shipped - best baseline |") in summary
    assert ("| key: mir_eval weighted key score @5 | 0.650 (pitch) | 0.200 (mfcc20) | 0.600 (chroma12) |"
            " 0.100 (tempogram) | 0.700 (essentia_key) | 0.080 | 0.900 | -0.050 vs essentia_key |") in summary
    assert ("| tempo: within 4 % (acc1@5) | 0.900 (tempo) | 0.100 (mfcc20) | 0.100 (chroma12) | 0.860 (tempogram) |"
            " 0.050 (essentia_key) | – | – | +0.040 vs tempogram |") in summary
    assert "| vibe: same instrument family (P@5) | 0.780 (invariant) | 0.500 (mfcc20) |" in summary
    assert "--shipped loevpp" in text


def test_the_shipped_model_is_found_by_the_default_checkpoints_id(tmp_path):
    from engine.model.checkpoint import read_checkpoint_info
    from engine.resources import default_checkpoint

    m = _metrics()
    m["models"]["loevpp"]["model_id"] = read_checkpoint_info(default_checkpoint()).model_id
    text = report.write_report([_write(tmp_path, m)], tmp_path / "R.md").read_text()
    assert "| aspect | shipped `loevpp` |" in text
    m["models"]["loevpp"]["model_id"] = "0123456789abcdef"
    text = report.write_report([_write(tmp_path, m, "eval_b")], tmp_path / "R.md").read_text()
    assert "No run here evaluated the shipped model" in text
    with pytest.raises(report.ReportError, match="--shipped nope: no such model"):
        report.write_report([tmp_path / "eval_b"], tmp_path / "R.md", shipped="nope")


@pytest.mark.parametrize("inside", [False, True])
def test_report_shows_no_absolute_path_of_the_machine(tmp_path, monkeypatch, inside):
    m = _metrics()
    m["data"] = str(tmp_path / "runs" / "bench60")
    m["models"]["loevpp"]["provenance"].update(labels=str(tmp_path / "runs" / "corpus" / "labels.csv"),
                                               init=str(tmp_path / "runs" / "models" / "a.safetensors"),
                                               data=str(tmp_path / "runs" / "corpus"))
    m["models"]["loevpp"]["checkpoint"] = str(tmp_path / "runs" / "models" / "loevpp.safetensors")
    run = _write(tmp_path, m)
    if inside:  # the report is made from the checkout that holds the runs: paths relative to it
        monkeypatch.chdir(tmp_path)
    text = report.write_report([run.resolve()], tmp_path / "docs" / "R.md", shipped="loevpp").read_text()
    assert str(tmp_path) not in text
    assert not re.search(r"(^|[\s`(|=])/\w", text, re.MULTILINE), re.search(r".{40}(^|[\s`(|=])/\w.{40}", text)
    assert "--runs eval_a " in text
    if inside:
        assert "on `runs/bench60`" in text and "| runs/corpus/labels.csv (" in text
        assert "init=runs/models/a.safetensors" in text
    else:  # outside the working folder: the last component only
        assert "on `bench60`" in text and "| labels.csv (" in text and "init=a.safetensors" in text
