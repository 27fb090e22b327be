"""Training data: any folder of audio -> batches of M views per anchor (paper Section II).

* :func:`build_index` walks a folder (recursively), reads each file's header once and
  keeps a JSON cache keyed by path + size + mtime, so a rescan of an unchanged corpus
  decodes nothing. A file that fails to decode is logged once and left out; it never
  kills a run. Files shorter than one chunk are left out too.
* :func:`plan_batch` draws one step's batch as plain numbers: A anchors (tracks drawn
  without replacement where the corpus allows), a chunk strategy per anchor
  (``same`` / ``adjacent`` / ``random``, uniform by default), M = 4 views per anchor with
  their start times, and the variant augmentations of each view (pitch shift in semitones,
  time-stretch rate, the tracking vector). The stretch rate is drawn here because it sets
  how much source audio a view needs: ``source_samples_needed(chunk, rate)``, so a
  stretched view is filled with real audio, never padding (DESIGN.md section 3).
* :func:`read_batch` seeks to each view and reads only those frames.
* :class:`ViewStream` is an ``IterableDataset`` of whole batches, one per step; every
  batch's randomness is derived from ``(seed, step, rank)`` alone, so a run resumed at
  step s sees exactly the batches an uninterrupted run sees, whatever the number of
  loader workers (workers take steps round-robin, which ``DataLoader`` preserves).
  A file whose header read but whose audio does not (a truncated FLAC) is left out from
  then on, logged and appended to the run's ``skipped.csv``; the step is drawn again
  without it and the run goes on.

Choices the paper leaves open, kept to its intent:

* ``same``: all views start at the anchor's time; ``adjacent``: each view starts within
  one chunk length of it; ``random``: anywhere in the track.
* A stretched view whose source would run past the end of the file is moved back; a track
  too short for the drawn rate gets the largest rate it can hold.
* Views of one batch have different source lengths; rows are brought to one width by
  reflecting the row's own audio (what ``torch.stft(center=True)`` does at an edge), and
  only the vocoder's last half-window ever reads past a view's own source.
"""
from __future__ import annotations

import csv
import json
import logging
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from engine.config import CHUNK_SAMPLES, SAMPLE_RATE
from engine.errors import DecodeError

log = logging.getLogger(__name__)

STRATEGIES = ("same", "adjacent", "random")
INDEX_VERSION = 1


@dataclass(frozen=True)
class Track:
    """One usable audio file of the corpus."""

    path: str
    duration: float  # seconds


def _walk_audio(root: Path) -> list[Path]:
    from engine.audio.decode import is_audio_path

    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        found.extend(Path(dirpath) / f for f in sorted(filenames) if is_audio_path(f))
    return found


def build_index(root: str | os.PathLike[str], *, cache_path: str | os.PathLike[str] | None = None,
                min_seconds: float = CHUNK_SAMPLES / SAMPLE_RATE,
                skipped: list[tuple[str, str]] | None = None) -> list[Track]:
    """Every decodable audio file under ``root`` at least ``min_seconds`` long, sorted by path.

    Parameters
    ----------
    root : folder
    cache_path : JSON file, optional
        Header cache keyed by path with size and mtime; unchanged files are not reopened,
        and a bad file is logged only when it is first seen (or changes).
    min_seconds : float
    skipped : list, optional
        Receives ``(path, reason)`` of every file left out because it cannot be read.

    Returns
    -------
    list of Track

    Raises
    ------
    FileNotFoundError
        ``root`` is not a folder.
    """
    from engine.audio.decode import audio_info

    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: training data folder not found")
    cache = _read_cache(cache_path)
    entries: dict[str, dict] = {}
    for path in _walk_audio(root):
        key = str(path.resolve())
        try:
            st = path.stat()
        except OSError as e:
            log.warning("skipping %s: %s", path, e)
            continue
        entry = cache.get(key)
        if not entry or entry.get("size") != st.st_size or entry.get("mtime") != st.st_mtime_ns:
            entry = {"size": st.st_size, "mtime": st.st_mtime_ns}
            try:
                entry["duration"] = audio_info(path).duration
            except DecodeError as e:
                entry["error"] = e.reason if hasattr(e, "reason") else str(e)
                log.warning("skipping %s: %s", path, entry["error"])
        entries[key] = entry
        if "error" in entry and skipped is not None:
            skipped.append((key, entry["error"]))
    if cache_path is not None:
        _write_cache(cache_path, entries)
    return [Track(p, e["duration"]) for p, e in sorted(entries.items())
            if "duration" in e and e["duration"] >= min_seconds]


