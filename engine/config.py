"""Frozen configuration dataclasses: the single description of a frontend and a network.

A checkpoint stores ``ModelConfig.to_dict()`` as JSON in its safetensors metadata, and
``ModelConfig.from_dict`` rebuilds it (docs/DESIGN.md section 4). Profiles are data: a table of
``ProfileConfig`` values, not code paths.
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
    # Each chunk's peak brought to this level (dBFS) before its spectra (see
    # engine.model.stft.peak_gain), so that a file's level is not part of its embedding;
    # None (older checkpoints): the chunk as it is.
    peak_db: float | None = None

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
    """Everything needed to rebuild a network and its frontend (docs/DESIGN.md section 2)."""

    method: str = "loev++"
    variants: tuple[str, ...] = VARIANTS
    profile: ProfileConfig = field(default_factory=lambda: PROFILES["tiny"])
    frontend: FrontendConfig = field(default_factory=FrontendConfig)
    # "learned": every subspace is a copy of the later half of stage 4 (the paper).
    # "structured": the pitch and tempo subspaces are musically structured branches
    # (engine/model/branches.py) fed from the input spectrum; the invariant one stays learned.
    branches: str = "learned"
    # The invariant ("vibe") subspace's share given to a parameter-free timbre descriptor
    # (engine/model/branches.py TimbreDescriptor), 0 = none (checkpoints made before it).
    timbre_share: float = 0.0
    # The vibe subspace's share given to a learned timbre projector over pooled log-mel
    # statistics (TimbreProjector, trained by ``loev-train projector``), 0 = none.
    timbre_learned_share: float = 0.0
    # The tempo branch's share given to its parameter-free onset autocorrelation channel;
    # 0 = every channel weighs the same (checkpoints made before it).
    tempo_plain_share: float = 0.0
    # The tempo subspace's share given to a learned tempo projector over the tempo branch
    # (TempoProjector, trained by ``loev-train projector --space tempo``), 0 = none.
    tempo_learned_share: float = 0.0
    # The tempo projector also reads the tempo branch's onset periodicity (finer, shorter
    # lags per onset band); False in checkpoints made before it.
    tempo_projector_onsets: bool = False
    # ... and its onset tempogram (Fourier magnitudes per onset band); False before it.
    tempo_projector_tempogram: bool = False
    # ... and gives its cosine-softmax's posterior over BPM bins, embedded by their
    # closeness, instead of its features; False before it.
    tempo_projector_posterior: bool = False
    # The pitch subspace's share given to a learned key projector over the pitch branch
    # (KeyProjector, trained by ``loev-train projector --space key``), 0 = none.
    pitch_learned_share: float = 0.0
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
        for name in _SHARE_FIELDS:
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must lie in [0, 1), got {getattr(self, name)}")
        if self.timbre_share and not self.branched:
            raise ValueError("a timbre descriptor needs a branched method (loev++ or mule++)")
        if self.timbre_learned_share and not self.timbre_share:
            raise ValueError("a learned timbre projector needs the timbre descriptor (timbre_share > 0)")
        if self.timbre_share + self.timbre_learned_share >= 1.0:
            raise ValueError(f"timbre_share + timbre_learned_share must stay below 1, got "
                             f"{self.timbre_share} + {self.timbre_learned_share}")
        if self.tempo_plain_share and self.branches != "structured":
            raise ValueError("tempo_plain_share needs structured branches")
        if self.tempo_learned_share and (self.branches != "structured" or "tempo" not in self.subspaces):
            raise ValueError("a learned tempo projector needs the structured tempo branch")
        if self.pitch_learned_share and (self.branches != "structured" or "pitch" not in self.subspaces):
            raise ValueError("a learned key projector needs the structured pitch branch")
        for name in _FLAG_FIELDS:
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be true or false, got {getattr(self, name)!r}")
            if getattr(self, name) and not self.tempo_learned_share:
                raise ValueError(f"{name} needs a learned tempo projector (tempo_learned_share > 0)")
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
        d = dataclasses.asdict(self)
        if d["frontend"]["peak_db"] is None:  # absent, as in the files written before it
            del d["frontend"]["peak_db"]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        """Rebuild a config from ``to_dict()``'s JSON, checking every type and range first.

        Raises
        ------
        ValueError
            A field of the wrong type, out of range, or unknown (see :func:`check_config_dict`).
        """
        check_config_dict(d)
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
            timbre_share=float(d.get("timbre_share", 0.0)),
            timbre_learned_share=float(d.get("timbre_learned_share", 0.0)),
            tempo_plain_share=float(d.get("tempo_plain_share", 0.0)),
            tempo_learned_share=float(d.get("tempo_learned_share", 0.0)),
            tempo_projector_onsets=d.get("tempo_projector_onsets", False),
            tempo_projector_tempogram=d.get("tempo_projector_tempogram", False),
            tempo_projector_posterior=d.get("tempo_projector_posterior", False),
            pitch_learned_share=float(d.get("pitch_learned_share", 0.0)),
            provenance=dict(d.get("provenance", {})),
        )


# What a config read from a file may hold: (type, lowest, highest) per field, or a tuple
# spec (element type, lowest, highest, fewest items, most items). The ranges are wide
# enough for any model this program trains (the paper profile included) and bound what
# building a network from an untrusted file can cost before its tensors are checked.
_FRONTEND_FIELDS: dict[str, tuple[Any, ...]] = {
    "kind": (str,),
    "sample_rate": (int, 8_000, 96_000),
    "n_fft": (int, 16, 16_384),
    "win_length": (int, 1, 16_384),
    "hop_length": (int, 1, 16_384),
    "n_mels": (int, 1, 512),
    "f_min": (float, 0.0, 48_000.0),
    "f_max": (float, 0.0, 48_000.0),
    "chunk_seconds": (float, 0.1, 60.0),
    "peak_db": (float, -60.0, 0.0),
}
_PROFILE_FIELDS: dict[str, tuple[Any, ...]] = {
    "name": (str,),
    "stem_channels": ((int, 1, 4096, 1, 8),),
    "channels": ((int, 1, 8192, 4, 4),),
    "depths": ((int, 0, 64, 4, 4),),
    "fast_ratio": (int, 1, 64),
    "group_size": (int, 1, 8192),
    "bottle_ratio": (float, 1e-3, 16.0),
    "se_ratio": (float, 1e-3, 16.0),
    "alpha": (float, 0.0, 16.0),
    "drop_path_rate": (float, 0.0, 0.99),
    "time_alpha": (int, 1, 64),
    "proj_hidden": (int, 1, 16_384),
    "proj_dim": (int, 1, 8192),
}
_TOP_FIELDS = {"method", "variants", "profile", "frontend", "branches", "provenance", "timbre_share",
               "timbre_learned_share", "tempo_plain_share", "tempo_learned_share", "tempo_projector_onsets",
               "tempo_projector_tempogram", "tempo_projector_posterior", "pitch_learned_share"}
# Numbers in [0, 1), absent in older files.
_SHARE_FIELDS = ("timbre_share", "timbre_learned_share", "tempo_plain_share", "tempo_learned_share",
                 "pitch_learned_share")
# True or false, absent (false) in older files.
_FLAG_FIELDS = ("tempo_projector_onsets", "tempo_projector_tempogram", "tempo_projector_posterior")
_MAX_NAME = 200


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return (_is_int(v) or isinstance(v, float)) and v == v and v not in (float("inf"), float("-inf"))


def _check_field(where: str, value: Any, spec: tuple[Any, ...]) -> None:
    kind = spec[0]
    if isinstance(kind, tuple):  # a list of numbers
        elem, lo, hi, fewest, most = kind
        if not isinstance(value, (list, tuple)) or not fewest <= len(value) <= most:
            raise ValueError(f"{where} must be a list of {fewest}..{most} integers, got "
                             f"{_show(value)}")
        for i, v in enumerate(value):
            _check_field(f"{where}[{i}]", v, (elem, lo, hi))
        return
    if kind is str:
        if not isinstance(value, str) or len(value) > _MAX_NAME:
            raise ValueError(f"{where} must be a string (at most {_MAX_NAME} characters), "
                             f"got {_show(value)}")
        return
    ok = _is_int(value) if kind is int else _is_number(value)
    if not ok:
        raise ValueError(f"{where} must be {'an integer' if kind is int else 'a number'}, "
                         f"got {_show(value)}")
    lo, hi = spec[1], spec[2]
    if not lo <= value <= hi:
        raise ValueError(f"{where} must lie in [{lo:g}, {hi:g}], got {value!r}")


def _show(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 40 else text[:40] + '...'}"


def _check_section(where: str, d: Any, fields: dict[str, tuple[Any, ...]],
                   required: tuple[str, ...]) -> None:
    if not isinstance(d, dict):
        raise ValueError(f"{where} must be an object, got {_show(d)}")
    unknown = sorted(str(k) for k in d if k not in fields)
    if unknown:
        raise ValueError(f"{where} has unknown field(s) {', '.join(unknown)[:100]}")
    missing = [k for k in required if k not in d]
    if missing:
        raise ValueError(f"{where} lacks {', '.join(missing)}")
    for key, value in d.items():
        _check_field(f"{where}.{key}", value, fields[key])


def check_config_dict(d: Any) -> None:
    """Check a config read from a file (``ModelConfig.to_dict()``'s JSON) before use.

    Types are exact (no string for a number, no list for a count), every number lies in
    a range that bounds the network it describes, and no field is unknown.

    Raises
    ------
    ValueError
        One line naming the field and what is wrong with it.
    """
    if not isinstance(d, dict):
        raise ValueError(f"the config must be an object, got {_show(d)}")
    unknown = sorted(str(k) for k in d if k not in _TOP_FIELDS)
    if unknown:
        raise ValueError(f"config has unknown field(s) {', '.join(unknown)[:100]}")
    if not isinstance(d.get("method"), str):
        raise ValueError(f"config.method must be a string, got {_show(d.get('method'))}")
    variants = d.get("variants", [])
    if not isinstance(variants, (list, tuple)) or not all(isinstance(v, str) for v in variants) \
            or len(variants) > len(VARIANTS):
        raise ValueError(f"config.variants must be a list of names, got {_show(variants)}")
    if not isinstance(d.get("branches", "learned"), str):
        raise ValueError(f"config.branches must be a string, got {_show(d.get('branches'))}")
    if not isinstance(d.get("provenance", {}), dict):
        raise ValueError(f"config.provenance must be an object, got {_show(d.get('provenance'))}")
    for name in _FLAG_FIELDS:
        if not isinstance(d.get(name, False), bool):
            raise ValueError(f"config.{name} must be true or false, got {_show(d.get(name))}")
    for name in _SHARE_FIELDS:
        v = d.get(name, 0.0)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= v < 1.0:
            raise ValueError(f"config.{name} must be a number in [0, 1), got {_show(v)}")
    _check_section("config.profile", d.get("profile"), _PROFILE_FIELDS, ("name",))
    frontend = d.get("frontend", {})
    _check_section("config.frontend", frontend, _FRONTEND_FIELDS, ())
    fe = {**dataclasses.asdict(FrontendConfig()), **frontend}
    if fe["win_length"] > fe["n_fft"]:
        raise ValueError(f"config.frontend.win_length ({fe['win_length']}) exceeds n_fft "
                         f"({fe['n_fft']})")
    if not fe["f_min"] < fe["f_max"] <= fe["sample_rate"] / 2:
        raise ValueError(f"config.frontend needs f_min < f_max <= sample_rate / 2, got "
                         f"{fe['f_min']}, {fe['f_max']}, {fe['sample_rate']}")
    if int(round(fe["sample_rate"] * fe["chunk_seconds"])) // fe["hop_length"] < 1:
        raise ValueError(f"config.frontend.hop_length ({fe['hop_length']}) is longer than "
                         "a chunk")


def make_config(profile: str = "tiny", method: str = "loev++", variants: str = "psts",
                frontend: str = "paper", branches: str = "learned", timbre_share: float = 0.0,
                tempo_plain_share: float = 0.0, peak_db: float | None = None) -> ModelConfig:
    """Build a config from the short names used on the command line."""
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; expected one of {tuple(PROFILES)}")
    if variants not in VARIANT_SETS:
        raise ValueError(f"unknown variant set {variants!r}; expected one of {tuple(VARIANT_SETS)}")
    return ModelConfig(method=method, variants=VARIANT_SETS[variants],
                       profile=PROFILES[profile], frontend=FrontendConfig(kind=frontend, peak_db=peak_db),
                       branches=branches,
                       timbre_share=timbre_share, tempo_plain_share=tempo_plain_share)
