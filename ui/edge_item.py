"""Sockets and the Bézier edges between them."""

from __future__ import annotations

from PySide6.QtCore import QPointF, QRectF, Qt
from PySide6.QtGui import QBrush, QColor, QPainterPath, QPainterPathStroker, QPen
from PySide6.QtWidgets import QGraphicsItem, QGraphicsPathItem

from . import theme

SOCKET_R = 5.5


class SocketItem(QGraphicsItem):
    """One input or output socket. Dragging from it starts a link (handled by the scene)."""

    def __init__(self, node_item, *, output: bool, name: str, slot: int, type_name: str, color: str,
                 optional: bool = False, value_input: bool = False, tooltip: str = ""):
        super().__init__(node_item)
        self.node_item = node_item
        self.is_output = output
        self.name = name  # input name, or output name
        self.slot = slot  # output slot (outputs only)
        self.type_name = type_name
        self.color = QColor(color)
        self.optional = optional
        self.value_input = value_input  # a widget input that can also take a link
        self.connected = False
        self.dimmed = False
        self.hot = False
        self.setAcceptHoverEvents(True)
        self.setCursor(Qt.CrossCursor)
        self.setZValue(2)
        self.setToolTip(tooltip or f"{name}: {type_name}" + (" (optional)" if optional else ""))

    @property
    def node_id(self) -> str:
        return self.node_item.node_id

    def boundingRect(self) -> QRectF:  # noqa: N802 - Qt API
        r = SOCKET_R + 4
        return QRectF(-r, -r, 2 * r, 2 * r)

    def shape(self) -> QPainterPath:
        p = QPainterPath()
        p.addEllipse(self.boundingRect())
        return p

    def paint(self, painter, option, widget=None) -> None:
        painter.setRenderHint(painter.RenderHint.Antialiasing)
        colour = QColor(self.color)
        if self.dimmed:
            colour.setAlpha(50)
        r = SOCKET_R + (1.5 if self.hot else 0) - (1.5 if self.value_input and not self.connected else 0)
        painter.setPen(QPen(colour.darker(160) if not self.hot else QColor("#ffffff"), 1.4))
        filled = self.connected or (not self.optional and not self.value_input)
        painter.setBrush(QBrush(colour) if filled else QBrush(QColor(theme.NODE_BODY)))
        if self.value_input and not self.connected:
            painter.setPen(QPen(colour, 1.4))
        painter.drawEllipse(QPointF(0, 0), r, r)

    def hoverEnterEvent(self, event):  # noqa: N802 - Qt API
        self.hot = True
        self.update()

    def hoverLeaveEvent(self, event):  # noqa: N802 - Qt API
        self.hot = False
        self.update()

    def mousePressEvent(self, event):  # noqa: N802 - Qt API
        if event.button() == Qt.LeftButton and self.scene() is not None:
            self.scene().begin_link_drag(self, event.scenePos())
            event.accept()
        else:
            event.ignore()

    def mouseMoveEvent(self, event):  # noqa: N802 - Qt API
        self.scene().update_link_drag(event.scenePos())

    def mouseReleaseEvent(self, event):  # noqa: N802 - Qt API
        self.scene().end_link_drag(event.scenePos())


def bezier(a: QPointF, b: QPointF) -> QPainterPath:
    path = QPainterPath(a)
    dx = max(40.0, abs(b.x() - a.x()) * 0.5)
    path.cubicTo(QPointF(a.x() + dx, a.y()), QPointF(b.x() - dx, b.y()), b)
    return path


class EdgeItem(QGraphicsPathItem):
    """A link from an output socket to an input; `key` is (target id, input name)."""

    def __init__(self, key: tuple[str, str] | None, color: str):
        super().__init__()
        self.key = key
        self.color = QColor(color)
        self.highlight = False
        self.setZValue(-1)
        self._apply_pen()
        if key is not None:
            self.setToolTip(f"→ node {key[0]} input {key[1]}")
            self.setAcceptHoverEvents(True)

    def _apply_pen(self) -> None:
        c = QColor(self.color)
        pen = QPen(c.lighter(130) if self.highlight else c, 3.0 if self.highlight else 2.2)
        pen.setCapStyle(Qt.RoundCap)
        self.setPen(pen)

    def set_ends(self, a: QPointF, b: QPointF) -> None:
        self.setPath(bezier(a, b))

    def set_refused(self, refused: bool) -> None:
        pen = self.pen()
        pen.setStyle(Qt.DashLine if refused else Qt.SolidLine)
        pen.setColor(QColor(theme.ERROR) if refused else self.color)
        self.setPen(pen)

    def shape(self) -> QPainterPath:
        s = QPainterPathStroker()
        s.setWidth(10)
        return s.createStroke(self.path())

    def hoverEnterEvent(self, event):  # noqa: N802 - Qt API
        self.highlight = True
        self._apply_pen()

    def hoverLeaveEvent(self, event):  # noqa: N802 - Qt API
        self.highlight = False
        self._apply_pen()

    def paint(self, painter, option, widget=None) -> None:
        painter.setRenderHint(painter.RenderHint.Antialiasing)
        painter.setPen(self.pen())
        painter.setBrush(Qt.NoBrush)
        painter.drawPath(self.path())

