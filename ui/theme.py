"""Colours, fonts and the application style: a dark, quiet look in the spirit of Blender/Houdini."""

from __future__ import annotations

import hashlib
from pathlib import Path

from PySide6.QtGui import QColor, QFont, QPalette
from PySide6.QtWidgets import QApplication

BG = "#1b1d21"          # canvas
GRID_MINOR = "#202328"
GRID_MAJOR = "#272a30"
PANEL = "#24272c"
NODE_BODY = "#2c3036"
NODE_BORDER = "#3d424a"
TITLE_TEXT = "#e8eaed"
TEXT = "#d3d6db"
TEXT_DIM = "#8b919a"
ACCENT = "#4fa3ff"
SELECTED = "#f2c14e"
RUNNING = "#4fa3ff"
CACHED = "#5c8f5c"
DONE = "#6bbf6b"
ERROR = "#e5534b"
FIELD = "#1d2024"
FIELD_BORDER = "#3a3f47"

CATEGORY_COLORS = {
    "loaders": "#6d5a9c", "conditioning": "#a0693a", "sampling": "#3e6f9e", "latent": "#a24f7a",
    "image": "#3e7f8a", "mask": "#4d7f4d", "text": "#5f7f3e", "toy": "#4f6272", "utils": "#5c5c5c",
    "advanced": "#7a4f4f", "output": "#2f7d6d", "values": "#7d6a35", "math": "#3f6f64",
}


def category_color(category: str) -> QColor:
    """A stable, muted colour per category (known ones are hand-picked)."""
    root = (category or "misc").split("/")[0].lower()
    if root in CATEGORY_COLORS:
        return QColor(CATEGORY_COLORS[root])
    digest = hashlib.md5(root.encode()).digest()
    return QColor.fromHsl(digest[0] * 360 // 256, 70, 85)


# Combo boxes on nodes draw this arrow (the style sheet's own would vanish with a styled drop-down).
ARROW_DOWN = (Path(__file__).resolve().parent / "icons" / "arrow_down.svg").as_posix()

STYLESHEET = f"""
QWidget {{ color: {TEXT}; font-size: 10pt; }}
QMainWindow, QDockWidget > QWidget {{ background: {PANEL}; }}
QDockWidget::title {{ background: #2b2f35; padding: 5px 8px; color: {TEXT_DIM}; }}
QToolBar {{ background: #2b2f35; border: none; spacing: 4px; padding: 3px; }}
QToolButton {{ padding: 4px 10px; border-radius: 4px; }}
QToolButton:hover {{ background: #3a3f47; }}
QStatusBar {{ background: #2b2f35; color: {TEXT_DIM}; }}
QListWidget, QTreeWidget, QPlainTextEdit, QLineEdit {{
    background: {FIELD}; border: 1px solid {FIELD_BORDER}; border-radius: 4px; }}
QListWidget::item:selected, QTreeWidget::item:selected {{ background: #34506e; }}
QProgressBar {{ background: {FIELD}; border: 1px solid {FIELD_BORDER}; border-radius: 4px;
    text-align: center; min-height: 16px; }}
QProgressBar::chunk {{ background: {ACCENT}; border-radius: 3px; }}
QMenu {{ background: #2b2f35; border: 1px solid {FIELD_BORDER}; padding: 4px; }}
QMenu::item {{ padding: 4px 24px 4px 12px; }}
QMenu::item:selected {{ background: #34506e; }}
QMenuBar {{ background: #2b2f35; }}
QMenuBar::item:selected {{ background: #3a3f47; }}
#NodeSearch {{ background: #2b2f35; border: 1px solid {ACCENT}; border-radius: 6px; }}
#NodeSearch QLineEdit {{ padding: 5px; font-size: 11pt; }}
#NodeField, #NodeField QLineEdit {{ background: {FIELD}; border: 1px solid {FIELD_BORDER}; border-radius: 3px;
    padding: 1px 4px; color: {TEXT}; selection-background-color: #34506e; }}
#NodeField:focus {{ border-color: {ACCENT}; }}
QPlainTextEdit#NodeField {{ padding: 2px; }}
QCheckBox#NodeField {{ border: none; background: transparent; }}
QComboBox#NodeField {{ padding-right: 16px; }}
QComboBox#NodeField::drop-down {{ subcontrol-origin: border; subcontrol-position: center right; width: 16px;
    background: #353a42; border: none; border-left: 1px solid {FIELD_BORDER};
    border-top-right-radius: 3px; border-bottom-right-radius: 3px; }}
QComboBox#NodeField::drop-down:hover {{ background: #424852; }}
QComboBox#NodeField::down-arrow {{ image: url({ARROW_DOWN}); width: 8px; height: 5px; }}
QComboBox#NodeField::down-arrow:on {{ top: 1px; }}
QComboBox#NodeField QAbstractItemView {{ background: #2b2f35; border: 1px solid {FIELD_BORDER};
    selection-background-color: #34506e; }}
QAbstractSpinBox#NodeField::up-button, QAbstractSpinBox#NodeField::down-button {{ width: 14px; border: none; }}
#NodeButton {{ background: #353a42; border: 1px solid {FIELD_BORDER}; border-radius: 3px; padding: 0px; }}
#NodeButton:hover {{ background: #424852; }}
"""


def apply(app: QApplication) -> None:
    app.setStyle("Fusion")
    pal = QPalette()
    for role, colour in [
        (QPalette.Window, PANEL), (QPalette.WindowText, TEXT), (QPalette.Base, FIELD),
        (QPalette.AlternateBase, "#262a2f"), (QPalette.ToolTipBase, "#2b2f35"), (QPalette.ToolTipText, TEXT),
        (QPalette.Text, TEXT), (QPalette.Button, "#30343a"), (QPalette.ButtonText, TEXT),
        (QPalette.Highlight, "#34506e"), (QPalette.HighlightedText, "#ffffff"), (QPalette.Link, ACCENT),
        (QPalette.PlaceholderText, TEXT_DIM),
    ]:
        pal.setColor(role, QColor(colour))
    pal.setColor(QPalette.Disabled, QPalette.Text, QColor(TEXT_DIM))
    pal.setColor(QPalette.Disabled, QPalette.ButtonText, QColor(TEXT_DIM))
    app.setPalette(pal)
    app.setStyleSheet(STYLESHEET)


def node_font(size: float = 9.0, bold: bool = False) -> QFont:
    f = QFont()
    f.setPointSizeF(size)
    f.setBold(bold)
    return f
