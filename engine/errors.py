"""The engine's exception hierarchy: one clear line for the user, never a traceback."""
from __future__ import annotations


class LoevError(Exception):
    """Base class of every error the engine reports to a user."""


class DecodeError(LoevError):
    """An audio file could not be read: carries the path and the reason."""

    def __init__(self, path: object, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class CheckpointError(LoevError):
    """A checkpoint is missing, unsafe (pickle) or malformed."""


class LibraryError(LoevError):
    """The library on disk is missing, locked, or was built with another model."""


class EmbedderError(LoevError):
    """The embedder itself failed (its process died or could not start), not the file it
    was given: a scan stops with this one error rather than record good files as bad."""


class AudioDeviceError(LoevError):
    """No usable audio output device."""
