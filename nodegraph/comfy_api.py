"""ComfyUI's API ("prompt") format: `{"4": {"class_type": "KSampler", "inputs": {"seed": 42,
"model": ["1", 0]}}}`, read as ComfyUI's server reads it and written as its front end writes it.

Reading: inputs a known node does not declare are left out with a warning (ComfyUI ignores them
silently: its front end adds "choose file to upload", "upload", "Random seed after every gen"); old
sampler names with the `sample_` prefix are fixed. Nodes of unknown types keep every input.
Writing: muted nodes are left out and bypassed ones wired through (nodegraph.modes), as ComfyUI's
front end does when it queues a prompt.
"""

from __future__ import annotations

from typing import Any

from .comfy_names import RENAMES
from .errors import WorkflowError
from .graph import Graph
from .modes import runnable
from .node import Input
from .registry import Registry


def to_comfy_api(graph: Graph) -> dict[str, Any]:
    out = {}
    for node in runnable(graph).nodes.values():
        inputs: dict[str, Any] = {}
        cls = graph.registry.get(node.type) if graph.registry else None
        if cls is not None:  # keep the declared input order, as ComfyUI writes it
            for spec in cls.inputs:
                if spec.name in node.links:
                    src, slot = node.links[spec.name]
                    inputs[spec.name] = [src, slot]
                elif spec.name in node.values:
                    inputs[spec.name] = _wrap(node.values[spec.name])
        for name, value in node.values.items():
            if name not in inputs and name not in node.links:
                inputs[name] = _wrap(value)
        for name, (src, slot) in node.links.items():
            inputs.setdefault(name, [src, slot])
        entry: dict[str, Any] = {"inputs": inputs, "class_type": node.type}
        title = node.ui.get("title")
        entry["_meta"] = {"title": title if isinstance(title, str) else (cls.display_name if cls else node.type)}
        out[node.id] = entry
    return out


def _wrap(value: Any) -> Any:
    # A list would read as a link: ComfyUI boxes list values and its server unboxes them.
    return {"__value__": value} if isinstance(value, list) else value


def from_comfy_api(data: Any, registry: Registry | None = None) -> tuple[Graph, list[str]]:
    """(graph, problems): the caller adds the structural checks and raises."""
    if isinstance(data, dict) and isinstance(data.get("prompt"), dict) and "class_type" not in data:
        data = data["prompt"]  # the body ComfyUI's /prompt endpoint takes
    if not isinstance(data, dict):
        raise WorkflowError([f"expected a JSON object at the top level, found {kind_of(data)}"])
    problems: list[str] = []
    graph = Graph(registry)
    pending: list[tuple[str, str, Any]] = []
    renamed: set[str] = set()
    for node_id, entry in data.items():
        if not isinstance(entry, dict) or not isinstance(entry.get("class_type"), str) or not entry["class_type"]:
            problems.append(f'node {node_id}: expected an object with "class_type" and "inputs"')
            continue
        inputs = entry.get("inputs", {})
        if not isinstance(inputs, dict):
            problems.append(f'node {node_id} ({entry["class_type"]}): "inputs" must be an object')
            inputs = {}
        type_name = entry["class_type"]
        if type_name in RENAMES:  # as ComfyUI's front end renames them when it loads a workflow
            graph.warnings.append(f"node {node_id}: type {type_name!r} is now called {RENAMES[type_name]!r}")
            type_name = RENAMES[type_name]
            renamed.add(str(node_id))
        ui: dict[str, Any] = {}
        meta = entry.get("_meta")
        cls = registry.get(type_name) if registry else None
        default_title = cls.display_name if cls else type_name
        if isinstance(meta, dict) and isinstance(meta.get("title"), str) and meta["title"] != default_title:
            ui["title"] = meta["title"]
        graph.add_node(type_name, node_id, {}, ui, fill_defaults=False)
        for name, value in inputs.items():
            pending.append((node_id, name, value))
    ignored: dict[str, list[str]] = {}
    for node_id, name, value in _renamed_inputs(graph, registry, pending, renamed):
        node = graph.nodes[node_id]
        cls = registry.get(node.type) if registry else None
        if cls is not None and cls.input(name) is None:
            ignored.setdefault(node_id, []).append(name)
            continue
        link = parse_link(value)
        if link is not None:
            node.links[name] = link
            continue
        if isinstance(value, dict) and set(value) == {"__value__"}:
            value = value["__value__"]
        spec = cls.input(name) if cls else None
        value, fixed = fix_value(spec, value)
        if fixed:
            graph.warnings.append(f'node {node_id} ({node.type}): input "{name}": {fixed}')
        node.values[name] = graph.coerced(node.type, name, value)
    for node_id, names in ignored.items():
        node = graph.nodes[node_id]
        graph.warnings.append(ignored_inputs_warning(node_id, node.type, names))
    return graph, problems


def _renamed_inputs(graph: Graph, registry, pending: list, renamed: set[str]) -> list:
    """A renamed node's old value inputs go, in order, to the new type's value inputs (as ComfyUI's
    positional widget values do when it renames a node in a UI file)."""
    if not renamed or registry is None:
        return pending
    out = []
    for node_id in dict.fromkeys(n for n, _name, _value in pending):
        items = [(n, name, value) for n, name, value in pending if n == node_id]
        cls = registry.get(graph.nodes[node_id].type)
        if node_id in renamed and cls is not None:
            free = [s.name for s in cls.inputs if s.is_widget and s.name not in {name for _n, name, _v in items}]
            old = [i for i, (_n, name, value) in enumerate(items) if cls.input(name) is None and parse_link(value) is None]
            for i, new_name in zip(old, free, strict=False):
                graph.warnings.append(f'node {node_id} ({cls.type_name}): input "{items[i][1]}" of the old type '
                                      f'is taken as "{new_name}"')
                items[i] = (node_id, new_name, items[i][2])
        out += items
    return out


def ignored_inputs_warning(node_id: str, type_name: str, names: list[str]) -> str:
    shown = ", ".join(f'"{n}"' for n in names)
    return (f"node {node_id} ({type_name}): ignored input{'s' if len(names) > 1 else ''} {shown}: "
            f"{type_name} does not declare {'them' if len(names) > 1 else 'it'} (ComfyUI ignores {'them' if len(names) > 1 else 'it'} too)")


def fix_value(spec: Input | None, value: Any) -> tuple[Any, str]:
    """The load-time fix ComfyUI's front end makes: early sampler names carried a `sample_` prefix
    ("sample_dpmpp_2m"). Returns (value, what was changed or "")."""
    if (spec is not None and spec.choices is not None and not callable(spec.choices) and isinstance(value, str)
            and value.startswith("sample_") and value not in spec.choices and value[7:] in spec.choices):
        return value[7:], f"{value!r} is now called {value[7:]!r}"
    return value, ""


def parse_link(link: Any) -> tuple[str, int] | None:
    if (isinstance(link, list) and len(link) == 2 and isinstance(link[0], str | int)
            and not isinstance(link[0], bool) and isinstance(link[1], int) and not isinstance(link[1], bool)
            and link[1] >= 0):
        return str(link[0]), link[1]
    return None


def kind_of(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", int: "a number", float: "a number",
            bool: "true/false", type(None): "null"}.get(type(value), type(value).__name__)
