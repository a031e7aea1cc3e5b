"""Round trips between ComfyUI's UI format and ours, both ways, and the UI reader under fuzzing.

UI → ours → UI keeps everything ComfyUI shows (nodes, positions, sizes, titles, colours, modes,
values, links, groups, notes, reroutes, primitives, unknown nodes); ours → UI → ours is exact.
"""

import copy
import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nodegraph import (
    Bool,
    Choice,
    FileChoice,
    Float,
    Graph,
    Int,
    Link,
    Node,
    Output,
    Registry,
    String,
    WorkflowError,
)
from nodegraph import types as T
from nodegraph.comfy_names import RENAMES
from nodegraph.comfy_ui import _pair
from nodegraph.comfy_ui_writer import to_comfy_ui
from nodegraph.workflow import from_comfy_ui, from_data, to_native
from tests.shared import FIXTURES

COMFY = FIXTURES / "comfy_workflows"
TOYS = Registry()


@TOYS.register
class Seeded(Node):
    inputs = [Int("seed", 0, min=0, max=2**64 - 1, control_after_generate=True), Float("cfg", 7.0),
              Choice("sampler", ["euler", "heun"]), Bool("flag", False)]
    outputs = [Output("x", T.FLOAT), Output("n", T.INT)]


@TOYS.register
class Picture(Node):
    inputs = [FileChoice("image", "input", upload="image"), String("note", "", multiline=True)]
    outputs = [Output("IMAGE", T.IMAGE)]


@TOYS.register
class Mix(Node):
    inputs = [Link("x", T.FLOAT), Float("y", 1.0), Int("steps", 4, control_after_generate=True),
              Link("pic", T.IMAGE, optional=True)]
    outputs = [Output("x", T.FLOAT)]


@TOYS.register
class Sink(Node):
    output_node = True
    inputs = [Link("value", T.ANY), String("prefix", "out")]


def reread(doc):
    return from_comfy_ui(json.loads(json.dumps(doc)), TOYS, strict=False)


# -- ours → UI → ours ------------------------------------------------------------------------
numbers = st.integers(-2000, 2000) | st.floats(-2000, 2000, allow_nan=False).map(lambda f: round(f, 2))
ui_data = st.fixed_dictionaries({}, optional={
    "pos": st.lists(numbers, min_size=2, max_size=2), "size": st.lists(st.integers(80, 600), min_size=2, max_size=2),
    "title": st.text(max_size=12), "color": st.sampled_from(["#322", "#233"]), "collapsed": st.just(True),
    "mode": st.sampled_from(["muted", "bypassed"]), "sockets": st.lists(st.sampled_from(["cfg", "y"]), max_size=1),
})
values_of = {
    "Seeded": st.fixed_dictionaries({"seed": st.integers(0, 2**64 - 1), "cfg": numbers.map(float),
                                     "sampler": st.sampled_from(["euler", "heun"]), "flag": st.booleans()}),
    "Picture": st.fixed_dictionaries({"image": st.text(max_size=8), "note": st.text(max_size=20)}),
    "Mix": st.fixed_dictionaries({"y": numbers.map(float), "steps": st.integers(0, 50)}),
    "Sink": st.fixed_dictionaries({"prefix": st.text(max_size=6)}),
}


@st.composite
def graphs(draw):
    graph = Graph(TOYS)
    count = draw(st.integers(1, 6))
    for i in range(1, count + 1):
        kind = draw(st.sampled_from(["Seeded", "Picture", "Mix", "Sink", "Pack.Custom"]))
        ui = draw(ui_data)
        if kind == "Pack.Custom":
            ui["comfy"] = {"inputs": [{"name": "a", "type": "FLOAT"}], "outputs": [{"name": "out", "type": "FLOAT"}],
                           "widgets_values": draw(st.lists(numbers | st.text(max_size=4), max_size=3))}
            graph.add_node(kind, str(i), {}, ui, fill_defaults=False)
        else:
            values = draw(values_of[kind])
            if kind == "Seeded" and draw(st.booleans()):
                ui["after_run"] = {"seed": draw(st.sampled_from(["increment", "decrement", "randomize"]))}
            graph.add_node(kind, str(i), values, ui, fill_defaults=False)
    for node in list(graph.nodes.values()):
        earlier = [n for n in graph.nodes.values() if int(n.id) < int(node.id)]
        cls = TOYS.get(node.type)
        wanted = [s.name for s in cls.inputs if not s.is_widget] + (["y"] if cls is Mix else []) if cls else ["a"]
        for name in wanted:
            if earlier and draw(st.booleans()):
                src = draw(st.sampled_from(earlier))
                outs = len(TOYS.get(src.type).outputs) if TOYS.get(src.type) else 1
                if outs:
                    node.links[name] = (src.id, draw(st.integers(0, outs - 1)))
    graph.ui = draw(st.fixed_dictionaries({}, optional={
        "view": st.fixed_dictionaries({"zoom": st.sampled_from([0.5, 1.0]), "offset": st.just([10.0, 20.0])}),
        "groups": st.lists(st.fixed_dictionaries({"title": st.text(max_size=5),
                                                  "bounding": st.lists(numbers, min_size=4, max_size=4)}),
                           max_size=2),
        "notes": st.lists(st.fixed_dictionaries({"type": st.just("Note"), "text": st.text(max_size=30),
                                                 "pos": st.lists(numbers, min_size=2, max_size=2)}),
                          min_size=1, max_size=2).map(lambda ns: [dict(n, id=str(100 + i)) for i, n in enumerate(ns)]),
    }))
    return graph


