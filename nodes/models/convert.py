"""Tensor-name conversion between the original LDM single-file layout and diffusers/transformers.

LDM → diffusers uses diffusers' own converters (`diffusers.loaders.single_file_utils`) for the UNet
and the VAE. The OpenCLIP text tower (SD 2.x) has a converter of our own, because diffusers' one
drops resblock 23 unconditionally and splits q/k/v by `text_projection`'s size; ours keeps every
layer the target config asks for and splits by the hidden size.

diffusers → LDM (used by `save_checkpoint`) is our own inverse of those converters, for UNets built
from `CrossAttnDownBlock2D`/`DownBlock2D` (and their up counterparts) with an integer
`layers_per_block`: the shape of every SD 1.x/2.x UNet and of the tiny test models.
`unet_to_ldm` / `vae_to_ldm` raise `LayoutError` for anything else; the caller then stores
diffusers names instead.

Every function here only renames (and, where the layouts differ, reshapes or splits) tensors, so it
works on meta tensors too: the manifest tests run the whole mapping without any real weights.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
CLIP_PREFIX = "cond_stage_model.transformer."  # SD 1.x: Hugging Face CLIP names below it
OPENCLIP_PREFIX = "cond_stage_model.model."  # SD 2.x: OpenCLIP names below it
SDXL_CLIP_L_PREFIX = "conditioner.embedders.0.transformer."  # SDXL base: CLIP-L, Hugging Face names
SDXL_CLIP_G_PREFIX = "conditioner.embedders.1.model."  # SDXL base: OpenCLIP bigG
REFINER_CLIP_G_PREFIX = "conditioner.embedders.0.model."  # SDXL refiner: OpenCLIP bigG only

# Top-level LDM tensors no loader uses: the DDPM schedule buffers (the schedule is recomputed).
DDPM_BUFFERS = frozenset(
    {
        "betas",
        "alphas_cumprod",
        "alphas_cumprod_prev",
        "sqrt_alphas_cumprod",
        "sqrt_one_minus_alphas_cumprod",
        "log_one_minus_alphas_cumprod",
        "sqrt_recip_alphas_cumprod",
        "sqrt_recipm1_alphas_cumprod",
        "posterior_variance",
        "posterior_log_variance_clipped",
        "posterior_mean_coef1",
        "posterior_mean_coef2",
    }
)


class LayoutError(ValueError):
    """The module's names have no LDM equivalent in our inverse mapping."""


