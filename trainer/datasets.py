"""Adapters for the paper's evaluation datasets, read from a local copy in its standard layout.

Nothing is downloaded (DESIGN.md section 7): whoever has the data points an adapter at its
root and gets a list of :class:`DatasetItem` (audio path, labels, split), enough to
reproduce the paper's Table I on a GPU with ``loev-train eval --dataset NAME --data ROOT``.

=================  ======================================================  =================
adapter            layout read                                             labels
=================  ======================================================  =================
mtg_jamendo        data/splits/split-0/autotagging_top50tags-*.tsv,        tags
                   audio at <audio_root>/<PATH column>
magnatagatune      annotations_final.csv (tab-separated, 0/1 tag columns,   tags (top 50)
                   mp3_path); split by directory 0-b / c / d-f (12:1:3)
giantsteps_key     audio/*.mp3 + annotations/key/*.key (or annotations/     key
(mtg_giantsteps)   *.key, the MTG-GiantSteps style)
nsynth             nsynth-{train,valid,test}/examples.json + audio/*.wav    pitch, family
gtzan_tempo, ...   audio files + *.bpm (or one-BPM text) annotations        tempo
all_tempo          GTZAN, ACM-Mirum, Hainsworth, GiantSteps tempo, used    tempo, dataset
                   one-vs-rest
=================  ======================================================  =================

Every adapter accepts any audio extension where the layout names an ``.mp3`` (a copy
transcoded to .wav or .flac still reads), and leaves out items whose audio is missing.
"""
from __future__ import annotations

import csv
import json
import os
import re
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.errors import LoevError
from engine.keys import canonical_key

AUDIO_EXTENSIONS = (".mp3", ".wav", ".flac", ".ogg", ".opus", ".m4a", ".aiff", ".aif", ".au")
SPLITS = ("train", "validation", "test")


class DatasetError(LoevError):
    """A dataset root does not hold the layout its adapter reads."""


@dataclass(frozen=True)
class DatasetItem:
    """One audio file of a dataset: its path, its labels and its split."""

    path: Path
    labels: dict[str, Any] = field(default_factory=dict)
    split: str = "test"


# --------------------------------------------------------------------------- helpers


def _root(root: str | os.PathLike[str], name: str) -> Path:
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: {name} root is not a folder")
    return root


def find_audio(path: Path) -> Path | None:
    """``path`` if it exists, else the same stem with any audio extension; None if neither."""
    if path.is_file():
        return path
    stem = path.name.split(".")[0]
    for ext in AUDIO_EXTENSIONS:
        for cand in (path.with_suffix(ext), path.with_name(stem + ext), path.with_name(path.name + ext)):
            if cand.is_file():
                return cand
    return None


def _audio_index(root: Path) -> dict[str, Path]:
    """Every audio file under ``root`` by its lower-case stem (the part before the first dot too)."""
    index: dict[str, Path] = {}
    for p in sorted(root.rglob("*")):
        if p.suffix.lower() in AUDIO_EXTENSIONS and p.is_file():
            index.setdefault(p.stem.lower(), p)
            index.setdefault(p.name.split(".")[0].lower(), p)
    return index


def _nonempty(items: list[DatasetItem], root: Path, what: str) -> list[DatasetItem]:
    if not items:
        raise DatasetError(f"{root}: no {what} with audio found (is this the dataset's root?)")
    return items


# ------------------------------------------------------------------------ MTG-Jamendo


def mtg_jamendo(root: str | os.PathLike[str], *, audio_root: str | os.PathLike[str] | None = None,
                split_dir: str = "data/splits/split-0", subset: str = "autotagging_top50tags") -> list[DatasetItem]:
    """MTG-Jamendo top-50 tags (split-0): ``{"tags": [...]}``; tags keep their category prefix."""
    root = _root(root, "MTG-Jamendo")
    audio = Path(audio_root) if audio_root is not None else root
    items = []
    for split in SPLITS:
        tsv = root / split_dir / f"{subset}-{split}.tsv"
        if not tsv.is_file():
            raise DatasetError(f"{tsv}: MTG-Jamendo split file not found")
        with tsv.open(newline="") as f:
            rows = list(csv.reader(f, delimiter="\t"))
        for row in rows[1:]:  # header: TRACK_ID ARTIST_ID ALBUM_ID PATH DURATION TAGS...
            if len(row) < 6:
                continue
            path = find_audio(audio / row[3])
            if path is not None:
                items.append(DatasetItem(path, {"tags": sorted(t for t in row[5:] if t), "track_id": row[0]}, split))
    return _nonempty(items, root, "MTG-Jamendo tracks")


# --------------------------------------------------------------------- MagnaTagATune


