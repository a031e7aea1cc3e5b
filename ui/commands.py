"""Undo commands. Each changes only the graph model; the scene follows the model's notifications."""

from __future__ import annotations

import copy
from typing import Any

from PySide6.QtGui import QUndoCommand

from nodegraph import Graph, NodeInstance

_MISSING = object()


class AddNodes(QUndoCommand):
    """Add nodes under fixed ids, with their links (internal, or to nodes already in the graph)."""

    def __init__(self, graph: Graph, nodes: list[NodeInstance], text: str = "Add node"):
        super().__init__(text)
        self.graph = graph
        self.nodes = [copy.deepcopy(n) for n in nodes]

    def redo(self) -> None:
        for n in self.nodes:
            self.graph.add_node(n.type, n.id, copy.deepcopy(n.values), copy.deepcopy(n.ui), fill_defaults=False)
        for n in self.nodes:
            for name, (src, slot) in n.links.items():
                if src in self.graph.nodes:
                    self.graph.connect(src, slot, n.id, name, check=False)

    def undo(self) -> None:
        for n in reversed(self.nodes):
            if n.id in self.graph.nodes:
                self.graph.remove_node(n.id)

    @property
    def ids(self) -> list[str]:
        return [n.id for n in self.nodes]


class RemoveNodes(QUndoCommand):
    def __init__(self, graph: Graph, ids: list[str], text: str = "Delete"):
        super().__init__(text)
        self.graph = graph
        chosen = set(ids)
        self.nodes = [copy.deepcopy(graph.node(i)) for i in ids]
        self.consumers = [(t, name, nid, slot) for nid in ids for t, name, slot in graph.consumers(nid)
                          if t not in chosen]

    def redo(self) -> None:
        for n in self.nodes:
            self.graph.remove_node(n.id)

    def undo(self) -> None:
        AddNodes(self.graph, self.nodes).redo()
        for target, name, src, slot in self.consumers:
            if target in self.graph.nodes:
                self.graph.connect(src, slot, target, name, check=False)


class Connect(QUndoCommand):
    def __init__(self, graph: Graph, src: str, slot: int, dst: str, input_name: str):
        super().__init__(f"Connect {src} → {dst}.{input_name}")
        self.graph, self.link, self.dst, self.input = graph, (src, int(slot)), dst, input_name
        self.previous = graph.node(dst).links.get(input_name)

    def redo(self) -> None:
        self.graph.connect(*self.link, self.dst, self.input, check=False)

    def undo(self) -> None:
        self.graph.disconnect(self.dst, self.input)
        if self.previous is not None:
            self.graph.connect(*self.previous, self.dst, self.input, check=False)


class Disconnect(QUndoCommand):
    def __init__(self, graph: Graph, dst: str, input_name: str):
        super().__init__(f"Disconnect {dst}.{input_name}")
        self.graph, self.dst, self.input = graph, dst, input_name
        self.previous = graph.node(dst).links.get(input_name)

    def redo(self) -> None:
        self.graph.disconnect(self.dst, self.input)

    def undo(self) -> None:
        if self.previous is not None:
            self.graph.connect(*self.previous, self.dst, self.input, check=False)


class SetValue(QUndoCommand):
    """Consecutive edits of the same field merge into one undo step."""

    ID = 1001

    def __init__(self, graph: Graph, node_id: str, name: str, value: Any, *, merge: bool = True):
        super().__init__(f"Edit {name}")
        self.graph, self.node_id, self.name = graph, node_id, name
        values = graph.node(node_id).values
        self.old = copy.deepcopy(values[name]) if name in values else _MISSING
        self.new = value
        self.merge = merge

    def id(self) -> int:
        return self.ID if self.merge else -1

    def mergeWith(self, other: QUndoCommand) -> bool:
        if not isinstance(other, SetValue) or not other.merge or (other.node_id, other.name) != (
                self.node_id, self.name):
            return False
        self.new = other.new
        return True

    def redo(self) -> None:
        self.graph.set_value(self.node_id, self.name, copy.deepcopy(self.new))

    def undo(self) -> None:
        if self.old is _MISSING:
            cls = self.graph.node_class(self.node_id)
            spec = cls.input(self.name) if cls else None
            if spec is not None and spec.has_default:
                self.graph.set_value(self.node_id, self.name, spec.default)
            return
        self.graph.set_value(self.node_id, self.name, copy.deepcopy(self.old))


class SetUi(QUndoCommand):
    """Change editor-only node state: title, collapsed, which value inputs show as sockets…"""

    def __init__(self, graph: Graph, node_id: str, text: str = "Edit node", **changes: Any):
        super().__init__(text)
        self.graph, self.node_id, self.new = graph, node_id, copy.deepcopy(changes)
        ui = graph.node(node_id).ui
        self.old = {k: copy.deepcopy(ui[k]) if k in ui else _MISSING for k in changes}

    def redo(self) -> None:
        self._apply(self.new)

    def undo(self) -> None:
        self._apply(self.old)

    def _apply(self, values: dict[str, Any]) -> None:
        gone = [k for k, v in values.items() if v is _MISSING or v is None]
        kept = {k: copy.deepcopy(v) for k, v in values.items() if k not in gone}
        if kept:
            self.graph.set_ui(self.node_id, **kept)
        if gone:  # a key the node did not have before goes away again
            self.graph.unset_ui(self.node_id, *gone)


class MoveNodes(QUndoCommand):
    def __init__(self, graph: Graph, moves: dict[str, tuple[list[float], list[float]]], text: str = "Move"):
        super().__init__(text)
        self.graph, self.moves = graph, moves

    def redo(self) -> None:
        for nid, (_old, new) in self.moves.items():
            if nid in self.graph.nodes:
                self.graph.set_ui(nid, pos=list(new))

    def undo(self) -> None:
        for nid, (old, _new) in self.moves.items():
            if nid in self.graph.nodes:
                self.graph.set_ui(nid, pos=list(old))


class SetGraphUi(QUndoCommand):
    """Change one key of the workflow's own editor data (a note's position…)."""

    def __init__(self, graph: Graph, key: str, value: Any, text: str = "Edit"):
        super().__init__(text)
        self.graph, self.key, self.new = graph, key, copy.deepcopy(value)
        self.old = copy.deepcopy(graph.ui.get(key))

    def redo(self) -> None:
        self.graph.set_graph_ui(**{self.key: copy.deepcopy(self.new)})

    def undo(self) -> None:
        self.graph.set_graph_ui(**{self.key: copy.deepcopy(self.old)})
