"""The map, duplicates, favourites and collections, added to the main window.

Kept out of app/window.py (one call there): the window only needs its docks and
actions; the views live in app/mapview.py and app/duplicates_view.py.
"""
from __future__ import annotations

from typing import Any

from PySide6.QtCore import QModelIndex, QSortFilterProxyModel, Qt
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import QComboBox, QInputDialog, QToolBar

from app.duplicates_view import DuplicatesDock
from app.mapview import FAVOURITES, MapDock, read_marks
from app.models import PATH_ROLE
from app.workers import Task

ALL_TRACKS = "All tracks"


class MarksFilterProxy(QSortFilterProxyModel):
    """Passes the library table's rows whose path is in ``allowed`` (all when None).

    Sits between the table model and the window's name filter, so that both filters
    apply and the window's own proxy is unchanged.
    """

    def __init__(self, parent: Any = None) -> None:
        super().__init__(parent)
        self.allowed: set[str] | None = None

    def set_allowed(self, paths: list[str] | None) -> None:
        allowed = None if paths is None else set(paths)
        if not hasattr(self, "beginFilterChange"):  # Qt < 6.9
            self.allowed = allowed
            self.invalidateFilter()
            return
        self.beginFilterChange()  # invalidateFilter() is deprecated from Qt 6.9
        self.allowed = allowed
        self.endFilterChange(QSortFilterProxyModel.Direction.Rows)

    def filterAcceptsRow(self, row: int, parent: QModelIndex) -> bool:  # noqa: N802 - Qt API
        if self.allowed is None:
            return True
        path = self.sourceModel().index(row, 0, parent).data(PATH_ROLE)
        return path in self.allowed


def install(window: Any) -> None:
    """Add the Map and Duplicates docks (hidden until asked for) and the Star and
    Add-to-collection actions (toolbar, shortcuts, the tables' context menu)."""
    window.map_dock = MapDock(window)
    window.duplicates_dock = DuplicatesDock(window)
    for dock in (window.map_dock, window.duplicates_dock):
        window.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, dock)
        dock.hide()
    window.tabifyDockWidget(window.map_dock, window.duplicates_dock)
    map_action = window.map_dock.toggleViewAction()
    map_action.setShortcut(QKeySequence("Ctrl+M"))
    map_action.setToolTip("The library as a map (Ctrl+M)")
    dup_action = window.duplicates_dock.toggleViewAction()
    window.star_action = _action(window, "Star", lambda: toggle_star(window), "Ctrl+D",
                                 "Star the selected track (or unstar it)")
    window.collect_action = _action(window, "Add to collection...",
                                    lambda: add_to_collection(window), "Ctrl+L")
    # The table shows all tracks, the starred ones or one collection.
    window.marks_proxy = MarksFilterProxy(window)
    window.marks_proxy.setSourceModel(window.library_model)
    window.library_proxy.setSourceModel(window.marks_proxy)
    window.marks_box = QComboBox()
    window.marks_box.setToolTip("Show all tracks, the starred ones or a collection")
    window.marks_box.addItems([ALL_TRACKS, FAVOURITES])
    window.marks_box.currentIndexChanged.connect(lambda _i: refresh_marks(window))
    toolbar = window.findChild(QToolBar, "mainToolbar")
    if toolbar is not None:
        toolbar.addSeparator()
        for action in (window.star_action, map_action, dup_action):
            toolbar.addAction(action)
        toolbar.addWidget(window.marks_box)
    actions = getattr(window, "track_actions", None)
    if isinstance(actions, list):  # the tables' context menu shares this list
        actions += [None, window.star_action, window.collect_action]


def _action(window: Any, text: str, slot: Any, shortcut: str, tip: str = "") -> QAction:
    action = QAction(text, window)
    action.setShortcut(QKeySequence(shortcut))
    action.setShortcutContext(Qt.ShortcutContext.WindowShortcut)
    action.setToolTip(f"{tip or text} ({shortcut})")
    action.triggered.connect(lambda _checked=False: slot())
    window.addAction(action)
    return action


def toggle_star(window: Any) -> None:
    path = window.selected_track()
    if not path:
        return
    session = window.backend.session

    def toggle() -> bool:
        on = path not in session.favourites()
        session.set_favourite(path, on)
        return on

    window.tasks.start(Task(toggle, name="starring"),
                       returned=lambda on: (window._show_message(
                           ("starred " if on else "unstarred ") + path.rsplit("/", 1)[-1]),
                           window.map_dock.apply_filter(), refresh_marks(window)))


def add_to_collection(window: Any) -> None:
    path = window.selected_track()
    if not path:
        return
    names = list(window.backend.session.collections())
    name, ok = QInputDialog.getItem(window, "Add to collection", "Collection (or a new name):",
                                    names, 0, True)
    if not ok or not name.strip():
        return
    window.tasks.start(Task(window.backend.session.add_to_collection, name.strip(), [path],
                            name="adding to a collection"),
                       returned=lambda _r: (window.map_dock.apply_filter(),
                                            refresh_marks(window)))


def refresh_marks(window: Any) -> None:
    """Re-read the marks (a worker) and filter the table and the map by the choices."""
    choice = window.marks_box.currentIndex()
    name = window.marks_box.currentText()
    session = window.backend.session

    def read() -> tuple[list[str], list[str] | None]:
        return read_marks(session, choice, name)

    def show(found: tuple[list[str], list[str] | None]) -> None:
        names, allowed = found
        box = window.marks_box
        box.blockSignals(True)
        box.clear()
        box.addItems([ALL_TRACKS, FAVOURITES] + names)
        box.setCurrentIndex(max(box.findText(name), 0))
        box.blockSignals(False)
        window.marks_proxy.set_allowed(allowed)

    window.tasks.start(Task(read, name="reading favourites"), returned=show)
