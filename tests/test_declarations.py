"""What an input means is declared on it, once: the validator, the cache key, `main.py nodes --json`
and the workflow readers read the declaration; nothing recognises an input by its name."""

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

from nodegraph import REGISTRY, Executor, Graph, Int, Link, Node, NodeContext, Output, Registry, validate
from nodegraph import types as T
from nodegraph.workflow import from_data
from tests.toy_nodes import make_registry

REPO = Path(__file__).resolve().parent.parent
REGISTRY.discover("nodes")


class Tiles(Node):
    """A toy node whose size must be a multiple of 16, whatever the input is called."""

    inputs = [Int("across", 32, min=0, max=1024, multiple_of=16), Int("noise", 0, control_after_generate=True)]
    outputs = [Output("n", T.INT)]

    def run(self, ctx, across, noise):
        return (across,)


def tiles_registry() -> Registry:
    registry = make_registry()
    registry.register(Tiles)
    return registry


def test_multiple_of_is_checked_from_the_declaration_not_the_name():
    g = Graph(tiles_registry())
    g.add_node("Tiles", "1", {"across": 40})
    [problem] = [p for p in validate(g) if p.check == "multiple_of"]
    assert str(problem) == 'node 1 (Tiles): input "across" = 40 is not a multiple of 16 — use 32 or 48'
    g.set_value("1", "across", 48)
    assert not [p for p in validate(g) if p.check == "multiple_of"]


def test_multiple_of_sets_the_editor_step_unless_one_is_given():
    assert Int("w", 8, multiple_of=8).step == 8
    assert Int("w", 8, multiple_of=8, step=64).step == 64


def test_steps_20_and_20_point_0_give_the_same_signature():
    registry = make_registry()
    graphs = [from_data({"format": "sdgraph.workflow", "version": 1, "nodes": {
        "1": {"type": "Steps", "values": {"steps": steps}},
        "2": {"type": "Show", "links": {"value": ["1", 0]}}}}, registry) for steps in (20, 20.0)]
    executor = Executor(registry)
    assert graphs[1].nodes["1"].values["steps"] == 20 and type(graphs[1].nodes["1"].values["steps"]) is int
    signatures = [executor.plan(g).signatures["1"] for g in graphs]
    assert signatures[0] == signatures[1]
    executor.run(graphs[0])
    assert executor.run(graphs[1]).ran == []  # the same run: answered from the cache


def test_a_value_is_coerced_where_it_enters_the_graph():
    g = Graph(make_registry())
    g.add_node("Steps", "1", {"steps": 4.0})
    g.set_value("1", "x", 3)  # an int for a FLOAT input
    assert g.nodes["1"].values == {"x": 3.0, "steps": 4, "delay": 0.0}
    assert type(g.nodes["1"].values["x"]) is float
    g.set_value("1", "steps", 2.5)  # cannot be an INT: kept as it is, for validation to report
    assert [p.check for p in validate(g)] == ["value_type", "no_output"]


