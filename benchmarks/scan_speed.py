"""Scan speed: seconds of audio scanned per wall-clock second, against essentia.

Target (2-core machine): >= 100x realtime with the default model, and at least
3x faster than essentia's KeyExtractor + RhythmExtractor2013 on the same files in the same
run (essentia is a benchmark-only dependency: `pip install --pre essentia`).

Real recordings: Debian's extremetuxracer-data and frozen-bubble-data ship OGG
soundtracks (`dpkg -L extremetuxracer-data | grep ogg`), e.g.

    python benchmarks/scan_speed.py /usr/share/games/etr/music \\
        /usr/share/games/frozen-bubble/snd/*zik*.ogg

Usage: python benchmarks/scan_speed.py FOLDER_OR_FILE... [--checkpoint FILE] [--no-essentia]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from engine.audio.decode import audio_info  # noqa: E402
from engine.library.scan import scan, walk_audio  # noqa: E402


def run_essentia(files: list[str]) -> float | None:
    """Wall seconds of essentia's key + rhythm extraction (decoding included), or None."""
    try:
        import essentia.standard as es
    except ImportError as e:
        print(f"essentia: not available ({e}); install with `pip install --pre essentia`")
        return None
    key, rhythm = es.KeyExtractor(), es.RhythmExtractor2013(method="multifeature")
    t0 = time.perf_counter()
    for path in files:
        audio = es.MonoLoader(filename=path, sampleRate=44100)()
        key(audio)
        rhythm(audio)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("paths", nargs="+")
    ap.add_argument("--checkpoint", type=Path, default=None)
    ap.add_argument("--no-essentia", action="store_true")
    args = ap.parse_args()

    walk = walk_audio(args.paths)
    files = sorted(walk.files)
    durations = {}
    for f in files:
        try:
            durations[f] = audio_info(f).duration
        except Exception as e:  # noqa: BLE001 - a benchmark reports and goes on
            print(f"skipping {f}: {e}")
    files = [f for f in files if f in durations]
    total = sum(durations.values())
    print(f"{len(files)} files, {total:.0f} s of audio; {os.cpu_count()} CPUs, "
          f"load {os.getloadavg()[0]:.2f}")

    from engine.model.checkpoint import read_checkpoint_info
    from engine.model.embed import Embedder
    from engine.resources import default_checkpoint

    checkpoint = args.checkpoint or default_checkpoint()
    info = read_checkpoint_info(checkpoint)
    cfg = info.model_config()
    t0 = time.perf_counter()
    embedder = Embedder(checkpoint)
    load_s = time.perf_counter() - t0
    print(f"model: {checkpoint} ({cfg.method} {cfg.profile.name}, frontend {cfg.frontend.kind}),"
          f" loaded in {load_s:.1f} s; max {embedder.max_chunks} chunks of 3 s per track")

    with tempfile.TemporaryDirectory() as tmp:
        report = scan(files, library=Path(tmp) / "lib", embedder=embedder)
    ours = report.seconds
    if report.failed:
        print(f"failed: {report.failed}")
    print(f"loev scan: {report.audio_seconds:.0f} s of audio in {ours:.1f} s wall = "
          f"{report.audio_seconds / ours:.0f}x realtime (target >= 100x)")

    if not args.no_essentia:
        theirs = run_essentia(files)
        if theirs is not None:
            print(f"essentia KeyExtractor + RhythmExtractor2013: {theirs:.1f} s wall = "
                  f"{total / theirs:.0f}x realtime")
            print(f"loev scan is {theirs / ours:.1f}x faster than essentia (target >= 3x)")


if __name__ == "__main__":
    main()
