"""Window responsiveness: the longest gap of the Qt event loop during a scan and two curves.

A 10 ms QTimer ticks in the window's process while the window scans a folder and then
computes the pitch and tempo curves of one track (the network in the embedding child
process). The figures printed are the longest and the 99th-percentile gap between ticks:
what a user feels as a frozen window. Target: max gap under 100 ms. Wall-clock figures
depend on the machine's load; run it on a quiet machine.

Usage: python benchmarks/event_loop_gap.py [FOLDER] [--checkpoint FILE]
(without FOLDER, a folder of generated tones and click tracks is scanned)
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
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import numpy as np  # noqa: E402


def demo_folder(root: Path) -> Path:
    from tests.fixtures_audio import clicks, note_hz, tone, write

    for i in range(12):
        write(root / f"tone{i:02d}.wav", tone(note_hz(48 + i), 6.0))
        write(root / f"click{i:02d}.wav", clicks(80 + 8 * i, 6.0))
    return root


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", nargs="?")
    parser.add_argument("--checkpoint", help="model (default: the shipped one)")
    parser.add_argument("--timeout", type=float, default=600.0)
    args = parser.parse_args()

    from PySide6.QtCore import QSettings, QTimer
    from PySide6.QtWidgets import QApplication

    from app.backend import Backend
    from app.window import MainWindow

    work = Path(tempfile.mkdtemp(prefix="loev-gap-"))
    os.environ.setdefault("LOEV_LOG_DIR", str(work / "logs"))
    folder = Path(args.folder) if args.folder else demo_folder(work / "music")
    qa = QApplication([sys.argv[0]])
    win = MainWindow(Backend(work / "lib", args.checkpoint), player_factory=lambda: (None, None),
                     settings=QSettings(str(work / "s.ini"), QSettings.Format.IniFormat))
    win.show()
    gaps: list[float] = []
    last = [time.perf_counter()]

    def tick() -> None:
        now = time.perf_counter()
        gaps.append(now - last[0])
        last[0] = now

    timer = QTimer()
    timer.setInterval(10)
    timer.timeout.connect(tick)
    done: list[object] = []
    win.scan_finished.connect(done.append)
    win.curve_ready.connect(done.append)

    def pump(until) -> None:
        deadline = time.monotonic() + args.timeout
        while not until() and time.monotonic() < deadline:
            qa.processEvents()
            time.sleep(0.002)

    settle = time.monotonic() + 1.0  # the window's first paint is not the scan's
    pump(lambda: time.monotonic() > settle)
    t0 = last[0] = time.perf_counter()
    timer.start()
    win.add_folder(str(folder))
    pump(lambda: bool(done) and win.library_model.rowCount() > 0)
    scan_s = time.perf_counter() - t0
    win.select_path(win.library_model.rows()[0].path)
    win.show_curves()
    pump(lambda: len(done) >= 3)
    timer.stop()
    total_s = time.perf_counter() - t0
    win.close()
    import shiboken6

    shiboken6.delete(win)  # widgets before the QApplication
    g = np.array(gaps) * 1000
    print(f"scan {scan_s:.1f} s, scan + two curves {total_s:.1f} s, {len(g)} ticks of 10 ms")
    print(f"event-loop gap: max {g.max():.0f} ms, p99 {np.percentile(g, 99):.0f} ms, "
          f"median {np.median(g):.0f} ms (target: max < 100 ms)")
    print(f"torch imported in the window's process: {'torch' in sys.modules}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
