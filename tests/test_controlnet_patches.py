"""A ControlNet together with UNet patches (FreeU, SAG, Deep Shrink): the block walk adds the
ControlNet's residuals where ComfyUI does — each skip when the output blocks take it (before the
output-block patches see it), the middle block's output — so the combination runs, and a patch
that changes nothing leaves the ControlNet's result as it was."""

from __future__ import annotations

import logging

import pytest
import torch

from nodes import model_patches as mp
from nodes.core.values import ConditioningEntry, ModelPatches
from nodes.models.controlnet import ControlHint, ControlNet, residuals
from nodes.sampling.ksampler import UNetCaller
from nodes.sampling.unet_patched import PatchedUNetCaller, forward_with_patches
from tests.test_model_patches import prompts, run, sample


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from diffusers import ControlNetModel

    from nodes.models.loader import load_checkpoint
    from nodes.models.testing import write_tiny_checkpoint

    root = tmp_path_factory.mktemp("cnp")
    write_tiny_checkpoint(root / "tiny.safetensors")
    model, clip, _ = load_checkpoint(root / "tiny.safetensors", device="cpu")
    torch.manual_seed(5)
    net = ControlNetModel.from_unet(model.unet)
    with torch.no_grad():  # trained ControlNets have non-zero "zero convolutions"; a fresh one adds nothing
        for name, p in net.named_parameters():
            if "controlnet_down_blocks" in name or "controlnet_mid_block" in name or "conv_out" in name:
                p.normal_(0, 0.3)
    hint = torch.zeros(1, 3, 64, 64)
    hint[:, :, :, ::8] = 1.0  # vertical lines
    return model, clip, ControlNet(net.eval().requires_grad_(False), torch.float32, torch.device("cpu"), "tiny-cn"), hint


def with_control(entries: list[ConditioningEntry], net: ControlNet, hint: torch.Tensor) -> list[ConditioningEntry]:
    from dataclasses import replace

    control = ControlHint(net, hint, strength=1.0)
    return [replace(e, extras={**e.extras, "control": control}) for e in entries]


def test_the_block_walk_adds_controlnet_residuals_as_the_diffusers_forward_does(tiny):
    model, _, net, hint = tiny
    unet = model.unet
    torch.manual_seed(1)
    x, t, c = torch.randn(2, 4, 8, 8), torch.tensor([700.0, 700.0]), torch.randn(2, 77, 32)
    noop = ModelPatches(output_block=(lambda h, s, o: (h, s),))
    with torch.inference_mode():
        down, mid = residuals(net, x, t, c, hint, 1.0)
        want = unet(x, t, encoder_hidden_states=c, down_block_additional_residuals=tuple(down),
                    mid_block_additional_residual=mid).sample
        got = forward_with_patches(unet, x, t, c, None, noop, {}, control=(down, mid))
        without = forward_with_patches(unet, x, t, c, None, noop, {})
    assert torch.equal(got, want)
    assert not torch.allclose(got, without, atol=1e-4)


def test_freeu_at_one_with_a_controlnet_predicts_as_the_controlnet_alone(tiny):
    model, clip, net, hint = tiny
    pos, neg = prompts(clip)
    entry = with_control(pos, net, hint)[0]
    neutral = run(mp.FreeU, model, 1.0, 1.0, 1.0, 1.0)  # b = s = 1: only the skips' FFT round trip is left
    torch.manual_seed(2)
    x, t, options = torch.randn(2, 4, 8, 8), torch.tensor([800.0, 800.0]), {"sigmas": torch.tensor([1.0])}
    context = entry.cond.repeat(2, 1, 1)
    with torch.inference_mode():
        alone = UNetCaller(model)(x, t, context, [(entry, 2)], (8, 8), options)
        patched = PatchedUNetCaller(neutral)(x, t, context, [(entry, 2)], (8, 8), options)
        without = UNetCaller(model)(x, t, context, [(pos[0], 2)], (8, 8), options)
    assert torch.allclose(patched, alone, rtol=0, atol=1e-6)
    assert not torch.allclose(alone, without, atol=1e-3)  # the ControlNet acts


def test_freeu_and_sag_run_with_a_controlnet_and_each_acts(tiny):
    model, clip, net, hint = tiny
    pos, neg = prompts(clip)
    pos_c, neg_c = with_control(pos, net, hint), with_control(neg, net, hint)
    alone = sample(model, pos_c, neg_c, steps=2)
    for patched in (run(mp.FreeU, model, 1.3, 1.4, 0.9, 0.2), run(mp.SelfAttentionGuidance, model, 0.8, 2.0)):
        both = sample(patched, pos_c, neg_c, steps=2)
        assert not torch.allclose(both, alone, atol=1e-4)
        assert not torch.allclose(both, sample(patched, pos, neg, steps=2), atol=1e-4)


def test_deep_shrink_leaves_out_residuals_of_another_size_with_a_warning(tiny, caplog):
    model, clip, net, hint = tiny
    pos, neg = prompts(clip)
    shrunk = run(mp.PatchModelAddDownscale, model, 1, 2.0, 0.0, 1.0, False, "bicubic", "bicubic")
    with caplog.at_level(logging.WARNING, logger="nodes.sampling.unet_patched"):
        out = sample(shrunk, with_control(pos, net, hint), with_control(neg, net, hint), steps=2)
    assert torch.isfinite(out).all()
    assert any("ControlNet residual" in r.message for r in caplog.records)
