"""The node search box (double-click, Tab, or a link dropped on empty canvas): fuzzy over name,
category and description; filtered to nodes that fit when a link is being made."""

from __future__ import annotations

from PySide6.QtCore import QEvent, QPointF, Qt, Signal
from PySide6.QtWidgets import QFrame, QLabel, QLineEdit, QListWidget, QListWidgetItem, QVBoxLayout

from nodegraph.types import compatible

from . import theme


def _subsequence(q: str, text: str) -> bool:
    it = iter(text)
    return all(ch in it for ch in q)


def score(query: str, cls) -> float:
    """Higher is better; 0 means no match. Every word of the query must match somewhere."""
    name = f"{cls.display_name} {cls.type_name}".lower()
    category, desc = cls.category.lower(), (cls.description or "").lower()
    total = 0.0
    for word in query.lower().split():
        if name.startswith(word):
            total += 100
        elif any(part.startswith(word) for part in name.split()):
            total += 80
        elif word in name:
            total += 60
        elif _subsequence(word, cls.type_name.lower()):
            total += 30
        elif word in category:
            total += 20
        elif word in desc:
            total += 10
        else:
            return 0.0
    return total + 1.0 / (1 + len(cls.type_name))


def fits(cls, filt: dict | None) -> bool:
    """Does a node class offer a socket for the link being dragged?"""
    if not filt:
        return True
    if "output" in filt:
        return any(compatible(filt["type"], i.type.name) for i in cls.inputs)
    return any(compatible(o.type.name, filt["type"]) for o in cls.outputs)


def matches(registry, query: str, filt: dict | None = None) -> list:
    classes = [c for c in registry.classes() if fits(c, filt)]
    if not query.strip():
        return sorted(classes, key=lambda c: (c.category.lower(), c.display_name.lower()))
    scored = [(score(query, c), c) for c in classes]
    return [c for s, c in sorted(scored, key=lambda sc: (-sc[0], sc[1].display_name.lower())) if s > 0]


class NodeSearch(QFrame):
    chosen = Signal(str, QPointF, object)  # type name, scene pos, link filter

    def __init__(self, registry, parent):
        super().__init__(parent)
        self.registry = registry
        self.setObjectName("NodeSearch")
        self.setFixedWidth(340)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(6, 6, 6, 6)
        lay.setSpacing(4)
        self.hint = QLabel()
        self.hint.setStyleSheet(f"color: {theme.TEXT_DIM}; font-size: 9pt;")
        self.edit = QLineEdit()
        self.edit.setPlaceholderText("Search nodes…  (name, category, description)")
        self.list = QListWidget()
        lay.addWidget(self.hint)
        lay.addWidget(self.edit)
        lay.addWidget(self.list)
        self.edit.textChanged.connect(self._refresh)
        self.edit.installEventFilter(self)
        self.list.itemActivated.connect(lambda _i: self.accept())
        self.list.itemClicked.connect(lambda _i: self.accept())
        self.scene_pos = QPointF()
        self.filt: dict | None = None
        self.hide()

    def open_at(self, view_pos: QPointF, scene_pos: QPointF, filt: dict | None = None) -> None:
        self.scene_pos, self.filt = scene_pos, filt
        self.hint.setText(f"Nodes that take or give {filt['type']}" if filt else "Add a node")
        self.edit.blockSignals(True)
        self.edit.clear()
        self.edit.blockSignals(False)
        self._refresh()
        parent = self.parentWidget().rect()
        self.adjustSize()
        x = min(max(0, int(view_pos.x())), max(0, parent.width() - self.width()))
        y = min(max(0, int(view_pos.y())), max(0, parent.height() - self.height()))
        self.move(x, y)
        self.show()
        self.raise_()
        self.edit.setFocus()

    def _refresh(self) -> None:
        self.list.clear()
        for cls in matches(self.registry, self.edit.text(), self.filt):
            item = QListWidgetItem(f"{cls.display_name}    ·  {cls.category}")
            item.setData(Qt.UserRole, cls.type_name)
            item.setToolTip(cls.description or cls.type_name)
            self.list.addItem(item)
        if self.list.count():
            self.list.setCurrentRow(0)
        rows = max(1, min(14, self.list.count()))
        self.list.setFixedHeight(rows * max(18, self.list.sizeHintForRow(0)) + 8)
        self.adjustSize()

    def results(self) -> list[str]:
        return [self.list.item(i).data(Qt.UserRole) for i in range(self.list.count())]

    def accept(self) -> None:
        item = self.list.currentItem()
        self.hide()
        if item is not None:
            self.chosen.emit(item.data(Qt.UserRole), self.scene_pos, self.filt)
        self.parentWidget().setFocus()

    def eventFilter(self, obj, event):  # noqa: N802 - Qt API
        if obj is self.edit and event.type() == QEvent.KeyPress:
            key = event.key()
            if key in (Qt.Key_Return, Qt.Key_Enter):
                self.accept()
                return True
            if key == Qt.Key_Escape:
                self.hide()
                self.parentWidget().setFocus()
                return True
            if key in (Qt.Key_Down, Qt.Key_Up):
                row = self.list.currentRow() + (1 if key == Qt.Key_Down else -1)
                self.list.setCurrentRow(max(0, min(self.list.count() - 1, row)))
                return True
        return super().eventFilter(obj, event)