def strip_prefix(sd: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    n = len(prefix)
    return {k[n:]: v for k, v in sd.items() if k.startswith(prefix)}


# --------------------------------------------------------------------------------------------------
# LDM → diffusers / transformers


def ldm_unet_to_diffusers(unet_sd: Mapping[str, Any], config: Mapping[str, Any]) -> dict[str, Any]:
    """UNet tensors named as in LDM *without* the `model.diffusion_model.` prefix → diffusers names."""
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint

    prefixed = {UNET_PREFIX + k: v for k, v in unet_sd.items()}
    return convert_ldm_unet_checkpoint(prefixed, dict(config))


def ldm_vae_to_diffusers(vae_sd: Mapping[str, Any], config: Mapping[str, Any]) -> dict[str, Any]:
    """VAE tensors named as in LDM without `first_stage_model.` → diffusers names (attn convs → linear)."""
    from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

    return convert_ldm_vae_checkpoint(dict(vae_sd), dict(config))


def hf_clip_to_module_names(clip_sd: Mapping[str, Any], module_keys: set[str]) -> dict[str, Any]:
    """Hugging Face CLIP names (`text_model.…`, as SD 1.x files hold them) → the module's own names.

    transformers 5 dropped the `text_model.` level from `CLIPTextModel`'s state dict; older
    versions keep it. Old SD 1.x files also lack it (`cond_stage_model.transformer.embeddings…`).
    """
    wants_level = any(k.startswith("text_model.") for k in module_keys)
    out = {}
    for k, v in clip_sd.items():
        bare = k[len("text_model.") :] if k.startswith("text_model.") else k
        if wants_level and bare != "text_projection.weight":
            out["text_model." + bare] = v
        else:
            out[bare] = v
    return out


_OPENCLIP_LAYER = re.compile(r"^transformer\.resblocks\.(\d+)\.(.+)$")
_OPENCLIP_LAYER_PARTS = {
    "ln_1": "layer_norm1",
    "ln_2": "layer_norm2",
    "mlp.c_fc": "mlp.fc1",
    "mlp.c_proj": "mlp.fc2",
    "attn.out_proj": "self_attn.out_proj",
}


def openclip_to_hf(open_sd: Mapping[str, Any], num_layers: int,
                   projection: bool = False) -> tuple[dict[str, Any], list[str]]:
    """OpenCLIP text-tower names (without their prefix) → HF CLIP names (`text_model.…`).

    Keeps resblocks 0..num_layers-1. Returns (converted, ignored source names): resblocks beyond
    `num_layers` and `logit_scale` are ignored on purpose, and so is `text_projection` unless
    `projection` (SDXL's bigG gives the pooled embedding through it: x @ P, so the Linear weight
    of CLIPTextModelWithProjection is Pᵀ). Anything unknown is returned as ignored too.
    """
    out: dict[str, Any] = {}
    ignored: list[str] = []
    for name, t in open_sd.items():
        if name == "text_projection" and projection:
            out["text_projection.weight"] = t.transpose(0, 1).contiguous()
        elif name == "token_embedding.weight":
            out["text_model.embeddings.token_embedding.weight"] = t
        elif name == "positional_embedding":
            out["text_model.embeddings.position_embedding.weight"] = t
        elif name.startswith("ln_final."):
            out["text_model.final_layer_norm." + name[len("ln_final.") :]] = t
        elif (m := _OPENCLIP_LAYER.match(name)) is not None:
            layer, rest = int(m.group(1)), m.group(2)
            if layer >= num_layers:
                ignored.append(name)
                continue
            base = f"text_model.encoder.layers.{layer}."
            if rest in ("attn.in_proj_weight", "attn.in_proj_bias"):
                kind = "weight" if rest.endswith("weight") else "bias"
                q, k, v = t.chunk(3, dim=0)
                out[base + f"self_attn.q_proj.{kind}"] = q
                out[base + f"self_attn.k_proj.{kind}"] = k
                out[base + f"self_attn.v_proj.{kind}"] = v
                continue
            module, _, leaf = rest.rpartition(".")
            if module not in _OPENCLIP_LAYER_PARTS:
                ignored.append(name)
                continue
            out[base + _OPENCLIP_LAYER_PARTS[module] + "." + leaf] = t
        else:  # text_projection, logit_scale, attn_mask buffers of some exports
            ignored.append(name)
    return out, ignored


# --------------------------------------------------------------------------------------------------
# diffusers → LDM (for writing files)

_RESNET_TO_LDM = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "time_emb_proj": "emb_layers.1",
    "conv_shortcut": "skip_connection",
}
_UNET_TOP_TO_LDM = {
    "time_embedding.linear_1": "time_embed.0",
    "time_embedding.linear_2": "time_embed.2",
    "add_embedding.linear_1": "label_emb.0.0",  # SDXL: pooled text + size ids
    "add_embedding.linear_2": "label_emb.0.2",
    "conv_in": "input_blocks.0.0",
    "conv_norm_out": "out.0",
    "conv_out": "out.2",
}
_DOWN = re.compile(r"^down_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)$")
_DOWNSAMPLE = re.compile(r"^down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.+)$")
_UP = re.compile(r"^up_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)$")
_UPSAMPLE = re.compile(r"^up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.+)$")
_MID_RES = re.compile(r"^mid_block\.resnets\.(\d+)\.(.+)$")
_MID_ATTN = re.compile(r"^mid_block\.attentions\.0\.(.+)$")


def _resnet_rest(rest: str, table: Mapping[str, str]) -> str:
    head, _, tail = rest.partition(".")
    if head not in table:
        raise LayoutError(f"unknown resnet tensor {rest!r}")
    return f"{table[head]}.{tail}"


