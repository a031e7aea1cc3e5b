"""workflows/area_composition.json on the bundled model: a 128×64 image composed of two 64×64 areas,
each prompted on its own — the red circle lands in the left half, the blue square in the right."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from nodegraph import REGISTRY, Executor
from nodegraph.workflow import load_workflow
from nodes.core.env import SDEnvironment

REPO = Path(__file__).resolve().parent.parent
REGISTRY.discover("nodes")


def _share(rgb: np.ndarray, colour: str) -> float:
    r, g, b = (rgb[..., i].astype(np.int16) for i in range(3))
    hit = (r > 150) & (g < 90) & (b < 90) if colour == "red" else (b > 150) & (r < 90) & (g < 120)
    return float(hit.mean())


def test_each_area_draws_its_own_prompt_in_its_half(tmp_path):
    graph = load_workflow(REPO / "workflows" / "area_composition.json", REGISTRY)
    env = SDEnvironment(models_dir=REPO / "models", output_dir=tmp_path, input_dir=tmp_path)
    result = Executor(REGISTRY, env=env).run(graph, outputs=["13"])
    assert result.ok, result.error
    image = (result.outputs["13"][0][0].numpy() * 255).round().astype(np.uint8)  # [64, 128, 3]
    assert image.shape == (64, 128, 3)
    left, right = image[:, :64], image[:, 64:]
    assert _share(left, "red") > 0.1 and _share(right, "red") < 0.05
    assert _share(right, "blue") > 0.1 and _share(left, "blue") < 0.02
