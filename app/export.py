"""Export: the auditioned clip, with its pitch/tempo transform, as a 24-bit WAV that keeps
the source's channels and sample rate (what a producer drops into a session).

Worker thread only (it decodes and renders). No Qt here.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np


def export_name(path: str, semitones: float, tempo: float) -> str:
    """``kick.wav`` as it is; ``kick (+2.0st 1.10x).wav`` when transformed."""
    stem = Path(path).stem
    tags = []
    if abs(semitones) >= 1e-3:
        tags.append(f"{semitones:+.1f}st")
    if abs(tempo - 1.0) >= 1e-4:
        tags.append(f"{tempo:.2f}x")
    return f"{stem} ({' '.join(tags)}).wav" if tags else f"{stem}.wav"


def _free_name(folder: Path, name: str) -> Path:
    """``folder/name``, or ``name 2``, ``name 3``... : an export never overwrites."""
    out = folder / name
    stem, n = out.stem, 2
    while out.exists():
        out = folder / f"{stem} {n}.wav"
        n += 1
    return out


def read_source(path: str) -> tuple[np.ndarray, int]:
    """``path`` at its own rate with all its channels -> ``(y [T, C] float32, sr)``."""
    import soundfile as sf

    try:
        y, sr = sf.read(path, dtype="float32", always_2d=True)
        return y, int(sr)
    except (RuntimeError, sf.LibsndfileError):
        # A format libsndfile does not read: the engine's decoder, mono at the file's rate.
        from engine.audio.decode import audio_info, load_audio

        sr = int(audio_info(path).sample_rate)
        return load_audio(path, sr=sr)[:, None], sr


def render_channels(y: np.ndarray, sr: int, *, semitones: float, tempo: float) -> np.ndarray:
    """The transform applied to every channel of ``y [T, C]`` -> ``[T', C]``.

    The one place export renders: the engine's render is mono, so each channel goes
    through it on its own.
    """
    if abs(semitones) < 1e-3 and abs(tempo - 1.0) < 1e-4:
        return y
    from engine.audio.audition import render

    return np.stack([render(y[:, c], semitones=semitones, tempo=tempo, sr=sr)
                     for c in range(y.shape[1])], axis=1)


def export_clip(path: str, folder: str | os.PathLike[str], *, semitones: float = 0.0,
                tempo: float = 1.0) -> Path:
    """Write ``path`` transformed into ``folder`` as 24-bit PCM WAV; returns the new file.

    Peaks a pitch shift pushes past full scale are scaled down (24-bit integers clip).
    """
    import soundfile as sf

    y, sr = read_source(path)
    out = render_channels(y, sr, semitones=semitones, tempo=tempo)
    peak = float(np.abs(out).max()) if out.size else 0.0
    if peak > 1.0:
        out = out / peak
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    dest = _free_name(folder, export_name(path, semitones, tempo))
    sf.write(str(dest), out, sr, subtype="PCM_24", format="WAV")
    return dest
