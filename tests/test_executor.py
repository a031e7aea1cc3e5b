import threading

import pytest

from nodegraph import CancelToken, Executor, Graph, LRUCache
from tests import toy_nodes
from tests.toy_nodes import make_registry


@pytest.fixture
def registry():
    return make_registry()


@pytest.fixture(autouse=True)
def clear_calls():
    toy_nodes.CALLS.clear()


def chain(registry):
    """1 Number ─┐
                 ├─ 3 Add ── 4 Mul ── 5 Show
       2 Number ─┘   6 Number ──┘"""
    g = Graph(registry)
    for i, t in [("1", "Number"), ("2", "Number"), ("3", "Add"), ("4", "Mul"), ("5", "Show"), ("6", "Number")]:
        g.add_node(t, i)
    g.set_value("1", "value", 2.0)
    g.set_value("2", "value", 3.0)
    g.set_value("6", "value", 10.0)
    g.connect("1", 0, "3", "a")
    g.connect("2", 0, "3", "b")
    g.connect("3", 0, "4", "a")
    g.connect("6", 0, "4", "b")
    g.connect("4", 0, "5", "value")
    return g


def test_runs_in_dependency_order_and_computes(registry):
    g = chain(registry)
    result = Executor(registry).run(g)
    assert result.ok
    assert result.outputs["4"] == (50.0,)
    assert result.ui["5"] == {"text": ["50.0"]}
    order = toy_nodes.CALLS
    assert order.index("3") > max(order.index("1"), order.index("2"))
    assert order.index("4") > max(order.index("3"), order.index("6"))
    assert order[-1] == "5"


def test_rerunning_an_unchanged_graph_runs_nothing(registry):
    g, ex = chain(registry), Executor(registry)
    ex.run(g)
    toy_nodes.CALLS.clear()
    result = ex.run(g)
    assert result.ran == [] and toy_nodes.CALLS == []
    assert set(result.cached) == {"5"}  # the walk stops at the output node
    assert result.ui["5"] == {"text": ["50.0"]}


def test_changing_a_leaf_value_reruns_only_its_descendants(registry):
    g, ex = chain(registry), Executor(registry)
    ex.run(g)
    g.set_value("2", "value", 4.0)
    result = ex.run(g)
    assert result.ran == ["2", "3", "4", "5"]
    assert result.reasons["2"] == "changed: value"
    assert result.reasons["3"] == "changed: b"
    assert result.outputs["4"] == (60.0,)
    g.set_value("6", "value", 1.0)
    assert ex.run(g).ran == ["6", "4", "5"]


def test_unused_value_changes_and_layout_changes_do_not_rerun(registry):
    g, ex = chain(registry), Executor(registry)
    ex.run(g)
    g.set_ui("3", pos=[100, 100], title="renamed")
    assert ex.run(g).ran == []


def test_relinking_reruns_the_target_and_below(registry):
    g, ex = chain(registry), Executor(registry)
    ex.run(g)
    g.connect("2", 0, "3", "a")  # 3 + 3 instead of 2 + 3
    result = ex.run(g)
    assert result.ran == ["3", "4", "5"]
    assert result.reasons["3"] == "changed: a"


def test_a_copied_subgraph_under_new_ids_hits_the_cache(registry):
    g, ex = chain(registry), Executor(registry)
    ex.run(g)
    mapping = g.paste_nodes(g.copy_nodes(["1", "2", "3", "4", "6"]))
    add = g.add_node("Add", values={"b": 1.0})
    show = g.add_node("Show")
    g.connect(mapping["4"], 0, add, "a")
    g.connect(add, 0, show, "value")
    result = ex.run(g, outputs=[show])
    assert result.ran == [add, show]
    assert result.cached == [mapping["4"]]
    assert result.ui[show] == {"text": ["51.0"]}


def test_an_identical_output_node_under_a_new_id_is_answered_from_cache(registry):
    g, ex = chain(registry), Executor(registry)
    ex.run(g)
    g.remove_node("5")
    g.add_node("Show", "9")
    g.connect("4", 0, "9", "value")
    result = ex.run(g)
    assert result.ran == [] and result.cached == ["9"]
    assert result.ui["9"] == {"text": ["50.0"]}


def test_always_changed_nodes_rerun_with_their_descendants(registry):
    g, ex = Graph(registry), Executor(registry)
    g.add_node("Noise", "1")
    g.add_node("Show", "2")
    g.connect("1", 0, "2", "value")
    first = ex.run(g).outputs["1"][0]
    second = ex.run(g)
    assert second.ran == ["1", "2"] and second.outputs["1"][0] != first


