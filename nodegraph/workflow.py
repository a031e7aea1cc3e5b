"""Workflow files: our versioned by-name JSON, and where every format is told apart and read.

Native form (values and links are keyed by input name, never by position):

    {"format": "sdgraph.workflow", "version": 1,
     "nodes": {"4": {"type": "KSampler", "values": {"seed": 42}, "links": {"model": ["1", 0]},
                     "ui": {"pos": [860, 180]}}},
     "ui": {"view": {"zoom": 1.0, "offset": [0, 0]}}}

One reader and one writer per format: native here, ComfyUI's API format in comfy_api, its UI format
in comfy_ui / comfy_ui_writer, A1111 and Fooocus parameters in a1111 (read only); images carry any
of them (images). Every reader collects all problems it finds and raises one WorkflowError listing
them; what a reader changed or left out on the way is in `graph.warnings`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .a1111 import graph_from_parameters
from .comfy_api import from_comfy_api as _read_api
from .comfy_api import kind_of as _kind
from .comfy_api import parse_link as _parse_link
from .comfy_api import to_comfy_api
from .comfy_ui import from_comfy_ui as _read_ui
from .comfy_ui import is_comfy_ui
from .comfy_ui_writer import to_comfy_ui
from .errors import WorkflowError
from .fileio import atomic_write
from .graph import Graph
from .images import image_kind, read_image_text
from .layout import auto_layout, needs_layout
from .registry import Registry
from .validate import check_link_sources, check_unknown_inputs, check_unknown_types, run_checks

FORMAT = "sdgraph.workflow"
VERSION = 1
PNG_NATIVE_KEY = "sdgraph"  # PNG text chunk with our native JSON
PNG_API_KEY = "prompt"  # PNG text chunk with ComfyUI's API JSON (what ComfyUI itself writes)
PNG_UI_KEY = "workflow"  # PNG text chunk with ComfyUI's UI JSON
MAX_FILE = 512 * 2**20
FORMATS = ("native", "comfy_api", "comfy_ui")  # the ones we write


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


# -- ComfyUI's formats -------------------------------------------------------------------------
def workflow_chunks(graph: Graph | None) -> dict[str, str]:
    """The PNG text chunks that carry a workflow: our native JSON, and ComfyUI's API and UI JSON (so
    ComfyUI opens the image with its layout)."""
    if graph is None:
        return {}
    return {PNG_NATIVE_KEY: json.dumps(to_native(graph)), PNG_API_KEY: json.dumps(to_comfy_api(graph)),
            PNG_UI_KEY: json.dumps(to_comfy_ui(graph))}


def from_comfy_api(data: Any, registry: Registry | None = None, *, strict: bool = True) -> Graph:
    graph, problems = _read_api(data, registry)
    if needs_layout(graph):
        auto_layout(graph)
    return _finish(graph, registry, problems, strict)


def from_comfy_ui(data: Any, registry: Registry | None = None, *, strict: bool = True) -> Graph:
    graph, problems = _read_ui(data, registry)
    return _finish(graph, registry, problems, strict)


# -- files -------------------------------------------------------------------------------------
def detect_format(data: Any) -> str:
    """"native", "comfy_api", "comfy_ui" or "unknown"."""
    if isinstance(data, dict):
        if data.get("format") == FORMAT:
            return "native"
        if is_comfy_ui(data):
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
        return from_comfy_ui(data, registry, strict=strict)
    raise WorkflowError(['not a workflow: expected sdgraph\'s format ({"format": "sdgraph.workflow", …}), '
                         'ComfyUI\'s ({"nodes": [...], "links": [...]}) or its API format '
                         '({"1": {"class_type": …, "inputs": {…}}, …})'])


def read_workflow(path: str | os.PathLike, registry: Registry | None = None, *, strict: bool = True,
                  checkpoints: Callable[[], list[str]] | None = None) -> tuple[Graph, str]:
    """(graph, format) from a workflow file — sdgraph's JSON, ComfyUI's UI or API JSON — or from
    an image that carries one (PNG, WebP, JPEG: ComfyUI's, sdgraph's, A1111's or Fooocus's).
    format is "native", "comfy_ui", "comfy_api", "a1111" or "fooocus", with ":png", ":webp" or
    ":jpeg" added for an image. `checkpoints` lists the model folder, to match an A1111 model name."""
    path = Path(path)
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_FILE + 1)
    except FileNotFoundError:
        raise WorkflowError(["file not found"], str(path)) from None
    except OSError as e:
        raise WorkflowError([f"cannot read the file: {e.strerror or e}"], str(path)) from None
    if len(raw) > MAX_FILE:
        raise WorkflowError([f"the file is larger than {MAX_FILE // 2**20} MiB: not a workflow"], str(path))
    try:
        return read_bytes(raw, registry, strict, checkpoints)
    except WorkflowError as e:
        raise WorkflowError(e.problems, str(path)) from None
    except RecursionError:
        raise WorkflowError(["the workflow is nested too deeply"], str(path)) from None


def read_bytes(raw: bytes, registry: Registry | None = None, strict: bool = True,
               checkpoints: Callable[[], list[str]] | None = None) -> tuple[Graph, str]:
    """(graph, format) from a file's bytes; see read_workflow."""
    kind = image_kind(raw)
    if kind is None:
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise WorkflowError(["not a text file: expected workflow JSON, or a PNG, WebP or JPEG with a "
                                 "workflow"]) from None
        data = _json(text, "")
        return from_data(data, registry, strict=strict), detect_format(data)
    texts = read_image_text(raw)
    skipped: list[tuple[str, str]] = []
    for key in (PNG_NATIVE_KEY, PNG_UI_KEY, PNG_API_KEY):  # ComfyUI's UI workflow keeps the layout
        if key in texts:
            try:
                data = _json(texts[key], key)
                graph = from_data(data, registry, strict=strict)
            except WorkflowError as e:
                skipped.append((key, e.problems[0]))
                continue
            graph.warnings[:0] = [f"used the {_name(key)} and not the broken {k!r} text ({why})" for k, why in skipped]
            return graph, f"{detect_format(data)}:{kind}"
    for key in ("parameters", "stealth_parameters", "comment"):
        text = texts.get(key, "")
        if key == "comment" and "Steps:" not in text:
            continue
        if text.strip():
            graph = graph_from_parameters(text, registry, checkpoints)
            source = "fooocus" if text.lstrip().startswith("{") else "a1111"
            return graph, f"{source}:{kind}"
    if skipped:
        raise WorkflowError([f"the image's {k!r} text: {why}" for k, why in skipped])
    found = ", ".join(sorted(texts)) or "none"
    raise WorkflowError([f"this {kind.upper()} holds no workflow (text found: {found}); sdgraph reads ComfyUI's "
                         "'workflow' or 'prompt', its own 'sdgraph', and A1111's or Fooocus's 'parameters'"])


