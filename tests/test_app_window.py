"""GUI tests of the main window (pytest-qt, offscreen), on generated audio and a torch-free
fake embedder: add a folder through the UI, scan without stalling the event loop, the
context menu's "Find same key", results, audition sliders, invariance curves."""
from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PySide6.QtCore import QSettings
from PySide6.QtGui import QContextMenuEvent
from PySide6.QtWidgets import QApplication

from app.backend import Backend
from app.models import PATH_ROLE
from app.window import MainWindow
from tests.fixtures_audio import FakeEmbedder, make_collection

ROOT = Path(__file__).resolve().parents[1]


class BatchFakeEmbedder(FakeEmbedder):
    """The library tests' fake, plus the batch call the invariance curves use."""

    def embed_audio_batch(self, ys):
        return [self.embed_audio(y) for y in ys]


class FakePlayer:
    """Records what the audition panel asks of the engine player."""

    sr = 22050

    def __init__(self):
        self.calls: list[tuple] = []
        self.pitch, self.tempo, self.loop = 0.0, 1.0, False
        self.state, self.position, self.duration = "stopped", 0.0, 0.0
        self.on_error = None

    def open(self, y, *, source_sr=None):
        self.duration = len(y) / source_sr
        self.calls.append(("open", len(y), source_sr))

    def play(self):
        self.state = "playing"

    def pause(self):
        self.state = "paused"

    def stop(self):
        self.state, self.position = "stopped", 0.0

    def seek(self, seconds):
        self.position = seconds

    def set_loop(self, on):
        self.loop = on

    def set_pitch(self, semitones):
        self.pitch = semitones

    def set_tempo(self, ratio):
        self.tempo = ratio


@pytest.fixture(scope="module")
def collection(tmp_path_factory):
    return make_collection(tmp_path_factory.mktemp("music"))


@pytest.fixture
def window(qtbot, tmp_path, monkeypatch):
    monkeypatch.setenv("LOEV_LOG_DIR", str(tmp_path / "logs"))
    settings = QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)
    backend = Backend(tmp_path / "library", embedder=BatchFakeEmbedder(delay=0.02))
    player = FakePlayer()
    win = MainWindow(backend, settings=settings, player_factory=lambda: (player, None))
    win.player = player
    qtbot.addWidget(win)
    win.resize(1200, 800)
    win.show()
    qtbot.waitUntil(lambda: win.audition.player is player, timeout=5000)
    yield win
    win.close()


def add_and_scan(qtbot, win, folder):
    with qtbot.waitSignal(win.scan_finished, timeout=30000):
        win.add_folder(str(folder))  # the slot the "Add folder..." action calls
    qtbot.waitUntil(lambda: win.library_model.rowCount() > 0 and win.scan_task is None,
                    timeout=10000)


def row_of(win, name):
    proxy = win.library_proxy
    for row in range(proxy.rowCount()):
        if Path(proxy.index(row, 0).data(PATH_ROLE)).name == name:
            return row
    raise AssertionError(f"{name} not in the table")


def test_empty_state_then_scan_fills_the_table(qtbot, window, collection):
    assert window.library_stack.currentIndex() == 0  # "Add a folder..." page
    assert window.sound_label.text() == "sound: audio output"
    add_and_scan(qtbot, window, collection["a4"].parents[1])
    assert window.library_stack.currentIndex() == 1
    names = {r.name: r for r in window.library_model.rows()}
    assert names["a4.wav"].status == "ok"
    # Problem files are listed with their reason.
    assert names["empty.wav"].status == "error" and names["empty.wav"].reason
    assert "13 problems" not in window.count_label.text()
    assert window.folder_list.count() == 1
    # The filter box narrows the table.
    window.filter_edit.setText("click")
    window.flush_filter()  # the box filters once typing pauses
    assert window.library_proxy.rowCount() == 3
    window.filter_edit.setText("")


