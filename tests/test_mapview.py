"""The map view and the duplicates view (pytest-qt, offscreen)."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from PySide6.QtCore import QRectF
from PySide6.QtWidgets import QMessageBox

from app.duplicates_view import DuplicatesView
from app.mapview import MapView, folder_colours

PATHS = [f"/lib/{folder}/{i}.wav" for folder in ("kicks", "pads") for i in range(3)]
POS = np.array([[0, 0], [0.1, 0], [0, 0.1], [5, 5], [5.1, 5], [5, 5.1]], dtype=np.float32)


@pytest.fixture
def view(qtbot):
    v = MapView()
    qtbot.addWidget(v)
    v.resize(400, 300)
    v.show()
    v.set_points(PATHS, POS)
    return v


def test_colours_follow_the_folder():
    c = folder_colours(PATHS)
    assert c[0] == c[1] == c[2] and c[3] == c[4] == c[5] and c[0] != c[3]


def test_click_auditions_and_point_at_finds_the_nearest(view, qtbot):
    with qtbot.waitSignal(view.audition_requested) as sig:
        view.scatter.sigClicked.emit(view.scatter, view.scatter.points()[[4]], None)
    assert sig.args == [PATHS[4]]
    from PySide6.QtCore import QPointF

    assert view.point_at(QPointF(5.0, 5.0)) == 3
    assert view.point_at(QPointF(2.5, 2.5)) is None


def test_rectangle_selection_and_drag_carries_the_selection(view, qtbot):
    with qtbot.waitSignal(view.selection_changed) as sig:
        view.select_rect(QRectF(4.9, 4.9, 0.5, 0.5))
    assert sig.args == [PATHS[3:]]
    urls = [u.toLocalFile() for u in view.mime_for(4).urls()]
    assert urls == PATHS[3:]
    assert [u.toLocalFile() for u in view.mime_for(0).urls()] == [PATHS[0]]


def test_highlight_rings_the_neighbours_and_stars_the_query(view):
    view.highlight_paths(PATHS[0], [PATHS[1], PATHS[2], "/not/on/the/map.wav"])
    assert len(view.highlight.points()) == 2 and len(view.query_mark.points()) == 1


def _groups():
    return [SimpleNamespace(kind="exact", paths=["/a/x.wav", "/b/x.wav"]),
            SimpleNamespace(kind="near", paths=["/a/y.wav", "/a/y quiet.wav", "/c/y.ogg"])]


def test_duplicates_trash_only_after_yes(qtbot, monkeypatch):
    v = DuplicatesView()
    qtbot.addWidget(v)
    v.set_groups(_groups())
    assert v.checked_paths() == ["/b/x.wav", "/a/y quiet.wav", "/c/y.ogg"]
    emitted = []
    v.trash_requested.connect(emitted.append)
    monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: QMessageBox.StandardButton.No)
    assert not v.confirm_trash() and emitted == []
    monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: QMessageBox.StandardButton.Yes)
    assert v.confirm_trash() and emitted == [["/b/x.wav", "/a/y quiet.wav", "/c/y.ogg"]]
