"""Key, BPM and sound type in the app (pytest-qt, offscreen): the table's columns and their
sort order, low-confidence estimates, the key notation, the filter syntax in the box,
"Find compatible keys", and the project key/BPM applied to the audition and the result rows.

The estimates are set by hand on a monkeypatched session (the heads are tested elsewhere):
what is checked here is what the window makes of them.
"""
from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from PySide6.QtCore import Qt

from app.models import PATH_ROLE, LibraryTableModel, ResultsModel
from app.settings import SettingsDialog
from engine import keys
from engine.library.query import Neighbour as EngineNeighbour
from engine.library.query import QueryResult as EngineResult
from engine.model.heads import Estimate
from engine.session import Session
from tests.test_app_ux import make_window as ux_window

K = keys.parse_key
KEY, BPM, TYPE = LibraryTableModel.KEY, LibraryTableModel.BPM, LibraryTableModel.TYPE

# name -> (key, bpm, type, confidence); None: not analysed
TRACKS = {
    "am loop.wav": ("A minor", 124.0, "drum_loop", 0.9),
    "em pad.wav": ("E minor", None, "pad", 0.9),
    "abm keys.wav": ("Ab minor", 90.0, "keys", 0.9),
    "d bass.wav": ("D major", 120.0, "bass", 0.9),
    "c kick.wav": ("C major", 100.0, "kick", 0.3),       # low confidence
    "noise.wav": (None, None, "fx", 0.8),                 # no key, no tempo
    "unknown.wav": None,                                  # not analysed yet
}


def estimate(key, bpm, type_, conf):
    return Estimate(key=None if key is None else K(key), key_confidence=conf, bpm=bpm,
                    bpm_confidence=conf, type=type_, type_confidence=conf)


