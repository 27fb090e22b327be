"""Peak memory of `loev scan` on a one-hour file (target <= 500 MB peak RSS).

Writes a one-hour 44.1 kHz stereo FLAC (tones, clicks and noise, written in blocks), scans
it with `python -m engine.cli scan` in a child process and prints the child's peak RSS,
next to the peak RSS of a child that only imports torch and loads the model (the floor).

Usage: python benchmarks/scan_memory.py [--minutes 60] [--checkpoint FILE] [--keep FILE]
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def write_long_file(path: Path, minutes: float, *, sr: int = 44100) -> None:
    import soundfile as sf

    rng = np.random.default_rng(0)
    block = sr * 10
    with sf.SoundFile(str(path), "w", samplerate=sr, channels=2, format="FLAC") as f:
        for b in range(int(minutes * 6)):
            t = (np.arange(block) + b * block) / sr
            freq = 110.0 * 2 ** ((b % 24) / 12)
            y = 0.2 * np.sin(2 * np.pi * freq * t) + 0.02 * rng.standard_normal(block)
            y[(np.arange(block) % (sr // 2)) < 200] += 0.5  # clicks at 120 bpm
            f.write(np.stack([y, 0.8 * y], axis=1).astype(np.float32))


def child_peak_rss_mb(cmd: list[str]) -> tuple[float, float, subprocess.CompletedProcess]:
    """Run ``cmd`` alone in a fresh process tree and return (peak RSS MB, wall s, result)."""
    # RUSAGE_CHILDREN is the max over waited-for children, so measure in a wrapper process.
    wrapper = ("import resource, subprocess, sys, time; t = time.perf_counter(); "
               "r = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
               "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, "
               "time.perf_counter() - t, r.returncode); sys.stderr.write(r.stderr[-2000:])")
    out = subprocess.run([sys.executable, "-c", wrapper, *cmd], capture_output=True, text=True,
                         cwd=REPO)
    kb, wall, rc = out.stdout.split()
    if int(rc) != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{out.stderr}")
    return int(kb) / 1024, float(wall), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=60.0)
    ap.add_argument("--checkpoint", type=Path, default=None)
    ap.add_argument("--keep", type=Path, default=None, help="reuse/keep the long file here")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = args.keep or Path(tmp) / "one-hour.flac"
        if not path.exists():
            t0 = time.perf_counter()
            write_long_file(path, args.minutes)
            print(f"wrote {path} ({path.stat().st_size / 1e6:.0f} MB) in {time.perf_counter() - t0:.0f} s")
        ckpt = ["--checkpoint", str(args.checkpoint)] if args.checkpoint else []
        floor_code = ("import sys; from engine.model.embed import Embedder; "
                      "Embedder(sys.argv[1] if len(sys.argv) > 1 else None)")
        floor, _, _ = child_peak_rss_mb([sys.executable, "-c", floor_code,
                                         *([str(args.checkpoint)] if args.checkpoint else [])])
        peak, wall, _ = child_peak_rss_mb([sys.executable, "-m", "engine.cli", "scan", str(path),
                                           "--library", str(Path(tmp) / "lib"), *ckpt])
        print(f"model loaded, nothing scanned: peak RSS {floor:.0f} MB")
        print(f"`loev scan` of a {args.minutes:.0f}-minute 44.1 kHz stereo FLAC: peak RSS "
              f"{peak:.0f} MB (target <= 500 MB), {wall:.1f} s wall")


if __name__ == "__main__":
    main()
