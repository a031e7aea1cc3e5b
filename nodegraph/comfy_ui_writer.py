"""Writing ComfyUI's UI format (schema 0.4, which every ComfyUI since 2023 opens), so a workflow can
go back to ComfyUI: positional `widgets_values` in declaration order with the control value after
each `control_after_generate` input and the upload value after an `upload` input, links, groups,
notes, reroutes and primitives, muted and bypassed nodes, and unknown nodes as they were read.

What ComfyUI has no field for rides in `properties.sdgraph` (per node) and `extra.sdgraph`, so that
reading the file back (nodegraph.comfy_ui) gives the same graph.
"""

from __future__ import annotations

import copy
from typing import Any

import networkx as nx

from .comfy_ui import (
    CONTROL_VALUES,
    MODE_NUMBERS,
    NOTE_TYPES,
    PRIMITIVE,
    REROUTE,
    SR_KEY,
    STASH,
    _is_int,
    _is_number,
)
from .graph import Graph, NodeInstance, id_order
from .layout import estimate_size, positions

REROUTE_SIZE = [75, 26]
NOTE_SIZE = [400, 160]


def to_comfy_ui(graph: Graph) -> dict[str, Any]:
    return _Writer(graph).write()


class _Writer:
    def __init__(self, graph: Graph):
        self.graph = graph
        self.registry = graph.registry
        self.ids: dict[str, int] = {}  # graph node id → file id
        self.rids: dict[str, int] = {}  # note, reroute or primitive id → file id
        self.out: dict[int, dict] = {}  # file id → node object
        self.slots: dict[int, dict[str, int]] = {}  # file id → input name → slot index
        self.links: list[list] = []
        self.stashes: dict[int, dict] = {}
        ui = graph.ui if isinstance(graph.ui, dict) else {}
        self.notes = _records(ui.get("notes"), lambda r: isinstance(r.get("text"), str))
        self.reroutes = _records(ui.get("reroutes"), lambda r: True)
        self.primitives = _records(ui.get("primitives"), lambda r: "value" in r or "control" not in r)
        self.reroute_ids = {r["id"] for r in self.reroutes}
        self.primitive_by_id = {r["id"]: r for r in self.primitives}
        self.layout = positions(graph, lambda n: estimate_size(graph, n)) \
            if any(not _pair_ok(n.ui.get("pos")) for n in graph.nodes.values()) else {}

    def write(self) -> dict[str, Any]:
        self._assign_ids()
        order = _execution_order(self.graph)
        for node in self.graph.nodes.values():
            self._node(node, order.get(node.id, 0))
        for record in self.notes:
            self._note(record)
        for record in self.reroutes:
            self._reroute(record)
        for record in self.primitives:
            self._primitive(record)
        for node in self.graph.nodes.values():
            self._node_links(node)
        for record in self.reroutes:
            self._reroute_link(record)
        for fid, stash in self.stashes.items():
            if stash:
                self.out[fid].setdefault("properties", {})[STASH] = stash
        return self._document()

    # -- ids and order --------------------------------------------------------------------------
    def _assign_ids(self) -> None:
        """ComfyUI's integer ids: a graph node's own where it is one, else a new one. Notes,
        reroutes and primitives come after (our editor may have given a new node a note's id)."""
        used: set[int] = set()
        for table, keys in ((self.ids, list(self.graph.nodes)),
                            (self.rids, [r["id"] for r in self.notes + self.reroutes + self.primitives])):
            for key in keys:
                if key.isdigit() and str(int(key)) == key and int(key) not in used:
                    table[key] = int(key)
                    used.add(int(key))
        next_id = max(used, default=0) + 1
        for table, keys in ((self.ids, list(self.graph.nodes)),
                            (self.rids, [r["id"] for r in self.notes + self.reroutes + self.primitives])):
            for key in keys:
                if key not in table:
                    table[key] = next_id
                    next_id += 1

    # -- graph nodes ----------------------------------------------------------------------------
    def _node(self, node: NodeInstance, order: int) -> None:
        fid = self.ids[node.id]
        cls = self.registry.get(node.type) if self.registry else None
        raw: dict[str, Any] = {"id": fid, "type": node.type}
        stash: dict[str, Any] = {}
        if str(fid) != node.id:
            stash["id"] = node.id
        plain = cls is None and not _comfy_ok(node.ui.get("comfy"), unknown=True)
        handled = {"comfy"} if cls is None and not plain else set()
        if cls is not None:
            handled.add("after_run")
        extra_ui = self._ui_fields(node.ui, raw, stash, handled, known=cls is not None)
        if "pos" not in raw:
            raw["pos"] = [round(v) for v in self.layout.get(node.id, (0, 0))]
            stash.setdefault("drop", []).append("pos")
        if "size" not in raw:
            raw["size"] = [round(v) for v in estimate_size(self.graph, node)]
            stash.setdefault("drop", []).append("size")
        raw.setdefault("flags", {})
        raw["order"] = order
        raw.setdefault("mode", 0)
        primitive_inputs = self._primitive_inputs(node)
        if cls is not None:
            self._known(node, cls, raw, stash, primitive_inputs)
        elif plain:
            self._plain(node, raw, stash)
        else:
            self._placeholder(node, raw, stash)
        raw.setdefault("properties", {})[SR_KEY] = node.type
        if extra_ui:
            stash.setdefault("ui", {}).update(extra_ui)
        self.stashes[fid] = stash
        self.out[fid] = raw

    def _ui_fields(self, ui: dict, raw: dict, stash: dict, handled: set[str], *, known: bool) -> dict:
        """Put the node's editor data in ComfyUI's fields; what has no field is returned."""
        rest: dict[str, Any] = {}
        flags: dict[str, Any] = {}
        for key, value in ui.items():
            if key in ("pos", "size") and _pair_ok(value):
                raw[key] = list(value)
            elif key in ("title", "color", "bgcolor") and isinstance(value, str):
                raw[key] = value
            elif key == "collapsed" and value is True:
                flags["collapsed"] = True
            elif key == "mode" and value in MODE_NUMBERS:
                raw["mode"] = MODE_NUMBERS[value]
            elif key == "comfy" and _comfy_ok(value, unknown=not known):
                props = value.get("properties")
                if props:
                    raw["properties"] = copy.deepcopy(props)
                flags.update(copy.deepcopy(value.get("flags") or {}))
                if "mode" in value:
                    raw["mode"] = value["mode"]
            elif key in handled or key == "via":
                continue  # written with the values and links
            else:
                rest[key] = value
        raw["flags"] = flags
        return rest

    def _known(self, node: NodeInstance, cls, raw: dict, stash: dict, primitive_inputs: set[str]) -> None:
        slots = []
        for spec in cls.inputs:
            if not spec.is_widget:
                slots.append({"name": spec.name, "type": spec.type.name, "link": None})
            elif spec.name in node.links or spec.name in primitive_inputs:
                slots.append({"name": spec.name, "type": spec.type.name, "widget": {"name": spec.name},
                              "link": None})
        raw["inputs"] = slots
        self.slots[raw["id"]] = {s["name"]: i for i, s in enumerate(slots)}
        raw["outputs"] = [{"name": o.name, "type": o.type.name, "links": [], "slot_index": i}
                          for i, o in enumerate(cls.outputs)]
        after_run = node.ui.get("after_run")
        controls = {s.name for s in cls.inputs if s.is_widget and s.control_after_generate}
        if "after_run" in node.ui and not (isinstance(after_run, dict) and after_run and set(after_run) <= controls
                                           and all(m in CONTROL_VALUES[1:] for m in after_run.values())):
            stash.setdefault("ui", {})["after_run"] = after_run
            after_run = {}
        values = []
        unset = []
        for spec in cls.inputs:
            if not spec.is_widget:
                continue
            if spec.name in node.values:
                values.append(copy.deepcopy(node.values[spec.name]))
            else:
                unset.append(spec.name)
                values.append(spec.default if spec.has_default else None)
            if spec.control_after_generate:
                values.append((after_run or {}).get(spec.name, "fixed"))
            if spec.upload:
                values.append(spec.upload)
        raw["widgets_values"] = values
        if unset:
            stash["unset"] = unset
        extra = {k: v for k, v in node.values.items() if cls.input(k) is None or not cls.input(k).is_widget}
        if extra:
            stash["values"] = copy.deepcopy(extra)

    def _placeholder(self, node: NodeInstance, raw: dict, stash: dict) -> None:
        """A node of an unknown type, written back as it was read."""
        comfy = node.ui["comfy"]
        raw["inputs"] = [dict(copy.deepcopy(s), link=None) for s in comfy["inputs"]]
        self.slots[raw["id"]] = {}
        for i, s in enumerate(comfy["inputs"]):
            widget = s.get("widget")
            name = widget["name"] if isinstance(widget, dict) and isinstance(widget.get("name"), str) else s["name"]
            self.slots[raw["id"]].setdefault(name, i)
        raw["outputs"] = [dict(copy.deepcopy(s), links=[]) for s in comfy["outputs"]]
        if "widgets_values" in comfy:
            raw["widgets_values"] = copy.deepcopy(comfy["widgets_values"])
        if node.values:
            stash["values"] = copy.deepcopy(node.values)

    def _plain(self, node: NodeInstance, raw: dict, stash: dict) -> None:
        """An unknown node that came from an API file: its inputs have names, not positions."""
        names = list(node.links)
        raw["inputs"] = [{"name": n, "type": "*", "link": None} for n in names]
        self.slots[raw["id"]] = {n: i for i, n in enumerate(names)}
        used = [slot for _t, _n, slot in self.graph.consumers(node.id)]
        raw["outputs"] = [{"name": "", "type": "*", "links": []} for _ in range(max(used, default=-1) + 1)]
        raw["widgets_values"] = copy.deepcopy(list(node.values.values()))
        stash["plain"] = True
        if node.values:
            stash["values"] = copy.deepcopy(node.values)

    def _primitive_inputs(self, node: NodeInstance) -> set[str]:
        """Inputs fed by a PrimitiveNode that still holds the input's value."""
        via = node.ui.get("via")
        if not isinstance(via, dict):
            return set()
        out = set()
        for name, record_id in via.items():
            record = self.primitive_by_id.get(record_id)
            if record is not None and name not in node.links and name in node.values and \
                    _same(node.values[name], record.get("value")):
                out.add(name)
        return out

    def _node_links(self, node: NodeInstance) -> None:
        fid = self.ids[node.id]
        stash = self.stashes[fid]
        via = node.ui.get("via") if isinstance(node.ui.get("via"), dict) else {}
        written_via: dict[str, str] = {}
        kept: dict[str, list] = {}
        for name, (src, slot) in node.links.items():
            target_slot = self.slots[fid].get(name)
            if src not in self.graph.nodes or target_slot is None or not self._has_output(src, slot):
                kept[name] = [src, slot]
                continue
            through = via.get(name)
            if through in self.reroute_ids and self._reroute_source(through, set()) == (src, slot):
                self._link(self.rids[through], 0, fid, target_slot, self._output_type(src, slot))
                written_via[name] = through
            else:
                self._link(self.ids[src], slot, fid, target_slot, self._output_type(src, slot))
        for name in self._primitive_inputs(node):
            record_id = via[name]
            self._link(self.rids[record_id], 0, fid, self.slots[fid][name],
                       _output_of(self.primitive_by_id[record_id]).get("type", "*"))
            written_via[name] = record_id
        if kept:
            stash["links"] = kept
        if "via" in node.ui and node.ui["via"] != written_via:
            stash.setdefault("ui", {})["via"] = node.ui["via"]

    def _has_output(self, src: str, slot: int) -> bool:
        node = self.graph.nodes[src]
        cls = self.registry.get(node.type) if self.registry else None
        outputs = self.out[self.ids[src]]["outputs"]
        if cls is None and slot >= len(outputs):
            return False  # an unknown node keeps the sockets it was read with
        while slot >= len(outputs):  # a link to a slot the declaration lacks: validation says so
            outputs.append({"name": "", "type": "*", "links": []})
        return True

    def _output_type(self, src: str, slot: int) -> str:
        kind = self.out[self.ids[src]]["outputs"][slot].get("type", "*")
        return kind if isinstance(kind, str) else "*"

    def _link(self, origin: int, origin_slot: int, target: int, target_slot: int, kind: str) -> None:
        link_id = len(self.links) + 1
        self.links.append([link_id, origin, origin_slot, target, target_slot, kind])
        self.out[target]["inputs"][target_slot]["link"] = link_id
        outputs = self.out[origin]["outputs"]
        outputs[origin_slot].setdefault("links", [])
        if outputs[origin_slot]["links"] is None:
            outputs[origin_slot]["links"] = []
        outputs[origin_slot]["links"].append(link_id)

    # -- ComfyUI's editor-only nodes -------------------------------------------------------------
    def _record(self, record: dict, kind: str, own: tuple[str, ...], default_size: list) -> tuple[dict, dict]:
        fid = self.rids[record["id"]]
        raw: dict[str, Any] = {"id": fid, "type": kind}
        stash: dict[str, Any] = {}
        ui = {k: v for k, v in record.items() if k not in ("id", "type", *own)}
        rest = self._ui_fields(ui, raw, stash, set(), known=True)
        if str(fid) != record["id"]:
            rest["id"] = record["id"]
        if rest:
            stash["ui"] = rest
        if "pos" not in raw:
            raw["pos"] = [0, 0]
            stash.setdefault("drop", []).append("pos")
        if "size" not in raw:
            raw["size"] = list(default_size)
            stash.setdefault("drop", []).append("size")
        raw.setdefault("mode", 0)
        raw["order"] = 0
        raw.setdefault("properties", {})
        self.stashes[fid] = stash
        self.out[fid] = raw
        return raw, stash

    def _note(self, record: dict) -> None:
        kind = record.get("type") if record.get("type") in NOTE_TYPES else "Note"
        raw, stash = self._record(record, kind, ("text",), NOTE_SIZE)
        if record.get("type") != kind:
            stash.setdefault("ui", {})["type"] = record.get("type")
        raw.update(inputs=[], outputs=[], widgets_values=[record["text"]])

    def _reroute(self, record: dict) -> None:
        raw, _stash = self._record(record, REROUTE, ("source",), REROUTE_SIZE)
        raw.update(inputs=[{"name": "", "type": "*", "link": None}],
                   outputs=[{"name": "", "type": "*", "links": []}])
        self.slots[raw["id"]] = {"": 0}

    def _reroute_link(self, record: dict) -> None:
        fid = self.rids[record["id"]]
        source = record.get("source")
        origin = None
        if isinstance(source, dict) and source.get("reroute") in self.reroute_ids:
            origin = (self.rids[source["reroute"]], 0)
        elif isinstance(source, dict) and source.get("node") in self.graph.nodes and _is_int(source.get("slot")) \
                and source["slot"] >= 0 and self._has_output(source["node"], source["slot"]):
            origin = (self.ids[source["node"]], source["slot"])
        if origin is None:
            if "source" in record:
                self.stashes[fid].setdefault("ui", {})["source"] = source
            return
        kind = self.out[origin[0]]["outputs"][origin[1]].get("type", "*")
        self._link(origin[0], origin[1], fid, 0, kind if isinstance(kind, str) else "*")
        self.out[fid]["outputs"][0]["type"] = kind if isinstance(kind, str) else "*"

    def _reroute_source(self, reroute_id: str, seen: set) -> tuple[str, int] | None:
        record = next((r for r in self.reroutes if r["id"] == reroute_id), None)
        source = record.get("source") if record else None
        if not isinstance(source, dict) or reroute_id in seen:
            return None
        seen.add(reroute_id)
        if source.get("reroute") in self.reroute_ids:
            return self._reroute_source(source["reroute"], seen)
        if source.get("node") in self.graph.nodes and _is_int(source.get("slot")):
            return source["node"], source["slot"]
        return None

    def _primitive(self, record: dict) -> None:
        raw, stash = self._record(record, PRIMITIVE, ("value", "control", "output"), [210, 82])
        output = _output_of(record)
        if "output" not in record:
            stash.setdefault("drop", []).append("output")
        raw.update(outputs=[dict(copy.deepcopy(output), links=[])], widgets_values=[])
        if "value" in record:
            raw["widgets_values"] = [copy.deepcopy(record["value"])]
            if "control" in record:
                raw["widgets_values"].append(record["control"])

    # -- the document ---------------------------------------------------------------------------
    def _document(self) -> dict[str, Any]:
        ui = self.graph.ui if isinstance(self.graph.ui, dict) else {}
        stash: dict[str, Any] = {}
        rest = {k: v for k, v in ui.items() if k not in ("groups", "notes", "reroutes", "primitives", "comfy")}
        groups = ui.get("groups", [])
        if not _groups_ok(groups) or ("groups" in ui and not groups):
            rest["groups"], groups = groups, []
        for key, good in (("notes", self.notes), ("reroutes", self.reroutes), ("primitives", self.primitives)):
            if key in ui and (not isinstance(ui[key], list) or len(good) != len(ui[key]) or not good):
                rest[key] = ui[key]
        comfy = ui.get("comfy", {})
        if "comfy" in ui and not _doc_comfy_ok(comfy):
            rest["comfy"], comfy = comfy, {}
        extra = copy.deepcopy(comfy.get("extra", {}))
        view = ui.get("view")
        if "ds" not in extra and isinstance(view, dict) and _is_number(view.get("zoom")) and view["zoom"] > 0 \
                and _pair_ok(view.get("offset")):
            # ComfyUI's canvas offset puts a scene point at the screen's top left; ours is the centre
            zoom = view["zoom"]
            extra["ds"] = {"scale": zoom, "offset": [960 / zoom - view["offset"][0], 540 / zoom - view["offset"][1]]}
            if "comfy" not in ui:
                stash["drop"] = ["comfy"]
        if rest:
            stash["ui"] = rest
        if stash:
            extra[STASH] = stash
        nodes = list(self.out.values())  # graph nodes, then notes, reroutes, primitives, each in our order
        return {"last_node_id": max((n["id"] for n in nodes), default=0), "last_link_id": len(self.links),
                "nodes": nodes, "links": self.links, "groups": copy.deepcopy(groups),
                "config": copy.deepcopy(comfy.get("config", {})), "extra": extra, "version": 0.4}


