"""The bundled model, through the real nodes: the prompt reaches the picture (semantic checks)."""

import sys
from pathlib import Path

import numpy as np
import pytest

from nodegraph import REGISTRY, Executor
from nodegraph.workflow import load_workflow
from nodes.core.env import SDEnvironment
from nodes.imaging.ops import image_to_pil

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tools"))
import shapes_data  # noqa: E402

REGISTRY.discover("nodes")
MODEL = REPO / "models" / "checkpoints" / "sdgraph-shapes.safetensors"


@pytest.fixture(scope="module")
def render(tmp_path_factory):
    assert MODEL.is_file(), f"the bundled model is missing: {MODEL}"
    executor = Executor(REGISTRY, env=SDEnvironment(output_dir=tmp_path_factory.mktemp("out"), device="cpu", dtype="fp32"))
    graph = load_workflow(REPO / "workflows" / "default.json", REGISTRY)

    def run(prompt: str, negative: str = "", seeds: int = 4, cfg: float = 5.0):
        graph.set_value("2", "text", prompt)
        graph.set_value("3", "text", negative)
        graph.set_value("6", "batch_size", seeds)
        graph.set_value("7", "cfg", cfg)
        result = executor.run(graph, outputs=["8"], check=False)
        assert result.ok, result.error
        return [image_to_pil(image) for image in result.outputs["8"][0]]

    return run


@pytest.mark.parametrize("colour,shape,position,background", [
    ("red", "circle", "left", "white"),
    ("blue", "square", "right", "black"),
    ("yellow", "triangle", "centre", "gray"),
    ("green", "star", "left", "white"),
])
def test_prompt_sets_colour_position_and_background(render, colour, shape, position, background):
    prompt = shapes_data.scene_from_parts([("large", colour, shape, position)], background).caption
    readings = [shapes_data.analyse_image(image, 1) for image in render(prompt)]
    objects = [r["objects"][0] for r in readings if r["objects"]]
    assert sum(r["background"] == background for r in readings) >= 3, readings
    assert sum(o["colour"] == colour for o in objects) >= 3, readings
    assert sum(o["shape"] == shape for o in objects) >= 3, readings
    # the centroid lies in the named cell of the 3x3 grid
    assert sum(o["position"] == position for o in objects) >= 3, readings


def _mean_centroid(images) -> tuple[float, float]:
    centroids = [r["objects"][0]["centroid"] for r in (shapes_data.analyse_image(i, 1) for i in images) if r["objects"]]
    assert len(centroids) >= 6, "the shape was not found in most pictures"
    return float(np.mean([c[0] for c in centroids])), float(np.mean([c[1] for c in centroids]))


def test_position_words_move_the_shape(render):
    """Same seeds, only the position words differ: the shape moves the way the words say."""
    def where(place: str) -> tuple[float, float]:
        return _mean_centroid(render(f"a large orange square {place} on a white background", seeds=8))

    (left_x, _), (right_x, _) = where("on the left"), where("on the right")
    (_, top_y), (_, bottom_y) = where("at the top"), where("at the bottom")
    # grid cells are 16 px apart; the picture is 64 px wide
    assert right_x - left_x > 16, (left_x, right_x)
    assert bottom_y - top_y > 12, (top_y, bottom_y)


def _redness(images) -> float:
    values = []
    for image in images:
        a = np.asarray(image, dtype=np.float32)
        foreground = np.abs(a - np.median(a.reshape(-1, 3), axis=0)).sum(-1) > 60
        if foreground.any():
            rgb = a[foreground]
            values.append(float((rgb[:, 0] - (rgb[:, 1] + rgb[:, 2]) / 2).mean()))
    return float(np.mean(values)) if values else 0.0


def test_naming_the_colour_in_the_negative_prompt_pushes_away_from_it(render):
    # The positive leaves the colour open, so guidance away from the negative decides it.
    assert _redness(render("a large red circle", seeds=8)) > 100  # the scale: a red circle is very red
    plain = _redness(render("a large circle", seeds=8))
    pushed = _redness(render("a large circle", negative="red", seeds=8))
    assert pushed < plain - 30, (plain, pushed)
