"""The shipped "heart" LoRA for the bundled model (tools/train_lora.py): a kohya-format file that
LoraLoader reads like any other, and through workflows/lora.json it makes the model draw a shape it
has never seen, while strength 0 leaves the model as it was."""

import random
import sys
from pathlib import Path

import pytest
from safetensors import safe_open

from nodegraph import REGISTRY, Executor
from nodegraph.workflow import load_workflow
from nodes.core.env import SDEnvironment
from nodes.imaging.ops import image_to_pil
from nodes.models import load_checkpoint
from nodes.models.lora import ldm_module_names, module_index, read_lora

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tools"))
import shapes_data  # noqa: E402

REGISTRY.discover("nodes")
LORA = REPO / "models" / "loras" / "sdgraph-shapes-heart.safetensors"
MODEL = REPO / "models" / "checkpoints" / "sdgraph-shapes.safetensors"
SEEDS = 4


def test_the_heart_lora_is_a_small_kohya_file_whose_every_layer_maps_onto_the_bundled_model():
    assert LORA.stat().st_size < 1_000_000
    with safe_open(LORA, "pt") as f:
        keys = list(f.keys())
        meta = f.metadata()
    assert meta["sdgraph_new_shape"] == "heart"
    modules = {k.rsplit(".", 2)[0] if k.endswith(".weight") else k.rsplit(".", 1)[0] for k in keys}
    assert all(m.startswith(("lora_unet_", "lora_te_")) for m in modules)
    assert {k for k in keys} == {f"{m}.{s}" for m in modules for s in ("lora_down.weight", "lora_up.weight", "alpha")}
    lora = read_lora(LORA)
    assert lora.unknown == []
    model, clip, _ = load_checkpoint(MODEL)
    unet_index = module_index(model.unet, ldm_module_names(model.unet))
    te_index = module_index(clip.text_encoder)
    assert lora.towers["unet"] and all(name in unet_index for name in lora.towers["unet"])
    assert lora.towers["te1"] and all(name in te_index for name in lora.towers["te1"])


@pytest.fixture(scope="module")
def render(tmp_path_factory):
    executor = Executor(REGISTRY, env=SDEnvironment(output_dir=tmp_path_factory.mktemp("out"), device="cpu", dtype="fp32"))
    graph = load_workflow(REPO / "workflows" / "lora.json", REGISTRY)
    assert graph.nodes["2"].values["lora_name"] == LORA.name

    def run(strength: float, prompt: str = "a red heart in the centre on a white background"):
        graph.set_value("2", "strength_model", strength)
        graph.set_value("2", "strength_clip", strength)
        graph.set_value("3", "text", prompt)
        graph.set_value("5", "batch_size", SEEDS)
        graph.set_value("6", "steps", 10)
        result = executor.run(graph, outputs=["7"], check=False)
        assert result.ok, result.error
        readings = [shapes_data.analyse_image(image_to_pil(i), 1, shapes_data.ALL_SHAPES) for i in result.outputs["7"][0]]
        return [r["objects"][0] for r in readings if r["objects"]]

    return run


def test_the_workflow_draws_a_heart_with_the_lora_and_not_without(render):
    with_lora = render(1.0)
    assert sum(o["shape"] == "heart" for o in with_lora) >= SEEDS - 1, with_lora
    assert sum(o["colour"] == "red" and o["position"] == "centre" for o in with_lora) >= SEEDS - 1, with_lora
    without = render(0.0)
    assert len(without) >= SEEDS - 1  # the bare model still draws a shape, just not that one
    assert not any(o["shape"] == "heart" for o in without), without
    # the mean template match says the same: the heart's IoU leads with the LoRA only
    def mean_iou(objects, shape):
        return sum(o["iou_by_shape"][shape] for o in objects) / len(objects)

    assert all(mean_iou(with_lora, "heart") > mean_iou(with_lora, s) for s in shapes_data.SHAPES)
    assert any(mean_iou(without, "heart") < mean_iou(without, s) for s in shapes_data.SHAPES)


def test_the_lora_answers_the_word_heart_not_every_prompt(render):
    """A square prompt with the LoRA at 1.0 gives no hearts and still mostly squares (the LoRA costs the
    known shapes something: docs/bundled-model.md measures how much)."""
    objects = render(1.0, "a blue square in the centre on a white background")
    assert not any(o["shape"] == "heart" for o in objects), objects
    assert sum(o["shape"] == "square" and o["colour"] == "blue" for o in objects) >= SEEDS // 2, objects


def test_the_default_data_stream_is_unchanged_and_hearts_are_opt_in():
    rng = random.Random(3)
    scenes = [shapes_data.sample_scene(rng) for _ in range(300)]
    assert not any(s.shape == "heart" for scene in scenes for s in scene.shapes)
    assert {s.shape for scene in scenes for s in scene.shapes} == set(shapes_data.SHAPES)
    hearts = [shapes_data.sample(random.Random(i), shapes=("heart",)) for i in range(6)]
    assert all("heart" in scene.caption for _, scene in hearts)
    # the extended scorer reads every clean shape as itself; the default one never answers "heart"
    for shape in shapes_data.ALL_SHAPES:
        scene = shapes_data.scene_from_parts([("large", "green", shape, "centre")])
        image = shapes_data.render(scene)
        assert shapes_data.analyse_image(image, 1, shapes_data.ALL_SHAPES)["objects"][0]["shape"] == shape
        assert shapes_data.analyse_image(image)["objects"][0]["shape"] != "heart"
