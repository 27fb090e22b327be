"""Settings: the checkpoint and the library location, kept in QSettings."""
from __future__ import annotations

from PySide6.QtCore import QSettings
from PySide6.QtWidgets import (QDialog, QDialogButtonBox, QFileDialog, QFormLayout, QHBoxLayout,
                               QLineEdit, QPushButton, QWidget)

ORG, APP = "loev-explorer", "LOEV Explorer"


def app_settings() -> QSettings:
    return QSettings(ORG, APP)


class SettingsDialog(QDialog):
    """Checkpoint (empty = the shipped default) and library directory (empty = default)."""

    def __init__(self, checkpoint: str, library: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Settings")
        self.checkpoint_edit = QLineEdit(checkpoint)
        self.checkpoint_edit.setPlaceholderText("shipped default model")
        self.library_edit = QLineEdit(library)
        self.library_edit.setPlaceholderText("default library location")
        form = QFormLayout(self)
        form.addRow("Checkpoint", _with_browse(self.checkpoint_edit, self._browse_checkpoint))
        form.addRow("Library", _with_browse(self.library_edit, self._browse_library))
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok
                                   | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        form.addRow(buttons)
        self.resize(560, 120)

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


def _with_browse(edit: QLineEdit, browse) -> QWidget:  # noqa: ANN001 - a slot
    box = QWidget()
    row = QHBoxLayout(box)
    row.setContentsMargins(0, 0, 0, 0)
    row.addWidget(edit, 1)
    button = QPushButton("Browse...")
    button.clicked.connect(browse)
    row.addWidget(button)
    return box
