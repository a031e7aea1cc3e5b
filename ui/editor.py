"""The editor's document: graph model + registry + environment + undo stack, and every user intent
as a method that pushes an undo command (intent → command → model → notification → scene)."""

from __future__ import annotations

import copy
import json
import random
from typing import Any

from PySide6.QtCore import QObject, Signal
from PySide6.QtGui import QUndoStack

from nodegraph import Graph, NodeInstance
from nodegraph.workflow import from_native, to_native

from . import commands as C

# What happens to an input declared `control_after_generate` after each run (ComfyUI's set); the
# node's ui["after_run"] maps input names to one of these ("fixed" when absent).
AFTER_RUN_MODES = ("fixed", "increment", "decrement", "randomize")
CLIP_MIME = "application/x-sdgraph-nodes"


def has_after_run_control(spec) -> bool:
    """The declaration asks for the after-run control (fixed/increment/decrement/randomize): an
    integer input declared `control_after_generate`, whatever its name."""
    return spec.control_after_generate and spec.type.name == "INT"


def new_node_values(cls, env) -> dict[str, Any]:
    """The values a node added in the editor starts with: its defaults, and for each file input
    the first file available (a new loader shows a model, not an empty name)."""
    values = dict(cls.defaults())
    for spec in cls.inputs:
        if spec.is_widget and spec.files is not None:
            choices = spec.choice_list(env)
            if choices:
                values[spec.name] = choices[0]
    return values