def test_context_menu_find_same_key_shows_results(qtbot, window, collection):
    add_and_scan(qtbot, window, collection["a4"].parents[1])
    view = window.library_view
    index = window.library_proxy.index(row_of(window, "a4.wav"), 0)
    pos = view.visualRect(index).center()
    event = QContextMenuEvent(QContextMenuEvent.Reason.Mouse, pos, view.viewport().mapToGlobal(pos))
    QApplication.sendEvent(view.viewport(), event)
    menu = view.last_menu
    assert menu is not None
    assert view.selected_path() == str(collection["a4"].resolve())
    texts = [a.text() for a in menu.actions() if a.text()]
    assert texts[:3] == ["Find same key", "Find same tempo", "Find similar vibe"]
    assert "Show invariance curves" in texts and "Reveal in folder" in texts
    action = next(a for a in menu.actions() if a.text() == "Find same key")
    with qtbot.waitSignal(window.results_ready, timeout=10000) as blocker:
        action.trigger()
    menu.close()
    result = blocker.args[0]
    model = window.results_model
    # The query is pinned at the top, its neighbours follow, nearest first.
    assert model.path_at(0) == str(collection["a4"].resolve())
    assert model.rowCount() == len(result.neighbours) + 1 > 1
    # A3 is the same pitch class as A4: the fake's chroma puts it first in the key subspace.
    assert Path(model.path_at(1)).name == "A3 é.WAV"
    dists = [n.distance for n in model.neighbours()]
    assert dists == sorted(dists)
    assert all(n.path != model.query for n in model.neighbours())


def test_blend_and_shortcut_actions(qtbot, window, collection):
    add_and_scan(qtbot, window, collection["a4"].parents[1])
    window.library_view.selectRow(row_of(window, "click120.wav"))
    for aspect, value in (("key", 0), ("tempo", 100), ("vibe", 0)):
        window.dials[aspect].setValue(value)
    with qtbot.waitSignal(window.results_ready, timeout=10000):
        window.find_blend_action.trigger()
    assert Path(window.results_model.path_at(1)).name == "click120b.wav"
    assert window.results_model.by.startswith("blend")


def test_sliders_change_the_audition_transform(qtbot, window, collection):
    add_and_scan(qtbot, window, collection["a4"].parents[1])
    player = window.player
    with qtbot.waitSignal(window.audition_loaded, timeout=10000):
        window.audition_path(str(collection["a4"]))
    assert player.state == "playing"
    # Decoded at the player's rate (not the model's 16 kHz): 2 s of a4.wav.
    assert player.calls[-1] == ("open", 2 * 22050, 22050)
    window.audition.pitch_slider.setValue(35)   # +3.5 semitones
    window.audition.tempo_slider.setValue(125)  # 1.25x
    qtbot.waitUntil(lambda: (player.pitch, player.tempo) == (3.5, 1.25), timeout=2000)
    assert window.pitch_plot.marker.value() == pytest.approx(3.5)
    assert window.tempo_plot.marker.value() == pytest.approx(np.log10(1.25))  # log x axis
    window.audition.loop_button.setChecked(True)
    assert player.loop
    window.audition.reset_transform()
    qtbot.waitUntil(lambda: (player.pitch, player.tempo) == (0.0, 1.0), timeout=2000)


def test_invariance_plot_shows_one_curve_per_subspace(qtbot, window, collection):
    add_and_scan(qtbot, window, collection["a4"].parents[1])
    window.library_view.selectRow(row_of(window, "a4.wav"))
    done: list[str] = []
    window.curve_ready.connect(done.append)
    window.curves_action.trigger()
    qtbot.waitUntil(lambda: sorted(done) == ["pitch", "tempo"], timeout=60000)
    for plot in (window.pitch_plot, window.tempo_plot):
        assert sorted(plot.curves) == ["invariant", "pitch", "tempo"]
        x, y = plot.curves["pitch"].getData()
        assert len(x) == len(y) > 5 and np.all(np.isfinite(y))
    # The fake's chroma: an octave (+-12 st) returns to the same key, +1 st does not.
    x, y = window.pitch_plot.curves["pitch"].getData()
    assert y[list(x).index(12.0)] < 0.2 < y[list(x).index(1.0)]
    # Cached: asking again answers without a worker.
    done.clear()
    window.curves_action.trigger()
    assert sorted(done) == ["pitch", "tempo"]


def test_errors_reach_the_one_handler(qtbot, window, tmp_path):
    window.add_folder(str(tmp_path / "no such folder"))
    assert "not a folder" in window.statusBar().currentMessage()
    # An error raised in a worker: a query on a library that was never scanned.
    n = len(window.errors.messages)
    window._run_query(str(tmp_path / "x.wav"), "key")
    qtbot.waitUntil(lambda: len(window.errors.messages) > n, timeout=5000)
    assert window.statusBar().currentMessage().startswith("Query: no library at")
    log = (tmp_path / "logs" / "loev.log").read_text()
    assert log.count("Add folder failed") == 1 and log.count("Query failed") == 1
    assert "Traceback" in log  # the details are in the log, not in a dialog


