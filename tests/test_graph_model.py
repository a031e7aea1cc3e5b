import pytest

from nodegraph import Graph, GraphError
from tests.toy_nodes import make_registry


@pytest.fixture
def graph():
    return Graph(make_registry())


def test_new_node_gets_declared_defaults(graph):
    node_id = graph.add_node("Steps")
    assert graph.nodes[node_id].values == {"x": 0.0, "steps": 3, "delay": 0.0}


def test_unknown_type_is_refused_when_adding_by_hand(graph):
    with pytest.raises(GraphError, match="unknown node type 'Nope'"):
        graph.add_node("Nope")


def test_connect_checks_types_and_names(graph):
    latent = graph.add_node("MakeLatent")
    add = graph.add_node("Add")
    with pytest.raises(GraphError, match=r"MakeLatent.latent \(LATENT\) to Add.a \(FLOAT\)"):
        graph.connect(latent, 0, add, "a")
    with pytest.raises(GraphError, match="has no input 'zzz'"):
        graph.connect(graph.add_node("Number"), 0, add, "zzz")
    with pytest.raises(GraphError, match="no output slot 3"):
        graph.connect(latent, 3, add, "a")


def test_any_socket_accepts_every_type_and_int_widens_to_float(graph):
    show = graph.add_node("Show")
    graph.connect(graph.add_node("MakeLatent"), 0, show, "value")
    assert graph.can_connect(graph.add_node("Number"), 0, graph.add_node("Steps"), "x") is None


def test_connect_refuses_a_cycle(graph):
    a, b = graph.add_node("Add"), graph.add_node("Add")
    graph.connect(a, 0, b, "a")
    with pytest.raises(GraphError, match="cycle"):
        graph.connect(b, 0, a, "a")


def test_every_edit_is_notified(graph):
    seen = []
    graph.subscribe(lambda change: seen.append((change.kind, change.node_id, change.input)))
    a, b = graph.add_node("Number"), graph.add_node("Add")
    graph.connect(a, 0, b, "a")
    graph.set_value(b, "b", 2.0)
    graph.set_value(b, "b", 2.0)  # unchanged: no notification
    graph.set_ui(b, pos=[10, 20])
    graph.disconnect(b, "a")
    graph.connect(a, 0, b, "a")
    graph.remove_node(a)
    assert seen == [
        ("node_added", "1", None), ("node_added", "2", None), ("link_added", "2", "a"),
        ("value_changed", "2", "b"), ("ui_changed", "2", None), ("link_removed", "2", "a"),
        ("link_added", "2", "a"), ("link_removed", "2", "a"), ("node_removed", "1", None),
    ]


def test_copy_paste_keeps_internal_links_only(graph):
    a, b, c = graph.add_node("Number"), graph.add_node("Add"), graph.add_node("Add")
    graph.set_ui(a, pos=[0, 0])
    graph.connect(a, 0, b, "a")
    graph.connect(c, 0, b, "b")
    mapping = graph.paste_nodes(graph.copy_nodes([a, b]), offset=(30, 40))
    new_b = graph.nodes[mapping[b]]
    assert new_b.links == {"a": (mapping[a], 0)}
    assert graph.nodes[mapping[a]].ui["pos"] == [30, 40]


def test_networkx_view_has_one_edge_per_link(graph):
    a, b = graph.add_node("Number"), graph.add_node("Add")
    graph.connect(a, 0, b, "a")
    graph.connect(a, 0, b, "b")
    g = graph.to_networkx()
    assert g.number_of_edges(a, b) == 2
    assert {d["input"] for _, _, d in g.edges(data=True)} == {"a", "b"}