def unet_to_ldm(sd: Mapping[str, Any], config: Mapping[str, Any]) -> dict[str, Any]:
    """diffusers UNet2DConditionModel names → LDM names (without `model.diffusion_model.`)."""
    per = config.get("layers_per_block")
    if not isinstance(per, int):
        raise LayoutError("layers_per_block is not a single integer")
    if config.get("class_embed_type") or config.get("num_class_embeds") or \
            config.get("addition_embed_type") not in (None, "text_time"):
        raise LayoutError("class embeddings and addition embeddings other than SDXL's are not mapped")
    up_types = list(config.get("up_block_types", ()))
    known = {"CrossAttnDownBlock2D", "DownBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"}
    if not set(config.get("down_block_types", ())) | set(up_types) <= known:
        raise LayoutError("block types other than (CrossAttn)Down/UpBlock2D are not mapped")
    if config.get("mid_block_type", "UNetMidBlock2DCrossAttn") != "UNetMidBlock2DCrossAttn":
        raise LayoutError("mid block other than UNetMidBlock2DCrossAttn is not mapped")
    out: dict[str, Any] = {}
    for name, t in sd.items():
        module, _, leaf = name.rpartition(".")
        if module in _UNET_TOP_TO_LDM:
            new = f"{_UNET_TOP_TO_LDM[module]}.{leaf}"
        elif m := _DOWN.match(name):
            b, kind, j, rest = int(m[1]), m[2], int(m[3]), m[4]
            i = 1 + b * (per + 1) + j
            new = (
                f"input_blocks.{i}.0.{_resnet_rest(rest, _RESNET_TO_LDM)}"
                if kind == "resnets"
                else f"input_blocks.{i}.1.{rest}"
            )
        elif m := _DOWNSAMPLE.match(name):
            b = int(m[1])
            new = f"input_blocks.{1 + b * (per + 1) + per}.0.op.{m[2]}"
        elif m := _UP.match(name):
            b, kind, j, rest = int(m[1]), m[2], int(m[3]), m[4]
            i = b * (per + 1) + j
            new = (
                f"output_blocks.{i}.0.{_resnet_rest(rest, _RESNET_TO_LDM)}"
                if kind == "resnets"
                else f"output_blocks.{i}.1.{rest}"
            )
        elif m := _UPSAMPLE.match(name):
            b = int(m[1])
            slot = 2 if up_types[b].startswith("CrossAttn") else 1
            new = f"output_blocks.{b * (per + 1) + per}.{slot}.conv.{m[2]}"
        elif m := _MID_RES.match(name):
            new = f"middle_block.{2 * int(m[1])}.{_resnet_rest(m[2], _RESNET_TO_LDM)}"
        elif m := _MID_ATTN.match(name):
            new = f"middle_block.1.{m[1]}"
        else:
            raise LayoutError(f"no LDM name for UNet tensor {name!r}")
        out[new] = t
    return out


_VAE_RESNET_TO_LDM = {
    "norm1": "norm1",
    "conv1": "conv1",
    "norm2": "norm2",
    "conv2": "conv2",
    "conv_shortcut": "nin_shortcut",
}
_VAE_ATTN_TO_LDM = {
    "group_norm": "norm",
    "to_q": "q",
    "to_k": "k",
    "to_v": "v",
    "to_out.0": "proj_out",
}
_VAE_DOWN = re.compile(r"^encoder\.down_blocks\.(\d+)\.resnets\.(\d+)\.(.+)$")
_VAE_DOWNSAMPLE = re.compile(r"^encoder\.down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.+)$")
_VAE_UP = re.compile(r"^decoder\.up_blocks\.(\d+)\.resnets\.(\d+)\.(.+)$")
_VAE_UPSAMPLE = re.compile(r"^decoder\.up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.+)$")
_VAE_MID_RES = re.compile(r"^(encoder|decoder)\.mid_block\.resnets\.(\d+)\.(.+)$")
_VAE_MID_ATTN = re.compile(r"^(encoder|decoder)\.mid_block\.attentions\.0\.(.+)\.(weight|bias)$")
_VAE_SAME = re.compile(
    r"^(encoder\.conv_(in|out)|decoder\.conv_(in|out)|quant_conv|post_quant_conv)\.(weight|bias)$"
)