def test_nodes_json_shows_the_declared_fields():
    proc = subprocess.run([sys.executable, str(REPO / "main.py"), "nodes", "--json"], cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    nodes = {n["type"]: n for n in json.loads(proc.stdout)}
    inputs = {t: {i["name"]: i for i in n["inputs"]} for t, n in nodes.items()}
    assert inputs["KSampler"]["seed"]["control_after_generate"] is True
    assert inputs["KSamplerAdvanced"]["noise_seed"]["control_after_generate"] is True
    assert "control_after_generate" not in inputs["KSampler"]["steps"]
    assert inputs["EmptyLatentImage"]["width"]["multiple_of"] == 8
    assert inputs["LatentUpscale"]["height"]["multiple_of"] == 8
    assert inputs["CheckpointLoaderSimple"]["ckpt_name"]["files"] == "checkpoints"
    assert inputs["VAELoader"]["vae_name"]["files"] == "vae"
    assert inputs["LoadImage"]["image"]["files"] == "input"
    assert inputs["LoadImage"]["image"]["upload"] == "image"
    assert nodes["VAEDecode"]["outputs"][0]["tooltip"]


def test_every_input_and_output_of_the_shipped_nodes_has_a_tooltip():
    missing = [f"{cls.type_name}.{item.name}" for cls in REGISTRY.classes() if cls.__module__.startswith("nodes.")
               for item in [*cls.inputs, *cls.outputs] if not item.tooltip.strip()]
    assert missing == []


def test_seeds_are_the_inputs_declared_control_after_generate():
    flagged = {f"{cls.type_name}.{i.name}": i for cls in REGISTRY.classes() for i in cls.inputs
               if i.control_after_generate and cls.__module__.startswith("nodes.")}
    assert {"DiffusersSampler.seed", "KSampler.seed", "KSamplerAdvanced.noise_seed"} <= set(flagged)
    assert all(spec.type.name == "INT" for spec in flagged.values())


def test_nodes_listing_piped_into_head_ends_quietly():
    proc = subprocess.run(f'"{sys.executable}" main.py nodes --verbose | head -3', shell=True, cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert len(proc.stdout.splitlines()) == 3
    assert "Traceback" not in proc.stderr and "BrokenPipe" not in proc.stderr, proc.stderr


# -- the typed context ----------------------------------------------------------------------------
CONTEXT_API = {name for name in dir(NodeContext) if not name.startswith("_")} | {
    "node_id", "node_type", "models", "paths", "log"}


def _ctx_attributes(path: Path) -> set[tuple[str, int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {(path.name, node.lineno, node.attr) for node in ast.walk(tree)
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "ctx"}


def test_the_context_has_no_graph_and_no_untyped_environment():
    assert not {"graph", "env"} & CONTEXT_API
    assert {"models", "paths", "device", "dtype", "progress", "preview", "check_cancelled",
            "workflow_metadata"} <= CONTEXT_API


def test_every_shipped_node_reaches_only_the_typed_context():
    used = set().union(*(_ctx_attributes(p) for p in (REPO / "nodes").rglob("*.py")))
    assert used, "no ctx.… found: the test reads the wrong files"
    outside = sorted(f"{file}:{line} ctx.{attr}" for file, line, attr in used if attr not in CONTEXT_API)
    assert outside == []


def test_a_file_input_needs_no_hand_written_lookup():
    for cls in REGISTRY.classes():
        for spec in cls.inputs:
            if spec.files is not None:
                assert "fingerprint" not in cls.__dict__, f"{cls.type_name} fingerprints by hand"


@pytest.mark.parametrize("name", ["../x.safetensors", "/etc/x.safetensors", "a/../../x.safetensors"])
def test_names_that_leave_the_folder_are_refused_by_validation(tmp_path, name):
    from nodes.core.env import SDEnvironment

    env = SDEnvironment(models_dir=tmp_path / "models")
    g = Graph(REGISTRY)
    g.add_node("CheckpointLoaderSimple", "1", {"ckpt_name": name})
    problems = [p for p in validate(g, REGISTRY, env) if p.input == "ckpt_name"]
    assert [p.check for p in problems] == ["file_name"]
    assert str(problems[0]).startswith(f'node 1 (CheckpointLoaderSimple): input "ckpt_name" = {name!r} ')
    assert str(tmp_path / "models" / "checkpoints") in str(problems[0])


def test_the_empty_folder_hint_names_the_folder_actually_searched(tmp_path):
    from nodes.core.env import SDEnvironment

    env = SDEnvironment(models_dir=tmp_path / "elsewhere")
    g = Graph(REGISTRY)
    g.add_node("CheckpointLoaderSimple", "1")
    [problem] = [p for p in validate(g, REGISTRY, env) if p.input == "ckpt_name"]
    assert problem.fix == f"no checkpoints files found in {tmp_path / 'elsewhere' / 'checkpoints'}: put one there"


def test_links_still_feed_declared_inputs():
    assert Link("x", T.MODEL).files is None and not Link("x", T.MODEL).control_after_generate