def mtat_split(mp3_path: str) -> str:
    """The canonical 12:1:3 split by the first directory's name: 0-9, a, b / c / d-f."""
    d = mp3_path.strip().lstrip("/")[:1].lower()
    if d in "0123456789ab":
        return "train"
    if d == "c":
        return "validation"
    if d in "def":
        return "test"
    raise DatasetError(f"{mp3_path}: not a MagnaTagATune path (first directory 0-f)")


def magnatagatune(root: str | os.PathLike[str], *, top_n: int | None = 50,
                  audio_root: str | os.PathLike[str] | None = None) -> list[DatasetItem]:
    """MagnaTagATune with the canonical split; ``{"tags": [...]}`` restricted to the ``top_n`` most frequent."""
    root = _root(root, "MagnaTagATune")
    ann = root / "annotations_final.csv"
    if not ann.is_file():
        raise DatasetError(f"{ann}: MagnaTagATune annotations not found")
    with ann.open(newline="") as f:
        rows = list(csv.reader(f, delimiter="\t"))
    header = [h.strip().strip('"') for h in rows[0]]
    if "mp3_path" not in header or "clip_id" not in header:
        raise DatasetError(f"{ann}: expected clip_id and mp3_path columns")
    path_col, id_col = header.index("mp3_path"), header.index("clip_id")
    tag_cols = [i for i, h in enumerate(header) if i not in (path_col, id_col)]
    parsed = []
    for row in rows[1:]:
        row = [c.strip().strip('"') for c in row]
        if len(row) != len(header) or not row[path_col]:
            continue
        parsed.append((row[id_col], row[path_col], [header[i] for i in tag_cols if row[i] == "1"]))
    counts = Counter(t for _, _, tags in parsed for t in tags)
    keep = {t for t, _ in counts.most_common(top_n)} if top_n else set(counts)
    audio = Path(audio_root) if audio_root is not None else root
    items = []
    for clip, rel, tags in parsed:
        path = find_audio(audio / rel) or find_audio(audio / "mp3" / rel)
        if path is not None:
            items.append(DatasetItem(path, {"tags": sorted(t for t in tags if t in keep), "clip_id": clip},
                                     mtat_split(rel)))
    return _nonempty(items, root, "MagnaTagATune clips")


# ---------------------------------------------------------------------- GiantSteps key


def giantsteps_key(root: str | os.PathLike[str], *, split: str = "test") -> list[DatasetItem]:
    """GiantSteps key (or MTG-GiantSteps key with ``split="train"``): ``{"key": "Eb minor"}``.

    Annotations in ``annotations/key/*.key`` or ``annotations/*.key``; tracks whose
    annotation holds no single key (MTG's "-" or several keys) are left out.
    """
    root = _root(root, "GiantSteps key")
    ann_files = sorted((root / "annotations" / "key").glob("*.key")) or sorted((root / "annotations").glob("*.key"))
    if not ann_files:
        raise DatasetError(f"{root}: no annotations/key/*.key or annotations/*.key files")
    audio = _audio_index(root / "audio" if (root / "audio").is_dir() else root)
    items = []
    for ann in ann_files:
        text = ann.read_text(errors="replace").strip()
        key = canonical_key(text) if "\n" not in text and " or " not in text else None
        path = audio.get(ann.stem.lower()) or audio.get(ann.name.split(".")[0].lower())
        if key is not None and path is not None:
            items.append(DatasetItem(path, {"key": key}, split))
    return _nonempty(items, root, "GiantSteps key tracks")


def mtg_giantsteps_key(root: str | os.PathLike[str]) -> list[DatasetItem]:
    """MTG-GiantSteps key: the GiantSteps layout, the training split."""
    return giantsteps_key(root, split="train")


# ---------------------------------------------------------------------------- NSynth


def nsynth(root: str | os.PathLike[str]) -> list[DatasetItem]:
    """NSynth: ``{"pitch": MIDI, "family": instrument_family_str, "velocity", "source"}``."""
    root = _root(root, "NSynth")
    items = []
    for folder, split in (("nsynth-train", "train"), ("nsynth-valid", "validation"), ("nsynth-test", "test")):
        meta = root / folder / "examples.json"
        if not meta.is_file():
            continue
        try:
            examples = json.loads(meta.read_text())
        except json.JSONDecodeError as e:
            raise DatasetError(f"{meta}: not valid JSON ({e})") from None
        for name, ex in sorted(examples.items()):
            path = find_audio(root / folder / "audio" / f"{name}.wav")
            if path is not None:
                items.append(DatasetItem(path, {"pitch": int(ex["pitch"]), "family": ex.get("instrument_family_str"),
                                                "velocity": ex.get("velocity"),
                                                "source": ex.get("instrument_source_str")}, split))
    return _nonempty(items, root, "NSynth notes (nsynth-*/examples.json)")


