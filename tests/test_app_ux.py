"""What a producer trips on in the first hour, each as a GUI test (pytest-qt, offscreen)
on generated audio and the torch-free fake embedder: row clicks, per-track transforms,
drag and drop, sound status, results with folders, problem files, export, the curves
panel, "Reveal in folder", folders of a library scanned by the CLI, folder watching."""
from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from PySide6.QtCore import QMimeData, QPoint, QPointF, QSettings, Qt, QUrl
from PySide6.QtGui import QDropEvent
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QMessageBox

from app.backend import Backend
from app.models import PATH_ROLE
from app.window import MainWindow
from tests.fixtures_audio import clicks, tone, write
from tests.test_app_window import (BatchFakeEmbedder, FakePlayer, add_and_scan,  # noqa: F401
                                   collection, row_of, window)


def make_window(qtbot, tmp_path, *, player=None, warning=None, library=None, settings=None):
    backend = Backend(library or tmp_path / "library", embedder=BatchFakeEmbedder())
    player = player or FakePlayer()
    ini = settings or str(tmp_path / "settings.ini")
    win = MainWindow(backend, settings=QSettings(ini, QSettings.Format.IniFormat),
                     player_factory=lambda: (player, warning))
    win.player = player
    qtbot.addWidget(win)
    win.resize(1200, 800)
    win.show()
    qtbot.waitUntil(lambda: win.audition.player is player, timeout=5000)
    return win


def click_row(qtbot, view, row):
    rect = view.visualRect(view.model().index(row, 0))
    QTest.mouseClick(view.viewport(), Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier,
                     rect.center())


# -- 1: a click loads the row that was clicked ------------------------------------------


def test_clicking_a_row_loads_that_row_not_the_previous_one(qtbot, window, collection):
    add_and_scan(qtbot, window, collection["a4"].parents[1])
    view = window.library_view
    with qtbot.waitSignal(window.audition_loaded, timeout=10000):
        click_row(qtbot, view, row_of(window, "a4.wav"))
    qtbot.waitUntil(lambda: window.waveform.path == str(collection["a4"].resolve()), timeout=5000)
    with qtbot.waitSignal(window.audition_loaded, timeout=10000) as blocker:
        click_row(qtbot, view, row_of(window, "click90.wav"))
    assert Path(blocker.args[0]).name == "click90.wav"
    assert Path(window.waveform.path).name == "click90.wav"
    assert Path(window.audition.path).name == "click90.wav"


def test_arrow_keys_move_and_play_when_auto_play_is_on(qtbot, window, collection):
    add_and_scan(qtbot, window, collection["a4"].parents[1])
    view = window.library_view
    view.setFocus()
    view.selectRow(0)
    qtbot.waitUntil(lambda: window.audition.path == window.library_proxy.path_at(0), timeout=5000)
    window.player.state = "stopped"
    with qtbot.waitSignal(window.audition_loaded, timeout=10000) as blocker:
        QTest.keyClick(view, Qt.Key.Key_Down)
    assert blocker.args[0] == window.library_proxy.path_at(1)
    assert window.player.state == "playing"
    # Off: the selection loads the track but stays silent.
    window.autoplay_action.setChecked(False)
    window.player.state = "stopped"
    with qtbot.waitSignal(window.audition_loaded, timeout=10000):
        QTest.keyClick(view, Qt.Key.Key_Down)
    assert window.player.state == "stopped"
    assert window.settings.value("autoplay") in (False, "false")


# -- 2: a transform belongs to one audition unless locked ---------------------------------


