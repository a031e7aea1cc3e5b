"""ComfyUI's UI format: the file its Save button writes and the `workflow` chunk of its PNGs.

    {"nodes": [{"id": 3, "type": "KSampler", "pos": [863, 186], "size": [315, 262], "mode": 0,
                "inputs": [{"name": "model", "type": "MODEL", "link": 1}, …],
                "outputs": [{"name": "LATENT", "type": "LATENT", "links": [7]}],
                "widgets_values": [156680208700286, "randomize", 20, 8, "euler", "normal", 1]}, …],
     "links": [[1, 4, 0, 3, 0, "MODEL"], …], "groups": [{"title": "…", "bounding": [x, y, w, h]}],
     "extra": {…}, "version": 0.4}

Values are positional, in declaration order (nodegraph.node.Input), with one more value after each
`control_after_generate` input and after an `upload` input. Links are found by the link id on the
target's input slot, never by slot number (ComfyUI drops unconnected widget slots on save, which
renumbers the rest). Schema 1.0 writes links as objects and may group nodes into subgraphs
(`definitions.subgraphs`); a subgraph is expanded into its nodes, with ids "outer:inner" as ComfyUI
gives them when it runs one.

ComfyUI's own editor nodes do not become graph nodes: Note/MarkdownNote text goes to
`graph.ui["notes"]`, a Reroute passes its link through (`graph.ui["reroutes"]`, and the consumer's
`ui["via"]` remembers it), a PrimitiveNode becomes the literal value on each target
(`graph.ui["primitives"]`). Muted and bypassed nodes are kept with `ui["mode"]` (nodegraph.modes).
A node of an unknown type keeps its sockets and positional values in `ui["comfy"]`, so re-saving
loses nothing. What sdgraph keeps that ComfyUI has no field for rides in `properties.sdgraph` (per
node) and `extra.sdgraph`, which ComfyUI keeps when it saves.
"""

from __future__ import annotations

import json
import math
from typing import Any

from .comfy_api import fix_value, ignored_inputs_warning, kind_of, parse_link
from .comfy_names import RENAMES
from .errors import WorkflowError
from .graph import Graph, id_order
from .layout import auto_layout, needs_layout
from .modes import BYPASSED, MUTED
from .registry import Registry

CONTROL_VALUES = ("fixed", "increment", "decrement", "randomize")
NOTE_TYPES = ("Note", "MarkdownNote")
REROUTE, PRIMITIVE = "Reroute", "PrimitiveNode"
MODE_NUMBERS = {MUTED: 2, BYPASSED: 4}
SR_KEY = "Node name for S&R"  # ComfyUI's search-and-replace name; written again on save
STASH = "sdgraph"
MAX_SUBGRAPH_DEPTH = 8
_UI_KEYS = ("pos", "size", "title", "color", "bgcolor", "collapsed", "mode", "comfy")


# -- reading -----------------------------------------------------------------------------------
def is_comfy_ui(data: Any) -> bool:
    return isinstance(data, dict) and isinstance(data.get("nodes"), list) and (
        "links" in data or "version" in data or "last_node_id" in data or "state" in data)


def from_comfy_ui(data: Any, registry: Registry | None = None) -> tuple[Graph, list[str]]:
    """(graph, problems): the caller adds the structural checks and raises."""
    if not is_comfy_ui(data):
        raise WorkflowError(['not a ComfyUI workflow: expected {"nodes": [...], "links": [...]}'])
    return _Reader(data, registry).read()


