"""Which model a state dict holds, decided from its tensor names and shapes (and its metadata).

Works on names and shapes only, plus one tensor read for SD 2.x's v-prediction test, so it runs on
a safetensors header or on meta tensors without loading any weights.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .convert import (
    CLIP_PREFIX,
    DDPM_BUFFERS,
    OPENCLIP_PREFIX,
    REFINER_CLIP_G_PREFIX,
    SDXL_CLIP_G_PREFIX,
    SDXL_CLIP_L_PREFIX,
    UNET_PREFIX,
    VAE_PREFIX,
)
from .errors import CheckpointError

SDGRAPH_CONFIG_KEY = "sdgraph.config"

# ComfyUI (model_detection / SD20.model_type): an SD 2.x UNet is v-prediction when the population
# std of this bias is above 0.09.
V_PRED_MARKER = UNET_PREFIX + "output_blocks.11.1.transformer_blocks.0.norm1.bias"
V_PRED_STD_THRESHOLD = 0.09

_CONTEXT_KEY = UNET_PREFIX + "input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight"
_UNET_IN = UNET_PREFIX + "input_blocks.0.0.weight"
_SDXL_LABEL_EMB = UNET_PREFIX + "label_emb.0.0.weight"

# An inpainting UNet reads the noisy latent (4 channels), the mask (1) and the masked image's latent
# (4), stacked on the channel axis: ComfyUI gives every UNet with more than 4 input channels that
# concat input, except the 8-channel InstructPix2Pix models, which it handles apart.
INPAINT_IN_CHANNELS = 9
_OTHER_IN_CHANNELS = {8: "an InstructPix2Pix-style editing model (8-channel UNet input: latent + source image)"}


def unet_input_problem(in_channels: int) -> str | None:
    """Why a UNet with this many input channels cannot be used here, or None when it can (4 or 9)."""
    if in_channels in (4, INPAINT_IN_CHANNELS):
        return None
    what = _OTHER_IN_CHANNELS.get(in_channels, f"a UNet with {in_channels} input channels")
    return f"{what}; only text-to-image (4-channel) and inpainting (9-channel) UNets are supported"


@dataclass
class CheckpointInfo:
    """What a checkpoint file holds, as far as loading is concerned."""

    family: str  # "sd1", "sd2", "sdxl", "sdxl_refiner" or "sdgraph"
    prediction_type: str  # "epsilon" or "v_prediction"
    description: str  # for messages and the UI: "SD 1.x", "SD 2.x (v-prediction)", …
    context_dim: int | None = None
    sdgraph_config: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)
    in_channels: int = 4  # the UNet's input: 4 (the latent) or 9 (inpainting: + mask + masked-image latent)

    @property
    def inpainting(self) -> bool:
        return self.in_channels == INPAINT_IN_CHANNELS


def _has_prefix(names: Sequence[str], prefix: str) -> bool:
    return any(n.startswith(prefix) for n in names)


def _population_std(t: Any) -> float:
    import torch

    return float(torch.std(t.float(), unbiased=False))


def describe_keys(names: Sequence[str], limit: int = 4) -> str:
    """A short summary of a state dict's top-level name prefixes, for 'unknown file' errors."""
    if not names:
        return "no tensors"
    counts: dict[str, int] = {}
    for n in names:
        head = ".".join(n.split(".")[:2]) if n.count(".") >= 2 else n.split(".")[0]
        counts[head] = counts.get(head, 0) + 1
    top = sorted(counts.items(), key=lambda kv: -kv[1])[:limit]
    more = "" if len(counts) <= limit else f", … ({len(counts)} groups)"
    return f"{len(names)} tensors: " + ", ".join(f"{k}.* ×{c}" for k, c in top) + more


