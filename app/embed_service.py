"""The network runs in a child process, so torch never shares the window's GIL.

Running the embedder on a worker *thread* is not enough for a responsive window: importing
torch holds the GIL while it loads its libraries (a 3.1 s event-loop stall measured on
this machine) and embedding on two cores starved the event loop for 50-550 ms at a time
(tests/test_app_window.py measures the stall). A child process (``spawn``: no fork of a
Qt process) holds the one loaded network; the window's worker threads send it requests
and block on a pipe, which releases the GIL.

No Qt here. The child serves each request on its own thread (one network call at a time),
so a curve asked for during a scan is answered between two files rather than after the
scan.
"""
from __future__ import annotations

import importlib
import itertools
import multiprocessing
import multiprocessing.connection
import multiprocessing.spawn
import os
import queue
import threading
import traceback
from pathlib import Path
from typing import Any, Callable

import numpy as np

from engine.errors import EmbedderError
from engine.model.checkpoint import read_checkpoint_info
from engine.resources import default_checkpoint
from engine.session import Session

if os.name == "posix":
    # Loaded with this module (on the GUI thread at start-up), not by the worker thread
    # that first starts the child: importing holds the GIL and would stall the window.
    import multiprocessing.popen_spawn_posix  # noqa: F401


class EmbedServiceError(EmbedderError):
    """The embedding process could not be started or died."""


class EmbedService:
    """A child process holding one Embedder for ``checkpoint``; started on first use.

    Parameters
    ----------
    checkpoint : path
        The model's ``.safetensors`` file.
    threads : int, optional
        Compute threads in the child; default: all cores but one (left to the window).
    """

    def __init__(self, checkpoint: str | os.PathLike[str], *, threads: int | None = None) -> None:
        self.checkpoint = str(checkpoint)
        self.threads = threads or max(1, (os.cpu_count() or 2) - 1)
        self._proc: Any = None
        self._conn: Any = None
        self._send_lock = threading.Lock()
        self._start_lock = threading.Lock()
        # call id -> (the connection it was sent on, where its answer goes)
        self._pending: dict[int, tuple[Any, queue.Queue[tuple[str, Any]]]] = {}
        self._ids = itertools.count(1)

    # -- lifetime -------------------------------------------------------------------------

    def _ensure_started(self) -> None:
        with self._start_lock:
            if self._proc is not None and self._proc.is_alive():
                return
            ctx = multiprocessing.get_context("spawn")
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=serve, args=(child, self.checkpoint, self.threads),
                               name="loev-embed", daemon=True)
            try:
                proc.start()
            except OSError as e:
                raise EmbedServiceError(f"cannot start the embedding process: {e}") from e
            child.close()
            self._proc, self._conn = proc, parent
            threading.Thread(target=self._read, args=(parent,), daemon=True,
                             name="loev-embed-reader").start()

    def _read(self, conn: Any) -> None:
        """Route every answer of the child to the call waiting for it."""
        while True:
            try:
                kind, call_id, value = conn.recv()
            except (EOFError, OSError):
                break
            entry = self._pending.get(call_id)
            if entry is not None:
                entry[1].put((kind, value))
        # Only the calls sent to this process: a restarted one's calls are not its own.
        for sent_on, q in list(self._pending.values()):
            if sent_on is conn:
                q.put(("died", None))

    def close(self) -> None:
        proc, conn = self._proc, self._conn
        self._proc = self._conn = None
        if proc is None:
            return
        try:
            with self._send_lock:
                conn.send(("quit", 0, None))
        except (OSError, ValueError):
            pass
        proc.join(timeout=5)
        if proc.is_alive():
            proc.terminate()
            proc.join(timeout=2)
        conn.close()

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.is_alive()

    # -- calls ----------------------------------------------------------------------------

    def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """Run ``method`` in the child and return its result (re-raising its error).

        Each call is short (one file, one curve): a cancelled scan stops between calls.
        """
        self._ensure_started()
        proc, conn = self._proc, self._conn
        call_id = next(self._ids)
        answers: queue.Queue[tuple[str, Any]] = queue.Queue()
        self._pending[call_id] = (conn, answers)
        try:
            try:
                with self._send_lock:
                    conn.send(("call", call_id, (method, args, kwargs)))
            except (OSError, ValueError):
                answers.put(("died", None))  # it died before the request could be sent
            while True:
                try:
                    kind, value = answers.get(timeout=0.5)
                except queue.Empty:
                    if proc.is_alive():
                        continue
                    kind, value = "died", None
                if kind == "result":
                    return value
                if kind == "error":
                    raise _rebuild(value)
                proc.join(timeout=2)  # reap it, so that its exit code is known
                raise EmbedServiceError(f"the embedding process stopped (exit code "
                                        f"{proc.exitcode}); it restarts on the next request")
        finally:
            self._pending.pop(call_id, None)


