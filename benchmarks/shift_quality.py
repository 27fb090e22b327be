"""Pitch-shift and time-stretch quality of the audition render, next to other shifters.

Renders each signal at +3 and -5 semitones (tempo 1) and at x1.25 and x0.8 (pitch 0) and
prints, per method, the mean over renders of:

* ``on_pitch``: fraction of frames within 50 cents of the target, by pyin (librosa) on
  the result against the original's median f0 times the shift (a glide or a wrong octave
  counts as a miss); frames the original has voiced, scaled by the stretch, are the
  denominator, so silence where a note should be is a miss too. Pitched signals only.
* ``harm``: energy within a quarter tone (at least 2 Hz, at most a quarter of f0) of
  the target harmonics over the steady middle half (synthetic signals with a known f0).
* ``onset_r``: correlation of the onset-strength envelope (librosa) of the result with the
  original's, time-scaled by the stretch.
* ``attack``: attack sharpness: for each onset of the original, the share of the energy of
  the 40 ms around it that lies in the 5 ms after it, in the result over the original
  (1.0: as sharp as the original; smearing and pre-echo lower it).
* ``stereo``: correlation between the result's channels minus the original's (0: the
  image is kept; a mono render of two different channels gives 1 - r).
* ``rtf``: CPU seconds (of this process and the commands it ran, so the figure does not
  depend on how busy the machine is) per second of input.

Methods: ``loev`` (engine.audio.vocoder.render, what the app plays and exports),
Rubber Band R2 and R3 when the ``rubberband`` command is installed, Signalsmith Stretch
when the ``python-stretch`` package is. Neither is a dependency of the app.

Signals: a band-limited sawtooth at C2 (65.41 Hz), a click loop (clicks and noise hits at
120 BPM over a held bass), a stereo pad (a different chord voicing in each channel), and
the audio files of any folder given (at most ``--max-files``, first ``--seconds`` each;
there ``gross`` counts renders whose median pitch error exceeds 50 cents and ``low_f0`` is
``on_pitch`` over notes below 80 Hz).

    python benchmarks/shift_quality.py [FOLDER ...] [--max-files 20] [--seconds 8]

Needs the ``bench`` extra (librosa) and optionally ``rubberband-cli`` (apt).
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.audio.decode import AUDIO_EXTENSIONS, load_audio_channels  # noqa: E402
from engine.audio.vocoder import render  # noqa: E402

SR = 44100
TRANSFORMS = [(3.0, 1.0), (-5.0, 1.0), (0.0, 1.25), (0.0, 0.8)]
C2 = 65.41

# ------------------------------------------------------------------------- signals


def sawtooth(f0: float, seconds: float, sr: int = SR) -> np.ndarray:
    """Band-limited sawtooth [T]."""
    t = np.arange(int(seconds * sr)) / sr
    y = sum(np.sin(2 * np.pi * h * f0 * t) / h for h in range(1, int(sr / 2 / f0)))
    return (0.3 * y / np.abs(y).max()).astype(np.float32)


def click_loop(seconds: float, sr: int = SR, bpm: float = 120.0) -> tuple[np.ndarray, np.ndarray]:
    """Clicks on the beat, noise hits on the off-beats, over a held 55 Hz bass.

    Returns the signal [T] and the onset times (seconds)."""
    rng = np.random.default_rng(0)
    n = int(seconds * sr)
    y = 0.15 * np.sin(2 * np.pi * 55.0 * np.arange(n) / sr)
    beat = 60.0 / bpm
    onsets = np.arange(0.1, seconds - 0.2, beat / 2)
    for i, t in enumerate(onsets):
        s = int(t * sr)
        if i % 2 == 0:
            m = int(0.003 * sr)
            hit = np.exp(-np.arange(m) / (0.0008 * sr)) * np.sign(np.sin(np.arange(m) * 0.9))
        else:
            m = int(0.08 * sr)
            hit = 0.6 * rng.standard_normal(m) * np.exp(-np.arange(m) / (0.015 * sr))
        y[s: s + m] += hit[: n - s]
    return (0.5 * y / np.abs(y).max()).astype(np.float32), onsets


def stereo_pad(seconds: float, sr: int = SR) -> tuple[np.ndarray, list[float], list[float]]:
    """A soft-attack pad, C major voiced differently left (C3 E3 G3) and right (G3 C4 E4).

    Returns [T, 2] and the fundamentals of each channel."""
    t = np.arange(int(seconds * sr)) / sr
    env = np.minimum(1.0, t / 0.3)
    left, right = [130.81, 164.81, 196.0], [196.0, 261.63, 329.63]

    def voice(fs):
        return env * sum(np.sin(2 * np.pi * h * f * t) / h ** 1.5 for f in fs for h in range(1, 8))

    y = np.stack([voice(left), voice(right)], axis=1)
    return (0.4 * y / np.abs(y).max()).astype(np.float32), left, right


# -------------------------------------------------------------------------- methods


def loev(y: np.ndarray, sr: int, semitones: float, tempo: float) -> np.ndarray:
    return render(y, sr=sr, semitones=semitones, tempo=tempo)


def rubberband(engine: str) -> Callable[[np.ndarray, int, float, float], np.ndarray]:
    """The ``rubberband`` command with engine "R2" or "R3" (files through a temp folder)."""
    import soundfile as sf

    def run(y, sr, semitones, tempo):
        with tempfile.TemporaryDirectory() as tmp:
            src, dst = os.path.join(tmp, "in.wav"), os.path.join(tmp, "out.wav")
            sf.write(src, y, sr, subtype="FLOAT")
            subprocess.run(["rubberband", "-q", "-3" if engine == "R3" else "-2",
                            "-p", str(semitones), "-T", str(tempo), src, dst], check=True,
                           capture_output=True)
            out, _ = sf.read(dst, dtype="float32")
        return out

    return run


def signalsmith(y, sr, semitones, tempo):
    import python_stretch as ps

    st = ps.Signalsmith.Stretch()
    st.preset(y.shape[1] if y.ndim == 2 else 1, sr)
    st.setTransposeSemitones(semitones)
    st.setTimeFactor(tempo)
    x = y.T if y.ndim == 2 else y[None]
    out = st.process(np.ascontiguousarray(x, dtype=np.float32))
    return out.T if y.ndim == 2 else out[0]


def methods() -> dict[str, Callable]:
    found: dict[str, Callable] = {"loev": loev}
    if shutil.which("rubberband"):
        found["rubberband R2"] = rubberband("R2")
        found["rubberband R3"] = rubberband("R3")
    try:
        import python_stretch  # noqa: F401

        found["signalsmith"] = signalsmith
    except ImportError:
        pass
    return found


# ------------------------------------------------------------------------- measures


def mono(y: np.ndarray) -> np.ndarray:
    return y.mean(axis=1) if y.ndim == 2 else y


def f0_track(y: np.ndarray, sr: int) -> np.ndarray:
    """pyin f0 [frames] (NaN where unvoiced), at 22.05 kHz, 30..2000 Hz."""
    import librosa

    x = librosa.resample(mono(y).astype(np.float32), orig_sr=sr, target_sr=22050)
    f0, voiced, _ = librosa.pyin(x, fmin=30.0, fmax=2000.0, sr=22050, frame_length=4096,
                                 hop_length=512)
    return np.where(voiced, f0, np.nan)


def on_pitch(original: np.ndarray, result: np.ndarray, sr: int, semitones: float,
             tempo: float) -> tuple[float, float]:
    """(Fraction of frames within 50 cents of the target, median error in cents)."""
    f_in = f0_track(original, sr)
    voiced_in = np.isfinite(f_in)
    if voiced_in.mean() < 0.5:
        return np.nan, np.nan  # not a pitched signal
    target = np.nanmedian(f_in) * 2 ** (semitones / 12)
    f_out = f0_track(result, sr)
    voiced = np.isfinite(f_out)
    error = np.abs(1200 * np.log2(np.where(voiced, f_out, 1.0) / target))
    good = voiced & (error <= 50)
    fraction = good.sum() / max(voiced_in.sum() / tempo, voiced.sum(), 1)
    return float(fraction), float(np.median(error[voiced])) if voiced.any() else np.inf


def harmonic_energy(y: np.ndarray, sr: int, f0s: list[float]) -> float:
    """Share of the energy (above 20 Hz) of the middle half on the harmonics of ``f0s``."""
    m = mono(y)
    m = m[len(m) // 4: 3 * len(m) // 4]
    spec = np.abs(np.fft.rfft(m * np.hanning(len(m)))) ** 2
    f = np.fft.rfftfreq(len(m), 1 / sr)
    on = np.zeros(f.shape, dtype=bool)
    for f0 in f0s:
        h = np.maximum(1, np.round(f / f0))
        tol = np.clip(h * f0 * (2 ** (1 / 48) - 1), 2.0, f0 / 4)
        on |= np.abs(f - h * f0) <= tol
    keep = f > 20
    return float(spec[on & keep].sum() / spec[keep].sum())


def onset_correlation(original, result, sr, tempo) -> float:
    import librosa

    a = librosa.onset.onset_strength(y=mono(original), sr=sr, hop_length=256)
    b = librosa.onset.onset_strength(y=mono(result), sr=sr, hop_length=256)
    # The original's envelope on the result's time axis.
    a = np.interp(np.arange(len(b)) * tempo, np.arange(len(a)), a)
    n = min(len(a), len(b))
    if n < 3 or a[:n].std() == 0 or b[:n].std() == 0:
        return np.nan
    return float(np.corrcoef(a[:n], b[:n])[0, 1])


def attack_share(y: np.ndarray, sr: int, onsets: np.ndarray) -> float:
    """Mean share of the energy of [t - 20 ms, t + 20 ms] in [t, t + 5 ms], per onset t
    (each moved to the steepest energy rise within 10 ms of it)."""
    m = mono(y).astype(np.float64)
    e = m * m
    shares = []
    for t in onsets:
        c = int(round(t * sr))
        lo, hi = c - int(0.01 * sr), c + int(0.01 * sr)
        if lo - int(0.03 * sr) < 0 or hi + int(0.03 * sr) > len(m):
            continue
        # Steepest rise of the 1 ms energy envelope near the nominal onset.
        w = int(0.001 * sr)
        env = np.convolve(e[lo - w: hi + w], np.ones(w), mode="valid")
        c = lo + int(np.argmax(np.diff(env)))
        around = e[c - int(0.02 * sr): c + int(0.02 * sr)].sum()
        if around > 0:
            shares.append(e[c: c + int(0.005 * sr)].sum() / around)
    return float(np.mean(shares)) if shares else np.nan


def detect_onsets(y: np.ndarray, sr: int) -> np.ndarray:
    import librosa

    return librosa.onset.onset_detect(y=mono(y), sr=sr, units="time", hop_length=256,
                                      backtrack=True)


def stereo_change(original: np.ndarray, result: np.ndarray) -> float:
    if original.ndim != 2 or original.shape[1] < 2:
        return np.nan
    r_in = np.corrcoef(original[:, 0], original[:, 1])[0, 1]
    if result.ndim != 2 or result.shape[1] < 2:
        return float(1.0 - r_in)
    n = len(result)
    mid = slice(n // 4, 3 * n // 4)
    return float(np.corrcoef(result[mid, 0], result[mid, 1])[0, 1] - r_in)


# ---------------------------------------------------------------------------- table


def _cpu_seconds() -> float:
    """CPU time of this process and of its finished children (the rubberband command)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def evaluate(name: str, y: np.ndarray, sr: int, method: Callable, *, f0s: list[float] | None,
             onsets: np.ndarray | None, pitched: bool) -> dict[str, float]:
    rows = []
    for semitones, tempo in TRANSFORMS:
        t0 = _cpu_seconds()
        out = np.asarray(method(y, sr, semitones, tempo), dtype=np.float32)
        cpu = _cpu_seconds() - t0
        ratio = 2 ** (semitones / 12)
        row = {"rtf": cpu / (len(y) / sr)}
        if pitched:
            row["on_pitch"], row["cents"] = on_pitch(y, out, sr, semitones, tempo)
            row["gross"] = float(row["cents"] > 50)
        if f0s:
            row["harm"] = harmonic_energy(out, sr, [f * ratio for f in f0s])
        if onsets is not None and len(onsets):
            row["onset_r"] = onset_correlation(y, out, sr, tempo)
            share_in = attack_share(y, sr, onsets)
            row["attack"] = attack_share(out, sr, onsets / tempo) / share_in
        row["stereo"] = stereo_change(y, out)
        rows.append(row)
    keys = rows[0].keys()
    summary = {k: float(np.nanmean([r[k] for r in rows])) if any(np.isfinite(r[k]) for r in rows)
               else np.nan for k in keys}
    if "gross" in summary:
        summary["gross"] = float(sum(r["gross"] for r in rows))  # a count, not a mean
    return summary