@settings(max_examples=300, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(graphs())
def test_ours_to_ui_and_back_is_exact(graph):
    native = json.loads(json.dumps(to_native(graph)))
    again = reread(to_comfy_ui(graph))
    assert to_native(again) == native


def test_ours_to_ui_and_back_keeps_reroutes_and_primitives():
    graph = Graph(TOYS)
    graph.add_node("Seeded", "1", {"seed": 5, "cfg": 7.0, "sampler": "euler", "flag": False}, {"pos": [0, 0]})
    graph.add_node("Mix", "2", {"y": 2.5, "steps": 4}, {"pos": [400, 0], "via": {"x": "20", "y": "30"}})
    graph.nodes["2"].links["x"] = ("1", 0)
    graph.ui = {"reroutes": [{"id": "20", "pos": [300, 10], "source": {"node": "1", "slot": 0}}],
                "primitives": [{"id": "30", "pos": [300, 200], "value": 2.5, "control": "fixed",
                                "output": {"name": "FLOAT", "type": "FLOAT", "widget": {"name": "y"}}}]}
    doc = to_comfy_ui(graph)
    assert sorted(n["type"] for n in doc["nodes"]) == ["Mix", "PrimitiveNode", "Reroute", "Seeded"]
    assert to_native(reread(doc)) == json.loads(json.dumps(to_native(graph)))


# -- UI → ours → UI --------------------------------------------------------------------------
def shown(doc, registry):
    """What ComfyUI shows of a UI document: nodes (type, place, look, mode), links by input name,
    groups, note texts, and the values as the reader understands them. Old type names count as the
    new ones: ComfyUI renames them as it loads a file, and so do we."""
    graph = from_comfy_ui(copy.deepcopy(doc), registry, strict=False)
    nodes = {}
    for n in doc["nodes"]:
        flags = n.get("flags") if isinstance(n.get("flags"), dict) else {}
        nodes[str(n["id"])] = (RENAMES.get(n["type"], n["type"]), _pair(n.get("pos")), _pair(n.get("size")), n.get("title"), n.get("color"),
                               n.get("bgcolor"), n.get("mode", 0), bool(flags.get("collapsed")))
    links = {}
    by_link = {str(lk[0] if isinstance(lk, list) else lk["id"]): lk for lk in doc["links"]}
    for n in doc["nodes"]:
        for slot in n.get("inputs") or []:
            lk = by_link.get(str(slot.get("link")))
            if lk is not None:
                origin = lk[1:3] if isinstance(lk, list) else [lk["origin_id"], lk["origin_slot"]]
                links[(str(n["id"]), (slot.get("widget") or {}).get("name", slot["name"]))] = (str(origin[0]), origin[1])
    values = {nid: (node.values, node.ui.get("after_run")) for nid, node in graph.nodes.items()}
    notes = sorted(n["text"] for n in graph.ui.get("notes", []))
    return nodes, links, [g["bounding"] for g in doc.get("groups") or []], notes, values


def test_every_fixture_ui_workflow_goes_to_ours_and_back_keeping_what_comfyui_shows(shared_fixtures):
    from nodegraph import REGISTRY

    REGISTRY.discover("nodes")
    files = sorted(COMFY.glob("*.ui.json"))
    assert len(files) >= 80
    for path in files:
        doc = json.loads(path.read_text())
        if (doc.get("definitions") or {}).get("subgraphs"):
            continue  # expanded on reading: checked in test_comfy_ui
        graph = from_comfy_ui(copy.deepcopy(doc), REGISTRY, strict=False)
        back = json.loads(json.dumps(to_comfy_ui(graph)))
        assert shown(back, REGISTRY) == shown(doc, REGISTRY), path.name
        # and our side of it is exact from there on
        assert to_native(from_comfy_ui(back, REGISTRY, strict=False)) == json.loads(json.dumps(to_native(graph))), \
            path.name


# -- fuzzing -----------------------------------------------------------------------------------
def base_documents():
    """Small UI documents with every feature the reader handles, valid as they are."""
    def n(node_id, kind, inputs=(), outputs=(), **extra):
        return {"id": node_id, "type": kind, "pos": [node_id * 50, 0], "size": [200, 100], "flags": {}, "mode": 0,
                "inputs": [dict(name=name, type="*", link=link) for name, link in inputs],
                "outputs": [dict(name=name, type="*", links=links) for name, links in outputs],
                "properties": {}, **extra}
    nodes = [
        n(1, "Seeded", outputs=[("x", [1]), ("n", [])], widgets_values=[5, "randomize", 7.5, "euler", True]),
        n(2, "Reroute", inputs=[("", 1)], outputs=[("", [2])]),
        n(3, "Mix", inputs=[("x", 2), ("y", 3)], outputs=[("x", [4])], widgets_values=[1.0, 4, "fixed"], mode=4),
        n(4, "PrimitiveNode", outputs=[("FLOAT", [3])], widgets_values=[2.5, "fixed"]),
        n(5, "Sink", inputs=[("value", 4)], widgets_values=["out"]),
        n(6, "Pack.X", inputs=[("a", 5)], outputs=[("b", [])], widgets_values=[1, "two"], mode=2),
        n(7, "Note", widgets_values=["hello"]),
        n(8, "sg", inputs=[("in", None)], outputs=[("out", [5])]),
        n(9, "Picture", outputs=[("IMAGE", [])], widgets_values=["cat.png", "image", "text"]),
    ]
    links = [[1, 1, 0, 2, 0, "FLOAT"], [2, 2, 0, 3, 0, "FLOAT"], [3, 4, 0, 3, 1, "FLOAT"], [4, 3, 0, 5, 0, "FLOAT"],
             [5, 8, 0, 6, 0, "*"]]
    subgraph = {"id": "sg", "nodes": [n(1, "Seeded", outputs=[("x", [11])], widgets_values=[1, 7.0, "heun", False])],
                "links": [{"id": 11, "origin_id": 1, "origin_slot": 0, "target_id": -20, "target_slot": 0}],
                "inputs": [{"name": "in"}], "outputs": [{"name": "out"}]}
    doc = {"last_node_id": 9, "last_link_id": 5, "nodes": nodes, "links": links,
           "groups": [{"title": "g", "bounding": [0, 0, 100, 100]}], "config": {}, "extra": {"ds": {"scale": 1}},
           "version": 0.4, "definitions": {"subgraphs": [subgraph]}}
    objects = copy.deepcopy(doc)
    objects["links"] = [dict(zip(("id", "origin_id", "origin_slot", "target_id", "target_slot", "type"), lk, strict=True))
                        for lk in doc["links"]]
    return [doc, objects, to_comfy_ui(from_comfy_ui(copy.deepcopy(doc), TOYS, strict=False))]


BASES = base_documents()
JUNK = [None, True, False, -1, 0, 3, 2**70, 1.5, float("nan"), float("inf"), "", "x", "fixed", "-10", -10, -20, [],
        [1], [1, 2, 3, 4, 5, 6], [[]], {}, {"0": 1, "1": 2}, {"name": "y"}, {"sdgraph": {"ui": 5, "drop": "pos"}},
        {"sdgraph": {"id": 7, "values": [], "links": {"x": 1}, "unset": "seed"}}, {"sdgraph": {"id": "2"}},
        {"sdgraph": {"ui": {"id": "1"}, "plain": True}}, "sg", "Reroute", "PrimitiveNode"]


def places(value, out):
    """Every (container, key) inside a document, depth first."""
    if isinstance(value, dict):
        for key in list(value):
            out.append((value, key))
            places(value[key], out)
    elif isinstance(value, list):
        for i in range(len(value)):
            out.append((value, i))
            places(value[i], out)
    return out


def mutate(doc, edits):
    """Replace, delete, duplicate or swap the values at chosen places: broken documents of every kind."""
    spots = places(doc, [])  # found once: a place an earlier edit removed is skipped
    for where, how, junk in edits:
        container, key = spots[where % len(spots)]
        try:
            if how == 0:
                container[key] = copy.deepcopy(JUNK[junk])
            elif how == 1:
                del container[key]
            elif how == 2 and isinstance(container, list):
                container.append(copy.deepcopy(container[key]))
            else:
                other_container, other_key = spots[(where * 7 + junk) % len(spots)]
                container[key] = copy.deepcopy(other_container[other_key])
        except (KeyError, IndexError, RecursionError):
            continue
    return doc


edits = st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 3), st.integers(0, len(JUNK) - 1)), max_size=5)


PER_EXAMPLE = 4  # documents per example: 520 examples feed 2,080 documents, valid and broken


@settings(max_examples=520, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(0, len(BASES) - 1), edits), min_size=PER_EXAMPLE, max_size=PER_EXAMPLE))
def test_only_workflow_errors_escape_the_ui_reader(documents):
    for base, changes in documents:
        doc = mutate(copy.deepcopy(BASES[base]), changes)
        try:
            graph = from_data(doc, TOYS, strict=False)
        except WorkflowError as e:
            assert e.problems and all(isinstance(p, str) and p for p in e.problems)
            continue
        # whatever was read can be written back and read again the same way
        first = json.loads(json.dumps(to_native(graph), default=str))
        assert json.loads(json.dumps(to_native(reread(to_comfy_ui(graph))), default=str)) == first
