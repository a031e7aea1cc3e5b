"""Side panels: the run queue, the problems list, and the gallery of this session's results."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from PySide6.QtCore import QRect, QSize, Qt, QUrl, Signal
from PySide6.QtGui import QAction, QColor, QDesktopServices, QIcon, QImage, QPixmap
from PySide6.QtWidgets import (
    QApplication,
    QFileDialog,
    QHBoxLayout,
    QHeaderView,
    QListWidget,
    QListWidgetItem,
    QMenu,
    QPushButton,
    QStyledItemDelegate,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from . import theme

STATUS_COLOURS = {"queued": theme.TEXT_DIM, "running": theme.RUNNING, "ok": theme.DONE, "error": theme.ERROR,
                  "invalid": theme.ERROR, "interrupted": "#d8a24a", "cancelled": theme.TEXT_DIM}


class _RunTree(QTreeWidget):
    """The queue's list: a run's message is a child row spanning the width, word-wrapped."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setItemDelegate(_MessageDelegate(self))

    def resizeEvent(self, event):  # noqa: N802 - Qt API
        super().resizeEvent(event)
        self.doItemsLayout()  # message rows change height with the width


class _MessageDelegate(QStyledItemDelegate):
    PAD = 6

    def _text_rect(self, width: int, option, text: str) -> QRect:
        return option.fontMetrics.boundingRect(QRect(0, 0, max(40, width - 2 * self.PAD), 100000),
                                               Qt.TextWordWrap, text)

    def sizeHint(self, option, index):  # noqa: N802 - Qt API
        if not index.parent().isValid():
            return super().sizeHint(option, index)
        width = self.parent().viewport().width()
        return QSize(width, self._text_rect(width, option, index.data() or "").height() + 6)

    def paint(self, painter, option, index):
        if not index.parent().isValid():
            super().paint(painter, option, index)
            return
        brush = index.data(Qt.ForegroundRole)
        painter.save()
        painter.setPen(brush.color() if brush is not None else QColor(theme.TEXT_DIM))
        painter.drawText(option.rect.adjusted(self.PAD, 2, -self.PAD, -2), Qt.TextWordWrap | Qt.AlignTop,
                         index.data() or "")
        painter.restore()


class QueuePanel(QWidget):
    cancel_requested = Signal(object)  # job

    def __init__(self, parent=None):
        super().__init__(parent)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(6, 6, 6, 6)
        self.tree = _RunTree()
        self.tree.setHeaderLabels(["#", "status", "nodes", "time"])
        self.tree.setRootIsDecorated(False)
        self.tree.setIndentation(0)
        self.tree.setUniformRowHeights(False)
        header = self.tree.header()
        header.setStretchLastSection(True)
        for col, width in ((0, 34), (1, 96), (2, 56)):
            header.setSectionResizeMode(col, QHeaderView.Fixed)
            self.tree.setColumnWidth(col, width)
        self.tree.setHorizontalScrollBarPolicy(Qt.ScrollBarAlwaysOff)
        self.tree.setContextMenuPolicy(Qt.CustomContextMenu)
        self.tree.customContextMenuRequested.connect(self._menu)
        lay.addWidget(self.tree)
        self.rows: dict[int, QTreeWidgetItem] = {}

    def update_job(self, job) -> None:
        row = self.rows.get(job.id)
        if row is None:
            row = QTreeWidgetItem()
            row.job = job
            self.rows[job.id] = row
            self.tree.insertTopLevelItem(0, row)
        secs = f"{job.seconds:.1f} s" if job.finished and job.status not in ("cancelled",) else ""
        for col, text in enumerate([str(job.id), job.status, str(job.nodes), secs]):
            row.setText(col, text)
            row.setToolTip(col, job.message)
        row.setForeground(1, QColor(STATUS_COLOURS.get(job.status, theme.TEXT)))
        self._set_message(row, job)

    def message(self, job_id: int) -> str:
        row = self.rows[job_id]
        return row.child(0).text(0) if row.childCount() else ""

    def _set_message(self, row: QTreeWidgetItem, job) -> None:
        if not job.message:
            row.takeChildren()
            return
        line = row.child(0)
        if line is None:
            line = QTreeWidgetItem(row)
            line.job = job
            line.setFirstColumnSpanned(True)
            line.setFlags(Qt.ItemIsEnabled)
        line.setText(0, job.message)
        line.setToolTip(0, job.message)
        line.setForeground(0, QColor("#ffb4ae" if job.status in ("error", "invalid") else theme.TEXT_DIM))
        row.setExpanded(True)

    def _menu(self, pos) -> None:
        row = self.tree.itemAt(pos)
        if row is None or row.job.finished:
            return
        menu = QMenu(self)
        menu.addAction("Cancel", lambda: self.cancel_requested.emit(row.job))
        menu.exec(self.tree.viewport().mapToGlobal(pos))