def test_lru_evicts_the_oldest_and_the_evicted_node_reruns(registry):
    cache = LRUCache(max_entries=3)
    g, ex = chain(registry), Executor(registry, cache)
    first = ex.run(g).ran
    assert len(cache) == 3 and len(first) == 6
    evicted = set(first[:3])  # the three leaves ran first
    assert evicted == {"1", "2", "6"}
    g.set_value("1", "value", 5.0)
    result = ex.run(g)
    # 1 changed, so 3, 4 and 5 follow; 2 and 6 did not change but were evicted, and are needed.
    assert set(result.ran) == {"1", "2", "3", "4", "5", "6"}
    assert result.reasons["2"] == result.reasons["6"] == "not in cache"
    assert result.reasons["1"] == "changed: value"
    assert result.outputs["4"] == (80.0,)


def test_lru_is_bounded_by_bytes_and_keeps_the_newest():
    cache = LRUCache(max_entries=100, max_bytes=250)
    cache.put("a", b"x" * 100)
    cache.put("b", b"x" * 100)
    cache.get("a")  # a is now the most recent
    cache.put("c", b"x" * 100)
    assert cache.keys() == ["a", "c"] and cache.bytes == 200
    cache.put("huge", b"x" * 1000)
    assert cache.keys() == ["huge"]


def test_events_report_each_stage_with_seconds(registry):
    g, ex = chain(registry), Executor(registry)
    g.add_node("Steps", "7", {"steps": 4})
    g.connect("7", 0, "6", "value")
    events = []
    ex.add_listener(events.append)
    ex.run(g)
    kinds = [e.kind for e in events]
    assert kinds[0] == "graph_started" and kinds[-1] == "graph_finished"
    assert [e.step for e in events if e.kind == "progress"] == [1, 2, 3, 4]
    finished = [e for e in events if e.kind == "node_finished"]
    assert len(finished) == 7 and all(e.seconds >= 0 for e in finished)
    events.clear()
    ex.run(g)
    assert [e.kind for e in events] == ["graph_started", "node_cached", "graph_finished"]


def test_node_failure_names_node_and_keeps_completed_work(registry):
    g, ex = Graph(registry), Executor(registry)
    g.add_node("Number", "1")
    g.add_node("Fail", "2")
    g.add_node("Show", "3")
    g.connect("1", 0, "2", "x")
    g.connect("2", 0, "3", "value")
    result = ex.run(g)
    assert result.status == "error"
    assert result.error.message == "node 2 (Fail): ZeroDivisionError: division by zero"
    assert "Traceback" in result.error.traceback
    g.set_value("2", "how", "input")
    result = ex.run(g)
    assert result.error.message == 'node 2 (Fail): input "x": must not be used here; pick another number'
    assert result.error.input == "x"
    assert result.ran == []  # node 1 was cached from the first run


def test_cancellation_mid_graph_stops_at_the_next_step(registry):
    g, ex = Graph(registry), Executor(registry)
    g.add_node("Steps", "1", {"steps": 200, "delay": 0.005})
    g.add_node("Steps", "2")
    g.add_node("Show", "3")
    g.connect("1", 0, "2", "x")
    g.connect("2", 0, "3", "value")
    token = CancelToken()
    seen = []

    def listener(event):
        seen.append(event.kind)
        if event.kind == "progress" and event.step == 5:
            threading.Thread(target=token.cancel).start()

    ex.add_listener(listener)
    result = ex.run(g, cancel=token)
    assert result.status == "interrupted"
    assert "interrupted" in seen and "2" not in toy_nodes.CALLS
    assert seen.count("progress") < 50


def test_invalid_graph_is_not_run(registry):
    g, ex = Graph(registry), Executor(registry)
    g.add_node("Steps", "1", {"steps": 0})
    g.add_node("Show", "2")
    g.connect("1", 0, "2", "value")
    result = ex.run(g)
    assert result.status == "invalid" and toy_nodes.CALLS == []
    assert [str(p) for p in result.problems] == [
        'node 1 (Steps): input "steps" = 0 is below the minimum 1 — set it to 1 or more']


def test_out_of_memory_becomes_a_clear_error_and_releases_the_cache(registry):
    from nodegraph import Node, Output
    from nodegraph import types as T

    class Hungry(Node):
        outputs = [Output("x", T.FLOAT)]

        def run(self, ctx):
            raise RuntimeError("CUDA out of memory. Tried to allocate 20.00 GiB")

    registry.register(Hungry)
    g, ex = chain(registry), Executor(registry)
    ex.run(g)
    assert len(ex.cache) > 0
    g.add_node("Hungry", "7")
    g.connect("7", 0, "6", "value")
    result = ex.run(g)
    assert result.error.message == ("node 7 (Hungry): ran out of memory; cached models were released. "
                                    "Try a smaller size or batch, --dtype fp16, or --device cpu")
    assert len(ex.cache) == 0


def test_the_default_cache_bound_is_a_share_of_the_machines_memory():
    import os

    from nodegraph.cache import default_max_bytes

    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    assert LRUCache().max_bytes == default_max_bytes() == min(16 * 2**30, int(ram * 0.4))
    assert default_max_bytes(share=0.5, ceiling=10) == 10
