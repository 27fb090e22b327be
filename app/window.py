"""The main window: folders, library table, results, audition, waveform, invariance curves.

Everything slow (scan, query, curves, match, decoding, opening the audio device) runs as
an ``app.workers.Task`` in the thread pool; the window only starts tasks and shows what
they return. Every task error goes to one ``ErrorHandler`` (status bar + log file).
"""
from __future__ import annotations

import functools
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable

from PySide6.QtCore import QSettings, Qt, QTimer, QUrl, Signal
from PySide6.QtGui import QAction, QCloseEvent, QDesktopServices, QDragEnterEvent, QDropEvent, QIcon, QKeySequence
from PySide6.QtWidgets import (QApplication, QDial, QFileDialog, QGridLayout, QGroupBox,
                               QHBoxLayout, QLabel, QLineEdit, QListWidget, QMainWindow,
                               QProgressBar, QPushButton, QSpinBox, QSplitter, QStackedWidget,
                               QToolBar, QToolButton, QVBoxLayout, QWidget)

from app import collections_ui
from app.audition import AuditionPanel
from app.backend import Backend, QueryResult, TrackRow
from app.errors import ErrorHandler, setup_logging
from app.models import LibraryFilterProxy, LibraryTableModel, ResultsModel
from app.plots import SUBSPACE_COLOURS, InvariancePlot, WaveformView, envelope
from app.settings import SettingsDialog, app_settings
from app.views import LibraryView, ResultsView
from app.workers import Task, TaskError, TaskRunner

APP_TITLE = "LOEV Explorer"
ASPECTS = (("key", "Key", "pitch"), ("tempo", "Tempo", "tempo"), ("vibe", "Vibe", "invariant"))


def icon_path(name: str) -> Path:
    from engine.resources import resource_path

    return resource_path(f"icons/{name}")


def default_player() -> tuple[Any, str | None]:
    """An audition player on the sound card, or on a silent simulated sink (with the
    reason) when there is no device. Runs in a worker: opening a device can block."""
    from engine.audio.player import AuditionPlayer
    from engine.audio.sinks import SimulatedSink, SoundDeviceSink
    from engine.errors import AudioDeviceError

    try:
        return AuditionPlayer(sink=SoundDeviceSink()), None
    except AudioDeviceError as e:
        return AuditionPlayer(sink=SimulatedSink()), str(e)


def load_for_audition(path: str, sr: int) -> tuple[str, Any, int, Any]:
    """Decode ``path`` ([T, C] at the player's rate ``sr``, channels kept) and its
    envelope, in a worker."""
    from engine.audio.decode import load_audio_channels

    y, _ = load_audio_channels(path, sr=sr)
    return path, y, sr, envelope(y.mean(axis=1))


