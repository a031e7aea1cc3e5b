"""The graph scene: mirrors the graph model's notifications (model → view, one way) and turns
gestures (link drags, node moves) into editor intents."""

from __future__ import annotations

from PySide6.QtCore import QPointF, QRectF, Qt, QTimer, Signal
from PySide6.QtGui import QBrush, QColor, QPen
from PySide6.QtWidgets import QGraphicsRectItem, QGraphicsScene, QGraphicsSimpleTextItem

from nodegraph.types import compatible

from . import theme
from .decorations import group_items, note_items, primitive_items
from .edge_item import EdgeItem, SocketItem
from .node_item import NodeItem


class GraphScene(QGraphicsScene):
    search_requested = Signal(QPointF, object)  # scene pos, link filter or None
    canvas_menu_requested = Signal(QPointF, object)  # scene pos, screen QPoint
    node_menu_requested = Signal(object, object)  # NodeItem, screen QPoint
    message = Signal(str)
    token_clicked = Signal(str, str, int)  # node id, the token's word, its place in its chunk (start = 0)

    def __init__(self, editor, parent=None):
        super().__init__(parent)
        self.editor = editor
        self.graph = None
        self.nodes: dict[str, NodeItem] = {}
        self.edges: dict[tuple[str, str], EdgeItem] = {}
        self.decorations: list = []  # groups and notes from the workflow's ui data
        self._unsubscribe = None
        self._drag: dict | None = None
        self._graveyard: list = []
        self.last_hint = ""
        self._hint_item = None
        self.setSceneRect(QRectF(-50000, -50000, 100000, 100000))
        self.setItemIndexMethod(QGraphicsScene.NoIndex)
        editor.graph_replaced.connect(self.set_graph)
        self.set_graph(editor.graph)

    @property
    def env(self):
        return self.editor.env

    # -- model → view ---------------------------------------------------------------------------
    def set_graph(self, graph) -> None:
        if self._unsubscribe:
            self._unsubscribe()
        self.graph = graph
        self._rebuild_all()
        self._unsubscribe = graph.subscribe(self._on_change)

    def _rebuild_all(self) -> None:
        for item in list(self.nodes.values()) + list(self.edges.values()):
            self._bury(item)
        self.nodes.clear()
        self.edges.clear()
        for node in self.graph.nodes.values():
            self._add_node_item(node.id)
        for node in self.graph.nodes.values():
            for name in node.links:
                self._add_edge(node.id, name)
        self._rebuild_decorations()

    def _rebuild_decorations(self) -> None:
        for item in self.decorations:
            self._bury(item)
        ui = self.graph.ui if isinstance(self.graph.ui, dict) else {}
        self.decorations = group_items(ui) + note_items(self.editor, ui) + primitive_items(self.editor, self.graph)
        for item in self.decorations:
            self.addItem(item)

    def _bury(self, item) -> None:
        """Remove an item but keep its Python wrapper alive until the current event is over (it
        may be the item that grabbed the mouse)."""
        if item.scene() is self:
            self.removeItem(item)
        self._graveyard.append(item)
        if len(self._graveyard) == 1:
            QTimer.singleShot(0, self._graveyard.clear)

    def _add_node_item(self, nid: str) -> NodeItem:
        node = self.graph.nodes[nid]
        item = NodeItem(self, node, self.editor.registry.get(node.type))
        self.nodes[nid] = item
        self.addItem(item)
        return item

    def _add_edge(self, dst: str, name: str) -> None:
        src, slot = self.graph.nodes[dst].links[name]
        if src not in self.nodes or dst not in self.nodes:
            return
        source = self.nodes[src]
        colour = source.outputs[slot].color.name() if slot < len(source.outputs) else "#9e9e9e"
        edge = EdgeItem((dst, name), colour)
        edge.src = (src, slot)
        self.edges[(dst, name)] = edge
        self.addItem(edge)
        self._place_edge(edge)

    def _place_edge(self, edge: EdgeItem) -> None:
        dst, name = edge.key
        src, slot = edge.src
        if src in self.nodes and dst in self.nodes:
            edge.set_ends(self.nodes[src].output_anchor(slot), self.nodes[dst].input_anchor(name))

    def _on_change(self, ch) -> None:
        kind = ch.kind
        if kind == "node_added":
            self._add_node_item(ch.node_id)
        elif kind == "node_removed":
            for key in [k for k in self.edges if k[0] == ch.node_id]:
                self._bury(self.edges.pop(key))
            item = self.nodes.pop(ch.node_id, None)
            if item is not None:
                self._bury(item)
        elif kind in ("link_added", "link_removed"):
            edge = self.edges.pop((ch.node_id, ch.input), None)
            if edge is not None:
                self._bury(edge)
                self._refresh_sockets(edge.src[0])
            if kind == "link_added" and ch.node_id in self.nodes:
                self._refresh_sockets(ch.node_id, relayout=True)
                self._add_edge(ch.node_id, ch.input)
                self._refresh_sockets(ch.detail[0])
            elif ch.node_id in self.nodes:
                self._refresh_sockets(ch.node_id, relayout=True)
        elif kind == "value_changed" and ch.node_id in self.nodes:
            self.nodes[ch.node_id].set_value(ch.input, ch.detail)
        elif kind == "ui_changed" and ch.node_id in self.nodes:
            item = self.nodes[ch.node_id]
            detail = ch.detail or {}
            if set(detail) == {"after_run"}:
                item.sync_seed_modes()  # no rebuild: the combo that made the edit stays
            elif set(detail) - {"pos", "title"}:
                item.rebuild()
            elif "pos" in detail:
                pos = detail["pos"]
                if item.pos() != QPointF(*pos):
                    item.setPos(QPointF(*pos))
            item.update()
        elif kind == "graph_ui_changed" and {"groups", "notes", "primitives"} & set(ch.detail or {}):
            self._rebuild_decorations()
        elif kind == "reset":
            self._rebuild_all()

    def _refresh_sockets(self, nid: str, relayout: bool = False) -> None:
        item = self.nodes.get(nid)
        if item is None:
            return
        node = self.graph.nodes[nid]
        if relayout:
            item.rebuild(node)
            return
        used = {slot for _t, _n, slot in self.graph.consumers(nid)}
        for sock in item.outputs:
            sock.connected = sock.slot in used
            sock.update()

    def node_geometry_changed(self, item: NodeItem) -> None:
        nid = item.node_id
        for edge in self.edges.values():
            if edge.key[0] == nid or edge.src[0] == nid:
                self._place_edge(edge)

    # -- link dragging --------------------------------------------------------------------------
    def begin_link_drag(self, sock: SocketItem, pos: QPointF) -> None:
        detach = None
        origin = sock
        if not sock.is_output and sock.connected:
            src, slot = self.graph.nodes[sock.node_id].links[sock.name]
            detach = (sock.node_id, sock.name)
            origin = self.nodes[src].outputs[slot] if slot < len(self.nodes[src].outputs) else sock
            self.edges[detach].setVisible(False)
        edge = EdgeItem(None, origin.color.name())
        edge.setZValue(10)
        self.addItem(edge)
        self._drag = {"origin": origin, "edge": edge, "detach": detach}
        for item in self.nodes.values():
            for s in list(item.inputs.values()) + item.outputs:
                s.dimmed = not self._types_fit(origin, s)
                s.update()
        self.update_link_drag(pos)

    def _types_fit(self, a: SocketItem, b: SocketItem) -> bool:
        if a.is_output == b.is_output or a.node_id == b.node_id:
            return False
        out, inp = (a, b) if a.is_output else (b, a)
        return compatible(out.type_name, inp.type_name)

    def _pair(self, a: SocketItem, b: SocketItem):
        out, inp = (a, b) if a.is_output else (b, a)
        return out.node_id, out.slot, inp.node_id, inp.name

    def socket_at(self, pos: QPointF) -> SocketItem | None:
        for item in self.items(QRectF(pos.x() - 7, pos.y() - 7, 14, 14)):
            if isinstance(item, SocketItem) and item.isVisible():
                return item
        return None

    def update_link_drag(self, pos: QPointF) -> None:
        if not self._drag:
            return
        origin, edge = self._drag["origin"], self._drag["edge"]
        target = self.socket_at(pos)
        end = target.scenePos() if target is not None and target.is_output != origin.is_output else pos
        a = origin.scenePos()
        edge.set_ends(a, end) if origin.is_output else edge.set_ends(end, a)
        edge.set_refused(target is not None and target is not origin and not self._types_fit(origin, target))

    def end_link_drag(self, pos: QPointF) -> None:
        if not self._drag:
            return
        drag, self._drag = self._drag, None
        origin, detach = drag["origin"], drag["detach"]
        self._bury(drag["edge"])
        for item in self.nodes.values():
            for s in list(item.inputs.values()) + item.outputs:
                s.dimmed = False
                s.update()
        if detach and detach in self.edges:
            self.edges[detach].setVisible(True)
        target = self.socket_at(pos)
        if target is not None and target is not origin and (target.node_id, target.name) != detach:
            if target.is_output == origin.is_output:
                self.show_hint(pos, "connect an output to an input")
                return
            src, slot, dst, name = self._pair(origin, target)
            why = self.graph.can_connect(src, slot, dst, name)
            if why is not None:
                self.show_hint(pos, why)
                return
            if detach:
                self.editor.undo.beginMacro("Move link")
                self.editor.disconnect(*detach)
            self.editor.connect(src, slot, dst, name)
            if detach:
                self.editor.undo.endMacro()
        elif target is None and detach:
            self.editor.disconnect(*detach)
        elif target is None:
            filt = ({"output": (origin.node_id, origin.slot), "type": origin.type_name} if origin.is_output
                    else {"input": (origin.node_id, origin.name), "type": origin.type_name})
            self.search_requested.emit(pos, filt)

    @property
    def dragging_link(self) -> bool:
        return self._drag is not None

    def show_hint(self, pos: QPointF, text: str) -> None:
        """A refused drop: a red note at the drop point for a few seconds, and the status bar."""
        self.last_hint = text
        self.message.emit(text)
        if self._hint_item is not None:
            self._bury(self._hint_item)
        label = QGraphicsSimpleTextItem("Cannot connect — " + text.replace("cannot connect ", ""))
        label.setFont(theme.node_font(9))
        label.setBrush(QColor("#ffe1de"))
        r = label.boundingRect().adjusted(-8, -5, 8, 5)
        box = QGraphicsRectItem(r)
        box.setBrush(QBrush(QColor(110, 28, 28, 230)))
        box.setPen(QPen(QColor(theme.ERROR), 1))
        label.setParentItem(box)
        box.setPos(pos + QPointF(14, 10))
        box.setZValue(100)
        self.addItem(box)
        self._hint_item = box
        # the scene as the timer's context: no call once the scene is gone (its items with it)
        QTimer.singleShot(3000, self, lambda b=box: self._bury(b) if b is self._hint_item and b.scene() else None)

    # -- gestures -------------------------------------------------------------------------------
    def mouseReleaseEvent(self, event):  # noqa: N802 - Qt API
        super().mouseReleaseEvent(event)
        if event.button() == Qt.LeftButton:
            self.commit_moves()

    def commit_moves(self) -> None:
        moves = {}
        for item in self.selected_nodes():
            old = list(self.graph.nodes[item.node_id].ui.get("pos", [0, 0]))
            new = [round(item.pos().x(), 1), round(item.pos().y(), 1)]
            if old != new:
                moves[item.node_id] = (old, new)
        self.editor.move(moves)

    def selected_nodes(self) -> list[NodeItem]:
        return [i for i in self.selectedItems() if isinstance(i, NodeItem)]

    def selected_ids(self) -> list[str]:
        return [i.node_id for i in self.selected_nodes()]

    def mouseDoubleClickEvent(self, event):  # noqa: N802 - Qt API
        if not self.items(event.scenePos()):
            self.search_requested.emit(event.scenePos(), None)
            event.accept()
            return
        super().mouseDoubleClickEvent(event)

    def contextMenuEvent(self, event):  # noqa: N802 - Qt API
        if not self.items(event.scenePos()):
            self.canvas_menu_requested.emit(event.scenePos(), event.screenPos())
            event.accept()
            return
        super().contextMenuEvent(event)

    def node_context_menu(self, item: NodeItem, screen_pos) -> None:
        self.node_menu_requested.emit(item, screen_pos)

    # -- run state ------------------------------------------------------------------------------
    def clear_run_marks(self, ids=None) -> None:
        for nid, item in self.nodes.items():
            if ids is None or nid in ids:
                item.set_status("")

    def set_problems(self, problems: dict[str, str]) -> None:
        for nid, item in self.nodes.items():
            item.set_message(problems.get(nid, ""))

    def items_bounds(self) -> QRectF:
        rect = QRectF()
        for item in [*self.nodes.values(), *self.decorations]:
            rect = rect.united(item.sceneBoundingRect())
        return rect
