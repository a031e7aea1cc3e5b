"""Model patches (FreeU, FreeU_V2, RescaleCFG, PerpNeg, SelfAttentionGuidance, PatchModelAddDownscale):
a patched MODEL is a new value sharing the base weights; its patches apply while sampling and never
reach another branch that uses the same loaded model."""

from __future__ import annotations

import pytest
import torch

from nodegraph import REGISTRY, Executor, Graph
from nodes import model_patches as mp
from nodes.core.env import SDEnvironment
from nodes.core.values import ConditioningEntry, ModelPatches
from nodes.sampling import ksampler, patches
from nodes.sampling.unet_patched import forward_with_patches
from tests.test_sampling_parity import conds, toy_model

REGISTRY.discover("nodes")


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory):
    from nodes.models.testing import write_tiny_checkpoint

    root = tmp_path_factory.mktemp("patches")
    write_tiny_checkpoint(root / "models" / "checkpoints" / "tiny.safetensors")
    return root


@pytest.fixture(scope="module")
def tiny_model(tiny_root):
    from nodes.models.loader import load_checkpoint

    model, clip, _ = load_checkpoint(tiny_root / "models" / "checkpoints" / "tiny.safetensors", device="cpu")
    return model, clip


def run(node, *args):
    return node().run(None, *args)[0]


def sample(model, pos, neg, cfg=5.0, steps=4, seed=3):
    from nodes.core.values import Latent

    return ksampler.sample(model, pos, neg, Latent(samples=torch.zeros(1, 4, 8, 8)), seed=seed, steps=steps, cfg=cfg,
                           sampler_name="euler", scheduler="normal")


def prompts(clip):
    from nodes.text import encode_text

    return encode_text(clip, "a red circle"), encode_text(clip, "")


def _branch_graph(patch_type: str, values: dict, extra_links: dict | None = None) -> Graph:
    """Checkpoint → (patch → KSampler "p") and (KSampler "plain"), one shared model."""
    g = Graph(REGISTRY)
    g.add_node("CheckpointLoaderSimple", "ckpt", {"ckpt_name": "tiny.safetensors"})
    g.add_node("CLIPTextEncode", "pos", {"text": "a red circle"})
    g.add_node("CLIPTextEncode", "neg", {"text": ""})
    g.add_node("CLIPTextEncode", "other", {"text": "a blue square"})
    g.add_node("EmptyLatentImage", "lat", {"width": 64, "height": 64, "batch_size": 1})
    g.add_node(patch_type, "patch", values)
    for enc in ("pos", "neg", "other"):
        g.connect("ckpt", 1, enc, "clip")
    g.connect("ckpt", 0, "patch", "model")
    for name, (src, slot) in (extra_links or {}).items():
        g.connect(src, slot, "patch", name)
    for sampler, model_src in (("p", "patch"), ("plain", "ckpt")):
        g.add_node("KSampler", sampler, {"seed": 5, "steps": 3, "cfg": 6.0, "sampler_name": "euler"})
        g.connect(model_src, 0, sampler, "model")
        g.connect("pos", 0, sampler, "positive")
        g.connect("neg", 0, sampler, "negative")
        g.connect("lat", 0, sampler, "latent_image")
        g.add_node("VAEDecode", f"{sampler}_decode")
        g.connect(sampler, 0, f"{sampler}_decode", "samples")
        g.connect("ckpt", 2, f"{sampler}_decode", "vae")
        g.add_node("PreviewImage", f"{sampler}_preview")  # a graph needs an output node to be valid
        g.connect(f"{sampler}_decode", 0, f"{sampler}_preview", "images")
    return g


PATCH_CASES = [
    ("FreeU", {"b1": 1.1, "b2": 1.2, "s1": 0.9, "s2": 0.2}, None),
    ("FreeU_V2", {"b1": 1.3, "b2": 1.4, "s1": 0.9, "s2": 0.2}, None),
    ("RescaleCFG", {"multiplier": 0.7}, None),
    ("PerpNeg", {"neg_scale": 1.0}, {"empty_conditioning": ("other", 0)}),
    ("SelfAttentionGuidance", {"scale": 0.5, "blur_sigma": 2.0}, None),
    ("PatchModelAddDownscale", {"block_number": 1, "downscale_factor": 2.0, "start_percent": 0.0,
                                "end_percent": 0.35, "downscale_after_skip": True,
                                "downscale_method": "bicubic", "upscale_method": "bicubic"}, None),
]


@pytest.mark.parametrize(("patch_type", "values", "links"), PATCH_CASES, ids=[c[0] for c in PATCH_CASES])
def test_a_patched_branch_leaves_the_other_branch_bit_identical(tiny_root, patch_type, values, links):
    env = SDEnvironment(models_dir=tiny_root / "models", output_dir=tiny_root / "out", input_dir=tiny_root / "in")
    graph = _branch_graph(patch_type, values, links)
    alone = Executor(REGISTRY, env=env).run(graph, outputs=["plain"])
    both = Executor(REGISTRY, env=env).run(graph, outputs=["p", "plain"])  # the patched branch may run first
    assert alone.ok and both.ok, (alone.error, both.error)
    plain_alone, plain_after = alone.outputs["plain"][0].samples, both.outputs["plain"][0].samples
    assert torch.equal(plain_alone, plain_after)
    assert not torch.allclose(both.outputs["p"][0].samples, plain_after, atol=1e-4), "the patch had no effect"


