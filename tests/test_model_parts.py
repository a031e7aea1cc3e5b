"""UNETLoader / CLIPLoader / DualCLIPLoader: a UNet or a text encoder on its own, read from the real
layouts (the manifests, on the meta device: no weights needed), and the SDXL pair built from two."""

import pytest
import torch

from nodes.models import CheckpointError
from nodes.models.convert import CLIP_PREFIX, UNET_PREFIX, strip_prefix
from nodes.models.parts import sdxl_clip, text_encoder_from_state_dict, unet_from_state_dict
from nodes.models.testing import manifest_state_dict
from tests.shared import FIXTURES


@pytest.fixture(scope="module")
def sd15():
    return manifest_state_dict(FIXTURES / "sd15_manifest.tsv")


@pytest.fixture(scope="module")
def sdxl():
    return manifest_state_dict(FIXTURES / "sdxl_manifest.tsv")


@pytest.mark.parametrize("prefix", [UNET_PREFIX, ""])
def test_an_sd15_unet_alone_loads_with_or_without_its_checkpoint_prefix(sd15, prefix):
    unet_sd = {prefix + k: v for k, v in strip_prefix(sd15, UNET_PREFIX).items()}
    model = unet_from_state_dict(unet_sd, "unet.safetensors", device="meta", dtype=torch.float16)
    assert model.unet.config.cross_attention_dim == 768 and model.latent_format.scale_factor == 0.18215
    assert sum(p.numel() for p in model.unet.parameters()) == sum(v.numel() for v in unet_sd.values())


def test_an_sdxl_unet_alone_is_told_from_its_cross_attention_width(sdxl):
    model = unet_from_state_dict(strip_prefix(sdxl, UNET_PREFIX), "xl_unet.safetensors", device="meta",
                                 dtype=torch.float16)
    assert model.unet.config.cross_attention_dim == 2048 and model.latent_format.scale_factor == 0.13025


def test_text_encoders_alone_become_sd15_or_sdxl_clip(sd15, sdxl):
    clip_l = text_encoder_from_state_dict(strip_prefix(sd15, CLIP_PREFIX), "clip_l.safetensors", device="meta",
                                          dtype=torch.float16)
    assert (clip_l.layer, clip_l.final_layer_norm, clip_l.pad_id) == (-1, True, 49407)
    big_g = text_encoder_from_state_dict(strip_prefix(sdxl, "conditioner.embedders.1.model."), "clip_g.safetensors",
                                         device="meta", dtype=torch.float16)
    assert big_g.text_encoder.config.hidden_size == 1280 and big_g.text_encoder.text_projection is not None
    pair = sdxl_clip(big_g, clip_l)  # either order
    assert pair.text_encoder.config.hidden_size == 768 and pair.second.text_encoder.config.hidden_size == 1280
    assert (pair.layer, pair.second.layer, pair.final_layer_norm, pair.second.pad_id) == (-2, -2, False, 0)
    with pytest.raises(CheckpointError, match="CLIP-L \\(768\\) and OpenCLIP bigG \\(1280\\)"):
        sdxl_clip(clip_l, clip_l)


def test_a_file_that_is_neither_is_a_clear_error():
    junk = {"foo.weight": torch.zeros(2, 2)}
    with pytest.raises(CheckpointError, match='"x.safetensors" is not a Stable Diffusion UNet'):
        unet_from_state_dict(junk, "x.safetensors", device="cpu", dtype=torch.float32)
    with pytest.raises(CheckpointError, match='"y.safetensors" is not a CLIP text encoder'):
        text_encoder_from_state_dict(junk, "y.safetensors", device="cpu", dtype=torch.float32)
