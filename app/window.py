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
from PySide6.QtGui import (QAction, QCloseEvent, QDesktopServices, QDragEnterEvent, QDropEvent,
                           QIcon, QKeySequence)
from PySide6.QtWidgets import (QApplication, QComboBox, QDial, QDoubleSpinBox, QFileDialog,
                               QGridLayout, QGroupBox, QHBoxLayout, QLabel, QLineEdit,
                               QListWidget, QMainWindow, QMessageBox, QProgressBar, QPushButton,
                               QSpinBox, QSplitter, QStackedWidget, QToolBar, QToolButton,
                               QVBoxLayout, QWidget)

from app import collections_ui
from app.audition import AuditionPanel
from app.backend import Backend, QueryResult, TrackRow
from app.errors import ErrorHandler, setup_logging
from app.folders import FolderWatcher, folders_of
from app.models import (PATH_ROLE, LibraryFilterProxy, LibraryTableModel, ResultsModel, key_label,
                        keys_in_order)
from app.plots import SUBSPACE_COLOURS, InvariancePlot, WaveformView, envelope
from app.settings import NOTATION_KEY, SettingsDialog, app_settings, key_notation, output_devices
from app.views import LibraryView, ResultsView
from app.workers import Task, TaskError, TaskRunner
from engine import keys, sync
from engine.model.heads import LOW_CONFIDENCE, Estimate, aspect_caveat

APP_TITLE = "LOEV Explorer"
ASPECTS = (("key", "Key", "pitch"), ("tempo", "Tempo", "tempo"), ("vibe", "Vibe", "invariant"))
# How long the filter box waits for a pause in typing before it filters.
FILTER_DELAY_MS = 180
# The project BPM box's lowest value stands for "no project BPM".
NO_BPM = 39.0
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".mp3", ".aif", ".aiff", ".aifc", ".m4a",
                    ".opus", ".wv")


def icon_path(name: str) -> Path:
    from engine.resources import resource_path

    return resource_path(f"icons/{name}")


def default_player(device: str = "") -> tuple[Any, str | None, str | None]:
    """An audition player on the sound card's output ``device`` (its default when empty)
    and the device's name; without a device, a player on a silent simulated sink and
    the reason. Runs in a worker: opening a device can block."""
    from engine.audio.player import AuditionPlayer
    from engine.audio.sinks import SimulatedSink, SoundDeviceSink
    from engine.errors import AudioDeviceError

    try:
        player = AuditionPlayer(sink=SoundDeviceSink(device=device or None))
    except AudioDeviceError as e:
        return AuditionPlayer(sink=SimulatedSink()), str(e), None
    try:
        import sounddevice

        name = str(sounddevice.query_devices(device or None, kind="output")["name"])
    except Exception:  # noqa: BLE001 - the name is only for the status bar
        name = device or None
    return player, None, name


def load_for_audition(path: str, sr: int) -> tuple[str, Any, int, Any]:
    """Decode ``path`` ([T, C] at the player's rate ``sr``, channels kept) and its
    envelope, in a worker."""
    from engine.audio.decode import load_audio_channels

    y, _ = load_audio_channels(path, sr=sr)
    return path, y, sr, envelope(y.mean(axis=1))