def test_pitch_and_tempo_reset_per_track_unless_locked(qtbot, window, collection):
    add_and_scan(qtbot, window, collection["a4"].parents[1])
    player = window.player
    with qtbot.waitSignal(window.audition_loaded, timeout=10000):
        window.audition_path(str(collection["a4"]))
    window.audition.set_transform(semitones=3.5, tempo=1.25)
    qtbot.waitUntil(lambda: (player.pitch, player.tempo) == (3.5, 1.25), timeout=2000)
    with qtbot.waitSignal(window.audition_loaded, timeout=10000):
        window.audition_path(str(collection["c4"]))
    assert (window.audition.semitones, window.audition.tempo) == (0.0, 1.0)
    qtbot.waitUntil(lambda: (player.pitch, player.tempo) == (0.0, 1.0), timeout=2000)
    # Locked: the transform carries over to the next track...
    window.audition.lock_button.setChecked(True)
    window.audition.set_transform(semitones=-2.0, tempo=0.8)
    with qtbot.waitSignal(window.audition_loaded, timeout=10000):
        window.audition_path(str(collection["e4"]))
    assert (window.audition.semitones, window.audition.tempo) == (-2.0, 0.8)
    # ...but Q plays the query as it is.
    window.library_view.selectRow(row_of(window, "a4.wav"))
    with qtbot.waitSignal(window.results_ready, timeout=10000):
        window.find_key_action.trigger()
    with qtbot.waitSignal(window.audition_loaded, timeout=10000):
        QTest.keyClick(window.results_view, Qt.Key.Key_Q)
    assert window.audition.path == window.results_model.query
    qtbot.waitUntil(lambda: (player.pitch, player.tempo) == (0.0, 1.0), timeout=2000)
    # Back on a result, the locked transform returns.
    with qtbot.waitSignal(window.audition_loaded, timeout=10000):
        window.audition_path(window.results_model.path_at(1))
    assert (window.audition.semitones, window.audition.tempo) == (-2.0, 0.8)


# -- 3 (window side): a one-shot's match says it matched pitch only -----------------------


def test_match_of_a_one_shot_sets_pitch_only(qtbot, window, monkeypatch):
    monkeypatch.setattr(window.backend, "match", lambda q, r: {
        "shift": -2.0, "stretch": 1.0, "mode": "one-shot", "pitched": True})
    window.results_model.set_result("/q.wav", "key", [])
    window.audition.path = "/r.wav"
    window.audition.set_transform(tempo=1.3)
    with qtbot.waitSignal(window.match_ready, timeout=5000):
        window.match_to_query()
    assert (window.audition.semitones, window.audition.tempo) == (-2.0, 1.0)
    assert "one-shot" in window.statusBar().currentMessage()


# -- 4: drag from the library; search with a file dropped from outside ---------------------


def test_library_rows_can_be_dragged_out(qtbot, window, collection):
    add_and_scan(qtbot, window, collection["a4"].parents[1])
    view = window.library_view
    row = row_of(window, "a4.wav")
    assert view.dragEnabled()
    assert window.library_proxy.flags(window.library_proxy.index(row, 0)) \
        & Qt.ItemFlag.ItemIsDragEnabled
    mime = view.drag_mime(str(collection["a4"].resolve()))
    assert mime.urls()[0].toLocalFile() == str(collection["a4"].resolve())


def test_dropping_an_outside_file_searches_with_it(qtbot, window, collection, tmp_path):
    add_and_scan(qtbot, window, collection["a4"].parents[1])
    outside = write(tmp_path / "elsewhere" / "my A.wav", tone(880.0))
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(outside))])
    event = QDropEvent(QPointF(10, 10), Qt.DropAction.CopyAction, mime,
                       Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier)
    with qtbot.waitSignal(window.results_ready, timeout=10000) as blocker:
        window.dropEvent(event)
    result = blocker.args[0]
    assert Path(result.query).name == "my A.wav"
    assert result.neighbours and all(n.path != str(outside) for n in result.neighbours)
    assert window.folder_list.count() == 1  # searched, not added to the library


# -- 5: sound status ------------------------------------------------------------------------


def test_sound_status_is_permanent_and_the_transport_does_not_fake_playing(
        qtbot, tmp_path, collection, monkeypatch):
    monkeypatch.setenv("LOEV_LOG_DIR", str(tmp_path / "logs"))
    win = make_window(qtbot, tmp_path, warning="no audio output device (none found)")
    assert "no audio output" in win.sound_label.text()
    assert win.sound_label in win.statusBar().findChildren(type(win.sound_label))
    with qtbot.waitSignal(win.audition_loaded, timeout=10000):
        win.audition_path(str(collection["a4"]))
    assert win.player.state != "playing"
    assert not win.audition.play_button.isEnabled()
    win.audition.toggle_play()
    assert win.player.state != "playing"
    win.close()


