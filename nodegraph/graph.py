"""The graph model: nodes with values and links, plus change notifications.

The editor's scene and the executor both read this model; user edits go through its methods so
every listener hears about them. A graph may hold node types the registry does not know (a file
from a newer version, a missing custom node): such nodes are kept and reported by validation.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import networkx as nx

from .errors import GraphError
from .registry import Registry
from .types import compatible


@dataclass
class NodeInstance:
    id: str
    type: str
    values: dict[str, Any] = field(default_factory=dict)
    links: dict[str, tuple[str, int]] = field(default_factory=dict)  # input → (source id, output slot)
    ui: dict[str, Any] = field(default_factory=dict)  # pos, size, title, collapsed… (editor only)


@dataclass(frozen=True)
class GraphChange:
    """One notification. kind: node_added, node_removed, link_added, link_removed,
    value_changed, ui_changed, graph_ui_changed, reset."""

    kind: str
    node_id: str | None = None
    input: str | None = None
    detail: Any = None


Listener = Callable[[GraphChange], None]


class Graph:
    def __init__(self, registry: Registry | None = None):
        self.registry = registry
        self.nodes: dict[str, NodeInstance] = {}
        self.ui: dict[str, Any] = {}
        # What a workflow reader changed or left out (ignored inputs, fixed names…), one line each.
        self.warnings: list[str] = []
        self._listeners: list[Listener] = []

    # -- notifications ------------------------------------------------------------------------
    def subscribe(self, listener: Listener) -> Callable[[], None]:
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None

    def _notify(self, kind: str, node_id: str | None = None, input: str | None = None, detail: Any = None):
        change = GraphChange(kind, node_id, input, detail)
        for listener in list(self._listeners):
            listener(change)

    # -- queries ------------------------------------------------------------------------------
    def __contains__(self, node_id: object) -> bool:
        return node_id in self.nodes

    def __len__(self) -> int:
        return len(self.nodes)

    def node(self, node_id: str) -> NodeInstance:
        try:
            return self.nodes[node_id]
        except KeyError:
            raise GraphError(f"there is no node {node_id!r} in the graph") from None

    def node_class(self, node_id: str):
        return self.registry.get(self.node(node_id).type) if self.registry else None

    def coerced(self, type_name: str, name: str, value: Any) -> Any:
        """A value as it enters the graph: converted to its declared input's type where that is
        harmless (20.0 → 20), so validation, the cache key and the node all see the same value.
        Values of unknown inputs, or that do not fit, stay as they are for validation to report."""
        cls = self.registry.get(type_name) if self.registry else None
        spec = cls.input(name) if cls else None
        if spec is None or not spec.type.widget:
            return value
        ok, converted = spec.coerce(value)
        return converted if ok else value

    def new_id(self) -> str:
        numeric = [int(i) for i in self.nodes if i.isdigit()]
        return str(max(numeric, default=0) + 1)

    def consumers(self, node_id: str) -> list[tuple[str, str, int]]:
        """(target id, input name, output slot) for every link leaving `node_id`."""
        return [(n.id, name, slot) for n in self.nodes.values()
                for name, (src, slot) in n.links.items() if src == node_id]

    def to_networkx(self) -> nx.MultiDiGraph:
        """Nodes keyed by id; one edge per link with `input` and `slot` attributes."""
        g = nx.MultiDiGraph()
        for node in self.nodes.values():
            g.add_node(node.id, type=node.type)
        for node in self.nodes.values():
            for name, (src, slot) in node.links.items():
                if src in self.nodes:
                    g.add_edge(src, node.id, input=name, slot=slot)
        return g

    # -- edits --------------------------------------------------------------------------------
    def add_node(self, type_name: str, node_id: str | None = None, values: dict[str, Any] | None = None,
                 ui: dict[str, Any] | None = None, *, fill_defaults: bool = True) -> str:
        node_id = str(node_id) if node_id is not None else self.new_id()
        if node_id in self.nodes:
            raise GraphError(f"node id {node_id!r} is already used")
        cls = self.registry.get(type_name) if self.registry else None
        if self.registry is not None and cls is None and fill_defaults:
            raise GraphError(f"unknown node type {type_name!r}")
        start = dict(cls.defaults()) if (cls and fill_defaults) else {}
        start.update({k: self.coerced(type_name, k, v) for k, v in (values or {}).items()})
        self.nodes[node_id] = NodeInstance(node_id, type_name, start, {}, dict(ui or {}))
        self._notify("node_added", node_id)
        return node_id

    def remove_node(self, node_id: str) -> None:
        self.node(node_id)
        for target, name, _slot in self.consumers(node_id):
            del self.nodes[target].links[name]
            self._notify("link_removed", target, name)
        del self.nodes[node_id]
        self._notify("node_removed", node_id)

    def connect(self, source_id: str, slot: int, target_id: str, input_name: str, *, check: bool = True) -> None:
        """Link output `slot` of source to an input of target, replacing any link already there."""
        source, target = self.node(source_id), self.node(target_id)
        if check:
            self._check_link(source, slot, target, input_name)
        if input_name in target.links:
            del target.links[input_name]
            self._notify("link_removed", target_id, input_name)
        target.links[input_name] = (source_id, int(slot))
        self._notify("link_added", target_id, input_name, (source_id, int(slot)))

    def can_connect(self, source_id: str, slot: int, target_id: str, input_name: str) -> str | None:
        """None if the link is allowed, else the reason it is not."""
        try:
            self._check_link(self.node(source_id), slot, self.node(target_id), input_name)
        except GraphError as e:
            return str(e)
        return None

    def _check_link(self, source: NodeInstance, slot: int, target: NodeInstance, input_name: str) -> None:
        if source.id == target.id:
            raise GraphError(f"node {source.id} cannot feed itself")
        if self.registry is None:
            return
        src_cls, dst_cls = self.registry.get(source.type), self.registry.get(target.type)
        if src_cls is None or dst_cls is None:
            return  # unknown types are reported by validation, not here
        if not 0 <= slot < len(src_cls.outputs):
            raise GraphError(f"node {source.id} ({source.type}) has no output slot {slot}")
        spec = dst_cls.input(input_name)
        if spec is None:
            raise GraphError(f"node {target.id} ({target.type}) has no input {input_name!r}")
        out = src_cls.outputs[slot]
        if not compatible(out.type.name, spec.type.name):
            raise GraphError(
                f"cannot connect {source.type}.{out.name} ({out.type.name}) to "
                f"{target.type}.{input_name} ({spec.type.name}): types differ")
        if self._would_cycle(source.id, target.id):
            raise GraphError(f"linking node {source.id} to node {target.id} would make a cycle")

    def _would_cycle(self, source_id: str, target_id: str) -> bool:
        return nx.has_path(self.to_networkx(), target_id, source_id)

    def disconnect(self, target_id: str, input_name: str) -> None:
        node = self.node(target_id)
        if input_name in node.links:
            del node.links[input_name]
            self._notify("link_removed", target_id, input_name)

    def set_value(self, node_id: str, name: str, value: Any) -> None:
        node = self.node(node_id)
        value = self.coerced(node.type, name, value)
        old = node.values.get(name, _MISSING)
        if old is not _MISSING and type(old) is type(value) and old == value:
            return
        node.values[name] = value
        self._notify("value_changed", node_id, name, value)

    def set_ui(self, node_id: str, **ui: Any) -> None:
        self.node(node_id).ui.update(ui)
        self._notify("ui_changed", node_id, detail=dict(ui))

    def unset_ui(self, node_id: str, *keys: str) -> None:
        ui = self.node(node_id).ui
        gone = [k for k in keys if k in ui]
        for key in gone:
            del ui[key]
        if gone:
            self._notify("ui_changed", node_id, detail=dict.fromkeys(gone))

    def set_graph_ui(self, **ui: Any) -> None:
        self.ui.update(ui)
        self._notify("graph_ui_changed", detail=dict(ui))

    def clear(self) -> None:
        self.nodes.clear()
        self.ui = {}
        self._notify("reset")

    # -- copy and paste -----------------------------------------------------------------------
    def copy_nodes(self, node_ids: Iterable[str]) -> list[NodeInstance]:
        """Deep copies of the chosen nodes, keeping only links between them."""
        chosen = set(node_ids)
        out = []
        for node_id in chosen:
            node = copy.deepcopy(self.node(node_id))
            node.links = {k: v for k, v in node.links.items() if v[0] in chosen}
            out.append(node)
        return sorted(out, key=lambda n: id_order(n.id))

    def paste_nodes(self, nodes: list[NodeInstance], offset: tuple[float, float] = (0.0, 0.0)) -> dict[str, str]:
        """Add copies under fresh ids; internal links are re-pointed. Returns old id → new id."""
        mapping: dict[str, str] = {}
        for node in nodes:
            ui = copy.deepcopy(node.ui)
            if "pos" in ui:
                ui["pos"] = [ui["pos"][0] + offset[0], ui["pos"][1] + offset[1]]
            mapping[node.id] = self.add_node(node.type, values=copy.deepcopy(node.values), ui=ui,
                                             fill_defaults=False)
        for node in nodes:
            for name, (src, slot) in node.links.items():
                if src in mapping:
                    self.connect(mapping[src], slot, mapping[node.id], name, check=False)
        return mapping


_MISSING = object()


def id_order(node_id: str) -> tuple[int, int | str]:
    """Sort key for node ids: numbers in numeric order ("2" before "10"), then other names."""
    return (0, int(node_id)) if node_id.isdigit() else (1, node_id)
