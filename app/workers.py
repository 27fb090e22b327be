"""Background work: one QRunnable per task on the runner's own QThreadPool.

A task's signals (progress, returned, errored, finished) live on a QObject created in the
GUI thread, so Qt queues them back to it; the function never touches a widget. Each task
has a cooperative abort flag (``threading.Event``) that long functions poll (the scan
passes it to the engine as ``cancel``).

This is superqt's ``thread_worker`` pattern written out: its workers report progress only
by yielding from a generator and run on the global pool, while the engine's functions take
a ``progress`` callback and a ``cancel`` flag, and a scan must not queue a click's
audition behind it; so the app does not depend on superqt.
"""
from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QObject, QRunnable, QThreadPool, Signal


class TaskSignals(QObject):
    progress = Signal(object)
    returned = Signal(object)
    errored = Signal(object)
    finished = Signal()


class Task(QRunnable):
    """Run ``fn(*args, **kwargs)`` in the pool.

    Parameters
    ----------
    fn : callable
        With ``with_progress=True`` it also receives ``progress=callable(value)`` and
        ``cancel=threading.Event``.
    name : str
        What the task does, for error messages ("scan", "invariance curve"...).
    """

    def __init__(self, fn: Callable[..., Any], *args: Any, name: str = "task",
                 with_progress: bool = False, **kwargs: Any) -> None:
        super().__init__()
        self.setAutoDelete(False)  # the pool must not delete what Python still holds
        self.fn, self.args, self.kwargs = fn, args, kwargs
        self.name = name
        self.signals = TaskSignals()
        self.cancel = threading.Event()
        if with_progress:
            self.kwargs.update(progress=self._progress, cancel=self.cancel)

    def _progress(self, *value: Any) -> None:
        self.signals.progress.emit(value if len(value) != 1 else value[0])

    def abort(self) -> None:
        self.cancel.set()

    def run(self) -> None:
        try:
            result = self.fn(*self.args, **self.kwargs)
        except BaseException as e:  # noqa: BLE001 - every error reaches the one handler
            self.signals.errored.emit(TaskError(self.name, e))
        else:
            self.signals.returned.emit(result)
        finally:
            self.signals.finished.emit()


class TaskError:
    """An exception raised by a task, with the task's name (for the error handler)."""

    def __init__(self, task: str, exc: BaseException) -> None:
        self.task, self.exc = task, exc

    def __repr__(self) -> str:
        return f"TaskError({self.task!r}, {self.exc!r})"


class TaskRunner(QObject):
    """Starts tasks, keeps them alive until they finish, routes errors to one handler."""

    def __init__(self, on_error: Callable[[TaskError], None], parent: QObject | None = None,
                 pool: QThreadPool | None = None) -> None:
        super().__init__(parent)
        self._on_error = on_error
        if pool is None:
            # Most tasks wait (on the embedding process, the disk, the catalogue), so
            # more threads than cores: a long scan and a curve must not queue a click's
            # audition behind them.
            pool = QThreadPool(self)
            pool.setMaxThreadCount(8)
        self._pool = pool
        self._live: set[Task] = set()

    def start(self, task: Task, *, returned: Callable[[Any], None] | None = None,
              progress: Callable[[Any], None] | None = None,
              finished: Callable[[], None] | None = None) -> Task:
        if returned is not None:
            task.signals.returned.connect(returned)
        if progress is not None:
            task.signals.progress.connect(progress)
        task.signals.errored.connect(self._on_error)
        if finished is not None:
            task.signals.finished.connect(finished)
        task.signals.finished.connect(lambda: self._live.discard(task))
        self._live.add(task)
        self._pool.start(task)
        return task

    def busy(self) -> bool:
        return bool(self._live)

    def abort_all(self) -> None:
        for task in list(self._live):
            task.abort()

    def wait(self, msecs: int = 30000) -> bool:
        return self._pool.waitForDone(msecs)