def test_patch_nodes_return_a_new_model_sharing_the_unet(tiny_model):
    model, clip = tiny_model
    patched = run(mp.FreeU, model, 1.1, 1.2, 0.9, 0.2)
    chained = run(mp.RescaleCFG, patched, 0.7)
    assert chained.unet is model.unet and model.patches == ModelPatches()
    assert len(chained.patches.output_block) == 1 and chained.patches.sampler_cfg_function is not None
    assert patched.patches.sampler_cfg_function is None  # chaining made a third value, not a change


def test_the_block_walk_without_patches_is_the_diffusers_forward(tiny_model):
    from nodes.models.loader import load_checkpoint

    bundled, _, _ = load_checkpoint("models/checkpoints/sdgraph-shapes.safetensors", device="cpu")
    for unet in (tiny_model[0].unet, bundled.unet):
        x = torch.randn(2, 4, 8, 8)
        t = torch.tensor([700.0, 700.0])
        c = torch.randn(2, 77, unet.config.cross_attention_dim)
        noop = ModelPatches(output_block=(lambda h, s, o: (h, s),), input_block=(lambda h, o: h,))
        with torch.inference_mode():
            assert torch.equal(unet(x, t, encoder_hidden_states=c).sample, forward_with_patches(unet, x, t, c, None, noop, {}))


def test_sag_restores_the_unets_own_attention_processors(tiny_model):
    model, clip = tiny_model
    attn = model.unet.mid_block.attentions[0].transformer_blocks[0].attn1
    before = attn.processor
    patched = run(mp.SelfAttentionGuidance, model, 0.5, 2.0)
    pos, neg = prompts(clip)
    assert not torch.allclose(sample(patched, pos, neg), sample(model, pos, neg), atol=1e-4)
    assert attn.processor is before


def test_freeu_scales_the_backbone_half_and_damps_the_skips_low_frequencies():
    patch = patches.freeu(32, b1=1.5, b2=2.0, s1=0.5, s2=0.25)
    h, skip = torch.ones(1, 64, 4, 4), torch.ones(1, 64, 4, 4)
    h2, skip2 = patch(h, skip, {})
    assert torch.equal(h2[:, :32], torch.full((1, 32, 4, 4), 2.0)) and torch.equal(h2[:, 32:], h[:, 32:])
    assert torch.allclose(skip2, torch.full_like(skip, 0.25), atol=1e-6)  # a constant is all DC: scaled by s2
    other = torch.ones(1, 48, 4, 4)
    assert patch(other, skip, {})[0] is other  # channel counts other than 2× / 4× the base are left alone


def test_rescale_cfg_with_multiplier_zero_is_plain_cfg():
    model = toy_model()
    pos, neg = conds()
    plain = sample(model, pos, neg)
    assert torch.allclose(sample(run(mp.RescaleCFG, model, 0.0), pos, neg), plain, rtol=1e-4, atol=1e-3)
    assert not torch.allclose(sample(run(mp.RescaleCFG, model, 1.0), pos, neg), plain, atol=1e-2)


def test_perp_neg_with_the_empty_prompt_as_negative_is_plain_cfg():
    model = toy_model()
    pos, neg = conds()
    patched = run(mp.PerpNeg, model, neg, 1.0)
    assert torch.allclose(sample(patched, pos, neg), sample(model, pos, neg), rtol=1e-4, atol=1e-3)
    other = [ConditioningEntry(cond=torch.full((1, 77, 8), 0.05))]
    assert not torch.allclose(sample(run(mp.PerpNeg, model, other, 1.0), pos, neg), sample(model, pos, neg),
                              atol=1e-3)


def test_deep_shrink_shrinks_only_inside_its_sigma_range(tiny_model):
    model, clip = tiny_model
    shapes = []
    patched = run(mp.PatchModelAddDownscale, model, 1, 2.0, 0.0, 0.35, True, "bicubic", "bicubic")
    spy = patched.patched(output_block=lambda h, skip, options: (shapes.append(tuple(h.shape[-2:])) or h, skip))
    pos, neg = prompts(clip)
    sample(spy, pos, neg, steps=6)
    per_step = len(shapes) // 6
    first, last = shapes[:per_step], shapes[-per_step:]
    assert min(first) < min(last)  # early steps saw shrunken features; the late ones full size
    ms = ksampler.model_sampling_for(model)
    assert ms.percent_to_sigma(0.35) == pytest.approx(float(ms.sigma(torch.tensor(0.65 * 999))))


def test_cfg_one_still_runs_the_uncond_pass_for_sag():
    model = toy_model()
    calls = []
    pos, neg = conds()
    patched = model.patched(post_cfg_function=lambda a: calls.append(a["uncond"] is not None) or a["denoised"],
                            disable_cfg1_optimization=True)
    sample(patched, pos, neg, cfg=1.0, steps=2)
    assert calls == [True, True]
