"""Export a transposed / stretched file: what ``loev render`` and the app's export write.

The audio is the audition vocoder's (:func:`engine.audio.vocoder.render`) at the source's
own sample rate and channels, written as 24-bit WAV.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from engine.audio.decode import load_audio_channels
from engine.audio.vocoder import render
from engine.config import check_semitones, check_tempo
from engine.errors import LoevError

_PEAK = 10 ** (-0.1 / 20)  # -0.1 dBFS


class RenderError(LoevError):
    """The render cannot be written where asked."""


def render_file(path: str | os.PathLike[str], *, shift: float, stretch: float = 1.0,
                out: str | os.PathLike[str]) -> Path:
    """Shift ``path`` by ``shift`` semitones and play it ``stretch`` times faster into
    ``out``, a 24-bit WAV at the source's rate and channels.

    A result that would clip (a shift can raise peaks past full scale) is scaled down as a
    whole to -0.1 dBFS rather than clipped.

    Parameters
    ----------
    path : str or path-like
        Any file :mod:`engine.audio.decode` reads.
    shift : float
        Semitones, -12..12.
    stretch : float
        Tempo ratio, 0.5..2.0 (> 1 faster, shorter).
    out : str or path-like
        The WAV file to write (replaced if it exists; never the source itself).

    Returns
    -------
    Path
        ``out``.

    Raises
    ------
    DecodeError
        ``path`` cannot be read.
    RenderError
        ``out`` is the source, or its folder does not exist.
    ValueError
        ``shift`` or ``stretch`` out of range.
    """
    check_semitones(shift)
    check_tempo(stretch)
    out = Path(out)
    if not out.parent.is_dir():
        raise RenderError(f"{out}: no such folder {str(out.parent)!r}")
    if out.exists() and out.resolve() == Path(path).resolve():
        raise RenderError(f"{out}: is the source file; choose another output")
    y, sr = load_audio_channels(path)
    result = render(y, sr=sr, semitones=shift, tempo=stretch)
    peak = float(np.abs(result).max(initial=0.0))
    if peak > _PEAK:
        result = result * np.float32(_PEAK / peak)
    import soundfile as sf

    try:
        sf.write(str(out), result, sr, subtype="PCM_24", format="WAV")
    except Exception as exc:  # libsndfile: permissions, disk full, ...
        lines = str(exc).strip().splitlines()
        raise RenderError(f"{out}: cannot write ({lines[-1] if lines else exc})") from exc
    return out


__all__ = ["RenderError", "render_file"]
