"""Frozen configuration dataclasses: the single description of a frontend and a network.

A checkpoint stores ``ModelConfig.to_dict()`` as JSON in its safetensors metadata, and
``ModelConfig.from_dict`` rebuilds it (DESIGN.md section 4). Profiles are data: a table of
``ProfileConfig`` values, not code paths (STYLE.md habit 2).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

SAMPLE_RATE = 16_000
CHUNK_SECONDS = 3.0
CHUNK_SAMPLES = int(SAMPLE_RATE * CHUNK_SECONDS)

METHODS = ("mule", "mule++", "loev", "loev++")
# Variant augmentations in a fixed order: index k of a tracking vector t is VARIANTS[k]
# (only those present in a config, in this order).
VARIANTS = ("pitch", "tempo")
VARIANT_SETS = {"b": (), "ps": ("pitch",), "ts": ("tempo",), "psts": ("pitch", "tempo")}

# What a user may ask of a transform (audition, render, curves, match, query, CLI): a
# pitch shift in semitones and a tempo ratio (> 1 faster). One definition for all of them.
PITCH_RANGE = (-12.0, 12.0)
TEMPO_RANGE = (0.5, 2.0)


def check_semitones(semitones: float) -> float:
    """``semitones`` as a float, or ValueError naming the value and PITCH_RANGE."""
    s = float(semitones)
    if not PITCH_RANGE[0] <= s <= PITCH_RANGE[1]:
        raise ValueError(f"pitch shift must lie in [{PITCH_RANGE[0]:g}, {PITCH_RANGE[1]:g}] "
                         f"semitones, got {semitones}")
    return s


def check_tempo(tempo: float) -> float:
    """``tempo`` as a float, or ValueError naming the value and TEMPO_RANGE."""
    t = float(tempo)
    if not TEMPO_RANGE[0] <= t <= TEMPO_RANGE[1]:
        raise ValueError(f"tempo ratio must lie in [{TEMPO_RANGE[0]:g}, {TEMPO_RANGE[1]:g}], "
                         f"got {tempo}")
    return t


@dataclass(frozen=True)
class FrontendConfig:
    """Spectrogram frontend. ``kind="paper"`` is MULE's log-mel (paper Section II)."""

    kind: str = "paper"
    sample_rate: int = SAMPLE_RATE
    n_fft: int = 2048
    win_length: int = 400
    hop_length: int = 160
    n_mels: int = 96
    f_min: float = 0.0
    f_max: float = 8000.0
    chunk_seconds: float = CHUNK_SECONDS

    @property
    def chunk_samples(self) -> int:
        return int(round(self.sample_rate * self.chunk_seconds))

    @property
    def n_frames(self) -> int:
        return self.chunk_samples // self.hop_length


@dataclass(frozen=True)
class ProfileConfig:
    """Width and depth of SF-NFNet-F0 (MULE's reference model scaled down)."""

    name: str
    stem_channels: tuple[int, ...] = (16, 32, 64, 128)
    channels: tuple[int, int, int, int] = (256, 512, 1536, 1536)
    depths: tuple[int, int, int, int] = (1, 2, 6, 3)
    fast_ratio: int = 8  # fast pathway has channels // fast_ratio
    group_size: int = 128
    bottle_ratio: float = 0.5
    se_ratio: float = 0.5
    alpha: float = 0.2
    drop_path_rate: float = 0.1
    time_alpha: int = 4  # the slow pathway sees time_alpha x fewer frames
    proj_hidden: int = 512
    proj_dim: int = 128


PROFILES: dict[str, ProfileConfig] = {
    "paper": ProfileConfig(name="paper"),
    "small": ProfileConfig(
        name="small",
        stem_channels=(8, 16, 32, 64),
        channels=(64, 128, 384, 384),
        depths=(1, 1, 3, 2),
        group_size=32,
        proj_hidden=256,
    ),
    "tiny": ProfileConfig(
        name="tiny",
        stem_channels=(8, 16),
        channels=(32, 64, 128, 128),
        depths=(1, 1, 1, 2),
        group_size=16,
        drop_path_rate=0.0,
        proj_hidden=128,
        proj_dim=64,
    ),
}


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild a network and its frontend (DESIGN.md section 2)."""

    method: str = "loev++"
    variants: tuple[str, ...] = VARIANTS
    profile: ProfileConfig = field(default_factory=lambda: PROFILES["tiny"])
    frontend: FrontendConfig = field(default_factory=FrontendConfig)
    # "learned": every subspace is a copy of the later half of stage 4 (the paper).
    # "structured": the pitch and tempo subspaces are musically structured branches
    # (engine/model/branches.py) fed from the input spectrum; the invariant one stays learned.
    branches: str = "learned"
    provenance: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r}; expected one of {METHODS}")
        bad = [v for v in self.variants if v not in VARIANTS]
        if bad:
            raise ValueError(f"unknown variant(s) {bad!r}; expected some of {VARIANTS}")
        if self.branches not in ("learned", "structured"):
            raise ValueError(f"unknown branches {self.branches!r}; expected 'learned' or 'structured'")
        if self.branches == "structured" and not self.method.endswith("++"):
            raise ValueError(f"structured branches need a branched method (loev++ or mule++), not {self.method!r}")
        ordered = tuple(v for v in VARIANTS if v in self.variants)
        object.__setattr__(self, "variants", ordered)

    @property
    def heads(self) -> tuple[str, ...]:
        """Projection heads: the all-invariant one, then one per variant augmentation."""
        if self.method == "mule":
            return ("invariant",)
        return ("invariant",) + self.variants

    @property
    def branched(self) -> bool:
        """LOEV++ / MULE++ duplicate the later half of stage 4 per head."""
        return self.method.endswith("++")

    @property
    def subspaces(self) -> tuple[str, ...]:
        """Names of the embedding subspaces the engine can query."""
        return self.heads if self.branched else ("all",)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        prof = dict(d["profile"])
        for k, v in prof.items():
            if isinstance(v, list):
                prof[k] = tuple(v)
        return cls(
            method=d["method"],
            variants=tuple(d.get("variants", ())),
            profile=ProfileConfig(**prof),
            frontend=FrontendConfig(**d.get("frontend", {})),
            branches=d.get("branches", "learned"),
            provenance=dict(d.get("provenance", {})),
        )


def make_config(profile: str = "tiny", method: str = "loev++", variants: str = "psts",
                frontend: str = "paper", branches: str = "learned") -> ModelConfig:
    """Build a config from the short names used on the command line."""
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; expected one of {tuple(PROFILES)}")
    if variants not in VARIANT_SETS:
        raise ValueError(f"unknown variant set {variants!r}; expected one of {tuple(VARIANT_SETS)}")
    return ModelConfig(method=method, variants=VARIANT_SETS[variants],
                       profile=PROFILES[profile], frontend=FrontendConfig(kind=frontend), branches=branches)
