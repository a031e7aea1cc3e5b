from nodegraph import Graph, validate
from tests.toy_nodes import make_registry


def problems_of(graph):
    return [(p.check, p.node_id, p.input) for p in validate(graph)]


def base_graph():
    g = Graph(make_registry())
    g.add_node("Number", "1")
    g.add_node("Show", "2")
    g.connect("1", 0, "2", "value")
    return g


def test_a_good_graph_has_no_problems():
    assert validate(base_graph()) == []


def test_unknown_node_type_suggests_a_close_name():
    g = base_graph()
    g.add_node("Numbr", "3", fill_defaults=False)
    [p] = validate(g)
    assert str(p) == "node 3 (Numbr): unknown node type 'Numbr' — did you mean Number?"


def test_unknown_input_lists_the_valid_ones():
    g = base_graph()
    g.nodes["1"].values["vlaue"] = 3
    g.nodes["1"].values["zzz"] = 3
    texts = [str(p) for p in validate(g)]
    assert texts == ['node 1 (Number): has no input "vlaue" — did you mean value?',
                     'node 1 (Number): has no input "zzz" — valid inputs: value']


def test_missing_required_link():
    g = Graph(make_registry())
    g.add_node("Show", "1")
    [p] = validate(g)
    assert (p.check, p.input) == ("missing_input", "value")
    assert str(p) == 'node 1 (Show): required input "value" is not set — connect a * output to it'


def test_type_mismatch_in_a_loaded_link():
    g = base_graph()
    g.add_node("MakeLatent", "3")
    g.nodes["2"].links["value"] = ("3", 0)  # fine: Show takes anything
    g.add_node("Add", "4")
    g.nodes["4"].links["a"] = ("3", 0)  # as a hand-edited file could have it
    [p] = validate(g)
    assert str(p) == ('node 4 (Add): input "a" expects FLOAT but node 3 (MakeLatent) output 0 gives LATENT '
                      "— connect a FLOAT output instead")


def test_broken_links_to_missing_nodes_and_slots():
    g = base_graph()
    g.add_node("Add", "3")
    g.nodes["3"].links["a"] = ("99", 0)
    g.nodes["3"].links["b"] = ("1", 5)
    assert problems_of(g) == [("broken_link", "3", "a"), ("broken_link", "3", "b")]


def test_values_out_of_range_and_of_the_wrong_type():
    g = base_graph()
    g.add_node("Steps", "3", {"steps": 0, "delay": 11.0, "x": "abc"})
    texts = [str(p) for p in validate(g)]
    assert texts == [
        'node 3 (Steps): input "x" = \'abc\' is not a FLOAT — enter a float value',
        'node 3 (Steps): input "steps" = 0 is below the minimum 1 — set it to 1 or more',
        'node 3 (Steps): input "delay" = 11 is above the maximum 10 — set it to 10 or less',
    ]


def test_a_linked_value_input_is_not_range_checked():
    g = base_graph()
    g.add_node("Steps", "3", {"x": "not used"})
    g.connect("1", 0, "3", "x")
    assert validate(g) == []


def test_choice_not_in_list_names_the_valid_ones():
    g = base_graph()
    g.add_node("Fail", "3", {"how": "explode"})
    [p] = validate(g)
    assert str(p) == 'node 3 (Fail): input "how" = \'explode\' is not one of the choices — choose one of: crash, input'


def test_cycle_is_reported_with_its_ids():
    g = base_graph()
    g.add_node("Add", "3")
    g.add_node("Add", "4")
    g.nodes["3"].links["a"] = ("4", 0)
    g.nodes["4"].links["a"] = ("3", 0)
    [p] = validate(g)
    assert p.check == "cycle"
    assert str(p).startswith("nodes 3, 4 form a cycle (")


def test_no_output_node():
    g = Graph(make_registry())
    g.add_node("Number", "1")
    [p] = validate(g)
    assert str(p) == ("the workflow has no output node, so running it would do nothing — "
                      "add an output node (such as Show)")


def test_every_problem_is_reported_at_once():
    g = Graph(make_registry())
    g.add_node("Steps", "1", {"steps": -5})
    g.add_node("Nope", "2", fill_defaults=False)
    checks = [p.check for p in validate(g)]
    assert checks == ["unknown_type", "value_range", "no_output"]
