"""Run a graph: plan from the output nodes, skip what the cache answers, run the rest in order.

A node's cache key (its signature) is built from its type, version, widget values, an optional
fingerprint, and the signatures of the nodes that feed it — never from node ids or tensor data —
so a copied sub-graph hits the cache and changing the seed re-runs only what depends on it.
"""

from __future__ import annotations

import gc
import hashlib
import json
import logging
import threading
import time
import traceback
import uuid
from dataclasses import dataclass, field
from typing import Any

import networkx as nx

from . import events as ev
from .cache import Cache, LRUCache
from .context import CancelToken, Environment, NodeContext
from .errors import Interrupted, NodeInputError, UserError
from .files import RunFiles
from .graph import Graph
from .memory import is_out_of_memory, release_accelerator_memory
from .modes import runnable
from .node import ALWAYS_CHANGED, NodeOutput
from .registry import Registry
from .validate import Problem, errors, validate
from .workflow import workflow_chunks

log = logging.getLogger("sdgraph.executor")


@dataclass
class RunResult:
    status: str  # "ok", "error", "interrupted", "invalid"
    ran: list[str] = field(default_factory=list)
    cached: list[str] = field(default_factory=list)
    reasons: dict[str, str] = field(default_factory=dict)  # node id → why it ran or "cached"
    outputs: dict[str, tuple] = field(default_factory=dict)  # node id → output values
    ui: dict[str, dict] = field(default_factory=dict)  # node id → what output nodes show
    seconds: float = 0.0
    error: ev.NodeError | None = None
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status == "ok"


@dataclass
class _Plan:
    order: list[str]  # every needed node, upstream first
    signatures: dict[str, str]
    components: dict[str, dict[str, str]]
    to_run: list[str]
    cached: list[str]
    files: RunFiles  # each declared file looked up once, for the fingerprint and for the node


