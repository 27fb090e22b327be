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

Paths are stored as text when they are UTF-8 and as the name's raw bytes (a BLOB)
when they are not: a Linux file name is bytes, and Python's surrogate-escaped ``str`` for
such a name cannot be written to SQLite as text. Both read back as the same ``str``.

A catalogue that SQLite reports as damaged is moved aside (``catalogue.sqlite.corrupt-*``)
by the next scan and rebuilt: every vector in it is derived from the audio files. Its
random ``catalogue_id`` is written into the vector manifest too, so vector files left by
another catalogue are never taken for this one's.

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
import urllib.parse
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from engine.errors import LibraryError
from engine.model.heads import Estimate

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


def _migration_2(con: sqlite3.Connection) -> None:
    # The path a file was found under (a symlink's own path), so that a link's target
    # outside the scanned folders goes when the link does.
    con.execute("ALTER TABLE tracks ADD COLUMN via")


def _migration_3(con: sqlite3.Connection) -> None:
    # A content hash per track, and the user's own marks keyed by it (not by path or
    # label): a file that moves or is rescanned keeps its star and its collections.
    _execute_all(con, """
        ALTER TABLE tracks ADD COLUMN content_hash TEXT;
        CREATE INDEX tracks_content_hash ON tracks(content_hash);
        CREATE TABLE favourites (content_hash TEXT PRIMARY KEY, added_at REAL NOT NULL);
        CREATE TABLE collections (
            id INTEGER PRIMARY KEY,
            name TEXT NOT NULL UNIQUE,
            created_at REAL NOT NULL
        );
        CREATE TABLE collection_items (
            collection_id INTEGER NOT NULL REFERENCES collections(id) ON DELETE CASCADE,
            content_hash TEXT NOT NULL,
            added_at REAL NOT NULL,
            PRIMARY KEY (collection_id, content_hash)
        );
        CREATE INDEX collection_items_hash ON collection_items(content_hash);
        """)


def _migration_4(con: sqlite3.Connection) -> None:
    # The heads' key, tempo and type estimates of each track (engine.model.heads), and the
    # id of the heads that made them: NULL until estimated; other heads' are recomputed
    # from the stored vectors. key and bpm stay NULL for "no key" and "no tempo".
    _execute_all(con, """
        ALTER TABLE tracks ADD COLUMN key INTEGER;
        ALTER TABLE tracks ADD COLUMN key_confidence REAL;
        ALTER TABLE tracks ADD COLUMN bpm REAL;
        ALTER TABLE tracks ADD COLUMN bpm_confidence REAL;
        ALTER TABLE tracks ADD COLUMN type TEXT;
        ALTER TABLE tracks ADD COLUMN type_confidence REAL;
        ALTER TABLE tracks ADD COLUMN heads_id TEXT
        """)


# Versioned migrations, applied in order; PRAGMA user_version records the last applied.
MIGRATIONS = [_migration_1, _migration_2, _migration_3, _migration_4]

# The estimate columns of migration 4, in Estimate's field order.
ESTIMATE_COLUMNS = ("key", "key_confidence", "bpm", "bpm_confidence", "type", "type_confidence")
_NO_ESTIMATE = ", ".join(f"{c} = NULL" for c in ESTIMATE_COLUMNS + ("heads_id",))

# SQLite result codes (low byte) that mean the file itself is damaged.
_SQLITE_CORRUPT, _SQLITE_NOTADB, _SQLITE_FULL = 11, 26, 13