class _Reader:
    def __init__(self, data: dict, registry: Registry | None):
        self.data, self.registry = data, registry
        self.graph = Graph(registry)
        self.problems: list[str] = []
        self.warnings = self.graph.warnings
        self.raw: dict[str, dict] = {}  # file node id → node object
        self.links: dict[str, tuple[str, int, str]] = {}  # link id → (origin id, origin slot, target id)
        self.ids: dict[str, str] = {}  # file node id → graph node id (or record id)
        self.subgraph_groups: list[dict] = []  # a frame around each expanded subgraph
        self.unfed: set[str] = set()  # links from a subgraph input nothing outside feeds
        self.taken: set[str] = set()

    def read(self) -> tuple[Graph, list[str]]:
        self._collect(self.data.get("nodes"), self.data.get("links"), "")
        subgraphs = _subgraph_definitions(self.data)
        if subgraphs:
            self._expand_subgraphs(subgraphs)
        notes, reroutes, primitives = [], [], []
        # a graph node's kept id must not take the id of a note, reroute or primitive
        self.taken = {k for k, raw in self.raw.items() if raw["type"] in (*NOTE_TYPES, REROUTE, PRIMITIVE)}
        for raw_id, raw in self.raw.items():
            kind = raw["type"]
            if kind in NOTE_TYPES:
                notes.append(self._note(raw_id, raw))
            elif kind == REROUTE:
                reroutes.append(raw_id)
            elif kind == PRIMITIVE:
                primitives.append(self._primitive(raw_id, raw))
            else:
                self._node(raw_id, raw)
        records = {r["id"]: r for r in primitives}
        for raw_id in reroutes:  # a reroute fed by another names it by its (maybe restored) id
            stash = _stash(self.raw[raw_id]).get("ui")
            restored = stash.get("id") if isinstance(stash, dict) else None
            self.ids[raw_id] = restored if isinstance(restored, str) else raw_id
        reroute_records = [self._reroute(raw_id) for raw_id in reroutes]
        for raw_id, raw in self.raw.items():
            if self.ids.get(raw_id) in self.graph.nodes:
                self._link_inputs(raw_id, raw, records)
        ui: dict[str, Any] = {}
        groups = self._groups()
        if groups:
            ui["groups"] = groups
        for key, items in (("notes", notes), ("reroutes", reroute_records), ("primitives", primitives)):
            if items:
                ui[key] = items
        comfy = {k: self.data[k] for k in ("extra", "config") if isinstance(self.data.get(k), dict) and self.data[k]}
        extra = dict(comfy.get("extra", {}))
        stash = extra.pop(STASH, None)
        if extra:
            comfy["extra"] = extra
        else:
            comfy.pop("extra", None)
        if comfy:
            ui["comfy"] = comfy
        if isinstance(stash, dict):
            _apply_stash_ui(ui, stash)
        self.graph.ui = ui
        if not any(_pair(raw.get("pos")) for raw in self.raw.values()) and needs_layout(self.graph):
            auto_layout(self.graph)
        return self.graph, self.problems

    # -- the file's nodes and links ------------------------------------------------------------
    def _collect(self, nodes: Any, links: Any, prefix: str) -> None:
        if not isinstance(nodes, list):
            self.problems.append(f'"nodes" must be a list, found {kind_of(nodes)}')
            return
        for raw in nodes:
            raw_id = raw.get("id") if isinstance(raw, dict) else None
            if not isinstance(raw_id, int | str) or isinstance(raw_id, bool) or not isinstance(raw.get("type"), str) \
                    or not raw["type"]:
                self.problems.append(f"a node must be an object with an \"id\" and a \"type\", found "
                                     f"{_short(raw)}")
                continue
            key = prefix + str(raw_id)
            if key in self.raw:
                self.problems.append(f"node id {key} is used by two nodes — give one of them a new id")
                continue
            self.raw[key] = raw
        for link in links if isinstance(links, list) else []:
            parsed = _parse_ui_link(link)
            if parsed is None:
                self.warnings.append(f"ignored a link that is not [id, from node, from slot, to node, to slot, "
                                     f"type]: {_short(link)}")
                continue
            link_id, origin, slot, target, _tslot = parsed
            self.links[prefix + link_id] = (prefix + origin, slot, prefix + target)

    def _expand_subgraphs(self, subgraphs: dict[str, dict], depth: int = 0) -> None:
        """Replace each subgraph instance by the nodes inside it, wired to the outside, as ComfyUI
        does when it runs one (ids "instance:inner")."""
        instances = [k for k, raw in self.raw.items() if raw["type"] in subgraphs]
        if not instances:
            return
        if depth >= MAX_SUBGRAPH_DEPTH:
            self.problems.append(f"subgraphs are nested more than {MAX_SUBGRAPH_DEPTH} deep (or contain "
                                 "themselves) — unpack some of them in ComfyUI")
            return
        for inst in instances:
            raw = self.raw.pop(inst)
            sg = subgraphs[raw["type"]]
            before = set(self.raw)
            prefix = inst + ":"
            inner_links = {}
            for link in _list(sg.get("links")):
                parsed = _parse_ui_link(link)
                if parsed is not None:
                    inner_links[parsed[0]] = parsed
            self._collect([n for n in _list(sg.get("nodes")) if isinstance(n, dict)], [], prefix)
            names = [s.get("name") if isinstance(s, dict) else None for s in _list(sg.get("inputs"))]
            feeds = {s["name"]: s.get("link") for s in _slots(raw, "inputs") if isinstance(s.get("name"), str)}
            for link_id, origin, slot, target, tslot in inner_links.values():
                key = prefix + link_id
                if origin == "-10":  # from the subgraph's input: whatever feeds the instance there
                    name = names[slot] if 0 <= slot < len(names) else None
                    outer = self.links.get(str(feeds.get(name)))
                    if outer is not None:
                        self.links[key] = (outer[0], outer[1], prefix + target)
                    else:  # not fed from outside: the inner node's own value stands
                        self.unfed.add(key)
                elif target == "-20":  # to the subgraph's output: its consumers outside take it
                    for outer_id, (o, s, t) in list(self.links.items()):
                        if o == inst and s == tslot:
                            self.links[outer_id] = (prefix + origin, slot, t)
                else:
                    self.links[key] = (prefix + origin, slot, prefix + target)
            for key in set(self.raw) - before:  # the inner nodes' slots name the new link ids
                self.raw[key] = _prefix_links(self.raw[key], prefix)
            title = sg.get("name") if isinstance(sg.get("name"), str) else raw["type"]
            self.warnings.append(f'node {inst} (subgraph "{title}"): expanded into its {len(set(self.raw) - before)} '
                                 f"nodes, ids {inst}:…")
            self._place_inner(raw, sorted(set(self.raw) - before, key=id_order), title)
        self._expand_subgraphs(subgraphs, depth + 1)

    def _place_inner(self, instance: dict, keys: list[str], title: str) -> None:
        """Put the expanded nodes where the instance was, framed by a group named after it."""
        at = _pair(instance.get("pos")) or [0, 0]
        spots = [(k, _pair(self.raw[k].get("pos"))) for k in keys]
        xs = [p[0] for _k, p in spots if p]
        ys = [p[1] for _k, p in spots if p]
        if not xs:
            return
        dx, dy = at[0] - min(xs), at[1] - min(ys)
        right = bottom = -math.inf
        for key, pos in spots:
            if pos:
                moved = dict(self.raw[key])
                moved["pos"] = [pos[0] + dx, pos[1] + dy]
                size = _pair(moved.get("size")) or [200, 100]
                right, bottom = max(right, moved["pos"][0] + size[0]), max(bottom, moved["pos"][1] + size[1])
                self.raw[key] = moved
        self.subgraph_groups.append({"title": title, "bounding": [at[0] - 20, at[1] - 60, right - at[0] + 40,
                                                                  bottom - at[1] + 80]})

    # -- graph nodes ---------------------------------------------------------------------------
    def _node(self, raw_id: str, raw: dict) -> None:
        type_name = raw["type"]
        if type_name in RENAMES:
            self.warnings.append(f"node {raw_id}: type {type_name!r} is now called {RENAMES[type_name]!r}")
            type_name = RENAMES[type_name]
        stash = _stash(raw)
        node_id = stash.get("id") if isinstance(stash.get("id"), str) and stash["id"] else raw_id
        while node_id in self.graph.nodes or node_id in self.ids.values() or node_id in self.taken:
            node_id += "'"
        ui = _read_ui(raw)
        cls = self.registry.get(type_name) if self.registry else None
        wv = raw.get("widgets_values")
        if cls is None:
            comfy = ui.setdefault("comfy", {})
            comfy["inputs"] = [{k: v for k, v in s.items() if k != "link"} for s in _slots(raw, "inputs")]
            comfy["outputs"] = [{k: v for k, v in s.items() if k != "links"} for s in _slots(raw, "outputs")]
            if wv is not None:
                comfy["widgets_values"] = wv
            if stash.get("plain") is True:
                ui.pop("comfy", None)
            if type_name.startswith("workflow/"):
                self.warnings.append(f"node {raw_id} ({type_name}): an old-style group node — in ComfyUI, "
                                     "right-click it and choose Convert to nodes, then save again")
        _apply_stash_ui(ui, stash)
        self.graph.add_node(type_name, node_id, {}, ui, fill_defaults=False)
        self.ids[raw_id] = node_id
        node = self.graph.nodes[node_id]
        if cls is None:
            if isinstance(stash.get("values"), dict):
                node.values.update(stash["values"])
            return
        values, control = self._widget_values(raw_id, type_name, cls, wv)
        for name, value in values.items():
            node.values[name] = self.graph.coerced(type_name, name, value)
        if control and "after_run" not in stash.get("ui", {}):
            node.ui["after_run"] = control
        for name in stash.get("unset", []) if isinstance(stash.get("unset"), list) else []:
            node.values.pop(name, None)
        if isinstance(stash.get("values"), dict):
            node.values.update(stash["values"])

    def _widget_values(self, raw_id: str, type_name: str, cls, wv: Any) -> tuple[dict, dict]:
        widgets = [s for s in cls.inputs if s.is_widget]
        values: dict[str, Any] = {}
        control: dict[str, str] = {}
        where = f"node {raw_id} ({type_name})"
        if isinstance(wv, dict):  # some front ends write values by name
            values = {s.name: wv[s.name] for s in widgets if s.name in wv}
        elif isinstance(wv, list):
            extras = sum(1 for s in widgets if s.control_after_generate) + sum(1 for s in widgets if s.upload)
            positional = len(wv) == len(widgets) + extras
            i = 0
            for n, spec in enumerate(widgets):
                if i >= len(wv):
                    break
                values[spec.name] = wv[i]
                i += 1
                after = widgets[n + 1] if n + 1 < len(widgets) else None
                if spec.control_after_generate and i < len(wv) and (positional or _is_control(wv[i], after)):
                    mode = _control_mode(wv[i])
                    if mode != "fixed":
                        control[spec.name] = mode
                    i += 1
                if spec.upload and i < len(wv) and (positional or after is None or wv[i] == spec.upload):
                    i += 1
            if i < len(wv):
                self.warnings.append(f"{where}: ignored {len(wv) - i} value(s) more than {type_name} has inputs for")
        elif wv is not None:
            self.warnings.append(f'{where}: "widgets_values" must be a list, found {kind_of(wv)}; used the defaults')
        missing = [s.name for s in widgets if s.name not in values and s.has_default]
        if missing:
            self.warnings.append(f"{where}: no value for {', '.join(missing)}; used the default")
        for spec in widgets:
            if spec.name not in values and spec.has_default:
                values[spec.name] = spec.default
            elif spec.name in values:
                values[spec.name], fixed = fix_value(spec, values[spec.name])
                if fixed:
                    self.warnings.append(f'{where}: input "{spec.name}": {fixed}')
        return values, control

    def _link_inputs(self, raw_id: str, raw: dict, primitives: dict[str, dict]) -> None:
        node = self.graph.nodes[self.ids[raw_id]]
        cls = self.registry.get(node.type) if self.registry else None
        via: dict[str, str] = {}
        ignored = []
        for slot in _slots(raw, "inputs"):
            link = slot.get("link")
            if link is None or isinstance(link, bool) or str(link) in self.unfed:
                continue
            widget = slot.get("widget")
            name = widget.get("name") if isinstance(widget, dict) and isinstance(widget.get("name"), str) \
                else slot.get("name")
            if not isinstance(name, str):
                continue
            if cls is not None and cls.input(name) is None:
                ignored.append(name)
                continue
            found = self._resolve(str(link), set())
            if found is None:
                self.warnings.append(f'node {node.id} ({node.type}): input "{name}" was linked to a node that is '
                                     "not in the file; left unconnected")
                continue
            kind, origin, out_slot, through = found
            if kind == "value":
                record = primitives.get(self.ids.get(origin, origin))
                if record is not None and "value" in record:
                    node.values[name] = self.graph.coerced(node.type, name, record["value"])
                    via[name] = record["id"]
                continue
            node.links[name] = (self.ids.get(origin, origin), out_slot)
            if through is not None:
                via[name] = self.ids.get(through, through)
        if ignored:
            self.warnings.append(ignored_inputs_warning(node.id, node.type, ignored))
        stash = _stash(raw)
        if via and "via" not in stash.get("ui", {}):
            node.ui["via"] = via
        kept = stash.get("links")
        for name, link in kept.items() if isinstance(kept, dict) else []:
            if parse_link(link) is not None:
                node.links[name] = parse_link(link)

    def _resolve(self, link_id: str, seen: set) -> tuple[str, str, int, str | None] | None:
        """Follow a link up through Reroutes: ("node", id, slot, nearest reroute or None) or
        ("value", primitive id, 0, None); None when it leads nowhere."""
        link = self.links.get(link_id)
        if link is None or link_id in seen:
            return None
        seen.add(link_id)
        origin, slot, _target = link
        raw = self.raw.get(origin)
        if raw is None:
            return None
        if raw["type"] == PRIMITIVE:
            return "value", origin, 0, None
        if raw["type"] in NOTE_TYPES:
            return None
        if raw["type"] == REROUTE:
            slots = _slots(raw, "inputs")
            up = slots[0].get("link") if slots else None
            found = self._resolve(str(up), seen) if up is not None else None
            if found is None or found[0] != "node":
                return None
            return found[0], found[1], found[2], origin
        return "node", origin, slot, None

    # -- ComfyUI's editor-only nodes -------------------------------------------------------------
    def _note(self, raw_id: str, raw: dict) -> dict:
        wv = raw.get("widgets_values")
        text = wv[0] if isinstance(wv, list) and wv and isinstance(wv[0], str) else ""
        record = {"id": raw_id, "type": raw["type"], "text": text, **_read_ui(raw)}
        _apply_stash_ui(record, _stash(raw))
        self.ids[raw_id] = record["id"]
        return record

    def _primitive(self, raw_id: str, raw: dict) -> dict:
        record: dict[str, Any] = {"id": raw_id}
        wv = raw.get("widgets_values")
        if isinstance(wv, list) and wv:
            record["value"] = wv[0]
            if len(wv) > 1:
                record["control"] = wv[1]
        outs = _slots(raw, "outputs")
        if outs:
            record["output"] = {k: v for k, v in outs[0].items() if k != "links"}
        record.update(_read_ui(raw))
        _apply_stash_ui(record, _stash(raw))
        self.ids[raw_id] = record["id"]
        return record

    def _reroute(self, raw_id: str) -> dict:
        raw = self.raw[raw_id]
        record: dict[str, Any] = {"id": raw_id}
        slots = _slots(raw, "inputs")
        link = self.links.get(str(slots[0].get("link"))) if slots else None
        if link is not None:
            origin = self.raw.get(link[0])
            if origin is not None and origin["type"] == REROUTE:
                record["source"] = {"reroute": self.ids.get(link[0], link[0])}
            elif origin is not None and link[0] in self.ids and self.ids[link[0]] in self.graph.nodes:
                record["source"] = {"node": self.ids[link[0]], "slot": link[1]}
        record.update(_read_ui(raw))
        _apply_stash_ui(record, _stash(raw))
        return record

    def _groups(self) -> list[dict]:
        out = []
        groups = self.data.get("groups")
        for group in groups if isinstance(groups, list) else []:
            box = group.get("bounding") if isinstance(group, dict) else None
            if isinstance(box, list) and len(box) == 4 and all(_is_number(v) for v in box):
                out.append(dict(group))
            else:
                self.warnings.append(f"ignored a group without a [x, y, width, height] box: {_short(group)}")
        return out + self.subgraph_groups