def sniff_other_kind(names: Sequence[str]) -> str | None:
    """Name the kind of a non-checkpoint file (LoRA, VAE, embedding, ControlNet…), or None."""
    if any("lora_" in n or ".lora_down." in n or ".lora_A." in n or ".lora_up." in n for n in names):
        return "a LoRA (load it with a LoRA loader, on top of a checkpoint)"
    if any(n.startswith(("lycoris_", "hada_")) or ".hada_w1" in n or ".lokr_" in n for n in names):
        return "a LyCORIS/LoHa network (load it with a LoRA loader)"
    if (
        _has_prefix(names, "control_model.")
        or _has_prefix(names, "controlnet_")
        or any("input_hint_block" in n for n in names)
    ):
        return "a ControlNet model"
    if any(n in ("emb_params", "clip_l", "clip_g") for n in names) or _has_prefix(names, "string_to_param"):
        return "a textual-inversion embedding (put it in models/embeddings)"
    vae_like = all(
        n.startswith(("encoder.", "decoder.", "quant_conv.", "post_quant_conv.", "loss.")) for n in names
    )
    if names and (vae_like or all(n.startswith(VAE_PREFIX) for n in names)):
        return "a standalone VAE (load it with VAELoader from models/vae)"
    if _has_prefix(names, "model.diffusion_model.") and not _has_prefix(names, VAE_PREFIX):
        return "a UNet-only file without VAE and text encoder (not a full checkpoint)"
    return None


def detect_checkpoint(
    shapes: Mapping[str, Sequence[int]],
    metadata: Mapping[str, str] | None,
    get_tensor: Callable[[str], Any],
    filename: str,
) -> CheckpointInfo:
    """Decide what `shapes` (name → shape of every tensor in the file) holds; refuse what we can't load.

    Inpainting checkpoints (9-channel UNet input) are recognised in every family and say so in
    `in_channels` and the description. Raises CheckpointError for UNets with other input widths
    (InstructPix2Pix…), non-checkpoint files (LoRA, VAE, embeddings, ControlNet) and anything
    unrecognised, naming the file and what was found.
    """
    names = list(shapes)
    if metadata and SDGRAPH_CONFIG_KEY in metadata:
        try:
            config = json.loads(metadata[SDGRAPH_CONFIG_KEY])
        except json.JSONDecodeError as e:
            raise CheckpointError(
                f'"{filename}": its sdgraph.config metadata is not valid JSON ({e.msg})'
            ) from None
        missing = [k for k in ("unet", "vae", "text_encoder") if k not in config]
        if missing:
            raise CheckpointError(f'"{filename}": its sdgraph.config metadata lacks {", ".join(missing)}')
        pred = config.get("prediction_type", "epsilon")
        if pred not in ("epsilon", "v_prediction"):
            raise CheckpointError(f'"{filename}": unknown prediction_type {pred!r} in sdgraph.config')
        in_channels = int(config["unet"].get("in_channels", 4))
        problem = unet_input_problem(in_channels)
        if problem:
            raise CheckpointError(f'"{filename}" is {problem}')
        desc = "sdgraph inpainting model" if in_channels == INPAINT_IN_CHANNELS else "sdgraph model"
        return CheckpointInfo("sdgraph", pred, desc, sdgraph_config=config, in_channels=in_channels)

    if _UNET_IN not in shapes:
        other = sniff_other_kind(names)
        if other:
            raise CheckpointError(f'"{filename}" is not a Stable Diffusion checkpoint: it looks like {other}')
        raise CheckpointError(
            f'"{filename}" is not a recognised Stable Diffusion checkpoint (no {_UNET_IN}; found {describe_keys(names)})'
        )
    text_prefixes = (CLIP_PREFIX, OPENCLIP_PREFIX, SDXL_CLIP_L_PREFIX, SDXL_CLIP_G_PREFIX, REFINER_CLIP_G_PREFIX)
    if not _has_prefix(names, VAE_PREFIX) or not any(_has_prefix(names, p) for p in text_prefixes):
        lacking = [
            what
            for what, ok in (
                ("VAE (first_stage_model.*)", _has_prefix(names, VAE_PREFIX)),
                (
                    "text encoder (cond_stage_model.* / conditioner.embedders.*)",
                    any(_has_prefix(names, p) for p in text_prefixes),
                ),
            )
            if not ok
        ]
        raise CheckpointError(
            f'"{filename}" has a UNet but no {" and no ".join(lacking)}; '
            "a full checkpoint is needed here (UNet-only files are not supported yet)"
        )
    in_channels = int(shapes[_UNET_IN][1])
    problem = unet_input_problem(in_channels)
    if problem:
        raise CheckpointError(f'"{filename}" is {problem}')
    info = _detect_family(shapes, names, get_tensor, filename)
    if in_channels == INPAINT_IN_CHANNELS:
        info.in_channels = in_channels
        head, sep, tail = info.description.partition(" (")  # "SD 2.x (v-prediction)" → "SD 2.x inpainting (…)"
        info.description = f"{head} inpainting{sep}{tail}"
    return info


