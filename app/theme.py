"""A dark, dense look (Fusion + palette + a short style sheet), as producers' tools have."""
from __future__ import annotations

from PySide6.QtGui import QColor, QPalette
from PySide6.QtWidgets import QApplication

STYLE = """
QWidget { font-size: 9pt; }
QTableView { gridline-color: #2a2d33; selection-background-color: #2f5d80; }
QHeaderView::section { background: #24272c; color: #aeb3bb; border: 0;
                       border-right: 1px solid #1b1d21; padding: 2px 6px; }
QToolBar { border: 0; spacing: 2px; padding: 2px; }
QToolButton { padding: 3px 6px; }
QGroupBox { border: 1px solid #2f3238; border-radius: 3px; margin-top: 10px; padding-top: 4px; }
QGroupBox::title { subcontrol-origin: margin; left: 6px; color: #8a8f98; }
QLabel#emptyTitle { font-size: 15pt; color: #d0d4da; }
QLabel#emptyHint { color: #8a8f98; }
QLabel#auditionTitle { color: #f2c94c; }
QLabel#paneTitle { color: #8a8f98; font-weight: bold; padding: 2px; }
QStatusBar QLabel { color: #aeb3bb; }
QSplitter::handle { background: #15171a; }
"""


def apply_dark_theme(app: QApplication) -> None:
    app.setStyle("Fusion")
    p = QPalette()
    colours = {
        QPalette.ColorRole.Window: "#1f2125", QPalette.ColorRole.WindowText: "#d0d4da",
        QPalette.ColorRole.Base: "#17191c", QPalette.ColorRole.AlternateBase: "#1c1e22",
        QPalette.ColorRole.ToolTipBase: "#2a2d33", QPalette.ColorRole.ToolTipText: "#e0e0e0",
        QPalette.ColorRole.Text: "#d0d4da", QPalette.ColorRole.Button: "#2a2d33",
        QPalette.ColorRole.ButtonText: "#d0d4da", QPalette.ColorRole.BrightText: "#ff6b6b",
        QPalette.ColorRole.Highlight: "#2f6f9f", QPalette.ColorRole.HighlightedText: "#ffffff",
        QPalette.ColorRole.Link: "#56ccf2", QPalette.ColorRole.PlaceholderText: "#6b7079",
    }
    for role, colour in colours.items():
        p.setColor(role, QColor(colour))
    for role in (QPalette.ColorRole.Text, QPalette.ColorRole.ButtonText,
                 QPalette.ColorRole.WindowText):
        p.setColor(QPalette.ColorGroup.Disabled, role, QColor("#5d626b"))
    app.setPalette(p)
    app.setStyleSheet(STYLE)
