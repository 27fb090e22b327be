"""The audition panel: transport, live pitch/tempo sliders, "match to query".

It drives an engine player (engine.audio.player.AuditionPlayer) through a small set of calls:
``open(y_or_path)``, ``play()``, ``pause()``, ``stop()``, ``seek(seconds)``,
``loop`` (property), ``set_pitch(semitones)``, ``set_tempo(ratio)``, ``position``,
``duration``, ``state``, ``sr``, ``on_error``. Slider moves reach the player through a pyqtgraph SignalProxy (at most 60
updates a second: the player cross-fades between settings, so more would only queue
work), while the plot marker follows every move.
"""
from __future__ import annotations

from typing import Any

import pyqtgraph as pg
import numpy as np
from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QMouseEvent
from PySide6.QtWidgets import (QHBoxLayout, QLabel, QPushButton, QSlider, QToolButton,
                               QVBoxLayout, QWidget)

from app.models import format_duration
from engine.config import PITCH_RANGE, TEMPO_RANGE

PITCH_STEPS = 10  # slider ticks per semitone
TEMPO_STEPS = 100  # slider ticks per 1.0 of ratio


class AuditionPanel(QWidget):
    """Transport and transform controls for the track being auditioned.

    Signals
    -------
    pitch_changed(float) : semitones, on every slider move
    tempo_changed(float) : ratio, on every slider move
    match_requested() : the "Match to query" button
    """

    pitch_changed = Signal(float)
    tempo_changed = Signal(float)
    match_requested = Signal()
    position_changed = Signal(float)
    player_error = Signal(object)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.player: Any = None
        self.path: str | None = None
        self.output_available = True
        self.volume = 1.0  # gain applied to the decoded audio before the player gets it
        # The locked transform, kept while the query plays as it is.
        self._held: tuple[float, float] | None = None
        # The last values set exactly (set_transform), finer than the sliders' steps.
        self._exact: tuple[float | None, float | None] = (None, None)
        self._build()
        self._proxies = [
            pg.SignalProxy(self.pitch_slider.valueChanged, rateLimit=60, slot=self._apply_pitch),
            pg.SignalProxy(self.tempo_slider.valueChanged, rateLimit=60, slot=self._apply_tempo),
        ]
        self._timer = QTimer(self)
        self._timer.setInterval(30)
        self._timer.timeout.connect(self._tick)
        self._timer.start()

    # -- layout ---------------------------------------------------------------------------

    def _build(self) -> None:
        self.title = QLabel("Nothing to audition: click a result or press Space")
        self.title.setObjectName("auditionTitle")
        self.play_button = QToolButton(text="▶")
        self.play_button.setToolTip("Play / pause (Space in the results)")
        self.play_button.clicked.connect(self.toggle_play)
        self.stop_button = QToolButton(text="■")
        self.stop_button.setToolTip("Stop")
        self.stop_button.clicked.connect(self.stop)
        self.loop_button = QToolButton(text="⟲")
        self.loop_button.setCheckable(True)
        self.loop_button.setToolTip("Loop")
        self.loop_button.toggled.connect(self._apply_loop)
        self.position_label = QLabel("0:00.0 / 0:00.0")
        self.position_label.setMinimumWidth(110)

        lo, hi = PITCH_RANGE
        self.pitch_slider = ResetSlider(round(lo * PITCH_STEPS), round(hi * PITCH_STEPS), 0)
        self.pitch_slider.setToolTip(f"Pitch shift, {lo:+g}..{hi:+g} semitones "
                                     "(double-click resets)")
        self.pitch_label = QLabel()
        lo, hi = TEMPO_RANGE
        self.tempo_slider = ResetSlider(round(lo * TEMPO_STEPS), round(hi * TEMPO_STEPS),
                                        TEMPO_STEPS)
        self.tempo_slider.setToolTip(f"Tempo ratio, {lo:.1f}x..{hi:.1f}x (double-click resets)")
        self.tempo_label = QLabel()
        for label in (self.pitch_label, self.tempo_label):
            label.setMinimumWidth(64)
        self.pitch_slider.valueChanged.connect(self._pitch_moved)
        self.tempo_slider.valueChanged.connect(self._tempo_moved)
        reset = QPushButton("Reset")
        reset.setToolTip("Back to the original pitch and tempo")
        reset.clicked.connect(self.reset_transform)
        self.match_button = QPushButton("Match to query")
        self.match_button.setToolTip("Pitch and tempo that bring this result closest to the "
                                     "query in the key and tempo subspaces")
        self.match_button.clicked.connect(self.match_requested)
        self.lock_button = QToolButton(text="Lock")
        self.lock_button.setCheckable(True)
        self.lock_button.setToolTip("Keep this pitch and tempo for the next tracks "
                                    "(off: every track starts as it is)")

        transport = QHBoxLayout()
        for w in (self.play_button, self.stop_button, self.loop_button, self.position_label):
            transport.addWidget(w)
        transport.addWidget(self.title, 1)
        sliders = QHBoxLayout()
        sliders.addWidget(QLabel("Pitch"))
        sliders.addWidget(self.pitch_slider, 2)
        sliders.addWidget(self.pitch_label)
        sliders.addWidget(QLabel("Tempo"))
        sliders.addWidget(self.tempo_slider, 2)
        sliders.addWidget(self.tempo_label)
        sliders.addWidget(self.lock_button)
        sliders.addWidget(reset)
        sliders.addWidget(self.match_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 2, 4, 2)
        layout.setSpacing(2)
        layout.addLayout(transport)
        layout.addLayout(sliders)
        self._pitch_moved(0)
        self._tempo_moved(TEMPO_STEPS)

    # -- the transform --------------------------------------------------------------------

    @property
    def semitones(self) -> float:
        """The pitch shift: the exact value last set, until the slider moves off it."""
        exact = self._exact[0]
        if exact is not None and round(exact * PITCH_STEPS) == self.pitch_slider.value():
            return exact
        return self.pitch_slider.value() / PITCH_STEPS

    @property
    def tempo(self) -> float:
        """The tempo ratio: the exact value last set (a project's x1.0417 is not rounded to
        the slider's 0.01), until the slider moves off it."""
        exact = self._exact[1]
        if exact is not None and round(exact * TEMPO_STEPS) == self.tempo_slider.value():
            return exact
        return self.tempo_slider.value() / TEMPO_STEPS

    def set_transform(self, *, semitones: float | None = None, tempo: float | None = None) -> None:
        """Set the pitch shift and/or the tempo ratio (clipped to their ranges); the player
        gets the exact values, the sliders the nearest of their steps."""
        if semitones is not None:
            semitones = min(max(float(semitones), PITCH_RANGE[0]), PITCH_RANGE[1])
            self._exact = (semitones, self._exact[1])
            self.pitch_slider.setValue(round(semitones * PITCH_STEPS))
            self._apply_pitch()
        if tempo is not None:
            tempo = min(max(float(tempo), TEMPO_RANGE[0]), TEMPO_RANGE[1])
            self._exact = (self._exact[0], tempo)
            self.tempo_slider.setValue(round(tempo * TEMPO_STEPS))
            self._apply_tempo()

    def reset_transform(self) -> None:
        self.set_transform(semitones=0.0, tempo=1.0)

    def _pitch_moved(self, value: int) -> None:
        self.pitch_label.setText(f"{value / PITCH_STEPS:+.1f} st")
        self.pitch_changed.emit(value / PITCH_STEPS)

    def _tempo_moved(self, value: int) -> None:
        self.tempo_label.setText(f"{value / TEMPO_STEPS:.2f}x")
        self.tempo_changed.emit(value / TEMPO_STEPS)

    def _apply_pitch(self, _args: Any = None) -> None:
        if self.player is not None:
            self.player.set_pitch(self.semitones)

    def _apply_tempo(self, _args: Any = None) -> None:
        if self.player is not None:
            self.player.set_tempo(self.tempo)

    def _apply_loop(self, on: bool) -> None:
        if self.player is not None:
            self.player.loop = on

    # -- transport ------------------------------------------------------------------------

    def set_player(self, player: Any) -> None:
        """Attach the engine player; the current transform and loop apply at once."""
        self.player = player
        if player is None:
            return
        # The player calls on_error on its own thread; a signal hands it to the GUI thread.
        player.on_error = self.player_error.emit
        self._apply_pitch()
        self._apply_tempo()
        self._apply_loop(self.loop_button.isChecked())

    @property
    def sample_rate(self) -> int:
        """The rate to decode tracks at for the player (its sink's)."""
        return int(getattr(self.player, "sr", 44100))

    def set_output_available(self, available: bool, reason: str = "") -> None:
        """Without an output device the transport is off: nothing pretends to play."""
        self.output_available = available
        for button in (self.play_button, self.stop_button):
            button.setEnabled(available)
        self.play_button.setToolTip("Play / pause (Space in the results)" if available
                                    else f"No sound: {reason or 'no audio output'}")

    def load(self, path: str, y: Any, sr: int, *, autoplay: bool = True,
             as_is: bool = False,
             project: tuple[float | None, float | None] = (None, None)) -> None:
        """Open the decoded track ``y`` ([T] or [T, C], ``sr`` Hz) of ``path``; maybe play it.

        A transform belongs to one audition: the new track starts untransformed, unless
        the lock is on. ``as_is`` (the query on Q) plays untransformed even when locked;
        the locked transform comes back with the next track. ``project`` is the shift and
        the ratio that play this track in the project's key and BPM (engine.sync); each
        one given (not None) is where the track starts, locked or not, the query included:
        in a project every preview sounds in the project.
        """
        self.path = path
        from pathlib import Path

        self.title.setText(Path(path).name)
        self.title.setToolTip(path)
        if as_is:
            if self.lock_button.isChecked() and self._held is None:
                self._held = (self.semitones, self.tempo)
            self.reset_transform()
        elif self.lock_button.isChecked():
            if self._held is not None:
                self.set_transform(semitones=self._held[0], tempo=self._held[1])
        else:
            self.reset_transform()
        if not as_is:
            self._held = None
        self.set_transform(semitones=project[0], tempo=project[1])
        if self.player is None:
            return
        gain = float(self.volume)
        self.player.open(y if gain == 1.0 else np.asarray(y, dtype=np.float32) * gain,
                         source_sr=sr)
        self._apply_pitch()
        self._apply_tempo()
        self._apply_loop(self.loop_button.isChecked())
        if autoplay and self.output_available:
            self.player.play()

    def toggle_play(self) -> None:
        if self.player is None or self.path is None or not self.output_available:
            return
        if _is_playing(self.player):
            self.player.pause()
        else:
            self.player.play()

    def stop(self) -> None:
        if self.player is not None:
            self.player.stop()

    def seek(self, seconds: float) -> None:
        if self.player is not None:
            self.player.seek(max(0.0, seconds))

    def _tick(self) -> None:
        if self.player is None or self.path is None:
            return
        pos, dur = float(self.player.position), float(self.player.duration)
        self.position_label.setText(f"{format_duration(pos)} / {format_duration(dur)}")
        self.play_button.setText("❚❚" if _is_playing(self.player) else "▶")
        self.position_changed.emit(pos)

    def shutdown(self) -> None:
        self._timer.stop()
        if self.player is not None:
            close = getattr(self.player, "close", None)
            if close is not None:
                close()


def _is_playing(player: Any) -> bool:
    return player.state == "playing"


class ResetSlider(QSlider):
    """A horizontal slider that a double-click puts back on its default value exactly.

    The first click of a double-click pages the handle towards the cursor; the double
    click then lands on the default whatever that click did.
    """

    def __init__(self, lo: int, hi: int, default: int, parent: QWidget | None = None) -> None:
        super().__init__(Qt.Orientation.Horizontal, parent)
        self.default = default
        self.setRange(lo, hi)
        self.setValue(default)
        self.setPageStep(max(1, (hi - lo) // 24))
        self.setMinimumWidth(120)

    def mouseDoubleClickEvent(self, event: QMouseEvent) -> None:  # noqa: N802 - Qt API
        self.setValue(self.default)
        event.accept()