def db_path(path: str) -> str | bytes:
    """A path as stored: text when it is UTF-8, else its raw bytes (a BLOB)."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return os.fsencode(path)
    return path


def py_path(value: str | bytes) -> str:
    """A stored path back as the ``str`` the os module uses (surrogate-escaped bytes)."""
    return os.fsdecode(value) if isinstance(value, bytes) else value


def _db_text(text: str | None) -> str | None:
    """Free text (an error reason) made storable: undecodable bytes shown escaped."""
    if text is None:
        return None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        from engine.text import safe_text

        return safe_text(text)
    return text


def is_corrupt(error: sqlite3.Error) -> bool:
    """True when SQLite says the database file itself is damaged (not locked, not full)."""
    code = getattr(error, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (_SQLITE_CORRUPT, _SQLITE_NOTADB)
    text = str(error)
    return "malformed" in text or "not a database" in text


def is_full(error: BaseException) -> bool:
    code = getattr(error, "sqlite_errorcode", None)
    return (code is not None and code & 0xFF == _SQLITE_FULL) or "is full" in str(error)


def default_library_dir() -> Path:
    """The per-user library directory (platformdirs' user data dir for loev-explorer)."""
    import platformdirs

    return Path(platformdirs.user_data_dir(APP_NAME))


class _Rows:
    """The fetched rows of one statement (a cursor's interface, already read)."""

    def __init__(self, rows: list[Any]) -> None:
        self._rows = rows

    def fetchone(self) -> Any:
        return self._rows[0] if self._rows else None

    def fetchall(self) -> list[Any]:
        return self._rows

    def __iter__(self) -> Iterator[Any]:
        return iter(self._rows)


class _Connection:
    """An SQLite connection whose errors surface as one-line ``LibraryError`` s.

    A damaged page or a full disk may show up at any statement, long after the file
    opened; the user gets the catalogue's path and what to do, not a traceback.
    """

    def __init__(self, con: sqlite3.Connection, library: Library) -> None:
        self.raw = con
        self._library = library

    def execute(self, sql: str, params: Any = ()) -> _Rows:
        try:
            return _Rows(self.raw.execute(sql, params).fetchall())
        except sqlite3.Error as e:
            raise self._library.error(e) from None

    def executemany(self, sql: str, seq: Any) -> None:
        try:
            self.raw.executemany(sql, seq)
        except sqlite3.Error as e:
            raise self._library.error(e) from None

    def close(self) -> None:
        self.raw.close()


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
    via: str | None = None
    content_hash: str | None = None
    estimate: Estimate | None = None
    heads_id: str | None = None  # the heads that made ``estimate``

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> Track:
        keys = row.keys()
        via = row["via"] if "via" in keys else None
        heads_id = row["heads_id"] if "heads_id" in keys else None
        return cls(row["id"], py_path(row["path"]), row["size"], row["mtime_ns"],
                   row["duration"], row["status"], row["error"], row["model_id"],
                   row["vec_seq"], None if via is None else py_path(via),
                   row["content_hash"] if "content_hash" in keys else None,
                   None if heads_id is None else _estimate(row), heads_id)


def _estimate(row: sqlite3.Row) -> Estimate:
    key, bpm = row["key"], row["bpm"]
    return Estimate(None if key is None else int(key), float(row["key_confidence"] or 0.0),
                    None if bpm is None else float(bpm), float(row["bpm_confidence"] or 0.0),
                    str(row["type"]), float(row["type_confidence"] or 0.0))


def _estimate_values(estimate: Estimate | None) -> tuple[Any, ...]:
    """The estimate columns' values (all NULL for no estimate)."""
    if estimate is None:
        return (None,) * len(ESTIMATE_COLUMNS)
    e = estimate
    return (None if e.key is None else int(e.key), float(e.key_confidence),
            None if e.bpm is None else float(e.bpm), float(e.bpm_confidence), str(e.type),
            float(e.type_confidence))


class Library:
    """The catalogue of one library directory.

    Parameters
    ----------
    root : path
        The library directory.
    create : bool
        Create the directory and an empty catalogue if missing. Without it a missing
        library raises ``LibraryError`` (a reader never creates one by accident).
    readonly : bool
        Open for queries only: nothing is written, so a library on read-only media or
        owned by another user can be searched.
    repair : bool
        Check the catalogue's integrity and, if SQLite finds it damaged, move it aside
        and start an empty one (what a scan does: it is all derived from the audio).
        ``repaired`` then says what was done.

    Notes
    -----
    One connection per ``Library`` object, used by one thread (the GUI opens its own in
    its worker). WAL mode lets readers go on while a scan writes.
    """

    def __init__(self, root: str | os.PathLike[str], *, create: bool = False,
                 readonly: bool = False, repair: bool = False) -> None:
        self.root = Path(root).expanduser().absolute()
        self.catalogue_path = self.root / CATALOGUE_NAME
        self.readonly = readonly
        self.repaired: list[str] = []
        self._in_tx = False
        self._lock_fd: int | None = None
        if not self.catalogue_path.exists():
            if not create or readonly:
                raise LibraryError(
                    f"no library at {self.root}; run `loev scan FOLDER --library {self.root}` first")
            try:
                self.root.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise LibraryError(f"cannot create library directory {self.root}: {e.strerror}") from e
        elif not self.root.is_dir():
            raise LibraryError(f"library path {self.root} is not a directory")
        try:
            con = self._connect()
            if repair:
                self._check_integrity(con)
        except sqlite3.DatabaseError as e:
            if not (repair and is_corrupt(e)):
                raise self.error(e) from None
            with contextlib.suppress(sqlite3.Error, AttributeError):
                self._con.close()
            self._move_aside(e)
            try:
                con = self._connect()
            except sqlite3.DatabaseError as e2:
                raise self.error(e2) from None
        self._con = _Connection(con, self)

    def _connect(self) -> sqlite3.Connection:
        """A configured connection (migrated and given a catalogue id unless read-only)."""
        if self.readonly:
            return self._connect_readonly()
        con = sqlite3.connect(self.catalogue_path, timeout=30.0, isolation_level=None,
                              check_same_thread=False)
        self._con = con  # type: ignore[assignment]  # raw while migrating
        try:
            con.row_factory = sqlite3.Row
            con.execute("PRAGMA journal_mode=WAL")
            # NORMAL is durable across process kills in WAL mode (only an OS crash can
            # lose the last commits, never corrupt the file).
            con.execute("PRAGMA synchronous=NORMAL")
            con.execute("PRAGMA foreign_keys=ON")
            self._migrate()
            if self.get_meta("catalogue_id") is None:
                self.set_meta("catalogue_id", uuid.uuid4().hex)
        except BaseException:
            con.close()
            raise
        return con

    def _connect_readonly(self) -> sqlite3.Connection:
        # mode=ro still needs the -shm file of a WAL database; where it cannot be made
        # (a read-only folder) and no writer can be running, immutable=1 reads the file.
        quoted = urllib.parse.quote(os.fsencode(self.catalogue_path))
        last: sqlite3.Error | None = None
        for params in ("mode=ro", "mode=ro&immutable=1"):
            con = sqlite3.connect(f"file:{quoted}?{params}", uri=True, timeout=30.0,
                                  isolation_level=None, check_same_thread=False)
            con.row_factory = sqlite3.Row
            try:
                version = con.execute("PRAGMA user_version").fetchone()[0]
                con.execute("SELECT COUNT(*) FROM meta").fetchone()
            except sqlite3.OperationalError as e:
                con.close()
                last = e
                if is_corrupt(e):
                    raise
                continue
            if version > len(MIGRATIONS):
                con.close()
                raise LibraryError(
                    f"library {self.root} has format {version}, newer than this program "
                    f"understands ({len(MIGRATIONS)})")
            return con
        assert last is not None
        raise last

    @staticmethod
    def _check_integrity(con: sqlite3.Connection) -> None:
        row = con.execute("PRAGMA quick_check").fetchone()
        if row is None or row[0] != "ok":
            raise sqlite3.DatabaseError(f"database disk image is malformed ({row and row[0]})")
        con.execute("SELECT COUNT(*), MAX(id) FROM tracks").fetchone()

    def _move_aside(self, error: sqlite3.Error) -> None:
        stamp = time.strftime("%Y%m%dT%H%M%S")
        aside = self.root / f"{CATALOGUE_NAME}.corrupt-{stamp}"
        for suffix in ("", "-wal", "-shm"):
            src = self.root / (CATALOGUE_NAME + suffix)
            if src.exists():
                os.replace(src, aside.with_name(aside.name + suffix))
        self.repaired.append(f"catalogue {self.catalogue_path} was damaged ({error}): moved "
                             f"aside to {aside.name} and rebuilt from the audio files")

    def error(self, e: BaseException) -> LibraryError:
        """The one-line LibraryError for an SQLite or OS error on this catalogue."""
        if is_full(e) or getattr(e, "errno", None) == 28:
            return LibraryError(f"{self.catalogue_path}: cannot write: the database or disk "
                                f"is full ({e}); free some space and scan again")
        if isinstance(e, sqlite3.DatabaseError) and is_corrupt(e):
            return LibraryError(f"catalogue {self.catalogue_path} is damaged ({e}); run `loev "
                                f"scan FOLDER --library {self.root}` to move it aside and "
                                "rebuild it")
        return LibraryError(f"cannot use catalogue {self.catalogue_path}: {e}")

    @property
    def catalogue_id(self) -> str | None:
        """A random id made with the catalogue: its vector files carry it too."""
        return self.get_meta("catalogue_id")

    # -- connection, transactions, migrations -------------------------------------------

    def close(self) -> None:
        self.release_write_lock()
        with contextlib.suppress(sqlite3.Error):
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
            self._con.execute("COMMIT")
        except BaseException:
            # SQLite may have rolled back already (a full disk): that is not the news.
            with contextlib.suppress(LibraryError, sqlite3.Error):
                self._con.execute("ROLLBACK")
            raise
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
        if row is None:
            return default
        try:
            return json.loads(row[0])
        except (TypeError, ValueError):
            return default

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
                con.execute("UPDATE tracks SET status = 'pending', error = NULL, model_id = NULL, "
                            + _NO_ESTIMATE)
            self.set_meta("model_id", model_id)
            self.set_meta("checkpoint", checkpoint)
            self.set_meta("model_config", config)
            self.set_meta("subspaces", list(subspaces))
            self.set_meta("dims", {k: int(v) for k, v in dims.items()})
        return changed

    # -- tracks ---------------------------------------------------------------------------

    def track_by_path(self, path: str) -> Track | None:
        row = self._con.execute("SELECT * FROM tracks WHERE path = ?",
                                (db_path(path),)).fetchone()
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
                     vectors: dict[str, np.ndarray] | None = None,
                     via: str | None = None, content_hash: str | None = None,
                     estimate: Estimate | None = None, heads_id: str | None = None) -> int:
        """Insert or update one file's row (keeping its label) with its vectors.

        A file edited in place (a new ``content_hash`` at the same path) keeps its star
        and collections: they are copied to the new hash. Its estimate is ``estimate``
        (made by the heads ``heads_id`` from these vectors) or none: an old one never
        outlives the vectors it was read from.

        Returns the row id. Call inside ``transaction()`` to commit several together.
        """
        if status not in STATUSES:
            raise ValueError(f"unknown status {status!r}")
        with self.transaction() as con:
            seq = self.next_vec_seq()
            model = self.model_id if status == "ok" else None
            old = con.execute("SELECT content_hash FROM tracks WHERE path = ?",
                              (db_path(path),)).fetchone()
            if status != "ok" or heads_id is None:
                estimate = None
            con.execute(
                """INSERT INTO tracks (path, size, mtime_ns, duration, status, error, model_id,
                                       vec_seq, scanned_at, via, content_hash, key,
                                       key_confidence, bpm, bpm_confidence, type,
                                       type_confidence, heads_id)
                   VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                   ON CONFLICT(path) DO UPDATE SET size=excluded.size,
                       mtime_ns=excluded.mtime_ns, duration=excluded.duration,
                       status=excluded.status, error=excluded.error,
                       model_id=excluded.model_id, vec_seq=excluded.vec_seq,
                       scanned_at=excluded.scanned_at, via=excluded.via,
                       content_hash=excluded.content_hash, key=excluded.key,
                       key_confidence=excluded.key_confidence, bpm=excluded.bpm,
                       bpm_confidence=excluded.bpm_confidence, type=excluded.type,
                       type_confidence=excluded.type_confidence,
                       heads_id=excluded.heads_id""",
                (db_path(path), size, mtime_ns, duration, status, _db_text(error), model, seq,
                 time.time(), None if via is None else db_path(via), content_hash,
                 *_estimate_values(estimate), None if estimate is None else heads_id))
            if old is not None and old[0] and content_hash and old[0] != content_hash:
                self._copy_marks(old[0], content_hash)
            tid = con.execute("SELECT id FROM tracks WHERE path = ?",
                              (db_path(path),)).fetchone()[0]
            con.execute("DELETE FROM vectors WHERE track_id = ?", (tid,))
            for name, vec in (vectors or {}).items():
                blob = np.ascontiguousarray(vec, dtype=np.float32).tobytes()
                con.execute("INSERT INTO vectors VALUES (?, ?, ?)", (tid, name, blob))
        return tid

    def mark_deleted(self, ids: list[int]) -> None:
        """Turn rows into tombstones (their labels stay reserved, their vectors go)."""
        self._reset_rows(ids, "deleted")

    def mark_pending(self, ids: list[int]) -> None:
        """Send rows back to be embedded again (their vectors go, their labels stay)."""
        self._reset_rows(ids, "pending")

    def _reset_rows(self, ids: list[int], status: str) -> None:
        """Drop the rows' vectors and give them ``status`` under a new vector generation."""
        if not ids:
            return
        with self.transaction() as con:
            seq = self.next_vec_seq()
            for tid in ids:
                con.execute("DELETE FROM vectors WHERE track_id = ?", (tid,))
                con.execute("UPDATE tracks SET status=?, error=NULL, model_id=NULL, "
                            f"vec_seq=?, {_NO_ESTIMATE} WHERE id=?", (status, seq, tid))

    def damaged_vectors(self, dims: dict[str, int]) -> list[int]:
        """Ok rows whose vector of some subspace is missing or not ``dim`` float32 long."""
        bad: set[int] = set()
        for name, dim in dims.items():
            rows = self._con.execute(
                """SELECT t.id FROM tracks t LEFT JOIN vectors v
                       ON v.track_id = t.id AND v.subspace = ?
                   WHERE t.status = 'ok' AND (v.vec IS NULL OR typeof(v.vec) != 'blob'
                                              OR length(v.vec) != ?)""",
                (name, 4 * int(dim)))
            bad.update(r[0] for r in rows)
        return sorted(bad)

    def vector(self, track_id: int, subspace: str) -> np.ndarray | None:
        row = self._con.execute("SELECT vec FROM vectors WHERE track_id=? AND subspace=?",
                                (track_id, subspace)).fetchone()
        return None if row is None else np.frombuffer(row[0], dtype=np.float32).copy()

    def iter_vectors(self, subspace: str, *, since_seq: int = 0
                     ) -> Iterator[tuple[int, np.ndarray]]:
        """(label, vector) of ok tracks written after ``since_seq``, in label order."""
        try:  # streamed: a large library's vectors never sit in memory at once
            rows = self._con.raw.execute(
                """SELECT t.id, v.vec FROM tracks t JOIN vectors v ON v.track_id = t.id
                   WHERE t.status = 'ok' AND v.subspace = ? AND t.vec_seq > ? ORDER BY t.id""",
                (subspace, since_seq))
            for tid, blob in rows:
                yield tid, np.frombuffer(blob, dtype=np.float32)
        except sqlite3.Error as e:
            raise self.error(e) from None

    def removed_since(self, since_seq: int) -> list[int]:
        """Labels that stopped being ok tracks after ``since_seq`` (for marking deleted)."""
        rows = self._con.execute(
            "SELECT id FROM tracks WHERE status != 'ok' AND vec_seq > ?", (since_seq,))
        return [r[0] for r in rows]

    def max_id(self) -> int:
        return int(self._con.execute("SELECT COALESCE(MAX(id), 0) FROM tracks").fetchone()[0])

    def vectors_of(self, ids: list[int]) -> tuple[list[int], dict[str, np.ndarray]]:
        """The complete vectors of ok tracks ``ids``, stacked: ``(labels, {subspace: [N, D]})``.

        A track whose vector of some subspace is missing or the wrong length is left out
        (the next scan embeds it again). One query per 500 labels.
        """
        dims = self.dims
        found: dict[int, dict[str, np.ndarray]] = {}
        for i in range(0, len(ids), 500):
            part = [int(x) for x in ids[i:i + 500]]
            marks = ",".join("?" * len(part))
            rows = self._con.execute(
                f"""SELECT t.id, v.subspace, v.vec FROM tracks t JOIN vectors v
                        ON v.track_id = t.id WHERE t.status = 'ok' AND t.id IN ({marks})""",
                part)
            for tid, name, blob in rows:
                if name in dims and isinstance(blob, bytes) and len(blob) == 4 * dims[name]:
                    found.setdefault(tid, {})[name] = np.frombuffer(blob, dtype=np.float32)
        labels = [int(t) for t in ids if len(found.get(int(t), ())) == len(dims)]
        stacked = {name: (np.stack([found[t][name] for t in labels]) if labels
                          else np.zeros((0, dim), dtype=np.float32))
                   for name, dim in dims.items()}
        return labels, stacked

    # -- key, tempo and type estimates ----------------------------------------------------

    def _has_estimates(self) -> bool:
        # A read-only reader of a library not yet migrated by a scan sees none.
        return self.schema_version >= 4

    def unestimated(self, heads_id: str) -> list[int]:
        """Labels of ok tracks with no estimate, or one made by other heads, in label order."""
        if not self._has_estimates():
            return sorted(t.id for t in self.tracks(status="ok"))
        rows = self._con.execute("SELECT id FROM tracks WHERE status = 'ok' AND "
                                 "(heads_id IS NULL OR heads_id != ?) ORDER BY id", (heads_id,))
        return [int(r[0]) for r in rows]

    def set_estimates(self, estimates: dict[int, Estimate], heads_id: str) -> int:
        """Store the estimates of many tracks (by label) in one transaction.

        Only ok rows take one (a row that left meanwhile keeps none). Returns the number
        of rows written.
        """
        columns = ", ".join(f"{c} = ?" for c in ESTIMATE_COLUMNS)
        with self.transaction() as con:
            before = self._con.raw.total_changes
            con.executemany(
                f"UPDATE tracks SET {columns}, heads_id = ? WHERE id = ? AND status = 'ok'",
                [(*_estimate_values(e), heads_id, int(tid)) for tid, e in estimates.items()])
            return self._con.raw.total_changes - before

    def estimates(self) -> dict[str, tuple[Estimate, str]]:
        """``{path: (estimate, heads_id)}`` of every ok track that has an estimate."""
        if not self._has_estimates():
            return {}
        rows = self._con.execute("SELECT * FROM tracks WHERE status = 'ok' AND heads_id IS "
                                 "NOT NULL ORDER BY path")
        return {py_path(r["path"]): (_estimate(r), str(r["heads_id"])) for r in rows}

    def tracks_in_keys(self, key_indices: list[int], heads_id: str) -> list[Track]:
        """Ok tracks that the heads ``heads_id`` estimated in one of ``key_indices``."""
        if not self._has_estimates() or not key_indices:
            return []
        marks = ",".join("?" * len(key_indices))
        rows = self._con.execute(
            f"SELECT * FROM tracks WHERE status = 'ok' AND heads_id = ? AND key IN ({marks}) "
            "ORDER BY path", (heads_id, *[int(k) for k in key_indices]))
        return [Track.from_row(r) for r in rows]

    def estimate_counts(self) -> dict[str, int]:
        """Ok tracks with an estimate, and of those with a key and with a tempo."""
        if not self._has_estimates():
            return {"estimated": 0, "key": 0, "tempo": 0}
        row = self._con.execute(
            "SELECT COUNT(heads_id), COUNT(CASE WHEN heads_id IS NOT NULL THEN key END), "
            "COUNT(CASE WHEN heads_id IS NOT NULL THEN bpm END) FROM tracks "
            "WHERE status = 'ok'").fetchone()
        return {"estimated": int(row[0]), "key": int(row[1]), "tempo": int(row[2])}

    # -- content hashes, favourites and collections ---------------------------------------

    @property
    def schema_version(self) -> int:
        return int(self._con.execute("PRAGMA user_version").fetchone()[0])

    def _has_marks(self) -> bool:
        # A read-only reader of a library not yet migrated by a scan sees no marks.
        return self.schema_version >= 3

    def set_hashes(self, hashes: dict[str, str]) -> None:
        """Fill in the content hash of rows by path (rows scanned before hashes existed)."""
        with self.transaction() as con:
            con.executemany("UPDATE tracks SET content_hash = ? WHERE path = ?",
                            [(h, db_path(p)) for p, h in hashes.items()])

    def _copy_marks(self, old: str, new: str) -> None:
        with self.transaction() as con:
            con.execute("INSERT OR IGNORE INTO favourites SELECT ?, added_at FROM favourites "
                        "WHERE content_hash = ?", (new, old))
            con.execute("INSERT OR IGNORE INTO collection_items SELECT collection_id, ?, "
                        "added_at FROM collection_items WHERE content_hash = ?", (new, old))

    def _hash_of(self, path: str) -> str:
        row = self._con.execute("SELECT content_hash FROM tracks WHERE path = ? AND "
                                "status != 'deleted'", (db_path(path),)).fetchone()
        if row is None:
            raise LibraryError(f"{path}: not in the library; scan its folder first")
        if not row[0]:
            raise LibraryError(f"{path}: not hashed yet; scan its folder again")
        return str(row[0])

    def _paths_with(self, sql: str, params: tuple[Any, ...] = ()) -> list[str]:
        """Live track paths whose hash is in the result of ``sql``."""
        rows = self._con.execute(
            f"SELECT path FROM tracks WHERE status != 'deleted' AND content_hash IN ({sql}) "
            "ORDER BY path", params)
        return [py_path(r[0]) for r in rows]

    def set_favourite(self, path: str, on: bool = True) -> None:
        """Star (or unstar) a file; every copy with the same content shares the star."""
        digest = self._hash_of(path)
        with self.transaction() as con:
            if on:
                con.execute("INSERT OR IGNORE INTO favourites VALUES (?, ?)",
                            (digest, time.time()))
            else:
                con.execute("DELETE FROM favourites WHERE content_hash = ?", (digest,))

    def favourites(self) -> list[str]:
        """Paths of the starred files, sorted."""
        if not self._has_marks():
            return []
        return self._paths_with("SELECT content_hash FROM favourites")

    def collections(self) -> list[str]:
        """Collection names, sorted."""
        if not self._has_marks():
            return []
        return [r[0] for r in self._con.execute("SELECT name FROM collections ORDER BY name")]

    def create_collection(self, name: str) -> None:
        name = name.strip()
        if not name:
            raise LibraryError("a collection needs a name")
        with self.transaction() as con:
            con.execute("INSERT OR IGNORE INTO collections (name, created_at) VALUES (?, ?)",
                        (_db_text(name), time.time()))

    def delete_collection(self, name: str) -> None:
        with self.transaction() as con:
            con.execute("DELETE FROM collections WHERE name = ?", (name,))

    def _collection_id(self, name: str) -> int:
        row = self._con.execute("SELECT id FROM collections WHERE name = ?", (name,)).fetchone()
        if row is None:
            raise LibraryError(f"no collection named {name!r}")
        return int(row[0])

    def add_to_collection(self, name: str, paths: list[str]) -> None:
        """Put files in a collection (made if missing)."""
        self.create_collection(name)
        with self.transaction() as con:
            cid = self._collection_id(name.strip())
            for path in paths:
                con.execute("INSERT OR IGNORE INTO collection_items VALUES (?, ?, ?)",
                            (cid, self._hash_of(path), time.time()))

    def remove_from_collection(self, name: str, paths: list[str]) -> None:
        with self.transaction() as con:
            cid = self._collection_id(name)
            for path in paths:
                con.execute("DELETE FROM collection_items WHERE collection_id = ? AND "
                            "content_hash = ?", (cid, self._hash_of(path)))

    def collection(self, name: str) -> list[str]:
        """Paths of the files in a collection, sorted."""
        if not self._has_marks():
            return []
        return self._paths_with("SELECT content_hash FROM collection_items WHERE "
                                "collection_id = ?", (self._collection_id(name),))

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
                for stored in old:
                    path = py_path(stored)
                    if any(path == u or path.startswith(u + os.sep) for u in prefixes):
                        con.execute("DELETE FROM problems WHERE path = ?", (stored,))
            con.executemany("INSERT OR REPLACE INTO problems VALUES (?, ?, ?)",
                            [(db_path(p), k, _db_text(r)) for p, k, r in problems])

    def problems(self) -> list[tuple[str, str, str]]:
        return [(py_path(r[0]), r[1], r[2]) for r in self._con.execute(
            "SELECT path, kind, reason FROM problems ORDER BY path")]

    def errors(self) -> list[tuple[str, str]]:
        """(path, reason) of every file that could not be embedded."""
        return [(py_path(r[0]), r[1]) for r in self._con.execute(
            "SELECT path, error FROM tracks WHERE status='error' ORDER BY path")]