def test_device_name_and_volume_in_the_status_and_settings(qtbot, tmp_path, collection,
                                                           monkeypatch):
    monkeypatch.setenv("LOEV_LOG_DIR", str(tmp_path / "logs"))
    player = FakePlayer()
    player.device_name = "Studio Monitors"
    win = make_window(qtbot, tmp_path, player=player)
    assert "Studio Monitors" in win.sound_label.text()
    win.apply_audio_settings(device="Studio Monitors", volume=50)
    assert win.settings.value("audio/volume") in (50, "50")
    opened = []
    player.open = lambda y, source_sr=None: opened.append(np.abs(y).max())
    with qtbot.waitSignal(win.audition_loaded, timeout=10000):
        win.audition_path(str(collection["a4"]))
    full = float(np.abs(sf.read(str(collection["a4"]))[0]).max())
    assert opened[-1] == pytest.approx(0.5 * full, rel=0.05)
    from app.settings import SettingsDialog

    dialog = SettingsDialog("", "", win, devices=["Default", "Studio Monitors"],
                            device="Studio Monitors", volume=50)
    assert dialog.device_combo.currentText() == "Studio Monitors"
    assert dialog.volume_slider.value() == 50
    win.close()


# -- 6: results show their folder; removed folders take their results; removal asks --------


def test_results_tell_same_named_files_apart_and_leave_with_their_folder(
        qtbot, window, tmp_path, monkeypatch):
    music = tmp_path / "music"
    write(music / "kit A" / "bass01.wav", tone(110.0))
    write(music / "kit B" / "bass01.wav", tone(116.5))
    write(music / "kit B" / "lead.wav", tone(440.0))
    add_and_scan(qtbot, window, music)
    window.library_view.selectRow(row_of(window, "lead.wav"))
    with qtbot.waitSignal(window.results_ready, timeout=10000):
        window.find_vibe_action.trigger()
    model = window.results_model
    texts = [model.index(r, 0).data() for r in range(1, model.rowCount())]
    bass = [t for t in texts if "bass01" in t]
    assert len(bass) == 2 and bass[0] != bass[1]
    assert any("kit A" in t for t in bass) and any("kit B" in t for t in bass)
    # Remove folder asks first; "No" keeps it.
    asked = []
    monkeypatch.setattr(QMessageBox, "question",
                        lambda *a, **k: asked.append(a) or QMessageBox.StandardButton.No)
    window.folder_list.setCurrentRow(0)
    window.remove_folder_action.trigger()
    assert asked and window.folder_list.count() == 1
    monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: QMessageBox.StandardButton.Yes)
    with qtbot.waitSignal(window.tracks_loaded, timeout=10000):
        window.remove_folder_action.trigger()
        qtbot.waitUntil(lambda: window.folder_list.count() == 0, timeout=10000)
    assert window.results_model.rowCount() == 0


# -- 7: problem files --------------------------------------------------------------------


def test_problem_reason_in_a_visible_column_and_rescan_counts_true_problems(
        qtbot, window, collection):
    add_and_scan(qtbot, window, collection["a4"].parents[1])
    model, view = window.library_model, window.library_view
    status = model.COLUMNS.index("Status")
    row = next(i for i, r in enumerate(model.rows()) if r.name == "empty.wav")
    text = model.index(row, status).data()
    assert "error" in text and model.row_at(row).reason in text
    header = view.horizontalHeader()
    assert not header.isSectionHidden(status)
    assert header.sectionViewportPosition(status) + 40 < view.viewport().width()
    problems = sum(r.status != "ok" for r in model.rows())
    assert problems >= 4
    with qtbot.waitSignal(window.scan_summary, timeout=30000) as blocker:
        window.rescan_action.trigger()
    assert f"{problems} problems" in blocker.args[0]


