"""Key, tempo and sound-type estimates read from a track's stored embedding.

Three small heads sit on the LOEV++ subspaces, as in the paper's probing experiments: a
key head on the pitch space (24 keys and "no key"), a tempo head on the tempo space (BPM
and "no tempo") and a type head on the invariant space (the vocabulary of docs/DESIGN.md
section 8). They run in numpy on the L2-normalised track vectors the library stores, so
a library scanned before the heads existed gets its estimates without decoding or
embedding anything again. Their weights live in the checkpoint's safetensors file beside
the encoder's (``heads.*`` tensors, their vocabulary in the metadata); ``loev-train
heads`` trains them on a frozen checkpoint.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from engine import keys

SOUND_TYPES = ("kick", "snare", "clap", "rim", "hihat", "cymbal", "tom", "percussion", "bass", "keys",
               "guitar", "strings", "brass_wind", "pad", "lead", "vocal", "fx", "drum_loop", "music_loop",
               "song")

# Below this an estimate is shown as uncertain (greyed, with "?"), never hidden.
LOW_CONFIDENCE = 0.5


@dataclass(frozen=True)
class Estimate:
    """What the heads say about one track.

    ``key`` is an :mod:`engine.keys` index (0..23) or None for "no key"; ``bpm`` is None
    for "no tempo"; ``type`` is one of :data:`SOUND_TYPES`. Each confidence lies in [0, 1]
    and is the head's probability for what it says (for the BPM, the probability mass
    within 4 % of it).
    """

    key: int | None
    key_confidence: float
    bpm: float | None
    bpm_confidence: float
    type: str
    type_confidence: float

    def to_dict(self) -> dict[str, Any]:
        """The fields of ``loev analyze --json`` (docs/DESIGN.md section 6), path excepted."""
        return {"key": None if self.key is None else keys.key_name(self.key),
                "camelot": None if self.key is None else keys.camelot(self.key),
                "key_confidence": round(float(self.key_confidence), 4),
                "bpm": None if self.bpm is None else round(float(self.bpm), 2),
                "bpm_confidence": round(float(self.bpm_confidence), 4),
                "type": self.type,
                "type_confidence": round(float(self.type_confidence), 4)}