def _read_cache(path: str | os.PathLike[str] | None) -> dict[str, dict]:
    if path is None or not Path(path).is_file():
        return {}
    try:
        data = json.loads(Path(path).read_text())
        return data["files"] if data.get("version") == INDEX_VERSION else {}
    except (OSError, ValueError, KeyError, TypeError):
        return {}  # a damaged cache is rebuilt, never fatal


def _write_cache(path: str | os.PathLike[str], entries: dict[str, dict]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_text(json.dumps({"version": INDEX_VERSION, "files": entries}))
    os.replace(tmp, path)


# --- batch plans ----------------------------------------------------------------------

@dataclass(frozen=True)
class ViewConfig:
    """How a step's batch is drawn (paper Section II and Table IV variant rows)."""

    anchors: int = 8
    views: int = 4
    strategy_probs: tuple[float, float, float] = (1 / 3, 1 / 3, 1 / 3)  # same, adjacent, random
    chunk_samples: int = CHUNK_SAMPLES
    sr: int = SAMPLE_RATE
    pitch: bool = True
    tempo: bool = True
    pitch_p: float = 0.5
    semitone_range: tuple[float, float] = (-4.0, 4.0)
    semitone_grid: bool = False  # whole non-zero semitones (SemiSupCon key labels follow them)
    stretch_p: float = 0.5
    rate_range: tuple[float, float] = (0.7, 1.3)
    base_augment: bool = True
    mixup: bool = False

    def __post_init__(self) -> None:
        probs = np.asarray(self.strategy_probs, dtype=float)
        if probs.shape != (3,) or (probs < 0).any() or probs.sum() <= 0:
            raise ValueError(f"strategy_probs must be 3 non-negative weights, got {self.strategy_probs}")
        if self.anchors < 1 or self.views < 2:
            raise ValueError(f"need anchors >= 1 and views >= 2, got {self.anchors}, {self.views}")

    @property
    def batch_views(self) -> int:
        return self.anchors * self.views


@dataclass
class BatchPlan:
    """One step's batch as numbers; every array has one entry per view ([B] = A * M)."""

    track: np.ndarray        # int [B]
    start: np.ndarray        # int [B], first sample at sr
    samples: np.ndarray      # int [B], source samples to read
    anchor: np.ndarray       # int [B]
    strategy: np.ndarray     # int [A], index into STRATEGIES
    semitones: np.ndarray    # float [B], 0 where not shifted
    rate: np.ndarray         # float [B], 1 where not stretched
    pitch_applied: np.ndarray  # bool [B]
    stretch_applied: np.ndarray  # bool [B]
    step: int = 0
    extra: dict = field(default_factory=dict)


def derive_seed(seed: int, step: int, rank: int, stream: int = 0) -> int:
    """A 63-bit seed for one (seed, step, rank, stream): resume needs nothing but these."""
    ss = np.random.SeedSequence([int(seed), int(step), int(rank), int(stream)])
    return int(ss.generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


def _draw_variants(rng: np.random.Generator, n: int, cfg: ViewConfig) -> tuple[np.ndarray, ...]:
    pitch_on = cfg.pitch & (rng.random(n) < cfg.pitch_p)
    if cfg.semitone_grid:
        lo, hi = int(math.ceil(cfg.semitone_range[0])), int(math.floor(cfg.semitone_range[1]))
        grid = np.array([s for s in range(lo, hi + 1) if s != 0], dtype=np.float64)
        semis = grid[rng.integers(0, len(grid), n)]
    else:
        semis = rng.uniform(*cfg.semitone_range, n)
    stretch_on = cfg.tempo & (rng.random(n) < cfg.stretch_p)
    rate = rng.uniform(*cfg.rate_range, n)
    return (np.where(pitch_on, semis, 0.0), pitch_on,
            np.where(stretch_on, rate, 1.0), stretch_on)


def plan_batch(tracks: Sequence[Track], cfg: ViewConfig, *, seed: int, step: int,
               rank: int = 0, exclude: frozenset[int] = frozenset()) -> BatchPlan:
    """Draw step ``step``'s batch for process ``rank`` (deterministic in its arguments).

    ``exclude`` holds indices of tracks found unreadable; without any, the draw is the
    same as it always was for these arguments.
    """
    from engine.audio.transforms import source_samples_needed

    allowed = np.array([i for i in range(len(tracks)) if i not in exclude], dtype=np.int64)
    if not len(allowed):
        raise ValueError("no usable audio files (at least one chunk long) in the training data")
    rng = np.random.default_rng(derive_seed(seed, step, rank))
    a, m, sr, chunk = cfg.anchors, cfg.views, cfg.sr, cfg.chunk_samples
    n = a * m
    chosen = allowed[rng.choice(len(allowed), size=a, replace=len(allowed) < a)]
    probs = np.asarray(cfg.strategy_probs, dtype=float)
    strategy = rng.choice(3, size=a, p=probs / probs.sum())
    semis, pitch_on, rate, stretch_on = _draw_variants(rng, n, cfg)
    track_len = np.array([int(math.floor(tracks[t].duration * sr)) for t in chosen])
    view_track = np.repeat(chosen, m)
    view_len = np.repeat(track_len, m)
    # A track too short for the drawn rate gets the largest rate it holds.
    max_rate = view_len / chunk
    rate = np.where(stretch_on, np.minimum(rate, max_rate), 1.0)
    samples = np.array([source_samples_needed(chunk, float(r)) if s else chunk
                        for r, s in zip(rate, stretch_on)])
    samples = np.minimum(samples, view_len)
    anchor_start = np.floor(rng.random(a) * (track_len - chunk + 1)).astype(np.int64)
    jitter = rng.uniform(-1.0, 1.0, n) * chunk
    uniform = rng.random(n)
    base = np.repeat(anchor_start, m).astype(np.float64)
    strat = np.repeat(strategy, m)
    latest = view_len - samples
    start = np.where(strat == 0, base, np.where(strat == 1, base + jitter, uniform * (latest + 1)))
    start = np.clip(np.floor(start), 0, latest).astype(np.int64)
    return BatchPlan(track=view_track, start=start, samples=samples.astype(np.int64),
                     anchor=np.repeat(np.arange(a), m), strategy=strategy, semitones=semis,
                     rate=rate, pitch_applied=pitch_on, stretch_applied=stretch_on, step=step)


def read_batch(tracks: Sequence[Track], plan: BatchPlan, cfg: ViewConfig) -> np.ndarray:
    """Read every view's source frames: float32 [B, max(samples)].

    Each row holds ``plan.samples[i]`` real samples from ``plan.start[i]``; the rest of
    the row (only for rows shorter than the longest) reflects the row's own audio.

    Raises
    ------
    DecodeError
        A file that decoded at indexing time and fails now (changed on disk).
    """
    from engine.audio.decode import read_chunks

    width = int(plan.samples.max())
    out = np.zeros((len(plan.track), width), dtype=np.float32)
    for i, (t, s, n) in enumerate(zip(plan.track, plan.start, plan.samples)):
        try:
            y = read_chunks(tracks[t].path, [s / cfg.sr], chunk_samples=int(n), sr=cfg.sr)[0]
        except DecodeError as e:
            raise UnreadableTrack(int(t), e.path, e.reason) from None
        out[i] = _fill(y, width)
    return out


class UnreadableTrack(DecodeError):
    """A track of the index that failed to read while drawing a batch (``track`` = index)."""

    def __init__(self, track: int, path: object, reason: str) -> None:
        super().__init__(path, reason)
        self.track = track


def log_skipped(path: str | os.PathLike[str] | None, entries: Sequence[tuple[str, str]]) -> None:
    """Append ``(file, reason)`` rows to a run's ``skipped.csv`` (each file once)."""
    if path is None or not entries:
        return
    path = Path(path)
    seen: set[str] = set()
    if path.is_file():
        with open(path, newline="") as f:
            seen = {row["file"] for row in csv.DictReader(f) if row.get("file")}
    new = [(p, r) for p, r in entries if p not in seen]
    if not new:
        return
    fresh = not path.is_file() or path.stat().st_size == 0
    with open(path, "a", newline="") as f:
        w = csv.writer(f)
        if fresh:
            w.writerow(["file", "reason"])
        w.writerows(new)


def _fill(y: np.ndarray, width: int) -> np.ndarray:
    if y.shape[0] >= width:
        return y[:width]
    while y.shape[0] < width:  # reflect repeatedly: only a very short file needs more than one
        pad = min(width - y.shape[0], y.shape[0] - 1)
        y = np.pad(y, (0, pad), mode="reflect") if pad > 0 else np.pad(y, (0, width - y.shape[0]))
    return y


def batch_arrays(tracks: Sequence[Track], cfg: ViewConfig, *, seed: int, step: int,
                 rank: int = 0, exclude: frozenset[int] = frozenset()) -> dict[str, np.ndarray]:
    """One step's batch: the plan and the source audio, as numpy arrays."""
    plan = plan_batch(tracks, cfg, seed=seed, step=step, rank=rank, exclude=exclude)
    return {
        "step": np.int64(step),
        "source": read_batch(tracks, plan, cfg),
        "track": plan.track,
        "anchor": plan.anchor,
        "semitones": plan.semitones.astype(np.float32),
        "rate": plan.rate.astype(np.float32),
        "pitch_applied": plan.pitch_applied,
        "stretch_applied": plan.stretch_applied,
    }


try:  # torch is a training dependency; the plan functions above work without it
    from torch.utils.data import IterableDataset, get_worker_info
except ImportError:  # pragma: no cover
    IterableDataset = object  # type: ignore[misc,assignment]


class ViewStream(IterableDataset):
    """Batches for steps ``start_step .. stop_step - 1`` of one process, in step order.

    Use with ``DataLoader(stream, batch_size=None, num_workers=W)``: worker w produces
    the steps congruent to w modulo W and the loader interleaves them round-robin, so
    the order and the content of the batches do not depend on W.
    """

    def __init__(self, tracks: Sequence[Track], cfg: ViewConfig, *, seed: int, rank: int = 0,
                 start_step: int = 0, stop_step: int,
                 skip_log: str | os.PathLike[str] | None = None) -> None:
        self.tracks, self.cfg, self.seed, self.rank = list(tracks), cfg, seed, rank
        self.start_step, self.stop_step = start_step, stop_step
        self.skip_log = skip_log
        self.skipped: set[int] = set()

    def __len__(self) -> int:
        return max(0, self.stop_step - self.start_step)

    def __iter__(self) -> Iterator[dict]:
        import torch

        info = get_worker_info()
        wid, nw = (0, 1) if info is None else (info.id, info.num_workers)
        if info is not None:
            torch.set_num_threads(1)  # decoding is single-threaded; leave cores to the model
        for step in range(self.start_step + wid, self.stop_step, nw):
            while True:
                try:
                    arrays = batch_arrays(self.tracks, self.cfg, seed=self.seed, step=step,
                                          rank=self.rank, exclude=frozenset(self.skipped))
                    break
                except UnreadableTrack as e:
                    # One bad file never stops a run: leave it out and draw the step again.
                    self.skipped.add(e.track)
                    log.warning("skipping %s from step %d on: %s", e.path, step, e.reason)
                    log_skipped(self.skip_log, [(e.path, e.reason)])
            yield {k: torch.as_tensor(v) for k, v in arrays.items()}


# --- labels (SemiSupCon) ----------------------------------------------------------------

N_PROGRAMS = 129  # General MIDI programs 0..127, and 128 for the percussion bank


@dataclass(frozen=True)
class TrackLabels:
    """Per-track labels aligned with the index: family id (-1), key 0..23 (-1), BPM (0),
    and the multi-hot set of GM programs used in the file (bool [n, 129], all False when
    unknown; all False for every track when not given)."""

    family: np.ndarray
    key: np.ndarray
    tempo: np.ndarray
    families: tuple[str, ...]
    programs: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.programs is None:
            object.__setattr__(self, "programs",
                               np.zeros((len(self.family), N_PROGRAMS), dtype=bool))

    @property
    def labelled(self) -> int:
        return int(((self.family >= 0) | (self.key >= 0) | (self.tempo > 0)
                    | self.programs.any(axis=1)).sum())


def parse_programs(text: str) -> np.ndarray:
    """A ``programs`` cell such as ``"58;60;62"`` as a multi-hot bool [129].

    Empty cells give all False; tokens that are not integers in 0..128 are ignored.
    """
    out = np.zeros(N_PROGRAMS, dtype=bool)
    for token in (text or "").split(";"):
        try:
            prog = int(token.strip())
        except ValueError:
            continue
        if 0 <= prog < N_PROGRAMS:
            out[prog] = True
    return out


def load_labels(csv_path: str | os.PathLike[str], tracks: Sequence[Track], *,
                fraction: float = 1.0, seed: int = 0) -> TrackLabels:
    """Read ``labels.csv`` (columns file, key, tempo, family, programs, ...) for the indexed tracks.

    ``csv_path`` may also be a folder: every ``labels.csv`` under it is read (a corpus made of
    several rendered corpora side by side). ``file`` is matched relative to its CSV's folder; ``programs`` (GM programs joined by
    ``;``, see :func:`parse_programs`) may be missing or empty. Only a ``fraction`` of the
    tracks keep their labels (chosen from ``seed``), the others count as unlabelled:
    SemiSupCon's supervised fraction.
    """
    from engine.keys import parse_key

    csv_path = Path(csv_path)
    files = sorted(csv_path.rglob("labels.csv")) if csv_path.is_dir() else [csv_path]
    if not files or not files[0].is_file():
        raise FileNotFoundError(f"{csv_path}: labels file not found")
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"supervised fraction must lie in [0, 1], got {fraction}")
    rows: dict[str, dict[str, str]] = {}
    for path in files:
        with open(path, newline="") as f:
            for row in csv.DictReader(f):
                if row.get("file"):
                    rows[str((path.parent / row["file"]).resolve())] = row
    n = len(tracks)
    family, key, tempo = np.full(n, -1), np.full(n, -1), np.zeros(n)
    programs = np.zeros((n, N_PROGRAMS), dtype=bool)
    names: dict[str, int] = {}
    keep = np.random.default_rng(derive_seed(seed, 0, 0, stream=7)).random(n) < fraction
    for i, tr in enumerate(tracks):
        row = rows.get(str(Path(tr.path).resolve()))
        if row is None or not keep[i]:
            continue
        fam = (row.get("family") or "").strip()
        if fam:
            family[i] = names.setdefault(fam, len(names))
        k = parse_key(row.get("key") or "")
        key[i] = -1 if k is None else k
        try:
            tempo[i] = max(0.0, float(row.get("tempo") or 0.0))
        except ValueError:
            tempo[i] = 0.0
        programs[i] = parse_programs(row.get("programs") or "")
    return TrackLabels(family, key, tempo, tuple(names), programs)
