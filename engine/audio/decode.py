"""Audio decoding: any supported file to 16 kHz mono float32, reading only what is needed.

Everything goes through soundfile (libsndfile: wav, flac, ogg vorbis/opus, mp3, aiff) with
seeks, a downmix to mono and soxr resampling. Long files are read in blocks
(:func:`iter_blocks`) so a one-hour file never sits whole in memory.

A truncated file is an error, never silence: libsndfile quietly clamps a WAV/AIFF whose
header claims more data than the file holds, and returns short reads for MP3, so both the
header log and the frame counts of every read are checked (:class:`DecodeError` with a
reason starting ``"truncated: "``).
"""
from __future__ import annotations

import math
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile
import soxr

from engine.config import CHUNK_SAMPLES, SAMPLE_RATE
from engine.errors import DecodeError

AUDIO_EXTENSIONS: frozenset[str] = frozenset(
    {".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff", ".aifc"}
)

# libsndfile's header log, e.g. "data : 264600 (should be 132278)": the header claims
# more bytes than the file holds. 0 and 0xFFFFFFFF are the sizes streaming writers leave.
_CLAIMED_CHUNK = re.compile(r"^\s*(data|SSND)\s*:\s*(\d+)\s*\(should be (\d+)\)", re.MULTILINE)
_STREAMING_SIZES = {0, 0xFFFFFFFF, 0xFFFFFFFF - 8}
# Seconds read on either side of a chunk so soxr's filter has context at its edges.
_EDGE_SECONDS = 0.02


@dataclass(frozen=True)
class AudioInfo:
    """What the header of an audio file says, once checked.

    Attributes
    ----------
    path : str
    frames : int
        Frames at the file's own sample rate.
    sample_rate : int
    channels : int
    duration : float
        Seconds.
    """

    path: str
    frames: int
    sample_rate: int
    channels: int
    duration: float


def is_audio_path(path: str | os.PathLike[str]) -> bool:
    """True if the file name has a supported audio extension (any case)."""
    return Path(path).suffix.lower() in AUDIO_EXTENSIONS


def _soundfile():
    return soundfile


def _check_file(path: str) -> None:
    if not os.path.exists(path):
        raise DecodeError(path, "no such file")
    if os.path.isdir(path):
        raise DecodeError(path, "is a directory")
    if os.path.getsize(path) == 0:
        raise DecodeError(path, "empty file")


def _header_truncation(path: str, extra_info: str) -> None:
    for chunk, claimed, actual in _CLAIMED_CHUNK.findall(extra_info):
        claimed_i, actual_i = int(claimed), int(actual)
        # A few bytes of slack: some writers miscount the pad byte of an odd-sized chunk.
        if claimed_i not in _STREAMING_SIZES and claimed_i > actual_i + 8:
            raise DecodeError(
                path, f"truncated: {chunk} chunk claims {claimed_i} bytes, file holds {actual_i}"
            )


def _open(path: str):
    """Open with soundfile, mapping every failure to a DecodeError."""
    sf = _soundfile()
    _check_file(path)
    try:
        # The name's bytes: a str holding undecodable bytes (surrogate escapes) cannot be
        # encoded by soundfile, but a Linux file name is bytes.
        f = sf.SoundFile(os.fsencode(path) if os.name == "posix" else path)
    except Exception as exc:  # libsndfile raises several types for "not audio"
        raise DecodeError(path, f"not a readable audio file ({_one_line(exc)})") from exc
    return f


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[-1].strip() if text else type(exc).__name__


def audio_info(path: str | os.PathLike[str]) -> AudioInfo:
    """Read and check an audio file's header.

    Parameters
    ----------
    path : str or path-like

    Returns
    -------
    AudioInfo

    Raises
    ------
    DecodeError
        Missing, empty, not audio, no frames, or a header claiming more data than the
        file holds.
    """
    path = str(path)
    with _open(path) as f:
        frames, sr, channels = int(f.frames), int(f.samplerate), int(f.channels)
        extra = f.extra_info
    _header_truncation(path, extra)
    if sr <= 0 or channels <= 0:
        raise DecodeError(path, f"invalid header (sample rate {sr}, channels {channels})")
    if frames <= 0:
        raise DecodeError(path, "no audio frames")
    return AudioInfo(path, frames, sr, channels, frames / sr)