class RemoteEmbedder:
    """What the engine asks of an Embedder, answered by an :class:`EmbedService`.

    Identity (model id, config, subspaces, dims) is read from the checkpoint header here,
    without torch; only the embedding calls cross to the child.
    """

    def __init__(self, checkpoint: str | os.PathLike[str] | None,
                 service: EmbedService | None = None) -> None:
        self.checkpoint_path = Path(checkpoint) if checkpoint else default_checkpoint()
        info = read_checkpoint_info(self.checkpoint_path)
        self.model_id: str = info.model_id
        self.config: dict[str, Any] = info.config
        self.subspaces: tuple[str, ...] = info.subspaces
        self.dims: dict[str, int] = info.dims
        self.service = service or EmbedService(self.checkpoint_path)
        # The last file embedded, by (path, size, mtime): a file dropped from outside the
        # library is embedded for its query, then again for its estimate (Session.analyze).
        self._last: tuple[tuple[str, int, int], dict[str, np.ndarray]] | None = None
        self._last_lock = threading.Lock()

    def embed_file(self, path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
        try:
            st = os.stat(path)
            key: tuple[str, int, int] | None = (os.path.realpath(path), st.st_size,
                                                st.st_mtime_ns)
        except OSError:
            key = None  # the child says what is wrong with it
        with self._last_lock:
            if key is not None and self._last is not None and self._last[0] == key:
                return {s: v.copy() for s, v in self._last[1].items()}
        vecs = self.service.call("embed_file", str(path))
        if key is not None:
            with self._last_lock:
                self._last = (key, {s: np.array(v, copy=True) for s, v in vecs.items()})
        return vecs

    def embed_audio_batch(self, ys: list[np.ndarray]) -> list[dict[str, np.ndarray]]:
        return self.service.call("embed_audio_batch", [np.asarray(y, np.float32) for y in ys])

    def embed_audio(self, y: np.ndarray) -> dict[str, np.ndarray]:
        return self.embed_audio_batch([y])[0]

    def session_call(self, op: str, *args: Any) -> Any:
        """Run ``engine.session.Session``'s ``op`` ("curve" or "match") in the child, where
        the network is, and return its plain-data result."""
        return self.service.call(op, *args)

    def close(self) -> None:
        self.service.close()


# -- the child ---------------------------------------------------------------------------


# Each handler takes a Session holding the child's Embedder: a curve or a match asked by
# the window is computed by the same engine code as ``loev curve`` and ``loev match``.
HANDLERS: dict[str, Callable[..., Any]] = {
    "ping": lambda s: os.getpid(),
    "embed_file": lambda s, path: s.embedder.embed_file(path),
    "embed_audio_batch": lambda s, ys: s.embedder.embed_audio_batch(ys),
    "curve": lambda s, path, transform: s.curve(path, transform),
    "match": lambda s, query, result: s.match(query, result),
    "transformed": lambda s, path, shift, stretch: _transformed(s.embedder, path, shift,
                                                                 stretch),
}


def _transformed(embedder: Any, path: str, shift: float, stretch: float) -> dict[str, Any]:
    """Vectors of ``path`` pitch-shifted / stretched, as ``loev query --shift/--stretch``
    embeds them (torch's vocoders where installed, the player's otherwise)."""
    from engine.audio.decode import load_audio
    from engine.model import variants

    shift, stretch = float(shift), float(stretch)
    if hasattr(embedder, "embed_chunks") and variants.torch_transforms is not None:
        found = variants.torch_transforms.transformed_chunks(
            str(path), shift=shift, stretch=stretch,
            max_chunks=int(getattr(embedder, "max_chunks", 16)))
        if found is not None:
            out = {}
            for s, v in embedder.embed_chunks(found).items():
                m = v.mean(axis=0)
                out[s] = (m / max(float(np.linalg.norm(m)), 1e-12)).astype(np.float32)
            return out
    # A short one-shot, or no torch: the whole signal.
    y = load_audio(str(path))
    if shift != 0.0:
        y = variants.pitch_shift_versions(y, [shift])[0]
    if stretch != 1.0:
        y = variants.time_stretch_versions(y, [stretch])[0]
    return embedder.embed_audio(y)


def serve(conn: Any, checkpoint: str, threads: int) -> None:
    """The child's main loop: one thread per request, one network call at a time."""
    # torch (imported by the engine at the first request) sizes its thread pool from
    # these; one core stays with the window.
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(threads)
    send_lock, model_lock = threading.Lock(), threading.Lock()
    session = Session(checkpoint=checkpoint)  # an in-process Embedder, made on first use

    def send(kind: str, call_id: int, value: Any) -> None:
        with send_lock:
            try:
                conn.send((kind, call_id, value))
            except (OSError, ValueError):
                pass

    def run(call_id: int, method: str, args: tuple, kwargs: dict) -> None:
        try:
            with model_lock:
                result = HANDLERS[method](session, *args, **kwargs)
        except BaseException as e:  # noqa: BLE001 - every error goes back to the caller
            send("error", call_id, _pack(e))
        else:
            send("result", call_id, result)

    while True:
        try:
            kind, call_id, payload = conn.recv()
        except (EOFError, OSError, KeyboardInterrupt):
            break
        if kind == "quit":
            break
        method, args, kwargs = payload
        threading.Thread(target=run, args=(call_id, method, args, kwargs), daemon=True).start()


def _pack(e: BaseException) -> dict[str, Any]:
    return {"module": type(e).__module__, "name": type(e).__qualname__, "args": e.args,
            "dict": {k: v for k, v in vars(e).items() if isinstance(v, (str, int, float))},
            "message": str(e), "traceback": traceback.format_exc()}


def _rebuild(packed: dict[str, Any]) -> BaseException:
    """The child's exception as the same class where it is a known one (so that a scan
    records a DecodeError's reason), else a RuntimeError with its message."""
    try:
        cls = getattr(importlib.import_module(packed["module"]), packed["name"])
        if not (isinstance(cls, type) and issubclass(cls, Exception)):
            raise TypeError(cls)
        exc = cls.__new__(cls)
        Exception.__init__(exc, *packed["args"])
        exc.__dict__.update(packed["dict"])
    except Exception:  # noqa: BLE001 - an unknown class still says what went wrong
        exc = RuntimeError(f"{packed['name']}: {packed['message']}")
    exc.remote_traceback = packed["traceback"]  # type: ignore[attr-defined]
    return exc
