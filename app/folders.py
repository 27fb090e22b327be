"""Library folders: those a CLI scan left in the catalogue, and watching them for changes."""
from __future__ import annotations

import os
from collections.abc import Iterable

from PySide6.QtCore import QFileSystemWatcher, QObject, QTimer, Signal


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def folders_of(paths: Iterable[str], known: Iterable[str] = ()) -> list[str]:
    """The folders a set of track paths was scanned from, as far as the paths tell.

    ``loev scan`` does not record its folders, only the tracks: the folders are
    recovered as the directories holding tracks, nested ones folded into their parent,
    and sibling folders merged into the parent they share (``Drums/`` and ``Bass/`` of
    one sample folder are that folder). Paths inside a ``known`` folder are left out.
    """
    known = [k for k in known]
    dirs = sorted({os.path.dirname(p) for p in paths
                   if not any(_inside(p, k) for k in known)})
    roots: list[str] = []
    for d in dirs:  # sorted: a parent comes before its children
        if not any(_inside(d, r) for r in roots):
            roots.append(d)
    merged = True
    while merged and len(roots) > 1:
        merged = False
        by_parent: dict[str, list[str]] = {}
        for r in roots:
            by_parent.setdefault(os.path.dirname(r), []).append(r)
        for parent, children in by_parent.items():
            if len(children) > 1 and parent != os.path.dirname(parent):  # never "/"
                roots = [r for r in roots if r not in children]
                roots = [r for r in roots if not _inside(r, parent)] + [parent]
                merged = True
                break
    return sorted(roots)


class FolderWatcher(QObject):
    """Watches library folders (every directory under them) and says which changed,
    once the file system has been quiet for ``delay_ms`` (a copy of 50 files is one
    change, not 50).

    Signals
    -------
    changed(list) : the library folders with something added, removed or renamed
    """

    changed = Signal(list)

    def __init__(self, parent: QObject | None = None, *, delay_ms: int = 1000) -> None:
        super().__init__(parent)
        self._watcher = QFileSystemWatcher(self)
        self._watcher.directoryChanged.connect(self._dir_changed)
        self._roots: list[str] = []
        self._pending: set[str] = set()
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.timeout.connect(self._fire)
        self.delay_ms = delay_ms

    def watch(self, folders: Iterable[str], *, exclude: str | None = None) -> None:
        """Watch exactly ``folders`` and the directories under them (called again after
        every scan, so new subfolders are watched too), except ``exclude`` (the library's
        own directory: a scan writing there must not trigger the next scan)."""
        self._roots = [os.path.realpath(f) for f in folders if os.path.isdir(f)]
        skip = os.path.realpath(exclude) if exclude else None
        dirs: list[str] = []
        for root in self._roots:
            for d, subdirs, _files in os.walk(root, followlinks=True):
                if skip and _inside(os.path.realpath(d), skip):
                    subdirs[:] = []
                    continue
                subdirs[:] = [s for s in subdirs if not s.startswith(".")]
                dirs.append(d)
                if len(dirs) > 4000:  # inotify watches are a limited resource
                    break
        old = self._watcher.directories()
        if old:
            self._watcher.removePaths(old)
        if dirs:
            self._watcher.addPaths(dirs)

    def watched(self) -> list[str]:
        return list(self._watcher.directories())

    def _dir_changed(self, path: str) -> None:
        for root in self._roots:
            if _inside(os.path.realpath(path), root):
                self._pending.add(root)
        if self._pending:
            self._timer.start(self.delay_ms)

    def _fire(self) -> None:
        roots, self._pending = sorted(self._pending), set()
        self.changed.emit(roots)
