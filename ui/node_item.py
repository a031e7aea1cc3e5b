"""A node card: title bar in its category colour, typed sockets, inline value editors, run state,
and an area for results (images, previews, text) and error messages."""

from __future__ import annotations

import math

from PySide6.QtCore import QPointF, QRectF, Qt
from PySide6.QtGui import QColor, QFontMetricsF, QImage, QPainterPath, QPen, QTextLayout
from PySide6.QtWidgets import QComboBox, QGraphicsItem, QGraphicsProxyWidget, QLineEdit

from . import theme
from .edge_item import SocketItem
from .editor import AFTER_RUN_MODES, has_after_run_control
from .trace_data import token_spans
from .widgets import input_tooltip, make_field, output_tooltip

TITLE_H = 26.0
ROW = 24.0
PAD = 10.0
TEXT_H = 66.0
MAX_AUTO_WIDTH = 420.0
FIELD_PT = 10.0  # the style sheet's font size, which value fields show


class NodeItem(QGraphicsItem):
    def __init__(self, scene, node, cls):
        super().__init__()
        self.gscene = scene
        self.node_id = node.id
        self.cls = cls
        self.setFlags(QGraphicsItem.ItemIsMovable | QGraphicsItem.ItemIsSelectable
                      | QGraphicsItem.ItemSendsGeometryChanges)
        self.setAcceptHoverEvents(True)
        self.inputs: dict[str, SocketItem] = {}
        self.outputs: list[SocketItem] = []
        self.fields: dict[str, object] = {}
        self.labels: list[tuple[QRectF, str, int, str]] = []
        self.status = ""  # running | cached | done | error
        self.reason = ""
        self.seconds: float | None = None
        self.progress: tuple[int, int] | None = None
        self.message = ""  # error or validation message shown on the node
        self.image: QImage | None = None
        self.image_is_preview = False
        self.image_count = 0
        self.text_result = ""
        # text_result and message, word-wrapped to the node's width by _layout_extra (paint reuses them)
        self.result_lines: list[str] = []
        self.message_lines: list[str] = []
        self.width = 260.0
        self.height = TITLE_H
        self.body_bottom = TITLE_H
        self._title_editor = None
        self._hover_token: tuple[int, int] | None = None  # (wrapped line, token) under the mouse
        self.rebuild(node)

    # -- model → item -------------------------------------------------------------------------
    @property
    def node(self):
        return self.gscene.graph.nodes[self.node_id]

    def title(self) -> str:
        node = self.node
        return node.ui.get("title") or (self.cls.display_name if self.cls else node.type)

    def rebuild(self, node=None) -> None:
        """Lay out sockets and editors for the node's current links, collapsed state and sockets."""
        node = node or self.node
        self.prepareGeometryChange()
        for child in list(self.childItems()):
            if child is not self._title_editor:
                child.setParentItem(None)
                if child.scene() is not None:
                    child.scene().removeItem(child)
        self.inputs.clear()
        self.outputs.clear()
        self.fields.clear()
        self.labels = []
        size = node.ui.get("size")
        if isinstance(size, list | tuple) and size and isinstance(size[0], int | float):
            self.width = float(max(200, min(640, size[0])))
        else:
            self.width = self._natural_width(node)
        pos = node.ui.get("pos")
        if isinstance(pos, list | tuple) and len(pos) == 2:
            self.setPos(float(pos[0]), float(pos[1]))
        collapsed = bool(node.ui.get("collapsed"))
        as_socket = set(node.ui.get("sockets") or [])
        specs = list(self.cls.inputs) if self.cls else self._placeholder_inputs(node)
        outs = list(self.cls.outputs) if self.cls else self._placeholder_outputs(node)
        linked = [s for s in specs if not s.is_widget or s.name in node.links or s.name in as_socket]
        valued = [s for s in specs if s not in linked]
        W = self.width
        if collapsed:
            for s in linked + valued:
                self._socket(s, QPointF(0, TITLE_H / 2), node, value_input=s.is_widget).setVisible(
                    s.name in node.links)
            for i, o in enumerate(outs):
                self._out_socket(i, o, QPointF(W, TITLE_H / 2))
            self.height = self.body_bottom = TITLE_H
            self.update()
            return
        y = TITLE_H + 4
        for i in range(max(len(linked), len(outs))):
            cy = y + ROW / 2
            if i < len(linked):
                s = linked[i]
                self._socket(s, QPointF(0, cy), node, value_input=s.is_widget)
                self.labels.append((QRectF(PAD + 2, y, W / 2, ROW), s.name, Qt.AlignLeft, theme.TEXT))
            if i < len(outs):
                self._out_socket(i, outs[i], QPointF(W, cy))
                self.labels.append((QRectF(W / 2, y, W / 2 - PAD - 2, ROW), outs[i].name, Qt.AlignRight, theme.TEXT))
            y += ROW
        y += 4 if (linked or outs) else 0
        for s in valued:
            self._socket(s, QPointF(0, y + ROW / 2), node, value_input=True)
            y = self._field_row(s, node, y)
        if self.cls is None:  # a placeholder: what it is, and the values it keeps for re-saving
            comfy = node.ui.get("comfy") if isinstance(node.ui.get("comfy"), dict) else {}
            values = comfy.get("widgets_values", list(node.values.values()))
            shown = ", ".join(str(v) for v in values) if isinstance(values, list) else str(values)
            for text in (f"{node.type} — unknown here, not run", shown):
                if text:
                    self.labels.append((QRectF(PAD, y, W - 2 * PAD, ROW), text, Qt.AlignLeft, theme.TEXT_DIM))
                    y += ROW - 4
        self.body_bottom = y + 6
        self._layout_extra()

    def _label_width(self) -> float:
        """Room for the longest value-field label (fields line up in one column)."""
        fm = QFontMetricsF(theme.node_font(8.5))
        names = [s.name for s in (self.cls.inputs if self.cls else []) if s.is_widget] + ["after run"]
        return max(fm.horizontalAdvance(n) for n in names) + PAD + 12

    def _split(self, width: float) -> float:
        """Where value fields start: after the labels, at most 40 % of the width (min 80)."""
        return max(80.0, min(width * 0.4, self._label_width()))

    def _natural_width(self, node) -> float:
        """Wide enough for the values of its choice fields (a checkpoint name…), within limits."""
        width = 260.0
        if self.cls is None:
            return width
        fm = QFontMetricsF(theme.node_font(FIELD_PT))
        for spec in self.cls.inputs:
            if spec.is_widget and (spec.type.name == "COMBO" or spec.choices is not None):
                text = str(node.values.get(spec.name, spec.default if spec.has_default else ""))
                field = fm.horizontalAdvance(text) + 40  # padding, the drop-down arrow
                width = max(width, max(80.0, self._label_width()) + field + PAD)
        return min(MAX_AUTO_WIDTH, float(math.ceil(width / 10) * 10))

    def _result_top(self) -> float:
        """Where the text result starts: below the values and the image."""
        y = self.body_bottom
        if self.image is not None:
            w = self.width - 2 * PAD
            y += min(320.0, w * self.image.height() / max(1, self.image.width())) + 8
        return y

    def _layout_extra(self) -> None:
        self.prepareGeometryChange()
        y = self._result_top()
        self.result_lines = self._wrap(self.text_result, 14 if self._outputs_tokens() else 6)  # a whole prompt
        self.message_lines = self._wrap(self.message, 8)
        if self.result_lines:
            y += self._lines_height(self.result_lines) + 8
        if self.message_lines:
            y += self._lines_height(self.message_lines) + 10
        self.height = y
        self.update()
        self.gscene.node_geometry_changed(self)

    def _wrap(self, text: str, max_lines: int) -> list[str]:
        return wrap_lines(text, theme.node_font(8.5), self.width - 2 * PAD - 8, max_lines) if text else []

    @staticmethod
    def _lines_height(lines: list[str]) -> float:
        return QFontMetricsF(theme.node_font(8.5)).lineSpacing() * len(lines) + 6

    def _unknown_outputs(self) -> int:
        slots = [slot for _t, _n, slot in self.gscene.graph.consumers(self.node_id)]
        return max(slots, default=-1) + 1

    @staticmethod
    def _comfy_slots(node, key: str) -> list[str]:
        comfy = node.ui.get("comfy")
        slots = comfy.get(key) if isinstance(comfy, dict) else None
        return [str(s.get("name", "")) for s in slots if isinstance(s, dict)] if isinstance(slots, list) else []

    def _placeholder_inputs(self, node) -> list:
        """The sockets an unknown node came with (from its ComfyUI file), and any other linked input."""
        names = [n for n in self._comfy_slots(node, "inputs") if n]
        return [_Unknown(n) for n in dict.fromkeys(names + list(node.links))]

    def _placeholder_outputs(self, node) -> list:
        names = self._comfy_slots(node, "outputs")
        count = max(len(names), self._unknown_outputs())
        return [_Unknown(names[i] if i < len(names) and names[i] else f"out {i}") for i in range(count)]

    def _socket(self, spec, pos, node, value_input=False) -> SocketItem:
        sock = SocketItem(self, output=False, name=spec.name, slot=0, type_name=spec.type.name,
                          color=spec.type.color, optional=spec.optional, value_input=value_input,
                          tooltip=input_tooltip(spec))
        sock.setPos(pos)
        sock.connected = spec.name in node.links
        self.inputs[spec.name] = sock
        return sock

    def _out_socket(self, slot, out, pos) -> SocketItem:
        sock = SocketItem(self, output=True, name=out.name, slot=slot, type_name=out.type.name, color=out.type.color,
                          tooltip=output_tooltip(out))
        sock.setPos(pos)
        sock.connected = any(s == slot for _t, _n, s in self.gscene.graph.consumers(self.node_id))
        self.outputs.append(sock)
        return sock

    def _field_row(self, spec, node, y: float) -> float:
        W = self.width
        value = node.values.get(spec.name, spec.default if spec.has_default else "")
        after_run = has_after_run_control(spec)
        field = make_field(spec, self.gscene.env)
        field.set_value(value)
        field.edited.connect(lambda v, n=spec.name: self.gscene.editor.set_value(self.node_id, n, v))
        self.fields[spec.name] = field
        if spec.type.name == "BOOLEAN":
            self._proxy(field, QRectF(PAD, y + 2, W - 2 * PAD, ROW - 4))
            return y + ROW
        if spec.multiline:
            self.labels.append((QRectF(PAD, y, W - 2 * PAD, ROW - 4), spec.name, Qt.AlignLeft, theme.TEXT_DIM))
            self._proxy(field, QRectF(PAD, y + ROW - 4, W - 2 * PAD, TEXT_H))
            return y + ROW - 4 + TEXT_H + 4
        split = self._split(W)
        self.labels.append((QRectF(PAD + 2, y, split - PAD - 6, ROW), spec.name, Qt.AlignLeft, theme.TEXT_DIM))
        self._proxy(field, QRectF(split, y + 2, W - split - PAD, ROW - 4))
        y += ROW
        if after_run:
            self.labels.append((QRectF(PAD + 2, y, split - PAD - 6, ROW), "after run", Qt.AlignLeft, theme.TEXT_DIM))
            mode = QComboBox()
            mode.setObjectName("NodeField")
            mode.addItems(list(AFTER_RUN_MODES))
            mode.setToolTip(f"What happens to {spec.name} after each run: kept (fixed), plus one, minus one, "
                            "or a new random value")
            mode.setCurrentText((node.ui.get("after_run") or {}).get(spec.name, "fixed"))
            mode.currentTextChanged.connect(
                lambda m, n=spec.name: self.gscene.editor.set_seed_mode(self.node_id, n, m))
            self.fields[f"{spec.name}:after_run"] = mode
            self._proxy(mode, QRectF(split, y + 2, W - split - PAD, ROW - 4))
            y += ROW
        return y

    def _proxy(self, widget, rect: QRectF) -> QGraphicsProxyWidget:
        widget.setFont(theme.node_font(8.5))
        widget.setFixedSize(int(rect.width()), int(rect.height()))
        proxy = QGraphicsProxyWidget(self)
        proxy.setWidget(widget)
        proxy.setPos(rect.topLeft())
        proxy.setZValue(1)
        return proxy

    def sync_seed_modes(self) -> None:
        """Show the node's "after run" modes (after an edit, its undo or redo)."""
        modes = self.node.ui.get("after_run") or {}
        for key, combo in self.fields.items():
            if key.endswith(":after_run"):
                mode = modes.get(key.rsplit(":", 1)[0], "fixed")
                if combo.currentText() != mode:
                    combo.blockSignals(True)
                    combo.setCurrentText(mode)
                    combo.blockSignals(False)

    def set_value(self, name: str, value) -> None:
        field = self.fields.get(name)
        if field is not None:
            field.set_value(value)

    # -- run state ------------------------------------------------------------------------------
    def set_status(self, status: str, *, reason: str = "", seconds: float | None = None) -> None:
        self.status, self.reason, self.seconds = status, reason or self.reason, seconds
        if status != "running":
            self.progress = None
        self._update_tooltip()
        self.update()

    def set_progress(self, step: int, total: int) -> None:
        self.progress = (step, total)
        self.update()

    def set_message(self, message: str) -> None:
        if message != self.message:
            self.message = message
            self._layout_extra()
        self._update_tooltip()

    def set_result(self, ui: dict, image: QImage | None) -> None:
        self.text_result = "\n".join(str(t) for t in ui.get("text", []))[:2000] if ui else ""
        self.image_count = len(ui.get("images", [])) if ui else 0
        if image is not None:
            self.image, self.image_is_preview = image, False
        self._layout_extra()

    def set_thumbnail(self, image: QImage) -> None:
        """The node's IMAGE/MASK output, shown once a run has finished (result images come first)."""
        if not self.image_count:
            self.image, self.image_is_preview = image, False
            self._layout_extra()

    def set_preview(self, image: QImage) -> None:
        """A live per-step preview while the node runs (the sampler's)."""
        self.image, self.image_is_preview = image, True
        self._layout_extra()

    def finished(self) -> None:
        """The node ran to its end: its last live preview stays (what the sampler made, before the VAE
        decodes it), until a thumbnail of the node's own IMAGE output or the next run's preview."""

    def _update_tooltip(self) -> None:
        lines = [f"{self.title()} — {self.node.type} (node {self.node_id})"]
        if self.cls and self.cls.description:
            lines.append(self.cls.description)
        if self.status == "cached":
            lines.append("Last run: cached (inputs unchanged)")
        elif self.status in ("running", "done", "error") and self.reason:
            t = f" in {self.seconds:.2f} s" if self.seconds is not None else ""
            lines.append(f"Last run: ran{t} — {self.reason}")
        if self.message:
            lines.append(self.message)
        self.setToolTip("\n".join(lines))

    # -- geometry & painting --------------------------------------------------------------------
    def boundingRect(self) -> QRectF:  # noqa: N802 - Qt API
        return QRectF(-3, -3, self.width + 6, self.height + 6)

    def input_anchor(self, name: str) -> QPointF:
        s = self.inputs.get(name)
        return s.scenePos() if s else self.mapToScene(QPointF(0, TITLE_H / 2))

    def output_anchor(self, slot: int) -> QPointF:
        s = self.outputs[slot] if 0 <= slot < len(self.outputs) else None
        return s.scenePos() if s else self.mapToScene(QPointF(self.width, TITLE_H / 2))

    def paint(self, painter, option, widget=None) -> None:
        painter.setRenderHint(painter.RenderHint.Antialiasing)
        W, H = self.width, self.height
        mode = self.node.ui.get("mode")
        if mode == "muted" or self.cls is None:  # greyed: it does not run
            painter.setOpacity(0.45 if mode == "muted" else 0.7)
        body = QPainterPath()
        body.addRoundedRect(QRectF(0, 0, W, H), 6, 6)
        painter.fillPath(body, QColor(theme.NODE_BODY))
        if mode == "bypassed":
            painter.fillPath(body, QColor(150, 60, 170, 70))  # ComfyUI's purple
        colour = theme.category_color(self.cls.category if self.cls else "unknown")
        if self.cls is None:
            colour = QColor("#5b5b5b")
        painter.save()
        painter.setClipRect(QRectF(-1, -1, W + 2, TITLE_H + 1))
        painter.fillPath(body, colour)
        painter.restore()
        # title text, id and run badge
        painter.setFont(theme.node_font(9.5, bold=True))
        painter.setPen(QColor(theme.TITLE_TEXT))
        badge = {"cached": "cached", "done": f"{self.seconds:.1f}s" if self.seconds is not None else "done",
                 "running": "running", "error": "error"}.get(self.status, "")
        suffix = {"muted": "  (muted)", "bypassed": "  (bypassed)"}.get(mode, "")
        painter.drawText(QRectF(PAD, 0, W - 2 * PAD - 60, TITLE_H), Qt.AlignVCenter | Qt.AlignLeft,
                         ("▸ " if self.node.ui.get("collapsed") else "") + self.title() + suffix)
        painter.setFont(theme.node_font(8))
        painter.setPen(QColor(255, 255, 255, 150))
        painter.drawText(QRectF(W - 70, 0, 60, TITLE_H), Qt.AlignVCenter | Qt.AlignRight,
                         badge or f"#{self.node_id}")
        painter.setFont(theme.node_font(8.5))
        for rect, text, align, col in self.labels:
            painter.setPen(QColor(col))
            painter.drawText(rect, align | Qt.AlignVCenter, text)
        self._paint_extra(painter)
        # border: selection, running, error, cached
        if self.status == "error" or self.message:
            pen = QPen(QColor(theme.ERROR), 2.5)
        elif self.status == "running":
            pen = QPen(QColor(theme.RUNNING), 2.5)
        elif self.isSelected():
            pen = QPen(QColor(theme.SELECTED), 2.0)
        elif self.status == "cached":
            pen = QPen(QColor(theme.CACHED), 1.5, Qt.DashLine)
        else:
            pen = QPen(QColor(theme.NODE_BORDER), 1.0)
        painter.setPen(pen)
        painter.setBrush(Qt.NoBrush)
        painter.drawRoundedRect(QRectF(0, 0, W, H), 6, 6)
        if self.isSelected() and pen.color() != QColor(theme.SELECTED):
            painter.setPen(QPen(QColor(theme.SELECTED), 1.0))
            painter.drawRoundedRect(QRectF(-2.5, -2.5, W + 5, H + 5), 8, 8)

    def _paint_extra(self, painter) -> None:
        W = self.width
        if self.progress and self.status == "running":
            step, total = self.progress
            frac = step / total if total else 0
            painter.fillRect(QRectF(0, TITLE_H - 3, W, 3), QColor(0, 0, 0, 90))
            painter.fillRect(QRectF(0, TITLE_H - 3, W * frac, 3), QColor(theme.RUNNING))
        y = self.body_bottom
        if self.image is not None and not self.node.ui.get("collapsed"):
            w = W - 2 * PAD
            h = min(320.0, w * self.image.height() / max(1, self.image.width()))
            target = QRectF(PAD, y, w, h)
            src_ratio = self.image.width() / max(1, self.image.height())
            if w / h > src_ratio:  # letterbox inside target
                target = QRectF(PAD + (w - h * src_ratio) / 2, y, h * src_ratio, h)
            painter.save()
            painter.setRenderHint(painter.RenderHint.SmoothPixmapTransform)  # a small preview, scaled up smoothly
            painter.drawImage(target, self.image)
            painter.restore()
            if self.image_count > 1:
                painter.setPen(QColor(theme.TEXT_DIM))
                painter.drawText(QRectF(PAD, y + h - 16, w - 4, 16), Qt.AlignRight, f"1/{self.image_count}")
            y += h + 8
        if self.result_lines and not self.node.ui.get("collapsed"):
            h = self._lines_height(self.result_lines)
            painter.fillRect(QRectF(PAD, y, W - 2 * PAD, h), QColor(theme.FIELD))
            painter.setPen(QColor(theme.TEXT))
            painter.setFont(theme.node_font(8.5))
            if self.shows_tokens():
                self._paint_tokens(painter, y + 3)
            else:
                painter.drawText(QRectF(PAD + 4, y + 3, W - 2 * PAD - 8, h - 6), Qt.AlignLeft | Qt.AlignTop,
                                 "\n".join(self.result_lines))
            y += h + 8
        if self.message_lines:
            h = self._lines_height(self.message_lines)
            painter.fillRect(QRectF(PAD - 4, y, W - 2 * PAD + 8, h + 2), QColor(120, 30, 30, 170))
            painter.setPen(QColor("#ffd7d4"))
            painter.setFont(theme.node_font(8.5))
            painter.drawText(QRectF(PAD, y + 3, W - 2 * PAD - 4, h - 4), Qt.AlignLeft | Qt.AlignTop,
                             "\n".join(self.message_lines))

    def _paint_tokens(self, painter, top: float) -> None:
        """A token list: the words bright (the one under the mouse underlined in the accent colour:
        a click shows its heatmap in the trace panel), ids, weights and the rest dim."""
        font = theme.node_font(8.5)
        fm = QFontMetricsF(font)
        dim, bright, accent = QColor(theme.TEXT_DIM), QColor(theme.TEXT), QColor(theme.ACCENT)
        for row, line in enumerate(self.result_lines):
            base = top + row * fm.lineSpacing() + fm.ascent()
            painter.setPen(dim)
            painter.drawText(QPointF(PAD + 4, base), line)
            for n, (start, _end, word, _id) in enumerate(token_spans(line)):
                x = PAD + 4 + fm.horizontalAdvance(line[:start])
                hovered = self._hover_token == (row, n)
                painter.setPen(accent if hovered else bright)
                painter.drawText(QPointF(x, base), word)
                if hovered:
                    painter.drawLine(QPointF(x, base + 2), QPointF(x + fm.horizontalAdvance(word), base + 2))

    # -- interaction ----------------------------------------------------------------------------
    def _outputs_tokens(self) -> bool:
        return bool(self.cls and any(o.type.name == "TOKENS" for o in self.cls.outputs))

    def shows_tokens(self) -> bool:
        """Whether the text result is a token list (a node that outputs TOKENS: CLIPTokenize)."""
        return self._outputs_tokens() and bool(self.result_lines)

    def token_at(self, pos: QPointF) -> tuple[str, int] | None:
        """The token of the shown token list under `pos` (item coordinates): (word, its place in its
        chunk, the start token being 0), or None."""
        hit = self._token_hit(pos)
        return hit[:2] if hit is not None else None

    def _token_hit(self, pos: QPointF) -> tuple[str, int, tuple[int, int]] | None:
        """(word, place in its chunk, (wrapped line, token of that line)) under `pos`, or None."""
        if not self.shows_tokens() or self.node.ui.get("collapsed"):
            return None
        font = theme.node_font(8.5)
        fm = QFontMetricsF(font)
        row = int((pos.y() - self._result_top() - 3) // fm.lineSpacing())
        if not 0 <= row < len(self.result_lines) or pos.y() < self._result_top() + 3:
            return None
        # where the wrapped line sits in the whole text: its chunk (one per text line) and offset
        text, cursor = self.text_result, 0
        for i, line in enumerate(self.result_lines[:row + 1]):
            found = text.find(line, cursor)
            if found < 0:
                return None
            if i < row:
                cursor = found + len(line)
        line = self.result_lines[row]
        row_start = text.rfind("\n", 0, found) + 1
        before = len(token_spans(text[row_start:found]))
        x = pos.x() - (PAD + 4)
        for n, (start, end, word, _id) in enumerate(token_spans(line)):
            if fm.horizontalAdvance(line[:start]) <= x <= fm.horizontalAdvance(line[:end]):
                return word, before + n, (row, n)
        return None

    def mousePressEvent(self, event):  # noqa: N802 - Qt API
        if event.button() == Qt.LeftButton and (hit := self.token_at(event.pos())) is not None:
            self.gscene.token_clicked.emit(self.node_id, *hit)
        super().mousePressEvent(event)

    def hoverMoveEvent(self, event):  # noqa: N802 - Qt API
        hit = self._token_hit(event.pos())
        where = hit[2] if hit is not None else None
        if where != self._hover_token:
            self._hover_token = where
            if hit is not None:
                self.setCursor(Qt.PointingHandCursor)
            else:
                self.unsetCursor()
            self.update()
        super().hoverMoveEvent(event)

    def hoverLeaveEvent(self, event):  # noqa: N802 - Qt API
        if self._hover_token is not None:
            self._hover_token = None
            self.unsetCursor()
            self.update()
        super().hoverLeaveEvent(event)

    def itemChange(self, change, value):  # noqa: N802 - Qt API
        if change == QGraphicsItem.ItemPositionHasChanged and self.gscene is not None:
            self.gscene.node_geometry_changed(self)
        elif change == QGraphicsItem.ItemSelectedHasChanged:
            self.setZValue(1 if value else 0)
        return super().itemChange(change, value)

    def mouseDoubleClickEvent(self, event):  # noqa: N802 - Qt API
        if event.pos().y() <= TITLE_H:
            self.edit_title()
            event.accept()
        else:
            super().mouseDoubleClickEvent(event)

    def edit_title(self) -> None:
        """Rename inline: a line edit over the title bar; Enter commits, Escape/losing focus too."""
        if self._title_editor is not None:
            return
        edit = QLineEdit(self.title())
        edit.setObjectName("NodeField")
        edit.setFont(theme.node_font(9.5, bold=True))
        edit.setFixedSize(int(self.width - 2 * PAD), int(TITLE_H - 6))
        proxy = QGraphicsProxyWidget(self)
        proxy.setWidget(edit)
        proxy.setPos(PAD - 4, 3)
        proxy.setZValue(5)
        self._title_editor = proxy

        def done():
            if self._title_editor is None:
                return
            self._title_editor = None
            text = edit.text()
            proxy.setParentItem(None)
            if proxy.scene():
                proxy.scene().removeItem(proxy)
            proxy.deleteLater()
            if self.node_id in self.gscene.graph.nodes:
                self.gscene.editor.rename(self.node_id, text)
        edit.editingFinished.connect(done)
        edit.selectAll()
        edit.setFocus()
        proxy.setFocus()

    def contextMenuEvent(self, event):  # noqa: N802 - Qt API
        if not self.isSelected():
            self.gscene.clearSelection()
            self.setSelected(True)
        self.gscene.node_context_menu(self, event.screenPos())
        event.accept()


def wrap_lines(text: str, font, width: float, max_lines: int) -> list[str]:
    """`text` word-wrapped to `width`; past `max_lines` the last line ends in an ellipsis (the
    whole text is in the node's tooltip or the problems list)."""
    fm = QFontMetricsF(font)
    lines: list[str] = []
    for para in text.split("\n"):
        layout = QTextLayout(para, font)
        layout.beginLayout()
        while len(lines) <= max_lines:
            line = layout.createLine()
            if not line.isValid():
                break
            line.setLineWidth(width)
            lines.append(para[line.textStart():line.textStart() + line.textLength()].rstrip())
        layout.endLayout()
        if len(lines) > max_lines:
            break
    if len(lines) > max_lines:
        lines = lines[:max_lines]
        lines[-1] = fm.elidedText(lines[-1] + " …", Qt.ElideRight, width)  # ends in "…" either way
    return lines


class _Unknown:
    """Stand-in declaration for sockets of a node whose type is not registered."""

    def __init__(self, name: str):
        from nodegraph import types as T

        self.name, self.type, self.optional, self.is_widget = name, T.ANY, False, False
        self.has_default, self.default, self.multiline = False, None, False
        self.tooltip, self.files, self.multiple_of, self.control_after_generate = "", None, None, False
