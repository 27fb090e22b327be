"""The library's catalogue: one SQLite file that is the single source of truth.

Layout of a library directory (docs/DESIGN.md section 5)::

    DIR/catalogue.sqlite     tracks, their vectors (blobs), problems, meta
    DIR/write.lock           fcntl lock held by the one process writing the library
    DIR/vectors/             per-subspace vector stores + hnswlib indexes (engine.library.vectors),
                             exported from the catalogue and replaced atomically

The vectors live in the catalogue too, written in the same transaction as their track
row: a scan killed at any point leaves every file either fully recorded (row + vectors) or
not at all, so a restart redoes at most the batch that was not committed. The stores and
indexes under ``vectors/`` are derived data, rebuilt or extended from the catalogue.

Track row ids are the hnswlib labels. A deleted file keeps its row as a tombstone
(``status='deleted'``) so that its label is never reused while an index still holds it.
Every write of vectors or tombstones takes a new value of the ``vec_seq`` counter; an
exported index records the counter it was built at, so a reader can tell which rows it
covers (engine.library.vectors).
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from engine.errors import LibraryError

APP_NAME = "loev-explorer"
CATALOGUE_NAME = "catalogue.sqlite"
LOCK_NAME = "write.lock"
# Library format version: bumped when the on-disk layout changes in a way that needs a
# migration (the list below) or a re-export of the vector stores.
FORMAT_VERSION = 1

STATUSES = ("ok", "error", "pending", "deleted")


def _migration_1(con: sqlite3.Connection) -> None:
    # Statement by statement: executescript() would commit the migration's transaction.
    _execute_all(con, """
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        CREATE TABLE tracks (
            id INTEGER PRIMARY KEY,
            path TEXT NOT NULL UNIQUE,
            size INTEGER NOT NULL,
            mtime_ns INTEGER NOT NULL,
            duration REAL,
            status TEXT NOT NULL CHECK (status IN ('ok', 'error', 'pending', 'deleted')),
            error TEXT,
            model_id TEXT,
            vec_seq INTEGER NOT NULL DEFAULT 0,
            scanned_at REAL
        );
        CREATE INDEX tracks_status ON tracks(status);
        CREATE INDEX tracks_vec_seq ON tracks(vec_seq);
        CREATE TABLE vectors (
            track_id INTEGER NOT NULL REFERENCES tracks(id) ON DELETE CASCADE,
            subspace TEXT NOT NULL,
            vec BLOB NOT NULL,
            PRIMARY KEY (track_id, subspace)
        );
        CREATE TABLE problems (
            path TEXT PRIMARY KEY,
            kind TEXT NOT NULL,
            reason TEXT NOT NULL
        );
        """)


def _execute_all(con: sqlite3.Connection, script: str) -> None:
    for statement in script.split(";"):
        if statement.strip():
            con.execute(statement)


# Versioned migrations, applied in order; PRAGMA user_version records the last applied.
MIGRATIONS = [_migration_1]


def default_library_dir() -> Path:
    """The per-user library directory (platformdirs' user data dir for loev-explorer)."""
    import platformdirs

    return Path(platformdirs.user_data_dir(APP_NAME))


@dataclass(frozen=True)
class Track:
    """One catalogue row. ``id`` is the track's label in every hnswlib index."""

    id: int
    path: str
    size: int
    mtime_ns: int
    duration: float | None
    status: str
    error: str | None
    model_id: str | None
    vec_seq: int

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> Track:
        return cls(row["id"], row["path"], row["size"], row["mtime_ns"], row["duration"],
                   row["status"], row["error"], row["model_id"], row["vec_seq"])


class Library:
    """The catalogue of one library directory.

    Parameters
    ----------
    root : path
        The library directory.
    create : bool
        Create the directory and an empty catalogue if missing. Without it a missing
        library raises ``LibraryError`` (a reader never creates one by accident).

    Notes
    -----
    One connection per ``Library`` object, used by one thread (the GUI opens its own in
    its worker). WAL mode lets readers go on while a scan writes.
    """

    def __init__(self, root: str | os.PathLike[str], *, create: bool = False) -> None:
        self.root = Path(root).expanduser().absolute()
        self.catalogue_path = self.root / CATALOGUE_NAME
        self._in_tx = False
        self._lock_fd: int | None = None
        if not self.catalogue_path.exists():
            if not create:
                raise LibraryError(
                    f"no library at {self.root}; run `loev scan FOLDER --library {self.root}` first")
            try:
                self.root.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise LibraryError(f"cannot create library directory {self.root}: {e.strerror}") from e
        elif not self.root.is_dir():
            raise LibraryError(f"library path {self.root} is not a directory")
        try:
            self._con = sqlite3.connect(self.catalogue_path, timeout=30.0, isolation_level=None,
                                        check_same_thread=False)
            self._con.row_factory = sqlite3.Row
            self._con.execute("PRAGMA journal_mode=WAL")
            # NORMAL is durable across process kills in WAL mode (only an OS crash can
            # lose the last commits, never corrupt the file).
            self._con.execute("PRAGMA synchronous=NORMAL")
            self._con.execute("PRAGMA foreign_keys=ON")
            self._migrate()
        except sqlite3.DatabaseError as e:
            raise LibraryError(f"cannot open catalogue {self.catalogue_path}: {e}") from e

    # -- connection, transactions, migrations -------------------------------------------

    def close(self) -> None:
        self.release_write_lock()
        self._con.close()

    def __enter__(self) -> Library:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """The one way to write: everything inside commits together or not at all.

        Nested use joins the outer transaction.
        """
        if self._in_tx:
            yield self._con
            return
        # IMMEDIATE takes the write lock now, so two writers never deadlock mid-way.
        self._con.execute("BEGIN IMMEDIATE")
        self._in_tx = True
        try:
            yield self._con
        except BaseException:
            self._con.execute("ROLLBACK")
            raise
        else:
            self._con.execute("COMMIT")
        finally:
            self._in_tx = False

    def _migrate(self) -> None:
        version = self._con.execute("PRAGMA user_version").fetchone()[0]
        if version > len(MIGRATIONS):
            raise LibraryError(
                f"library {self.root} has format {version}, newer than this program "
                f"understands ({len(MIGRATIONS)})")
        for i in range(version, len(MIGRATIONS)):
            with self.transaction() as con:
                MIGRATIONS[i](con)
                con.execute(f"PRAGMA user_version = {i + 1}")
                con.execute("INSERT OR REPLACE INTO meta VALUES ('format_version', ?)",
                            (str(FORMAT_VERSION),))

    # -- the write lock -------------------------------------------------------------------

    def acquire_write_lock(self, *, timeout: float = 0.0) -> None:
        """Become the library's only writer (an fcntl lock on ``write.lock``).

        Parameters
        ----------
        timeout : float
            Seconds to wait for another writer to finish; 0 fails at once.

        Raises
        ------
        LibraryError
            Another process holds the lock after ``timeout`` seconds.
        """
        if self._lock_fd is not None:
            return
        lock_path = self.root / LOCK_NAME
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
                    os.close(fd)
                    raise LibraryError(
                        f"library {self.root} is being written by another process "
                        f"(pid {holder}); wait for it to finish") from None
                time.sleep(0.1)
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._lock_fd = fd

    def release_write_lock(self) -> None:
        if self._lock_fd is None:
            return
        fd, self._lock_fd = self._lock_fd, None
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)

    # -- meta -----------------------------------------------------------------------------

    def get_meta(self, key: str, default: Any = None) -> Any:
        row = self._con.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return default if row is None else json.loads(row[0])

    def set_meta(self, key: str, value: Any) -> None:
        with self.transaction() as con:
            con.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, json.dumps(value)))

    @property
    def model_id(self) -> str | None:
        return self.get_meta("model_id")

    @property
    def subspaces(self) -> tuple[str, ...]:
        return tuple(self.get_meta("subspaces", ()))

    @property
    def dims(self) -> dict[str, int]:
        return dict(self.get_meta("dims", {}))

    def next_vec_seq(self) -> int:
        """Take the next value of the vector write counter (inside a transaction)."""
        with self.transaction():
            seq = int(self.get_meta("vec_seq", 0)) + 1
            self.set_meta("vec_seq", seq)
        return seq

    def set_model(self, *, model_id: str, checkpoint: str | None, config: dict[str, Any],
                  subspaces: tuple[str, ...], dims: dict[str, int]) -> bool:
        """Bind the library to a model; if it held another one, forget all its vectors.

        Every row goes back to ``pending`` and every vector is deleted in the same
        transaction as the new model id, so two models' vectors are never mixed.

        Returns
        -------
        bool
            True when the model changed and the library must be re-embedded.
        """
        with self.transaction() as con:
            changed = self.model_id not in (None, model_id)
            if changed:
                con.execute("DELETE FROM vectors")
                con.execute("DELETE FROM tracks WHERE status = 'deleted'")
                con.execute("UPDATE tracks SET status = 'pending', error = NULL, model_id = NULL")
            self.set_meta("model_id", model_id)
            self.set_meta("checkpoint", checkpoint)
            self.set_meta("model_config", config)
            self.set_meta("subspaces", list(subspaces))
            self.set_meta("dims", {k: int(v) for k, v in dims.items()})
        return changed

    # -- tracks ---------------------------------------------------------------------------

    def track_by_path(self, path: str) -> Track | None:
        row = self._con.execute("SELECT * FROM tracks WHERE path = ?", (path,)).fetchone()
        return None if row is None else Track.from_row(row)

    def tracks(self, *, status: str | None = None) -> list[Track]:
        if status is None:
            rows = self._con.execute("SELECT * FROM tracks WHERE status != 'deleted' ORDER BY path")
        else:
            rows = self._con.execute("SELECT * FROM tracks WHERE status = ? ORDER BY path", (status,))
        return [Track.from_row(r) for r in rows]

    def paths_by_id(self, ids: list[int]) -> dict[int, Track]:
        """Rows for the given labels (any status), in one query per 500 labels."""
        out: dict[int, Track] = {}
        for i in range(0, len(ids), 500):
            part = [int(x) for x in ids[i:i + 500]]
            marks = ",".join("?" * len(part))
            for r in self._con.execute(f"SELECT * FROM tracks WHERE id IN ({marks})", part):
                out[r["id"]] = Track.from_row(r)
        return out

    def counts(self) -> dict[str, int]:
        rows = self._con.execute("SELECT status, COUNT(*) FROM tracks GROUP BY status")
        counts = {s: 0 for s in STATUSES}
        counts.update({s: n for s, n in rows})
        return counts

    def record_track(self, path: str, *, size: int, mtime_ns: int, duration: float | None,
                     status: str, error: str | None = None,
                     vectors: dict[str, np.ndarray] | None = None) -> int:
        """Insert or update one file's row (keeping its label) with its vectors.

        Returns the row id. Call inside ``transaction()`` to commit several together.
        """
        if status not in STATUSES:
            raise ValueError(f"unknown status {status!r}")
        with self.transaction() as con:
            seq = self.next_vec_seq()
            model = self.model_id if status == "ok" else None
            con.execute(
                """INSERT INTO tracks (path, size, mtime_ns, duration, status, error, model_id,
                                       vec_seq, scanned_at)
                   VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
                   ON CONFLICT(path) DO UPDATE SET size=excluded.size,
                       mtime_ns=excluded.mtime_ns, duration=excluded.duration,
                       status=excluded.status, error=excluded.error,
                       model_id=excluded.model_id, vec_seq=excluded.vec_seq,
                       scanned_at=excluded.scanned_at""",
                (path, size, mtime_ns, duration, status, error, model, seq, time.time()))
            tid = con.execute("SELECT id FROM tracks WHERE path = ?", (path,)).fetchone()[0]
            con.execute("DELETE FROM vectors WHERE track_id = ?", (tid,))
            for name, vec in (vectors or {}).items():
                blob = np.ascontiguousarray(vec, dtype=np.float32).tobytes()
                con.execute("INSERT INTO vectors VALUES (?, ?, ?)", (tid, name, blob))
        return tid

    def mark_deleted(self, ids: list[int]) -> None:
        """Turn rows into tombstones (their labels stay reserved, their vectors go)."""
        if not ids:
            return
        with self.transaction() as con:
            seq = self.next_vec_seq()
            for tid in ids:
                con.execute("DELETE FROM vectors WHERE track_id = ?", (tid,))
                con.execute("UPDATE tracks SET status='deleted', error=NULL, model_id=NULL, "
                            "vec_seq=? WHERE id=?", (seq, tid))

    def vector(self, track_id: int, subspace: str) -> np.ndarray | None:
        row = self._con.execute("SELECT vec FROM vectors WHERE track_id=? AND subspace=?",
                                (track_id, subspace)).fetchone()
        return None if row is None else np.frombuffer(row[0], dtype=np.float32).copy()

    def iter_vectors(self, subspace: str, *, since_seq: int = 0
                     ) -> Iterator[tuple[int, np.ndarray]]:
        """(label, vector) of ok tracks written after ``since_seq``, in label order."""
        rows = self._con.execute(
            """SELECT t.id, v.vec FROM tracks t JOIN vectors v ON v.track_id = t.id
               WHERE t.status = 'ok' AND v.subspace = ? AND t.vec_seq > ? ORDER BY t.id""",
            (subspace, since_seq))
        for tid, blob in rows:
            yield tid, np.frombuffer(blob, dtype=np.float32)

    def removed_since(self, since_seq: int) -> list[int]:
        """Labels that stopped being ok tracks after ``since_seq`` (for marking deleted)."""
        rows = self._con.execute(
            "SELECT id FROM tracks WHERE status != 'ok' AND vec_seq > ?", (since_seq,))
        return [r[0] for r in rows]

    def max_id(self) -> int:
        return int(self._con.execute("SELECT COALESCE(MAX(id), 0) FROM tracks").fetchone()[0])

    # -- problems (folders that could not be read) ----------------------------------------

    def set_problems(self, problems: list[tuple[str, str, str]], *,
                     under: list[str] | None = None) -> None:
        """Record the (path, kind, reason) problems found by a walk of the folders ``under``.

        Problems previously recorded under those folders are replaced (all of them when
        ``under`` is None); those of other folders stay.
        """
        with self.transaction() as con:
            if under is None:
                con.execute("DELETE FROM problems")
            else:
                prefixes = [u.rstrip(os.sep) for u in under]
                old = [r[0] for r in con.execute("SELECT path FROM problems")]
                for path in old:
                    if any(path == u or path.startswith(u + os.sep) for u in prefixes):
                        con.execute("DELETE FROM problems WHERE path = ?", (path,))
            con.executemany("INSERT OR REPLACE INTO problems VALUES (?, ?, ?)", problems)

    def problems(self) -> list[tuple[str, str, str]]:
        return [tuple(r) for r in self._con.execute("SELECT path, kind, reason FROM problems "
                                                     "ORDER BY path")]

    def errors(self) -> list[tuple[str, str]]:
        """(path, reason) of every file that could not be embedded."""
        return [(r[0], r[1]) for r in self._con.execute(
            "SELECT path, error FROM tracks WHERE status='error' ORDER BY path")]
