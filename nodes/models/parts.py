"""Loading a model's parts from separate files: a UNet alone (UNETLoader) and text encoders alone
(CLIPLoader, DualCLIPLoader), as ComfyUI's models/diffusion_models and models/text_encoders hold them.

What a file is comes from its tensor names and shapes, as for full checkpoints: a UNet in the
original (`input_blocks…`, with or without `model.diffusion_model.`) or diffusers layout, its family
from the cross-attention width and the size embedding; a text encoder by its width (768 CLIP-L,
1024 OpenCLIP-H of SD 2.x, 1280 OpenCLIP bigG of SDXL) in Hugging Face or OpenCLIP names.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..core.values import ClipModel, DiffusionModel
from . import configs
from .build import empty_text_encoder, empty_unet, fill
from .convert import UNET_PREFIX, clip_to_ldm, hf_clip_to_module_names, ldm_unet_to_diffusers, openclip_to_hf
from .detect import CheckpointInfo, describe_keys, ignored_on_purpose
from .errors import CheckpointError
from .files import TensorFile
from .loader import _latent_format, configs_for

_FAMILY_BY_CONTEXT = {768: ("sd1", "SD 1.x"), 1024: ("sd2", "SD 2.x"), 2048: ("sdxl", "SDXL"),
                      1280: ("sdxl_refiner", "SDXL refiner")}


def load_unet(path: str | Path, *, device: Any = "cpu", dtype: Any = torch.float32) -> DiffusionModel:
    """A UNet-only file → MODEL (SD 1.x, 2.x, SDXL base or refiner)."""
    path = Path(path)
    with TensorFile(path) as f:
        names = [n for n in f.shapes if not ignored_on_purpose(n)]
        sd = f.read(names, dtype=dtype, device=device)
    return unet_from_state_dict(sd, path.name, device=device, dtype=dtype)


def unet_from_state_dict(sd: dict[str, Any], filename: str, *, device: Any, dtype: Any) -> DiffusionModel:
    name = Path(filename).stem
    path = Path(filename)
    sd = {k.removeprefix(UNET_PREFIX): v for k, v in sd.items() if not ignored_on_purpose(k)}
    ldm = "input_blocks.0.0.weight" in sd
    key = ("input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight" if ldm
           else "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight")
    if key not in sd and ldm:  # SDXL's first cross-attention is in the second level
        key = "input_blocks.4.1.transformer_blocks.0.attn2.to_k.weight"
    if key not in sd and not ldm:
        key = "down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.weight"
    if key not in sd:
        raise CheckpointError(f'"{path.name}" is not a Stable Diffusion UNet ({describe_keys(list(sd))})')
    context = int(sd[key].shape[1])
    if context not in _FAMILY_BY_CONTEXT:
        raise CheckpointError(f'"{path.name}": a UNet with {context}-wide cross-attention is not an SD 1.x/2.x/SDXL one')
    family, description = _FAMILY_BY_CONTEXT[context]
    in_weight = sd["input_blocks.0.0.weight" if ldm else "conv_in.weight"]
    if in_weight.shape[1] != 4:
        raise CheckpointError(f'"{path.name}": {in_weight.shape[1]}-channel UNet input; only 4-channel UNets load here')
    info = CheckpointInfo(family, "epsilon", description, context_dim=context)
    cfg = configs_for(info, None)
    unet_sd = ldm_unet_to_diffusers(sd, cfg.unet) if ldm else sd
    unet = fill(empty_unet(cfg.unet), unet_sd, what="UNet", filename=path.name, device=device)
    return DiffusionModel(unet=unet, alphas_cumprod=configs.alphas_cumprod_from_scheduler_config(cfg.schedule),
                          latent_format=_latent_format(cfg.vae, cfg.latent_scale_factor), dtype=dtype,
                          device=torch.device(device), name=name)


def load_text_encoder(path: str | Path, *, device: Any = "cpu", dtype: Any = torch.float32) -> ClipModel:
    """A text-encoder-only file → one tower of CLIP: CLIP-L (as SD 1.x uses it), OpenCLIP-H (SD 2.x,
    penultimate layer) or OpenCLIP bigG (as the SDXL refiner uses it)."""
    path = Path(path)
    with TensorFile(path) as f:
        names = [n for n in f.shapes if not ignored_on_purpose(n)]
        sd = f.read(names, dtype=dtype, device=device)
    return text_encoder_from_state_dict(sd, path.name, device=device, dtype=dtype)


def text_encoder_from_state_dict(sd: dict[str, Any], filename: str, *, device: Any, dtype: Any) -> ClipModel:
    path = Path(filename)
    sd = {k: v for k, v in sd.items() if not ignored_on_purpose(k)}
    for prefix in ("cond_stage_model.transformer.", "cond_stage_model.model.", "transformer."):
        if any(k.startswith(prefix + "text_model.") or k.startswith(prefix + "resblocks.") for k in sd):
            sd = {k.removeprefix(prefix): v for k, v in sd.items()}
    openclip = any(k.startswith(("transformer.resblocks.", "resblocks.")) for k in sd)
    sd = {("transformer." + k if k.startswith("resblocks.") else k): v for k, v in sd.items()}
    token = sd.get("token_embedding.weight" if openclip else "text_model.embeddings.token_embedding.weight",
                   sd.get("embeddings.token_embedding.weight"))
    if token is None:
        raise CheckpointError(f'"{path.name}" is not a CLIP text encoder ({describe_keys(list(sd))})')
    width = int(token.shape[1])
    if width == 768:
        config, layer, pad, norm = configs.component_config(configs.SD15_DIR, "text_encoder"), -1, 49407, True
    elif width == 1024:
        config, layer, pad, norm = configs.component_config(configs.SD21V_DIR, "text_encoder"), -2, 0, True
    elif width == 1280:
        config, layer, pad, norm = configs.component_config(configs.SDXL_DIR, "text_encoder_2"), -2, 0, False
    else:
        raise CheckpointError(f'"{path.name}": a {width}-wide text encoder is not one SD 1.x/2.x/SDXL uses')
    projected = "CLIPTextModelWithProjection" in (config.get("architectures") or ())
    if openclip:
        layers = {int(k.split(".")[2]) for k in sd if k.startswith("transformer.resblocks.")}
        config["num_hidden_layers"] = max(layers) + 1
        text, _ = openclip_to_hf(sd, config["num_hidden_layers"], projection=projected)
    else:
        text = clip_to_ldm(sd)
        if not projected:
            text.pop("text_projection.weight", None)  # CLIP-L files from SDXL carry one; SD 1.x's CLIP has none
    te = empty_text_encoder(config)
    te = fill(te, hf_clip_to_module_names(text, set(te.state_dict())), what="text encoder", filename=path.name,
              device=device)
    return ClipModel(tokenizer=configs.clip_tokenizer(), text_encoder=te, layer=layer, pad_id=pad,
                     final_layer_norm=norm, dtype=dtype, device=torch.device(device), name=path.stem)


def sdxl_clip(clip_l: ClipModel, clip_g: ClipModel) -> ClipModel:
    """SDXL's pair from two single towers: both at the penultimate layer without the final norm."""
    from dataclasses import replace

    widths = (clip_l.text_encoder.config.hidden_size, clip_g.text_encoder.config.hidden_size)
    if widths == (1280, 768):
        clip_l, clip_g = clip_g, clip_l
    elif widths != (768, 1280):
        raise CheckpointError(f"SDXL needs CLIP-L (768) and OpenCLIP bigG (1280) text encoders; these are {widths}")
    second = replace(clip_g, layer=-2, pad_id=0, final_layer_norm=False)
    return replace(clip_l, layer=-2, final_layer_norm=False, second=second)
