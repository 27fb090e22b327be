"""engine.session.Session, the one door of the CLI and the app: same question, same answer."""
from __future__ import annotations

import json
import os

import pytest

import engine.model.match
import engine.session
from app.backend import Backend
from app.embed_service import HANDLERS
from engine.cli import main
from engine.library.catalogue import Library
from engine.session import Session
from tests.fixtures_audio import FakeEmbedder, clicks, tone, write
from tests.test_match import FakeEmbedder as AudioFeatureEmbedder
from tests.test_match import chord

SR = 16000


def test_forget_folder_leaves_a_sibling_whose_name_starts_the_same(tmp_path):
    b, bc = tmp_path / "a" / "b", tmp_path / "a" / "bc"
    write(b / "x.wav", tone(440.0, 1.0))
    write(b / "sub" / "z.wav", clicks(100, 1.5))
    write(bc / "y.wav", tone(330.0, 1.0))
    session = Session(tmp_path / "lib", embedder=FakeEmbedder())
    session.add_folder(b)
    session.add_folder(bc)
    assert session.scan().added == 3
    with Library(tmp_path / "lib") as lib:  # folders a walk could not read
        lib.set_problems([(str(b / "locked"), "folder", "permission denied"),
                          (str(bc / "locked"), "folder", "permission denied")])

    assert session.forget_folder(str(b)) == 2
    assert session.folders() == [str(bc)]
    assert sorted(p for p, *_ in session.tracks()) == [str(bc / "locked"),
                                                        os.path.realpath(bc / "y.wav")]
    info = session.info()
    assert info["tracks"] == 1 and info["index"]["up_to_date"]
    assert session.query(bc / "y.wav", by="key", k=5).neighbours == []  # nobody left but it


class InProcessChild:
    """The app's RemoteEmbedder with its child's request handlers run in this process:
    what the window gets for a match is what the embedding process computes."""

    def __init__(self, embedder) -> None:
        self.child = Session(embedder=embedder)
        self.subspaces = embedder.subspaces

    def session_call(self, op, *args):
        return HANDLERS[op](self.child, *args)


@pytest.mark.usefixtures("one_torch_thread")
def test_cli_and_app_give_the_same_match(tmp_path, monkeypatch, capsys):
    # Files longer than the match excerpt (scaled down from 30 s), with ends unlike their
    # middles: a door that read more or less than the other would see other audio.
    monkeypatch.setattr(engine.model.match, "MATCH_SECONDS", 4.0)
    seconds = 7.0
    query = chord(60, seconds) + 0.5 * clicks(120, seconds)
    query[: SR // 2] = chord(55, 0.5)
    result = chord(63, seconds) + 0.5 * clicks(100, seconds)
    result[-SR // 2:] = clicks(150, 0.5)
    q, r = write(tmp_path / "q.wav", query), write(tmp_path / "r.wav", result)

    monkeypatch.setattr(engine.session, "_local_embedder", lambda ckpt: AudioFeatureEmbedder())
    assert main(["match", str(q), str(r), "--json"]) == 0
    from_cli = json.loads(capsys.readouterr().out)
    from_app = Backend(tmp_path / "lib", embedder=InProcessChild(AudioFeatureEmbedder())).match(
        str(q), str(r))
    assert from_app.keys() == from_cli.keys()
    for key, value in from_cli.items():
        assert from_app[key] == pytest.approx(value, abs=1e-9), key
    assert from_cli["shift"] == pytest.approx(-3, abs=1)  # and it is a sensible answer

