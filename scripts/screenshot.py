"""Render the real main window on a populated library and save docs/screenshot.png.

Runs under Xvfb (it re-executes itself through ``xvfb-run`` when there is no display):

    .venv/bin/python scripts/screenshot.py [--checkpoint FILE] [--out docs/screenshot.png]

The library is built in a temporary directory from the game soundtracks and sound effects
of Debian's extremetuxracer-data and frozen-bubble-data (when installed) plus generated
tones in known keys and click tracks at known tempos. The window adds the folder through
the same slot as "Add folder...", scans it in the background, sets a project key and BPM
(A minor, 120), runs "Find same key" on a track, auditions the nearest result (the project
sync sets its pitch and tempo), shows the invariance curves, and grabs itself.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

GAME_AUDIO = [Path("/usr/share/games/etr/music"), Path("/usr/share/games/etr/sounds"),
              Path("/usr/share/games/frozen-bubble/snd")]
NOTES = ["C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B"]


def _reexec_under_xvfb() -> None:
    if os.environ.get("DISPLAY") or os.environ.get("LOEV_SCREENSHOT_CHILD"):
        return
    xvfb = shutil.which("xvfb-run")
    if xvfb is None:
        sys.exit("screenshot: no DISPLAY and no xvfb-run (apt-get install xvfb)")
    env = dict(os.environ, LOEV_SCREENSHOT_CHILD="1")
    cmd = [xvfb, "-a", "-s", "-screen 0 1680x1050x24", sys.executable, *sys.argv]
    sys.exit(subprocess.call(cmd, env=env))


def make_demo_folder(root: Path) -> Path:
    """Game audio (symlinked) and generated samples with known keys and tempos."""
    import numpy as np
    import soundfile as sf

    for src in GAME_AUDIO:
        if src.is_dir():
            dest = root / ("Tux Racer " + src.name if "etr" in str(src) else "Frozen Bubble")
            dest.mkdir(parents=True, exist_ok=True)
            for f in sorted(src.iterdir()):
                if f.suffix.lower() in (".ogg", ".wav"):
                    (dest / f.name).symlink_to(f)
    sr = 22050
    rng = np.random.default_rng(0)
    keys = root / "Samples" / "Keys"
    keys.mkdir(parents=True, exist_ok=True)
    for i, midi in enumerate([57, 60, 64, 67, 69, 62, 65]):
        f0 = 440.0 * 2 ** ((midi - 69) / 12)
        t = np.arange(int(4 * sr)) / sr
        y = sum(np.sin(2 * np.pi * f0 * h * t) / h ** 1.5 for h in range(1, 7))
        y *= np.exp(-t * (0.4 + 0.2 * i)) * 0.3
        name = f"pad {NOTES[midi % 12]}{midi // 12 - 1}.wav"
        sf.write(str(keys / name), y.astype(np.float32), sr)
    loops = root / "Samples" / "Drum loops"
    loops.mkdir(parents=True, exist_ok=True)
    for bpm in (90, 100, 120, 128, 140, 174):
        y = np.zeros(int(8 * sr), dtype=np.float32)
        period = 60 / bpm * sr
        for k in range(int(len(y) / period)):
            i = int(k * period)
            n = min(int(0.08 * sr), len(y) - i)
            env = np.exp(-np.arange(n) / (0.012 * sr))
            hit = (np.sin(2 * np.pi * 60 * np.arange(n) / sr) if k % 2 == 0
                   else rng.standard_normal(n) * 0.5)
            y[i:i + n] += (0.7 * env * hit).astype(np.float32)
        sf.write(str(loops / f"loop {bpm} bpm.wav"), y, sr)
    return root


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", help="model (default: the shipped one)")
    parser.add_argument("--out", default=str(ROOT / "docs" / "screenshot.png"))
    parser.add_argument("--query", default="race1-jt.ogg", help="file name to query")
    parser.add_argument("--timeout", type=float, default=900.0)
    args = parser.parse_args()
    _reexec_under_xvfb()

    from PySide6.QtCore import QSettings, QTimer
    from PySide6.QtWidgets import QApplication

    from app.backend import Backend
    from app.theme import apply_dark_theme
    from app.window import MainWindow
    from engine.resources import default_checkpoint

    work = Path(tempfile.mkdtemp(prefix="loev-screenshot-"))
    checkpoint = Path(args.checkpoint) if args.checkpoint else default_checkpoint()
    if not checkpoint.exists():
        print(f"screenshot: no checkpoint at {checkpoint}", file=sys.stderr)
        return 1
    music = make_demo_folder(work / "Music")

    app = QApplication([sys.argv[0]])
    app.setApplicationName("LOEV Explorer")
    apply_dark_theme(app)
    settings = QSettings(str(work / "settings.ini"), QSettings.Format.IniFormat)
    win = MainWindow(Backend(work / "library", checkpoint), settings=settings)
    win.resize(1600, 980)
    win.show()

    def wait(predicate, what: str, timeout: float = args.timeout) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            app.processEvents()
            time.sleep(0.01)
            if time.monotonic() > deadline:
                raise SystemExit(f"screenshot: timed out waiting for {what}")

    t0 = time.monotonic()
    reports = []
    win.scan_finished.connect(reports.append)
    win.add_folder(str(music))
    wait(lambda: reports and win.scan_task is None, "the scan")
    wait(lambda: win.library_model.rowCount() > 0, "the table")
    print(f"screenshot: scanned {reports[0].found} files in {time.monotonic() - t0:.1f} s",
          file=sys.stderr)

    rows = [r.path for r in win.library_model.rows() if r.status == "ok"]
    query = next((p for p in rows if Path(p).name == args.query), rows[0])
    # The project: every preview plays in A minor at 120 BPM, each result says at what.
    from engine.keys import parse_key

    win.set_project(parse_key("A minor"), 120.0)
    win.select_path(query)
    results = []
    win.results_ready.connect(results.append)
    win.find("key")
    wait(lambda: results, "the query")
    loaded: list[str] = []
    win.audition_loaded.connect(loaded.append)
    if len(win.results_model.neighbours()):
        win.results_view.selectRow(1)
        win.audition_path(win.results_model.path_at(1))
    else:
        win.audition_path(query)
    wait(lambda: loaded, "the audition", 60)
    curves: list[str] = []
    win.curve_ready.connect(curves.append)
    win.curves_panel_action.setChecked(True)  # the panel shows the track that plays
    wait(lambda: sorted(curves)[-2:] == ["pitch", "tempo"] and len(curves) >= 2,
         "the invariance curves")
    end = time.monotonic() + 1.5  # let the playhead move and the window repaint
    while time.monotonic() < end:
        app.processEvents()
        time.sleep(0.01)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if not win.grab().save(str(out)):
        raise SystemExit(f"screenshot: could not write {out}")
    print(f"screenshot: saved {out} ({win.width()}x{win.height()})", file=sys.stderr)
    win.close()
    QTimer.singleShot(0, app.quit)
    app.exec()
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