# -- 8: export -----------------------------------------------------------------------------


def test_export_keeps_channels_and_rate_as_24_bit_in_a_remembered_folder(
        qtbot, window, tmp_path, monkeypatch):
    t = np.arange(44100) / 44100
    stereo = np.stack([0.3 * np.sin(2 * np.pi * 440 * t), 0.1 * np.sin(2 * np.pi * 660 * t)], 1)
    src = tmp_path / "src" / "stereo.wav"
    src.parent.mkdir()
    sf.write(str(src), stereo.astype(np.float32), 44100)
    out_dir = tmp_path / "exports"
    out_dir.mkdir()
    asked = []
    from PySide6.QtWidgets import QFileDialog

    monkeypatch.setattr(QFileDialog, "getExistingDirectory",
                        lambda *a, **k: asked.append(1) or str(out_dir))
    with qtbot.waitSignal(window.audition_loaded, timeout=10000):
        window.audition_path(str(src))
    window.audition.set_transform(semitones=2.0)
    with qtbot.waitSignal(window.exported, timeout=30000) as blocker:
        window.export()
    out = Path(blocker.args[0])
    assert out.parent == out_dir
    info = sf.info(str(out))
    assert (info.channels, info.samplerate, info.subtype) == (2, 44100, "PCM_24")
    y, _ = sf.read(str(out))
    assert np.abs(y[:, 0]).max() > 2 * np.abs(y[:, 1]).max()  # left stays left
    assert not list(src.parent.glob("*(*"))  # nothing written next to the source
    with qtbot.waitSignal(window.exported, timeout=30000):
        window.export()
    assert len(asked) == 1  # the folder is asked once, then remembered
    assert window.settings.value("export/folder") == str(out_dir)


# -- 9: curves panel, axes, dials, pitch slider --------------------------------------------


def test_curves_follow_the_track_that_plays_without_si_prefixes(qtbot, window, collection):
    add_and_scan(qtbot, window, collection["a4"].parents[1])
    assert not window.curves_panel.isVisible()  # collapsed until asked for
    window.library_view.selectRow(row_of(window, "a4.wav"))
    done: list[str] = []
    window.curve_ready.connect(done.append)
    window.curves_action.trigger()
    assert window.curves_panel.isVisible()
    qtbot.waitUntil(lambda: sorted(done) == ["pitch", "tempo"], timeout=60000)
    done.clear()
    with qtbot.waitSignal(window.audition_loaded, timeout=10000):
        window.audition_path(str(collection["click90"].resolve()))
    qtbot.waitUntil(lambda: sorted(done) == ["pitch", "tempo"], timeout=60000)
    assert window._curve_path == str(collection["click90"].resolve())
    for plot in (window.pitch_plot, window.tempo_plot):
        assert "click90" in plot.title_label.text()
        plot.plot.setYRange(0, 0.004)
        for side in ("left", "bottom"):
            axis = plot.plot.getAxis(side)
            assert not axis.autoSIPrefix
            assert "x0.001" not in axis.labelString()
        # The legend is beside the data, not over it.
        assert plot.plot.plotItem.legend is None
        assert "key" in plot.key_label.text() and "tempo" in plot.key_label.text()
    assert not window.waveform.plot.getAxis("bottom").autoSIPrefix


def test_blend_dials_show_numbers_and_persist(qtbot, tmp_path, monkeypatch):
    monkeypatch.setenv("LOEV_LOG_DIR", str(tmp_path / "logs"))
    win = make_window(qtbot, tmp_path)
    win.dials["key"].setValue(70)
    assert "70" in win.dial_labels["key"].text()
    win.close()
    win2 = make_window(qtbot, tmp_path)
    assert win2.dials["key"].value() == 70
    win2.close()


