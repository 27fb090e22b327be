"""The map and duplicates docks, and starring, in the main window (pytest-qt, offscreen)."""
from __future__ import annotations

import os
from pathlib import Path

from app.mapview import FAVOURITES
# The window and collection fixtures are the main window tests' own.
from tests.test_app_window import add_and_scan, collection, row_of, window  # noqa: F401


def test_map_dock_lays_out_auditions_on_click_and_filters_the_starred(qtbot, window,
                                                                       collection):
    add_and_scan(qtbot, window, collection["a4"].parents[1])
    dock = window.map_dock
    dock.show()  # the first showing lays the library out, in a worker
    qtbot.waitUntil(lambda: len(dock.view.paths) == 9, timeout=20000)
    assert dock.view.positions.shape == (9, 2)
    a4 = os.path.realpath(collection["a4"])
    i = dock.view.paths.index(a4)
    with qtbot.waitSignal(window.audition_loaded, timeout=10000) as sig:
        dock.view.scatter.sigClicked.emit(dock.view.scatter, dock.view.scatter.points()[[i]],
                                          None)
    assert os.path.realpath(sig.args[0]) == a4

    window.library_view.selectRow(row_of(window, "a4.wav"))
    window.star_action.trigger()
    qtbot.waitUntil(lambda: window.backend.session.favourites() == [a4], timeout=10000)
    dock.view.filter_box.setCurrentText(FAVOURITES)
    qtbot.waitUntil(lambda: "1 shown" in dock.view.status.text(), timeout=10000)


def test_duplicates_dock_finds_an_exact_copy(qtbot, window, collection, tmp_path):
    folder = tmp_path / "dups"
    folder.mkdir()
    data = Path(collection["a4"]).read_bytes()
    (folder / "a.wav").write_bytes(data)
    (folder / "b.wav").write_bytes(data)
    add_and_scan(qtbot, window, folder)
    dock = window.duplicates_dock
    dock.show()
    dock.view.find_button.click()
    qtbot.waitUntil(lambda: dock.view.tree.topLevelItemCount() >= 1, timeout=10000)
    assert dock.view.checked_paths() == [os.path.realpath(folder / "b.wav")]


def test_the_table_shows_only_the_starred_or_a_collection(qtbot, window, collection):
    add_and_scan(qtbot, window, collection["a4"].parents[1])
    total = window.library_proxy.rowCount()
    a4, c4 = os.path.realpath(collection["a4"]), os.path.realpath(collection["c4"])
    window.backend.session.set_favourite(a4)
    window.backend.session.add_to_collection("keys", [a4, c4])
    window.marks_box.setCurrentText(FAVOURITES)
    qtbot.waitUntil(lambda: window.library_proxy.rowCount() == 1, timeout=10000)
    assert window.library_proxy.path_at(0) == a4
    qtbot.waitUntil(lambda: window.marks_box.findText("keys") >= 0, timeout=10000)
    window.marks_box.setCurrentText("keys")
    qtbot.waitUntil(lambda: window.library_proxy.rowCount() == 2, timeout=10000)
    window.filter_edit.setText("c4")  # the name filter still applies on top
    window.flush_filter()  # the box filters once typing pauses
    assert window.library_proxy.rowCount() == 1
    window.filter_edit.setText("")
    window.marks_box.setCurrentIndex(0)
    qtbot.waitUntil(lambda: window.library_proxy.rowCount() == total, timeout=10000)
