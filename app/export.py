"""Export: where the auditioned clip goes. The audio itself is the session's render
(``engine.audio.render.render_file``: the audition vocoder at the source's own sample rate
and channels, 24-bit WAV); this module only names the file in the export folder.

No Qt here.
"""
from __future__ import annotations

import os
from pathlib import Path


def export_name(path: str, semitones: float, tempo: float) -> str:
    """``kick.wav`` as it is; ``kick (+2.0st 1.10x).wav`` when transformed."""
    stem = Path(path).stem
    tags = []
    if abs(semitones) >= 1e-3:
        tags.append(f"{semitones:+.1f}st")
    if abs(tempo - 1.0) >= 1e-4:
        tags.append(f"{tempo:.2f}x")
    return f"{stem} ({' '.join(tags)}).wav" if tags else f"{stem}.wav"


def export_path(path: str, folder: str | os.PathLike[str], *, semitones: float = 0.0,
                tempo: float = 1.0) -> Path:
    """A new file in ``folder`` for ``path`` transformed: ``name 2``, ``name 3``... when
    the name is taken, so an export never overwrites an earlier one."""
    folder = Path(folder)
    out = folder / export_name(path, semitones, tempo)
    stem, n = out.stem, 2
    while out.exists():
        out = folder / f"{stem} {n}.wav"
        n += 1
    return out