_END_TOLERANCE = 2048  # frames missing at the very end that are still a whole file


def _read_frames(f, path: str, start: int, n: int, claimed: int) -> np.ndarray:
    """Read ``n`` frames from ``start`` as float32 [n, C]; short reads inside ``claimed``
    frames mean the file is truncated."""
    try:
        f.seek(start)
        x = f.read(n, dtype="float32", always_2d=True)
    except Exception as exc:
        raise DecodeError(path, f"truncated or corrupt: {_one_line(exc)}") from exc
    expected = max(0, min(n, claimed - start))
    shortfall = expected - x.shape[0]
    if 0 < shortfall and claimed - (start + x.shape[0]) <= _END_TOLERANCE:
        # Lossy streams (Ogg Vorbis, MP3) may end a few hundred frames before the length
        # their granule positions announce: that is codec padding, not a damaged file.
        return np.pad(x, ((0, shortfall), (0, 0)))
    if shortfall > 0:
        raise DecodeError(
            path,
            f"truncated: header claims {claimed} frames, reading stopped at {start + x.shape[0]}",
        )
    return x


def _to_mono(x: np.ndarray) -> np.ndarray:
    return x[:, 0] if x.shape[1] == 1 else x.mean(axis=1, dtype=np.float32)


def _resample(y: np.ndarray, sr_in: int, sr: int) -> np.ndarray:
    if sr_in == sr or y.size == 0:
        return np.ascontiguousarray(y, dtype=np.float32)
    return soxr.resample(y, sr_in, sr, quality="HQ").astype(np.float32, copy=False)


def load_audio(
    path: str | os.PathLike[str],
    *,
    sr: int = SAMPLE_RATE,
    offset: float = 0.0,
    duration: float | None = None,
) -> np.ndarray:
    """Decode (part of) a file to mono float32 at ``sr``, reading only the frames needed.

    Parameters
    ----------
    path : str or path-like
    sr : int
        Target sample rate.
    offset : float
        Start, in seconds.
    duration : float or None
        Seconds to read; None reads to the end.

    Returns
    -------
    y : np.ndarray [T], float32

    Raises
    ------
    DecodeError
    """
    path = str(path)
    info = audio_info(path)
    if offset < 0 or (duration is not None and duration < 0):
        raise ValueError(f"offset and duration must be >= 0, got {offset}, {duration}")
    start = min(int(round(offset * info.sample_rate)), info.frames)
    stop = info.frames if duration is None else min(
        info.frames, start + int(round(duration * info.sample_rate))
    )
    with _open(path) as f:
        x = _read_frames(f, path, start, stop - start, info.frames)
    y = _resample(_to_mono(x), info.sample_rate, sr)
    if duration is not None:
        y = y[: int(round(duration * sr))]
    return y


def load_audio_channels(
    path: str | os.PathLike[str], *, sr: int | None = None
) -> tuple[np.ndarray, int]:
    """Decode a whole file keeping its channels, at its own rate unless ``sr`` is given.

    For listening and export (the audition player, ``loev render``); the embedding path
    stays :func:`load_audio` (mono, 16 kHz).

    Parameters
    ----------
    path : str or path-like
    sr : int or None
        Target sample rate; None keeps the file's.

    Returns
    -------
    y : np.ndarray [T, C], float32
    sr : int
        The rate of ``y``.

    Raises
    ------
    DecodeError
    """
    path = str(path)
    info = audio_info(path)
    with _open(path) as f:
        x = _read_frames(f, path, 0, info.frames, info.frames)
    rate = info.sample_rate if sr is None else int(sr)
    y = _resample(x, info.sample_rate, rate)
    return np.ascontiguousarray(y.reshape(-1, x.shape[1])), rate


def load_middle(path: str | os.PathLike[str], seconds: float, *, sr: int = SAMPLE_RATE
                ) -> np.ndarray:
    """The middle ``seconds`` of a file (all of it when shorter), mono float32 at ``sr``.

    Curves and matches look at a bounded excerpt: a one-hour file is never decoded whole.
    """
    duration = audio_info(path).duration
    offset = max(0.0, (duration - seconds) / 2)
    return load_audio(path, sr=sr, offset=offset, duration=min(seconds, duration))


