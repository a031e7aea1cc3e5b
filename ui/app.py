"""Editor entry point. A placeholder window until the editor lands (see issue: desktop editor)."""

from __future__ import annotations

import sys


def main(argv: list[str]) -> int:
    from PySide6.QtWidgets import QApplication, QLabel, QMainWindow

    app = QApplication.instance() or QApplication(sys.argv[:1])
    window = QMainWindow()
    window.setWindowTitle("sdgraph")
    label = QLabel("sdgraph editor — coming soon.\nRun workflows with: python main.py run WORKFLOW")
    label.setMargin(24)
    window.setCentralWidget(label)
    window.resize(640, 360)
    window.show()
    return app.exec()
