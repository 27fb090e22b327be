"""Launch time: from a fresh interpreter to the main window shown, and the query time in the
window.

Each run starts a new Python process that imports the app, builds the window on an empty
library (or LIBRARY), shows it and processes the first events, then prints the seconds since
the interpreter started. With a scanned LIBRARY it also times "Find same key" on its first
track, from the action to the results shown. Targets: launch <= 2 s, query <= 0.2 s.
Wall-clock figures depend on the machine's load; run it on a quiet machine.

Usage: python benchmarks/window_launch.py [LIBRARY] [--runs N]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

CHILD = r"""
import time
t0 = time.perf_counter()
import json, os, sys
from PySide6.QtCore import QSettings
from PySide6.QtWidgets import QApplication
from app.backend import Backend
from app.window import MainWindow

qa = QApplication([])
lib = sys.argv[1]
win = MainWindow(Backend(lib), settings=QSettings(os.path.join(sys.argv[2], "s.ini"),
                                                  QSettings.Format.IniFormat),
                 player_factory=lambda: (None, "benchmark: no device"))
win.show()
qa.processEvents()
launch = time.perf_counter() - t0
out = {"launch_s": launch, "torch": "torch" in sys.modules}
deadline = time.monotonic() + 30
while win.library_model.rowCount() == 0 and time.monotonic() < deadline:
    qa.processEvents(); time.sleep(0.005)
rows = [r.path for r in win.library_model.rows() if r.status == "ok"]
if rows:
    done = []
    win.results_ready.connect(done.append)
    for _ in range(2):  # the first opens the indexes; the second is what a user feels
        done.clear()
        win.select_path(rows[0])
        t1 = time.perf_counter()
        win.find("key")
        while not done and time.monotonic() < deadline:
            qa.processEvents(); time.sleep(0.001)
        out.setdefault("query_s", []).append(time.perf_counter() - t1)
win.close()
print(json.dumps(out))
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("library", nargs="?")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="loev-launch-"))
    library = args.library or str(work / "empty library")
    env = dict(os.environ, QT_QPA_PLATFORM=os.environ.get("QT_QPA_PLATFORM", "offscreen"),
               PYTHONPATH=str(REPO), LOEV_LOG_DIR=str(work / "logs"))
    for run in range(args.runs):
        out = subprocess.run([sys.executable, "-c", CHILD, library, str(work)], env=env,
                             capture_output=True, text=True, cwd=REPO, timeout=120)
        if out.returncode != 0:
            print(out.stderr[-2000:], file=sys.stderr)
            return 1
        d = json.loads(out.stdout.strip().splitlines()[-1])
        query = d.get("query_s")
        print(f"run {run + 1}: launch {d['launch_s']:.2f} s"
              + (f", query {query[0]:.3f} s first / {query[-1]:.3f} s next" if query else "")
              + f", torch imported: {d['torch']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