COLUMNS = ["on_pitch", "harm", "onset_r", "attack", "stereo", "rtf"]


def print_table(title: str, results: dict[str, dict[str, float]],
                columns: list[str] | None = None) -> None:
    columns = columns or COLUMNS
    print(f"\n{title}")
    print(f"  {'method':<16}" + "".join(f"{c:>10}" for c in columns))
    for name, r in results.items():
        cells = "".join(f"{r.get(c, np.nan):>10.3f}" if np.isfinite(r.get(c, np.nan))
                        else f"{'-':>10}" for c in columns)
        print(f"  {name:<16}{cells}")


def synthetic_suite(found: dict[str, Callable], seconds: float) -> None:
    saw = sawtooth(C2, seconds)
    clicks, onsets = click_loop(seconds)
    pad, left, right = stereo_pad(seconds)
    cases = [
        ("sawtooth C2 (mono)", saw, dict(f0s=[C2], onsets=None, pitched=True)),
        ("click loop over a 55 Hz bass (mono)", clicks,
         dict(f0s=None, onsets=onsets, pitched=False)),
        ("stereo pad (harm: the left channel's chord on the mix)", pad,
         dict(f0s=left + right, onsets=None, pitched=False)),
    ]
    for title, y, kw in cases:
        print_table(title, {name: evaluate(title, y, SR, m, **kw) for name, m in found.items()})