class MainWindow(QMainWindow):
    """LOEV Explorer's window.

    Parameters
    ----------
    backend : Backend, optional
        Built from the settings (checkpoint, library location) when None.
    settings : QSettings, optional
        Where window state and preferences live (tests pass a temporary file).
    player_factory : callable() -> (player, warning or None), optional
        Makes the audition player in a worker; ``default_player`` when None.
    """

    scan_finished = Signal(object)
    tracks_loaded = Signal()
    results_ready = Signal(object)
    curve_ready = Signal(str)
    audition_loaded = Signal(str)
    player_ready = Signal()
    match_ready = Signal(object)

    def __init__(self, backend: Backend | None = None, *, settings: QSettings | None = None,
                 player_factory: Callable[[], tuple[Any, str | None]] | None = None) -> None:
        super().__init__()
        self.settings = settings or app_settings()
        self.backend = backend or self._backend_from_settings()
        self.log_path = setup_logging()
        self.errors = ErrorHandler(self._show_message, self.log_path)
        self.tasks = TaskRunner(self._task_error, self)
        self.scan_task: Task | None = None
        self._scan_queued = False
        self._curve_path: str | None = None
        self._active_view: QWidget | None = None
        self.setWindowTitle(APP_TITLE)
        self.setAcceptDrops(True)
        if icon_path("loev-256.png").exists():
            self.setWindowIcon(QIcon(str(icon_path("loev-256.png"))))
        self._make_actions()
        self._build()
        collections_ui.install(self)  # map, duplicates, star, collections
        self._restore_state()
        QApplication.instance().focusChanged.connect(self._focus_changed)
        self._refresh_folders()
        self.reload_tracks()
        self._say_model()
        self.tasks.start(Task(player_factory or default_player, name="opening the audio device"),
                         returned=self._player_opened)

    # -- construction ---------------------------------------------------------------------

    def _backend_from_settings(self) -> Backend:
        checkpoint = str(self.settings.value("checkpoint", "") or "")
        library = str(self.settings.value("library", "") or "")
        return Backend(library or None, checkpoint or None)

    def _action(self, text: str, slot: Callable[[], Any], shortcut: str | None = None,
                tip: str = "") -> QAction:
        action = QAction(text, self)
        if shortcut:
            action.setShortcut(QKeySequence(shortcut))
            action.setShortcutContext(Qt.ShortcutContext.WindowShortcut)
        action.setToolTip(f"{tip or text} ({shortcut})" if shortcut else (tip or text))
        action.triggered.connect(lambda _checked=False: slot())
        self.addAction(action)
        return action

    def _make_actions(self) -> None:
        a = self._action
        self.add_folder_action = a("Add folder...", lambda: self.add_folder(), "Ctrl+O",
                                   "Add a folder of samples or tracks")
        self.rescan_action = a("Rescan", lambda: self.start_scan(), "F5",
                               "Look for new, changed and deleted files")
        self.remove_folder_action = a("Remove folder", self.remove_selected_folder, None,
                                      "Forget the selected folder and its tracks")
        self.cancel_scan_action = a("Cancel scan", self.cancel_scan, None)
        self.find_key_action = a("Find same key", lambda: self.find("key"), "Ctrl+1",
                                 "Neighbours in the pitch-variant (key) subspace")
        self.find_tempo_action = a("Find same tempo", lambda: self.find("tempo"), "Ctrl+2",
                                   "Neighbours in the tempo-variant subspace")
        self.find_vibe_action = a("Find similar vibe", lambda: self.find("vibe"), "Ctrl+3",
                                  "Neighbours in the all-invariant subspace")
        self.find_blend_action = a("Find by aspect blend", self.find_blend, "Ctrl+4",
                                   "Neighbours under the aspect dials' weights")
        self.curves_action = a("Show invariance curves", self.show_curves, "Ctrl+I")
        self.reveal_action = a("Reveal in folder", self.reveal, "Ctrl+R")
        self.export_action = a("Export...", self.export, "Ctrl+E",
                               "Save the auditioned track with its pitch/tempo transform")
        self.settings_action = a("Settings...", self.open_settings, "Ctrl+,")
        self.quit_action = a("Quit", self.close, "Ctrl+Q")
        self.track_actions: list[QAction | None] = [
            self.find_key_action, self.find_tempo_action, self.find_vibe_action,
            self.find_blend_action, None, self.curves_action, self.reveal_action,
            self.export_action]

    def _build(self) -> None:
        toolbar = QToolBar("Main", self)
        toolbar.setObjectName("mainToolbar")
        toolbar.setMovable(False)
        for action in (self.add_folder_action, self.rescan_action, None,
                       self.find_key_action, self.find_tempo_action, self.find_vibe_action,
                       self.find_blend_action, self.curves_action, self.reveal_action, None,
                       self.export_action, self.settings_action):
            toolbar.addSeparator() if action is None else toolbar.addAction(action)
        self.addToolBar(toolbar)

        self.top_splitter = QSplitter(Qt.Orientation.Horizontal)
        self.top_splitter.addWidget(self._build_sidebar())
        self.top_splitter.addWidget(self._build_library())
        self.top_splitter.addWidget(self._build_results())
        self.top_splitter.setStretchFactor(1, 3)
        self.top_splitter.setStretchFactor(2, 2)
        self.bottom_splitter = QSplitter(Qt.Orientation.Horizontal)
        self.bottom_splitter.addWidget(self._build_player())
        self.pitch_plot = InvariancePlot("pitch")
        self.tempo_plot = InvariancePlot("tempo")
        self.bottom_splitter.addWidget(self.pitch_plot)
        self.bottom_splitter.addWidget(self.tempo_plot)
        self.bottom_splitter.setStretchFactor(0, 3)
        self.bottom_splitter.setStretchFactor(1, 2)
        self.bottom_splitter.setStretchFactor(2, 2)
        self.main_splitter = QSplitter(Qt.Orientation.Vertical)
        self.main_splitter.addWidget(self.top_splitter)
        self.main_splitter.addWidget(self.bottom_splitter)
        self.main_splitter.setStretchFactor(0, 3)
        self.main_splitter.setStretchFactor(1, 2)
        self.setCentralWidget(self.main_splitter)
        self._build_status_bar()

        self.audition.pitch_changed.connect(self.pitch_plot.set_marker)
        self.audition.tempo_changed.connect(self.tempo_plot.set_marker)
        self.audition.position_changed.connect(self.waveform.set_position)
        self.audition.match_requested.connect(self.match_to_query)
        self.audition.player_error.connect(lambda e: self.errors.handle("Audition", e))

    def _build_sidebar(self) -> QWidget:
        folders_box = QGroupBox("Folders")
        self.folder_list = QListWidget()
        self.folder_list.setToolTip("Folders in the library; drop a folder on the window to add it")
        buttons = QHBoxLayout()
        for action in (self.add_folder_action, self.rescan_action, self.remove_folder_action):
            b = QToolButton()
            b.setDefaultAction(action)
            buttons.addWidget(b)
        buttons.addStretch(1)
        v = QVBoxLayout(folders_box)
        v.setContentsMargins(4, 4, 4, 4)
        v.addWidget(self.folder_list)
        v.addLayout(buttons)

        blend_box = QGroupBox("Aspect blend")
        grid = QGridLayout(blend_box)
        grid.setContentsMargins(4, 4, 4, 4)
        self.dials: dict[str, QDial] = {}
        for col, (aspect, label, subspace) in enumerate(ASPECTS):
            dial = QDial()
            dial.setRange(0, 100)
            dial.setValue(100 if aspect == "vibe" else 50)
            dial.setNotchesVisible(True)
            dial.setFixedSize(52, 52)
            dial.setToolTip(f"Weight of {label.lower()} in 'Find by aspect blend'")
            text = QLabel(f"<span style='color:{SUBSPACE_COLOURS[subspace]}'>{label}</span>")
            text.setAlignment(Qt.AlignmentFlag.AlignCenter)
            grid.addWidget(dial, 0, col)
            grid.addWidget(text, 1, col)
            self.dials[aspect] = dial
        blend = QPushButton("Find by blend")
        blend.clicked.connect(self.find_blend)
        grid.addWidget(blend, 2, 0, 1, 3)
        self.k_spin = QSpinBox()
        self.k_spin.setRange(1, 200)
        self.k_spin.setValue(int(self.settings.value("k", 20)))
        self.k_spin.setPrefix("results: ")
        grid.addWidget(self.k_spin, 3, 0, 1, 3)

        side = QWidget()
        v = QVBoxLayout(side)
        v.setContentsMargins(0, 0, 0, 0)
        v.addWidget(folders_box, 1)
        v.addWidget(blend_box)
        return side

    def _build_library(self) -> QWidget:
        self.library_model = LibraryTableModel(self)
        self.library_proxy = LibraryFilterProxy(self)
        self.library_proxy.setSourceModel(self.library_model)
        self.library_view = LibraryView(self.track_actions)
        self.library_view.setModel(self.library_proxy)
        self.library_view.sortByColumn(0, Qt.SortOrder.AscendingOrder)
        self.library_view.setColumnWidth(0, 220)
        self.library_view.setColumnWidth(1, 72)
        self.library_view.setColumnWidth(2, 220)
        self.library_view.doubleClicked.connect(
            lambda index: self.audition_path(self.library_view.selected_path()))
        self.library_view.activated_path.connect(self.audition_path)
        self.library_view.selectionModel().currentRowChanged.connect(self._library_row_changed)
        self.filter_edit = QLineEdit()
        self.filter_edit.setPlaceholderText("Filter by name, folder or status (Ctrl+F)")
        self.filter_edit.setClearButtonEnabled(True)
        self.filter_edit.textChanged.connect(self.library_proxy.setFilterFixedString)
        focus = QAction(self)
        focus.setShortcut(QKeySequence.StandardKey.Find)
        focus.triggered.connect(lambda: self.filter_edit.setFocus())
        self.addAction(focus)
        self.count_label = QLabel("")
        self.count_label.setObjectName("paneTitle")
        head = QHBoxLayout()
        head.addWidget(self.filter_edit, 1)
        head.addWidget(self.count_label)
        table_page = QWidget()
        v = QVBoxLayout(table_page)
        v.setContentsMargins(0, 0, 0, 0)
        v.setSpacing(2)
        v.addLayout(head)
        v.addWidget(self.library_view)

        self.library_stack = QStackedWidget()
        self.library_stack.addWidget(self._build_empty_state())
        self.library_stack.addWidget(table_page)
        return self.library_stack

    def _build_empty_state(self) -> QWidget:
        page = QWidget()
        v = QVBoxLayout(page)
        v.addStretch(1)
        title = QLabel("Your library is empty")
        title.setObjectName("emptyTitle")
        hint = QLabel("Add a folder of samples or tracks, or drop a folder on this window.\n"
                      "LOEV Explorer scans it in the background; then right-click a track to "
                      "find the same key, the same tempo or a similar vibe.")
        hint.setObjectName("emptyHint")
        hint.setWordWrap(True)
        button = QPushButton("Add a folder...")
        button.setMinimumHeight(32)
        button.clicked.connect(lambda: self.add_folder())
        for w in (title, hint):
            w.setAlignment(Qt.AlignmentFlag.AlignCenter)
            v.addWidget(w)
        row = QHBoxLayout()
        row.addStretch(1)
        row.addWidget(button)
        row.addStretch(1)
        v.addLayout(row)
        v.addStretch(2)
        self.empty_button = button
        return page

    def _build_results(self) -> QWidget:
        self.results_model = ResultsModel(self)
        self.results_view = ResultsView()
        self.results_view.setModel(self.results_model)
        self.results_view.render_for_drag = self._render_for_drag
        self.results_view.track_actions = self.track_actions
        self.results_view.audition_requested.connect(self.audition_path)
        self.results_view.query_audition_requested.connect(
            lambda: self.results_model.query and self.audition_path(self.results_model.query))
        self.results_title = QLabel("Results: right-click a track, Find same key/tempo/vibe")
        self.results_title.setObjectName("paneTitle")
        self.results_title.setWordWrap(True)
        hint = QLabel("Click or Space: audition · Q: query (A/B) · drag a row into your DAW")
        hint.setObjectName("emptyHint")
        box = QWidget()
        v = QVBoxLayout(box)
        v.setContentsMargins(0, 0, 0, 0)
        v.setSpacing(2)
        v.addWidget(self.results_title)
        v.addWidget(self.results_view, 1)
        v.addWidget(hint)
        return box

    def _build_player(self) -> QWidget:
        self.waveform = WaveformView()
        self.waveform.plot.scene().sigMouseClicked.connect(self._waveform_clicked)
        self.audition = AuditionPanel()
        box = QWidget()
        v = QVBoxLayout(box)
        v.setContentsMargins(0, 0, 0, 0)
        v.setSpacing(0)
        v.addWidget(self.waveform, 1)
        v.addWidget(self.audition)
        return box

    def _build_status_bar(self) -> None:
        bar = self.statusBar()
        self.model_label = QLabel("")
        self.scan_label = QLabel("")
        self.progress = QProgressBar()
        self.progress.setMaximumWidth(220)
        self.progress.setMaximumHeight(14)
        self.progress.setTextVisible(False)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.clicked.connect(self.cancel_scan)
        for w in (self.scan_label, self.progress, self.cancel_button):
            w.setVisible(False)
            bar.addPermanentWidget(w)
        bar.addPermanentWidget(self.model_label)

    # -- messages and errors --------------------------------------------------------------

    def _show_message(self, text: str) -> None:
        self.statusBar().showMessage(text, 15000)

    def _task_error(self, err: TaskError) -> None:
        self.errors.handle_task_error(err)

    def _say_model(self) -> None:
        from engine.resources import default_checkpoint

        path = self.backend.checkpoint or default_checkpoint()
        if self.backend.has_embedder():
            self.model_label.setText("model: loaded")
        elif Path(path).exists():
            self.model_label.setText(f"model: {Path(path).name}")
        else:
            self.model_label.setText("no model")
            self.errors.once("model", f"No model at {path}: choose a checkpoint in Settings "
                                      "(scanning and curves need one)")

    def _player_opened(self, result: tuple[Any, str | None]) -> None:
        player, warning = result
        self.audition.set_player(player)
        if warning:
            self.errors.once("audio", f"No sound: {warning}. Everything else works; "
                                      "the player runs silently")
        self.player_ready.emit()

    # -- folders and scanning -------------------------------------------------------------

    def _refresh_folders(self) -> None:
        self.folder_list.clear()
        self.folder_list.addItems(self.backend.folders())

    def add_folder(self, path: str | os.PathLike[str] | None = None) -> None:
        """Add a folder (asks for one when ``path`` is None) and scan it."""
        if path is None:
            path = QFileDialog.getExistingDirectory(self, "Add a folder of samples or tracks")
            if not path:
                return
        try:
            folder = self.backend.add_folder(path)
        except Exception as e:  # noqa: BLE001 - the one handler shows it
            self.errors.handle("Add folder", e)
            return
        self._refresh_folders()
        self._show_message(f"Added {folder}; scanning...")
        self.start_scan()

    def remove_selected_folder(self) -> None:
        item = self.folder_list.currentItem()
        if item is None:
            self._show_message("Select a folder in the Folders list to remove it")
            return
        self.remove_folder(item.text())

    def remove_folder(self, folder: str) -> None:
        if self.scan_task is not None:
            self._show_message("Wait for the scan to finish (or cancel it) before removing a folder")
            return
        self.tasks.start(Task(self.backend.remove_folder, folder, name="Remove folder"),
                         returned=lambda n: self._folder_removed(folder, n))

    def _folder_removed(self, folder: str, n: int) -> None:
        self._refresh_folders()
        self._show_message(f"Removed {folder} ({n} tracks)")
        self.reload_tracks()

    def start_scan(self, folders: list[str] | None = None) -> None:
        """Scan the library's folders in the background (a second request waits its turn)."""
        if self.scan_task is not None:
            self._scan_queued = True
            return
        task = Task(self.backend.scan, folders, name="Scan", with_progress=True)
        self.scan_task = task
        self.scan_label.setText("scanning...")
        self.progress.setRange(0, 0)
        for w in (self.scan_label, self.progress, self.cancel_button):
            w.setVisible(True)
        self.tasks.start(task, returned=self._scan_returned, progress=self._scan_progress,
                         finished=self._scan_done)

    def _scan_progress(self, value: tuple[int, int, str | None]) -> None:
        done, total, path = value
        self.progress.setRange(0, max(total, 1))
        self.progress.setValue(done)
        self.scan_label.setText(f"{done}/{total} files")
        if path:
            self.progress.setToolTip(path)
        # Show what is in the catalogue now and then, not after every file.
        if done and (done % 50 == 0):
            self.reload_tracks()

    def _scan_returned(self, report: Any) -> None:
        d = report.to_dict() if hasattr(report, "to_dict") else {}
        text = (f"Scan {'cancelled' if d.get('cancelled') else 'done'}: "
                f"{d.get('found', 0)} files, {d.get('added', 0)} added, "
                f"{d.get('updated', 0)} updated, {d.get('removed', 0)} removed, "
                f"{len(d.get('failed', []))} problems")
        self._show_message(text)
        self.scan_finished.emit(report)

    def _scan_done(self) -> None:
        self.scan_task = None
        for w in (self.scan_label, self.progress, self.cancel_button):
            w.setVisible(False)
        self.reload_tracks()
        if self._scan_queued:
            self._scan_queued = False
            self.start_scan()

    def cancel_scan(self) -> None:
        if self.scan_task is not None:
            self.scan_task.abort()
            self.scan_label.setText("cancelling...")

    def reload_tracks(self) -> None:
        self.tasks.start(Task(self.backend.tracks, name="Reading the library"),
                         returned=self._tracks_loaded)

    def _tracks_loaded(self, rows: list[TrackRow]) -> None:
        selected = self.library_view.selected_path()
        self.library_model.set_rows(rows)
        ok = sum(r.status == "ok" for r in rows)
        problems = len(rows) - ok
        text = f"{ok} tracks"
        if problems:
            text += f", {problems} problem{'s' * (problems != 1)}"
        self.count_label.setText(text)
        empty = not rows and not self.backend.folders()
        self.library_stack.setCurrentIndex(0 if empty else 1)
        if selected:
            self.select_path(selected)
        self.tracks_loaded.emit()

    def select_path(self, path: str) -> bool:
        for row in range(self.library_proxy.rowCount()):
            if self.library_proxy.path_at(row) == path:
                self.library_view.selectRow(row)
                return True
        return False

    # -- drag and drop of folders ---------------------------------------------------------

    def dragEnterEvent(self, event: QDragEnterEvent) -> None:  # noqa: N802 - Qt API
        urls = event.mimeData().urls() if event.mimeData().hasUrls() else []
        if any(u.isLocalFile() and os.path.isdir(u.toLocalFile()) for u in urls):
            event.acceptProposedAction()

    def dropEvent(self, event: QDropEvent) -> None:  # noqa: N802 - Qt API
        for url in event.mimeData().urls():
            if url.isLocalFile() and os.path.isdir(url.toLocalFile()):
                self.add_folder(url.toLocalFile())
        event.acceptProposedAction()

    # -- queries --------------------------------------------------------------------------

    def _focus_changed(self, _old: QWidget | None, new: QWidget | None) -> None:
        # Remember the last of the two track views that had focus: a context menu or a
        # toolbar click takes focus away, but the action is meant for that view's row.
        if new in (self.library_view, self.results_view):
            self._active_view = new

    def selected_track(self) -> str | None:
        """The track the actions apply to: the last focused view's row, else the library's."""
        if self._active_view is self.results_view:
            path = self.results_view.selected_path()
            if path:
                return path
        return self.library_view.selected_path() or self.results_view.selected_path()

    def _need_track(self) -> str | None:
        path = self.selected_track()
        if path is None:
            self._show_message("Select a track first")
        return path

    def find(self, by: str) -> None:
        """Neighbours of the selected track by ``key``, ``tempo`` or ``vibe``."""
        path = self._need_track()
        if path is None:
            return
        self._run_query(path, by)

    def find_blend(self) -> None:
        path = self._need_track()
        if path is None:
            return
        weights = {aspect: dial.value() / 100 for aspect, dial in self.dials.items()}
        if not any(weights.values()):
            self._show_message("Turn at least one aspect dial up")
            return
        self._run_query(path, weights)

    def _run_query(self, path: str, by: str | dict[str, float]) -> None:
        self.results_title.setText(f"Searching neighbours of {Path(path).name}...")
        self.tasks.start(Task(self.backend.query, path, by=by, k=self.k_spin.value(),
                              name="Query"), returned=self._show_results)

    def _show_results(self, result: QueryResult) -> None:
        self.results_model.set_result(result.query, result.by, result.neighbours)
        self.results_title.setText(f"{len(result.neighbours)} nearest by {result.by} to "
                                   f"{Path(result.query).name}")
        if result.neighbours:
            self.results_view.selectRow(1)
        self.results_ready.emit(result)

    # -- invariance curves ----------------------------------------------------------------

    def show_curves(self) -> None:
        """Pitch and tempo invariance curves of the selected track (cached, background)."""
        path = self._need_track()
        if path is None:
            return
        self._curve_path = path
        for plot in (self.pitch_plot, self.tempo_plot):
            cached = self.backend.cached_curve(path, plot.transform)
            if cached is not None:
                self._curve_done(path, plot, cached)
                continue
            plot.clear_curves()
            plot.set_message(f"computing {plot.transform} curve of {Path(path).name}...")
            self.tasks.start(Task(self.backend.curve, path, plot.transform,
                                  name=f"{plot.transform} invariance curve"),
                             returned=functools.partial(self._curve_done, path, plot))

    def _curve_done(self, path: str, plot: InvariancePlot, curve: dict[str, Any]) -> None:
        if path != self._curve_path:
            return  # the user asked for another track meanwhile
        plot.set_curve(curve, title=f"{Path(path).name}: {plot.transform}")
        plot.set_marker(self.audition.semitones if plot.transform == "pitch"
                        else self.audition.tempo)
        self.curve_ready.emit(plot.transform)

    # -- audition -------------------------------------------------------------------------

    def _library_row_changed(self, *_: Any) -> None:
        path = self.library_view.selected_path()
        if path and path != self.waveform.path:
            self.tasks.start(Task(load_for_audition, path, self.audition.sample_rate,
                                  name="Loading audio"),
                             returned=lambda r: self._audio_loaded(r, autoplay=False))

    def audition_path(self, path: str | None) -> None:
        if not path:
            return
        self.tasks.start(Task(load_for_audition, path, self.audition.sample_rate,
                              name="Loading audio"),
                         returned=lambda r: self._audio_loaded(r, autoplay=True))

    def _audio_loaded(self, result: tuple[str, Any, int, Any], *, autoplay: bool) -> None:
        path, y, sr, env = result
        self.waveform.set_envelope(path, env, len(y) / sr)
        self.audition.load(path, y, sr, autoplay=autoplay)
        self.audition_loaded.emit(path)

    def _waveform_clicked(self, event: Any) -> None:
        pos = self.waveform.plot.plotItem.vb.mapSceneToView(event.scenePos())
        self.audition.seek(float(pos.x()))

    def match_to_query(self) -> None:
        query, result = self.results_model.query, self.audition.path
        if not query or not result or query == result:
            self._show_message("Audition a result (not the query) to match it to the query")
            return
        self.tasks.start(Task(self.backend.match, query, result, name="Match to query"),
                         returned=self._matched)

    def _matched(self, m: dict[str, float]) -> None:
        self.audition.set_transform(semitones=m["shift"], tempo=m["stretch"])
        self._show_message(f"Matched to the query: {m['shift']:+.2f} semitones, "
                           f"{m['stretch']:.3f}x tempo")
        self.match_ready.emit(m)

    # -- drag out, export, reveal -----------------------------------------------------------

    def _render_for_drag(self, path: str) -> Path:
        """The file a drag carries: with a transform set, the rendered clip."""
        if path != self.audition.path:
            return Path(path)  # the transform belongs to the auditioned track only
        try:
            QApplication.setOverrideCursor(Qt.CursorShape.WaitCursor)
            return self.backend.render(path, semitones=self.audition.semitones,
                                       tempo=self.audition.tempo)
        except Exception as e:  # noqa: BLE001 - the one handler shows it
            self.errors.handle("Render for drag", e)
            return Path(path)
        finally:
            QApplication.restoreOverrideCursor()

    def export(self) -> None:
        path = self.audition.path or self.selected_track()
        if not path:
            self._show_message("Audition or select a track to export")
            return
        semis, tempo = (self.audition.semitones, self.audition.tempo) \
            if path == self.audition.path else (0.0, 1.0)
        suggested = str(Path(path).with_name(f"{Path(path).stem} ({semis:+.1f}st {tempo:.2f}x).wav"))
        out, _ = QFileDialog.getSaveFileName(self, "Export", suggested, "WAV (*.wav)")
        if out:
            self.tasks.start(Task(self.backend.render, path, semitones=semis, tempo=tempo,
                                  out=out, name="Export"),
                             returned=lambda p: self._show_message(f"Exported {p}"))

    def reveal(self) -> None:
        path = self._need_track()
        if path:
            QDesktopServices.openUrl(QUrl.fromLocalFile(str(Path(path).parent)))

    # -- settings and state ---------------------------------------------------------------

    def open_settings(self) -> None:
        dialog = SettingsDialog(str(self.settings.value("checkpoint", "") or ""),
                                str(self.settings.value("library", "") or ""), self)
        if dialog.exec():
            self.apply_settings(*dialog.values())

    def apply_settings(self, checkpoint: str, library: str) -> None:
        if self.tasks.busy():
            self.tasks.abort_all()
            self.tasks.wait(10000)
        self.settings.setValue("checkpoint", checkpoint)
        self.settings.setValue("library", library)
        self.backend.close()
        self.backend = Backend(library or None, checkpoint or None)
        self.results_model.clear()
        self._refresh_folders()
        self._say_model()
        self.reload_tracks()
        # A new model re-embeds the library; the scan says so in its report.
        if self.backend.folders():
            self.start_scan()

    def _restore_state(self) -> None:
        s = self.settings
        if s.value("geometry") is not None:
            self.restoreGeometry(s.value("geometry"))
        else:
            self.resize(1400, 860)
        if s.value("state") is not None:
            self.restoreState(s.value("state"))
        for name in ("main_splitter", "top_splitter", "bottom_splitter"):
            if s.value(name) is not None:
                getattr(self, name).restoreState(s.value(name))
        if s.value("library_header") is not None:
            self.library_view.horizontalHeader().restoreState(s.value("library_header"))

    def save_state(self) -> None:
        s = self.settings
        s.setValue("geometry", self.saveGeometry())
        s.setValue("state", self.saveState())
        for name in ("main_splitter", "top_splitter", "bottom_splitter"):
            s.setValue(name, getattr(self, name).saveState())
        s.setValue("library_header", self.library_view.horizontalHeader().saveState())
        s.setValue("k", self.k_spin.value())
        s.sync()

    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802 - Qt API
        self.save_state()
        self.tasks.abort_all()
        self.tasks.wait(15000)
        self.audition.shutdown()
        self.backend.close()
        super().closeEvent(event)