def _name(key: str) -> str:
    return {PNG_NATIVE_KEY: "sdgraph workflow", PNG_UI_KEY: "ComfyUI workflow", PNG_API_KEY: "ComfyUI prompt"}[key]


def _json(text: str, key: str = "") -> Any:
    try:
        return json.loads(text)
    except (json.JSONDecodeError, RecursionError) as e:
        detail = f"line {e.lineno} column {e.colno}: {e.msg}" if isinstance(e, json.JSONDecodeError) else "too deep"
        raise WorkflowError([f"not valid JSON ({detail})"]) from None


def load_workflow(path: str | os.PathLike, registry: Registry | None = None, *, strict: bool = True,
                  checkpoints: Callable[[], list[str]] | None = None) -> Graph:
    return read_workflow(path, registry, strict=strict, checkpoints=checkpoints)[0]


def dumps(graph: Graph, format: str = "native") -> str:
    """The file text of a graph in one of FORMATS."""
    writers = {"native": to_native, "comfy_api": to_comfy_api, "comfy_ui": to_comfy_ui}
    if format not in writers:
        raise ValueError(f"unknown workflow format {format!r}: one of {', '.join(FORMATS)}")
    return json.dumps(writers[format](graph), indent=2, ensure_ascii=False) + "\n"


def dumps_native(graph: Graph) -> str:
    return dumps(graph, "native")


def save_workflow(graph: Graph, path: str | os.PathLike, *, format: str = "native") -> Path:
    """Write atomically, in our format or one of ComfyUI's ("api" is short for "comfy_api")."""
    return atomic_write(path, dumps(graph, "comfy_api" if format == "api" else format))
