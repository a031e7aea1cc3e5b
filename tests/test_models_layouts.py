"""Key mapping and detection against the real SD layouts (manifests), without any real weights."""

from __future__ import annotations

import pytest
import torch

from nodes.models import CheckpointError
from nodes.models.build import empty_text_encoder, empty_unet, empty_vae, fill
from nodes.models.convert import (
    UNET_PREFIX,
    VAE_PREFIX,
    hf_clip_to_module_names,
    strip_prefix,
    unet_to_ldm,
    vae_to_ldm,
)
from nodes.models.detect import V_PRED_MARKER, detect_checkpoint
from nodes.models.loader import configs_for, convert_state_dict
from nodes.models.testing import manifest_state_dict
from tests.shared import FIXTURES

FIXTURES = FIXTURES
DDPM = {
    "betas", "alphas_cumprod", "alphas_cumprod_prev", "sqrt_alphas_cumprod", "sqrt_one_minus_alphas_cumprod",
    "log_one_minus_alphas_cumprod", "sqrt_recip_alphas_cumprod", "sqrt_recipm1_alphas_cumprod",
    "posterior_variance", "posterior_log_variance_clipped", "posterior_mean_coef1", "posterior_mean_coef2",
}  # fmt: skip
# What the fixtures README says a loader may skip, per manifest (besides the 12 DDPM buffers).
EXPECTED_IGNORED = {
    "sd15": {"cond_stage_model.transformer.text_model.embeddings.position_ids"},
    "sd21v": {"cond_stage_model.model.logit_scale", "cond_stage_model.model.text_projection"},
}


def _marker(values):
    return lambda name: torch.tensor(values, dtype=torch.float16)


V_MARKER = _marker([0.125, -0.125] * 160)
ZERO_MARKER = _marker([0.0] * 320)


@pytest.fixture(scope="module", params=["sd15", "sd21v"])
def manifest(request):
    return request.param, manifest_state_dict(FIXTURES / f"{request.param}_manifest.tsv")


def _shapes(sd):
    return {k: tuple(v.shape) for k, v in sd.items()}


def test_every_manifest_tensor_is_consumed_or_ignored_on_purpose_and_fills_every_parameter(manifest):
    name, sd = manifest
    info = detect_checkpoint(_shapes(sd), {}, V_MARKER, f"{name}.safetensors")
    cfg = configs_for(info, _shapes(sd))
    conv = convert_state_dict(sd, info, cfg)

    assert conv.unused == []
    assert set(conv.ignored) == DDPM | EXPECTED_IGNORED[name]
    # fill() checks names and shapes strictly (no missing, unexpected or reshaped tensor) and assigns.
    unet = fill(empty_unet(cfg.unet), conv.unet, what="UNet", filename=name, device="meta")
    vae = fill(empty_vae(cfg.vae), conv.vae, what="VAE", filename=name, device="meta")
    te = empty_text_encoder(cfg.text_encoder)
    te = fill(
        te,
        hf_clip_to_module_names(conv.text_encoder, set(te.state_dict())),
        what="CLIP",
        filename=name,
        device="meta",
    )
    n_params = sum(p.numel() for m in (unet, vae) for p in m.parameters())
    n_file = sum(v.numel() for k, v in sd.items() if k.startswith((UNET_PREFIX, VAE_PREFIX)))
    assert n_params == n_file
    if name == "sd21v":  # all 24 OpenCLIP layers kept; conditioning stops at the penultimate (ComfyUI)
        assert te.config.num_hidden_layers == 24 and cfg.clip_layer == -2 and cfg.clip_pad_id == 0
    else:
        assert te.config.num_hidden_layers == 12 and cfg.clip_layer == -1 and cfg.clip_pad_id == 49407


def test_openclip_qkv_split_and_projection_follow_the_fused_order():
    from nodes.models.convert import openclip_to_hf

    w = torch.arange(12.0).reshape(6, 2)  # hidden 2: q rows 0-1, k rows 2-3, v rows 4-5
    out, ignored = openclip_to_hf({"transformer.resblocks.0.attn.in_proj_weight": w, "text_projection": w}, 1)
    base = "text_model.encoder.layers.0.self_attn."
    assert torch.equal(out[base + "q_proj.weight"], w[:2]) and torch.equal(out[base + "v_proj.weight"], w[4:])
    assert ignored == ["text_projection"]


