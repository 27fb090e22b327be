"""A query by a file from outside the library (dropped on the window) and the filter box's
debounce (pytest-qt, offscreen).

The outside file has no stored estimate: the window asks ``Session.analyze`` for one on the
query's worker thread (monkeypatched here to a known estimate) and uses it as a stored one:
the "vs query" offsets, "Plays at", and the project sync of its audition.
"""
from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import threading

import numpy as np
import pytest
import soundfile as sf
from PySide6.QtCore import QMimeData, QPointF, Qt, QUrl
from PySide6.QtGui import QDropEvent

from app.backend import estimate_from_row
from engine import keys
from engine.errors import LibraryError
from engine.library.query import Neighbour as EngineNeighbour
from engine.library.query import QueryResult as EngineResult
from engine.model.heads import Estimate
from tests.test_app_keys import library, make_window, shown  # noqa: F401 - fixture

K = keys.parse_key
OUTSIDE = Estimate(key=K("A minor"), key_confidence=0.875, bpm=124.0, bpm_confidence=0.75,
                   type="drum_loop", type_confidence=0.5)


@pytest.fixture
def window(qtbot, tmp_path, monkeypatch, library):  # noqa: F811 - the fixture above
    win = make_window(qtbot, tmp_path, monkeypatch, library)
    yield win
    win.close()


@pytest.fixture
def outside(tmp_path):
    """An audio file in no library folder."""
    path = tmp_path / "Downloads" / "dropped loop.wav"
    path.parent.mkdir()
    sr = 22050
    sf.write(str(path), (0.2 * np.sin(2 * np.pi * 330 * np.arange(sr // 2) / sr)).astype(
        np.float32), sr)
    return os.path.realpath(path)


def drop(window, path):
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(path)])
    event = QDropEvent(QPointF(10, 10), Qt.DropAction.CopyAction, mime,
                       Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier)
    window.dropEvent(event)


def fake_query(window, library, monkeypatch):
    paths, _ = library
    found = [EngineNeighbour(paths["d bass.wav"], 0.1), EngineNeighbour(paths["em pad.wav"], 0.2)]
    monkeypatch.setattr(window.backend.session, "query",
                        lambda path, by="vibe", k=10, **kw: EngineResult(path, found))


def test_a_dropped_outside_file_is_analysed_for_offsets_and_the_project_sync(
        qtbot, window, library, outside, monkeypatch):
    fake_query(window, library, monkeypatch)
    asked = []

    def analyze(paths):
        asked.append((list(paths), threading.current_thread() is threading.main_thread()))
        return [{"path": p, **OUTSIDE.to_dict()} if p == outside else
                {"path": p, "error": "not expected"} for p in paths]

    monkeypatch.setattr(window.backend.session, "analyze", analyze)
    window.set_project(K("D major"), 124.8)
    with qtbot.waitSignal(window.results_ready, timeout=5000):
        drop(window, outside)
    # only the file without a stored estimate is analysed, and not on the GUI thread
    assert asked == [([outside], False)]
    model = window.results_model
    assert model.query == outside
    # A minor 124 BPM: D major lies 2 semitones above its relative, 120 BPM is x0.97
    assert model.index(1, model.OFFSET).data() == "+2 st, x0.97"
    assert model.index(2, model.OFFSET).data() == "-5 st"        # E minor, no tempo
    assert model.index(0, model.PLAYS_AT).data() == "+2 st, x1.01"
    # auditioning the dropped file plays it in the project, as a library track would be
    player = window.player
    with qtbot.waitSignal(window.audition_loaded, timeout=5000):
        window.audition_path(outside)
    assert player.pitch == 2 and player.tempo == pytest.approx(124.8 / 124.0)
    # a reload of the library's estimates keeps the analysed one
    with qtbot.waitSignal(window.tracks_loaded, timeout=5000):
        window.reload_tracks()
    assert model.index(1, model.OFFSET).data() == "+2 st, x0.97"


