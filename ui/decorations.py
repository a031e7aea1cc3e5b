"""What a ComfyUI workflow shows besides nodes, kept in the graph's `ui` data: groups, drawn as framed
regions behind the nodes, and Note/MarkdownNote comments, drawn as cards that never run."""

from __future__ import annotations

from PySide6.QtCore import QPointF, QRectF, Qt
from PySide6.QtGui import QColor, QPainterPath, QPen, QTextDocument
from PySide6.QtWidgets import QGraphicsItem

from . import theme

GROUP_COLOR = "#3f789e"  # ComfyUI's default group colour
NOTE_BODY, NOTE_TITLE = "#4a4030", "#6b5a3a"  # ComfyUI's note colours, a little lighter
TITLE_H = 26.0


def _colour(value, default: str) -> QColor:
    colour = QColor(value) if isinstance(value, str) and QColor.isValidColorName(value) else QColor(default)
    return colour


class GroupItem(QGraphicsItem):
    """A framed region with its title; behind nodes and links, not selectable."""

    def __init__(self, group: dict):
        super().__init__()
        x, y, w, h = (float(v) for v in group["bounding"])
        self.rect = QRectF(0, 0, max(w, 10.0), max(h, 10.0))
        self.setPos(x, y)
        self.title = str(group.get("title") or "")
        self.colour = _colour(group.get("color"), GROUP_COLOR)
        size = group.get("font_size")
        self.font_px = float(size) if isinstance(size, int | float) and 8 <= size <= 96 else 24.0
        self.setZValue(-10)
        self.setAcceptedMouseButtons(Qt.NoButton)

    def boundingRect(self) -> QRectF:  # noqa: N802 - Qt API
        return self.rect.adjusted(-2, -2, 2, 2)

    def paint(self, painter, option, widget=None) -> None:
        fill = QColor(self.colour)
        fill.setAlpha(45)
        painter.fillRect(self.rect, fill)
        band = QColor(self.colour)
        band.setAlpha(120)
        title_h = self.font_px * 1.4
        painter.fillRect(QRectF(0, 0, self.rect.width(), min(title_h, self.rect.height())), band)
        painter.setPen(QPen(QColor(self.colour).lighter(130), 1.5))
        painter.drawRect(self.rect)
        font = theme.node_font(9.5, bold=True)
        font.setPixelSize(int(self.font_px * 0.75))
        painter.setFont(font)
        painter.setPen(QColor("#eef3f7"))
        painter.drawText(QRectF(8, 0, self.rect.width() - 16, title_h), Qt.AlignVCenter | Qt.AlignLeft,
                         self.title)


