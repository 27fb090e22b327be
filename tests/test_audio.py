"""engine.audio.decode: decoding, seeking, block reading, and every way a file can be bad."""
from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from engine.audio.decode import (
    AUDIO_EXTENSIONS,
    audio_info,
    is_audio_path,
    iter_blocks,
    load_audio,
    read_chunks,
)
from engine.errors import DecodeError

SR_IN = 44100


def _tone(freq: float, seconds: float, sr: int = SR_IN, channels: int = 1) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    y = 0.5 * np.sin(2 * np.pi * freq * t)
    return np.stack([y] * channels, axis=1) if channels > 1 else y


def _peak_hz(y: np.ndarray, sr: int) -> float:
    spec = np.abs(np.fft.rfft(y * np.hanning(len(y))))
    k = int(np.argmax(spec))
    a, b, c = np.log(spec[k - 1: k + 2] + 1e-12)
    return (k + 0.5 * (a - c) / (a - 2 * b + c)) * sr / len(y)


@pytest.mark.parametrize(
    "name, fmt",
    [("a.wav", "WAV"), ("b.flac", "FLAC"), ("c.ogg", "OGG"), ("d.aiff", "AIFF"),
     ("E.WAV", "WAV"), ("F.Flac", "FLAC"), ("tön ♪ 日本.wav", "WAV"), ("g.mp3", "MP3"),
     ("h.OGA", "OGG"), ("i.aif", "AIFF"), ("j.AIFC", "AIFF"), ("k.opus", "OGG/OPUS")],
)
def test_formats_decode_to_mono_16k(tmp_path, name, fmt):
    path = tmp_path / name
    fmt, _, subtype = fmt.partition("/")
    rate = 48000 if subtype == "OPUS" else SR_IN  # opus is defined at 48 kHz
    sf.write(path, _tone(440.0, 2.0, sr=rate, channels=2), rate, format=fmt,
             subtype=subtype or None)
    assert is_audio_path(path)
    info = audio_info(path)
    assert info.sample_rate == rate and info.channels == 2
    assert info.duration == pytest.approx(2.0, abs=0.06)  # mp3 adds encoder padding
    y = load_audio(path)
    assert y.dtype == np.float32 and y.ndim == 1
    assert abs(len(y) - 32000) < 0.06 * 16000
    assert _peak_hz(y[4000:28000], 16000) == pytest.approx(440.0, abs=1.0)


def test_extensions_any_case():
    assert {".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff", ".aifc"} == set(
        AUDIO_EXTENSIONS
    )
    assert is_audio_path("X/Y.MP3") and is_audio_path("a.AiFf") and not is_audio_path("a.txt")
    assert not is_audio_path("wav")


def test_offset_duration_reads_the_right_part(tmp_path):
    path = tmp_path / "ramp.wav"
    # Two tones: 300 Hz for 1 s then 600 Hz for 1 s; read the second only.
    y = np.concatenate([_tone(300, 1.0), _tone(600, 1.0)])
    sf.write(path, y, SR_IN, subtype="FLOAT")
    part = load_audio(path, offset=1.1, duration=0.5)
    assert len(part) == 8000
    assert _peak_hz(part, 16000) == pytest.approx(600.0, abs=2.0)
    assert len(load_audio(path, offset=1.5)) == pytest.approx(8000, abs=2)


def test_iter_blocks_equals_whole_file(tmp_path):
    path = tmp_path / "long.flac"
    sf.write(path, _tone(220, 5.0), SR_IN)
    whole = load_audio(path)
    blocks = list(iter_blocks(path, block_seconds=1.3))
    assert len(blocks) == 4
    joined = np.concatenate(blocks)
    assert abs(len(joined) - len(whole)) <= 2
    n = min(len(joined), len(whole))
    np.testing.assert_allclose(joined[100:n - 100], whole[100:n - 100], atol=2e-3)


