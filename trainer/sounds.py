"""One-shots, loops and procedurally synthesised sounds for the corpus (beside the songs).

A real sample folder is mostly one-shots (a kick, a snare, a bass note) and short loops,
which a model trained on rendered songs alone has never heard. This module holds their
vocabulary, the procedural synthesis and the processing; :mod:`trainer.corpus` plans
(``plan_sound``) and renders such items and writes them with the songs' ``labels.csv``
columns plus ``type`` (DESIGN.md section 8's vocabulary) and ``pitch`` (the pitch class of
a pitched one-shot).

Item kinds:

- ``drum_hit``: one GM percussion key of a random kit at a random velocity, labelled by
  class (kick, snare, rim, clap, hihat, cymbal, tom, percussion); the class is drawn first
  so that rare classes are not drowned by the many GM percussion keys.
- ``melodic_hit``: one note of a random GM program (every program) at a random pitch,
  velocity and length; type from the program (:func:`program_type`), pitch class label
  for the pitched families.
- ``synth_hit``: a procedurally synthesised sound (:func:`synth_sound`): sine-sweep 808
  kicks, filtered-noise hats, snares and claps, subtractive basses, leads and pads, FM
  bells and plucks, risers and impacts.
- ``drum_loop``: 1-4 bars of a GM groove at a known tempo ("no key").
- ``music_loop``: 1-4 bars of a bass line, chords or a melody (sometimes over drums) at a
  known tempo and key.

Every item then gets random processing (:func:`process`: EQ tilt, saturation, compression,
short reverb, gain), so that its class, not its soundfont, is what items share. One-shots
are padded with silence to ``pad_to`` seconds (a training corpus needs one chunk per file;
the engine pads a short file the same way), loops are cut at their last bar.

The benchmark split renders only soundfont items (a held-out soundfont, never the
procedural generators the training corpus uses).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from engine.config import SAMPLE_RATE

SR = SAMPLE_RATE
NO_KEY_LABEL = "no key"
NO_TEMPO_LABEL = "no tempo"
ONESHOT_KINDS = ("drum_hit", "melodic_hit", "synth_hit")
LOOP_KINDS = ("drum_loop", "music_loop")
SOUND_KINDS = ONESHOT_KINDS + LOOP_KINDS
LOOP_TEMPO_RANGE = (70.0, 180.0)

# GM percussion keys (35-81) by class of DESIGN.md section 8.
DRUM_CLASSES: dict[str, tuple[int, ...]] = {
    "kick": (35, 36),
    "snare": (38, 40),
    "rim": (37,),
    "clap": (39,),
    "hihat": (42, 44, 46),
    "cymbal": (49, 51, 52, 53, 55, 57, 59),
    "tom": (41, 43, 45, 47, 48, 50),
    "percussion": (54, 56, 58, 60, 61, 62, 63, 64, 65, 66, 67, 68, 69, 70, 75, 76, 77, 80, 81),
}
# How often each drum class is drawn: the classes a producer browses most get more.
DRUM_CLASS_WEIGHTS = {"kick": 0.18, "snare": 0.16, "rim": 0.06, "clap": 0.1, "hihat": 0.16,
                      "cymbal": 0.12, "tom": 0.1, "percussion": 0.12}

SYNTH_TYPES = ("kick", "snare", "clap", "hihat", "bass", "lead", "pad", "fx")


def program_type(program: int) -> str:
    """The sound type of a GM program 0-127 (DESIGN.md section 8)."""
    if not 0 <= program < 128:
        raise ValueError(f"GM program {program} is outside 0-127")
    family = program // 8
    special = {
        47: "tom",  # timpani
        52: "vocal", 53: "vocal", 54: "vocal", 55: "fx",  # choirs, voice, orchestra hit
        104: "guitar", 105: "guitar", 106: "guitar", 107: "guitar",  # sitar, banjo, shamisen, koto
        108: "keys", 109: "brass_wind", 110: "strings", 111: "brass_wind",  # kalimba, bagpipe...
        112: "percussion", 113: "percussion", 114: "percussion", 115: "percussion",
        116: "tom", 117: "tom", 118: "tom", 119: "fx",
    }
    if program in special:
        return special[program]
    return ("keys", "keys", "keys", "guitar", "bass", "strings", "strings", "brass_wind",
            "brass_wind", "brass_wind", "lead", "pad", "fx", "strings", "percussion", "fx")[family]


def pitched_program(program: int) -> bool:
    """Programs whose note number is the pitch heard (not percussive or sound effects)."""
    return program < 112 and program != 55 and not 96 <= program < 104


# ------------------------------------------------------------------------ processing


def _one_pole_lowpass(y: np.ndarray, fc: float) -> np.ndarray:
    from scipy.signal import lfilter

    a = float(np.exp(-2 * np.pi * min(fc, 0.49 * SR) / SR))
    return lfilter([1 - a], [1, -a], y).astype(np.float32)


def _biquad(y: np.ndarray, kind: str, fc: float, q: float = 0.707) -> np.ndarray:
    from scipy.signal import butter, sosfilt

    fc = float(np.clip(fc, 20.0, 0.45 * SR))
    if kind == "bandpass":
        bw = fc / max(q, 0.3)
        lo, hi = max(20.0, fc - bw / 2), min(0.48 * SR, fc + bw / 2)
        sos = butter(2, [lo, hi], btype="bandpass", fs=SR, output="sos")
    else:
        sos = butter(2, fc, btype=kind, fs=SR, output="sos")
    return sosfilt(sos, y).astype(np.float32)


def eq_tilt(y: np.ndarray, tilt_db: float, pivot: float = 1000.0) -> np.ndarray:
    """Tilt the spectrum around ``pivot`` Hz: highs up ``tilt_db / 2``, lows down as much
    (complementary first-order shelves)."""
    low = _one_pole_lowpass(y, pivot)
    high = y - low
    g = 10 ** (tilt_db / 20)
    return (low / np.sqrt(g) + high * np.sqrt(g)).astype(np.float32)


def saturate(y: np.ndarray, drive_db: float) -> np.ndarray:
    """tanh soft clipping with ``drive_db`` of input gain, level restored."""
    peak = float(np.abs(y).max(initial=0.0))
    if peak <= 0:
        return y
    g = 10 ** (drive_db / 20) / peak
    return (np.tanh(y * g) / np.tanh(g * peak) * peak).astype(np.float32)


def compress(y: np.ndarray, ratio: float, threshold_db: float, release_s: float = 0.08) -> np.ndarray:
    """A feed-forward peak compressor (instant attack, exponential release)."""
    from scipy.signal import lfilter

    level = np.abs(y).astype(np.float64)
    a = float(np.exp(-1.0 / (release_s * SR)))
    env = np.maximum(level, lfilter([1 - a], [1, -a], level))
    env_db = 20 * np.log10(np.maximum(env, 1e-6))
    over = np.maximum(0.0, env_db - threshold_db)
    gain = 10 ** (-over * (1 - 1 / ratio) / 20)
    return (y * gain).astype(np.float32)


def reverb(y: np.ndarray, rng: np.random.Generator, decay_s: float, wet: float) -> np.ndarray:
    """Convolution with exponentially decaying, low-passed noise (a short room)."""
    from scipy.signal import fftconvolve

    n = int(decay_s * SR)
    t = np.arange(n) / SR
    ir = rng.standard_normal(n) * np.exp(-6.9 * t / decay_s)
    ir = _one_pole_lowpass(ir.astype(np.float32), float(rng.uniform(2000, 7000)))
    ir /= np.sqrt(np.sum(ir.astype(np.float64) ** 2)) + 1e-9
    tail = fftconvolve(y, ir)[: len(y)].astype(np.float32)
    return ((1 - wet) * y + wet * tail).astype(np.float32)


def process(y: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, list[str]]:
    """Random per-sound processing: what a producer's chain does to a sample.

    Each step is applied with some probability: EQ tilt (+-9 dB highs against lows), saturation,
    compression, short reverb; then a peak level between -12 and -0.5 dBFS. Returns the
    audio and the names of the steps applied (for the provenance column).
    """
    steps = []
    if rng.random() < 0.6:
        y = eq_tilt(y, float(rng.uniform(-9, 9)))
        steps.append("tilt")
    if rng.random() < 0.3:
        y = saturate(y, float(rng.uniform(3, 18)))
        steps.append("sat")
    if rng.random() < 0.3:
        peak_db = 20 * np.log10(max(float(np.abs(y).max(initial=0.0)), 1e-6))
        y = compress(y, float(rng.uniform(2, 8)), peak_db - float(rng.uniform(3, 18)))
        steps.append("comp")
    if rng.random() < 0.3:
        y = reverb(y, rng, float(rng.uniform(0.15, 1.0)), float(rng.uniform(0.1, 0.4)))
        steps.append("verb")
    peak = float(np.abs(y).max(initial=0.0))
    if peak > 0:
        y = y * (10 ** (float(rng.uniform(-12, -0.5)) / 20) / peak)
    return y.astype(np.float32), steps


# ------------------------------------------------------------------------ synthesis


def _env_adsr(n: int, attack: float, decay: float, sustain: float, release: float, hold: float) -> np.ndarray:
    """Linear attack, exponential decay to ``sustain``, held for ``hold`` s, exponential release."""
    t = np.arange(n) / SR
    env = np.where(t < attack, t / max(attack, 1e-4),
                   sustain + (1 - sustain) * np.exp(-(t - attack) / max(decay, 1e-3)))
    off = attack + hold
    env = np.where(t > off, env * np.exp(-(t - off) / max(release, 1e-3)), env)
    return env.astype(np.float32)


def _osc(freq: np.ndarray | float, n: int, shape: str, rng: np.random.Generator) -> np.ndarray:
    """Band-limited oscillator (additive below Nyquist): sine, saw, square or triangle."""
    f = np.broadcast_to(np.asarray(freq, dtype=np.float64), (n,))
    phase = 2 * np.pi * np.cumsum(f) / SR + rng.uniform(0, 2 * np.pi)
    if shape == "sine":
        return np.sin(phase).astype(np.float32)
    f_max = float(f.max())
    n_harm = max(1, int(0.45 * SR / max(f_max, 1.0)))
    out = np.zeros(n)
    for k in range(1, n_harm + 1):
        if shape == "saw":
            out += np.sin(k * phase) / k
        elif k % 2:  # square and triangle: odd harmonics
            out += np.sin(k * phase) / k if shape == "square" else (-1) ** (k // 2) * np.sin(k * phase) / k**2
    return (out / np.abs(out).max(initial=1e-9)).astype(np.float32)


def _midi_hz(pitch: float) -> float:
    return 440.0 * 2 ** ((pitch - 69) / 12)


def _kick(rng: np.random.Generator) -> np.ndarray:
    dur = float(rng.uniform(0.25, 1.4))
    n = int(dur * SR)
    t = np.arange(n) / SR
    f_end, f_start = rng.uniform(40, 65), rng.uniform(90, 300)
    freq = f_end + (f_start - f_end) * np.exp(-t / rng.uniform(0.01, 0.06))
    y = _osc(freq, n, "sine", rng) * np.exp(-t / rng.uniform(0.08, dur / 2.5))
    if rng.random() < 0.6:  # beater click
        click = rng.standard_normal(n).astype(np.float32) * np.exp(-t / rng.uniform(0.002, 0.01))
        y = y + _biquad(click, "highpass", float(rng.uniform(1000, 4000))) * rng.uniform(0.1, 0.5)
    return y


def _noise_burst(rng: np.random.Generator, n: int, decay: float) -> np.ndarray:
    t = np.arange(n) / SR
    return (rng.standard_normal(n) * np.exp(-t / decay)).astype(np.float32)


def _snare(rng: np.random.Generator) -> np.ndarray:
    n = int(rng.uniform(0.2, 0.6) * SR)
    t = np.arange(n) / SR
    f0 = rng.uniform(150, 260)
    tone = _osc(f0 * (1 + 0.5 * np.exp(-t / 0.01)), n, "sine", rng) * np.exp(-t / rng.uniform(0.03, 0.12))
    noise = _biquad(_noise_burst(rng, n, float(rng.uniform(0.05, 0.2))), "bandpass",
                    float(rng.uniform(1500, 5000)), float(rng.uniform(0.4, 1.2)))
    return tone * rng.uniform(0.3, 1.0) + noise * rng.uniform(0.6, 1.5)


def _clap(rng: np.random.Generator) -> np.ndarray:
    n = int(rng.uniform(0.25, 0.6) * SR)
    y = np.zeros(n, dtype=np.float32)
    gap = rng.uniform(0.006, 0.015)
    for k in range(int(rng.integers(3, 5))):
        start = int(k * gap * SR)
        burst = _noise_burst(rng, n - start, 0.004 if k < 3 else float(rng.uniform(0.05, 0.2)))
        y[start:] += burst
    return _biquad(y, "bandpass", float(rng.uniform(900, 2500)), float(rng.uniform(0.7, 2.0)))


def _hihat(rng: np.random.Generator) -> np.ndarray:
    open_hat = rng.random() < 0.35
    n = int((rng.uniform(0.25, 0.8) if open_hat else rng.uniform(0.06, 0.2)) * SR)
    decay = rng.uniform(0.12, 0.4) if open_hat else rng.uniform(0.01, 0.05)
    noise = _noise_burst(rng, n, float(decay))
    if rng.random() < 0.5:  # 808 style: six detuned square waves, band-passed
        base = rng.uniform(250, 550)
        ratios = (1.0, 1.342, 1.2312, 1.6532, 1.9523, 2.1523)
        metal = sum(_osc(base * r, n, "square", rng) for r in ratios)
        noise = noise * 0.4 + metal * np.exp(-np.arange(n) / SR / decay) / 6
    return _biquad(noise, "highpass", float(rng.uniform(4000, 7000)))


def _subtractive(rng: np.random.Generator, pitch: int, kind: str) -> np.ndarray:
    """Bass, lead or pad: oscillators (detuned for pads), a low-pass with an envelope, an ADSR."""
    hz = _midi_hz(pitch)
    if kind == "pad":
        hold, attack, release = rng.uniform(1.0, 2.0), rng.uniform(0.1, 0.8), rng.uniform(0.3, 0.8)
    elif kind == "bass":
        hold, attack, release = rng.uniform(0.1, 1.0), rng.uniform(0.001, 0.01), rng.uniform(0.03, 0.2)
    else:
        hold, attack, release = rng.uniform(0.1, 1.2), rng.uniform(0.002, 0.05), rng.uniform(0.05, 0.4)
    n = int(min(2.95, attack + hold + 4 * release) * SR)
    shape = str(rng.choice(["saw", "square", "triangle", "sine"] if kind == "bass" else ["saw", "square", "triangle"]))
    voices = int(rng.integers(3, 6)) if kind == "pad" else int(rng.integers(1, 3))
    y = sum(_osc(hz * 2 ** (rng.uniform(-0.15, 0.15) / 12 if voices > 1 else 0), n, shape, rng)
            for _ in range(voices)) / voices
    if kind == "bass" and rng.random() < 0.5:  # sub oscillator an octave down
        y = y + 0.5 * _osc(hz / 2, n, "sine", rng)
    # Filter sweep: render in blocks with a falling cutoff (cheap, and smooth enough).
    cut0, cut1 = hz * rng.uniform(4, 30), hz * rng.uniform(1.5, 6)
    env = np.exp(-np.arange(n) / SR / rng.uniform(0.05, 0.6))
    block = SR // 100
    out = np.empty_like(y)
    for s in range(0, n, block):
        fc = float(cut1 + (cut0 - cut1) * env[s])
        seg = y[max(0, s - block): s + block]
        out[s: s + block] = _one_pole_lowpass(seg, fc)[-len(y[s: s + block]):]
    return out * _env_adsr(n, attack, float(rng.uniform(0.1, 0.6)), float(rng.uniform(0.3, 0.9)),
                           release, hold)


def _fm(rng: np.random.Generator, pitch: int) -> np.ndarray:
    """Two-operator FM: bells (inharmonic ratios, long decay) and plucks (harmonic, short)."""
    hz = _midi_hz(pitch)
    bell = rng.random() < 0.5
    dur = rng.uniform(1.0, 2.9) if bell else rng.uniform(0.2, 0.8)
    n = int(dur * SR)
    t = np.arange(n) / SR
    ratio = float(rng.choice([1.4, 2.76, 3.5, 1.41]) if bell else rng.choice([1.0, 2.0, 3.0]))
    index = rng.uniform(1, 6) * np.exp(-t / rng.uniform(0.05, dur / 2))
    mod = np.sin(2 * np.pi * hz * ratio * t) * index
    y = np.sin(2 * np.pi * hz * t + mod) * np.exp(-t / rng.uniform(0.05, dur / 2))
    return y.astype(np.float32)


def _fx(rng: np.random.Generator) -> np.ndarray:
    """Risers (noise and a rising tone that swell) and impacts (a falling boom and a noise hit)."""
    if rng.random() < 0.5:
        n = int(rng.uniform(1.0, 2.9) * SR)
        t = np.arange(n) / SR
        ramp = (t / t[-1]) ** rng.uniform(1, 3)
        tone = _osc(rng.uniform(100, 400) * 2 ** (rng.uniform(1, 4) * t / t[-1]), n, "saw", rng)
        noise = _biquad(rng.standard_normal(n).astype(np.float32), "bandpass", float(rng.uniform(800, 4000)), 0.7)
        return ((tone * rng.uniform(0, 0.6) + noise) * ramp).astype(np.float32)
    n = int(rng.uniform(0.8, 2.5) * SR)
    t = np.arange(n) / SR
    boom = _osc(rng.uniform(30, 60) + rng.uniform(50, 150) * np.exp(-t / 0.1), n, "sine", rng)
    hit = _noise_burst(rng, n, float(rng.uniform(0.05, 0.5)))
    return (boom * np.exp(-t / rng.uniform(0.2, 0.8)) + hit * rng.uniform(0.3, 1.0)).astype(np.float32)


def synth_sound(rng: np.random.Generator, kind: str | None = None) -> tuple[np.ndarray, str, int | None]:
    """One procedural one-shot: (audio float32 at 16 kHz, type, pitch class or None)."""
    kind = str(rng.choice(SYNTH_TYPES)) if kind is None else kind
    if kind not in SYNTH_TYPES:
        raise ValueError(f"unknown synth type {kind!r}; expected one of {SYNTH_TYPES}")
    makers = {"kick": _kick, "snare": _snare, "clap": _clap, "hihat": _hihat, "fx": _fx}
    if kind in makers:
        return makers[kind](rng).astype(np.float32), kind, None
    low, high = {"bass": (28, 52), "lead": (55, 88), "pad": (45, 76)}[kind]
    pitch = int(rng.integers(low, high + 1))
    if kind == "lead" and rng.random() < 0.4:
        y = _fm(rng, pitch)
    else:
        y = _subtractive(rng, pitch, kind)
    return y.astype(np.float32), kind, pitch % 12


# ------------------------------------------------------------------- arrangements


@dataclass
class SoundPlan:
    """What one sound item plays and the labels it gets (before rendering)."""

    notes: list[tuple[float, float, int, int, int]]
    programs: dict[int, int]
    type: str
    key: str  # a key name, NO_KEY_LABEL, or "" (unknown)
    tempo: str  # BPM as text, or NO_TEMPO_LABEL
    pitch: str  # pitch class name, or ""
    duration: float  # seconds of audio to render
    drum_kit: int = 0
    source: str = ""
    meta: dict[str, Any] | None = None


def fit_length(y: np.ndarray, seconds: float, *, fade_s: float = 0.01) -> np.ndarray:
    """Cut or zero-pad to ``seconds``; a cut gets a short fade so it does not click."""
    n = int(round(seconds * SR))
    if len(y) >= n:
        y = y[:n].copy()
        k = min(n, int(fade_s * SR))
        if k:
            y[-k:] *= np.linspace(1.0, 0.0, k, dtype=np.float32)
        return y
    return np.pad(y, (0, n - len(y)))


def trim_silence(y: np.ndarray, *, floor_db: float = -60.0, min_s: float = 0.05) -> np.ndarray:
    """Cut the trailing part quieter than ``floor_db`` below the peak (a sample's end)."""
    peak = float(np.abs(y).max(initial=0.0))
    if peak <= 0:
        return y[: int(min_s * SR)]
    loud = np.flatnonzero(np.abs(y) > peak * 10 ** (floor_db / 20))
    end = max(int(min_s * SR), int(loud[-1]) + 1 + int(0.01 * SR))
    return y[:end]
