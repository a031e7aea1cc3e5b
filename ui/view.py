"""The canvas view: pan (middle-drag or space-drag), zoom to the cursor, fit-all, a subtle grid."""

from __future__ import annotations

import math

from PySide6.QtCore import QEvent, QPointF, QRectF, Qt, Signal
from PySide6.QtGui import QColor, QPainter, QPen
from PySide6.QtWidgets import QFrame, QGraphicsProxyWidget, QGraphicsView

from . import theme

MIN_ZOOM, MAX_ZOOM = 0.15, 3.0
# fit-all zooms out no further (the whole of a workflow the size of ComfyUI's examples, ten columns of
# nodes, fits beside the side panels; a bigger one shows its top-left part, where the flow starts)
FIT_MIN_ZOOM = 0.25


class GraphView(QGraphicsView):
    search_key = Signal(QPointF)  # Tab pressed: open the node search at this scene point
    files_dropped = Signal(list)

    def __init__(self, scene, parent=None):
        super().__init__(scene, parent)
        self.setRenderHints(QPainter.Antialiasing | QPainter.TextAntialiasing | QPainter.SmoothPixmapTransform)
        # Repaint only what changed: a sampler step then redraws a progress strip and a preview,
        # not the whole canvas (a full repaint costs ~10 ms of GUI thread per step, more when busy).
        self.setViewportUpdateMode(QGraphicsView.SmartViewportUpdate)
        self.setCacheMode(QGraphicsView.CacheBackground)  # the grid
        self.setTransformationAnchor(QGraphicsView.AnchorViewCenter)
        self.setResizeAnchor(QGraphicsView.AnchorViewCenter)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarAlwaysOff)
        self.setVerticalScrollBarPolicy(Qt.ScrollBarAlwaysOff)
        self.setDragMode(QGraphicsView.RubberBandDrag)
        self.setFrameShape(QFrame.NoFrame)
        self.setFocusPolicy(Qt.StrongFocus)
        self.setAcceptDrops(True)
        self._pan_from: QPointF | None = None
        self._space = False

    # -- zoom -----------------------------------------------------------------------------------
    @property
    def zoom(self) -> float:
        return self.transform().m11()

    def set_zoom(self, z: float, anchor: QPointF | None = None) -> None:
        """Zoom to `z`, keeping the scene point under `anchor` (a viewport point) where it is."""
        z = max(MIN_ZOOM, min(MAX_ZOOM, z))
        factor = z / self.zoom
        centre = self.mapToScene(self.viewport().rect().center())
        fixed = self.mapToScene(anchor.toPoint()) if anchor is not None else centre
        self.scale(factor, factor)
        self.centerOn(fixed + (centre - fixed) / factor)

    def wheelEvent(self, event):  # noqa: N802 - Qt API
        item = self.itemAt(event.position().toPoint())
        if isinstance(item, QGraphicsProxyWidget) and item.widget() and item.widget().hasFocus():
            super().wheelEvent(event)
            return
        steps = event.angleDelta().y() / 120.0
        if steps:
            self.set_zoom(self.zoom * math.pow(1.15, steps), event.position())
        event.accept()

    def fit_all(self) -> None:
        """Show the whole graph (nodes, groups and notes) in the canvas, which the side panels do not
        cover, at most at 100 % and at least at FIT_MIN_ZOOM. A graph too big for that shows its
        top-left part, where the flow starts."""
        rect = self.scene().items_bounds()
        if rect.isNull():
            self.resetTransform()
            self.centerOn(0, 0)
            return
        rect = rect.adjusted(-40, -40, 40, 40)
        self.fitInView(rect, Qt.KeepAspectRatio)
        if self.zoom > 1.0:
            self.set_zoom(1.0)
        elif self.zoom < FIT_MIN_ZOOM:
            self.set_zoom(FIT_MIN_ZOOM)
        seen = self.viewport().rect()
        w, h = seen.width() / self.zoom, seen.height() / self.zoom
        x = rect.center().x() if rect.width() <= w else rect.left() + w / 2
        y = rect.center().y() if rect.height() <= h else rect.top() + h / 2
        self.centerOn(x, y)

    def view_state(self) -> dict:
        c = self.mapToScene(self.viewport().rect().center())
        return {"zoom": round(self.zoom, 3), "offset": [round(c.x(), 1), round(c.y(), 1)]}

    def restore_view(self, state: dict) -> bool:
        try:
            zoom = float(state["zoom"])
            x, y = (float(v) for v in state["offset"])
        except (KeyError, TypeError, ValueError):
            return False
        self.resetTransform()
        self.set_zoom(zoom)
        self.centerOn(x, y)
        return True

    # -- pan ------------------------------------------------------------------------------------
    def mousePressEvent(self, event):  # noqa: N802 - Qt API
        if event.button() == Qt.MiddleButton or (event.button() == Qt.LeftButton and self._space):
            self._pan_from = event.position()
            self.viewport().setCursor(Qt.ClosedHandCursor)
            event.accept()
            return
        super().mousePressEvent(event)

    def mouseMoveEvent(self, event):  # noqa: N802 - Qt API
        if self._pan_from is not None:
            d = event.position() - self._pan_from
            self._pan_from = event.position()
            h, v = self.horizontalScrollBar(), self.verticalScrollBar()
            h.setValue(h.value() - round(d.x()))
            v.setValue(v.value() - round(d.y()))
            event.accept()
            return
        super().mouseMoveEvent(event)

    def mouseReleaseEvent(self, event):  # noqa: N802 - Qt API
        if self._pan_from is not None and event.button() in (Qt.MiddleButton, Qt.LeftButton):
            self._pan_from = None
            self.viewport().setCursor(Qt.OpenHandCursor if self._space else Qt.ArrowCursor)
            event.accept()
            return
        super().mouseReleaseEvent(event)

    def _editing_text(self) -> bool:
        item = self.scene().focusItem()
        return isinstance(item, QGraphicsProxyWidget)

    def keyPressEvent(self, event):  # noqa: N802 - Qt API
        if event.key() == Qt.Key_Space and not event.isAutoRepeat() and not self._editing_text():
            self._space = True
            self.viewport().setCursor(Qt.OpenHandCursor)
            event.accept()
            return
        super().keyPressEvent(event)

    def keyReleaseEvent(self, event):  # noqa: N802 - Qt API
        if event.key() == Qt.Key_Space and not event.isAutoRepeat() and self._space:
            self._space = False
            self.viewport().setCursor(Qt.ArrowCursor)
            event.accept()
            return
        super().keyReleaseEvent(event)

    def event(self, event):
        # Tab opens the node search (unless a field on a node is being edited).
        if event.type() == QEvent.KeyPress and event.key() == Qt.Key_Tab and not self._editing_text():
            pos = self.mapFromGlobal(self.cursor().pos())
            if not self.viewport().rect().contains(pos):
                pos = self.viewport().rect().center()
            self.search_key.emit(self.mapToScene(pos))
            return True
        return super().event(event)

    # -- drop files -----------------------------------------------------------------------------
    def dragEnterEvent(self, event):  # noqa: N802 - Qt API
        if event.mimeData().hasUrls():
            event.acceptProposedAction()
        else:
            super().dragEnterEvent(event)

    dragMoveEvent = dragEnterEvent

    def dropEvent(self, event):  # noqa: N802 - Qt API
        if event.mimeData().hasUrls():
            self.files_dropped.emit([u.toLocalFile() for u in event.mimeData().urls() if u.isLocalFile()])
            event.acceptProposedAction()
        else:
            super().dropEvent(event)

    # -- grid -----------------------------------------------------------------------------------
    def drawBackground(self, painter, rect: QRectF):  # noqa: N802 - Qt API
        painter.fillRect(rect, QColor(theme.BG))
        for step, colour in ((20, theme.GRID_MINOR), (100, theme.GRID_MAJOR)):
            if step * self.zoom < 8:
                continue
            painter.setPen(QPen(QColor(colour), 0))
            left = math.floor(rect.left() / step) * step
            top = math.floor(rect.top() / step) * step
            x = left
            while x < rect.right():
                painter.drawLine(QPointF(x, rect.top()), QPointF(x, rect.bottom()))
                x += step
            y = top
            while y < rect.bottom():
                painter.drawLine(QPointF(rect.left(), y), QPointF(rect.right(), y))
                y += step