def folder_suite(found: dict[str, Callable], folders: list[str], max_files: int,
                 seconds: float) -> None:
    """The measures on real files (folders or files); pitched ones (pyin voiced in at
    least half the frames) also get on_pitch, the count of renders whose median error
    exceeds 50 cents (``gross``) and on_pitch for notes below 80 Hz."""
    files = sorted(p for folder in folders
                   for p in ([Path(folder)] if Path(folder).is_file() else Path(folder).rglob("*"))
                   if p.suffix.lower() in AUDIO_EXTENSIONS)[:max_files]
    if not files:
        print(f"\nno audio files in {folders}")
        return
    results: dict[str, list[dict[str, float]]] = {name: [] for name in found}
    low: list[bool] = []
    short = 0
    for path in files:
        try:
            y, sr = load_audio_channels(path)
        except Exception as exc:  # noqa: BLE001 - a broken file is skipped, said once
            print(f"  skipped {path.name!r}: {exc}")
            continue
        y = y[: int(seconds * sr)]
        if y.shape[1] == 1:
            y = y[:, 0]
        if len(y) < sr // 2:
            short += 1
            continue
        f_in = f0_track(y, sr)
        pitched = bool(np.isfinite(f_in).mean() >= 0.5)
        low.append(pitched and float(np.nanmedian(f_in)) < 80.0)
        onsets = detect_onsets(y, sr)
        for name, m in found.items():
            results[name].append(evaluate(path.name, y, sr, m, f0s=None, onsets=onsets,
                                          pitched=pitched))
    summary = {}
    for name, rows in results.items():
        summary[name] = {k: float(np.nanmean([r.get(k, np.nan) for r in rows]))
                         if any(np.isfinite(r.get(k, np.nan)) for r in rows) else np.nan
                         for k in COLUMNS}
        summary[name]["gross"] = float(sum(r.get("gross", 0.0) for r in rows))
        lows = [r["on_pitch"] for r, is_low in zip(rows, low) if is_low]
        summary[name]["low_f0"] = float(np.mean(lows)) if lows else np.nan
    n_pitched = sum(1 for r in results[next(iter(results))] if "on_pitch" in r)
    print_table(f"folder: {len(low)} files ({short} under 0.5 s left out; {n_pitched} pitched, "
                f"{sum(low)} below 80 Hz; "
                f"gross: renders off by > 50 cents of {n_pitched * len(TRANSFORMS)})", summary,
                COLUMNS + ["low_f0", "gross"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="*", help="folders or audio files to measure too")
    parser.add_argument("--max-files", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=8.0,
                        help="seconds of each file (synthetic signals: 4)")
    parser.add_argument("--only", nargs="*", help="method names to run (default all found)")
    args = parser.parse_args(argv)
    found = methods()
    if args.only:
        found = {k: v for k, v in found.items() if k in args.only}
    print("transforms: " + ", ".join(f"{s:+g} st x{t:g}" for s, t in TRANSFORMS)
          + "; means over them")
    synthetic_suite(found, 4.0)
    if args.folders:
        folder_suite(found, args.folders, args.max_files, args.seconds)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