def test_our_diffusers_to_ldm_mapping_inverts_diffusers_converter_on_real_layouts(manifest):
    name, sd = manifest
    info = detect_checkpoint(_shapes(sd), {}, V_MARKER, name)
    cfg = configs_for(info, _shapes(sd))
    conv = convert_state_dict(sd, info, cfg)
    ldm_unet = unet_to_ldm(conv.unet, cfg.unet)
    assert {k: tuple(v.shape) for k, v in ldm_unet.items()} == _shapes(strip_prefix(sd, UNET_PREFIX))
    ldm_vae = vae_to_ldm(conv.vae, cfg.vae)
    assert {k: tuple(v.shape) for k, v in ldm_vae.items()} == _shapes(strip_prefix(sd, VAE_PREFIX))


def test_detects_sd1_as_epsilon():
    sd = manifest_state_dict(FIXTURES / "sd15_manifest.tsv")
    info = detect_checkpoint(_shapes(sd), {"format": "pt"}, ZERO_MARKER, "a.safetensors")
    assert (info.family, info.prediction_type, info.context_dim) == ("sd1", "epsilon", 768)


@pytest.mark.parametrize(
    "marker, expected",
    [(V_MARKER, "v_prediction"), (ZERO_MARKER, "epsilon"), (_marker([0.085, -0.085] * 160), "epsilon")],
)
def test_sd2_v_prediction_follows_comfyui_norm1_bias_std_rule(marker, expected):
    sd = manifest_state_dict(FIXTURES / "sd21v_manifest.tsv")
    info = detect_checkpoint(_shapes(sd), {}, marker, "b.safetensors")
    assert (info.family, info.prediction_type, info.context_dim) == ("sd2", expected, 1024)
    assert V_PRED_MARKER in sd


def test_sdxl_is_detected_not_mistaken_for_sd1_or_sd2():
    shapes = _shapes(manifest_state_dict(FIXTURES / "sdxl_manifest.tsv"))
    info = detect_checkpoint(shapes, {}, ZERO_MARKER, "xl.safetensors")
    assert (info.family, info.description, info.context_dim) == ("sdxl", "SDXL", 2048)


def test_inpainting_unet_is_recognised_and_instruct_pix2pix_refused():
    shapes = _shapes(manifest_state_dict(FIXTURES / "sd15_manifest.tsv"))
    shapes[UNET_PREFIX + "input_blocks.0.0.weight"] = (320, 9, 3, 3)
    info = detect_checkpoint(shapes, {}, ZERO_MARKER, "inpaint.safetensors")
    assert (info.description, info.in_channels) == ("SD 1.x inpainting", 9)  # tests/test_inpaint_model.py: the rest
    shapes[UNET_PREFIX + "input_blocks.0.0.weight"] = (320, 8, 3, 3)
    with pytest.raises(CheckpointError, match=r"InstructPix2Pix-style editing model \(8-channel"):
        detect_checkpoint(shapes, {}, ZERO_MARKER, "ip2p.safetensors")


@pytest.mark.parametrize(
    "names, expected",
    [
        (["lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight"], "LoRA"),
        (["encoder.down.0.block.0.conv1.weight", "decoder.conv_in.weight"], "standalone VAE"),
        (["emb_params"], "textual-inversion embedding"),
        (["control_model.input_blocks.0.0.weight"], "ControlNet"),
        (
            ["foo.bar.baz", "foo.bar.qux"],
            r"not a recognised Stable Diffusion checkpoint .*2 tensors: foo.bar",
        ),
    ],
)
def test_wrong_kind_of_file_is_named(names, expected):
    with pytest.raises(CheckpointError, match=expected):
        detect_checkpoint(dict.fromkeys(names, (1,)), {}, ZERO_MARKER, "x.safetensors")
