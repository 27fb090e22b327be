"""Table views: the library (with its context menu) and the results (bars, drag-out)."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import QMimeData, QModelIndex, QPersistentModelIndex, QRect, Qt, QUrl, Signal
from PySide6.QtGui import QAction, QColor, QContextMenuEvent, QDrag, QKeyEvent, QPainter
from PySide6.QtWidgets import (QAbstractItemView, QHeaderView, QMenu, QStyledItemDelegate,
                               QStyleOptionViewItem, QTableView, QWidget)

from app.models import DISTANCE_ROLE, PATH_ROLE


def _dense(view: QTableView) -> None:
    view.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
    view.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
    view.verticalHeader().setVisible(False)
    view.verticalHeader().setDefaultSectionSize(20)
    view.setShowGrid(False)
    view.setAlternatingRowColors(True)
    view.setWordWrap(False)
    view.horizontalHeader().setHighlightSections(False)


class _DragOut:
    """A row dragged out of the view carries its file as a URL (rendered with the
    audition's transform when ``render_for_drag`` says so)."""

    render_for_drag: Callable[[str], Path] | None

    def _enable_drag(self: QTableView) -> None:
        self.setDragEnabled(True)
        self.setDragDropMode(QAbstractItemView.DragDropMode.DragOnly)
        self.setDefaultDropAction(Qt.DropAction.CopyAction)

    def drag_mime(self, path: str) -> QMimeData:
        """The mime data a drag of ``path`` carries (a file URL, rendered if transformed)."""
        file = self.render_for_drag(path) if self.render_for_drag else Path(path)
        mime = QMimeData()
        mime.setUrls([QUrl.fromLocalFile(str(file))])
        mime.setText(str(file))
        return mime

    def startDrag(self, supported: Qt.DropAction) -> None:  # noqa: N802 - Qt API
        path = self.selected_path()
        if not path:
            return
        drag = QDrag(self)
        drag.setMimeData(self.drag_mime(path))
        drag.exec(Qt.DropAction.CopyAction)


class LibraryView(_DragOut, QTableView):
    """The library table. Right-click selects the row under the cursor and pops up the
    track actions (the same QActions as the toolbar and the shortcuts); a row can be
    dragged out as a file."""

    activated_path = Signal(str)

    def __init__(self, actions: list[QAction | None], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.track_actions = actions
        self.last_menu: QMenu | None = None
        self.render_for_drag = None
        _dense(self)
        self._enable_drag()
        self.setSortingEnabled(True)
        self.setContextMenuPolicy(Qt.ContextMenuPolicy.DefaultContextMenu)
        header = self.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        header.setStretchLastSection(True)

    def selected_path(self) -> str | None:
        rows = self.selectionModel().selectedRows() if self.selectionModel() else []
        return rows[0].data(PATH_ROLE) if rows else None

    def contextMenuEvent(self, event: QContextMenuEvent) -> None:  # noqa: N802 - Qt API
        self.last_menu = track_menu(self, event, self.track_actions)

    def keyPressEvent(self, event: QKeyEvent) -> None:  # noqa: N802 - Qt API
        if event.key() in (Qt.Key.Key_Space, Qt.Key.Key_Return) and not event.modifiers():
            path = self.selected_path()
            if path:
                self.activated_path.emit(path)
            return
        super().keyPressEvent(event)


def track_menu(view: QTableView, event: QContextMenuEvent,
               actions: list[QAction | None]) -> QMenu:
    """Select the row under the cursor and pop up the track actions there."""
    # The event reaches a view through its viewport: pos() is in viewport coordinates.
    index = view.indexAt(event.pos())
    if index.isValid():
        view.selectRow(index.row())
    view.setFocus(Qt.FocusReason.PopupFocusReason)  # the actions apply to this view's row
    menu = QMenu(view)
    for action in actions:
        if action is None:
            menu.addSeparator()
        else:
            menu.addAction(action)
    # popup(), not exec(): no nested event loop, and tests can trigger the actions.
    menu.popup(event.globalPos())
    event.accept()
    return menu


class DistanceBarDelegate(QStyledItemDelegate):
    """Draws a result's distance as a bar (shorter = closer) behind its number."""

    def paint(self, painter: QPainter, option: QStyleOptionViewItem,
              index: QModelIndex | QPersistentModelIndex) -> None:
        frac = index.data(DISTANCE_ROLE)
        if frac is not None:
            r = option.rect.adjusted(2, 4, -2, -4)
            width = int(max(0.02, min(1.0, float(frac))) * r.width())
            painter.save()
            colour = QColor("#56ccf2")
            colour.setAlpha(110)
            painter.fillRect(QRect(r.left(), r.top(), width, r.height()), colour)
            painter.restore()
        super().paint(painter, option, index)


class ResultsView(_DragOut, QTableView):
    """Neighbours of the query (pinned in row 0). Space auditions the selected row,
    Q the query (A/B); a row can be dragged out as a file.

    ``render_for_drag(path) -> Path`` gives the file to drag: the original, or the
    transformed clip rendered to a WAV when a pitch/tempo transform is set.
    """

    audition_requested = Signal(str)
    query_audition_requested = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        _dense(self)
        self.setItemDelegateForColumn(1, DistanceBarDelegate(self))
        self._enable_drag()
        self.render_for_drag: Callable[[str], Path] | None = None
        self.track_actions: list[QAction | None] = []
        self.last_menu: QMenu | None = None
        self.clicked.connect(self._clicked)

    def contextMenuEvent(self, event: QContextMenuEvent) -> None:  # noqa: N802 - Qt API
        if self.track_actions:
            self.last_menu = track_menu(self, event, self.track_actions)

    def setModel(self, model) -> None:  # noqa: N802, ANN001 - Qt API
        super().setModel(model)
        # Sections exist only once there is a model: the name takes the spare width.
        header = self.horizontalHeader()
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        header.setSectionResizeMode(1, QHeaderView.ResizeMode.Fixed)
        header.resizeSection(1, 110)
        for column in range(2, header.count()):  # "vs query", "Plays at": short labels
            header.setSectionResizeMode(column, QHeaderView.ResizeMode.ResizeToContents)

    def selected_path(self) -> str | None:
        rows = self.selectionModel().selectedRows() if self.selectionModel() else []
        return rows[0].data(PATH_ROLE) if rows else None

    def _clicked(self, index: QModelIndex) -> None:
        path = index.data(PATH_ROLE)
        if path:
            self.audition_requested.emit(path)

    def keyPressEvent(self, event: QKeyEvent) -> None:  # noqa: N802 - Qt API
        if event.key() == Qt.Key.Key_Space and not event.modifiers():
            path = self.selected_path()
            if path:
                self.audition_requested.emit(path)
            return
        if event.key() == Qt.Key.Key_Q and not event.modifiers():
            self.query_audition_requested.emit()
            return
        super().keyPressEvent(event)