def _smoke_test(app: QApplication, window: MainWindow) -> None:
    """Say the window opened, embed a short generated audio file through the embedding
    process (when a model is installed: the bundle's decoder, its onnxruntime and its spawn
    child), then quit."""
    print(f"smoke test: window {window.width()}x{window.height()} '{window.windowTitle()}' "
          f"opened, {window.library_model.rowCount()} tracks", flush=True)
    tmp = tempfile.TemporaryDirectory(prefix="loev-smoke-")

    def quit_with(code: int, text: str) -> None:
        print(f"smoke test: {text}", flush=True)
        tmp.cleanup()
        window.close()
        app.exit(code)

    from engine.resources import default_checkpoint

    if window.backend.checkpoint is None and not default_checkpoint().exists():
        quit_with(0, "no model installed; embedding not tried")
        return

    def embed() -> str:
        import numpy as np
        import soundfile as sf

        # Two seconds of an A4 tone with a click every half second, written as the FLAC a
        # user would drop in: decoding, resampling and the network all run.
        sr = 44100
        t = np.arange(2 * sr) / sr
        y = 0.3 * np.sin(2 * np.pi * 440.0 * t)
        y[(np.arange(t.size) % (sr // 2)) < 100] += 0.5
        path = os.path.join(tmp.name, "smoke-test.flac")
        sf.write(path, y.astype(np.float32), sr)
        vecs = window.backend.embedder.embed_file(path)
        if not all(np.isfinite(v).all() and abs(float(np.linalg.norm(v)) - 1.0) < 1e-3
                   for v in vecs.values()):
            raise RuntimeError(f"embedding of {path} is not unit-norm and finite")
        return ", ".join(f"{name} {v.shape[0]}" for name, v in vecs.items())

    task = Task(embed, name="smoke-test embedding")
    task.signals.errored.connect(lambda err: quit_with(1, f"embedding failed: {err.exc}"))
    window.tasks.start(task, returned=lambda dims: quit_with(0, f"embedded a file ({dims}); quitting"))


def run_app(argv: list[str] | None = None) -> int:
    """Open the window (``loev`` with no arguments); ``--smoke-test`` (or LOEV_SMOKE_TEST=1)
    opens it, lets it settle and quits: the bundle's start-up check."""
    argv = list(sys.argv[1:] if argv is None else argv)
    smoke = "--smoke-test" in argv or os.environ.get("LOEV_SMOKE_TEST") == "1"
    from app.theme import apply_dark_theme

    app = QApplication.instance() or QApplication([sys.argv[0]] + [a for a in argv if a != "--smoke-test"])
    app.setApplicationName(APP_TITLE)
    app.setOrganizationName("loev-explorer")
    apply_dark_theme(app)
    window = MainWindow()
    window.errors.install_excepthook()
    window.show()
    if smoke:
        # The first turn of the event loop after show(): what benchmarks/bundle.py times.
        QTimer.singleShot(0, lambda: print("smoke test: window shown", flush=True))
        QTimer.singleShot(1500, lambda: _smoke_test(app, window))
    code = int(app.exec())
    import shiboken6

    # Delete the window (and its pyqtgraph items) while the QApplication still exists:
    # left to the interpreter's teardown, the order is arbitrary and can crash.
    if shiboken6.isValid(window):
        shiboken6.delete(window)
    return code
