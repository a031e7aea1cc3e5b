"""Validation as ComfyUI runs a workflow: every unknown type named in one error (ComfyUI's own nodes
told from custom node packs), problems in nodes that feed no output node are warnings and do not stop
a run, muted nodes are not checked and bypassed ones are wired through."""

from nodegraph import Executor, Graph, Link, Node, Output, validate
from nodegraph import types as T
from nodegraph.validate import errors
from tests.toy_nodes import make_registry


def registry_with_a_vae_loader():
    registry = make_registry()

    @registry.register
    class VAELoader(Node):
        outputs = [Output("VAE", T.VAE)]

    @registry.register
    class UseVae(Node):
        output_node = True
        inputs = [Link("vae", T.VAE)]

    return registry


def test_every_unknown_type_is_listed_in_one_error_builtins_apart_from_custom_packs():
    registry = registry_with_a_vae_loader()
    g = Graph(registry)
    g.add_node("Number", "1")
    g.add_node("Show", "2")
    g.connect("1", 0, "2", "value")
    for node_id, kind in (("3", "LoraLoader"), ("4", "StableCascade_StageB_Conditioning"), ("5", "LoraLoader"),
                          ("6", "IPAdapterAdvanced")):
        g.add_node(kind, node_id, fill_defaults=False)
    [problem] = validate(g)
    assert str(problem) == (
        "unknown node types: LoraLoader (nodes 3, 5), StableCascade_StageB_Conditioning (node 4) are built into "
        "ComfyUI but not in sdgraph yet; IPAdapterAdvanced (node 6) comes from custom node packs — remove or "
        "replace these nodes, or load a node package that has them (--node-package)")
    assert "did you mean" not in str(problem)  # LoraLoader is not a misspelt VAELoader


def test_a_lone_unknown_node_says_what_it_is_and_a_typo_gets_a_suggestion():
    registry = registry_with_a_vae_loader()
    for kind, expected in (("LoraLoader", "built into ComfyUI; not in sdgraph yet: remove or replace the node"),
                           ("MyPack.Thing", "a custom node pack's node, not one of ComfyUI's own"),
                           ("VAELoadr", "did you mean VAELoader?")):
        g = Graph(registry)
        g.add_node(kind, "7", fill_defaults=False)
        [problem] = [p for p in validate(g) if p.check == "unknown_type"]
        assert problem.node_id == "7" and expected in problem.fix


def test_problems_in_nodes_that_feed_no_output_are_warnings_and_the_run_goes_on():
    registry = make_registry()
    g = Graph(registry)
    g.add_node("Number", "1", {"value": 2.0})
    g.add_node("Show", "2")
    g.connect("1", 0, "2", "value")
    g.add_node("Steps", "3", {"steps": -5})  # a stray node, as a shared workflow often has
    g.add_node("Add", "4")
    g.nodes["4"].links["a"] = ("3", 0)
    problems = validate(g)
    assert [(p.check, p.node_id, p.warning) for p in problems] == [("value_range", "3", True)]
    assert errors(problems) == []
    result = Executor(registry).run(g)
    assert result.ok and "3" not in result.ran and "2" in result.ran
    # the same problem in a node an output needs still stops the run
    g.connect("3", 0, "2", "value")
    assert [(p.check, p.warning) for p in validate(g)] == [("value_range", False)]
    assert Executor(registry).run(g).status == "invalid"


def test_muted_nodes_are_not_checked_and_bypassed_ones_pass_their_input_through():
    registry = make_registry()
    g = Graph(registry)
    g.add_node("Number", "1", {"value": 2.0})
    g.add_node("Mul", "2", {"b": 10.0}, {"mode": "bypassed"})
    g.connect("1", 0, "2", "a")
    g.add_node("Show", "3")
    g.connect("2", 0, "3", "value")
    g.add_node("Show", "4", {}, {"mode": "muted"})  # nothing feeds it: an error, were it not muted
    assert validate(g) == []
    result = Executor(registry).run(g)
    assert result.ok and result.outputs["3"] == () and "2" not in result.ran and "4" not in result.ran
    assert result.ui["3"]["text"] == ["2.0"]  # 2 × 10 had the multiply run