# -- helpers shared with the writer ------------------------------------------------------------
def _subgraph_definitions(data: dict) -> dict[str, dict]:
    defs = data.get("definitions")
    subgraphs = defs.get("subgraphs") if isinstance(defs, dict) else None
    return {sg["id"]: sg for sg in subgraphs if isinstance(sg, dict) and isinstance(sg.get("id"), str)} \
        if isinstance(subgraphs, list) else {}


def _parse_ui_link(link: Any) -> tuple[str, str, int, str, int] | None:
    """(link id, origin id, origin slot, target id, target slot) from schema 0.4's array or 1.0's object."""
    if isinstance(link, list) and len(link) >= 5:
        fields = link[:5]
    elif isinstance(link, dict):
        fields = [link.get(k) for k in ("id", "origin_id", "origin_slot", "target_id", "target_slot")]
    else:
        return None
    link_id, origin, slot, target, tslot = fields
    ids_ok = all(isinstance(v, int | str) and not isinstance(v, bool) for v in (link_id, origin, target))
    if not ids_ok or not _is_int(slot) or not _is_int(tslot):
        return None
    return str(link_id), str(origin), int(slot), str(target), int(tslot)


def _prefix_links(raw: dict, prefix: str) -> dict:
    raw = dict(raw)
    raw["inputs"] = [dict(s, link=prefix + str(s["link"])) if s.get("link") is not None else s
                     for s in _slots(raw, "inputs")]
    return raw


