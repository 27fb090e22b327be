"""docs/map.png: the map view on a synthetic 1,400-track library (14 folders of clustered
vibe vectors, benchmarks/map_speed.py's generator), a pad as the query with its 10
nearest neighbours ringed and a rectangle selection; offscreen.

    python scripts/map_screenshot.py [--out docs/map.png]
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

FOLDERS = ["Kicks", "Snares", "Hats", "Claps", "Toms", "Percussion", "Bass", "Keys", "Pads",
           "Leads", "Vocals", "FX", "Drum loops", "Music loops"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "map.png")
    args = ap.parse_args()
    import numpy as np
    from PySide6.QtCore import QRectF
    from PySide6.QtWidgets import QApplication

    from app.mapview import MapView
    from benchmarks.map_speed import synthetic
    from engine.library.layout import layout

    app = QApplication.instance() or QApplication([])
    x, lab = synthetic(1400, len(FOLDERS), seed=3)
    y = layout(x)
    paths = [f"/home/me/Samples/{FOLDERS[f]}/{FOLDERS[f].lower().rstrip('s')} {i:03d}.wav"
             for i, f in enumerate(lab)]
    view = MapView()
    view.resize(900, 620)
    view.show()
    view.set_points(paths, y)
    query = int(np.flatnonzero(lab == FOLDERS.index("Pads"))[0])
    nearest = [int(i) for i in np.argsort(-(x @ x[query]))[1:11]]
    view.highlight_paths(paths[query], [paths[i] for i in nearest])
    c = y[lab == FOLDERS.index("Hats")].mean(0)
    view.select_rect(QRectF(c[0] - 4, c[1] - 4, 8, 8))
    view.hover_label.setText(Path(paths[query]).name)
    app.processEvents()
    view.grab().save(str(args.out))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