def iter_blocks(
    path: str | os.PathLike[str], *, sr: int = SAMPLE_RATE, block_seconds: float = 60.0
) -> Iterator[np.ndarray]:
    """Yield a file as consecutive mono float32 blocks at ``sr``.

    Memory stays bounded by one block: soxr's ``ResampleStream`` carries the filter state
    from block to block, so the concatenation equals a whole-file resampling.

    Parameters
    ----------
    path : str or path-like
    sr : int
    block_seconds : float
        Length of a block read from the file (output blocks are about as long).

    Yields
    ------
    y : np.ndarray [T_block], float32
        The last block may be shorter; empty blocks are not yielded.

    Raises
    ------
    DecodeError
    """
    path = str(path)
    info = audio_info(path)
    if block_seconds <= 0:
        raise ValueError(f"block_seconds must be > 0, got {block_seconds}")
    block = max(1, int(block_seconds * info.sample_rate))
    stream = None if info.sample_rate == sr else soxr.ResampleStream(
        info.sample_rate, sr, 1, dtype="float32", quality="HQ"
    )
    with _open(path) as f:
        for start in range(0, info.frames, block):
            n = min(block, info.frames - start)
            y = _to_mono(_read_frames(f, path, start, n, info.frames))
            if stream is not None:
                y = stream.resample_chunk(y, last=start + n >= info.frames)
            if y.size:
                yield np.ascontiguousarray(y, dtype=np.float32)


def read_chunks(
    path: str | os.PathLike[str],
    starts: Sequence[float] | np.ndarray,
    *,
    chunk_samples: int = CHUNK_SAMPLES,
    sr: int = SAMPLE_RATE,
) -> np.ndarray:
    """Read chunks that start at the given times, seeking to each one.

    A chunk that would run past the end of the file is moved back so that it ends with
    the file (no padding). A file shorter than one chunk gives chunks holding the whole
    file: the width of the result is then shorter than ``chunk_samples`` and the caller
    decides what to do (pad, loop, skip).

    Parameters
    ----------
    path : str or path-like
    starts : sequence of float [N]
        Start times in seconds.
    chunk_samples : int
        Samples per chunk at ``sr``.
    sr : int

    Returns
    -------
    chunks : np.ndarray [N, min(chunk_samples, file length at sr)], float32

    Raises
    ------
    DecodeError
    """
    path = str(path)
    info = audio_info(path)
    sr_in = info.sample_rate
    total = int(math.floor(info.frames * sr / sr_in))  # file length at sr
    width = min(chunk_samples, total)
    edge = int(math.ceil(_EDGE_SECONDS * sr_in)) if sr_in != sr else 0
    out = np.zeros((len(starts), width), dtype=np.float32)
    with _open(path) as f:
        for i, t in enumerate(np.asarray(starts, dtype=np.float64)):
            first = int(round(max(0.0, float(t)) * sr))
            first = max(0, min(first, total - width))  # keep the chunk inside the file
            out[i] = _read_one_chunk(f, path, info, first, width, sr, edge)
    return out


def _read_one_chunk(f, path: str, info: AudioInfo, first: int, width: int, sr: int,
                    edge: int) -> np.ndarray:
    """``width`` samples at ``sr`` starting at output sample ``first``."""
    sr_in = info.sample_rate
    src_start = int(math.floor(first * sr_in / sr))
    read_start = max(0, src_start - edge)
    read_stop = min(info.frames, int(math.ceil((first + width) * sr_in / sr)) + edge + 1)
    x = _to_mono(_read_frames(f, path, read_start, read_stop - read_start, info.frames))
    y = _resample(x, sr_in, sr)
    # Output sample 0 of y sits at input time read_start / sr_in.
    skip = int(round((first / sr - read_start / sr_in) * sr))
    piece = y[skip: skip + width]
    if piece.shape[0] < width:  # resampler rounding at the very end of the file
        piece = np.pad(piece, (0, width - piece.shape[0]), mode="edge")
    return piece