def _list(value: Any) -> list:
    return value if isinstance(value, list) else []


def _slots(raw: dict, key: str) -> list[dict]:
    slots = raw.get(key)
    return [s for s in slots if isinstance(s, dict)] if isinstance(slots, list) else []


def _stash(raw: dict) -> dict:
    props = raw.get("properties")
    stash = props.get(STASH) if isinstance(props, dict) else None
    return stash if isinstance(stash, dict) else {}


def _apply_stash_ui(ui: dict, stash: dict) -> None:
    """What the writer kept for us: editor data ComfyUI has no field for, and the fields it had to
    invent (a position, a size) to drop again."""
    if isinstance(stash.get("ui"), dict):
        ui.update(stash["ui"])
    for key in stash.get("drop") or [] if isinstance(stash.get("drop"), list) else []:
        if isinstance(key, str):
            ui.pop(key, None)


def _read_ui(raw: dict) -> dict[str, Any]:
    """A node's editor data: position, size, title, colours, collapsed, mode, and the ComfyUI
    properties and flags we have no use for but keep."""
    ui: dict[str, Any] = {}
    for key in ("pos", "size"):
        pair = _pair(raw.get(key))
        if pair is not None:
            ui[key] = pair
    for key in ("title", "color", "bgcolor"):
        if isinstance(raw.get(key), str):
            ui[key] = raw[key]
    flags = raw.get("flags") if isinstance(raw.get("flags"), dict) else {}
    if flags.get("collapsed") is True:
        ui["collapsed"] = True
    mode = raw.get("mode")
    for name, number in MODE_NUMBERS.items():
        if mode == number and not isinstance(mode, bool):
            ui["mode"] = name
    comfy: dict[str, Any] = {}
    if _is_int(mode) and mode not in (0, 2, 4):
        comfy["mode"] = mode
    rest = {k: v for k, v in flags.items() if k != "collapsed"}
    if rest:
        comfy["flags"] = rest
    props = raw.get("properties")
    props = {k: v for k, v in props.items() if k not in (SR_KEY, STASH)} if isinstance(props, dict) else {}
    if props:
        comfy["properties"] = props
    if comfy:
        ui["comfy"] = comfy
    return ui


def _pair(value: Any) -> list | None:
    """[x, y] from a list or from the {"0": x, "1": y} objects of 2023 files."""
    if isinstance(value, dict) and "0" in value and "1" in value:
        value = [value["0"], value["1"]]
    if isinstance(value, list) and len(value) == 2 and all(_is_number(v) for v in value):
        return list(value)
    return None


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_control(value: Any, after) -> bool:
    """Is this the control value after a seed? "fixed"… or, in 2023 files, true/false (a boolean
    that could be the next input's own value is not taken)."""
    if value in CONTROL_VALUES and isinstance(value, str):
        return True
    return isinstance(value, bool) and (after is None or after.type.name != "BOOLEAN")


def _control_mode(value: Any) -> str:
    if isinstance(value, str) and value in CONTROL_VALUES:
        return value
    return "randomize" if value is True else "fixed"


def _short(value: Any, limit: int = 60) -> str:
    try:
        text = json.dumps(value)
    except (TypeError, ValueError, RecursionError):
        text = repr(value)
    return text if len(text) <= limit else text[:limit] + "…"
