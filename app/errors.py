"""The one error handler: every worker error and uncaught exception ends here.

A user's mistake (a LoevError: bad folder, unreadable file or checkpoint, no audio device)
is shown as its one-line message; anything else as "Unexpected error in TASK" with the
log file's path. Both are written, with the traceback, to the log file in platformdirs'
user log dir. Nothing pops a traceback dialog.
"""
from __future__ import annotations

import logging
import logging.handlers
import os
import sys
import traceback
from pathlib import Path
from typing import Any, Callable

from engine.errors import LoevError

APP_NAME = "loev-explorer"
log = logging.getLogger("loev.app")


def log_dir() -> Path:
    import platformdirs

    return Path(os.environ.get("LOEV_LOG_DIR") or platformdirs.user_log_dir(APP_NAME))


def setup_logging(directory: str | os.PathLike[str] | None = None) -> Path:
    """Log to ``loev.log`` (rotated at 1 MB) in the user log dir; returns its path."""
    folder = Path(directory) if directory else log_dir()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "loev.log"
    root = logging.getLogger("loev")
    if not any(getattr(h, "baseFilename", None) == str(path) for h in root.handlers):
        handler = logging.handlers.RotatingFileHandler(path, maxBytes=1 << 20, backupCount=2,
                                                       encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root.addHandler(handler)
        root.setLevel(logging.INFO)
    return path


def user_message(task: str, exc: BaseException, log_path: Path | None) -> str:
    """The one line the status bar shows for ``exc`` raised while doing ``task``."""
    if isinstance(exc, (LoevError, OSError, ValueError)):
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return f"{task}: {text}"
    where = f" (details in {log_path})" if log_path else ""
    return f"Unexpected error in {task}: {type(exc).__name__}: {exc}{where}"


class ErrorHandler:
    """Formats, logs and shows errors through ``show(message)`` (the status bar)."""

    def __init__(self, show: Callable[[str], None], log_path: Path | None = None) -> None:
        self.show = show
        self.log_path = log_path
        self.messages: list[str] = []
        self._said_once: set[str] = set()

    def handle(self, task: str, exc: BaseException) -> str:
        tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        expected = isinstance(exc, (LoevError, OSError, ValueError))
        (log.warning if expected else log.error)("%s failed: %s\n%s", task, exc, tb)
        message = user_message(task, exc, self.log_path)
        self.messages.append(message)
        self.show(message)
        return message

    def handle_task_error(self, err: Any) -> str:
        return self.handle(err.task, err.exc)

    def once(self, key: str, message: str) -> None:
        """Say ``message`` the first time only (e.g. "no audio device")."""
        if key in self._said_once:
            return
        self._said_once.add(key)
        log.warning(message)
        self.messages.append(message)
        self.show(message)

    def install_excepthook(self) -> None:
        def hook(etype: type[BaseException], value: BaseException, tb: Any) -> None:
            if issubclass(etype, KeyboardInterrupt):
                sys.__excepthook__(etype, value, tb)
                return
            self.handle("the window", value.with_traceback(tb))

        sys.excepthook = hook
