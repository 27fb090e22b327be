"""The map, duplicates, favourites and collections, added to the main window.

Kept out of app/window.py (one call there): the window only needs its docks and
actions; the views live in app/mapview.py and app/duplicates_view.py.
"""
from __future__ import annotations

from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import QInputDialog, QToolBar

from app.duplicates_view import DuplicatesDock
from app.mapview import MapDock
from app.workers import Task


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
    toolbar = window.findChild(QToolBar, "mainToolbar")
    if toolbar is not None:
        toolbar.addSeparator()
        for action in (window.star_action, map_action, dup_action):
            toolbar.addAction(action)
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
                           window.map_dock.apply_filter()))


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
                       returned=lambda _r: window.map_dock.apply_filter())
