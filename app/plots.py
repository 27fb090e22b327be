"""pyqtgraph views: the invariance curves and the waveform with its playhead."""
from __future__ import annotations

from typing import Any

import numpy as np
import pyqtgraph as pg
from PySide6.QtWidgets import QLabel, QVBoxLayout, QWidget

from engine.config import PITCH_RANGE, TEMPO_RANGE

# One colour per subspace, the same in every view (and the aspect dials).
SUBSPACE_COLOURS = {"invariant": "#6fcf97", "pitch": "#56ccf2", "tempo": "#f2994a"}
SUBSPACE_LABELS = {"invariant": "vibe (invariant)", "pitch": "key (pitch)",
                   "tempo": "tempo"}

pg.setConfigOptions(antialias=True, background="#1b1d21", foreground="#b8bcc4")


def plain_axes(plot: pg.PlotWidget) -> None:
    """No SI prefixes: a distance of 0.004 reads 0.004, not 4 with "(x0.001)" in the label."""
    for side in ("left", "bottom"):
        plot.getAxis(side).enableAutoSIPrefix(False)


class InvariancePlot(QWidget):
    """Cosine distance to the clean track against the transform, one curve per subspace.

    The vertical marker follows the audition slider of the same transform.
    """

    def __init__(self, transform: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.transform = transform
        self.plot = pg.PlotWidget()
        self.plot.setMenuEnabled(False)
        self.plot.setMouseEnabled(x=False, y=False)
        self.plot.hideButtons()
        self.plot.showGrid(x=True, y=True, alpha=0.15)
        xlabel = "pitch shift (semitones)" if transform == "pitch" else "tempo ratio"
        self.plot.setLabel("bottom", xlabel, units=None)
        self.plot.setLabel("left", "cosine distance", units=None)
        plain_axes(self.plot)
        if transform == "tempo":
            self.plot.setLogMode(x=True, y=False)
            self.plot.setXRange(*np.log10(TEMPO_RANGE), padding=0.03)
        else:
            self.plot.setXRange(*PITCH_RANGE, padding=0.03)
        self.plot.setYRange(0, 1, padding=0.02)
        self.marker = pg.InfiniteLine(pos=self._x(0.0 if transform == "pitch" else 1.0),
                                      angle=90, pen=pg.mkPen("#e0e0e0", width=1,
                                                             style=pg.QtCore.Qt.PenStyle.DashLine))
        self.plot.addItem(self.marker)
        # Title and key above the plot, not a legend inside it over the curves.
        self.title_label = QLabel("")
        self.title_label.setObjectName("emptyHint")
        self.title_label.setTextFormat(pg.QtCore.Qt.TextFormat.PlainText)  # names are data
        self.key_label = QLabel("  ".join(
            f"<span style='color:{SUBSPACE_COLOURS[n]}'>━ {SUBSPACE_LABELS[n]}</span>"
            for n in ("pitch", "tempo", "invariant")))
        self.key_label.setObjectName("emptyHint")
        self.curves: dict[str, pg.PlotDataItem] = {}
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(0)
        layout.addWidget(self.title_label)
        layout.addWidget(self.key_label)
        layout.addWidget(self.plot, 1)
        self.set_message(f"{transform} invariance: select a track, Ctrl+I")

    def _x(self, value: float) -> float:
        # In log mode pyqtgraph positions items in log10 units.
        return float(np.log10(value)) if self.transform == "tempo" else float(value)

    def set_message(self, text: str) -> None:
        self.title_label.setText(text)

    def clear_curves(self) -> None:
        for item in self.curves.values():
            self.plot.removeItem(item)
        self.curves.clear()

    def set_curve(self, curve: dict[str, Any], *, title: str = "") -> None:
        """Draw ``{"values": [...], "subspaces": {name: [...]}}`` (engine.model.curves)."""
        self.clear_curves()
        x = np.asarray(curve["values"], dtype=float)
        self.plot.enableAutoRange(axis="y")
        names = list(curve["subspaces"])
        for i, name in enumerate(names):
            ys = curve["subspaces"][name]
            colour = SUBSPACE_COLOURS.get(name, "#cccccc")
            # Wider lines first: where two subspaces agree, both stay visible as a
            # line inside a line instead of one hiding the other.
            width = 2.0 + 2.0 * (len(names) - 1 - i)
            item = self.plot.plot(x, np.asarray(ys, dtype=float),
                                  pen=pg.mkPen(colour, width=width), symbol="o", symbolSize=4,
                                  symbolBrush=colour, symbolPen=None)
            self.curves[name] = item
        self.set_message(title)

    def set_marker(self, value: float) -> None:
        self.marker.setValue(self._x(value))


class WaveformView(QWidget):
    """Min/max envelope of the selected track with a playhead; click to seek."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.plot = pg.PlotWidget()
        self.plot.setMenuEnabled(False)
        self.plot.setMouseEnabled(x=False, y=False)
        self.plot.hideButtons()
        self.plot.hideAxis("left")
        self.plot.setLabel("bottom", "seconds", units=None)
        plain_axes(self.plot)
        self.plot.setYRange(-1, 1)
        self.plot.setXRange(0, 1, padding=0)
        self.fill_top = self.plot.plot(pen=pg.mkPen("#56ccf2", width=1))
        self.fill_bottom = self.plot.plot(pen=pg.mkPen("#56ccf2", width=1))
        self.fill = pg.FillBetweenItem(self.fill_top, self.fill_bottom,
                                       brush=pg.mkBrush(86, 204, 242, 90))
        self.plot.addItem(self.fill)
        self.playhead = pg.InfiniteLine(pos=0, angle=90, pen=pg.mkPen("#f2c94c", width=2))
        self.plot.addItem(self.playhead)
        self.duration = 0.0
        self.path: str | None = None
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.plot)

    def set_envelope(self, path: str, env: np.ndarray, duration: float) -> None:
        """``env [2, N]`` min and max per column over ``duration`` seconds."""
        self.path, self.duration = path, duration
        x = np.linspace(0, duration, env.shape[1])
        peak = max(float(np.abs(env).max()), 1e-6)
        self.fill_top.setData(x, env[1] / peak)
        self.fill_bottom.setData(x, env[0] / peak)
        self.plot.setXRange(0, max(duration, 1e-3), padding=0)
        self.playhead.setValue(0)

    def set_position(self, seconds: float) -> None:
        self.playhead.setValue(seconds)


def envelope(y: np.ndarray, *, n_columns: int = 800) -> np.ndarray:
    """Min/max of ``y [T]`` in ``n_columns`` equal slices -> ``[2, n_columns]``."""
    y = np.asarray(y, dtype=np.float32)
    if y.size == 0:
        return np.zeros((2, 1), dtype=np.float32)
    n = min(n_columns, y.size)
    cut = y[: (y.size // n) * n].reshape(n, -1)
    return np.stack([cut.min(axis=1), cut.max(axis=1)])