class ProblemsPanel(QListWidget):
    node_activated = Signal(str)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setWordWrap(True)
        self.itemClicked.connect(self._clicked)
        self.itemActivated.connect(self._clicked)

    def set_problems(self, entries: list[tuple[str | None, str]]) -> None:
        """entries: (node id or None, one-line message)."""
        self.clear()
        for nid, text in entries:
            item = QListWidgetItem(("● " if nid else "○ ") + text)
            item.setData(Qt.UserRole, nid)
            item.setForeground(QColor("#ffb4ae"))
            self.addItem(item)

    def messages(self) -> list[str]:
        return [self.item(i).text()[2:] for i in range(self.count())]

    def _clicked(self, item) -> None:
        nid = item.data(Qt.UserRole)
        if nid:
            self.node_activated.emit(nid)


CAPTION_W = 150


class GalleryPanel(QWidget):
    """Thumbnails of every image this session produced; newest first."""

    def __init__(self, parent=None):
        super().__init__(parent)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(6, 6, 6, 6)
        self.list = QListWidget()
        self.list.setViewMode(QListWidget.IconMode)
        self.list.setIconSize(QSize(120, 120))
        self.list.setGridSize(QSize(CAPTION_W + 12, 120 + 34))
        self.list.setResizeMode(QListWidget.Adjust)
        self.list.setMovement(QListWidget.Static)
        self.list.setSpacing(6)
        self.list.setContextMenuPolicy(Qt.CustomContextMenu)
        self.list.customContextMenuRequested.connect(self._menu)
        self.list.itemActivated.connect(lambda it: self.open(it.data(Qt.UserRole)))
        buttons = QHBoxLayout()
        clear = QPushButton("Clear")
        clear.clicked.connect(self.list.clear)
        buttons.addStretch(1)
        buttons.addWidget(clear)
        lay.addWidget(self.list)
        lay.addLayout(buttons)

    def add(self, path: str, thumb: QImage | None = None, node_label: str = "") -> None:
        for i in range(self.list.count()):
            if self.list.item(i).data(Qt.UserRole) == path:
                return
        image = thumb if thumb is not None and not thumb.isNull() else QImage(path)
        icon = QIcon(QPixmap.fromImage(image.scaled(240, 240, Qt.KeepAspectRatio, Qt.SmoothTransformation))) \
            if not image.isNull() else QIcon()
        item = QListWidgetItem(icon, self.caption(path))
        item.setData(Qt.UserRole, path)
        item.setToolTip(f"{path}\n{node_label} · {time.strftime('%H:%M:%S')}")
        item.setTextAlignment(Qt.AlignHCenter | Qt.AlignTop)
        self.list.insertItem(0, item)

    def caption(self, path: str) -> str:
        """The file name, elided in the middle to the thumbnail's width (the tooltip has it all)."""
        return self.list.fontMetrics().elidedText(Path(path).name, Qt.ElideMiddle, CAPTION_W)

    def paths(self) -> list[str]:
        return [self.list.item(i).data(Qt.UserRole) for i in range(self.list.count())]

    # -- actions ---------------------------------------------------------------------------------
    @staticmethod
    def open(path: str) -> None:
        QDesktopServices.openUrl(QUrl.fromLocalFile(path))

    @staticmethod
    def reveal(path: str) -> None:
        QDesktopServices.openUrl(QUrl.fromLocalFile(str(Path(path).parent)))

    @staticmethod
    def copy(path: str) -> None:
        QApplication.clipboard().setImage(QImage(path))

    def save_as(self, path: str, target: str | None = None) -> str | None:
        if target is None:
            target, _ = QFileDialog.getSaveFileName(self, "Save image as", Path(path).name, "PNG image (*.png)")
        if target:
            shutil.copyfile(path, target)  # keeps the workflow text chunk inside the PNG
            return target
        return None

    def _menu(self, pos) -> None:
        item = self.list.itemAt(pos)
        if item is None:
            return
        path = item.data(Qt.UserRole)
        menu = QMenu(self)
        for text, fn in (("Open", self.open), ("Save as…", self.save_as), ("Copy image", self.copy),
                         ("Reveal in folder", self.reveal)):
            act = QAction(text, menu)
            act.triggered.connect(lambda _c=False, f=fn: f(path))
            menu.addAction(act)
        menu.exec(self.list.viewport().mapToGlobal(pos))
