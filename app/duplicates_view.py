"""Duplicate groups (``Session.duplicates``) and moving chosen copies to the trash.

Nothing is deleted without a confirmation naming the files, and deletion is
``Session.trash`` (send2trash: the desktop's trash, never an unlink).
"""
from __future__ import annotations

from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (QDockWidget, QHBoxLayout, QLabel, QMessageBox, QPushButton,
                               QTreeWidget, QTreeWidgetItem, QVBoxLayout, QWidget)

PATH_ROLE = Qt.ItemDataRole.UserRole + 1


class DuplicatesView(QWidget):
    """Groups as a tree; every copy but the first of a group starts checked.

    Signals
    -------
    find_requested()
        "Find duplicates" was pressed.
    trash_requested(list)
        The user confirmed moving these paths to the trash.
    audition_requested(str)
        A file was double-clicked.
    """

    find_requested = Signal()
    trash_requested = Signal(list)
    audition_requested = Signal(str)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.tree = QTreeWidget()
        self.tree.setHeaderLabels(["Group / file"])
        self.tree.itemDoubleClicked.connect(self._double_clicked)
        self.find_button = QPushButton("Find duplicates")
        self.find_button.clicked.connect(self.find_requested)
        self.trash_button = QPushButton("Move checked to trash...")
        self.trash_button.clicked.connect(self.confirm_trash)
        self.status = QLabel("")
        row = QHBoxLayout()
        row.addWidget(self.find_button)
        row.addWidget(self.trash_button)
        row.addWidget(self.status, 1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(row)
        layout.addWidget(self.tree, 1)

    def set_groups(self, groups: list[Any]) -> None:
        """Show ``groups`` (``kind`` and ``paths`` each)."""
        self.tree.clear()
        for g in groups:
            label = "same file" if g.kind == "exact" else "sounds the same"
            top = QTreeWidgetItem([f"{label} ({len(g.paths)})"])
            self.tree.addTopLevelItem(top)
            for i, path in enumerate(g.paths):
                item = QTreeWidgetItem([path])
                item.setData(0, PATH_ROLE, path)
                item.setCheckState(0, Qt.CheckState.Checked if i else Qt.CheckState.Unchecked)
                top.addChild(item)
            top.setExpanded(True)
        self.status.setText(f"{len(groups)} groups" if groups else "no duplicates")

    def checked_paths(self) -> list[str]:
        out: list[str] = []
        for i in range(self.tree.topLevelItemCount()):
            top = self.tree.topLevelItem(i)
            for j in range(top.childCount()):
                item = top.child(j)
                if item.checkState(0) == Qt.CheckState.Checked:
                    out.append(item.data(0, PATH_ROLE))
        return list(dict.fromkeys(out))

    def confirm_trash(self) -> bool:
        """Ask, naming the files; emit ``trash_requested`` only on Yes."""
        paths = self.checked_paths()
        if not paths:
            self.status.setText("nothing checked")
            return False
        shown = "\n".join(paths[:10]) + (f"\n... and {len(paths) - 10} more"
                                         if len(paths) > 10 else "")
        answer = QMessageBox.question(
            self, "Move to trash",
            f"Move {len(paths)} file(s) to the trash?\n\n{shown}",
            QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
            QMessageBox.StandardButton.No)
        if answer != QMessageBox.StandardButton.Yes:
            return False
        self.trash_requested.emit(paths)
        return True

    def _double_clicked(self, item: QTreeWidgetItem, _column: int) -> None:
        path = item.data(0, PATH_ROLE)
        if path:
            self.audition_requested.emit(path)


class DuplicatesDock(QDockWidget):
    """The duplicates view in a dock of the main window (work in workers)."""

    def __init__(self, window: Any) -> None:
        super().__init__("Duplicates", window)
        self.setObjectName("duplicatesDock")
        self.window_ = window
        self.view = DuplicatesView()
        self.setWidget(self.view)
        self.view.find_requested.connect(self.find)
        self.view.trash_requested.connect(self.trash)
        self.view.audition_requested.connect(window.audition_path)

    def find(self) -> None:
        from app.workers import Task

        self.view.status.setText("looking...")
        self.window_.tasks.start(Task(self.window_.backend.session.duplicates,
                                      name="finding duplicates"),
                                 returned=self.view.set_groups)

    def trash(self, paths: list[str]) -> None:
        from app.workers import Task

        self.window_.tasks.start(Task(self.window_.backend.session.trash, paths,
                                      name="moving to the trash"),
                                 returned=lambda _done: (self.window_.reload_tracks(),
                                                         self.find()))