def test_drag_out_renders_a_transformed_clip(qtbot, window, collection, monkeypatch):
    rendered = []

    def fake_render(path, *, semitones=0.0, tempo=1.0, out=None):
        rendered.append((path, semitones, tempo))
        return Path("/tmp/rendered.wav")

    monkeypatch.setattr(window.backend, "render", fake_render)
    with qtbot.waitSignal(window.audition_loaded, timeout=10000):
        window.audition_path(str(collection["c4"]))
    assert window.results_view.drag_mime(str(collection["e4"])).urls()[0].toLocalFile() \
        == str(collection["e4"])  # not auditioned: dragged as it is
    window.audition.pitch_slider.setValue(-20)
    mime = window.results_view.drag_mime(str(collection["c4"]))
    assert mime.urls()[0].toLocalFile() == "/tmp/rendered.wav"
    assert rendered == [(str(collection["c4"]), -2.0, 1.0)]


def test_window_state_is_remembered(qtbot, tmp_path, monkeypatch):
    monkeypatch.setenv("LOEV_LOG_DIR", str(tmp_path / "logs"))
    ini = str(tmp_path / "state.ini")
    backend = Backend(tmp_path / "lib", embedder=BatchFakeEmbedder())
    win = MainWindow(backend, settings=QSettings(ini, QSettings.Format.IniFormat),
                     player_factory=lambda: (FakePlayer(), None))
    qtbot.addWidget(win)
    win.k_spin.setValue(7)
    win.close()
    win2 = MainWindow(backend, settings=QSettings(ini, QSettings.Format.IniFormat),
                      player_factory=lambda: (FakePlayer(), None))
    qtbot.addWidget(win2)
    assert win2.k_spin.value() == 7
    win2.close()


WINDOW_PROCESS = """
import os, sys, time
from PySide6.QtCore import QSettings, QTimer
from PySide6.QtWidgets import QApplication
from app.backend import Backend
from app.window import MainWindow

def main(music, lib, checkpoint):
    qa = QApplication([])
    win = MainWindow(Backend(lib, checkpoint), player_factory=lambda: (None, None),
                     settings=QSettings(lib + '.ini', QSettings.Format.IniFormat))
    win.show()
    gaps, last = [], [time.perf_counter()]
    def tick():
        now = time.perf_counter(); gaps.append(now - last[0]); last[0] = now
    timer = QTimer(); timer.setInterval(10); timer.timeout.connect(tick)
    done = []
    win.scan_finished.connect(lambda r: (timer.stop(), done.append(r)))
    win.curve_ready.connect(done.append)
    settle = time.monotonic() + 1.0  # the first paint of the window is not the scan's
    while time.monotonic() < settle:
        qa.processEvents(); time.sleep(0.002)
    last[0] = time.perf_counter(); timer.start()
    win.add_folder(music)
    deadline = time.monotonic() + 120
    while not (done and win.library_model.rowCount()) and time.monotonic() < deadline:
        qa.processEvents(); time.sleep(0.002)
    win.select_path(win.library_model.rows()[0].path)
    win.show_curves()
    while len(done) < 3 and time.monotonic() < deadline:
        qa.processEvents(); time.sleep(0.002)
    win.close()
    import shiboken6
    shiboken6.delete(win)  # widgets before the QApplication, or teardown may crash
    print("scanned", done[0].added, "curves", sorted(done[1:]), "max_gap_ms",
          round(max(gaps) * 1000), "torch", "torch" in sys.modules)

if __name__ == "__main__":
    main(*sys.argv[1:])
"""


def test_window_process_never_imports_torch(tmp_path, tiny_checkpoint):
    """A real scan and real curves with the tiny checkpoint, in a fresh process: torch is
    only ever imported by the embedding child process, never by the window's."""
    from tests.fixtures_audio import clicks, tone, write

    write(tmp_path / "music" / "a.wav", tone(440.0, 3.5))
    write(tmp_path / "music" / "b.wav", clicks(100, 3.5))
    script = tmp_path / "window_process.py"
    script.write_text(WINDOW_PROCESS)
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", LOEV_LOG_DIR=str(tmp_path / "logs"),
               PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, str(script), str(tmp_path / "music"),
                          str(tmp_path / "lib"), str(tiny_checkpoint)],
                         capture_output=True, text=True, cwd=ROOT, env=env, timeout=240)
    assert out.returncode == 0, out.stderr[-3000:]
    line = out.stdout.strip().splitlines()[-1]
    print(line)  # the event-loop stall during a real scan, for the record
    assert line.startswith("scanned 2 curves ['pitch', 'tempo']"), line
    assert line.endswith("torch False"), line


