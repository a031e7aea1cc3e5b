"""Model merging (ComfyUI's arithmetic, fp32 then one rounding), CheckpointSave's file loading back,
and CheckpointLoader's config names."""

import pytest
import torch

from nodegraph import REGISTRY, Executor, Graph
from nodes.core.env import SDEnvironment
from nodes.models import CheckpointError, load_checkpoint
from nodes.models.testing import tiny_sdxl_components, write_tiny_checkpoint

REGISTRY.discover("nodes")
LAYER = "conv_in.weight"


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    root = tmp_path_factory.mktemp("merge")
    for seed, name in ((0, "a"), (1, "b")):
        write_tiny_checkpoint(root / "models" / "checkpoints" / f"{name}.safetensors", seed=seed)
    return root


def loaded(root, name):
    return load_checkpoint(root / "models" / "checkpoints" / f"{name}.safetensors")


def run(node, **inputs):
    return REGISTRY.get(node)().run(None, **inputs)


def param(model, name=LAYER):
    return dict(model.unet.named_parameters())[name]


def test_merge_simple_add_subtract_follow_comfyuis_formulas(pair):
    (a, clip_a, _), (b, clip_b, _) = loaded(pair, "a"), loaded(pair, "b")
    wa, wb = param(a).clone(), param(b).clone()
    (simple,) = run("ModelMergeSimple", model1=a, model2=b, ratio=0.3)
    assert torch.equal(param(simple), wa * 0.3 + wb * 0.7)
    (added,) = run("ModelMergeAdd", model1=a, model2=b)
    assert torch.equal(param(added), wa + wb)
    (diff,) = run("ModelMergeSubtract", model1=a, model2=b, multiplier=2.0)
    assert torch.equal(param(diff), wa * 2.0 - wb * 2.0)
    assert torch.equal(param(a), wa) and torch.equal(param(b), wb)  # the inputs are untouched
    (clip,) = run("CLIPMergeSimple", clip1=clip_a, clip2=clip_b, ratio=0.5)
    te = dict(clip.text_encoder.named_parameters())["embeddings.token_embedding.weight"]
    ta = dict(clip_a.text_encoder.named_parameters())["embeddings.token_embedding.weight"]
    tb = dict(clip_b.text_encoder.named_parameters())["embeddings.token_embedding.weight"]
    assert torch.equal(te, ta * 0.5 + tb * 0.5)


def test_merge_blocks_gives_each_unet_part_its_own_ratio(pair):
    (a, _, _), (b, _, _) = loaded(pair, "a"), loaded(pair, "b")
    (merged,) = run("ModelMergeBlocks", model1=a, model2=b, input=1.0, middle=0.0, out=0.5)
    down = "down_blocks.0.resnets.0.conv1.weight"
    mid = "mid_block.resnets.0.conv1.weight"
    up = "up_blocks.0.resnets.0.conv1.weight"
    assert torch.equal(param(merged, down), param(a, down))
    assert torch.equal(param(merged, mid), param(b, mid))
    assert torch.equal(param(merged, up), param(a, up) * 0.5 + param(b, up) * 0.5)
    assert torch.equal(param(merged, LAYER), param(a, LAYER))  # the rest follows the input ratio


def test_models_of_different_families_do_not_merge(pair):
    from dataclasses import replace

    a = loaded(pair, "a")[0]
    xl = replace(a, unet=tiny_sdxl_components()[0])
    xl.unet.conv_in = torch.nn.Conv2d(4, 7, 3)  # nothing shared in shape
    for _name, module in xl.unet.named_parameters():
        module.data = torch.zeros(1)
    with pytest.raises(CheckpointError, match="different families"):
        run("ModelMergeSimple", model1=a, model2=xl, ratio=0.5)


def test_checkpoint_save_writes_a_checkpoint_that_loads_back(pair, tmp_path):
    g = Graph(REGISTRY)
    g.add_node("CheckpointLoaderSimple", "1", {"ckpt_name": "a.safetensors"})
    g.add_node("CheckpointLoaderSimple", "2", {"ckpt_name": "b.safetensors"})
    g.add_node("ModelMergeSimple", "3", {"ratio": 0.25})
    g.add_node("CheckpointSave", "4", {"filename_prefix": "checkpoints/merged"})
    for src, slot, dst, name in [("1", 0, "3", "model1"), ("2", 0, "3", "model2"), ("3", 0, "4", "model"),
                                 ("1", 1, "4", "clip"), ("1", 2, "4", "vae")]:
        g.connect(src, slot, dst, name)
    env = SDEnvironment(models_dir=pair / "models", output_dir=tmp_path)
    result = Executor(REGISTRY, env=env).run(g)
    assert result.ok, result.error or result.problems
    [path] = result.ui["4"]["files"]
    assert path.endswith("checkpoints/merged_00001_.safetensors")
    again, _, _ = load_checkpoint(path)
    assert torch.equal(param(again), param(result.outputs["3"][0]))


def test_checkpoint_loader_honours_the_config_names_old_workflows_give(pair):
    g = Graph(REGISTRY)
    g.add_node("CheckpointLoader", "1", {"config_name": "v1-inference_clip_skip_2.yaml", "ckpt_name": "a.safetensors"})
    env = SDEnvironment(models_dir=pair / "models")
    result = Executor(REGISTRY, env=env).run(g, outputs=["1"], check=False)
    assert result.ok, result.error
    model, clip, _ = result.outputs["1"]
    assert clip.layer == -2 and model.prediction_type == "epsilon"
    g.set_value("1", "config_name", "v2-inference-v.yaml")
    assert Executor(REGISTRY, env=env).run(g, outputs=["1"], check=False).outputs["1"][0].prediction_type == \
        "v_prediction"
