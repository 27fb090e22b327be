"""The library map: every track as a point of a 2-D layout of one aspect's vectors.

A pyqtgraph scatter (napari's habit: the view holds no engine logic; the layout comes
from ``engine.session.Session.map_layout`` through :class:`MapDock`, in a worker).
Points are coloured by folder. Hovering shows the file's name; a click auditions it; a
Shift-drag draws a rectangle that selects the points inside; a drag that starts on a
point carries the file (or the selection) as file URLs, into a DAW; the selected track
and its neighbours (the last query) are ringed.
"""
from __future__ import annotations

import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QMimeData, QPointF, QRectF, Qt, QUrl, Signal
from PySide6.QtGui import QBrush, QColor, QDrag, QPen
from PySide6.QtWidgets import (QComboBox, QDockWidget, QGraphicsRectItem, QHBoxLayout,
                               QLabel, QPushButton, QVBoxLayout, QWidget)

ASPECTS = ("vibe", "key", "tempo")
FAVOURITES = "\u2605 Favourites"
# Points within this many pixels of the cursor count as under it.
PICK_PIXELS = 6.0


def folder_colours(paths: list[str]) -> list[QColor]:
    """One stable colour per parent folder (a hash of its path: the same folder keeps
    its colour across sessions and rescans)."""
    out: list[QColor] = []
    cache: dict[str, QColor] = {}
    for p in paths:
        folder = str(Path(p).parent)
        if folder not in cache:
            h = zlib.crc32(folder.encode("utf-8", "surrogateescape"))
            cache[folder] = QColor.fromHsv(h % 360, 150 + (h >> 9) % 90, 200 + (h >> 17) % 55)
        out.append(cache[folder])
    return out


class _MapViewBox(pg.ViewBox):
    """Pan and zoom as usual; Shift-drag selects a rectangle; a drag from a point is a
    file drag."""

    def __init__(self, view: MapView) -> None:
        super().__init__()
        self._view = view
        self._band: QGraphicsRectItem | None = None
        self._dragging_file = False

    def mouseDragEvent(self, ev: Any, axis: Any = None) -> None:  # noqa: N802 - Qt API
        if ev.button() != Qt.MouseButton.LeftButton:
            super().mouseDragEvent(ev, axis)
            return
        if ev.isStart():
            self._dragging_file = False
            if not ev.modifiers() & Qt.KeyboardModifier.ShiftModifier:
                hit = self._view.point_at(self.mapSceneToView(ev.buttonDownScenePos()))
                if hit is not None:
                    self._dragging_file = True
                    ev.accept()
                    self._view.start_file_drag(hit)
                    return
        if self._dragging_file:
            ev.accept()
            return
        if ev.modifiers() & Qt.KeyboardModifier.ShiftModifier or self._band is not None:
            ev.accept()
            a = self.mapSceneToView(ev.buttonDownScenePos())
            b = self.mapSceneToView(ev.scenePos())
            rect = QRectF(a, b).normalized()
            if self._band is None:
                self._band = QGraphicsRectItem()
                self._band.setPen(QPen(QColor(255, 255, 255, 180), 0))
                self._band.setBrush(QBrush(QColor(120, 170, 255, 50)))
                self.addItem(self._band, ignoreBounds=True)
            self._band.setRect(rect)
            if ev.isFinish():
                self.removeItem(self._band)
                self._band = None
                self._view.select_rect(rect)
            return
        super().mouseDragEvent(ev, axis)