FILTER_HELP = ("Words match the name, folder or status. Fields: key:Am, key:8A, key:1m, "
               "key:none; bpm:128, bpm:120-128, bpm:none; type:kick (a prefix will do: "
               "type:perc). Commas give alternatives: key:8A,9A")


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
    exported = Signal(str)
    scan_summary = Signal(str)

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
        self._pending_summary: str | None = None
        self._player_factory = player_factory
        self._audition_request: str | None = None
        self.notation = key_notation(self.settings)
        self.filter_error = ""
        self.watch_delay_ms = 1000
        self._curve_follow = QTimer(self)
        self._curve_follow.setSingleShot(True)
        self._curve_follow.setInterval(400)
        self._curve_follow.timeout.connect(
            lambda: self.audition.path and self.audition.path != self._curve_path
            and self.show_curves_for(self.audition.path))
        self.setWindowTitle(APP_TITLE)
        self.setAcceptDrops(True)
        if icon_path("loev-256.png").exists():
            self.setWindowIcon(QIcon(str(icon_path("loev-256.png"))))
        self._make_actions()
        self._build()
        collections_ui.install(self)  # map, duplicates, star, collections
        self._restore_state()
        self._project_changed()  # the remembered project applies to the results
        QApplication.instance().focusChanged.connect(self._focus_changed)
        self.watcher = FolderWatcher(self)
        self.watcher.changed.connect(self._folders_changed)
        self._refresh_folders()
        self.reload_tracks()
        self._say_model()
        self.open_player()

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
        self.find_key_shifted_action = a(
            "Find same key at +N", lambda: self.find("key", shifted=True), "Ctrl+5",
            "What would fit if this track were transposed by the 'at' semitones")
        self.find_tempo_stretched_action = a(
            "Find same tempo at xR", lambda: self.find("tempo", shifted=True), "Ctrl+6",
            "What would fit if this track were played at the 'at' tempo ratio")
        self.find_compatible_action = a(
            "Find compatible keys", self.find_compatible, "Ctrl+7",
            "Tracks in keys that mix with this one's (same, a fifth up or down, the relative "
            "major or minor), nearest in the pitch space first")
        self.curves_action = a("Show invariance curves", self.show_curves, "Ctrl+I")
        self.reveal_action = a("Reveal in folder", self.reveal, "Ctrl+R")
        self.export_action = a("Export", self.export, "Ctrl+E",
                               "Save the auditioned track with its pitch/tempo transform "
                               "(24-bit WAV, the source's channels and rate) to the export "
                               "folder")
        self.export_to_action = a("Export to folder...", self.choose_export_folder, None,
                                  "Choose the folder exports go to")
        self.autoplay_action = a("Auto-play", lambda: None, None,
                                 "Play a track as soon as it is selected (arrow keys "
                                 "move and play)")
        self.autoplay_action.setCheckable(True)
        self.autoplay_action.setChecked(
            str(self.settings.value("autoplay", "true")).lower() != "false")
        self.autoplay_action.toggled.connect(lambda on: self.settings.setValue("autoplay", on))
        self.curves_panel_action = a("Curves", lambda: None, None,
                                     "Show or hide the invariance curves panel")
        self.curves_panel_action.setCheckable(True)
        self.curves_panel_action.toggled.connect(self._show_curves_panel)
        self.settings_action = a("Settings...", self.open_settings, "Ctrl+,")
        self.quit_action = a("Quit", self.close, "Ctrl+Q")
        self.track_actions: list[QAction | None] = [
            self.find_key_action, self.find_tempo_action, self.find_vibe_action,
            self.find_blend_action, self.find_key_shifted_action,
            self.find_tempo_stretched_action, self.find_compatible_action, None,
            self.curves_action, self.reveal_action,
            self.export_action, self.export_to_action]

    def _build(self) -> None:
        toolbar = QToolBar("Main", self)
        toolbar.setObjectName("mainToolbar")
        toolbar.setMovable(False)
        # Short labels on the toolbar (the menus and tooltips keep the full ones), and the
        # selected track's curves left to the "Curves" panel, Ctrl+I and the context menu:
        # room for the project key and BPM without pushing the marks chooser off the edge.
        for action, short in ((self.find_key_action, "Same key"),
                              (self.find_tempo_action, "Same tempo"),
                              (self.find_vibe_action, "Similar vibe"),
                              (self.find_blend_action, "Blend"),
                              (self.reveal_action, "Reveal")):
            action.setIconText(short)
        for action in (self.add_folder_action, self.rescan_action, None,
                       self.find_key_action, self.find_tempo_action, self.find_vibe_action,
                       self.find_blend_action, self.reveal_action, None,
                       self.export_action, self.autoplay_action, self.curves_panel_action,
                       self.settings_action):
            toolbar.addSeparator() if action is None else toolbar.addAction(action)
        toolbar.addSeparator()
        self._build_project(toolbar)
        self.addToolBar(toolbar)

        self.top_splitter = QSplitter(Qt.Orientation.Horizontal)
        self.top_splitter.addWidget(self._build_sidebar())
        self.top_splitter.addWidget(self._build_library())
        self.top_splitter.addWidget(self._build_results())
        self.top_splitter.setStretchFactor(1, 3)
        self.top_splitter.setStretchFactor(2, 2)
        self.bottom_splitter = QSplitter(Qt.Orientation.Horizontal)
        self.bottom_splitter.addWidget(self._build_player())
        # The curves are a panel a producer opens when wanted (Ctrl+I or "Curves"),
        # not a fixed share of the screen.
        self.pitch_plot = InvariancePlot("pitch")
        self.tempo_plot = InvariancePlot("tempo")
        self.curves_panel = QWidget()
        h = QHBoxLayout(self.curves_panel)
        h.setContentsMargins(0, 0, 0, 0)
        h.addWidget(self.pitch_plot)
        h.addWidget(self.tempo_plot)
        self.curves_panel.setVisible(False)
        self.bottom_splitter.addWidget(self.curves_panel)
        self.bottom_splitter.setStretchFactor(0, 3)
        self.bottom_splitter.setStretchFactor(1, 3)
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
        self.audition.lock_button.toggled.connect(lambda on: self.settings.setValue("lock", on))
        self.audition.lock_button.setChecked(str(self.settings.value("lock", "false")) == "true")
        self.audition.player_error.connect(lambda e: self.errors.handle("Audition", e))

    def _build_project(self, toolbar: QToolBar) -> None:
        """The project key and BPM: when set, every preview plays in them (engine.sync)."""
        self.project_key_combo = QComboBox()
        self.project_key_combo.setToolTip(
            "Project key: every preview is transposed to it (or to its relative major or "
            "minor) by at most 6 semitones")
        self.project_bpm_spin = QDoubleSpinBox()
        self.project_bpm_spin.setRange(NO_BPM, 300.0)
        self.project_bpm_spin.setDecimals(1)
        self.project_bpm_spin.setSingleStep(1.0)
        self.project_bpm_spin.setSpecialValueText("BPM: none")
        self.project_bpm_spin.setSuffix(" BPM")
        self.project_bpm_spin.setToolTip(
            "Project BPM: every preview with a tempo is stretched to it (counted in half or "
            "double time when that is nearer); lowest value = none")
        self.project_bpm_spin.setKeyboardTracking(False)  # "128" typed is one change, not three
        self._fill_project_keys(self._saved_project_key())
        try:
            bpm = float(self.settings.value("project/bpm", NO_BPM) or NO_BPM)
        except (TypeError, ValueError):
            bpm = NO_BPM
        self.project_bpm_spin.setValue(bpm if bpm > NO_BPM else NO_BPM)
        self.project_key_combo.currentIndexChanged.connect(lambda _i: self._project_changed())
        self.project_bpm_spin.valueChanged.connect(lambda _v: self._project_changed())
        label = QLabel(" Project ")
        label.setObjectName("paneTitle")
        for w in (label, self.project_key_combo, self.project_bpm_spin):
            toolbar.addWidget(w)

    def _saved_project_key(self) -> int | None:
        try:
            value = int(self.settings.value("project/key", -1))
        except (TypeError, ValueError):
            return None
        return value if 0 <= value < keys.N_KEYS else None

    def _fill_project_keys(self, selected: int | None) -> None:
        """The key chooser in the current notation: "none", then the 24 keys."""
        combo = self.project_key_combo
        combo.blockSignals(True)
        combo.clear()
        combo.addItem("Key: none", -1)
        for k in keys_in_order(self.notation):
            combo.addItem(f"Key: {key_label(k, self.notation)}", k)
            combo.setItemData(combo.count() - 1, keys.key_name(k), Qt.ItemDataRole.ToolTipRole)
        combo.setCurrentIndex(max(0, combo.findData(-1 if selected is None else selected)))
        combo.blockSignals(False)

    def project(self) -> tuple[int | None, float | None]:
        """The project key (engine.keys index) and BPM; None for what is not set."""
        k = self.project_key_combo.currentData()
        bpm = self.project_bpm_spin.value()
        return (None if k is None or k < 0 else int(k)), (None if bpm <= NO_BPM else float(bpm))

    def set_project(self, key: int | None, bpm: float | None) -> None:
        """Set the toolbar's project key and BPM (None: not set)."""
        self.project_key_combo.setCurrentIndex(
            max(0, self.project_key_combo.findData(-1 if key is None else key)))
        self.project_bpm_spin.setValue(NO_BPM if bpm is None else float(bpm))

    def project_transform(self, path: str) -> tuple[float | None, float | None]:
        """The shift and ratio that play ``path`` in the project (engine.sync); None for
        what the project leaves to the audition (no project key / BPM)."""
        key, bpm = self.project()
        e = self.results_model.estimates.get(path)
        s = sync.project_sync(e.key if e else None, e.bpm if e else None, key, bpm)
        return (None if key is None else float(s.semitones)), (None if bpm is None else s.tempo)

    def _project_changed(self) -> None:
        key, bpm = self.project()
        self.settings.setValue("project/key", -1 if key is None else key)
        self.settings.setValue("project/bpm", NO_BPM if bpm is None else bpm)
        self.results_model.set_project(key, bpm)
        self.results_view.setColumnHidden(ResultsModel.PLAYS_AT, key is None and bpm is None)
        path = self.audition.path
        if path:  # the track that plays follows the project at once
            shift, ratio = self.project_transform(path)
            self.audition.set_transform(semitones=0.0 if shift is None else shift,
                                        tempo=1.0 if ratio is None else ratio)

    def set_notation(self, notation: str) -> None:
        """Write keys in ``notation`` (app.models.NOTATIONS) everywhere, and remember it."""
        self.library_model.set_notation(notation)
        self.notation = notation
        self.settings.setValue(NOTATION_KEY, notation)
        self._fill_project_keys(self.project()[0])

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
        self.dial_labels: dict[str, QLabel] = {}
        for col, (aspect, label, subspace) in enumerate(ASPECTS):
            dial = QDial()
            dial.setRange(0, 100)
            dial.setValue(int(self.settings.value(f"blend/{aspect}",
                                                  100 if aspect == "vibe" else 50)))
            dial.setNotchesVisible(True)
            dial.setFixedSize(52, 52)
            dial.setToolTip(f"Weight of {label.lower()} in 'Find by aspect blend'")
            text = QLabel()
            text.setAlignment(Qt.AlignmentFlag.AlignCenter)
            colour = SUBSPACE_COLOURS[subspace]

            def show(value: int, text: QLabel = text, label: str = label,
                     colour: str = colour, aspect: str = aspect) -> None:
                text.setText(f"<span style='color:{colour}'>{label} {value}</span>")
                self.settings.setValue(f"blend/{aspect}", value)

            dial.valueChanged.connect(show)
            show(dial.value())
            grid.addWidget(dial, 0, col)
            grid.addWidget(text, 1, col)
            self.dials[aspect] = dial
            self.dial_labels[aspect] = text
        blend = QPushButton("Find by blend")
        blend.clicked.connect(self.find_blend)
        grid.addWidget(blend, 2, 0, 1, 3)
        self.k_spin = QSpinBox()
        self.k_spin.setRange(1, 200)
        self.k_spin.setValue(int(self.settings.value("k", 20)))
        self.k_spin.setPrefix("results: ")
        grid.addWidget(self.k_spin, 3, 0, 1, 3)
        # "Find same key at +N" / "Find same tempo at xR": the query as if transposed.
        self.shift_spin = QSpinBox()
        self.shift_spin.setRange(-12, 12)
        self.shift_spin.setPrefix("key at ")
        self.shift_spin.setSuffix(" st")
        self.shift_spin.setToolTip("Find same key at +N: search as if the track were "
                                   "transposed by this many semitones")
        self.stretch_spin = QDoubleSpinBox()
        self.stretch_spin.setRange(0.5, 2.0)
        self.stretch_spin.setSingleStep(0.05)
        self.stretch_spin.setValue(1.0)
        self.stretch_spin.setPrefix("tempo at x")
        self.stretch_spin.setToolTip("Find same tempo at xR: search as if the track were "
                                     "played at this tempo ratio")
        for row, (spin, action, text) in enumerate((
                (self.shift_spin, self.find_key_shifted_action, "Find"),
                (self.stretch_spin, self.find_tempo_stretched_action, "Find"))):
            button = QToolButton()
            button.setDefaultAction(action)
            button.setText(text)
            grid.addWidget(spin, 4 + row, 0, 1, 2)
            grid.addWidget(button, 4 + row, 2)

        side = QWidget()
        v = QVBoxLayout(side)
        v.setContentsMargins(0, 0, 0, 0)
        v.addWidget(folders_box, 1)
        v.addWidget(blend_box)
        return side

    def _build_library(self) -> QWidget:
        self.library_model = LibraryTableModel(self)
        self.library_model.set_notation(self.notation)
        self.library_proxy = LibraryFilterProxy(self)
        self.library_proxy.setSourceModel(self.library_model)
        self.library_view = LibraryView(self.track_actions)
        self.library_view.setModel(self.library_proxy)
        self.library_view.sortByColumn(0, Qt.SortOrder.AscendingOrder)
        for column, width in enumerate((200, 70, 44, 52, 78, 64)):
            self.library_view.setColumnWidth(column, width)
        self.library_view.render_for_drag = self._render_for_drag
        self.library_view.doubleClicked.connect(
            lambda index: self.audition_path(index.data(PATH_ROLE)))
        self.library_view.activated_path.connect(self.audition_path)
        # selectionChanged, not currentRowChanged: on a click Qt moves the current index
        # before it updates the selection, so reading the selection there gave the
        # previous row.
        self.library_view.selectionModel().selectionChanged.connect(self._library_selected)
        self.filter_edit = QLineEdit()
        self.filter_edit.setPlaceholderText("Filter: name, folder, key:8A bpm:120-128 type:kick "
                                            "(Ctrl+F)")
        self.filter_edit.setClearButtonEnabled(True)
        self.filter_edit.setToolTip(FILTER_HELP)
        # Typing re-filters once it pauses, not per keystroke: a pass costs about 0.35 s at
        # 50 000 rows (benchmarks/library_table.py). Enter applies at once.
        self._filter_timer = QTimer(self)
        self._filter_timer.setSingleShot(True)
        self._filter_timer.setInterval(FILTER_DELAY_MS)
        self._filter_timer.timeout.connect(self.flush_filter)
        self.filter_edit.textChanged.connect(self._filter_edited)
        self.filter_edit.returnPressed.connect(self.flush_filter)
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

    def _filter_edited(self, text: str) -> None:
        if not text:  # cleared (the box's clear button): the whole library back at once
            self.flush_filter()
        else:
            self._filter_timer.start()  # restarts: the pass waits for a pause in typing

    def flush_filter(self) -> None:
        """Apply the filter box's text now (Enter, or the pause after typing)."""
        self._filter_timer.stop()
        self.apply_filter(self.filter_edit.text())

    def apply_filter(self, text: str) -> None:
        """Filter the table by the box's text; a word it cannot read is said (status bar,
        tooltip, orange text) and left out, while the rest filters."""
        parsed = self.library_proxy.set_filter_text(text)
        self.filter_error = "; ".join(parsed.errors)
        self.filter_edit.setStyleSheet("QLineEdit { color: #e0a040; }" if parsed.errors else "")
        self.filter_edit.setToolTip(f"{self.filter_error}\n\n{FILTER_HELP}" if parsed.errors
                                    else FILTER_HELP)
        if parsed.errors:
            self._show_message(f"Filter: {self.filter_error}")

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
            lambda: self.results_model.query and self.audition_path(self.results_model.query,
                                                                    as_is=True))
        self.results_view.selectionModel().selectionChanged.connect(self._result_selected)
        self.results_title = QLabel("Results: right-click a track, Find same key/tempo/vibe")
        self.results_title.setObjectName("paneTitle")
        self.results_title.setWordWrap(True)
        hint = QLabel("Click or Space: audition · Q: query as it is (A/B) · drag a row into "
                      "your DAW · drop a file here to search with it")
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
        self.sound_label = QLabel("sound: opening...")
        self.sound_label.setTextFormat(Qt.TextFormat.PlainText)  # a device name is data
        bar.addPermanentWidget(self.sound_label)
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

    def open_player(self) -> None:
        """Open the audition player (on the device chosen in Settings) in a worker."""
        device = str(self.settings.value("audio/device", "") or "")
        factory = self._player_factory or functools.partial(default_player, device)
        self.sound_label.setText("sound: opening...")
        self.tasks.start(Task(factory, name="opening the audio device"),
                         returned=self._player_opened)

    def _player_opened(self, result: tuple[Any, ...]) -> None:
        player, warning, name = (tuple(result) + (None,))[:3]
        old = self.audition.player
        self.audition.set_player(player)
        if old is not None and old is not player:
            close = getattr(old, "close", None)
            if close is not None:
                close()
        self.audition.volume = int(self.settings.value("audio/volume", 100)) / 100
        self.audition.set_output_available(not warning, warning or "")
        if warning:
            self.sound_label.setText("no audio output")
            self.sound_label.setToolTip(f"{warning}. Everything else works; choose an "
                                        "output in Settings")
            self.errors.once("audio", f"No sound: {warning}. Everything else works")
        else:
            name = name or getattr(player, "device_name", None) or "audio output"
            self.sound_label.setText(f"sound: {name}")
            self.sound_label.setToolTip(f"Sound goes to {name} (Settings to change it)")
        self.player_ready.emit()

    # -- folders and scanning -------------------------------------------------------------

    def _refresh_folders(self) -> None:
        folders = self.backend.folders()
        self.folder_list.clear()
        self.folder_list.addItems(folders)
        self.watcher.delay_ms = self.watch_delay_ms
        self.watcher.watch(folders, exclude=str(self.backend.library_dir))

    def _adopt_scanned_folders(self, rows: list[TrackRow]) -> None:
        """A library filled by `loev scan` has tracks but no folder list: list the folders
        the tracks came from, so they can be rescanned and removed here."""
        # Only when the list is empty: a folder added here may hold symlinks to files
        # elsewhere, whose real paths are not a folder the user meant to add.
        if self.scan_task is not None or self.backend.folders():
            return
        found = folders_of(r.path for r in rows if r.status != "deleted")
        added = False
        for folder in found:
            if os.path.isdir(folder):
                self.backend.add_folder(folder)
                added = True
        if added:
            self._refresh_folders()

    def _folders_changed(self, folders: list[str]) -> None:
        """Files came, went or changed in watched folders: rescan those."""
        known = self.backend.folders()
        wanted = [f for f in known if os.path.realpath(f) in folders]
        if wanted:
            self._show_message(f"Changes in {', '.join(Path(f).name for f in wanted)}; "
                               "scanning...")
            self.start_scan(wanted)

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
        answer = QMessageBox.question(
            self, "Remove folder",
            f"Remove {item.text()} and its tracks from the library?\n"
            "The files themselves stay where they are.",
            QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
            QMessageBox.StandardButton.No)
        if answer == QMessageBox.StandardButton.Yes:
            self.remove_folder(item.text())

    def remove_folder(self, folder: str) -> None:
        if self.scan_task is not None:
            self._show_message("Wait for the scan to finish (or cancel it) before removing a folder")
            return
        self.tasks.start(Task(self.backend.remove_folder, folder, name="Remove folder"),
                         returned=lambda n: self._folder_removed(folder, n))

    def _folder_removed(self, folder: str, n: int) -> None:
        self.results_model.remove_under(folder)
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
        # The problem count comes from the catalogue once the table is reloaded: the
        # report's "failed" lists only the files that failed in this scan, not those
        # that were already known to be bad.
        self._pending_summary = (f"Scan {'cancelled' if d.get('cancelled') else 'done'}: "
                                 f"{d.get('found', 0)} files, {d.get('added', 0)} added, "
                                 f"{d.get('updated', 0)} updated, "
                                 f"{d.get('removed', 0)} removed")
        self._show_message(self._pending_summary + "...")
        self.scan_finished.emit(report)

    def _scan_done(self) -> None:
        self.scan_task = None
        for w in (self.scan_label, self.progress, self.cancel_button):
            w.setVisible(False)
        self.reload_tracks()
        self._refresh_folders()  # new subfolders are watched too
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
        self.results_model.set_estimates({r.path: r.estimate for r in rows
                                          if r.estimate is not None})
        ok = sum(r.status == "ok" for r in rows)
        problems = len(rows) - ok
        text = f"{ok} tracks"
        if problems:
            text += f", {problems} problem{'s' * (problems != 1)}"
        self.count_label.setText(text)
        if self._pending_summary and self.scan_task is None:
            summary = (f"{self._pending_summary}, {problems} "
                       f"problem{'s' * (problems != 1)} in the library")
            self._pending_summary = None
            self._show_message(summary)
            self.scan_summary.emit(summary)
        self._adopt_scanned_folders(rows)
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

    @staticmethod
    def _dropped(event: QDragEnterEvent | QDropEvent) -> tuple[list[str], list[str]]:
        """The folders and the audio files a drag carries."""
        urls = event.mimeData().urls() if event.mimeData().hasUrls() else []
        paths = [u.toLocalFile() for u in urls if u.isLocalFile()]
        folders = [p for p in paths if os.path.isdir(p)]
        files = [p for p in paths if os.path.isfile(p)
                 and Path(p).suffix.lower() in AUDIO_EXTENSIONS]
        return folders, files

    def dragEnterEvent(self, event: QDragEnterEvent) -> None:  # noqa: N802 - Qt API
        folders, files = self._dropped(event)
        if folders or files:
            event.acceptProposedAction()

    def dropEvent(self, event: QDropEvent) -> None:  # noqa: N802 - Qt API
        """A folder is added to the library; an audio file (from anywhere) is searched
        with, embedded on the fly, as ``loev query FILE`` does."""
        folders, files = self._dropped(event)
        for folder in folders:
            self.add_folder(folder)
        if files:
            self._run_query(files[0], "vibe")
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

    def find(self, by: str, *, shifted: bool = False) -> None:
        """Neighbours of the selected track by ``key``, ``tempo`` or ``vibe``; ``shifted``:
        as if the track were transposed by the "key at" semitones (key) or played at the
        "tempo at" ratio (tempo)."""
        path = self._need_track()
        if path is None:
            return
        if not shifted:
            self._run_query(path, by)
        elif by == "key":
            self._run_query(path, by, shift=float(self.shift_spin.value()))
        else:
            self._run_query(path, by, stretch=float(self.stretch_spin.value()))

    def find_blend(self) -> None:
        path = self._need_track()
        if path is None:
            return
        weights = {aspect: dial.value() / 100 for aspect, dial in self.dials.items()}
        if not any(weights.values()):
            self._show_message("Turn at least one aspect dial up")
            return
        self._run_query(path, weights)

    def _run_query(self, path: str, by: str | dict[str, float], *, shift: float = 0.0,
                   stretch: float = 1.0) -> None:
        self.results_title.setText(f"Searching neighbours of {Path(path).name}...")
        known = frozenset(self.results_model.estimates)
        if shift == 0.0 and stretch == 1.0:
            task = Task(query_with_estimates, self.backend, known, self.backend.query, path,
                        by=by, k=self.k_spin.value(), name="Query")
        else:
            task = Task(query_with_estimates, self.backend, known, transposed_query,
                        self.backend, path, by=str(by), k=self.k_spin.value(), shift=shift,
                        stretch=stretch, name="Query")
        self.tasks.start(task, returned=self._show_found)

    def find_compatible(self) -> None:
        """Tracks in keys compatible with the selected track's, nearest in the pitch space
        first (Session.compatible)."""
        path = self._need_track()
        if path is None:
            return
        self.results_title.setText(f"Searching compatible keys of {Path(path).name}...")
        known = frozenset(self.results_model.estimates)
        self.tasks.start(Task(query_with_estimates, self.backend, known,
                              self.backend.compatible, path, k=self.k_spin.value(),
                              name="Find compatible keys"), returned=self._show_found)

    def _show_found(self, found: tuple[QueryResult, dict[str, Estimate]]) -> None:
        """Show a query's results with the estimates analysed for its files that had none
        stored: their offsets, what they play at, and the project sync of their audition."""
        result, analysed = found
        self.results_model.add_estimates(analysed)
        path = self.audition.path
        if path in analysed:  # it was loaded before its estimate came: sync it now
            shift, ratio = self.project_transform(path)
            self.audition.set_transform(semitones=shift, tempo=ratio)
        self._show_results(result)

    def _show_results(self, result: QueryResult) -> None:
        self.results_model.set_result(result.query, result.by, result.neighbours)
        name = Path(result.query).name
        e = self.results_model.estimates.get(result.query)
        if result.by == "compatible keys" and e is not None and e.key is not None:
            wheel = " ".join(key_label(k, self.notation) for k in keys.compatible_keys(e.key))
            self.results_title.setText(f"{len(result.neighbours)} in keys compatible with "
                                       f"{name} ({wheel})")
        else:
            self.results_title.setText(f"{len(result.neighbours)} nearest by {result.by} to {name}"
                                       f"{aspect_caveat(result.by, e)}")
        if result.neighbours:
            self.results_view.selectRow(1)
        self.results_ready.emit(result)

    # -- invariance curves ----------------------------------------------------------------

    def _show_curves_panel(self, on: bool) -> None:
        self.curves_panel.setVisible(on)
        if on and self.audition.path and self.audition.path != self._curve_path:
            self.show_curves_for(self.audition.path)

    def show_curves(self) -> None:
        """Open the curves panel on the selected track (then it follows what plays)."""
        path = self._need_track()
        if path is None:
            return
        self.curves_panel_action.setChecked(True)
        self.show_curves_for(path)

    def show_curves_for(self, path: str) -> None:
        """Pitch and tempo invariance curves of ``path`` (cached, background)."""
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

    def _library_selected(self, *_: Any) -> None:
        # Called after Qt updated the selection (a click, an arrow key, selectRow).
        path = self.library_view.selected_path()
        if path and path != self.audition.path:
            self.audition_path(path, autoplay=self.autoplay_action.isChecked())

    def _result_selected(self, *_: Any) -> None:
        # Arrow keys in the results; a selection the window makes itself stays silent.
        path = self.results_view.selected_path()
        if path and self.results_view.hasFocus() and path != self.audition.path:
            self.audition_path(path, autoplay=self.autoplay_action.isChecked(),
                               as_is=path == self.results_model.query)

    def audition_path(self, path: str | None, *, autoplay: bool = True,
                      as_is: bool = False) -> None:
        """Load ``path`` into the player and the waveform (and play it); ``as_is``: without
        the audition's transform, even a locked one (the query on Q)."""
        if not path:
            return
        self._audition_request = path
        self.tasks.start(Task(load_for_audition, path, self.audition.sample_rate,
                              name="Loading audio"),
                         returned=lambda r: self._audio_loaded(r, autoplay=autoplay,
                                                               as_is=as_is))

    def _audio_loaded(self, result: tuple[str, Any, int, Any], *, autoplay: bool,
                      as_is: bool = False) -> None:
        path, y, sr, env = result
        if path != self._audition_request:
            return  # an older request finished after a newer one: the newer one wins
        self.waveform.set_envelope(path, env, len(y) / sr)
        self.audition.load(path, y, sr, autoplay=autoplay, as_is=as_is,
                           project=self.project_transform(path))
        if self.curves_panel.isVisible() and path != self._curve_path:
            # The curves follow the track that plays, once the user stops on one: arrowing
            # through a folder must not queue two dozen embeddings per track.
            self._curve_follow.start()
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

    def _matched(self, m: dict[str, Any]) -> None:
        self.audition.set_transform(semitones=m["shift"], tempo=m["stretch"])
        mode = m.get("mode", "loop")
        why = {"one-shot": " (a one-shot: pitch only)",
               "no tempo": " (no beat to match: pitch only)"}.get(str(mode), "")
        if not m.get("pitched", True):
            why += " (no pitch to match: key kept)"
        self._show_message(f"Matched to the query: {m['shift']:+.2f} semitones, "
                           f"{m['stretch']:.3f}x tempo{why}")
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

    def choose_export_folder(self) -> str | None:
        """Ask for the folder exports go to, and remember it."""
        start = str(self.settings.value("export/folder", "") or "") or str(Path.home())
        folder = QFileDialog.getExistingDirectory(self, "Export to folder", start)
        if folder:
            self.settings.setValue("export/folder", folder)
        return folder or None

    def export(self) -> None:
        """The auditioned track, with its transform, into the export folder (asked once)."""
        path = self.audition.path or self.selected_track()
        if not path:
            self._show_message("Audition or select a track to export")
            return
        semis, tempo = (self.audition.semitones, self.audition.tempo) \
            if path == self.audition.path else (0.0, 1.0)
        folder = str(self.settings.value("export/folder", "") or "")
        if not folder or not os.path.isdir(folder):
            folder = self.choose_export_folder() or ""
            if not folder:
                return
        def write() -> Path:
            from app.export import export_path

            out = export_path(path, folder, semitones=semis, tempo=tempo)
            return self.backend.render(path, semitones=semis, tempo=tempo, out=out)

        self.tasks.start(Task(write, name="Export"), returned=self._exported)

    def _exported(self, out: Path) -> None:
        self._show_message(f"Exported {out}")
        self.exported.emit(str(out))

    def reveal(self) -> None:
        path = self._need_track()
        if path:
            self.reveal_path(path)

    def reveal_path(self, path: str) -> None:
        """Open ``path``'s folder in the file manager, or say there is none."""
        folder = str(Path(path).parent)
        if not QDesktopServices.openUrl(QUrl.fromLocalFile(folder)):
            self.errors.handle("Reveal in folder", RuntimeError(
                f"no file manager could open {folder}"))

    # -- settings and state ---------------------------------------------------------------

    def open_settings(self) -> None:
        dialog = SettingsDialog(str(self.settings.value("checkpoint", "") or ""),
                                str(self.settings.value("library", "") or ""), self,
                                devices=output_devices(),
                                device=str(self.settings.value("audio/device", "") or ""),
                                volume=int(self.settings.value("audio/volume", 100)),
                                notation=self.notation)
        if dialog.exec():
            device, volume = dialog.audio_values()
            self.apply_audio_settings(device=device, volume=volume)
            if dialog.notation_value() != self.notation:
                self.set_notation(dialog.notation_value())
            if dialog.values() != (str(self.settings.value("checkpoint", "") or ""),
                                   str(self.settings.value("library", "") or "")):
                self.apply_settings(*dialog.values())

    def apply_audio_settings(self, *, device: str, volume: int) -> None:
        """Output device ("" = the default) and volume (percent): remembered; a new device
        reopens the player."""
        old = str(self.settings.value("audio/device", "") or "")
        self.settings.setValue("audio/device", device)
        self.settings.setValue("audio/volume", int(volume))
        self.audition.volume = int(volume) / 100
        if device != old:
            self.open_player()

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
        # v3: the Key, BPM and Type columns (v2: the Status column moved next to the name).
        if s.value("library_header_v3") is not None:
            self.library_view.horizontalHeader().restoreState(s.value("library_header_v3"))
        self.curves_panel_action.setChecked(str(s.value("curves_panel", "false")) == "true")

    def save_state(self) -> None:
        s = self.settings
        s.setValue("geometry", self.saveGeometry())
        s.setValue("state", self.saveState())
        for name in ("main_splitter", "top_splitter", "bottom_splitter"):
            s.setValue(name, getattr(self, name).saveState())
        s.setValue("library_header_v3", self.library_view.horizontalHeader().saveState())
        s.setValue("curves_panel", self.curves_panel_action.isChecked())
        s.setValue("k", self.k_spin.value())
        s.sync()

    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802 - Qt API
        self.save_state()
        self.tasks.abort_all()
        self.tasks.wait(15000)
        self.audition.shutdown()
        self.backend.close()
        super().closeEvent(event)