def _detect_family(
    shapes: Mapping[str, Sequence[int]], names: Sequence[str], get_tensor: Callable[[str], Any], filename: str
) -> CheckpointInfo:
    """SD 1.x, SD 2.x (ε or v) or the SDXL family, from the text towers and the UNet's context width."""
    if _SDXL_LABEL_EMB in shapes or _has_prefix(names, "conditioner.embedders."):
        return _detect_sdxl(shapes, names, filename)
    context = int(shapes[_CONTEXT_KEY][1]) if _CONTEXT_KEY in shapes else None

    if _has_prefix(names, OPENCLIP_PREFIX):
        if context not in (None, 1024):
            raise CheckpointError(
                f'"{filename}": OpenCLIP text encoder but UNet context {context} (expected 1024 for SD 2.x)'
            )
        pred = "epsilon"
        if V_PRED_MARKER in shapes and _population_std(get_tensor(V_PRED_MARKER)) > V_PRED_STD_THRESHOLD:
            pred = "v_prediction"
        desc = "SD 2.x (v-prediction)" if pred == "v_prediction" else "SD 2.x"
        return CheckpointInfo("sd2", pred, desc, context_dim=1024)

    if context not in (None, 768):
        raise CheckpointError(
            f'"{filename}": CLIP-L text encoder but UNet context {context} (expected 768 for SD 1.x)'
        )
    return CheckpointInfo("sd1", "epsilon", "SD 1.x", context_dim=768)


def _detect_sdxl(shapes: Mapping[str, Sequence[int]], names: Sequence[str], filename: str) -> CheckpointInfo:
    """SDXL base (CLIP-L at embedders.0 and bigG at embedders.1; 2048 context, 2816 size/pooled
    inputs) or the refiner (bigG alone at embedders.0; 1280 context, 2560 inputs with the aesthetic
    score), told apart by their text towers as ComfyUI's detection does."""
    # ComfyUI marks v-prediction SDXL files (and zero-terminal-SNR ones) with empty tensors.
    pred = "v_prediction" if "v_pred" in shapes else "epsilon"
    if _has_prefix(names, SDXL_CLIP_L_PREFIX) and _has_prefix(names, SDXL_CLIP_G_PREFIX):
        desc = "SDXL" + (" (v-prediction)" if pred == "v_prediction" else "")
        return CheckpointInfo("sdxl", pred, desc, context_dim=2048)
    if _has_prefix(names, REFINER_CLIP_G_PREFIX) and not _has_prefix(names, SDXL_CLIP_G_PREFIX):
        return CheckpointInfo("sdxl_refiner", pred, "SDXL refiner", context_dim=1280)
    towers = sorted({".".join(n.split(".")[:4]) for n in names if n.startswith("conditioner.")})
    raise CheckpointError(
        f'"{filename}" looks like an SDXL-family checkpoint, but its text encoders ({", ".join(towers) or "none"}) '
        "match neither SDXL base (CLIP-L + OpenCLIP bigG) nor the SDXL refiner (bigG alone)"
    )


def ignored_on_purpose(name: str) -> bool:
    """Tensors of a full LDM checkpoint that loading skips by design (as ComfyUI does)."""
    return (
        name in DDPM_BUFFERS
        or name in ("v_pred", "ztsnr")  # markers, read by detection
        or name.startswith(
            ("model_ema.", "cond_stage_model.model.logit_scale", "cond_stage_model.model.text_projection")
        )
        or name.endswith("embeddings.position_ids")
        or name.endswith(("text_model.logit_scale", "logit_scale"))
    )