class MapView(QWidget):
    """The map widget.

    Signals
    -------
    audition_requested(str)
        A point was clicked.
    selection_changed(list)
        The rectangle selection (paths).
    aspect_changed(str)
        The user picked another aspect (vibe/key/tempo) to lay out.
    """

    audition_requested = Signal(str)
    selection_changed = Signal(list)
    aspect_changed = Signal(str)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.paths: list[str] = []
        self.positions = np.zeros((0, 2), np.float32)
        self._colours: list[QColor] = []
        self.selected: list[str] = []
        self._index: dict[str, int] = {}
        self.aspect_box = QComboBox()
        self.aspect_box.addItems(list(ASPECTS))
        self.aspect_box.setToolTip("The aspect whose vectors are laid out")
        self.aspect_box.currentTextChanged.connect(self.aspect_changed)
        self.status = QLabel("")
        self.hover_label = QLabel("")
        self.hover_label.setTextFormat(Qt.TextFormat.PlainText)  # names are data
        self.refresh_button = QPushButton("Refresh")
        self.filter_box = QComboBox()
        self.filter_box.setToolTip("Show all tracks, the starred ones or a collection")
        self.set_filters([])
        top = QHBoxLayout()
        top.addWidget(QLabel("Map by"))
        top.addWidget(self.aspect_box)
        top.addWidget(self.refresh_button)
        top.addWidget(self.filter_box)
        top.addWidget(self.status, 1)
        self.viewbox = _MapViewBox(self)
        self.plot = pg.PlotWidget(viewBox=self.viewbox)
        self.plot.hideAxis("left")
        self.plot.hideAxis("bottom")
        self.plot.setMenuEnabled(False)
        self.viewbox.setAspectLocked(True)
        # No outline pens: ~3x faster to paint 10k points, and the colours carry the folder.
        self.scatter = pg.ScatterPlotItem(size=7, pen=None, pxMode=True)
        self.highlight = pg.ScatterPlotItem(size=15, pxMode=True, brush=None,
                                            pen=pg.mkPen(QColor(255, 255, 255), width=2))
        self.query_mark = pg.ScatterPlotItem(size=20, pxMode=True, brush=None, symbol="star",
                                             pen=pg.mkPen(QColor(255, 200, 40), width=2.5))
        self.selection_mark = pg.ScatterPlotItem(size=11, pxMode=True, brush=None,
                                                 pen=pg.mkPen(QColor(120, 170, 255), width=1.5))
        for item in (self.scatter, self.selection_mark, self.highlight, self.query_mark):
            self.plot.addItem(item)
        self.scatter.sigClicked.connect(self._clicked)
        self.plot.scene().sigMouseMoved.connect(self._moved)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(top)
        layout.addWidget(self.plot, 1)
        layout.addWidget(self.hover_label)

    @property
    def aspect(self) -> str:
        return self.aspect_box.currentText()

    # -- points -------------------------------------------------------------------------

    def set_points(self, paths: list[str], positions: np.ndarray,
                   colours: list[QColor] | None = None) -> None:
        """Show ``paths`` at ``positions`` [n, 2], coloured by folder unless ``colours``."""
        self.paths = list(paths)
        self.positions = np.asarray(positions, dtype=np.float64).reshape(-1, 2)
        self._index = {p: i for i, p in enumerate(self.paths)}
        self._colours = colours or folder_colours(self.paths)
        brushes = [pg.mkBrush(c) for c in self._colours]
        self.scatter.setData(pos=self.positions, brush=brushes, data=np.arange(len(self.paths)))
        self.highlight.setData([])
        self.query_mark.setData([])
        self.selection_mark.setData([])
        self.status.setText(f"{len(self.paths)} tracks")
        self.viewbox.autoRange(padding=0.05)

    def set_filters(self, collections: list[str]) -> None:
        """The filter choices: all tracks, the starred ones, then each collection."""
        current = self.filter_box.currentText()
        self.filter_box.blockSignals(True)
        self.filter_box.clear()
        self.filter_box.addItems(["All tracks", FAVOURITES] + list(collections))
        found = self.filter_box.findText(current)
        self.filter_box.setCurrentIndex(max(found, 0))
        self.filter_box.blockSignals(False)

    def show_only(self, paths: list[str] | None) -> None:
        """Dim every point not in ``paths`` (None: all at full colour)."""
        keep = None if paths is None else set(paths)
        brushes = []
        for p, c in zip(self.paths, self._colours):
            if keep is not None and p not in keep:
                c = QColor(c)
                c.setAlpha(35)
            brushes.append(pg.mkBrush(c))
        self.scatter.setBrush(brushes)
        if keep is not None:
            shown = sum(p in keep for p in self.paths)
            self.status.setText(f"{len(self.paths)} tracks, {shown} shown")

    def point_at(self, pos: QPointF) -> int | None:
        """Index of the point nearest ``pos`` (view coordinates) within a few pixels."""
        if not len(self.positions):
            return None
        px = self.viewbox.viewPixelSize()
        d = np.hypot((self.positions[:, 0] - pos.x()) / max(px[0], 1e-12),
                     (self.positions[:, 1] - pos.y()) / max(px[1], 1e-12))
        i = int(np.argmin(d))
        return i if d[i] <= PICK_PIXELS else None

    def _moved(self, scene_pos: QPointF) -> None:
        if not self.plot.sceneBoundingRect().contains(scene_pos):
            return
        i = self.point_at(self.viewbox.mapSceneToView(scene_pos))
        text = "" if i is None else Path(self.paths[i]).name
        self.hover_label.setText(text)
        self.plot.setToolTip(text)

    def _clicked(self, _item: Any, points: Any, *_: Any) -> None:
        if len(points):
            self.audition_requested.emit(self.paths[int(points[0].data())])

    # -- selection, highlight, drag -------------------------------------------------------

    def select_rect(self, rect: QRectF) -> list[str]:
        x, y = self.positions[:, 0], self.positions[:, 1]
        inside = np.flatnonzero((x >= rect.left()) & (x <= rect.right())
                                & (y >= rect.top()) & (y <= rect.bottom()))
        self.selected = [self.paths[i] for i in inside]
        self.selection_mark.setData(pos=self.positions[inside])
        self.status.setText(f"{len(self.paths)} tracks, {len(self.selected)} selected")
        self.selection_changed.emit(list(self.selected))
        return self.selected

    def highlight_paths(self, query: str | None, neighbours: list[str]) -> None:
        """Ring ``neighbours`` and star ``query`` (those on the map)."""
        idx = [self._index[p] for p in neighbours if p in self._index]
        self.highlight.setData(pos=self.positions[idx] if idx else np.zeros((0, 2)))
        if query is not None and query in self._index:
            self.query_mark.setData(pos=self.positions[[self._index[query]]])
        else:
            self.query_mark.setData([])

    def mime_for(self, index: int) -> QMimeData:
        """File URLs of the point (with the selection when the point is in it)."""
        path = self.paths[index]
        files = self.selected if path in self.selected else [path]
        mime = QMimeData()
        mime.setUrls([QUrl.fromLocalFile(p) for p in files])
        return mime

    def start_file_drag(self, index: int) -> None:
        drag = QDrag(self)
        drag.setMimeData(self.mime_for(index))
        drag.exec(Qt.DropAction.CopyAction)


