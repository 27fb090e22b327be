"""Generated audio fixtures and a torch-free fake embedder for the library tests.

The fake embedder has known answers: its ``pitch`` vector is a 12-bin chroma of the
magnitude spectrum (tones in the same key land together), its ``tempo`` vector a histogram
of the inter-onset interval (click tracks at the same tempo land together), and its
``invariant`` vector a few spectral statistics.
"""
from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

SR = 16000


def tone(freq: float, seconds: float = 2.0, *, sr: int = SR) -> np.ndarray:
    """A decaying harmonic tone (fundamental plus two partials), float32 [T]."""
    t = np.arange(int(seconds * sr)) / sr
    y = sum(a * np.sin(2 * np.pi * freq * h * t) for h, a in ((1, 1.0), (2, 0.4), (3, 0.2)))
    return (0.3 * y).astype(np.float32)


def clicks(bpm: float, seconds: float = 4.0, *, sr: int = SR) -> np.ndarray:
    """A click track at ``bpm``: 10 ms bursts of a 2 kHz tone, float32 [T]."""
    y = np.zeros(int(seconds * sr), dtype=np.float32)
    period = int(round(60.0 / bpm * sr))
    burst = (0.8 * np.sin(2 * np.pi * 2000 * np.arange(160) / sr)).astype(np.float32)
    for start in range(0, len(y) - 160, period):
        y[start:start + 160] += burst
    return y


def write(path: str | os.PathLike[str], y: np.ndarray, *, sr: int = SR,
          format: str | None = None) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), y, sr, format=format)
    return path


def note_hz(midi: int) -> float:
    return 440.0 * 2 ** ((midi - 69) / 12)


class FakeEmbedder:
    """Torch-free stand-in for engine.model.embed.Embedder with deterministic known answers."""

    subspaces = ("invariant", "pitch", "tempo")
    dims = {"invariant": 8, "pitch": 12, "tempo": 16}

    def __init__(self, model_id: str = "fake-model-1", *, delay: float = 0.0) -> None:
        self.model_id = model_id
        self.config: dict[str, Any] = {"method": "fake", "model_id": model_id}
        self.checkpoint_path = None
        self.delay = delay
        self.calls: list[str] = []

    def embed_file(self, path: str) -> dict[str, np.ndarray]:
        from engine.audio.decode import load_audio

        self.calls.append(str(path))
        if self.delay:
            time.sleep(self.delay)
        return self.embed_audio(load_audio(path))

    def embed_audio(self, y: np.ndarray) -> dict[str, np.ndarray]:
        y = np.asarray(y, dtype=np.float32)
        spec = np.abs(np.fft.rfft(y[: 4 * SR], n=8192))
        freqs = np.fft.rfftfreq(8192, 1 / SR)
        band = (freqs > 50) & (freqs < 4000)
        pcs = np.round(12 * np.log2(freqs[band] / 440.0)).astype(int) % 12
        chroma = np.bincount(pcs, weights=spec[band] ** 2, minlength=12)
        env = np.abs(y)
        onsets = np.flatnonzero((env[1:] > 0.3) & (env[:-1] <= 0.3))
        iois = np.diff(onsets) / SR if len(onsets) > 2 else np.array([0.0])
        tempo = np.histogram(np.clip(iois, 0, 1.59), bins=16, range=(0, 1.6))[0].astype(float)
        centroid = float((freqs * spec).sum() / (spec.sum() + 1e-9))
        inv = np.array([centroid / 4000, float(np.sqrt(np.mean(y ** 2))), len(onsets) / 50,
                        1, 0.5, 0.25, 0.1, 0.05])
        out = {}
        for name, v in (("invariant", inv), ("pitch", chroma), ("tempo", tempo + 1e-3)):
            v = np.asarray(v, dtype=np.float32) + 1e-6
            out[name] = v / np.linalg.norm(v)
        return out


def make_collection(root: Path) -> dict[str, Path]:
    """Tones in known keys, click tracks at known tempos, and the usual bad files."""
    files = {
        "a4": write(root / "tones" / "a4.wav", tone(440.0)),
        "a3": write(root / "tones" / "A3 é.WAV", tone(220.0)),
        "c4": write(root / "tones" / "c4.flac", tone(note_hz(60))),
        "c5": write(root / "tones" / "sub" / "c5.ogg", tone(note_hz(72)), format="OGG"),
        "e4": write(root / "tones" / "e4.wav", tone(note_hz(64))),
        "click120": write(root / "clicks" / "click120.wav", clicks(120)),
        "click120b": write(root / "clicks" / "click120b.wav", 0.5 * clicks(120, 5.0)),
        "click90": write(root / "clicks" / "click90.wav", clicks(90)),
        "unicode": write(root / "ünïcødé 音楽" / "トーン.wav", tone(330.0)),
    }
    bad = root / "bad"
    bad.mkdir()
    (bad / "empty.wav").write_bytes(b"")
    (bad / "corrupt.flac").write_bytes(b"fLaC" + os.urandom(400))
    (bad / "notaudio.mp3").write_bytes(b"this is a text file, not audio\n" * 10)
    good = write(bad / "truncated.wav", tone(440.0, 3.0))
    data = good.read_bytes()
    good.write_bytes(data[: len(data) // 2])
    (bad / "readme.txt").write_text("not audio, wrong extension: ignored")
    files.update(empty=bad / "empty.wav", corrupt=bad / "corrupt.flac",
                 notaudio=bad / "notaudio.mp3", truncated=bad / "truncated.wav")
    return files


def file_digest(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


_CHECKPOINTS: dict[str, Path] = {}


def tiny_checkpoint_path(directory: Path, *, seed: int = 0) -> Path:
    """A randomly initialised ``tiny`` LOEV++ checkpoint, made once per session and seed."""
    key = f"seed{seed}"
    if key not in _CHECKPOINTS:
        import torch

        from engine.model.checkpoint import save_checkpoint
        from engine.config import make_config
        from engine.model.network import build_model

        torch.manual_seed(seed)
        model = build_model(make_config("tiny", "loev++", "psts")).eval()
        _CHECKPOINTS[key] = save_checkpoint(Path(directory) / f"tiny-{key}.safetensors", model)
    return _CHECKPOINTS[key]