def vae_to_ldm(sd: Mapping[str, Any], config: Mapping[str, Any]) -> dict[str, Any]:
    """diffusers AutoencoderKL names → LDM names (without `first_stage_model.`).

    The mid-block attention's q/k/v/proj_out become 1×1 convolutions ([C, C, 1, 1]) as in LDM.
    """
    n_up = len(config.get("up_block_types", ()))
    if set(config.get("down_block_types", ())) != {"DownEncoderBlock2D"} or set(
        config.get("up_block_types", ())
    ) != {"UpDecoderBlock2D"}:
        raise LayoutError("VAE block types other than Down/UpEncoder/DecoderBlock2D are not mapped")
    out: dict[str, Any] = {}
    for name, t in sd.items():
        if _VAE_SAME.match(name):
            new = name
        elif name.startswith(("encoder.conv_norm_out.", "decoder.conv_norm_out.")):
            new = name.replace(".conv_norm_out.", ".norm_out.")
        elif m := _VAE_DOWN.match(name):
            new = f"encoder.down.{m[1]}.block.{m[2]}.{_resnet_rest(m[3], _VAE_RESNET_TO_LDM)}"
        elif m := _VAE_DOWNSAMPLE.match(name):
            new = f"encoder.down.{m[1]}.downsample.conv.{m[2]}"
        elif m := _VAE_UP.match(name):
            new = f"decoder.up.{n_up - 1 - int(m[1])}.block.{m[2]}.{_resnet_rest(m[3], _VAE_RESNET_TO_LDM)}"
        elif m := _VAE_UPSAMPLE.match(name):
            new = f"decoder.up.{n_up - 1 - int(m[1])}.upsample.conv.{m[2]}"
        elif m := _VAE_MID_RES.match(name):
            new = f"{m[1]}.mid.block_{int(m[2]) + 1}.{_resnet_rest(m[3], _VAE_RESNET_TO_LDM)}"
        elif m := _VAE_MID_ATTN.match(name):
            part = _VAE_ATTN_TO_LDM.get(m[2])
            if part is None:
                raise LayoutError(f"no LDM name for VAE tensor {name!r}")
            new = f"{m[1]}.mid.attn_1.{part}.{m[3]}"
            if m[3] == "weight" and part != "norm" and t.ndim == 2:
                t = t[:, :, None, None]
        else:
            raise LayoutError(f"no LDM name for VAE tensor {name!r}")
        out[new] = t
    return out


_HF_LAYER = re.compile(r"^encoder\.layers\.(\d+)\.(.+)\.(weight|bias)$")


def hf_to_openclip(sd: Mapping[str, Any]) -> dict[str, Any]:
    """The inverse of `openclip_to_hf` with the projection: HF CLIP names → OpenCLIP names."""
    import torch

    parts = {hf: oc for oc, hf in _OPENCLIP_LAYER_PARTS.items()}
    out: dict[str, Any] = {}
    qkv: dict[tuple[int, str], dict[str, Any]] = {}
    for name, t in clip_to_ldm(sd).items():
        bare = name.removeprefix("text_model.")
        if bare == "text_projection.weight":
            out["text_projection"] = t.transpose(0, 1).contiguous()
        elif bare == "embeddings.token_embedding.weight":
            out["token_embedding.weight"] = t
        elif bare == "embeddings.position_embedding.weight":
            out["positional_embedding"] = t
        elif bare.startswith("final_layer_norm."):
            out["ln_final." + bare.removeprefix("final_layer_norm.")] = t
        elif (m := _HF_LAYER.match(bare)) and m[2] in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"):
            qkv.setdefault((int(m[1]), m[3]), {})[m[2][len("self_attn.")]] = t
        elif m and m[2] in parts:
            out[f"transformer.resblocks.{m[1]}.{parts[m[2]]}.{m[3]}"] = t
        elif not bare.endswith("position_ids"):
            raise LayoutError(f"no OpenCLIP name for text tensor {name!r}")
    for (layer, leaf), p in qkv.items():
        out[f"transformer.resblocks.{layer}.attn.in_proj_{leaf}"] = torch.cat([p["q"], p["k"], p["v"]], dim=0)
    return out


def clip_to_ldm(sd: Mapping[str, Any]) -> dict[str, Any]:
    """A transformers CLIP text model's names → SD 1.x names (`text_model.…`, without the prefix)."""
    return {
        (k if k.startswith("text_model.") or k == "text_projection.weight" else "text_model." + k): v
        for k, v in sd.items()
    }
