"""Qt item models over the backend's plain rows: the library table and the results list.

They hold lists of frozen dataclasses (app.backend.TrackRow / Neighbour) and only adapt
them to Qt's model interface; all filtering, sorting and drawing is Qt's or a delegate's.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from PySide6.QtCore import (QAbstractTableModel, QModelIndex, QPersistentModelIndex,
                            QSortFilterProxyModel, Qt)
from PySide6.QtGui import QBrush, QColor, QFont

from app.backend import Neighbour, TrackRow

PATH_ROLE = Qt.ItemDataRole.UserRole + 1
SORT_ROLE = Qt.ItemDataRole.UserRole + 2
DISTANCE_ROLE = Qt.ItemDataRole.UserRole + 3
PINNED_ROLE = Qt.ItemDataRole.UserRole + 4

ProblemColour = QColor("#e0a040")
Index = QModelIndex | QPersistentModelIndex


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    m, s = divmod(max(0.0, seconds), 60)
    return f"{int(m)}:{s:04.1f}"


class _RowsTableModel(QAbstractTableModel):
    """A flat table over ``self._rows`` with fixed ``COLUMNS`` headers."""

    COLUMNS: tuple[str, ...] = ()
    _rows: list[Any]

    def rowCount(self, parent: Index = QModelIndex()) -> int:  # noqa: N802 - Qt API
        return 0 if parent.isValid() else len(self._rows)

    def columnCount(self, parent: Index = QModelIndex()) -> int:  # noqa: N802
        return 0 if parent.isValid() else len(self.COLUMNS)

    def headerData(self, section: int, orientation: Qt.Orientation,  # noqa: N802
                   role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if orientation == Qt.Orientation.Horizontal and role == Qt.ItemDataRole.DisplayRole:
            return self.COLUMNS[section]
        return None


def folder_context(path: str, depth: int = 2) -> str:
    """The last ``depth`` folders of ``path``'s parent ("Drums/Kit A"): enough to tell two
    files of the same name apart without the whole path."""
    parts = Path(path).parent.parts
    return "/".join(p for p in parts[-depth:] if p not in ("/", "\\"))


class LibraryTableModel(_RowsTableModel):
    """Name, status (with a problem file's reason), duration, folder.

    The status comes second: a problem and its reason are read without scrolling.
    """

    COLUMNS = ("Name", "Status", "Duration", "Folder")

    def __init__(self, parent: Any = None) -> None:
        super().__init__(parent)
        self._rows: list[TrackRow] = []

    def set_rows(self, rows: list[TrackRow]) -> None:
        self.beginResetModel()
        self._rows = list(rows)
        self.endResetModel()

    def rows(self) -> list[TrackRow]:
        return list(self._rows)

    def row_at(self, row: int) -> TrackRow:
        return self._rows[row]

    def data(self, index: Index, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid():
            return None
        t = self._rows[index.row()]
        col = index.column()
        if role == Qt.ItemDataRole.DisplayRole:
            return (t.name,
                    t.status if t.status == "ok" else f"{t.status}: {t.reason or '?'}",
                    format_duration(t.duration), t.folder)[col]
        if role == SORT_ROLE:
            return (t.name.lower(), t.status,
                    t.duration if t.duration is not None else -1.0, t.folder.lower())[col]
        if role == PATH_ROLE:
            return t.path
        if role == Qt.ItemDataRole.ToolTipRole:
            return t.path if t.status == "ok" else f"{t.path}\n{t.reason or 'unknown problem'}"
        if role == Qt.ItemDataRole.ForegroundRole and t.status != "ok":
            return QBrush(ProblemColour)
        if role == Qt.ItemDataRole.TextAlignmentRole and col == 2:
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        return None

    def flags(self, index: Index) -> Qt.ItemFlag:
        base = super().flags(index)
        return base | Qt.ItemFlag.ItemIsDragEnabled if index.isValid() else base


class LibraryFilterProxy(QSortFilterProxyModel):
    """Case-insensitive filter on name, folder and status; sorts on SORT_ROLE."""

    def __init__(self, parent: Any = None) -> None:
        super().__init__(parent)
        self.setSortRole(SORT_ROLE)
        self.setFilterCaseSensitivity(Qt.CaseSensitivity.CaseInsensitive)
        self.setFilterKeyColumn(-1)  # every column
        self.setDynamicSortFilter(True)

    def path_at(self, row: int) -> str:
        return self.data(self.index(row, 0), PATH_ROLE)


class ResultsModel(_RowsTableModel):
    """The query pinned in row 0 (for A/B), then its neighbours nearest first."""

    COLUMNS = ("Name", "Distance")

    def __init__(self, parent: Any = None) -> None:
        super().__init__(parent)
        self.query: str | None = None
        self.by = ""
        self._rows: list[Neighbour] = []
        self.max_distance = 1.0

    def set_result(self, query: str, by: str, neighbours: list[Neighbour]) -> None:
        self.beginResetModel()
        self.query, self.by = query, by
        self._rows = [Neighbour(query, Path(query).name, 0.0)] + list(neighbours)
        self.max_distance = max([n.distance for n in neighbours] + [1e-6])
        self.endResetModel()

    def clear(self) -> None:
        self.beginResetModel()
        self.query, self._rows = None, []
        self.endResetModel()

    def neighbours(self) -> list[Neighbour]:
        return self._rows[1:]

    def remove_under(self, folder: str) -> None:
        """Drop the results inside ``folder``; all of them when the query is inside."""
        import os

        roots = {folder.rstrip(os.sep) + os.sep, os.path.realpath(folder).rstrip(os.sep) + os.sep}

        def inside(path: str) -> bool:
            return any(path.startswith(r) for r in roots)

        if self.query is not None and inside(self.query):
            self.clear()
        elif any(inside(n.path) for n in self._rows[1:]):
            self.beginResetModel()
            self._rows = [self._rows[0]] + [n for n in self._rows[1:] if not inside(n.path)]
            self.endResetModel()

    def path_at(self, row: int) -> str:
        return self._rows[row].path

    def flags(self, index: Index) -> Qt.ItemFlag:
        base = super().flags(index)
        return base | Qt.ItemFlag.ItemIsDragEnabled if index.isValid() else base

    def data(self, index: Index, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid():
            return None
        n = self._rows[index.row()]
        pinned = index.row() == 0
        if role == Qt.ItemDataRole.DisplayRole:
            if index.column() == 0:
                name = f"{n.name} — {folder_context(n.path)}"
                return f"▶ query: {name}" if pinned else name
            return "" if pinned else f"{n.distance:.3f}"
        if role == DISTANCE_ROLE:
            return None if pinned else n.distance / self.max_distance
        if role == PATH_ROLE:
            return n.path
        if role == PINNED_ROLE:
            return pinned
        if role == Qt.ItemDataRole.ToolTipRole:
            return n.path
        if role == Qt.ItemDataRole.FontRole and pinned:
            f = QFont()
            f.setBold(True)
            return f
        return None
