"""Automatic layout for workflows that carry no positions (ComfyUI API files, A1111 parameters).

Nodes go left to right by graph depth (the longest chain of links that feeds them), one column per
depth; within a column they are ordered by where their inputs come from, so links cross less, and
stacked without overlapping. Sizes are the node's own `ui["size"]` or an estimate from its
declaration that follows the editor's card layout (title bar, one row per socket or value, a text
box for multi-line text); the gaps leave room for the estimate to be short.
"""

from __future__ import annotations

from collections.abc import Callable

import networkx as nx

from .graph import Graph, NodeInstance, id_order

COLUMN_GAP = 90.0
ROW_GAP = 40.0
WIDTH = 280.0
MAX_WIDTH = 430.0
TITLE, ROW, TEXT_BOX = 30.0, 24.0, 70.0

Size = tuple[float, float]


def needs_layout(graph: Graph) -> bool:
    """True when some node has no position."""
    return any(not _has_pos(n) for n in graph.nodes.values())


def auto_layout(graph: Graph, size_of: Callable[[NodeInstance], Size] | None = None) -> None:
    """Give every node without a position one. With none placed, the whole graph is laid out by
    depth; otherwise the unplaced nodes go in a row under the placed ones."""
    size_of = size_of or (lambda node: estimate_size(graph, node))
    placed = [n for n in graph.nodes.values() if _has_pos(n)]
    todo = [n for n in graph.nodes.values() if not _has_pos(n)]
    if not todo:
        return
    if placed:
        bottom = max(n.ui["pos"][1] + size_of(n)[1] for n in placed)
        x = min(n.ui["pos"][0] for n in placed)
        for node in todo:
            node.ui["pos"] = [round(x), round(bottom + ROW_GAP * 2)]
            x += size_of(node)[0] + COLUMN_GAP
        return
    for node_id, (x, y) in positions(graph, size_of).items():
        graph.nodes[node_id].ui["pos"] = [round(x), round(y)]


def positions(graph: Graph, size_of: Callable[[NodeInstance], Size]) -> dict[str, tuple[float, float]]:
    g = nx.DiGraph()
    g.add_nodes_from(graph.nodes)
    for node in graph.nodes.values():
        for src, _slot in node.links.values():
            if src in graph.nodes and src != node.id:
                g.add_edge(src, node.id)
    depth = _depths(g)
    columns: dict[int, list[str]] = {}
    for node_id in sorted(graph.nodes, key=id_order):
        columns.setdefault(depth[node_id], []).append(node_id)
    row: dict[str, float] = {}
    for d in sorted(columns):
        column = columns[d]
        # barycentre of the rows feeding each node; nodes fed by nothing keep their id order
        keys = {}
        for i, node_id in enumerate(column):
            ups = [row[p] for p in g.predecessors(node_id) if p in row]
            keys[node_id] = (sum(ups) / len(ups) if ups else float(i), i)
        column.sort(key=keys.__getitem__)
        for i, node_id in enumerate(column):
            row[node_id] = float(i)
    sizes = {node_id: size_of(graph.nodes[node_id]) for node_id in graph.nodes}
    heights = {d: sum(sizes[n][1] for n in col) + ROW_GAP * (len(col) - 1) for d, col in columns.items()}
    tallest = max(heights.values(), default=0.0)
    out: dict[str, tuple[float, float]] = {}
    x = 0.0
    for d in sorted(columns):
        y = (tallest - heights[d]) / 2
        for node_id in columns[d]:
            out[node_id] = (x, y)
            y += sizes[node_id][1] + ROW_GAP
        x += max(sizes[n][0] for n in columns[d]) + COLUMN_GAP
    return out


def _depths(g: nx.DiGraph) -> dict[str, int]:
    """Longest path from a node fed by nothing; a cycle (an invalid graph) counts as one step."""
    condensed = nx.condensation(g)
    level: dict[int, int] = {}
    for c in nx.topological_sort(condensed):
        level[c] = max((level[p] + 1 for p in condensed.predecessors(c)), default=0)
    mapping = condensed.graph["mapping"]
    return {node_id: level[mapping[node_id]] for node_id in g.nodes}


def estimate_size(graph: Graph, node: NodeInstance) -> Size:
    size = node.ui.get("size")
    cls = graph.registry.get(node.type) if graph.registry else None
    width = float(size[0]) if _is_pair(size) else WIDTH
    if cls is None:
        rows = max(len(node.links), 1 + max((s for _s, s in node.links.values()), default=0))
        return max(width, 200.0), TITLE + ROW * (rows + len(node.values)) + 20
    sockets = [s for s in cls.inputs if not s.is_widget or s.name in node.links]
    height = TITLE + ROW * max(len(sockets), len(cls.outputs)) + 16
    for spec in cls.inputs:
        if spec.is_widget and spec not in sockets:
            height += ROW - 4 + TEXT_BOX if spec.multiline else ROW
            height += ROW if spec.control_after_generate else 0
            if not _is_pair(size) and (spec.choices is not None or spec.files is not None):
                # the editor widens a card to show a long choice (a checkpoint's file name)
                text = str(node.values.get(spec.name, ""))
                width = min(MAX_WIDTH, max(width, 130 + 7.5 * len(text) + 50))
    return max(width, 200.0), height


def _has_pos(node: NodeInstance) -> bool:
    return _is_pair(node.ui.get("pos"))


def _is_pair(value) -> bool:
    return (isinstance(value, list | tuple) and len(value) == 2
            and all(isinstance(v, int | float) and not isinstance(v, bool) for v in value))