def test_iter_blocks_same_rate_no_resampler(tmp_path):
    path = tmp_path / "native.wav"
    y = _tone(100, 1.0, sr=16000).astype(np.float32)
    sf.write(path, y, 16000, subtype="FLOAT")
    np.testing.assert_array_equal(np.concatenate(list(iter_blocks(path, block_seconds=0.3))), y)


def test_read_chunks_seeks_and_clamps(tmp_path):
    path = tmp_path / "two.wav"
    y = np.concatenate([_tone(300, 3.0), _tone(600, 3.0)])
    sf.write(path, y, SR_IN, subtype="FLOAT")
    chunks = read_chunks(path, [0.0, 3.0, 10.0], chunk_samples=16000)
    assert chunks.shape == (3, 16000)
    assert _peak_hz(chunks[0], 16000) == pytest.approx(300, abs=2)
    assert _peak_hz(chunks[1], 16000) == pytest.approx(600, abs=2)
    # Past the end: moved back to the last second of the file, which is all 600 Hz.
    assert _peak_hz(chunks[2], 16000) == pytest.approx(600, abs=2)
    whole = load_audio(path)
    np.testing.assert_allclose(chunks[1, 200:-200], whole[48000 + 200: 64000 - 200], atol=2e-3)


def test_read_chunks_short_file_returns_what_exists(tmp_path):
    path = tmp_path / "oneshot.wav"
    sf.write(path, _tone(500, 0.5), SR_IN)
    chunks = read_chunks(path, [0.0, 1.0])
    assert chunks.shape == (2, 8000)
    assert np.abs(chunks).max() > 0.3


def test_missing_empty_and_not_audio(tmp_path):
    with pytest.raises(DecodeError, match="no such file"):
        load_audio(tmp_path / "nope.wav")
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    with pytest.raises(DecodeError, match="empty"):
        audio_info(empty)
    text = tmp_path / "notes.mp3"
    text.write_text("this is not audio at all " * 50)
    with pytest.raises(DecodeError) as err:
        audio_info(text)
    assert err.value.path == str(text)
    junk = tmp_path / "junk.flac"
    junk.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    with pytest.raises(DecodeError):
        load_audio(junk)
    with pytest.raises(DecodeError, match="directory"):
        audio_info(tmp_path)


def test_wrong_extension_content_is_read_by_content_or_rejected(tmp_path):
    # A WAV named .ogg: libsndfile sniffs the real format; the audio must be right.
    path = tmp_path / "really_wav.ogg"
    sf.write(path, _tone(440, 1.0), SR_IN, format="WAV")
    assert _peak_hz(load_audio(path)[2000:14000], 16000) == pytest.approx(440, abs=1.5)
    # A PNG header named .wav is rejected.
    fake = tmp_path / "picture.wav"
    fake.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(2000))
    with pytest.raises(DecodeError):
        audio_info(fake)


@pytest.mark.parametrize("name, fmt", [("t.wav", "WAV"), ("t.aiff", "AIFF"), ("t.mp3", "MP3"),
                                       ("t.flac", "FLAC")])
def test_truncated_file_is_an_error_not_silence(tmp_path, name, fmt):
    path = tmp_path / name
    sf.write(path, _tone(440, 3.0), SR_IN, format=fmt)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DecodeError, match="truncated"):
        load_audio(path)
    with pytest.raises(DecodeError, match="truncated"):
        list(iter_blocks(path, block_seconds=0.5))


def test_truncated_ogg_is_an_error(tmp_path):
    path = tmp_path / "t.ogg"
    sf.write(path, _tone(440, 3.0), SR_IN, format="OGG")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DecodeError):
        load_audio(path)


def test_intact_files_are_not_flagged(tmp_path):
    # An odd-length 8-bit WAV has a pad byte: a legitimate header/file size difference.
    path = tmp_path / "odd.wav"
    sf.write(path, _tone(440, 0.1)[:4411], SR_IN, subtype="PCM_U8")
    assert len(load_audio(path)) == pytest.approx(4411 * 16000 / SR_IN, abs=2)