class MapDock(QDockWidget):
    """The map in a dock of the main window: lays out in a worker, auditions on click,
    rings the last query's neighbours."""

    def __init__(self, window: Any) -> None:
        super().__init__("Map", window)
        self.setObjectName("mapDock")
        self.window_ = window
        self.view = MapView()
        self.setWidget(self.view)
        self.view.audition_requested.connect(window.audition_path)
        self.view.aspect_changed.connect(lambda _a: self.refresh())
        self.view.refresh_button.clicked.connect(self.refresh)
        self.view.filter_box.currentTextChanged.connect(lambda _t: self.apply_filter())
        window.results_ready.connect(self._results)
        window.scan_finished.connect(lambda _r: self.isVisible() and self.refresh())
        self.visibilityChanged.connect(lambda shown: shown and not self.view.paths
                                       and self.refresh())

    def refresh(self) -> None:
        from app.workers import Task

        aspect = self.view.aspect
        self.view.status.setText(f"laying out by {aspect}...")
        self.window_.tasks.start(
            Task(self.window_.backend.session.map_layout, aspect, name="map layout"),
            returned=self._laid_out)

    def _laid_out(self, m: Any) -> None:
        self.view.set_points(m.paths, m.positions)
        self.apply_filter()

    def apply_filter(self) -> None:
        """Fetch the marks (a worker) and dim the points outside the chosen filter."""
        from app.workers import Task

        choice = self.view.filter_box.currentIndex()
        name = self.view.filter_box.currentText()
        session = self.window_.backend.session

        def marks() -> tuple[list[str], list[str] | None]:
            return read_marks(session, choice, name)

        def show(found: tuple[list[str], list[str] | None]) -> None:
            self.view.set_filters(found[0])
            self.view.show_only(found[1])

        self.window_.tasks.start(Task(marks, name="reading favourites"), returned=show)

    def _results(self, result: Any) -> None:
        self.view.highlight_paths(result.query, [n.path for n in result.neighbours])


def read_marks(session: Any, choice: int, name: str) -> tuple[list[str], list[str] | None]:
    """The collection names and the paths a marks filter lets through (worker thread).

    ``choice`` is the filter box's index: 0 every track (None: no filter), 1 the
    favourites, otherwise the collection called ``name``.
    """
    collections = session.collections()
    if choice <= 0:
        return list(collections), None
    if choice == 1:
        return list(collections), session.favourites()
    return list(collections), collections.get(name, [])
