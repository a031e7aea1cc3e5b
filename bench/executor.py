"""Executor overhead on a 500-node graph of trivial nodes.

Three runs: cold (everything executes), fully cached (nothing executes), and after changing one
leaf (only its path to the output re-runs). The reference is the same node functions called
directly in topological order, with no engine, measured in the same process.

Targets: ≤ 100 µs of engine overhead per executed node; ≤ 50 ms for the fully cached re-run.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from nodegraph import Executor, Float, Graph, Link, Node, NodeOutput, Output, Registry  # noqa: E402
from nodegraph import types as T  # noqa: E402


class Leaf(Node):
    inputs = [Float("value", 1.0)]
    outputs = [Output("value", T.FLOAT)]

    def run(self, ctx, value):
        return (value,)


class Sum(Node):
    inputs = [Float("a", 0.0), Float("b", 0.0)]
    outputs = [Output("sum", T.FLOAT)]

    def run(self, ctx, a, b):
        return (a + b,)


class Sink(Node):
    output_node = True
    inputs = [Link("value", T.FLOAT)]

    def run(self, ctx, value):
        return NodeOutput((), {"value": value})


def build(n_leaves: int = 250) -> tuple[Graph, Registry]:
    registry = Registry()
    for cls in (Leaf, Sum, Sink):
        registry.register(cls)
    g = Graph(registry)
    layer = [g.add_node("Leaf", values={"value": float(i)}) for i in range(n_leaves)]
    while len(layer) > 1:  # a balanced tree of sums down to one root
        nxt = []
        for i in range(0, len(layer) - 1, 2):
            s = g.add_node("Sum")
            g.connect(layer[i], 0, s, "a", check=False)
            g.connect(layer[i + 1], 0, s, "b", check=False)
            nxt.append(s)
        if len(layer) % 2:
            nxt.append(layer[-1])
        layer = nxt
    sink = g.add_node("Sink")
    g.connect(layer[0], 0, sink, "value", check=False)
    return g, registry


def direct_calls(g: Graph, registry: Registry) -> float:
    """Reference: the same run() calls in topological order, no planning, cache or events."""
    import networkx as nx

    order = list(nx.topological_sort(g.to_networkx()))
    t0 = time.perf_counter()
    values: dict[str, tuple] = {}
    for node_id in order:
        node = g.nodes[node_id]
        cls = registry.get(node.type)
        kwargs = dict(node.values)
        for name, (src, slot) in node.links.items():
            kwargs[name] = values[src][slot]
        out = cls().run(None, **kwargs)
        values[node_id] = out.values if isinstance(out, NodeOutput) else out
    return time.perf_counter() - t0


def best_of(fn, repeat: int = 5) -> float:
    return min(fn() for _ in range(repeat))


def main() -> int:
    g, registry = build()
    n = len(g)

    def cold() -> float:
        ex = Executor(registry)
        t0 = time.perf_counter()
        result = ex.run(g, check=False)
        assert len(result.ran) == n
        return time.perf_counter() - t0

    ex = Executor(registry)
    ex.run(g, check=False)

    def cached() -> float:
        t0 = time.perf_counter()
        result = ex.run(g, check=False)
        assert result.ran == []
        return time.perf_counter() - t0

    leaf = next(iter(g.nodes))
    flip = [1.0]
    reran = []

    def one_leaf() -> float:
        flip[0] += 1.0
        g.nodes[leaf].values["value"] = flip[0]
        t0 = time.perf_counter()
        result = ex.run(g, check=False)
        reran.append(len(result.ran))
        return time.perf_counter() - t0

    t_direct = best_of(lambda: direct_calls(g, registry))
    t_cold = best_of(cold)
    t_cached = best_of(cached)
    t_leaf = best_of(one_leaf)
    n_leaf = statistics.mode(reran)
    overhead_per_node = (t_cold - t_direct) / n * 1e6

    rows = [
        ("direct calls (reference)", n, t_direct, t_direct / n * 1e6, "1.00"),
        ("cold run", n, t_cold, t_cold / n * 1e6, f"{t_cold / t_direct:.1f}"),
        ("fully cached re-run", 0, t_cached, t_cached / n * 1e6, f"{t_cached / t_direct:.1f}"),
        ("re-run after one leaf", n_leaf, t_leaf, t_leaf / n * 1e6, f"{t_leaf / t_direct:.1f}"),
    ]
    print(f"executor benchmark: {n} nodes (best of 5)")
    print(f"{'case':<26} {'executed':>8} {'ms':>9} {'µs/graph node':>14} {'× ref':>7}")
    for name, executed, seconds, per, ratio in rows:
        print(f"{name:<26} {executed:>8} {seconds * 1e3:>9.2f} {per:>14.1f} {ratio:>7}")
    ok_overhead = overhead_per_node <= 100
    ok_cached = t_cached <= 0.050
    print(f"engine overhead per executed node: {overhead_per_node:.1f} µs (target ≤ 100) "
          f"{'OK' if ok_overhead else 'MISSED'}")
    print(f"fully cached re-run: {t_cached * 1e3:.1f} ms (target ≤ 50) {'OK' if ok_cached else 'MISSED'}")
    return 0 if ok_overhead and ok_cached else 1


if __name__ == "__main__":
    sys.exit(main())