def _execution_order(graph: Graph) -> dict[str, int]:
    g = nx.DiGraph()
    g.add_nodes_from(graph.nodes)
    g.add_edges_from((src, n.id) for n in graph.nodes.values() for src, _s in n.links.values() if src in graph.nodes)
    try:
        order = list(nx.lexicographical_topological_sort(g, key=id_order))
    except (nx.NetworkXUnfeasible, TypeError):
        order = sorted(graph.nodes, key=id_order)
    return {node_id: i for i, node_id in enumerate(order)}


def _records(items: Any, good) -> list[dict]:
    if not isinstance(items, list):
        return []
    out = [r for r in items if isinstance(r, dict) and isinstance(r.get("id"), str) and good(r)]
    ids = [r["id"] for r in out]
    return out if len(set(ids)) == len(ids) == len(items) else []


def _output_of(record: dict) -> dict:
    output = record.get("output")
    return output if isinstance(output, dict) else {"name": "", "type": "*"}


def _pair_ok(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 2 and all(_is_number(v) for v in value)


def _same(a: Any, b: Any) -> bool:
    return type(a) is type(b) and a == b


def _comfy_ok(comfy: Any, *, unknown: bool) -> bool:
    """Would reading the written fields give this `ui["comfy"]` back?"""
    if not isinstance(comfy, dict):
        return False
    allowed = {"properties", "flags", "mode"} | ({"inputs", "outputs", "widgets_values"} if unknown else set())
    if not set(comfy) <= allowed:
        return False
    props, flags, mode = comfy.get("properties"), comfy.get("flags"), comfy.get("mode")
    if "properties" in comfy and not (isinstance(props, dict) and props and SR_KEY not in props
                                      and STASH not in props):
        return False
    if "flags" in comfy and not (isinstance(flags, dict) and flags and "collapsed" not in flags):
        return False
    if "mode" in comfy and not (_is_int(mode) and mode not in (0, 2, 4)):
        return False
    if unknown:
        slots_ok = all(isinstance(comfy.get(k), list) and all(isinstance(s, dict) for s in comfy[k])
                       for k in ("inputs", "outputs"))
        names_ok = slots_ok and all(isinstance(s.get("name"), str) and "link" not in s for s in comfy["inputs"]) \
            and all("links" not in s for s in comfy["outputs"])
        return names_ok
    return bool(comfy)


def _doc_comfy_ok(comfy: Any) -> bool:
    return isinstance(comfy, dict) and bool(comfy) and set(comfy) <= {"extra", "config"} and all(
        isinstance(v, dict) and v for v in comfy.values()) and STASH not in comfy.get("extra", {})


def _groups_ok(groups: Any) -> bool:
    return isinstance(groups, list) and all(
        isinstance(g, dict) and isinstance(g.get("bounding"), list) and len(g["bounding"]) == 4
        and all(_is_number(v) for v in g["bounding"]) for g in groups)
