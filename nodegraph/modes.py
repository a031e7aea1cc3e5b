"""Muted and bypassed nodes, as ComfyUI runs them.

A node's `ui["mode"]` may be "muted" (ComfyUI's mode 2: the node and every link from it are left
out of a run) or "bypassed" (mode 4: each consumer is fed, instead, by the node's first input of the
consumer's type). Both stay in the graph, so a workflow keeps them when saved; `runnable` gives the
graph a run sees. Types come from the declarations, or, for a node of an unknown type, from the
socket list its ComfyUI file gave (`ui["comfy"]`).
"""

from __future__ import annotations

from typing import Any

from .graph import Graph, NodeInstance
from .registry import Registry

MUTED, BYPASSED = "muted", "bypassed"
MODES = (MUTED, BYPASSED)


def mode_of(node: NodeInstance) -> str:
    mode = node.ui.get("mode")
    return mode if mode in MODES else ""


def runnable(graph: Graph, registry: Registry | None = None) -> Graph:
    """The graph without its muted and bypassed nodes, consumers of a bypassed node wired through
    it. The same object when no node is muted or bypassed."""
    if not any(mode_of(n) for n in graph.nodes.values()):
        return graph
    registry = registry or graph.registry
    out = Graph(registry)
    out.ui = graph.ui
    for node in graph.nodes.values():
        if mode_of(node):
            continue
        links = {}
        for name, (src, slot) in node.links.items():
            resolved = _resolve(graph, registry, src, slot, input_type(registry, node, name), set())
            if resolved is not None:
                links[name] = resolved
        out.nodes[node.id] = NodeInstance(node.id, node.type, node.values, links, node.ui)
    return out


def _resolve(graph: Graph, registry, src: str, slot: int, want: str, seen: set) -> tuple[str, int] | None:
    node = graph.nodes.get(src)
    if node is None or not mode_of(node):
        return src, slot  # a missing source is validation's to report
    if mode_of(node) == MUTED or (src, slot) in seen:
        return None
    seen.add((src, slot))
    inputs = socket_inputs(registry, node)
    index = _bypass_index(inputs, output_type(registry, node, slot), slot, want)
    if index < 0 or inputs[index][0] not in node.links:
        return None
    up_src, up_slot = node.links[inputs[index][0]]
    return _resolve(graph, registry, up_src, up_slot, want, seen)


def _bypass_index(inputs: list[tuple[str, str]], out_type: str, slot: int, want: str) -> int:
    """ComfyUI's choice: the input at the output's own index if its type fits, else the first
    input of exactly the wanted type, else the first that fits."""
    if want in ("*", ""):
        return slot if slot < len(inputs) else (0 if inputs else -1)
    if slot < len(inputs) and fits(inputs[slot][1], out_type) and fits(inputs[slot][1], want):
        return slot
    for i, (_name, kind) in enumerate(inputs):
        if kind == want:
            return i
    for i, (_name, kind) in enumerate(inputs):
        if fits(kind, out_type) and fits(kind, want):
            return i
    return -1


def fits(a: str, b: str) -> bool:
    """litegraph's rule: equal, a wildcard, or comma-separated lists that share a type."""
    if not a or not b or a == "*" or b == "*":
        return True
    a, b = str(a).lower(), str(b).lower()
    return a == b or bool(set(a.split(",")) & set(b.split(",")))


def socket_inputs(registry, node: NodeInstance) -> list[tuple[str, str]]:
    """(name, type) of the node's input sockets, in order: what a bypass can pass through."""
    cls = registry.get(node.type) if registry else None
    if cls is not None:
        return [(s.name, s.type.name) for s in cls.inputs if not s.is_widget or s.name in node.links]
    return [(name, kind) for name, kind in _comfy_slots(node, "inputs")] or [(n, "*") for n in node.links]


def input_type(registry, node: NodeInstance, name: str) -> str:
    cls = registry.get(node.type) if registry else None
    spec = cls.input(name) if cls else None
    if spec is not None:
        return spec.type.name
    return dict(_comfy_slots(node, "inputs")).get(name, "*")


def output_type(registry, node: NodeInstance, slot: int) -> str:
    cls = registry.get(node.type) if registry else None
    if cls is not None:
        return cls.outputs[slot].type.name if 0 <= slot < len(cls.outputs) else "*"
    outs = _comfy_slots(node, "outputs")
    return outs[slot][1] if 0 <= slot < len(outs) else "*"


def _comfy_slots(node: NodeInstance, key: str) -> list[tuple[str, str]]:
    comfy: Any = node.ui.get("comfy")
    slots = comfy.get(key) if isinstance(comfy, dict) else None
    if not isinstance(slots, list):
        return []
    return [(str(s.get("name", "")), str(s.get("type", "*"))) for s in slots if isinstance(s, dict)]
