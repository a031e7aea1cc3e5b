"""Workflow files: our versioned by-name JSON, and ComfyUI's API ("prompt") format.

Native form (values and links are keyed by input name, never by position):

    {"format": "sdgraph.workflow", "version": 1,
     "nodes": {"4": {"type": "KSampler", "values": {"seed": 42}, "links": {"model": ["1", 0]},
                     "ui": {"pos": [860, 180]}}},
     "ui": {"view": {"zoom": 1.0, "offset": [0, 0]}}}

Every reader collects all problems it finds and raises one WorkflowError listing them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from .errors import WorkflowError
from .fileio import PNG_SIGNATURE, atomic_write, read_png_text
from .graph import Graph
from .registry import Registry
from .validate import check_link_sources, check_unknown_inputs, check_unknown_types, run_checks

FORMAT = "sdgraph.workflow"
VERSION = 1
PNG_NATIVE_KEY = "sdgraph"  # PNG text chunk with our native JSON
PNG_API_KEY = "prompt"  # PNG text chunk with ComfyUI's API JSON (what ComfyUI itself writes)


# -- native ------------------------------------------------------------------------------------
def to_native(graph: Graph) -> dict[str, Any]:
    nodes = {}
    for node in graph.nodes.values():
        entry: dict[str, Any] = {"type": node.type, "values": dict(node.values),
                                 "links": {k: [src, slot] for k, (src, slot) in node.links.items()}}
        if node.ui:
            entry["ui"] = node.ui
        nodes[node.id] = entry
    out: dict[str, Any] = {"format": FORMAT, "version": VERSION, "nodes": nodes}
    if graph.ui:
        out["ui"] = graph.ui
    return out


def from_native(data: Any, registry: Registry | None = None, *, strict: bool = True) -> Graph:
    problems: list[str] = []
    if not isinstance(data, dict):
        raise WorkflowError([f"expected a JSON object at the top level, found {_kind(data)}"])
    version = data.get("version")
    if not isinstance(version, int) or isinstance(version, bool):
        problems.append('"version" must be an integer')
    elif version > VERSION:
        problems.append(f"this workflow has format version {version}; this sdgraph reads up to version "
                        f"{VERSION} — update sdgraph")
    nodes = data.get("nodes")
    if not isinstance(nodes, dict):
        problems.append(f'"nodes" must be an object of node id → node, found {_kind(nodes)}')
        nodes = {}
    ui = data.get("ui", {})
    if not isinstance(ui, dict):
        problems.append('"ui" must be an object')
        ui = {}
    graph = Graph(registry)
    graph.ui = dict(ui)
    for node_id, entry in nodes.items():
        where = f"node {node_id}"
        if not isinstance(entry, dict):
            problems.append(f"{where}: expected an object, found {_kind(entry)}")
            continue
        type_name = entry.get("type")
        if not isinstance(type_name, str) or not type_name:
            problems.append(f'{where}: "type" must be a node type name')
            continue
        values = entry.get("values", {})
        if not isinstance(values, dict):
            problems.append(f'{where} ({type_name}): "values" must be an object of input name → value')
            values = {}
        links = entry.get("links", {})
        if not isinstance(links, dict):
            problems.append(f'{where} ({type_name}): "links" must be an object of input name → [node id, slot]')
            links = {}
        node_ui = entry.get("ui", {})
        if not isinstance(node_ui, dict):
            problems.append(f'{where} ({type_name}): "ui" must be an object')
            node_ui = {}
        graph.add_node(type_name, node_id, dict(values), dict(node_ui), fill_defaults=False)
        for name, link in links.items():
            parsed = _parse_link(link)
            if parsed is None:
                problems.append(f'{where} ({type_name}): link for input "{name}" must be [node id, output slot], '
                                f"found {json.dumps(link)[:60]}")
                continue
            graph.nodes[node_id].links[name] = parsed
    return _finish(graph, registry, problems, strict)


def _parse_link(link: Any) -> tuple[str, int] | None:
    if (isinstance(link, list) and len(link) == 2 and isinstance(link[0], str | int)
            and not isinstance(link[0], bool) and isinstance(link[1], int) and not isinstance(link[1], bool)
            and link[1] >= 0):
        return str(link[0]), link[1]
    return None


def _finish(graph: Graph, registry: Registry | None, problems: list[str], strict: bool) -> Graph:
    """The checks every reader ends with (validation's own, so each rule lives once); raise once
    with everything found. Not strict: unknown types and inputs are kept for validation to report."""
    checks = [check_link_sources]
    if strict and registry is not None:
        checks = [check_unknown_types, check_unknown_inputs, check_link_sources]
    problems.extend(str(p) for p in run_checks(graph, registry, checks))
    if problems:
        raise WorkflowError(problems)
    return graph


# -- ComfyUI API format ------------------------------------------------------------------------
def workflow_chunks(graph: Graph | None) -> dict[str, str]:
    """The PNG text chunks that carry a workflow: our native JSON and ComfyUI's API JSON."""
    if graph is None:
        return {}
    return {PNG_NATIVE_KEY: json.dumps(to_native(graph)), PNG_API_KEY: json.dumps(to_comfy_api(graph))}


def to_comfy_api(graph: Graph) -> dict[str, Any]:
    out = {}
    for node in graph.nodes.values():
        inputs: dict[str, Any] = {}
        cls = graph.registry.get(node.type) if graph.registry else None
        if cls is not None:  # keep the declared input order, as ComfyUI writes it
            for spec in cls.inputs:
                if spec.name in node.links:
                    src, slot = node.links[spec.name]
                    inputs[spec.name] = [src, slot]
                elif spec.name in node.values:
                    inputs[spec.name] = node.values[spec.name]
        for name, value in node.values.items():
            if name not in inputs and name not in node.links:
                inputs[name] = value
        for name, (src, slot) in node.links.items():
            inputs.setdefault(name, [src, slot])
        entry: dict[str, Any] = {"inputs": inputs, "class_type": node.type}
        title = node.ui.get("title")
        entry["_meta"] = {"title": title if isinstance(title, str) else node.type}
        out[node.id] = entry
    return out


def from_comfy_api(data: Any, registry: Registry | None = None, *, strict: bool = True) -> Graph:
    if isinstance(data, dict) and isinstance(data.get("prompt"), dict) and "class_type" not in data:
        data = data["prompt"]  # the body ComfyUI's /prompt endpoint takes
    if not isinstance(data, dict):
        raise WorkflowError([f"expected a JSON object at the top level, found {_kind(data)}"])
    problems: list[str] = []
    graph = Graph(registry)
    pending: list[tuple[str, str, Any]] = []
    for node_id, entry in data.items():
        if not isinstance(entry, dict) or not isinstance(entry.get("class_type"), str):
            problems.append(f'node {node_id}: expected an object with "class_type" and "inputs"')
            continue
        inputs = entry.get("inputs", {})
        if not isinstance(inputs, dict):
            problems.append(f'node {node_id} ({entry["class_type"]}): "inputs" must be an object')
            inputs = {}
        ui: dict[str, Any] = {}
        meta = entry.get("_meta")
        if isinstance(meta, dict) and isinstance(meta.get("title"), str):
            ui["title"] = meta["title"]
        graph.add_node(entry["class_type"], node_id, {}, ui, fill_defaults=False)
        for name, value in inputs.items():
            pending.append((node_id, name, value))
    for node_id, name, value in pending:
        link = _parse_link(value)
        node = graph.nodes[node_id]
        if link is not None and link[0] in data:
            node.links[name] = link
        else:
            node.values[name] = graph.coerced(node.type, name, value)
    return _finish(graph, registry, problems, strict)


# -- files -------------------------------------------------------------------------------------
def detect_format(data: Any) -> str:
    """"native", "comfy_api", "comfy_ui" or "unknown"."""
    if isinstance(data, dict):
        if data.get("format") == FORMAT:
            return "native"
        if isinstance(data.get("nodes"), list) and "links" in data:
            return "comfy_ui"
        body = data.get("prompt") if isinstance(data.get("prompt"), dict) else data
        if body and all(isinstance(v, dict) and "class_type" in v for v in body.values()):
            return "comfy_api"
    return "unknown"


def from_data(data: Any, registry: Registry | None = None, *, strict: bool = True) -> Graph:
    kind = detect_format(data)
    if kind == "native":
        return from_native(data, registry, strict=strict)
    if kind == "comfy_api":
        return from_comfy_api(data, registry, strict=strict)
    if kind == "comfy_ui":
        raise WorkflowError(["this is a ComfyUI editor (UI-format) workflow, which sdgraph cannot read yet — "
                             "in ComfyUI use Workflow → Export (API) and open that file"])
    raise WorkflowError(['not a workflow: expected sdgraph\'s format ({"format": "sdgraph.workflow", …}) '
                         'or ComfyUI\'s API format ({"1": {"class_type": …, "inputs": {…}}, …})'])


def read_workflow_data(path: str | os.PathLike) -> Any:
    """The JSON inside a workflow file, or inside a PNG written by sdgraph or ComfyUI."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise WorkflowError(["file not found"], str(path)) from None
    except OSError as e:
        raise WorkflowError([f"cannot read the file: {e.strerror or e}"], str(path)) from None
    if raw.startswith(PNG_SIGNATURE):
        chunks = read_png_text(raw)
        text = chunks.get(PNG_NATIVE_KEY) or chunks.get(PNG_API_KEY)
        if text is None:
            raise WorkflowError(["this PNG holds no workflow (no 'sdgraph' or 'prompt' text chunk)"], str(path))
    else:
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise WorkflowError(["not a text file: expected workflow JSON or a PNG with a workflow"],
                                str(path)) from None
    try:
        return json.loads(text)
    except (json.JSONDecodeError, RecursionError) as e:
        detail = f"line {e.lineno} column {e.colno}: {e.msg}" if isinstance(e, json.JSONDecodeError) else "too deep"
        raise WorkflowError([f"not valid JSON ({detail})"], str(path)) from None


def load_workflow(path: str | os.PathLike, registry: Registry | None = None, *, strict: bool = True) -> Graph:
    data = read_workflow_data(path)
    try:
        return from_data(data, registry, strict=strict)
    except WorkflowError as e:
        raise WorkflowError(e.problems, str(path)) from None
    except RecursionError:
        raise WorkflowError(["the workflow is nested too deeply"], str(path)) from None


def dumps_native(graph: Graph) -> str:
    return json.dumps(to_native(graph), indent=2, ensure_ascii=False) + "\n"


def save_workflow(graph: Graph, path: str | os.PathLike, *, format: str = "native") -> Path:
    """Write atomically, in our format or ComfyUI's API format."""
    data = to_native(graph) if format == "native" else to_comfy_api(graph)
    return atomic_write(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def _kind(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", int: "a number", float: "a number",
            bool: "true/false", type(None): "null"}.get(type(value), type(value).__name__)
