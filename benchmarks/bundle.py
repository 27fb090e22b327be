"""The torch-free bundle against the torch install: size, launch, memory, scan speed.

Targets: bundle <= 600 MB; peak memory scanning a one-hour file with the bundle <= 400 MB;
onnxruntime at least as fast as torch in scan throughput on real recordings.

Every figure comes from a child process: ``python -m engine.cli`` with
``LOEV_BACKEND=torch`` or ``LOEV_BACKEND=onnxruntime``, and the bundle's own executable
(which has no torch, so it runs onnxruntime). Runs alternate between the commands and the
median is printed, because a shared machine's load moves during a run.

Real recordings: Debian's frozen-bubble-data and extremetuxracer-data ship OGG soundtracks
(smoke and benchmark only, never training), e.g.

    python benchmarks/bundle.py --bundle dist/loev \\
        /usr/share/games/frozen-bubble/snd/*zik*.ogg /usr/share/games/etr/music

Usage: python benchmarks/bundle.py [--bundle DIR] [--minutes 60] [--repeats 3] [--keep FILE] FILES...
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from scan_memory import child_peak_rss_mb, write_long_file  # noqa: E402


def commands(bundle: Path | None) -> dict[str, tuple[list[str], dict[str, str]]]:
    """Name -> (the `loev` command line, its extra environment)."""
    py = [sys.executable, "-m", "engine.cli"]
    out = {"torch": (py, {"LOEV_BACKEND": "torch"}),
           "onnxruntime": (py, {"LOEV_BACKEND": "onnxruntime"})}
    if bundle is not None:
        out["bundle (onnxruntime)"] = ([str(bundle / "loev")], {})
    return out


def dir_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink()) / 1e6


def launch_to_window(exe: list[str], env: dict[str, str]) -> float:
    """Seconds from spawning ``loev --smoke-test`` to its "window shown" line."""
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as home:
        p = subprocess.Popen([*exe, "--smoke-test"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                             text=True, cwd=home, env={**os.environ, **env, "QT_QPA_PLATFORM": "offscreen",
                                                       "XDG_CONFIG_HOME": home, "XDG_DATA_HOME": home})
        shown = None
        for line in p.stdout:
            if shown is None and "window shown" in line:
                shown = time.perf_counter() - t0
        if p.wait() != 0 or shown is None:
            raise SystemExit(f"{' '.join(exe)} --smoke-test failed (exit {p.returncode})")
    return shown


def scan_once(exe: list[str], env: dict[str, str], files: list[str], lib: Path) -> dict[str, float]:
    t0 = time.perf_counter()
    out = subprocess.run([*exe, "scan", *files, "--library", str(lib), "--json"], capture_output=True,
                         text=True, cwd=REPO, env={**os.environ, **env})
    wall = time.perf_counter() - t0
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(exe)} scan failed:\n{out.stderr[-2000:]}")
    report = json.loads(out.stdout)
    if report["failed"]:
        print(f"  failed: {report['failed']}")
    return {"audio": report["audio_seconds"], "scan": report["seconds"], "wall": wall}


def peak_rss(exe: list[str], env: dict[str, str], path: Path, lib: Path) -> tuple[float, float]:
    before = dict(os.environ)
    os.environ.update(env)  # child_peak_rss_mb passes the environment on
    try:
        peak, wall, _ = child_peak_rss_mb([*exe, "scan", str(path), "--library", str(lib)])
    finally:
        os.environ.clear()
        os.environ.update(before)
    return peak, wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("files", nargs="*", help="real recordings to scan (files or folders)")
    ap.add_argument("--bundle", type=Path, default=None, help="a built dist/loev folder")
    ap.add_argument("--minutes", type=float, default=60.0, help="length of the long file")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--keep", type=Path, default=None, help="reuse/keep the long file here")
    ap.add_argument("--skip", nargs="*", default=[], choices=["size", "launch", "memory", "speed"])
    args = ap.parse_args()
    if args.bundle is not None:
        args.bundle = args.bundle.resolve()
    cmds = commands(args.bundle)
    print(f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}; {args.repeats} alternating runs, medians")

    if args.bundle is not None and "size" not in args.skip:
        print(f"bundle size: {dir_mb(args.bundle):.0f} MB (target <= 600 MB)")

    if "launch" not in args.skip:
        # The window never imports torch (the network runs in a child process started later),
        # so the development install has one launch time whatever the backend.
        launchers = {"python -m app.main": ([sys.executable, "-m", "app.main"], {"PYTHONPATH": str(REPO)})}
        if args.bundle is not None:
            launchers["bundle"] = ([str(args.bundle / "loev")], {})
        times: dict[str, list[float]] = {k: [] for k in launchers}
        for _ in range(args.repeats):
            for name, (exe, env) in launchers.items():
                times[name].append(launch_to_window(exe, env))
        for name, t in times.items():
            print(f"launch to window, {name}: {statistics.median(t):.2f} s")

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if "memory" not in args.skip:
            path = args.keep or tmp / "long.flac"
            if not path.exists():
                write_long_file(path, args.minutes)
            for name, (exe, env) in cmds.items():
                peaks = [peak_rss(exe, env, path, tmp / f"mem-{name}-{i}")
                         for i in range(max(1, args.repeats // 2))]
                peak, wall = max(p for p, _ in peaks), statistics.median(w for _, w in peaks)
                target = " (target <= 400 MB)" if name.startswith("bundle") else ""
                print(f"peak RSS scanning a {args.minutes:.0f}-minute 44.1 kHz stereo FLAC, {name}: "
                      f"{peak:.0f} MB{target}, {wall:.1f} s wall")

        if "speed" not in args.skip and args.files:
            runs: dict[str, list[dict[str, float]]] = {k: [] for k in cmds}
            for i in range(args.repeats):
                for name, (exe, env) in cmds.items():
                    runs[name].append(scan_once(exe, env, args.files, tmp / f"speed-{name}-{i}"))
            audio = runs["torch"][0]["audio"]
            print(f"scan throughput on {audio:.0f} s of audio (in-scan time / whole command):")
            for name, rs in runs.items():
                scan_s = statistics.median(r["scan"] for r in rs)
                wall_s = statistics.median(r["wall"] for r in rs)
                print(f"  {name}: {audio / scan_s:.0f}x realtime ({scan_s:.1f} s), "
                      f"{audio / wall_s:.0f}x with start-up ({wall_s:.1f} s)")


if __name__ == "__main__":
    main()