class Editor(QObject):
    graph_replaced = Signal(object)  # the new Graph

    def __init__(self, registry, env=None, parent: QObject | None = None):
        super().__init__(parent)
        self.registry = registry
        self.env = env
        self.undo = QUndoStack(self)
        self.graph = Graph(registry)
        self.path: str | None = None

    # -- document -----------------------------------------------------------------------------
    def replace_graph(self, graph: Graph, path: str | None = None) -> None:
        graph.registry = self.registry
        self.graph = graph
        self.path = path
        self.undo.clear()
        self.graph_replaced.emit(graph)

    def snapshot(self) -> Graph:
        """An independent copy to hand to the executor's thread (edits may go on meanwhile)."""
        g = Graph(self.registry)
        g.nodes = copy.deepcopy(self.graph.nodes)
        g.ui = copy.deepcopy(self.graph.ui)
        return g

    # -- nodes --------------------------------------------------------------------------------
    def add_node(self, type_name: str, pos: tuple[float, float] = (0, 0), *,
                 link_from: tuple[str, int] | None = None, link_to: tuple[str, str] | None = None) -> str:
        """Add a node; optionally connect a dragged output to its first compatible input (link_from)
        or its first compatible output to a dragged input (link_to) in the same undo step."""
        cls = self.registry.get(type_name)
        nid = self.graph.new_id()
        node = NodeInstance(nid, type_name, new_node_values(cls, self.env) if cls else {}, {},
                            {"pos": [float(pos[0]), float(pos[1])]})
        self.undo.beginMacro(f"Add {type_name}")
        self.undo.push(C.AddNodes(self.graph, [node], f"Add {type_name}"))
        if link_from is not None:
            name = self.first_compatible_input(nid, *link_from)
            if name is not None:
                self.connect(link_from[0], link_from[1], nid, name)
        if link_to is not None:
            slot = self.first_compatible_output(nid, *link_to)
            if slot is not None:
                self.connect(nid, slot, link_to[0], link_to[1])
        self.undo.endMacro()
        return nid

    def first_compatible_input(self, nid: str, src: str, slot: int) -> str | None:
        cls = self.registry.get(self.graph.node(nid).type)
        fits = [s for s in (cls.inputs if cls else []) if self.graph.can_connect(src, slot, nid, s.name) is None]
        fits.sort(key=lambda s: s.is_widget)  # prefer link-only inputs, then value inputs
        return fits[0].name if fits else None

    def first_compatible_output(self, nid: str, dst: str, input_name: str) -> int | None:
        cls = self.registry.get(self.graph.node(nid).type)
        for slot, _out in enumerate(cls.outputs if cls else []):
            if self.graph.can_connect(nid, slot, dst, input_name) is None:
                return slot
        return None

    def delete(self, ids: list[str]) -> None:
        ids = [i for i in ids if i in self.graph.nodes]
        if ids:
            self.undo.push(C.RemoveNodes(self.graph, ids, f"Delete {len(ids)} node(s)"))

    def set_value(self, nid: str, name: str, value: Any, *, merge: bool = True) -> None:
        node = self.graph.node(nid)
        old = node.values.get(name)
        if type(old) is type(value) and old == value:
            return
        self.undo.push(C.SetValue(self.graph, nid, name, value, merge=merge))

    def set_ui(self, nid: str, text: str = "Edit node", **changes: Any) -> None:
        self.undo.push(C.SetUi(self.graph, nid, text, **changes))

    def move_note(self, note_id: str, pos: list[float], key: str = "notes") -> None:
        """Move a note (or another card kept in the graph's ui data under `key`)."""
        notes = copy.deepcopy(self.graph.ui.get(key) or [])
        for note in notes:
            if isinstance(note, dict) and note.get("id") == note_id:
                note["pos"] = list(pos)
                self.undo.push(C.SetGraphUi(self.graph, key, notes, "Move note"))
                return

    def set_mode(self, ids: list[str], mode: str | None) -> None:
        """Mute or bypass nodes as ComfyUI does (None: back to normal), one undo step."""
        self.undo.beginMacro({"muted": "Mute", "bypassed": "Bypass"}.get(mode or "", "Unmute"))
        for nid in ids:
            if self.graph.node(nid).ui.get("mode") != mode:
                self.set_ui(nid, "Mode", mode=mode)
        self.undo.endMacro()

    def rename(self, nid: str, title: str) -> None:
        title = title.strip()
        if title != self.graph.node(nid).ui.get("title", ""):
            self.set_ui(nid, "Rename", title=title or None)

    def set_collapsed(self, ids: list[str], collapsed: bool) -> None:
        self.undo.beginMacro("Collapse" if collapsed else "Expand")
        for nid in ids:
            self.set_ui(nid, "Collapse", collapsed=collapsed)
        self.undo.endMacro()

    def set_as_socket(self, nid: str, name: str, as_socket: bool) -> None:
        """Turn a value input into a socket (for a link) or back into an inline widget."""
        node = self.graph.node(nid)
        sockets = [s for s in node.ui.get("sockets") or [] if s != name] + ([name] if as_socket else [])
        self.undo.beginMacro("Convert to input" if as_socket else "Convert to widget")
        if not as_socket and name in node.links:
            self.undo.push(C.Disconnect(self.graph, nid, name))
        self.set_ui(nid, "Convert input", sockets=sockets)
        self.undo.endMacro()

    def set_seed_mode(self, nid: str, name: str, mode: str) -> None:
        modes = dict(self.graph.node(nid).ui.get("after_run") or {})
        modes[name] = mode
        self.set_ui(nid, "After run", after_run=modes)

    def move(self, moves: dict[str, tuple[list[float], list[float]]]) -> None:
        moves = {k: v for k, v in moves.items() if list(v[0]) != list(v[1])}
        if moves:
            self.undo.push(C.MoveNodes(self.graph, moves))

    def align(self, ids: list[str], edge: str, sizes: dict[str, tuple[float, float]]) -> None:
        """edge: left, top, right, bottom, hcenter, vcenter. `sizes` gives each node's size."""
        pos = {i: list(self.graph.node(i).ui.get("pos", [0, 0])) for i in ids}
        if len(pos) < 2:
            return
        if edge == "left":
            target = min(p[0] for p in pos.values())
            moves = {i: (p, [target, p[1]]) for i, p in pos.items()}
        elif edge == "top":
            target = min(p[1] for p in pos.values())
            moves = {i: (p, [p[0], target]) for i, p in pos.items()}
        elif edge == "right":
            target = max(p[0] + sizes[i][0] for i, p in pos.items())
            moves = {i: (p, [target - sizes[i][0], p[1]]) for i, p in pos.items()}
        else:  # distribute horizontally, keeping order, 40 px apart
            x = min(p[0] for p in pos.values())
            moves = {}
            for i, p in sorted(pos.items(), key=lambda kv: kv[1][0]):
                moves[i] = (p, [x, p[1]])
                x += sizes[i][0] + 40
        self.undo.push(C.MoveNodes(self.graph, moves, f"Align {edge}"))

    # -- links --------------------------------------------------------------------------------
    def connect(self, src: str, slot: int, dst: str, input_name: str) -> str | None:
        """Connect, or return why not."""
        why = self.graph.can_connect(src, slot, dst, input_name)
        if why is not None:
            return why
        if self.graph.node(dst).links.get(input_name) != (src, slot):
            self.undo.push(C.Connect(self.graph, src, slot, dst, input_name))
        return None

    def disconnect(self, dst: str, input_name: str) -> None:
        if input_name in self.graph.node(dst).links:
            self.undo.push(C.Disconnect(self.graph, dst, input_name))

    # -- clipboard ----------------------------------------------------------------------------
    def copy_text(self, ids: list[str]) -> str:
        nodes = self.graph.copy_nodes([i for i in ids if i in self.graph.nodes])
        sub = Graph(self.registry)
        for n in nodes:
            sub.nodes[n.id] = n
        return json.dumps(to_native(sub))

    def paste_text(self, text: str, offset: tuple[float, float] = (30, 30)) -> list[str]:
        try:
            sub = from_native(json.loads(text), self.registry, strict=False)
        except Exception:  # noqa: BLE001 - not our clipboard content
            return []
        start = int(self.graph.new_id())
        mapping = {old: str(start + k) for k, old in enumerate(sorted(sub.nodes, key=_order))}
        fresh = []
        for old, n in sub.nodes.items():
            ui = copy.deepcopy(n.ui)
            p = ui.get("pos", [0, 0])
            ui["pos"] = [p[0] + offset[0], p[1] + offset[1]]
            links = {k: (mapping[s], slot) for k, (s, slot) in n.links.items() if s in mapping}
            fresh.append(NodeInstance(mapping[old], n.type, copy.deepcopy(n.values), links, ui))
        if fresh:
            self.undo.push(C.AddNodes(self.graph, fresh, f"Paste {len(fresh)} node(s)"))
        return [n.id for n in fresh]

    # -- after a run --------------------------------------------------------------------------
    def apply_seed_controls(self) -> None:
        """Inputs declared `control_after_generate` and set to increment/decrement/randomize change
        after a run is queued (one undo step). Increment past the maximum wraps to the minimum,
        decrement below the minimum to the maximum, as ComfyUI's control does."""
        changes = []
        for node in self.graph.nodes.values():
            cls = self.registry.get(node.type)
            for name, mode in (node.ui.get("after_run") or {}).items():
                spec = cls.input(name) if cls else None
                if spec is None or not has_after_run_control(spec) or mode not in AFTER_RUN_MODES[1:] \
                        or name in node.links:
                    continue
                new = after_run_value(spec, node.values.get(name, spec.default), mode)
                if new is not None:
                    changes.append((node.id, name, new))
        if changes:
            self.undo.beginMacro("Seed after run")
            for nid, name, value in changes:
                self.set_value(nid, name, value, merge=False)
            self.undo.endMacro()


def after_run_value(spec, current: Any, mode: str) -> int | None:
    """The value an after-run control gives next (None: leave it as it is)."""
    hi = int(spec.max) if spec.max is not None else 2**64 - 1
    lo = int(spec.min) if spec.min is not None else 0
    try:
        cur = int(current)
    except (TypeError, ValueError):
        return None
    if mode == "increment":
        return cur + 1 if lo <= cur < hi else lo
    if mode == "decrement":
        return cur - 1 if lo < cur <= hi else hi
    if mode == "randomize":
        return random.randint(lo, max(lo, min(hi, 2**53)))
    return None


def _order(node_id: str):
    return (0, int(node_id)) if node_id.isdigit() else (1, node_id)
