"""The app's Qt-free side: folder list, aspect weights, errors crossing the process pipe."""
from __future__ import annotations

import pytest

from app.backend import Backend
from engine.session import blend_weights
from app.embed_service import _pack, _rebuild
from engine.errors import CheckpointError, DecodeError, LibraryError


def test_folders_are_remembered_in_order_and_checked(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    backend = Backend(tmp_path / "lib")
    assert backend.folders() == []
    backend.add_folder(tmp_path / "b")
    backend.add_folder(tmp_path / "a")
    backend.add_folder(tmp_path / "b")  # twice: listed once
    assert Backend(tmp_path / "lib").folders() == [str(tmp_path / "b"), str(tmp_path / "a")]
    with pytest.raises(LibraryError, match="not a folder"):
        backend.add_folder(tmp_path / "missing")
    assert backend.tracks() == []  # no catalogue yet: nothing, and nothing created


def test_scan_without_folders_says_what_to_do(tmp_path):
    with pytest.raises(LibraryError, match="add a folder first"):
        Backend(tmp_path / "lib").scan()


def test_missing_checkpoint_is_one_clear_error(tmp_path):
    (tmp_path / "music").mkdir()
    backend = Backend(tmp_path / "lib", tmp_path / "nope.safetensors")
    backend.add_folder(tmp_path / "music")
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        backend.scan()


def test_aspect_dials_become_normalised_weights():
    assert blend_weights({"key": 50, "tempo": 0, "vibe": 150}) == {"key": 0.25, "vibe": 0.75}
    with pytest.raises(ValueError, match="dial"):
        blend_weights({"key": 0, "tempo": 0, "vibe": 0})


def test_errors_cross_the_pipe_as_their_own_class():
    try:
        raise DecodeError("/x/y.wav", "truncated")
    except DecodeError as e:
        back = _rebuild(_pack(e))
    assert isinstance(back, DecodeError)
    assert (back.path, back.reason, str(back)) == ("/x/y.wav", "truncated", "/x/y.wav: truncated")

    class Odd(Exception):
        pass

    try:
        raise Odd("strange")
    except Odd as e:
        back = _rebuild(_pack(e))
    assert isinstance(back, RuntimeError) and "strange" in str(back)
