"""ControlNet files: the original layout ComfyUI's reference ControlNet has (every tensor mapped into
diffusers' ControlNetModel, on the meta device), clear errors for other files."""

import pytest
import torch

from nodes.models import CheckpointError
from nodes.models.controlnet import build, controlnet_config, family_config
from tests.shared import FIXTURES, fixture_script


def test_the_reference_sd15_controlnet_layout_maps_every_tensor():
    aux = fixture_script("comfy_ref_nodes/make_aux_models.py")
    layout = aux.controlnet_layout(aux.read_manifest(str(FIXTURES / "sd15_manifest.tsv")))
    with torch.device("meta"):
        sd = {name: torch.empty(shape, dtype=torch.float16) for name, shape in layout}
    assert len(sd) == 340
    stripped = {k.removeprefix("control_model."): v for k, v in sd.items()}
    model = build(stripped, "controlnet_sd15_rand.safetensors", "meta")
    assert sum(p.numel() for p in model.parameters()) == sum(v.numel() for v in sd.values()) == 361_279_120
    assert model.config.cross_attention_dim == 768


def test_other_files_are_not_taken_for_controlnets():
    with pytest.raises(CheckpointError, match='"lora.safetensors" is not a ControlNet'):
        family_config({"lora_unet_x.lora_down.weight": torch.zeros(1)}, "lora.safetensors")
    config = controlnet_config({"in_channels": 4, "cross_attention_dim": 768, "sample_size": 64})
    assert config == {"in_channels": 4, "cross_attention_dim": 768, "conditioning_channels": 3}


# -- on a tiny model: the ControlNet steers sampling, in its range, and leaves other branches alone ------
from nodegraph import REGISTRY, Executor, Graph  # noqa: E402
from nodes.core.env import SDEnvironment  # noqa: E402

REGISTRY.discover("nodes")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from diffusers import ControlNetModel

    from nodes.models.testing import tiny_components, write_tiny_checkpoint

    root = tmp_path_factory.mktemp("cn")
    unet, vae, te = tiny_components()
    write_tiny_checkpoint(root / "models" / "checkpoints" / "tiny.safetensors", components=(unet, vae, te))
    torch.manual_seed(5)
    net = ControlNetModel.from_unet(unet)
    with torch.no_grad():  # trained ControlNets have non-zero "zero convolutions"; a fresh one adds nothing
        for name, p in net.named_parameters():
            if "controlnet_down_blocks" in name or "controlnet_mid_block" in name or "conv_out" in name:
                p.normal_(0, 0.3)
    net.save_pretrained(root / "models" / "controlnet" / "tiny-cn")
    (root / "in").mkdir()
    import numpy as np
    from PIL import Image

    lines = np.zeros((64, 64, 3), np.uint8)
    lines[:, ::8] = 255
    Image.fromarray(lines).save(root / "in" / "lines.png")
    return root


def cn_graph(strength=1.0, start=0.0, end=1.0, node="ControlNetApplyAdvanced") -> Graph:
    g = Graph(REGISTRY)
    g.add_node("CheckpointLoaderSimple", "1", {"ckpt_name": "tiny.safetensors"})
    g.add_node("CLIPTextEncode", "2", {"text": "a red circle"})
    g.add_node("CLIPTextEncode", "3", {"text": ""})
    g.add_node("EmptyLatentImage", "4", {"width": 64, "height": 64})
    g.add_node("ControlNetLoader", "5", {"control_net_name": "tiny-cn"})
    g.add_node("LoadImage", "6", {"image": "lines.png"})
    g.add_node("KSampler", "8", {"seed": 2, "steps": 4, "cfg": 5.0})
    links = [("1", 1, "2", "clip"), ("1", 1, "3", "clip"), ("1", 0, "8", "model"), ("4", 0, "8", "latent_image")]
    if node == "ControlNetApplyAdvanced":
        g.add_node(node, "7", {"strength": strength, "start_percent": start, "end_percent": end})
        links += [("2", 0, "7", "positive"), ("3", 0, "7", "negative"), ("7", 0, "8", "positive"), ("7", 1, "8", "negative")]
    else:
        g.add_node(node, "7", {"strength": strength})
        links += [("2", 0, "7", "conditioning"), ("7", 0, "8", "positive"), ("3", 0, "8", "negative")]
    links += [("5", 0, "7", "control_net"), ("6", 0, "7", "image")]
    for src, slot, dst, name in links:
        g.connect(src, slot, dst, name)
    return g


def sample(root, g):
    env = SDEnvironment(models_dir=root / "models", input_dir=root / "in", device="cpu", dtype="fp32")
    result = Executor(REGISTRY, env=env).run(g, outputs=["8"], check=False)
    assert result.ok, result.error
    return result.outputs["8"][0].samples


def test_a_controlnet_steers_sampling_only_with_strength_and_inside_its_range(tiny):
    plain = cn_graph()
    for name in ("5", "6", "7"):
        plain.remove_node(name)
    plain.connect("2", 0, "8", "positive")
    plain.connect("3", 0, "8", "negative")
    without = sample(tiny, plain)
    assert not torch.allclose(sample(tiny, cn_graph()), without, atol=1e-4)
    assert torch.equal(sample(tiny, cn_graph(strength=0.0)), without)
    assert torch.equal(sample(tiny, cn_graph(start=0.0, end=0.0)), without)  # a range no step is in
    part = sample(tiny, cn_graph(start=0.0, end=0.5))
    assert not torch.allclose(part, without, atol=1e-4) and not torch.allclose(part, sample(tiny, cn_graph()), atol=1e-4)


def test_the_old_controlnet_apply_steers_the_negative_side_too():
    from nodes.core.values import ConditioningEntry
    from nodes.sampling.conds import share_control_with_uncond

    hint = type("Hint", (), {"apply_to_uncond": True})()
    positive = [ConditioningEntry(torch.zeros(1, 77, 8), extras={"control": hint})]
    negative = [ConditioningEntry(torch.zeros(1, 77, 8))]
    shared = share_control_with_uncond({"positive": positive, "negative": negative})
    assert shared["negative"][0].extras["control"] is hint and "control" not in negative[0].extras
    hint.apply_to_uncond = False
    assert share_control_with_uncond({"positive": positive, "negative": negative})["negative"][0] is negative[0]
