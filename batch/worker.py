"""A batch worker: one executor, kept for the whole batch so its loaded models stay warm.

A plain class: the local backend calls it directly, Ray actors wrap it (batch/ray_backend.py). It
runs a job — the workflow with a row's values applied — and returns the files the output nodes
wrote as bytes; the driver names them and writes them. Output nodes write into a private folder
that is emptied after every job.
"""

from __future__ import annotations

import copy
import os
import shutil
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

from nodegraph import CancelToken, Executor, Graph, LRUCache, NodeInstance, Registry
from nodegraph.graph import id_order
from nodegraph.workflow import from_data


def apply_values(graph: Graph, values: dict[str, Any]) -> Graph:
    """A copy of `graph` with "node.input" → value set (and coerced) as the editor sets them."""
    out = Graph(graph.registry)
    out.ui = graph.ui
    for node in graph.nodes.values():
        out.nodes[node.id] = NodeInstance(node.id, node.type, dict(node.values), dict(node.links), node.ui)
    for target, value in values.items():
        node_id, _, name = target.rpartition(".")
        out.set_value(node_id, name, value)
    return out


class _JobCache(LRUCache):
    """Keeps everything but the answers of nodes that wrote files: a job's files are its product, so
    an output node must write them again even when an identical job ran before. Fewer entries than
    the editor's cache: rows rarely repeat, so past rows' images would only hold memory, while the
    models and prompts that rows share are used by every row and so stay the most recent."""

    def __init__(self) -> None:
        super().__init__(max_entries=64)

    def put(self, key: str, value: Any) -> None:
        if not (isinstance(value, tuple) and len(value) == 2 and (value[1] or {}).get("files")):
            super().put(key, value)


class Worker:
    def __init__(self, env, workflow: dict, *, packages: list[str] | None = None,
                 registry: Registry | None = None, name: str | None = None, threads: int | None = None):
        if threads:
            import torch  # the thread count changes float sums: equal counts give equal images

            torch.set_num_threads(threads)
        if registry is None:
            from nodegraph import REGISTRY

            failed = REGISTRY.discover_all(packages or ["nodes"])
            if failed:
                raise RuntimeError("; ".join(failed))
            registry = REGISTRY
        self.registry = registry
        self.name = name or f"{socket.gethostname()}:{os.getpid()}"
        self.folder = Path(tempfile.mkdtemp(prefix="sdgraph-batch-"))
        self.env = copy.deepcopy(env)
        self.env.paths.output = self.folder
        self.graph = from_data(workflow, registry, strict=False)
        self.executor = Executor(registry, cache=_JobCache(), env=self.env)
        self.token = CancelToken()

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "pid": os.getpid(), "host": socket.gethostname()}

    def cancel(self) -> None:
        """Stop the running job at its next step; jobs sent after this come back interrupted."""
        self.token.cancel()

    def run(self, job: dict[str, Any]) -> dict[str, Any]:
        """{status: ok|error|interrupted, files: [[suffix, bytes]], seconds, error, worker}."""
        started = time.perf_counter()
        out: dict[str, Any] = {"status": "interrupted", "files": [], "error": None, "worker": self.name}
        if self.token.cancelled:
            return {**out, "seconds": 0.0}
        try:
            result = self.executor.run(apply_values(self.graph, job["values"]), cancel=self.token)
            out["status"] = {"ok": "ok", "interrupted": "interrupted"}.get(result.status, "error")
            if result.error is not None:
                out["error"] = result.error.message
            elif result.problems:
                out["error"] = "; ".join(str(p) for p in result.problems)
            if result.ok:
                for node_id in sorted(result.ui, key=id_order):
                    for path in result.ui[node_id].get("files", []):
                        out["files"].append([Path(path).suffix, Path(path).read_bytes()])
        except Exception as e:  # noqa: BLE001 - reading back a file: the row fails, the batch goes on
            out.update(status="error", error=f"{type(e).__name__}: {e}")
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder.mkdir(parents=True, exist_ok=True)
        out["seconds"] = time.perf_counter() - started
        return out

    def close(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)