def test_double_click_resets_the_sliders_exactly(qtbot, window):
    for slider, default in ((window.audition.pitch_slider, 0), (window.audition.tempo_slider, 100)):
        far = QPoint(slider.width() - 5, slider.height() // 2)
        QTest.mouseDClick(slider, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, far)
        assert slider.value() == default
    assert window.audition.semitones == 0.0 and window.audition.tempo == 1.0


# -- 10: reveal in folder ------------------------------------------------------------------


def test_reveal_says_so_when_there_is_no_file_manager(qtbot, window, collection, monkeypatch):
    from PySide6.QtGui import QDesktopServices

    monkeypatch.setattr(QDesktopServices, "openUrl", lambda url: False)
    window.results_model.set_result(str(collection["a4"]), "key", [])
    window.results_view.selectRow(0)
    n = len(window.errors.messages)
    window.reveal_action.trigger()
    assert len(window.errors.messages) == n + 1
    assert "file manager" in window.statusBar().currentMessage()
    assert str(collection["a4"].parent) in window.statusBar().currentMessage()


# -- 11: a library scanned by the CLI shows its folders ------------------------------------


def test_library_scanned_by_the_cli_lists_its_folders(qtbot, tmp_path, collection, monkeypatch):
    from engine.library.scan import scan

    monkeypatch.setenv("LOEV_LOG_DIR", str(tmp_path / "logs"))
    music = collection["a4"].parents[1]
    scan([str(music)], library=tmp_path / "cli library", embedder=BatchFakeEmbedder())
    win = make_window(qtbot, tmp_path, library=tmp_path / "cli library")
    qtbot.waitUntil(lambda: win.folder_list.count() > 0, timeout=5000)
    folders = [win.folder_list.item(i).text() for i in range(win.folder_list.count())]
    assert folders == [os.path.realpath(music)]
    win.close()


# -- folder watching ---------------------------------------------------------------------


def test_files_added_and_removed_in_a_watched_folder_are_picked_up(qtbot, window, tmp_path):
    music = tmp_path / "watched"
    write(music / "one.wav", tone(440.0))
    write(music / "two.wav", clicks(120))
    add_and_scan(qtbot, window, music)
    window.watch_delay_ms = 100
    with qtbot.waitSignal(window.scan_finished, timeout=20000):
        write(music / "three.wav", tone(330.0))
    qtbot.waitUntil(lambda: any(r.name == "three.wav" and r.status == "ok"
                                for r in window.library_model.rows()), timeout=10000)
    with qtbot.waitSignal(window.scan_finished, timeout=20000):
        (music / "one.wav").unlink()
    qtbot.waitUntil(lambda: all(r.name != "one.wav" for r in window.library_model.rows()),
                    timeout=10000)


# -- transposed search ---------------------------------------------------------------------


def test_find_same_key_at_a_transposition(qtbot, window, collection, monkeypatch):
    add_and_scan(qtbot, window, collection["a4"].parents[1])
    window.library_view.selectRow(row_of(window, "c4.flac"))
    window.shift_spin.setValue(9)  # C4 up 9 semitones is A4
    with qtbot.waitSignal(window.results_ready, timeout=20000) as blocker:
        window.find_key_shifted_action.trigger()
    result = blocker.args[0]
    assert "+9" in result.by
    assert Path(result.neighbours[0].path).name in ("a4.wav", "A3 é.WAV")
    assert all(Path(n.path).name != "c4.flac" for n in result.neighbours)


def test_transposed_query_through_the_embedding_process(tmp_path, tiny_checkpoint):
    """With the real model the transformed query is embedded in the child process (the
    window's process never needs the vocoders of the model package)."""
    from app.window import transposed_query

    music = tmp_path / "music"
    for name, y in (("a.wav", tone(440.0, 3.5)), ("b.wav", tone(330.0, 3.5)),
                    ("c.wav", clicks(120, 3.5))):
        write(music / name, y)
    backend = Backend(tmp_path / "lib", tiny_checkpoint)
    try:
        backend.add_folder(music)
        backend.scan()
        assert hasattr(backend.embedder, "session_call")  # the remote embedder
        result = transposed_query(backend, str(music / "a.wav"), by="key", k=5, shift=2.0)
        assert result.by == "key at +2 st"
        assert {Path(n.path).name for n in result.neighbours} == {"b.wav", "c.wav"}
    finally:
        backend.close()
