"""Every workflows/explain_*.json runs headless on the bundled model and saves its figures under
explain/, and tools/make_docs.py turns them into docs/images/explain/*.png names."""

import sys
from pathlib import Path

import pytest
from PIL import Image

from nodegraph import REGISTRY, Executor, validate
from nodegraph.workflow import load_workflow
from nodes.core.env import SDEnvironment

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tools"))
import make_docs  # noqa: E402

REGISTRY.discover("nodes")
pytestmark = pytest.mark.slow
WORKFLOWS = sorted((REPO / "workflows").glob("explain_*.json"))


@pytest.fixture(scope="module")
def executor(tmp_path_factory):
    # One executor for all: the checkpoint loads once and stays cached between workflows.
    return Executor(REGISTRY, env=SDEnvironment(output_dir=tmp_path_factory.mktemp("out"), device="cpu",
                                                dtype="fp32"))


def test_the_explain_workflows_are_shipped():
    names = {p.name for p in WORKFLOWS}
    assert {"explain_forward_noise.json", "explain_schedules.json", "explain_why_step.json"} <= names


@pytest.mark.parametrize("path", WORKFLOWS, ids=[p.stem for p in WORKFLOWS])
def test_explain_workflow_runs_headless_and_saves_labelled_figures(executor, path):
    graph = load_workflow(path, REGISTRY)
    assert [str(p) for p in validate(graph, REGISTRY, executor.env) if not p.warning] == []
    saves = [n for n in graph.nodes.values() if n.type == "SaveImage"]
    assert saves and all(n.values["filename_prefix"].startswith("explain/") for n in saves)
    result = executor.run(graph)
    assert result.ok, result.error
    for save in saves:
        (written,) = result.ui[save.id]["images"]
        with Image.open(written) as image:
            # A figure: several tiles and their labels, larger than the 64x64 px picture.
            assert image.width >= 256 and image.height >= 128
        assert Path(written).parent.name == "explain"


def test_make_docs_names_figures_after_the_prefix_and_copies_them(tmp_path):
    assert make_docs.figure_name(Path("out/explain/why_step_0_00003_.png")) == "why_step_0.png"
    assert make_docs.main([str(REPO / "workflows" / "explain_schedules.json"), "--out", str(tmp_path)]) == 0
    assert [p.name for p in tmp_path.iterdir()] == ["schedules.png"]