def test_an_outside_file_auditioned_before_its_estimate_is_synced_when_it_comes(
        qtbot, window, library, outside, monkeypatch):
    fake_query(window, library, monkeypatch)
    monkeypatch.setattr(window.backend.session, "analyze",
                        lambda paths: [{"path": p, **OUTSIDE.to_dict()} for p in paths])
    window.set_project(K("D major"), None)
    with qtbot.waitSignal(window.audition_loaded, timeout=5000):
        window.audition_path(outside)
    assert window.player.pitch == 0  # nothing known of it yet
    with qtbot.waitSignal(window.results_ready, timeout=5000):
        drop(window, outside)
    assert window.player.pitch == 2


@pytest.mark.parametrize("failure", ["no heads", "unreadable"])
def test_an_analyze_error_leaves_the_query_without_offsets(qtbot, window, library, outside,
                                                           monkeypatch, failure):
    fake_query(window, library, monkeypatch)

    def analyze(paths):
        if failure == "no heads":
            raise LibraryError("checkpoint x has no key/BPM/type heads")
        return [{"path": p, "error": "cannot decode"} for p in paths]

    monkeypatch.setattr(window.backend.session, "analyze", analyze)
    window.set_project(K("D major"), 124.8)
    with qtbot.waitSignal(window.results_ready, timeout=5000):
        drop(window, outside)
    model = window.results_model
    assert [n.name for n in model.neighbours()] == ["d bass.wav", "em pad.wav"]
    assert model.index(1, model.OFFSET).data() == ""
    assert model.index(0, model.PLAYS_AT).data() == "as is"
    assert outside not in model.estimates


def test_estimate_from_row_reads_back_to_dict():
    for e in (OUTSIDE, Estimate(None, 0.25, None, 0.5, "fx", 1.0)):
        assert estimate_from_row({"path": "x", **e.to_dict()}) == e
    with pytest.raises(ValueError):
        estimate_from_row({**OUTSIDE.to_dict(), "key": "H major"})


def test_typing_filters_once_and_enter_applies_at_once(qtbot, window, monkeypatch):
    passes = []
    set_filter_text = window.library_proxy.set_filter_text
    monkeypatch.setattr(window.library_proxy, "set_filter_text",
                        lambda text: passes.append(text) or set_filter_text(text))
    box = window.filter_edit
    qtbot.keyClicks(box, "kick")               # four edits
    assert passes == [] and window._filter_timer.isActive()
    window.flush_filter()                      # what the timer does once typing pauses
    assert passes == ["kick"] and not window._filter_timer.isActive()
    assert shown(window) == ["c kick.wav"]
    # the timer itself fires once for a burst of edits
    box.clear()
    passes.clear()
    qtbot.keyClicks(box, "bass")
    qtbot.waitUntil(lambda: bool(passes), timeout=5000)
    assert passes == ["bass"] and not window._filter_timer.isActive()
    # Enter does not wait
    passes.clear()
    qtbot.keyClicks(box, " key:10B")
    assert passes == []
    qtbot.keyClick(box, Qt.Key.Key_Return)
    assert passes == ["bass key:10B"] and not window._filter_timer.isActive()
    assert shown(window) == ["d bass.wav"]
    # clearing the box shows everything at once
    box.clear()
    assert passes[-1] == "" and len(shown(window)) == window.library_model.rowCount()


def test_the_embedding_process_is_not_asked_twice_for_the_same_file(tmp_path, outside):
    from app.embed_service import RemoteEmbedder

    class Service:
        calls = []

        def call(self, op, *args):
            self.calls.append((op, *args))
            return {"pitch": np.full(4, float(len(self.calls)), np.float32)}

    embedder = RemoteEmbedder(None, service=Service())
    first = embedder.embed_file(outside)       # the query's
    first["pitch"][:] = -1                     # the caller's copy is its own
    again = embedder.embed_file(outside)       # the estimate's: the same file
    assert len(Service.calls) == 1 and again["pitch"][0] == 1.0
    sf.write(outside, np.zeros(100, np.float32), 22050)  # changed: embedded anew
    assert embedder.embed_file(outside)["pitch"][0] == 2.0 and len(Service.calls) == 2
