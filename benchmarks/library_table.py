"""The library table at scale: filter and sort times for N rows with estimates.

Prints, for a table of N generated rows (every one with a key, a BPM and a type), the time
the filter box takes to apply plain text and key/BPM/type filters, and the time a click on
each column header takes to sort. Offscreen Qt, no audio, no model.

Usage: python benchmarks/library_table.py [--rows 50000] [--repeats 3]
"""
from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from PySide6.QtCore import Qt  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402

from app.backend import TrackRow  # noqa: E402
from app.models import LibraryFilterProxy, LibraryTableModel  # noqa: E402
from engine.model.heads import SOUND_TYPES, Estimate  # noqa: E402

FILTERS = ("pack 1", "key:8A", "bpm:120-128", "kit key:8A bpm:120-128 type:kick", "")


def rows(n: int) -> list[TrackRow]:
    rng = random.Random(0)
    out = []
    for i in range(n):
        e = Estimate(rng.randrange(24), rng.random(), rng.uniform(60, 180), rng.random(),
                     rng.choice(SOUND_TYPES), rng.random())
        folder = f"/music/Pack {i // 100}/Kit {i % 7}"
        out.append(TrackRow(f"{folder}/sample {i}.wav", f"sample {i}.wav", folder, 1.0, "ok", None, e))
    return out


def timed(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    _app = QApplication.instance() or QApplication([])  # models need one, kept alive here
    model = LibraryTableModel()
    model.set_rows(rows(args.rows))
    proxy = LibraryFilterProxy()
    proxy.setSourceModel(model)
    print(f"{args.rows} rows, median of {args.repeats}")
    for text in FILTERS:
        dt = timed(lambda: proxy.set_filter_text(text), args.repeats)
        print(f"filter {text!r:38} {proxy.rowCount():7d} shown  {dt * 1000:8.1f} ms")
    for column, name in enumerate(LibraryTableModel.COLUMNS):
        dt = timed(lambda: proxy.sort(column, Qt.SortOrder.AscendingOrder), args.repeats)
        print(f"sort by {name:<10} {dt * 1000:8.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
