"""Find shipped resources from a checkout, an installed wheel, or a PyInstaller bundle."""
from __future__ import annotations

import sys
from pathlib import Path

DEFAULT_CHECKPOINT_NAME = "loev-default.safetensors"


def resources_dir() -> Path:
    """The folder holding ``resources/`` data in this installation."""
    frozen = getattr(sys, "_MEIPASS", None)
    if frozen:  # PyInstaller one-folder bundle: data is collected under resources/
        return Path(frozen) / "resources"
    import resources

    return Path(resources.__file__).resolve().parent


def resource_path(name: str) -> Path:
    return resources_dir() / name


def default_checkpoint() -> Path:
    """The checkpoint the app and ``loev`` use when the user has not chosen another."""
    return resource_path(DEFAULT_CHECKPOINT_NAME)