# ---------------------------------------------------------------------- tempo sets


_NUMBER = re.compile(r"[-+]?\d+(?:\.\d+)?")
TEMPO_ANNOTATION_SUFFIXES = (".bpm", ".tempo", ".txt", ".lab")


def read_bpm(path: Path) -> float | None:
    """The first number of a tempo annotation (MIREX-style files list the main tempo first)."""
    m = _NUMBER.search(path.read_text(errors="replace"))
    if not m:
        return None
    bpm = float(m.group())
    return bpm if 10.0 <= bpm <= 400.0 else None


def _norm(stem: str) -> str:
    return re.sub(r"[^a-z0-9]", "", stem.lower())


def tempo_folder(root: str | os.PathLike[str], *, name: str = "tempo", split: str = "test") -> list[DatasetItem]:
    """A tempo dataset: audio files and one-BPM annotation files anywhere under ``root``.

    An annotation matches the audio file with the same stem; failing that, the one whose
    alphanumeric stem ends the annotation's (``gtzan_blues_00000.bpm`` -> ``blues.00000.wav``)
    or is ended by it.
    """
    root = _root(root, name)
    files = sorted(p for p in root.rglob("*") if p.is_file())
    audio = [p for p in files if p.suffix.lower() in AUDIO_EXTENSIONS]
    anns = [p for p in files if p.suffix.lower() in TEMPO_ANNOTATION_SUFFIXES]
    by_stem = {p.stem.lower(): p for p in audio}
    by_norm = {_norm(p.stem): p for p in audio}
    items = []
    for ann in anns:
        bpm = read_bpm(ann)
        if bpm is None:
            continue
        path = by_stem.get(ann.stem.lower()) or by_norm.get(_norm(ann.stem))
        if path is None:
            na = _norm(ann.stem)
            cands = [p for n, p in by_norm.items() if n and (na.endswith(n) or n.endswith(na))]
            path = cands[0] if len(cands) == 1 else None
        if path is not None:
            items.append(DatasetItem(path, {"tempo": bpm, "dataset": name}, split))
    return _nonempty(items, root, f"{name} tracks with a BPM annotation")


def gtzan_tempo(root: str | os.PathLike[str]) -> list[DatasetItem]:
    return tempo_folder(root, name="gtzan")


def acm_mirum(root: str | os.PathLike[str]) -> list[DatasetItem]:
    return tempo_folder(root, name="acm_mirum")


def hainsworth(root: str | os.PathLike[str]) -> list[DatasetItem]:
    return tempo_folder(root, name="hainsworth")


def giantsteps_tempo(root: str | os.PathLike[str]) -> list[DatasetItem]:
    return tempo_folder(root, name="giantsteps_tempo")


TEMPO_SETS: dict[str, Callable[[str | os.PathLike[str]], list[DatasetItem]]] = {
    "gtzan": gtzan_tempo, "acm_mirum": acm_mirum, "hainsworth": hainsworth, "giantsteps_tempo": giantsteps_tempo,
}


def all_tempo(roots: dict[str, str | os.PathLike[str]], *, test: str) -> list[DatasetItem]:
    """AllTempo one-vs-rest: the ``test`` set's tracks in split "test", the other sets' in "train"."""
    if test not in roots:
        raise DatasetError(f"AllTempo: the held-out set {test!r} is not among {sorted(roots)}")
    unknown = sorted(set(roots) - set(TEMPO_SETS))
    if unknown:
        raise DatasetError(f"AllTempo: unknown tempo set(s) {unknown}; expected {sorted(TEMPO_SETS)}")
    items = []
    for name, root in roots.items():
        for it in TEMPO_SETS[name](root):
            items.append(DatasetItem(it.path, it.labels, "test" if name == test else "train"))
    return items


def all_tempo_folds(roots: dict[str, str | os.PathLike[str]]) -> Iterable[tuple[str, list[DatasetItem]]]:
    """Each set held out in turn: ``(held-out name, items)``."""
    for name in roots:
        yield name, all_tempo(roots, test=name)


DATASETS: dict[str, Callable[..., list[DatasetItem]]] = {
    "mtg_jamendo": mtg_jamendo, "magnatagatune": magnatagatune, "giantsteps_key": giantsteps_key,
    "mtg_giantsteps_key": mtg_giantsteps_key, "nsynth": nsynth, **TEMPO_SETS,
}


def load_dataset(name: str, root: str | os.PathLike[str]) -> list[DatasetItem]:
    """Items of the dataset ``name`` (a key of :data:`DATASETS`) at ``root``."""
    if name not in DATASETS:
        raise DatasetError(f"unknown dataset {name!r}; expected one of {', '.join(DATASETS)}")
    return DATASETS[name](root)