class Executor:
    def __init__(self, registry: Registry, cache: Cache | None = None, env: Environment | None = None):
        self.registry = registry
        self.cache = cache if cache is not None else LRUCache()
        self.env = env if env is not None else Environment()
        self.bus = ev.EventBus()
        self._last_components: dict[str, dict[str, str]] = {}
        self._lock = threading.Lock()
        self._run_counter = 0

    def add_listener(self, listener: ev.Listener):
        return self.bus.add(listener)

    # -- planning -----------------------------------------------------------------------------
    def _targets(self, graph: Graph, outputs: list[str] | None) -> list[str]:
        if outputs is not None:
            return [str(o) for o in outputs]
        return [n.id for n in graph.nodes.values()
                if (cls := self.registry.get(n.type)) is not None and cls.output_node]

    def plan(self, graph: Graph, outputs: list[str] | None = None) -> _Plan:
        graph = runnable(graph, self.registry)
        targets = [t for t in self._targets(graph, outputs) if t in graph.nodes]  # a muted one is not run
        g = graph.to_networkx()
        needed = set(targets)
        for t in targets:
            needed |= nx.ancestors(g, t)
        order = list(nx.topological_sort(g.subgraph(needed)))
        run_salt = uuid.uuid4().hex
        files = RunFiles(self.env.files)
        signatures: dict[str, str] = {}
        components: dict[str, dict[str, str]] = {}
        for node_id in order:
            comp = self._components(graph, node_id, signatures, run_salt, files)
            components[node_id] = comp
            blob = json.dumps(comp, sort_keys=True, separators=(",", ":"))
            signatures[node_id] = hashlib.blake2b(blob.encode(), digest_size=16).hexdigest()
        # Walk upstream from the targets, stopping wherever the cache already holds the answer.
        to_run, cached, seen = set(), set(), set()
        stack = list(targets)
        while stack:
            node_id = stack.pop()
            if node_id in seen:
                continue
            seen.add(node_id)
            if signatures[node_id] in self.cache:
                cached.add(node_id)
                continue
            to_run.add(node_id)
            stack.extend(src for src, _slot in graph.nodes[node_id].links.values())
        return _Plan(order, signatures, components, [n for n in order if n in to_run],
                     [n for n in order if n in cached], files)

    def _components(self, graph: Graph, node_id: str, signatures: dict[str, str], salt: str,
                    files: RunFiles) -> dict[str, str]:
        node = graph.nodes[node_id]
        cls = self.registry.get(node.type)
        fingerprint = cls.fingerprint(node.values) if cls else None
        if fingerprint is ALWAYS_CHANGED:
            fingerprint = salt
        if cls is not None:  # declared files: which file, and its size and age, are part of the key
            for spec in cls.inputs:
                value = node.values.get(spec.name)
                if spec.files is not None and spec.name not in node.links and isinstance(value, str):
                    fingerprint = [fingerprint, spec.name, files.fingerprint(spec.files, value)]
        comp = {"": json.dumps([node.type, cls.version if cls else 0, fingerprint], default=repr)}
        for name, (src, slot) in node.links.items():
            comp[name] = f"{signatures.get(src, src)}#{slot}"
        for name, value in node.values.items():
            if name not in node.links:
                comp[name] = json.dumps(value, sort_keys=True, default=repr)
        return comp

    # -- running ------------------------------------------------------------------------------
    def run(self, graph: Graph, *, outputs: list[str] | None = None, cancel: CancelToken | None = None,
            check: bool = True) -> RunResult:
        with self._lock:
            return self._run(graph, outputs, cancel or CancelToken(), check)

    def _run(self, graph: Graph, outputs: list[str] | None, cancel: CancelToken, check: bool) -> RunResult:
        start = time.perf_counter()
        meta_graph, graph = graph, runnable(graph, self.registry)  # muted and bypassed nodes do not run
        if check:
            problems = errors(validate(graph, self.registry, self.env))
            if problems:
                for p in problems:
                    self.bus.emit(ev.NodeError(p.node_id, p.node_type, str(p), "", p.input))
                seconds = time.perf_counter() - start
                self.bus.emit(ev.GraphFinished("invalid", 0, 0, seconds))
                return RunResult("invalid", problems=problems, seconds=seconds)
        plan = self.plan(graph, outputs)
        self._run_counter += 1
        self.bus.emit(ev.GraphStarted(self._run_counter, plan.to_run, plan.cached))
        result = RunResult("ok", cached=list(plan.cached))
        values: dict[str, tuple] = {}

        for node_id in plan.cached:
            entry = self.cache.get(plan.signatures[node_id])
            values[node_id], ui = entry
            result.reasons[node_id] = "cached"
            if ui:
                result.ui[node_id] = ui
            self._last_components[node_id] = plan.components[node_id]
            self.bus.emit(ev.NodeCached(node_id, graph.nodes[node_id].type, ui))

        current = None
        try:
            for node_id in plan.to_run:
                current = node_id
                cancel.check()
                node = graph.nodes[node_id]
                reason = self._reason(node_id, plan.components[node_id])
                result.reasons[node_id] = reason
                self.bus.emit(ev.NodeStarted(node_id, node.type, reason))
                t0 = time.perf_counter()
                out, ui = self._run_node(graph, node_id, values, cancel, plan.files, meta_graph)
                seconds = time.perf_counter() - t0
                values[node_id] = out
                self.cache.put(plan.signatures[node_id], (out, ui))
                self._last_components[node_id] = plan.components[node_id]
                result.ran.append(node_id)
                if ui:
                    result.ui[node_id] = ui
                self.bus.emit(ev.NodeFinished(node_id, node.type, seconds, ui))
            current = None
        except Interrupted:
            result.status = "interrupted"
            self.bus.emit(ev.RunInterrupted(current))
        except Exception as exc:  # noqa: BLE001 - every node failure becomes an error result
            result.status = "error"
            result.error = self._error_event(graph, current, exc)
            self.bus.emit(result.error)
        result.outputs = values
        result.seconds = time.perf_counter() - start
        self.bus.emit(ev.GraphFinished(result.status, len(result.ran), len(result.cached), result.seconds))
        return result

    def _reason(self, node_id: str, comp: dict[str, str]) -> str:
        last = self._last_components.get(node_id)
        if last is None:
            return "new"
        if last.get("") != comp.get(""):
            return "changed: node type, version or source file"
        changed = sorted(k for k in set(last) | set(comp) if k and last.get(k) != comp.get(k))
        return f"changed: {', '.join(changed)}" if changed else "not in cache"

    def _run_node(self, graph: Graph, node_id: str, values: dict[str, tuple], cancel: CancelToken,
                  files: RunFiles, meta_graph: Graph | None = None):
        node = graph.nodes[node_id]
        cls = self.registry.get(node.type)
        kwargs: dict[str, Any] = {}
        file_inputs: dict[tuple[str, str], str] = {}
        for spec in cls.inputs:
            if spec.name in node.links:
                src, slot = node.links[spec.name]
                kwargs[spec.name] = values[src][slot]
            elif spec.name in node.values:  # coerced when it entered the graph: the value the key hashed
                kwargs[spec.name] = node.values[spec.name]
            elif spec.has_default:
                kwargs[spec.name] = spec.default
            if spec.files is not None and isinstance(kwargs.get(spec.name), str):
                file_inputs[(spec.files, kwargs[spec.name])] = spec.name
        ctx = NodeContext(node_id, node.type, self.env, files, self.bus, cancel,
                          lambda: workflow_chunks(meta_graph if meta_graph is not None else graph), file_inputs)
        returned = cls().run(ctx, **kwargs)
        ui: dict[str, Any] = {}
        if isinstance(returned, NodeOutput):
            returned, ui = tuple(returned.values), dict(returned.ui)
        if not isinstance(returned, tuple) or len(returned) != len(cls.outputs):
            got = len(returned) if isinstance(returned, tuple) else type(returned).__name__
            raise TypeError(f"run() returned {got} value(s) but the node declares {len(cls.outputs)} output(s)")
        return returned, ui

    def _error_event(self, graph: Graph, node_id: str | None, exc: Exception) -> ev.NodeError:
        node_type = graph.nodes[node_id].type if node_id in graph.nodes else None
        tb = traceback.format_exc()
        log.debug("node %s (%s) failed:\n%s", node_id, node_type, tb)
        input_name = exc.input_name if isinstance(exc, NodeInputError) else None
        if is_out_of_memory(exc):
            # The traceback keeps the failed node's frames, and the tensors in them, alive.
            traceback.clear_frames(exc.__traceback__)
            self.cache.clear()
            gc.collect()
            release_accelerator_memory()
            message = ("ran out of memory; cached models were released. Try a smaller size or batch, "
                       "--dtype fp16, or --device cpu")
        elif isinstance(exc, NodeInputError):
            message = f'input "{exc.input_name}": {exc}'
        elif isinstance(exc, UserError):
            message = str(exc)
        else:
            message = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        where = f"node {node_id} ({node_type}): " if node_id is not None else ""
        return ev.NodeError(node_id, node_type, where + message, tb, input_name)
