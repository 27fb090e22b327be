"""Settings: the checkpoint, the library location, the audio output and its volume, the key
notation, kept in QSettings."""
from __future__ import annotations

from PySide6.QtCore import QSettings, Qt
from PySide6.QtWidgets import (QComboBox, QDialog, QDialogButtonBox, QFileDialog, QFormLayout,
                               QHBoxLayout, QLabel, QLineEdit, QPushButton, QSlider, QWidget)

from app.models import NOTATIONS

DEFAULT_DEVICE = "System default"
NOTATION_KEY = "display/key_notation"
DEFAULT_NOTATION = "camelot"

ORG, APP = "loev-explorer", "LOEV Explorer"


def app_settings() -> QSettings:
    return QSettings(ORG, APP)


def key_notation(settings: QSettings) -> str:
    """The remembered key notation (a name of app.models.NOTATIONS); Camelot by default."""
    value = str(settings.value(NOTATION_KEY, DEFAULT_NOTATION) or DEFAULT_NOTATION)
    return value if value in NOTATIONS else DEFAULT_NOTATION


class SettingsDialog(QDialog):
    """Checkpoint (empty = the shipped default) and library directory (empty = default)."""

    def __init__(self, checkpoint: str, library: str, parent: QWidget | None = None, *,
                 devices: list[str] | None = None, device: str = "", volume: int = 100,
                 notation: str = DEFAULT_NOTATION) -> None:
        super().__init__(parent)
        self.setWindowTitle("Settings")
        self.checkpoint_edit = QLineEdit(checkpoint)
        self.checkpoint_edit.setPlaceholderText("shipped default model")
        self.library_edit = QLineEdit(library)
        self.library_edit.setPlaceholderText("default library location")
        form = QFormLayout(self)
        form.addRow("Checkpoint", _with_browse(self.checkpoint_edit, self._browse_checkpoint))
        form.addRow("Library", _with_browse(self.library_edit, self._browse_library))
        self.device_combo = QComboBox()
        names = [DEFAULT_DEVICE] + [d for d in (devices or []) if d != DEFAULT_DEVICE]
        if device and device not in names:
            names.append(device)  # remembered, though not plugged in now
        self.device_combo.addItems(names)
        self.device_combo.setCurrentText(device or DEFAULT_DEVICE)
        form.addRow("Audio output", self.device_combo)
        self.volume_slider = QSlider(Qt.Orientation.Horizontal)
        self.volume_slider.setRange(0, 100)
        self.volume_slider.setValue(int(volume))
        volume_label = QLabel(f"{int(volume)} %")
        self.volume_slider.valueChanged.connect(lambda v: volume_label.setText(f"{v} %"))
        row = QWidget()
        h = QHBoxLayout(row)
        h.setContentsMargins(0, 0, 0, 0)
        h.addWidget(self.volume_slider, 1)
        h.addWidget(volume_label)
        form.addRow("Volume", row)
        self.notation_combo = QComboBox()
        for name, label in NOTATIONS.items():
            self.notation_combo.addItem(label, name)
        self.notation_combo.setCurrentIndex(max(0, self.notation_combo.findData(notation)))
        self.notation_combo.setToolTip("How keys are written in the table, the project key "
                                       "and the filter's examples")
        form.addRow("Key notation", self.notation_combo)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok
                                   | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        form.addRow(buttons)
        self.resize(560, 180)

    def _browse_checkpoint(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Choose a checkpoint",
                                              self.checkpoint_edit.text(),
                                              "LOEV checkpoints (*.safetensors)")
        if path:
            self.checkpoint_edit.setText(path)

    def _browse_library(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Library location", self.library_edit.text())
        if path:
            self.library_edit.setText(path)

    def values(self) -> tuple[str, str]:
        return self.checkpoint_edit.text().strip(), self.library_edit.text().strip()

    def notation_value(self) -> str:
        """The key notation chosen (a name of app.models.NOTATIONS)."""
        return str(self.notation_combo.currentData())

    def audio_values(self) -> tuple[str, int]:
        """The output device ("" = the system's default) and the volume in percent."""
        device = self.device_combo.currentText()
        return ("" if device == DEFAULT_DEVICE else device), int(self.volume_slider.value())


def output_devices() -> list[str]:
    """Names of the sound card's output devices (none when PortAudio is missing)."""
    try:
        import sounddevice
    except (ImportError, OSError):
        return []
    try:
        return [str(d["name"]) for d in sounddevice.query_devices()
                if int(d.get("max_output_channels", 0)) > 0]
    except Exception:  # noqa: BLE001 - no device list is an empty one
        return []


def _with_browse(edit: QLineEdit, browse) -> QWidget:  # noqa: ANN001 - a slot
    box = QWidget()
    row = QHBoxLayout(box)
    row.setContentsMargins(0, 0, 0, 0)
    row.addWidget(edit, 1)
    button = QPushButton("Browse...")
    button.clicked.connect(browse)
    row.addWidget(button)
    return box
