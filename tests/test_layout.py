"""A workflow without positions (ComfyUI API files, A1111 parameters) is laid out left to right by
graph depth, with no two nodes overlapping."""

from pathlib import Path

from nodegraph import REGISTRY
from nodegraph.layout import estimate_size
from nodegraph.workflow import load_workflow
from tests.shared import FIXTURES

REGISTRY.discover("nodes")
REPO = Path(__file__).resolve().parent.parent


def boxes(graph):
    return {n.id: (*n.ui["pos"], *estimate_size(graph, n)) for n in graph.nodes.values()}


def overlapping(box):
    pairs = []
    items = list(box.items())
    for i, (a, (ax, ay, aw, ah)) in enumerate(items):
        for b, (bx, by, bw, bh) in items[i + 1:]:
            if ax < bx + bw and bx < ax + aw and ay < by + bh and by < ay + ah:
                pairs.append((a, b))
    return pairs


def test_api_workflows_are_laid_out_by_depth_without_overlaps(shared_fixtures):
    files = [REPO / "workflows" / "txt2img.api.json", *sorted((FIXTURES / "comfy_workflows").glob("*.api.json"))]
    for path in files:
        graph = load_workflow(path, REGISTRY, strict=False)
        box = boxes(graph)
        assert overlapping(box) == [], path.name
        for node in graph.nodes.values():
            for src, _slot in node.links.values():
                assert box[src][0] + box[src][2] <= box[node.id][0], (path.name, src, node.id)  # left to right


def test_the_shipped_api_workflow_reads_like_the_pipeline_it_is():
    graph = load_workflow(REPO / "workflows" / "txt2img.api.json", REGISTRY)
    x = {n.type: n.ui["pos"][0] for n in graph.nodes.values()}
    assert x["CheckpointLoaderSimple"] < x["KSampler"] < x["VAEDecode"] < x["SaveImage"]