def test_real_player_on_a_simulated_sink_follows_the_sliders(qtbot, tmp_path, collection,
                                                              monkeypatch):
    from engine.audio.player import AuditionPlayer
    from engine.audio.sinks import SimulatedSink

    monkeypatch.setenv("LOEV_LOG_DIR", str(tmp_path / "logs"))
    backend = Backend(tmp_path / "lib", embedder=BatchFakeEmbedder())
    win = MainWindow(backend, settings=QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat),
                     player_factory=lambda: (AuditionPlayer(SimulatedSink(sr=16000)), None))
    qtbot.addWidget(win)
    qtbot.waitSignal(win.player_ready, timeout=5000)
    qtbot.waitUntil(lambda: win.audition.player is not None, timeout=5000)
    player = win.audition.player
    with qtbot.waitSignal(win.audition_loaded, timeout=10000):
        win.audition_path(str(collection["click120"]))
    assert player.state == "playing" and player.duration == pytest.approx(4.0, abs=0.01)
    win.audition.pitch_slider.setValue(-70)
    win.audition.tempo_slider.setValue(150)
    qtbot.waitUntil(lambda: (player.pitch, player.tempo) == (-7.0, 1.5), timeout=2000)
    qtbot.waitUntil(lambda: player.position > 0.2, timeout=5000)  # it plays
    win.audition.loop_button.setChecked(True)
    assert player.loop
    win.close()


def test_render_writes_the_transformed_clip(tmp_path, collection):
    import soundfile as sf

    backend = Backend(tmp_path / "lib", embedder=BatchFakeEmbedder())
    assert backend.render(str(collection["a4"])) == Path(collection["a4"])  # no transform
    out = backend.render(str(collection["click120"]), semitones=2.0, tempo=2.0)
    y, sr = sf.read(str(out))
    info = sf.info(str(out))
    assert (sr, info.subtype) == (sf.info(str(collection["click120"])).samplerate, "PCM_24")
    assert len(y) == pytest.approx(2.0 * sr, abs=2)  # 4 s at 2x, at the file's rate
    assert backend.render(str(collection["click120"]), semitones=2.0, tempo=2.0) == out  # cached


def test_real_tiny_model_scan_query_and_match(qtbot, tmp_path, tiny_checkpoint,
                                                     monkeypatch):
    """The window on the real engine (a random tiny checkpoint): the embedder is loaded
    lazily in a worker, and every action answers in the shapes the window expects."""
    from tests.fixtures_audio import clicks, tone, write

    monkeypatch.setenv("LOEV_LOG_DIR", str(tmp_path / "logs"))
    music = tmp_path / "music"
    write(music / "a.wav", tone(440.0, 3.5))
    write(music / "b.wav", tone(330.0, 3.5))
    write(music / "c.wav", clicks(120, 3.5))
    backend = Backend(tmp_path / "lib", tiny_checkpoint)
    win = MainWindow(backend, settings=QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat),
                     player_factory=lambda: (FakePlayer(), None))
    qtbot.addWidget(win)
    assert "model: tiny-loevpp" in win.model_label.text()
    add_and_scan(qtbot, win, music)
    assert [r.status for r in win.library_model.rows()] == ["ok"] * 3
    win.library_view.selectRow(row_of(win, "a.wav"))
    with qtbot.waitSignal(win.results_ready, timeout=20000):
        win.find_vibe_action.trigger()
    assert {Path(n.path).name for n in win.results_model.neighbours()} == {"b.wav", "c.wav"}
    with qtbot.waitSignal(win.audition_loaded, timeout=10000):
        win.audition_path(win.results_model.path_at(1))
    with qtbot.waitSignal(win.match_ready, timeout=60000) as blocker:
        win.audition.match_button.click()
    m = blocker.args[0]
    assert -6 <= m["shift"] <= 6 and 0.5 <= m["stretch"] <= 2.0
    assert win.audition.semitones == pytest.approx(round(m["shift"], 1))
    win.close()


def open_menu(view, row):
    index = view.model().index(row, 0)
    pos = view.visualRect(index).center()
    QApplication.sendEvent(view.viewport(), QContextMenuEvent(
        QContextMenuEvent.Reason.Mouse, pos, view.viewport().mapToGlobal(pos)))
    return view.last_menu


def trigger(menu, text):
    next(a for a in menu.actions() if a.text() == text).trigger()
    menu.close()


