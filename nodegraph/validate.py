"""Validation: an ordered list of named checks, each returning every problem it finds.

A problem names the node, its type, the input and what to do about it, so it reads well as one
line in a terminal and as a message on a node in the editor.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import networkx as nx

from .comfy_names import is_builtin
from .files import Folders, unsafe_name
from .graph import Graph, id_order
from .modes import runnable
from .registry import Registry
from .types import compatible


@dataclass(frozen=True)
class Problem:
    check: str
    node_id: str | None
    node_type: str | None
    message: str
    fix: str = ""
    input: str | None = None
    # In a node that feeds no output node: a run does not need it, so it does not stop one (as in ComfyUI).
    warning: bool = False

    def __str__(self) -> str:
        where = f"node {self.node_id} ({self.node_type}): " if self.node_id is not None else ""
        return f"{where}{self.message}" + (f" — {self.fix}" if self.fix else "")

    def to_json(self) -> dict[str, Any]:
        return {"check": self.check, "node_id": self.node_id, "node_type": self.node_type,
                "input": self.input, "message": self.message, "fix": self.fix, "text": str(self),
                "warning": self.warning}


class _Context:
    def __init__(self, graph: Graph, registry: Registry, env: Any):
        self.graph, self.registry, self.env = graph, registry, env

    def known(self):
        """(node, class) for every node whose type is registered."""
        for node in self.graph.nodes.values():
            cls = self.registry.get(node.type)
            if cls is not None:
                yield node, cls


def _problem(check: str, node, message: str, fix: str = "", input: str | None = None) -> Problem:
    return Problem(check, node.id, node.type, message, fix, input)


def _suggest(name: str, options: list[str], cutoff: float = 0.6) -> str:
    # Compare without file extensions: "v1-5.safetensors" is not close to "tiny.safetensors".
    stems = {_stem(o): o for o in options}
    close = difflib.get_close_matches(_stem(name), list(stems), n=3, cutoff=cutoff)
    return f"did you mean {', '.join(stems[c] for c in close)}?" if close else ""


def _stem(name: str) -> str:
    head, dot, tail = name.rpartition(".")
    return head.lower() if dot and head and tail.isalnum() and not tail.isdigit() else name.lower()


def check_unknown_types(cx: _Context) -> list[Problem]:
    """Every unknown type in one problem, telling ComfyUI's built-in nodes that sdgraph lacks from
    nodes of custom node packs (a typo of one of ours gets a "did you mean")."""
    by_type: dict[str, list] = {}
    for node in cx.graph.nodes.values():
        if node.type not in cx.registry:
            by_type.setdefault(node.type, []).append(node)
    if not by_type:
        return []
    builtin = [t for t in by_type if is_builtin(t)]
    custom = [t for t in by_type if t not in builtin]
    hints = {t: _suggest(t, cx.registry.names(), cutoff=0.8) for t in custom}
    nodes = [n for group in by_type.values() for n in group]
    if len(nodes) == 1:
        [node] = nodes
        fix = (BUILTIN_FIX if node.type in builtin else hints[node.type] or CUSTOM_FIX)
        return [_problem("unknown_type", node, f"unknown node type {node.type!r}", fix)]

    def listed(names: list[str]) -> str:
        parts = []
        for t in names:
            ids = [n.id for n in by_type[t]]
            where = f"node{'s' if len(ids) > 1 else ''} {', '.join(ids)}"
            parts.append(f"{t} ({where}{': ' + hints[t] if hints.get(t) else ''})")
        return ", ".join(parts)

    said = []
    if builtin:
        said.append(f"{listed(builtin)} {'are' if len(builtin) > 1 else 'is'} built into ComfyUI but not in sdgraph yet")
    if custom:
        said.append(f"{listed(custom)} come{'' if len(custom) > 1 else 's'} from custom node packs")
    return [Problem("unknown_type", None, None, f"unknown node types: {'; '.join(said)}",
                    "remove or replace these nodes, or load a node package that has them (--node-package)")]


BUILTIN_FIX = "built into ComfyUI; not in sdgraph yet: remove or replace the node"
CUSTOM_FIX = ("a custom node pack's node, not one of ComfyUI's own: load an sdgraph node package that has it "
              "(--node-package), or remove the node")


def check_unknown_inputs(cx: _Context) -> list[Problem]:
    out = []
    for node, cls in cx.known():
        valid = [i.name for i in cls.inputs]
        for name in list(node.values) + [n for n in node.links if n not in node.values]:
            if cls.input(name) is None:
                hint = _suggest(name, valid) or f"valid inputs: {', '.join(valid) or 'none'}"
                out.append(_problem("unknown_input", node, f'has no input "{name}"', hint, name))
    return out


def check_link_sources(cx: _Context) -> list[Problem]:
    out = []
    for node in cx.graph.nodes.values():
        for name, (src, _slot) in node.links.items():
            if src not in cx.graph.nodes:
                out.append(_problem("broken_link", node, f'input "{name}" is linked to missing node {src}',
                                    "reconnect the input or remove the link", name))
    return out


def check_link_slots(cx: _Context) -> list[Problem]:
    out = []
    for node, _cls in cx.known():
        for name, (src, slot) in node.links.items():
            src_cls = cx.registry.get(cx.graph.nodes[src].type) if src in cx.graph.nodes else None
            if src_cls is not None and not 0 <= slot < len(src_cls.outputs):
                out.append(_problem("broken_link", node,
                                    f'input "{name}" is linked to output {slot} of node {src} '
                                    f"({src_cls.type_name}), which has {len(src_cls.outputs)} output(s)",
                                    "reconnect the input to an existing output", name))
    return out


def check_missing_inputs(cx: _Context) -> list[Problem]:
    out = []
    for node, cls in cx.known():
        for spec in cls.inputs:
            if spec.optional or spec.name in node.links:
                continue
            if spec.is_widget and (spec.name in node.values or spec.has_default):
                continue
            if spec.is_widget:
                fix = f"give it a value ({spec.type.name})"
            else:
                fix = f"connect a {spec.type.name} output to it"
            out.append(_problem("missing_input", node, f'required input "{spec.name}" is not set', fix, spec.name))
    return out


def check_link_types(cx: _Context) -> list[Problem]:
    out = []
    for node, cls in cx.known():
        for name, (src, slot) in node.links.items():
            spec = cls.input(name)
            src_node = cx.graph.nodes.get(src)
            src_cls = cx.registry.get(src_node.type) if src_node else None
            if spec is None or src_cls is None or not 0 <= slot < len(src_cls.outputs):
                continue
            out_type = src_cls.outputs[slot].type.name
            if not compatible(out_type, spec.type.name):
                out.append(_problem("type_mismatch", node,
                                    f'input "{name}" expects {spec.type.name} but node {src} '
                                    f"({src_node.type}) output {slot} gives {out_type}",
                                    f"connect a {spec.type.name} output instead", name))
    return out


def _value_items(cx: _Context):
    """(node, spec, value) for each widget value that is used (not replaced by a link)."""
    for node, cls in cx.known():
        for spec in cls.inputs:
            if spec.is_widget and spec.name not in node.links and spec.name in node.values:
                yield node, spec, node.values[spec.name]


def check_value_types(cx: _Context) -> list[Problem]:
    out = []
    for node, spec, value in _value_items(cx):
        ok, _ = spec.coerce(value)
        if not ok:
            article = "an" if spec.type.name[0] in "AEIOU" else "a"
            out.append(_problem("value_type", node, f'input "{spec.name}" = {value!r} is not {article} '
                                f"{spec.type.name}", f"enter {article} {spec.type.name.lower()} value",
                                spec.name))
    return out


def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def check_value_ranges(cx: _Context) -> list[Problem]:
    out = []
    for node, spec, value in _value_items(cx):
        if spec.type.name not in ("INT", "FLOAT"):
            continue
        ok, value = spec.coerce(value)
        if not ok:
            continue
        if spec.min is not None and value < spec.min:
            out.append(_problem("value_range", node, f'input "{spec.name}" = {_fmt(value)} is below the '
                                f"minimum {_fmt(spec.min)}", f"set it to {_fmt(spec.min)} or more", spec.name))
        elif spec.max is not None and value > spec.max:
            out.append(_problem("value_range", node, f'input "{spec.name}" = {_fmt(value)} is above the '
                                f"maximum {_fmt(spec.max)}", f"set it to {_fmt(spec.max)} or less", spec.name))
    return out


def check_multiple_of(cx: _Context) -> list[Problem]:
    out = []
    for node, spec, value in _value_items(cx):
        ok, value = spec.coerce(value)
        if spec.multiple_of and ok and spec.type.name == "INT" and value % spec.multiple_of:
            step = spec.multiple_of
            lower, upper = value - value % step, value - value % step + step
            low = max(lower, int(spec.min) if spec.min is not None else lower, step)
            out.append(_problem("multiple_of", node, f'input "{spec.name}" = {value} is not a multiple of {step}',
                                f"use {low} or {upper}", spec.name))
    return out


def check_file_names(cx: _Context) -> list[Problem]:
    out = []
    for node, spec, value in _value_items(cx):
        if spec.files is not None and isinstance(value, str) and value and (why := unsafe_name(value)):
            where = _files(cx).describe(spec.files)
            out.append(_problem("file_name", node, f'input "{spec.name}" = {value!r} {why}',
                                f"choose a file inside {where} by its name there", spec.name))
    return out


def _files(cx: _Context) -> Folders:
    return getattr(cx.env, "files", None) or Folders()


def check_choices(cx: _Context) -> list[Problem]:
    out = []
    for node, spec, value in _value_items(cx):
        if (spec.choices is None and spec.files is None) or not isinstance(value, str):
            continue
        if spec.files is not None and value and unsafe_name(value):
            continue  # check_file_names said why
        options = spec.choice_list(cx.env)
        if value not in options:
            shown = ", ".join(options[:20]) + (f", … ({len(options)} in all)" if len(options) > 20 else "")
            if options:
                fix = f"choose one of: {shown}"
            elif spec.files is not None:
                fix = f"no {spec.files} files found in {_files(cx).describe(spec.files)}: put one there"
            else:
                fix = "there is nothing to choose from yet"
            hint = _suggest(value, options)
            shown_value = repr(value) if value else "(none)"
            out.append(_problem("choice", node, f'input "{spec.name}" = {shown_value} is not one of the choices',
                                f"{hint} {fix}".strip() if hint else fix, spec.name))
    return out


def check_cycles(cx: _Context) -> list[Problem]:
    out = []
    g = nx.DiGraph(cx.graph.to_networkx())
    for component in nx.strongly_connected_components(g):
        if len(component) > 1 or any(g.has_edge(n, n) for n in component):
            ids = sorted(component, key=id_order)
            cycle = nx.find_cycle(g.subgraph(component))
            path = " → ".join([edge[0] for edge in cycle] + [cycle[0][0]])
            out.append(Problem("cycle", None, None, f"nodes {', '.join(ids)} form a cycle ({path})",
                               "remove one of the links in the cycle"))
    return out


def check_output_nodes(cx: _Context) -> list[Problem]:
    if any(cls.output_node for _node, cls in cx.known()):
        return []
    outputs = sorted(c.type_name for c in cx.registry.classes() if c.output_node)
    # Plain sinks of top-level categories first: the everyday outputs (SaveImage…), not CheckpointSave
    # or a node that also passes values on (KSamplerTrace).
    outputs.sort(key=lambda name: (bool(cx.registry.get(name).outputs), cx.registry.get(name).category.count("/"), name))
    hint = f" (such as {', '.join(outputs[:4])})" if outputs else ""
    return [Problem("no_output", None, None, "the workflow has no output node, so running it would do nothing",
                    f"add an output node{hint}")]


CHECKS: list[tuple[str, Callable[[_Context], list[Problem]]]] = [
    ("unknown_type", check_unknown_types),
    ("unknown_input", check_unknown_inputs),
    ("broken_link", check_link_sources),
    ("broken_link", check_link_slots),
    ("missing_input", check_missing_inputs),
    ("type_mismatch", check_link_types),
    ("value_type", check_value_types),
    ("value_range", check_value_ranges),
    ("multiple_of", check_multiple_of),
    ("file_name", check_file_names),
    ("choice", check_choices),
    ("cycle", check_cycles),
    ("no_output", check_output_nodes),
]


def validate(graph: Graph, registry: Registry | None = None, env: Any = None) -> list[Problem]:
    """Run every check; return all problems found, in check order."""
    registry = registry or graph.registry
    if registry is None:
        raise ValueError("validate needs a registry")
    graph = runnable(graph, registry)  # muted and bypassed nodes do not run
    problems = run_checks(graph, registry, [check for _name, check in CHECKS], env)
    return mark_unneeded(graph, registry, problems)


def mark_unneeded(graph: Graph, registry: Registry, problems: list[Problem]) -> list[Problem]:
    """Problems in nodes that feed no output node become warnings: a run leaves those nodes out.
    A node of an unknown type may be an output node for all we can tell: it and what feeds it count
    as needed. With no output node at all, nothing is downgraded (the workflow does nothing yet)."""
    g = graph.to_networkx()
    needed: set[str] = set()
    outputs = 0
    for node in graph.nodes.values():
        cls = registry.get(node.type)
        if cls is None or cls.output_node:
            needed |= {node.id} | nx.ancestors(g, node.id)
            outputs += cls is not None
    if not outputs:
        return problems
    return [replace(p, warning=True) if p.node_id is not None and p.node_id not in needed else p
            for p in problems]


def errors(problems: list[Problem]) -> list[Problem]:
    """The problems that stop a run."""
    return [p for p in problems if not p.warning]


def run_checks(graph: Graph, registry: Registry | None, checks: list[Callable[[_Context], list[Problem]]],
               env: Any = None) -> list[Problem]:
    """Some of the checks (workflow readers run the structural ones as they load)."""
    cx = _Context(graph, registry or Registry(), env)
    return [problem for check in checks for problem in check(cx)]