def query_with_estimates(backend: Backend, known: frozenset[str],
                         find: Callable[..., QueryResult], *args: Any, **kwargs: Any
                         ) -> tuple[QueryResult, dict[str, Estimate]]:
    """``find(*args, **kwargs)``'s result and the estimates of its files (the query, its
    neighbours) that are not in ``known``, the stored ones (worker thread: a file from
    outside the library is embedded to be analysed). A file that cannot be analysed is
    left out: its row shows no offsets, the query still answers."""
    result = find(*args, **kwargs)
    paths = [result.query] + [n.path for n in result.neighbours]
    missing = [p for p in dict.fromkeys(paths) if p not in known]
    return result, backend.estimates_of(missing)


def transposed_query(backend: Backend, path: str, *, by: str, k: int, shift: float = 0.0,
                     stretch: float = 1.0) -> QueryResult:
    """Neighbours of ``path`` as if it were shifted by ``shift`` semitones or played at
    ``stretch`` (``loev query --shift/--stretch``); worker thread. The transformed audio is
    embedded where the network lives: the embedding process when there is one."""
    from app.backend import Neighbour

    session = backend.session
    remote = getattr(backend.embedder, "session_call", None)
    if remote is None:
        found = session.query(path, by=by, k=k + 1, shift=shift, stretch=stretch)
    else:
        # The transform needs the model's vocoders (torch): they run in the child.
        vecs = remote("transformed", path, shift, stretch)
        with session._searcher_lock:
            found = session.searcher().query_blend(vecs, {by: 1.0}, k=k + 1)
    resolved = os.path.realpath(path)
    neighbours = [Neighbour(n.path, Path(n.path).name, float(n.distance))
                  for n in found.neighbours if os.path.realpath(n.path) != resolved][:k]
    tag = f"{by} at {shift:+g} st" if shift else f"{by} at x{stretch:g}"
    return QueryResult(path, tag, neighbours)


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