def test_results_menu_chains_queries_from_a_result(qtbot, window, collection):
    add_and_scan(qtbot, window, collection["a4"].parents[1])
    window.library_view.selectRow(row_of(window, "click90.wav"))
    with qtbot.waitSignal(window.results_ready, timeout=10000):
        window.find_vibe_action.trigger()
    row = next(r for r in range(1, window.results_model.rowCount())
               if Path(window.results_model.path_at(r)).name == "click120.wav")
    menu = open_menu(window.results_view, row)
    with qtbot.waitSignal(window.results_ready, timeout=10000) as blocker:
        trigger(menu, "Find same tempo")
    # The query is now the result that was right-clicked, not the library's selection.
    assert Path(blocker.args[0].query).name == "click120.wav"
    assert Path(window.results_model.path_at(1)).name == "click120b.wav"


def test_cancel_and_remove_folder(qtbot, tmp_path, collection, monkeypatch):
    monkeypatch.setenv("LOEV_LOG_DIR", str(tmp_path / "logs"))
    backend = Backend(tmp_path / "lib", embedder=BatchFakeEmbedder(delay=0.3))
    win = MainWindow(backend, settings=QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat),
                     player_factory=lambda: (FakePlayer(), None))
    qtbot.addWidget(win)
    win.show()
    with qtbot.waitSignal(win.scan_finished, timeout=30000) as blocker:
        win.add_folder(str(collection["a4"].parents[1]))
        qtbot.waitUntil(lambda: win.progress.value() >= 1, timeout=10000)
        assert win.cancel_button.isVisible() and "/13 files" in win.scan_label.text()
        win.cancel_button.click()
    report = blocker.args[0]
    assert report.cancelled and report.added < 13
    qtbot.waitUntil(lambda: win.scan_task is None, timeout=5000)
    assert not win.progress.isVisible()
    # Rescan finishes the job (incrementally), then the folder is removed again.
    backend.embedder.delay = 0.0
    with qtbot.waitSignal(win.scan_finished, timeout=30000) as blocker:
        win.rescan_action.trigger()
    assert blocker.args[0].unchanged == report.added and not blocker.args[0].cancelled
    qtbot.waitUntil(lambda: win.scan_task is None and win.library_model.rowCount() == 13,
                    timeout=10000)  # 9 tracks and 4 problem files
    win.folder_list.setCurrentRow(0)
    from PySide6.QtWidgets import QMessageBox

    # Remove folder asks first (a modal dialog): the test answers yes.
    monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: QMessageBox.StandardButton.Yes)
    with qtbot.waitSignal(win.tracks_loaded, timeout=10000):
        win.remove_folder_action.trigger()
        qtbot.waitUntil(lambda: win.folder_list.count() == 0, timeout=10000)
    qtbot.waitUntil(lambda: win.library_model.rowCount() == 0, timeout=5000)
    assert backend.tracks() == [] and backend.folders() == []
    win.close()


def test_settings_switch_library(qtbot, window, tmp_path):
    other = tmp_path / "other library"
    window.apply_settings("", str(other))
    assert window.backend.library_dir == other
    assert window.settings.value("library") == str(other)
    qtbot.waitUntil(lambda: window.library_stack.currentIndex() == 0, timeout=5000)


@pytest.mark.parametrize("backend", ["torch", "onnxruntime"])
def test_smoke_test_opens_embeds_and_quits(tmp_path, tiny_checkpoint, backend):
    """`loev --smoke-test` (what the bundle is checked with): window, one file embedded
    through the spawn child, clean exit; with onnxruntime, as the bundle runs it, on the
    shipped model and its ONNX export."""
    cfg = tmp_path / "config" / "loev-explorer"
    cfg.mkdir(parents=True)
    ckpt = f"checkpoint={tiny_checkpoint}\n" if backend == "torch" else ""
    (cfg / "LOEV Explorer.conf").write_text(f"[General]\n{ckpt}library={tmp_path / 'lib'}\n")
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", LOEV_LOG_DIR=str(tmp_path / "logs"),
               XDG_CONFIG_HOME=str(tmp_path / "config"), PYTHONPATH=str(ROOT), LOEV_BACKEND=backend)
    out = subprocess.run([sys.executable, "-m", "app.main", "--smoke-test"], cwd=tmp_path,
                         capture_output=True, text=True, env=env, timeout=180)
    assert out.returncode == 0, out.stdout + out.stderr[-2000:]
    from engine.model.checkpoint import read_checkpoint_info
    from engine.resources import default_checkpoint

    shape = read_checkpoint_info(tiny_checkpoint if backend == "torch" else default_checkpoint()).dims
    dims = ", ".join(f"{s} {shape[s]}" for s in ("invariant", "pitch", "tempo"))
    assert f"smoke test: embedded a file ({dims})" in out.stdout