@pytest.fixture
def library(tmp_path):
    folder = tmp_path / "Samples"
    folder.mkdir()
    sr = 22050
    t = np.arange(sr // 2) / sr
    paths = {}
    for name in TRACKS:
        path = folder / name
        sf.write(str(path), (0.2 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), sr)
        paths[name] = os.path.realpath(path)
    estimates = {paths[n]: estimate(*v) for n, v in TRACKS.items() if v is not None}
    return paths, estimates


def make_window(qtbot, tmp_path, monkeypatch, library, settings=None):
    """The app's window (tests/test_app_ux.make_window) on a library whose tracks and
    estimates are ``library``'s, set on the session before the window first reads them."""
    paths, estimates = library
    monkeypatch.setenv("LOEV_LOG_DIR", str(tmp_path / "logs"))
    rows = [(p, 0.5, "ok", None) for p in paths.values()]
    monkeypatch.setattr(Session, "tracks", lambda self: rows)
    monkeypatch.setattr(Session, "estimates", lambda self: dict(estimates))
    win = ux_window(qtbot, tmp_path, library=tmp_path / "lib", settings=settings)
    qtbot.waitUntil(lambda: win.library_model.rowCount() == len(TRACKS), timeout=5000)
    return win


@pytest.fixture
def window(qtbot, tmp_path, monkeypatch, library):
    win = make_window(qtbot, tmp_path, monkeypatch, library)
    yield win
    win.close()


def cell(win, name, column, role=Qt.ItemDataRole.DisplayRole):
    proxy = win.library_proxy
    for row in range(proxy.rowCount()):
        if Path(proxy.index(row, 0).data(PATH_ROLE)).name == name:
            return proxy.index(row, column).data(role)
    raise AssertionError(f"{name} not shown")


def shown(win):
    proxy = win.library_proxy
    return [Path(proxy.path_at(r)).name for r in range(proxy.rowCount())]


def test_columns_are_filled_from_the_estimates(window):
    assert LibraryTableModel.COLUMNS[KEY:TYPE + 1] == ("Key", "BPM", "Type")
    header = [window.library_proxy.headerData(c, Qt.Orientation.Horizontal) for c in range(7)]
    assert header[KEY:TYPE + 1] == ["Key", "BPM", "Type"]
    assert [cell(window, "am loop.wav", c) for c in (KEY, BPM, TYPE)] == ["8A", "124.0", "drum loop"]
    assert [cell(window, "em pad.wav", c) for c in (KEY, BPM, TYPE)] == ["9A", "–", "pad"]
    assert [cell(window, "noise.wav", c) for c in (KEY, BPM, TYPE)] == ["–", "–", "fx"]
    assert [cell(window, "unknown.wav", c) for c in (KEY, BPM, TYPE)] == [None, None, None]
    assert "A minor" in cell(window, "am loop.wav", KEY, Qt.ItemDataRole.ToolTipRole)


def test_sort_orders_keys_round_the_camelot_wheel_and_bpm_as_numbers(window):
    view = window.library_view
    view.sortByColumn(KEY, Qt.SortOrder.AscendingOrder)
    # 1A Ab minor, 8A A minor, 8B C major, 9A E minor, 10B D major
    assert shown(window) == ["abm keys.wav", "am loop.wav", "c kick.wav", "em pad.wav",
                             "d bass.wav", "noise.wav", "unknown.wav"]
    view.sortByColumn(BPM, Qt.SortOrder.AscendingOrder)
    # numbers, not strings ("100.0" < "120.0" < "124.0" < "90.0" as text); no tempo, then
    # not analysed, last
    assert shown(window)[:4] == ["abm keys.wav", "c kick.wav", "d bass.wav", "am loop.wav"]
    assert shown(window)[-1] == "unknown.wav"
    view.sortByColumn(TYPE, Qt.SortOrder.AscendingOrder)
    # the vocabulary's order: drums first, then instruments, then loops
    assert shown(window)[:5] == ["c kick.wav", "d bass.wav", "abm keys.wav", "em pad.wav",
                                 "noise.wav"]


def test_low_confidence_is_greyed_with_a_question_mark_not_hidden(window):
    assert [cell(window, "c kick.wav", c) for c in (KEY, BPM, TYPE)] == ["8B?", "100.0?", "kick?"]
    grey = cell(window, "c kick.wav", TYPE, Qt.ItemDataRole.ForegroundRole)
    assert grey is not None and grey.color().name() == "#8a8f98"
    assert cell(window, "am loop.wav", TYPE, Qt.ItemDataRole.ForegroundRole) is None
    tip = cell(window, "c kick.wav", KEY, Qt.ItemDataRole.ToolTipRole)
    assert "confidence 0.30" in tip and "low" in tip
    window.filter_edit.setText("type:kick")
    window.flush_filter()
    assert shown(window) == ["c kick.wav"]


def test_notation_switches_live_is_remembered_and_sorts_its_own_wheel(qtbot, tmp_path, monkeypatch,
                                                                       library, window):
    window.set_project(K("A minor"), None)
    window.set_notation("standard")
    assert cell(window, "am loop.wav", KEY) == "Am" and cell(window, "abm keys.wav", KEY) == "Abm"
    assert cell(window, "d bass.wav", KEY) == "D"
    assert window.project_key_combo.currentText() == "Key: Am"  # relabelled, still A minor
    window.set_notation("open_key")
    assert cell(window, "am loop.wav", KEY) == "1m"
    assert window.project_key_combo.currentText() == "Key: 1m"
    window.library_view.sortByColumn(KEY, Qt.SortOrder.AscendingOrder)
    # Open Key's wheel starts at C major / A minor: 1m 1d 2m ... (Ab minor is 6m)
    assert shown(window)[:3] == ["am loop.wav", "c kick.wav", "em pad.wav"]
    window.close()
    again = make_window(qtbot, tmp_path, monkeypatch, library)
    assert cell(again, "am loop.wav", KEY) == "1m"
    assert again.project() == (K("A minor"), None)
    again.close()


def test_settings_dialog_offers_the_notations():
    dialog = SettingsDialog("", "", notation="open_key")
    assert dialog.notation_value() == "open_key"
    dialog.notation_combo.setCurrentIndex(dialog.notation_combo.findData("standard"))
    assert dialog.notation_value() == "standard"
    dialog.deleteLater()


def test_filter_syntax_in_the_box(window):
    box = window.filter_edit
    box.setText("key:8A")
    window.flush_filter()
    assert shown(window) == ["am loop.wav"]
    box.setText("key:8A,9A")
    window.flush_filter()
    assert sorted(shown(window)) == ["am loop.wav", "em pad.wav"]
    box.setText("bpm:100-124")
    window.flush_filter()
    assert sorted(shown(window)) == ["am loop.wav", "c kick.wav", "d bass.wav"]
    box.setText("loop bpm:100-124")
    window.flush_filter()
    assert shown(window) == ["am loop.wav"]
    box.setText("bpm:none type:fx")
    window.flush_filter()
    assert shown(window) == ["noise.wav"]
    assert window.filter_error == ""
    box.setText("bass key:H")  # a word it cannot read is said, the rest filters
    window.flush_filter()
    assert shown(window) == ["d bass.wav"]
    assert "key:H: not a key" in window.filter_error
    assert "key:H" in box.toolTip() and "key:H" in window.statusBar().currentMessage()
    box.setText("")
    assert len(shown(window)) == len(TRACKS) and window.filter_error == ""


def test_find_compatible_keys_shows_its_results_with_offsets(qtbot, window, library, monkeypatch):
    paths, _ = library
    asked = []

    def compatible(path, k=10):
        asked.append((path, k))
        return EngineResult(path, [EngineNeighbour(paths["em pad.wav"], 0.1),
                                   EngineNeighbour(paths["c kick.wav"], 0.2)])

    monkeypatch.setattr(window.backend.session, "compatible", compatible)
    assert window.find_compatible_action in window.track_actions  # in the context menu
    window.select_path(paths["am loop.wav"])
    window.library_view.setFocus()
    with qtbot.waitSignal(window.results_ready, timeout=5000):
        window.find_compatible_action.trigger()
    assert asked == [(paths["am loop.wav"], window.k_spin.value())]
    model = window.results_model
    assert [Path(n.path).name for n in model.neighbours()] == ["em pad.wav", "c kick.wav"]
    assert "compatible with am loop.wav (8A 9A 7A 8B)" in window.results_title.text()
    off = model.OFFSET
    # E minor: a fifth above A minor, said the short way round, 5 semitones down
    assert model.index(1, off).data() == "-5 st"          # no tempo: the key part only
    assert model.index(2, off).data() == "0 st, x0.81"    # C major = A minor's relative
    assert model.index(0, off).data() == ""               # the query itself


def test_project_sync_is_applied_to_the_audition(qtbot, window, library):
    paths, _ = library
    player = window.player
    window.set_project(K("C major"), 128.0)

    def audition(name, **kw):
        with qtbot.waitSignal(window.audition_loaded, timeout=5000):
            window.audition_path(paths[name], **kw)
        qtbot.waitUntil(lambda: player.calls and player.calls[-1][0] == "open", timeout=2000)

    audition("d bass.wav")                  # D major 120 BPM -> C major 128
    assert player.pitch == -2
    assert player.tempo == pytest.approx(128 / 120)   # exact, not the slider's 1.07
    audition("em pad.wav")                  # E minor, no tempo -> A minor, not stretched
    assert (player.pitch, player.tempo) == (5, 1.0)
    audition("abm keys.wav")                # 90 BPM: counted as 180 -> x0.71, not x1.42
    assert player.tempo == pytest.approx(128 / 180)
    # a locked transform keeps only what the project leaves free
    window.set_project(K("C major"), None)
    window.audition.lock_button.setChecked(True)
    window.audition.set_transform(tempo=1.25)
    audition("d bass.wav")
    assert player.pitch == -2 and player.tempo == pytest.approx(1.25)
    window.audition.lock_button.setChecked(False)
    # changing the project moves the track that plays at once; none: as it is
    window.set_project(K("E major"), None)
    qtbot.waitUntil(lambda: player.pitch == 2, timeout=2000)
    window.set_project(None, None)
    qtbot.waitUntil(lambda: (player.pitch, player.tempo) == (0, 1.0), timeout=2000)
    audition("d bass.wav")
    assert (player.pitch, player.tempo) == (0, 1.0)


def test_result_rows_say_what_they_will_be_played_at(qtbot, window, library, monkeypatch):
    paths, _ = library
    found = [EngineNeighbour(paths["d bass.wav"], 0.1), EngineNeighbour(paths["noise.wav"], 0.3)]
    monkeypatch.setattr(window.backend.session, "compatible",
                        lambda path, k=10: EngineResult(path, found))
    window.select_path(paths["am loop.wav"])
    with qtbot.waitSignal(window.results_ready, timeout=5000):
        window.find_compatible()
    model, view = window.results_model, window.results_view
    plays = ResultsModel.PLAYS_AT
    assert view.isColumnHidden(plays)           # no project: nothing to say
    # D major lies 2 semitones above C major (A minor's relative); 120 BPM over 124
    assert model.index(1, model.OFFSET).data() == "+2 st, x0.97"
    window.set_project(K("C major"), 124.8)
    assert not view.isColumnHidden(plays)
    assert model.headerData(plays, Qt.Orientation.Horizontal) == "Plays at"
    assert model.index(0, plays).data() == "x1.01"         # the query: A minor is C's relative
    assert model.index(1, plays).data() == "-2 st, x1.04"  # D major 120 -> C major 124.8
    assert model.index(2, plays).data() == "as is"         # no key, no tempo
    window.set_notation("standard")  # labels do not depend on the notation
    assert model.index(1, plays).data() == "-2 st, x1.04"


def test_sorting_keeps_the_selection_and_a_reload_keeps_the_order(qtbot, window, library):
    paths, _ = library
    window.select_path(paths["d bass.wav"])
    window.library_view.sortByColumn(BPM, Qt.SortOrder.DescendingOrder)
    order = shown(window)
    assert order[0] == "unknown.wav" and order[-4:] == ["am loop.wav", "d bass.wav", "c kick.wav",
                                                        "abm keys.wav"]
    assert window.library_view.selected_path() == paths["d bass.wav"]
    with qtbot.waitSignal(window.tracks_loaded, timeout=5000):
        window.reload_tracks()
    assert shown(window) == order
    assert window.library_view.selected_path() == paths["d bass.wav"]


def test_the_filter_follows_a_reload_of_other_rows(qtbot, window, library, monkeypatch):
    paths, _ = library
    window.filter_edit.setText("type:kick,bass")
    window.flush_filter()
    assert sorted(shown(window)) == ["c kick.wav", "d bass.wav"]
    fewer = [(p, 0.5, "ok", None) for n, p in reversed(paths.items()) if n != "d bass.wav"]
    monkeypatch.setattr(window.backend.session, "tracks", lambda: fewer)
    with qtbot.waitSignal(window.tracks_loaded, timeout=5000):
        window.reload_tracks()
    assert shown(window) == ["c kick.wav"]
    window.filter_edit.setText("")
    assert len(shown(window)) == len(TRACKS) - 1


def test_a_key_or_tempo_search_says_when_the_query_has_no_key_or_tempo(qtbot, window, library, monkeypatch):
    paths, _ = library
    found = [EngineNeighbour(paths["d bass.wav"], 0.1)]
    monkeypatch.setattr(window.backend.session, "query", lambda path, by, k=10: EngineResult(path, found))
    titles = {}
    for name in ("noise.wav", "am loop.wav", "c kick.wav"):
        for by in ("key", "tempo", "vibe"):
            window.select_path(paths[name])
            with qtbot.waitSignal(window.results_ready, timeout=5000):
                window.find(by)
            titles[name, by] = window.results_title.text()
    # noise.wav: no key, no tempo (confidence 0.8): the title says what the neighbours share
    assert titles["noise.wav", "key"].endswith("it has no key (unpitched), so these share its pitch "
                                               "content, not a key")
    assert "it has no tempo" in titles["noise.wav", "tempo"]
    assert titles["noise.wav", "vibe"] == "1 nearest by vibe to noise.wav"
    # a query with a key and a tempo, and one whose estimate is too uncertain: no caveat
    assert titles["am loop.wav", "key"] == "1 nearest by key to am loop.wav"
    assert titles["am loop.wav", "tempo"] == "1 nearest by tempo to am loop.wav"
    assert "has no" not in titles["c kick.wav", "key"]