class NoteItem(QGraphicsItem):
    """A comment card: its title, "note · not run", and the text (Markdown for a MarkdownNote).
    It can be moved; the editor keeps its position (undoable). `key`: the list of the graph's ui
    data the card comes from (a PrimitiveNode is drawn as a card too)."""

    badge = "note · not run"

    def __init__(self, editor, note: dict, key: str = "notes"):
        super().__init__()
        self.editor, self.key = editor, key
        self.note_id = str(note.get("id"))
        size = note.get("size")
        w, h = (float(size[0]), float(size[1])) if _pair(size) else (320.0, 140.0)
        self.width, self.height = max(w, 140.0), max(h, 60.0)
        pos = note.get("pos")
        self.setPos(*(float(v) for v in pos) if _pair(pos) else (0.0, 0.0))
        self.kind = note.get("type") if note.get("type") in ("Note", "MarkdownNote") else "Note"
        self.title = str(note.get("title") or self.kind)
        self.body = _colour(note.get("bgcolor"), NOTE_BODY)
        self.head = _colour(note.get("color"), NOTE_TITLE)
        self.doc = QTextDocument()
        self.doc.setDefaultFont(theme.node_font(8.5))
        self.doc.setDefaultStyleSheet(f"body {{ color: {theme.TEXT}; }}")
        text = note.get("text") if isinstance(note.get("text"), str) else ""
        if self.kind == "MarkdownNote":
            self.doc.setMarkdown(text)
        else:
            self.doc.setPlainText(text)
        self.doc.setTextWidth(self.width - 16)
        self._press: QPointF | None = None
        self.setFlags(QGraphicsItem.ItemIsMovable | QGraphicsItem.ItemIsSelectable)
        self.setZValue(-1)
        self.setToolTip(f"{self.kind}: a comment from the workflow; it never runs")

    def boundingRect(self) -> QRectF:  # noqa: N802 - Qt API
        return QRectF(-3, -3, self.width + 6, self.height + 6)

    def paint(self, painter, option, widget=None) -> None:
        painter.setRenderHint(painter.RenderHint.Antialiasing)
        card = QPainterPath()
        card.addRoundedRect(QRectF(0, 0, self.width, self.height), 6, 6)
        painter.fillPath(card, self.body)
        painter.save()
        painter.setClipRect(QRectF(-1, -1, self.width + 2, TITLE_H + 1))
        painter.fillPath(card, self.head)
        painter.restore()
        painter.setFont(theme.node_font(9.5, bold=True))
        painter.setPen(QColor(theme.TITLE_TEXT))
        painter.drawText(QRectF(10, 0, self.width - 90, TITLE_H), Qt.AlignVCenter | Qt.AlignLeft, self.title)
        painter.setFont(theme.node_font(8))
        painter.setPen(QColor(255, 255, 255, 150))
        painter.drawText(QRectF(self.width - 88, 0, 80, TITLE_H), Qt.AlignVCenter | Qt.AlignRight, self.badge)
        painter.save()
        painter.setClipRect(QRectF(0, TITLE_H, self.width, self.height - TITLE_H))
        painter.translate(8, TITLE_H + 4)
        self.doc.drawContents(painter, QRectF(0, 0, self.width - 16, self.height - TITLE_H - 8))
        painter.restore()
        pen = QPen(QColor(theme.SELECTED), 2.0) if self.isSelected() else QPen(QColor(theme.NODE_BORDER), 1.0)
        painter.setPen(pen)
        painter.drawRoundedRect(QRectF(0, 0, self.width, self.height), 6, 6)

    def mousePressEvent(self, event):  # noqa: N802 - Qt API
        self._press = self.pos()
        super().mousePressEvent(event)

    def mouseReleaseEvent(self, event):  # noqa: N802 - Qt API
        super().mouseReleaseEvent(event)
        if self._press is not None and self.pos() != self._press:
            self.editor.move_note(self.note_id, [round(self.pos().x(), 1), round(self.pos().y(), 1)], self.key)
        self._press = None


def _pair(value) -> bool:
    return isinstance(value, list | tuple) and len(value) == 2 and all(
        isinstance(v, int | float) and not isinstance(v, bool) for v in value)


def group_items(ui: dict) -> list[GroupItem]:
    groups = ui.get("groups") if isinstance(ui, dict) else None
    return [GroupItem(g) for g in groups if isinstance(g, dict) and _box(g.get("bounding"))] \
        if isinstance(groups, list) else []


class PrimitiveItem(NoteItem):
    """ComfyUI's PrimitiveNode: one value that several inputs share. Here the value lives on each
    input it feeds; the card shows which, where the workflow put it."""

    badge = "shared value"

    def __init__(self, editor, record: dict, targets: list[str]):
        output = record.get("output") if isinstance(record.get("output"), dict) else {}
        widget = output.get("widget") if isinstance(output.get("widget"), dict) else {}
        name = widget.get("name") or output.get("name") or "value"
        shown = dict(record, type="Note", title=record.get("title") or name, color=record.get("color", "#3d4a35"),
                     bgcolor=record.get("bgcolor", "#2c3328"))
        value = record.get("value", "")
        shown["text"] = f"{name} = {value}" + (f"\non {', '.join(targets)}" if targets else "\nfeeds no input now")
        if not isinstance(record.get("size"), list):
            shown["size"] = [220, 80]
        super().__init__(editor, shown, "primitives")
        self.setToolTip("ComfyUI's PrimitiveNode: its value is set on each input it feeds; it never runs")


def note_items(editor, ui: dict) -> list[NoteItem]:
    notes = ui.get("notes") if isinstance(ui, dict) else None
    return [NoteItem(editor, n) for n in notes if isinstance(n, dict)] if isinstance(notes, list) else []


def primitive_items(editor, graph) -> list[PrimitiveItem]:
    records = graph.ui.get("primitives") if isinstance(graph.ui, dict) else None
    if not isinstance(records, list):
        return []
    fed: dict[str, list[str]] = {}
    for node in graph.nodes.values():
        via = node.ui.get("via")
        for name, source in via.items() if isinstance(via, dict) else []:
            fed.setdefault(source, []).append(f"{name} of #{node.id}")
    return [PrimitiveItem(editor, r, fed.get(str(r.get("id")), [])) for r in records if isinstance(r, dict)]


def _box(value) -> bool:
    return isinstance(value, list) and len(value) == 4 and all(
        isinstance(v, int | float) and not isinstance(v, bool) for v in value)
