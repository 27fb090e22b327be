"""The vibe space's timbre projector: config, network, checkpoint, ``loev-train projector``."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from engine.config import CHUNK_SAMPLES, SAMPLE_RATE, FrontendConfig, ModelConfig, make_config
from engine.model.checkpoint import load_checkpoint, read_checkpoint_info, save_checkpoint
from engine.model.frontend import build_frontend
from engine.model.branches import TempoProjector, TimbreProjector
from engine.model.network import build_model
from tests.test_heads import write_corpus


def test_config_carries_and_checks_the_projector_share():
    cfg = make_config("tiny", "loev++", "psts", branches="structured", timbre_share=0.2)
    with_proj = dataclasses.replace(cfg, timbre_learned_share=0.4)
    assert ModelConfig.from_dict(with_proj.to_dict()).timbre_learned_share == 0.4
    old = cfg.to_dict()
    del old["timbre_learned_share"]  # a checkpoint written before the projector
    assert ModelConfig.from_dict(old).timbre_learned_share == 0.0
    with pytest.raises(ValueError, match="timbre descriptor"):
        dataclasses.replace(cfg, timbre_share=0.0, timbre_learned_share=0.4)
    with pytest.raises(ValueError, match="below 1"):
        dataclasses.replace(cfg, timbre_share=0.5, timbre_learned_share=0.5)
    bad = with_proj.to_dict()
    bad["timbre_learned_share"] = "0.4"
    with pytest.raises(ValueError):
        ModelConfig.from_dict(bad)


def _tone(freq: float, seconds: float = CHUNK_SAMPLES / SAMPLE_RATE) -> np.ndarray:
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    return (0.3 * sum(np.sin(2 * np.pi * freq * h * t) / h for h in range(1, 6))).astype(np.float32)


def test_transpose_mel_moves_harmonics_as_a_pitch_shift_does():
    from trainer.projector import transpose_mel

    fe = build_frontend(FrontendConfig())
    with torch.no_grad():
        a4 = fe(torch.from_numpy(_tone(440.0))[None])[:, 0]
        eb5 = fe(torch.from_numpy(_tone(440.0 * 2 ** 0.5))[None])[:, 0]
        moved = transpose_mel(a4, torch.tensor([6.0]), f_max=8000.0)
        still = transpose_mel(a4, torch.tensor([0.0]), f_max=8000.0)
    cos = torch.nn.functional.cosine_similarity
    assert torch.allclose(still, a4, atol=1e-4)
    # The transposed spectrum is the tritone's, not the original's.
    assert cos(moved.mean(-1), eb5.mean(-1)).item() > 0.95 > cos(a4.mean(-1), eb5.mean(-1)).item() + 0.1


@pytest.fixture(scope="module")
def descriptor_checkpoint(tmp_path_factory):
    """A tiny structured checkpoint with a calibrated timbre descriptor (untrained weights)."""
    torch.manual_seed(0)
    net = build_model(make_config("tiny", "loev++", "psts", branches="structured", timbre_share=0.2)).eval()
    with torch.no_grad():
        ys = torch.from_numpy(np.stack([_tone(f) for f in (55, 110, 220, 440, 880, 1760, 3000, 5000)]))
        net.timbre.calibrate(net.frontend(ys))
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "descriptor.safetensors", net)


def sound_corpus(folder, split: str = "train"):
    """Low decaying tones ("bass") and bright noise bursts ("hihat"), six each."""
    rng = np.random.default_rng(0)
    rows = []
    for i in range(6):
        t = np.arange(int(0.8 * SAMPLE_RATE)) / SAMPLE_RATE
        low = np.sin(2 * np.pi * rng.uniform(45, 90) * t) * np.exp(-t / 0.3)
        noise = np.diff(rng.standard_normal(len(t) + 1)) * np.exp(-t / rng.uniform(0.02, 0.2))
        rows.append((f"bass{i}_synth_hit.wav", (0.5 * low).astype(np.float32), "", "no tempo", "bass"))
        rows.append((f"hat{i}_drum_hit.wav", (0.2 * noise).astype(np.float32), "no key", "no tempo", "hihat"))
    return write_corpus(folder, rows, split)


def test_loev_train_projector_adds_a_projector_and_leaves_the_other_spaces(descriptor_checkpoint, tmp_path,
                                                                        one_torch_thread):
    from trainer.cli import main

    data = sound_corpus(tmp_path / "corpus")
    out = tmp_path / "projected.safetensors"
    assert main(["projector", str(descriptor_checkpoint), "--data", str(data), "--out", str(out),
                 "--epochs", "20", "--share", "0.4", "--val-fraction", "0"]) == 0
    before, _ = load_checkpoint(descriptor_checkpoint)
    after, cfg = load_checkpoint(out)
    assert cfg.timbre_learned_share == 0.4 and cfg.timbre_share == 0.2
    info = read_checkpoint_info(out)
    assert info.model_id != read_checkpoint_info(descriptor_checkpoint).model_id  # libraries rescan
    assert info.dims["invariant"] == read_checkpoint_info(descriptor_checkpoint).dims["invariant"] + 128
    assert info.config["provenance"]["trainer"] == "loev-train projector"
    y = torch.from_numpy(np.stack([_tone(110.0), _tone(2000.0)]))
    with torch.no_grad():
        e0, e1 = before(y)["embeddings"], after(y)["embeddings"]
    for space in ("pitch", "tempo"):
        assert torch.equal(e0[space], e1[space])
    # The learned and descriptor parts of the vibe space are the old ones at new shares.
    n_learned = after.trunk.out_dim
    for lo, hi in ((0, n_learned), (n_learned, n_learned + after.timbre.out_dim)):
        old_part, new_part = (torch.nn.functional.normalize(e[:, lo:hi], dim=1) for e in (e0["invariant"],
                                                                                           e1["invariant"]))
        assert torch.allclose(old_part, new_part, atol=1e-5)
    # The training-only projection head reads the projector's dimensions with zero weights.
    w = after.heads["invariant"].net[0].weight
    assert not w[:, -128:].any() and torch.equal(w[:, :-128], before.heads["invariant"].net[0].weight)
    # The projector was trained: it tells the two classes apart in its own part.
    emb = after.timbre_mlp
    with torch.no_grad():
        spec = after.frontend(torch.from_numpy(np.stack([
            np.pad(_tone(70.0, 0.8), (0, CHUNK_SAMPLES - int(0.8 * SAMPLE_RATE))),
            np.pad(0.2 * np.diff(np.random.default_rng(5).standard_normal(int(0.8 * SAMPLE_RATE) + 1))
                   .astype(np.float32) * np.exp(-np.arange(int(0.8 * SAMPLE_RATE)) / 1600.0).astype(np.float32),
                   (0, CHUNK_SAMPLES - int(0.8 * SAMPLE_RATE)))])))
        z = torch.nn.functional.normalize(emb(spec, after.timbre.raw(spec)), dim=1)
        untrained = TimbreProjector(96, after.timbre.out_dim).eval()
        untrained.loc.copy_(emb.loc)
        untrained.scale.copy_(emb.scale)
        u = torch.nn.functional.normalize(untrained(spec, after.timbre.raw(spec)), dim=1)
    assert float(z[0] @ z[1]) < float(u[0] @ u[1]) - 0.3


def test_a_projector_is_trained_again_from_scratch_and_the_same_way(descriptor_checkpoint, tmp_path,
                                                                    one_torch_thread):
    from trainer.cli import main

    data = sound_corpus(tmp_path / "corpus")
    first, again = tmp_path / "first.safetensors", tmp_path / "again.safetensors"
    args = ["--data", str(data), "--epochs", "3", "--val-fraction", "0"]
    assert main(["projector", str(descriptor_checkpoint), "--out", str(first)] + args) == 0
    # From a checkpoint that has a projector: the same result as from its source, not a
    # continuation of the old projector's training.
    assert main(["projector", str(first), "--out", str(again)] + args) == 0
    a, _ = load_checkpoint(first)
    b, _ = load_checkpoint(again)
    for k, v in a.state_dict().items():
        assert torch.equal(v, b.state_dict()[k]), k


def test_loev_train_projector_refuses_held_out_material_and_a_model_without_descriptor(
        descriptor_checkpoint, tiny_checkpoint, tmp_path, capsys):
    from trainer.cli import main

    bench = sound_corpus(tmp_path / "bench", split="bench")
    out = tmp_path / "never.safetensors"
    assert main(["projector", str(descriptor_checkpoint), "--data", str(bench), "--out", str(out)]) == 2
    assert "held-out" in capsys.readouterr().err
    train = sound_corpus(tmp_path / "train")
    assert main(["projector", str(tiny_checkpoint), "--data", str(train), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "timbre descriptor" in err and err.count("\n") == 1
    assert not out.exists()


def test_a_projector_checkpoint_exports_to_onnx_with_the_same_vectors(descriptor_checkpoint, tmp_path):
    pytest.importorskip("onnxruntime")
    from engine.model.embed import Embedder
    from trainer.cli import main

    data = sound_corpus(tmp_path / "corpus")
    ckpt = tmp_path / "projected.safetensors"
    assert main(["projector", str(descriptor_checkpoint), "--data", str(data), "--out", str(ckpt),
                 "--epochs", "2", "--val-fraction", "0"]) == 0
    assert main(["export", str(ckpt)]) == 0
    ys = [_tone(f) for f in (98.0, 1500.0)]
    a = Embedder(ckpt, backend="torch").embed_audio_batch(ys)
    b = Embedder(ckpt, backend="onnxruntime").embed_audio_batch(ys)
    for va, vb in zip(a, b):
        assert np.allclose(va["invariant"], vb["invariant"], atol=1e-4)


def test_precision_at_5_counts_same_label_neighbours():
    from trainer.projector import precision_at_5

    rng = np.random.default_rng(0)
    centres = np.eye(4)[:2] * 10
    x = np.concatenate([centres[0] + rng.normal(size=(6, 4)) * 0.1, centres[1] + rng.normal(size=(6, 4)) * 0.1])
    assert precision_at_5(x, ["a"] * 6 + ["b"] * 6) == 1.0
    # labels that ignore the clusters: 2 of each file's 5 neighbours share its label
    assert precision_at_5(x, ["a", "a", "a", "b", "b", "b"] * 2) == pytest.approx(0.4)


# ------------------------------------------------------------------------- the tempo space


def test_config_carries_and_checks_the_tempo_projector_share():
    cfg = make_config("tiny", "loev++", "psts", branches="structured")
    assert ModelConfig.from_dict(dataclasses.replace(cfg, tempo_learned_share=0.5).to_dict()).tempo_learned_share == 0.5
    with pytest.raises(ValueError, match="structured tempo branch"):
        dataclasses.replace(make_config("tiny", "loev++", "psts"), tempo_learned_share=0.5)
    onsets = dataclasses.replace(cfg, tempo_learned_share=0.5, tempo_projector_onsets=True)
    assert ModelConfig.from_dict(onsets.to_dict()).tempo_projector_onsets is True
    assert ModelConfig.from_dict({k: v for k, v in cfg.to_dict().items()
                                  if k != "tempo_projector_onsets"}).tempo_projector_onsets is False
    for flag in ("tempo_projector_onsets", "tempo_projector_tempogram"):
        with pytest.raises(ValueError, match="needs a learned tempo projector"):
            dataclasses.replace(cfg, **{flag: True})
        with pytest.raises(ValueError, match=f"{flag} must be true or false"):
            ModelConfig.from_dict({**onsets.to_dict(), flag: "yes"})
    both = dataclasses.replace(onsets, tempo_projector_tempogram=True)
    model = build_model(ModelConfig.from_dict(both.to_dict()))
    tempo = model.structured["tempo"]
    assert model.tempo_mlp.in_dim == tempo.out_dim + tempo.onset_dim + tempo.tempogram_dim


def test_onset_periodicity_peaks_at_the_beat_not_at_its_half():
    """The projector's extra input: per onset band, the autocorrelation at 0.1-1.5 s. A click
    every 0.4 s (150 BPM) peaks at 0.4 s; at 0.2 s (half the beat) there is no repetition."""
    from engine.model.branches import TempoBranch
    from engine.model.frontend import build_frontend
    from tests.signals import click_track

    branch = TempoBranch()
    fe = build_frontend(make_config("tiny", "loev++", "psts", branches="structured").frontend)
    y = torch.from_numpy(click_track(150.0, 3.0)[:CHUNK_SAMPLES].astype(np.float32))[None]
    with torch.no_grad():
        p = branch.onset_periodicity(branch.onsets(fe(y)))
    lags_s = branch.fine_lags.numpy() / 100.0
    assert p.shape == (1, branch.onset_dim) and branch.onset_dim == 5 * len(lags_s)
    full = p[0, :len(lags_s)].numpy()
    assert abs(lags_s[np.argmax(full)] - 0.4) < 0.02
    assert full[np.argmin(np.abs(lags_s - 0.2))] < 0.2 < 0.8 < full.max()


def test_onset_tempogram_peaks_at_the_beat_and_its_multiples_not_at_its_half():
    """The tempogram complements the autocorrelation: a click every 0.4 s repeats at 0.8 s
    too (the autocorrelation is high at 75 BPM's lag), but holds no 75 BPM frequency."""
    from engine.model.branches import TempoBranch
    from tests.signals import click_track

    branch = TempoBranch()
    fe = build_frontend(make_config("tiny", "loev++", "psts", branches="structured").frontend)
    y = torch.from_numpy(click_track(150.0, 3.0)[:CHUNK_SAMPLES].astype(np.float32))[None]
    with torch.no_grad():
        spec = fe(y)
        env = branch.onsets(spec)
        gram, periodicity = branch.onset_tempogram(env), branch.onset_periodicity(env)
        both = branch.projector_features(spec, periodicity=True, tempogram=True)
    assert torch.equal(both, torch.cat([periodicity, gram], dim=1))
    bpm = branch.tempogram_hz.numpy() * 60.0
    lags_s = branch.fine_lags.numpy() / 100.0
    assert gram.shape == (1, branch.tempogram_dim) and branch.tempogram_dim == 5 * len(bpm)
    full = gram[0, :len(bpm)].numpy()

    def at(q):
        return full[np.argmin(np.abs(bpm - q))]

    assert min(at(150.0), at(300.0)) > 0.15 > 0.05 > max(at(75.0), at(100.0), at(200.0))
    assert periodicity[0, np.argmin(np.abs(lags_s - 0.8))] > 0.8


def tempo_corpus(folder, split: str = "train"):
    """Click tracks at 90 and 140 BPM with slightly different clicks, and two one-shots."""
    from tests.signals import click_track, drum_hit

    rows = []
    for i in range(4):
        for bpm in (90.0, 140.0):
            y = click_track(bpm * (1 + 0.01 * i), 6.0)
            rows.append((f"c{bpm:.0f}_{i}.wav", y.astype(np.float32), "no key", f"{bpm * (1 + 0.01 * i):.1f}",
                         "drum_loop"))
    rows += [(f"hit{i}_drum_hit.wav", drum_hit(0.5 + i).astype(np.float32), "no key", "no tempo", "kick")
             for i in range(2)]
    return write_corpus(folder, rows, split)


def test_loev_train_projector_tempo_adds_a_tempo_projector_and_leaves_the_other_spaces(
        descriptor_checkpoint, tmp_path, one_torch_thread):
    from tests.signals import click_track
    from trainer.cli import main

    data = tempo_corpus(tmp_path / "corpus")
    out = tmp_path / "tempo.safetensors"
    assert main(["projector", str(descriptor_checkpoint), "--space", "tempo", "--data", str(data), "--out", str(out),
                 "--epochs", "60", "--share", "0.5", "--stretches", "1", "--val-fraction", "0",
                 "--no-posterior"]) == 0
    before, _ = load_checkpoint(descriptor_checkpoint)
    after, cfg = load_checkpoint(out)
    assert cfg.tempo_learned_share == 0.5 and cfg.timbre_learned_share == 0.0 and cfg.tempo_projector_onsets
    assert not cfg.tempo_projector_posterior
    info = read_checkpoint_info(out)
    assert info.config["provenance"]["space"] == "tempo"
    assert info.dims["tempo"] == read_checkpoint_info(descriptor_checkpoint).dims["tempo"] + 128
    ys = torch.from_numpy(np.stack([click_track(b, 3.0)[:CHUNK_SAMPLES] for b in (88.0, 92.0, 138.0, 142.0)])
                          .astype(np.float32))
    with torch.no_grad():
        e0, e1 = before(ys)["embeddings"], after(ys)["embeddings"]
    for space in ("invariant", "pitch"):
        assert torch.equal(e0[space], e1[space])
    n = e0["tempo"].shape[1]
    assert torch.allclose(torch.nn.functional.normalize(e1["tempo"][:, :n], dim=1),
                          torch.nn.functional.normalize(e0["tempo"], dim=1), atol=1e-5)
    # The projector part gathers the same tempo and parts others, more than untrained.
    z = torch.nn.functional.normalize(e1["tempo"][:, n:], dim=1)
    untrained = TempoProjector(after.tempo_mlp.in_dim).eval()
    tempo = after.structured["tempo"]
    assert untrained.in_dim == n + tempo.onset_dim + tempo.tempogram_dim and cfg.tempo_projector_tempogram
    untrained.loc.copy_(after.tempo_mlp.loc)
    untrained.scale.copy_(after.tempo_mlp.scale)
    with torch.no_grad():
        spec = after.frontend(ys)
        u = torch.nn.functional.normalize(untrained(after.tempo_projector_input(e0["tempo"], spec)), dim=1)

    def margin(v):
        return float((v[0] @ v[1] + v[2] @ v[3]) / 2 - (v[0] @ v[2] + v[1] @ v[3]) / 2)

    assert margin(z) > margin(u) + 0.3


def test_no_onsets_no_tempogram_builds_a_projector_over_the_branch_alone(descriptor_checkpoint, tmp_path,
                                                                        one_torch_thread):
    from trainer.cli import main

    out = tmp_path / "plain.safetensors"
    assert main(["projector", str(descriptor_checkpoint), "--space", "tempo", "--no-onsets", "--no-tempogram", "--data",
                 str(tempo_corpus(tmp_path / "t")), "--out", str(out), "--epochs", "1", "--stretches", "0",
                 "--val-fraction", "0", "--no-posterior", "--synthetic", "10"]) == 0
    model, cfg = load_checkpoint(out)
    assert not cfg.tempo_projector_onsets and not cfg.tempo_projector_tempogram
    assert cfg.provenance["synthetic"] == 10
    assert model.tempo_mlp.in_dim == model.structured["tempo"].out_dim


def test_both_projectors_export_to_onnx_with_the_same_vectors(descriptor_checkpoint, tmp_path):
    pytest.importorskip("onnxruntime")
    from engine.model.embed import Embedder
    from tests.signals import click_track
    from trainer.cli import main

    vibe = tmp_path / "vibe.safetensors"
    both = tmp_path / "both.safetensors"
    assert main(["projector", str(descriptor_checkpoint), "--data", str(sound_corpus(tmp_path / "s")), "--out",
                 str(vibe), "--epochs", "2", "--val-fraction", "0"]) == 0
    assert main(["projector", str(vibe), "--space", "tempo", "--data", str(tempo_corpus(tmp_path / "t")),
                 "--out", str(both), "--epochs", "2", "--stretches", "0", "--val-fraction", "0"]) == 0
    _, cfg = load_checkpoint(both)
    assert cfg.timbre_learned_share > 0 and cfg.tempo_learned_share > 0  # the vibe projector is kept
    assert main(["export", str(both)]) == 0
    ys = [_tone(98.0), click_track(120.0, 4.0).astype(np.float32)]
    a = Embedder(both, backend="torch").embed_audio_batch(ys)
    b = Embedder(both, backend="onnxruntime").embed_audio_batch(ys)
    for va, vb in zip(a, b):
        for space in ("invariant", "tempo"):
            assert np.allclose(va[space], vb[space], atol=1e-4)


# ------------------------------------------------------------------------------ the key space


def test_config_carries_and_checks_the_key_projector_share():
    cfg = make_config("tiny", "loev++", "psts", branches="structured", timbre_share=0.2)
    with_key = dataclasses.replace(cfg, pitch_learned_share=0.85)
    assert ModelConfig.from_dict(with_key.to_dict()).pitch_learned_share == 0.85
    old = cfg.to_dict()
    del old["pitch_learned_share"]  # a checkpoint written before the key projector
    assert ModelConfig.from_dict(old).pitch_learned_share == 0.0
    with pytest.raises(ValueError, match="structured pitch branch"):
        dataclasses.replace(make_config("tiny", "loev++", "psts"), pitch_learned_share=0.5)
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        dataclasses.replace(cfg, pitch_learned_share=1.0)
    bad = with_key.to_dict()
    bad["pitch_learned_share"] = "0.85"
    with pytest.raises(ValueError):
        ModelConfig.from_dict(bad)


def _interleaved_roll(x: torch.Tensor, semitones: int) -> torch.Tensor:
    """A pitch-space vector ``[B, C * 24]`` as a transposition by ``semitones`` moves it."""
    return torch.roll(x.reshape(x.shape[0], -1, 24), 2 * semitones, dims=-1).reshape(x.shape[0], -1)


def test_the_key_projector_is_pitch_equivariant_and_embeds_key_closeness():
    from engine import keys
    from engine.model.branches import KeyProjector

    torch.manual_seed(0)
    proj = KeyProjector(3)
    torch.nn.init.normal_(proj.templates)
    x = torch.randn(4, 3 * 24)
    with torch.no_grad():
        for s in (1, 5, -2):
            # A transposed input gives the transposed output: tonic t -> t + s, mode kept.
            assert torch.allclose(proj(_interleaved_roll(x, s)), _interleaved_roll(proj(x), s), atol=1e-5)
        # One-hot posteriors: the dot product of two keys' embeddings is their closeness.
        onehot = torch.eye(24) @ proj.root
        order = [proj.key_of_output(i) for i in range(24)]
        table = np.array(keys.closeness_table())[np.ix_(order, order)]
    assert np.allclose((onehot @ onehot.T).numpy(), table, atol=1e-5)
    assert [keys.key_name(proj.key_of_output(i)) for i in (0, 1, 2, 23)] == ["C major", "C minor", "C# major",
                                                                           "B minor"]


def key_corpus(folder, split: str = "train"):
    """I-IV-V-I cadences in C major and i-iv-V-i in C minor (two voicings each), a drum hit."""
    from tests.signals import cadence, drum_hit

    rows = []
    for octave in (0, 12):
        rows.append((f"maj{octave}.wav", cadence(48 + octave, "major"), "C major", "100", "music_loop"))
        rows.append((f"min{octave}.wav", cadence(48 + octave, "minor"), "C minor", "100", "music_loop"))
    rows.append(("hit_drum_hit.wav", drum_hit(0.5), "no key", "no tempo", "kick"))
    return write_corpus(folder, rows, split)


def test_loev_train_projector_key_learns_keys_it_never_heard_in_that_transposition(
        descriptor_checkpoint, tmp_path, one_torch_thread):
    from engine import keys
    from tests.signals import cadence
    from trainer.cli import main

    out = tmp_path / "key.safetensors"
    assert main(["projector", str(descriptor_checkpoint), "--space", "key", "--data", str(key_corpus(tmp_path / "k")),
                 "--out", str(out), "--epochs", "100", "--share", "0.85", "--val-fraction", "0"]) == 0
    before, _ = load_checkpoint(descriptor_checkpoint)
    after, cfg = load_checkpoint(out)
    assert cfg.pitch_learned_share == 0.85 and cfg.tempo_learned_share == 0.0
    info = read_checkpoint_info(out)
    assert info.config["provenance"]["space"] == "key"
    assert info.dims["pitch"] == read_checkpoint_info(descriptor_checkpoint).dims["pitch"] + 24
    # Trained on C only, it names the keys of cadences on E and F#.
    test = {"E major": cadence(52, "major"), "F# minor": cadence(54, "minor"), "Bb major": cadence(58, "major")}
    ys = torch.from_numpy(np.stack([y[:CHUNK_SAMPLES] for y in test.values()]))
    with torch.no_grad():
        e0, e1 = before(ys)["embeddings"], after(ys)["embeddings"]
        logits = after.key_projector.logits(after.structured["pitch"](ys))
    assert [keys.key_name(after.key_projector.key_of_output(int(i))) for i in logits.argmax(dim=1)] == list(test)
    for space in ("invariant", "tempo"):
        assert torch.equal(e0[space], e1[space])
    n = e0["pitch"].shape[1]
    assert torch.allclose(torch.nn.functional.normalize(e1["pitch"][:, :n], dim=1),
                          torch.nn.functional.normalize(e0["pitch"], dim=1), atol=1e-5)


def test_all_three_projectors_export_to_onnx_with_the_same_vectors(descriptor_checkpoint, tmp_path):
    pytest.importorskip("onnxruntime")
    from engine.model.embed import Embedder
    from tests.signals import cadence, click_track
    from trainer.cli import main

    tempo = tmp_path / "tempo.safetensors"
    three = tmp_path / "three.safetensors"
    assert main(["projector", str(descriptor_checkpoint), "--space", "tempo", "--data", str(tempo_corpus(tmp_path / "t")),
                 "--out", str(tempo), "--epochs", "2", "--stretches", "0", "--val-fraction", "0"]) == 0
    assert main(["projector", str(tempo), "--space", "key", "--data", str(key_corpus(tmp_path / "k")),
                 "--out", str(three), "--epochs", "5", "--val-fraction", "0"]) == 0
    _, cfg = load_checkpoint(three)
    assert cfg.tempo_learned_share > 0 and cfg.pitch_learned_share > 0  # the tempo projector is kept
    assert main(["export", str(three)]) == 0
    ys = [cadence(50, "minor"), click_track(120.0, 4.0).astype(np.float32)]
    a = Embedder(three, backend="torch").embed_audio_batch(ys)
    b = Embedder(three, backend="onnxruntime").embed_audio_batch(ys)
    for va, vb in zip(a, b):
        for space in ("invariant", "pitch", "tempo"):
            assert np.allclose(va[space], vb[space], atol=1e-4)


def test_config_carries_and_checks_the_tempo_posterior_flag():
    cfg = make_config("tiny", "loev++", "psts", branches="structured", timbre_share=0.2)
    on = dataclasses.replace(cfg, tempo_learned_share=0.9, tempo_projector_posterior=True)
    assert ModelConfig.from_dict(on.to_dict()).tempo_projector_posterior
    old = on.to_dict()
    del old["tempo_projector_posterior"]  # a checkpoint written before it
    assert not ModelConfig.from_dict(old).tempo_projector_posterior
    with pytest.raises(ValueError, match="learned tempo projector"):
        dataclasses.replace(cfg, tempo_projector_posterior=True)
    bad = on.to_dict()
    bad["tempo_projector_posterior"] = "yes"
    with pytest.raises(ValueError):
        ModelConfig.from_dict(bad)


def test_the_tempo_posterior_embeds_bpm_closeness():
    proj = TempoProjector(10, posterior=True)
    bins = proj.bpm_bins()
    assert proj.out_dim == len(bins) + 1 and bins[0] == 40.0 and bins[-1] == pytest.approx(260.0, rel=0.01)
    onehot = torch.eye(proj.out_dim) @ proj.root
    gram = (onehot @ onehot.T).numpy()
    # The same bin 1, two bins (3.9 %) apart exp(-1/2), far apart ~0; "no tempo" apart from all.
    assert gram[50, 50] == pytest.approx(1.0, abs=1e-5) and gram[50, 52] == pytest.approx(np.exp(-0.5), abs=1e-5)
    assert abs(gram[50, 70]) < 1e-5 and abs(gram[-1, :-1]).max() < 1e-5 and gram[-1, -1] == pytest.approx(1.0, abs=1e-5)


def test_loev_train_projector_tempo_posterior_names_the_tempo_and_gathers_it(descriptor_checkpoint, tmp_path,
                                                                           one_torch_thread):
    from tests.signals import click_track
    from trainer.cli import main

    data = tempo_corpus(tmp_path / "t")
    features = tmp_path / "features.safetensors"
    out = tmp_path / "posterior.safetensors"
    assert main(["projector", str(descriptor_checkpoint), "--space", "tempo", "--data", str(data), "--out",
                 str(features), "--epochs", "1", "--stretches", "0", "--val-fraction", "0", "--no-posterior"]) == 0
    # Retrained over the features projector (128 outputs) as a posterior (99): replaced.
    assert main(["projector", str(features), "--space", "tempo", "--data", str(data), "--out", str(out),
                 "--epochs", "60", "--share", "0.9", "--stretches", "1", "--val-fraction", "0"]) == 0
    model, cfg = load_checkpoint(out)
    proj = model.tempo_mlp
    assert cfg.tempo_projector_posterior and proj.posterior
    assert read_checkpoint_info(out).dims["tempo"] == model.structured["tempo"].out_dim + len(proj.bpm_bins()) + 1
    ys = torch.from_numpy(np.stack([click_track(b, 3.0)[:CHUNK_SAMPLES] for b in (88.0, 92.0, 138.0, 142.0)])
                          .astype(np.float32))
    with torch.no_grad():
        spec = model.frontend(ys)
        x = model.tempo_projector_input(model.structured["tempo"](spec), spec)
        guess = proj.bpm_bins()[proj.logits(x, proj.POSTERIOR_SCALE)[:, :-1].argmax(dim=1).numpy()]
        z = torch.nn.functional.normalize(proj(x), dim=1)
    # Each click track's most likely bin lies within 8 % of its tempo (the corpus: 90-143 BPM).
    assert np.all(np.abs(np.log(guess / np.array([88.0, 92.0, 138.0, 142.0]))) < np.log(1.08))
    same = float(z[0] @ z[1] + z[2] @ z[3]) / 2
    other = float(z[0] @ z[2] + z[1] @ z[3]) / 2
    assert same > 0.5 > 0.2 > other
    # Heads trained over it read the BPM from the posterior (without: from the tempo head).
    from engine.model.embed import Embedder
    from engine.model.heads import load_heads

    with_heads = tmp_path / "heads.safetensors"
    assert main(["heads", str(out), "--out", str(with_heads), "--data", str(data), "--epochs", "1",
                 "--synthetic", "4", "--stretches", "0", "--cache", str(tmp_path / "cache"),
                 "--val-fraction", "0.3"]) == 0
    heads = load_heads(with_heads)
    assert read_checkpoint_info(with_heads).metadata["loev_heads"].count('"posterior"') == 1
    vectors = Embedder(with_heads).embed_audio_batch([click_track(b, 6.0).astype(np.float32) for b in (90.0, 140.0)])
    est = heads.predict({s: np.stack([v[s] for v in vectors]) for s in vectors[0]})
    bpm = [e.bpm for e in est]
    assert None not in bpm and abs(np.log(bpm[0] / 90.0)) < np.log(1.08) and abs(np.log(bpm[1] / 140.0)) < np.log(1.08)


def test_heads_on_a_key_projector_read_the_pitch_branch_unless_told(descriptor_checkpoint, tmp_path,
                                                                    one_torch_thread):
    from engine.model.heads import load_heads
    from tests.test_heads import tiny_corpus
    from trainer.cli import main

    keyed = tmp_path / "key.safetensors"
    assert main(["projector", str(descriptor_checkpoint), "--space", "key", "--data", str(key_corpus(tmp_path / "k")),
                 "--out", str(keyed), "--epochs", "5", "--val-fraction", "0"]) == 0
    pitch = read_checkpoint_info(keyed).dims["pitch"]
    data = tiny_corpus(tmp_path / "corpus")
    common = ["--data", str(data), "--epochs", "1", "--synthetic", "4", "--stretches", "0",
              "--cache", str(tmp_path / "cache"), "--val-fraction", "0.3"]
    branch, both = tmp_path / "branch.safetensors", tmp_path / "both.safetensors"
    assert main(["heads", str(keyed), "--out", str(branch)] + common) == 0
    assert main(["heads", str(keyed), "--out", str(both), "--key-reads-projector"] + common) == 0
    a, b = load_heads(branch), load_heads(both)
    assert a._heads["key"].widths == (pitch - 24,) and a._heads["key"].mean.shape == (pitch - 24,)
    assert b._heads["key"].widths == () and b._heads["key"].mean.shape == (pitch,)
    assert a._heads["tempo"].widths == () and a.provenance["key_widths"] == [pitch - 24]
