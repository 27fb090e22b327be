"""Qt item models over the backend's plain rows: the library table and the results list.

They hold lists of frozen dataclasses (app.backend.TrackRow / Neighbour) and only adapt
them to Qt's model interface; all filtering, sorting and drawing is Qt's or a delegate's.
The filter's syntax is engine.library.filters', the project sync's engine.sync's.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from PySide6.QtCore import (QAbstractTableModel, QModelIndex, QPersistentModelIndex,
                            QSortFilterProxyModel, Qt)
from PySide6.QtGui import QBrush, QColor, QFont

from app.backend import Neighbour, TrackRow
from engine import keys, sync
from engine.library.filters import LibraryFilter, parse_filter
from engine.model.heads import LOW_CONFIDENCE, SOUND_TYPES, Estimate

PATH_ROLE = Qt.ItemDataRole.UserRole + 1
SORT_ROLE = Qt.ItemDataRole.UserRole + 2
DISTANCE_ROLE = Qt.ItemDataRole.UserRole + 3
PINNED_ROLE = Qt.ItemDataRole.UserRole + 4
ESTIMATE_ROLE = Qt.ItemDataRole.UserRole + 5

ProblemColour = QColor("#e0a040")
UncertainColour = QColor("#8a8f98")  # a low-confidence estimate: shown, greyed, with "?"
Index = QModelIndex | QPersistentModelIndex

# Key notations: mir_eval's tonic with "m" for minor ("F#m"), Camelot ("11A"), Open Key ("4m").
NOTATIONS = {"standard": "Standard (Am)", "camelot": "Camelot (8A)", "open_key": "Open Key (1m)"}


def key_label(index: int, notation: str = "camelot") -> str:
    """A key in the chosen notation: ``"Am"`` / ``"8A"`` / ``"1m"`` for A minor."""
    if notation == "open_key":
        return keys.open_key(index)
    if notation == "standard":
        return keys.PITCH_CLASSES[keys.tonic(index)] + ("m" if keys.mode(index) == "minor" else "")
    return keys.camelot(index)


def key_order(index: int, notation: str = "camelot") -> int:
    """Where a key sorts: round its notation's wheel (1A 1B 2A ... 12B for Camelot and for
    the standard names, as DJ software orders keys; 1m 1d 2m ... for Open Key), so that
    neighbouring keys sort next to each other."""
    code = keys.open_key(index) if notation == "open_key" else keys.camelot(index)
    return 2 * int(code[:-1]) + (code[-1] in "Bd")


def keys_in_order(notation: str) -> list[int]:
    """The 24 keys as a chooser lists them: chromatic (C, Cm, C#, C#m ...) in the standard
    notation, round the wheel in the others."""
    if notation == "standard":
        return [k for pc in range(12) for k in (pc, pc + 12)]
    return sorted(range(24), key=lambda k: key_order(k, notation))


def format_bpm(bpm: float) -> str:
    return f"{bpm:.1f}"


def status_text(t: TrackRow) -> str:
    """The Status column: "ok", or the problem and its reason."""
    return t.status if t.status == "ok" else f"{t.status}: {t.reason or '?'}"


def _uncertain(confidence: float) -> bool:
    return confidence < LOW_CONFIDENCE


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
    """Name, status (with a problem file's reason), key, BPM, type, duration, folder.

    The status comes second: a problem and its reason are read without scrolling. Key, BPM
    and type are the heads' estimates (app.backend.TrackRow.estimate); one below
    engine.model.heads.LOW_CONFIDENCE is greyed with a "?", never hidden, and its tooltip
    gives the confidence. Keys are written in ``notation`` (:data:`NOTATIONS`).
    """

    COLUMNS = ("Name", "Status", "Key", "BPM", "Type", "Duration", "Folder")
    KEY, BPM, TYPE = 2, 3, 4

    def __init__(self, parent: Any = None) -> None:
        super().__init__(parent)
        self._rows: list[TrackRow] = []
        self.notation = "camelot"
        self._sort: tuple[int, Qt.SortOrder] | None = None
        self.version = 0  # counts changes of the rows or their order

    def set_notation(self, notation: str) -> None:
        """Write keys in ``notation`` from now on (the display and the sort order change)."""
        if notation not in NOTATIONS:
            raise ValueError(f"unknown key notation {notation!r}; expected one of {tuple(NOTATIONS)}")
        self.notation = notation
        if self._rows:
            self.dataChanged.emit(self.index(0, self.KEY), self.index(len(self._rows) - 1, self.KEY))
            if self._sort is not None and self._sort[0] == self.KEY:
                self.sort(*self._sort)  # each notation sorts round its own wheel

    def set_rows(self, rows: list[TrackRow]) -> None:
        self.beginResetModel()
        self._rows = list(rows)
        self.version += 1
        if self._sort is not None:
            self._rows.sort(key=self._sort_key(self._sort[0]),
                            reverse=self._sort[1] == Qt.SortOrder.DescendingOrder)
        self.endResetModel()

    def sort(self, column: int, order: Qt.SortOrder = Qt.SortOrder.AscendingOrder) -> None:
        """Sort the rows here, in one Python sort on SORT_ROLE's values.

        A QSortFilterProxyModel sorting a Python model calls ``data()`` twice per comparison
        (seconds for tens of thousands of rows); the library proxy hands its sort down here
        instead (:meth:`LibraryFilterProxy.sort`). Rows set later keep the order.
        """
        if not 0 <= column < len(self.COLUMNS):
            self._sort = None
            return
        self._sort = (column, order)
        self.layoutAboutToBeChanged.emit()
        self.version += 1
        before = list(self._rows)
        self._rows.sort(key=self._sort_key(column), reverse=order == Qt.SortOrder.DescendingOrder)
        where = {id(r): i for i, r in enumerate(self._rows)}
        old = self.persistentIndexList()
        self.changePersistentIndexList(
            old, [self.index(where[id(before[i.row()])], i.column()) for i in old])
        self.layoutChanged.emit()

    def _sort_key(self, column: int) -> Any:
        return lambda t: self._sort_value(t, column)

    def _sort_value(self, t: TrackRow, col: int) -> Any:
        if col == 0:
            return t.name.lower()
        if col == 1:
            return t.status
        if col == 5:
            return t.duration if t.duration is not None else -1.0
        if col == 6:
            return t.folder.lower()
        # Unanalysed rows sort after every estimate; "no key"/"no tempo" just before them.
        e = t.estimate
        if e is None:
            return 1000.0
        if col == self.KEY:
            return 999.0 if e.key is None else float(key_order(e.key, self.notation))
        if col == self.BPM:
            return 999.0 if e.bpm is None else float(e.bpm)
        return float(SOUND_TYPES.index(e.type)) if e.type in SOUND_TYPES else 999.0

    def rows(self) -> list[TrackRow]:
        return list(self._rows)

    def row_at(self, row: int) -> TrackRow:
        return self._rows[row]

    def data(self, index: Index, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid():
            return None
        t = self._rows[index.row()]
        col = index.column()
        if role == SORT_ROLE:
            return self._sort_value(t, col)
        if self.KEY <= col <= self.TYPE:
            return self._estimate_data(t.estimate, col, role, t.path)
        if role == Qt.ItemDataRole.DisplayRole:
            return (t.name,
                    status_text(t),
                    None, None, None, format_duration(t.duration), t.folder)[col]
        if role == PATH_ROLE:
            return t.path
        if role == ESTIMATE_ROLE:
            return t.estimate
        if role == Qt.ItemDataRole.ToolTipRole:
            return t.path if t.status == "ok" else f"{t.path}\n{t.reason or 'unknown problem'}"
        if role == Qt.ItemDataRole.ForegroundRole and t.status != "ok":
            return QBrush(ProblemColour)
        if role == Qt.ItemDataRole.TextAlignmentRole and col == 5:
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        return None

    def _estimate_data(self, e: Estimate | None, col: int, role: int, path: str) -> Any:
        if role == PATH_ROLE:
            return path
        if role == ESTIMATE_ROLE:
            return e
        if e is None:
            return None
        confidence = (e.key_confidence, e.bpm_confidence, e.type_confidence)[col - self.KEY]
        if role == Qt.ItemDataRole.DisplayRole:
            if col == self.KEY:
                text = "–" if e.key is None else key_label(e.key, self.notation)
            elif col == self.BPM:
                text = "–" if e.bpm is None else format_bpm(e.bpm)
            else:
                text = e.type.replace("_", " ")
            return text + "?" if _uncertain(confidence) else text
        if role == Qt.ItemDataRole.ForegroundRole and _uncertain(confidence):
            return QBrush(UncertainColour)
        if role == Qt.ItemDataRole.ToolTipRole:
            if col == self.KEY:
                what = "no key" if e.key is None else \
                    f"{keys.key_name(e.key)} ({keys.camelot(e.key)}, Open Key {keys.open_key(e.key)})"
            elif col == self.BPM:
                what = "no tempo" if e.bpm is None else f"{e.bpm:.1f} BPM"
            else:
                what = e.type.replace("_", " ")
            low = ", low: a guess" if _uncertain(confidence) else ""
            return f"{what}\nconfidence {confidence:.2f}{low}"
        if role == Qt.ItemDataRole.TextAlignmentRole and col == self.BPM:
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        return None

    def flags(self, index: Index) -> Qt.ItemFlag:
        base = super().flags(index)
        return base | Qt.ItemFlag.ItemIsDragEnabled if index.isValid() else base


class LibraryFilterProxy(QSortFilterProxyModel):
    """The filter box's filter (engine.library.filters: words in the path or status, and
    ``key:``, ``bpm:``, ``type:`` on the estimates); the sort is the table model's.

    The proxy may sit on other proxies over a :class:`LibraryTableModel` (the marks'). The
    filter is worked out over that table's rows in one Python pass, kept until they
    change, and ``filterAcceptsRow`` only looks its row up: a call into Python per row
    that reads three cells through the proxies costs about a second per keystroke at
    50 000 rows (benchmarks/library_table.py).
    """

    def __init__(self, parent: Any = None) -> None:
        super().__init__(parent)
        self.setSortRole(SORT_ROLE)
        self.setDynamicSortFilter(True)
        self.filter = LibraryFilter()
        self._table: LibraryTableModel | None = None
        # (the table's version, whether each of its rows passes), worked out on first use
        self._accepted: tuple[int, list[bool]] | None = None

    def setSourceModel(self, model: Any) -> None:  # noqa: N802 - Qt API
        super().setSourceModel(model)
        table = model
        while isinstance(table, QSortFilterProxyModel):
            table = table.sourceModel()
        self._table = table if isinstance(table, LibraryTableModel) else None
        self._accepted = None

    def set_filter_text(self, text: str) -> LibraryFilter:
        """Filter by the box's ``text``; returns the parsed filter (its ``errors`` to show)."""
        parsed = parse_filter(text)
        if not hasattr(self, "beginFilterChange"):  # Qt < 6.9
            self.filter, self._accepted = parsed, None
            self.invalidateFilter()
        else:
            self.beginFilterChange()  # invalidateFilter() is deprecated from Qt 6.9
            self.filter, self._accepted = parsed, None
            self.endFilterChange(QSortFilterProxyModel.Direction.Rows)
        return parsed

    def filterAcceptsRow(self, row: int, parent: QModelIndex) -> bool:  # noqa: N802 - Qt API
        if self.filter.empty:
            return True
        source = self.sourceModel()
        if self._table is None:  # not over a library table: read the cells
            first = source.index(row, 0, parent)
            status = source.index(row, 1, parent).data(Qt.ItemDataRole.DisplayRole) or ""
            return self.filter.matches(first.data(PATH_ROLE) or "", first.data(ESTIMATE_ROLE),
                                       status)
        # Checked by version, not by signals: a proxy between may re-filter this one before
        # a slot here would hear that the table changed.
        if self._accepted is None or self._accepted[0] != self._table.version:
            self._accepted = (self._table.version,
                              [self.filter.matches(t.path, t.estimate, status_text(t))
                               for t in self._table.rows()])
        index = source.index(row, 0, parent)
        while index.model() is not self._table:
            index = index.model().mapToSource(index)
        return self._accepted[1][index.row()]

    def sort(self, column: int, order: Qt.SortOrder = Qt.SortOrder.AscendingOrder) -> None:
        """Sorted by the table model underneath (one Python sort, not a comparison per call
        into Python); this proxy and any between keep its order."""
        if self._table is not None:
            self._table.sort(column, order)
        else:
            super().sort(column, order)

    def path_at(self, row: int) -> str:
        return self.data(self.index(row, 0), PATH_ROLE)


class ResultsModel(_RowsTableModel):
    """The query pinned in row 0 (for A/B), then its neighbours nearest first.

    Besides the distance, each neighbour says how far it lies from the query in key and
    tempo ("+2 st, x0.96": engine.sync.offset, from the estimates), and, with a project
    key or BPM set, what it will be played at ("+2 st, x1.04": engine.sync.project_sync).
    """

    COLUMNS = ("Name", "Distance", "vs query", "Plays at")
    OFFSET, PLAYS_AT = 2, 3

    def __init__(self, parent: Any = None) -> None:
        super().__init__(parent)
        self.query: str | None = None
        self.by = ""
        self._rows: list[Neighbour] = []
        self.max_distance = 1.0
        self.estimates: dict[str, Estimate] = {}
        # Estimates analysed for files with none stored (a query dropped from outside the
        # library): kept across reloads of the library's, which know nothing of them.
        self._analysed: dict[str, Estimate] = {}
        self.project_key: int | None = None
        self.project_bpm: float | None = None

    def set_estimates(self, estimates: dict[str, Estimate]) -> None:
        """The library's stored estimates, by path (a stored one wins over an analysed one)."""
        self.estimates = {**self._analysed, **estimates}
        self._labels_changed()

    def add_estimates(self, estimates: dict[str, Estimate]) -> None:
        """Estimates of files the library has none for (``Backend.estimates_of``)."""
        if not estimates:
            return
        self._analysed.update(estimates)
        self.estimates.update(estimates)
        self._labels_changed()

    def set_project(self, key: int | None, bpm: float | None) -> None:
        """The project key (engine.keys index) and BPM; None for either: not set."""
        self.project_key, self.project_bpm = key, bpm
        self._labels_changed()

    @property
    def has_project(self) -> bool:
        return self.project_key is not None or self.project_bpm is not None

    def _labels_changed(self) -> None:
        if self._rows:
            self.dataChanged.emit(self.index(0, self.OFFSET),
                                  self.index(len(self._rows) - 1, self.PLAYS_AT))

    def offset_of(self, path: str) -> sync.Offset | None:
        """``path``'s offset from the query (None for the query itself or without estimates)."""
        q, e = self.estimates.get(self.query or ""), self.estimates.get(path)
        if q is None or e is None or path == self.query:
            return None
        return sync.offset(q.key, q.bpm, e.key, e.bpm)

    def sync_of(self, path: str) -> sync.Sync:
        """What ``path`` is played at in the project (as it is without a project)."""
        e = self.estimates.get(path)
        return sync.project_sync(e.key if e else None, e.bpm if e else None,
                                 self.project_key, self.project_bpm)

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
        col = index.column()
        if role == Qt.ItemDataRole.DisplayRole:
            if col == 0:
                name = f"{n.name} — {folder_context(n.path)}"
                return f"▶ query: {name}" if pinned else name
            if col == self.OFFSET:
                off = self.offset_of(n.path)
                return "" if off is None else sync.format_offset(off)
            if col == self.PLAYS_AT:
                return sync.format_sync(self.sync_of(n.path)) if self.has_project else ""
            return "" if pinned else f"{n.distance:.3f}"
        if role == DISTANCE_ROLE:
            return None if pinned or col != 1 else n.distance / self.max_distance
        if role == PATH_ROLE:
            return n.path
        if role == PINNED_ROLE:
            return pinned
        if role == Qt.ItemDataRole.ToolTipRole:
            if col == self.OFFSET and self.offset_of(n.path) is not None:
                return _offset_tip(self.offset_of(n.path))
            if col == self.PLAYS_AT and self.has_project:
                s = self.sync_of(n.path)
                return (f"Played in the project at {s.semitones:+d} semitones and "
                        f"x{s.tempo:.3f} tempo")
            return n.path
        if role == Qt.ItemDataRole.FontRole and pinned:
            f = QFont()
            f.setBold(True)
            return f
        return None


def _offset_tip(off: sync.Offset) -> str:
    lines = []
    if off.semitones is not None:
        lines.append("same key (or its relative) as the query" if off.semitones == 0 else
                     f"{abs(off.semitones)} semitone{'s' * (abs(off.semitones) != 1)} "
                     f"{'above' if off.semitones > 0 else 'below'} the query's key (or its relative)")
    if off.ratio is not None:
        lines.append(f"tempo x{off.ratio:.3f} the query's (half or double time counted)")
    return "\n".join(lines)
