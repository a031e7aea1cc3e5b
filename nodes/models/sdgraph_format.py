"""The sdgraph single-file format: one .safetensors for small, custom-architecture SD models.

Layout (format version 1):

* Tensors, named as in an original LDM/CompVis checkpoint whenever our mapping covers the module
  (it covers every SD 1.x/2.x-shaped UNet and VAE, and the tiny test models):
    - `model.diffusion_model.*`               the UNet (LDM names)
    - `first_stage_model.*`                   the VAE (LDM names; mid-attention q/k/v/proj_out as 1×1 convs)
    - `cond_stage_model.transformer.text_model.*`  the CLIP text encoder (Hugging Face names, as in SD 1.x)
  A UNet or VAE our LDM mapping cannot express is stored with diffusers names under `unet.` / `vae.`
  instead (each component independently; the loader recognises both).
* safetensors metadata:
    - "format": "pt"
    - "sdgraph.config": JSON text
        {"version": 1,
         "unet": <UNet2DConditionModel config dict>,
         "vae": <AutoencoderKL config dict>,
         "text_encoder": <CLIPTextConfig dict>,
         "prediction_type": "epsilon" | "v_prediction",
         "latent_scale_factor": float,
         "clip_pad_id": int}
      and optionally "clip_layer" (int, default -1), "beta_start"/"beta_end"/"beta_schedule"/
      "num_train_timesteps" (defaults: SD's scaled-linear 0.00085 → 0.012 over 1000 steps).
* The tokenizer is always the shipped CLIP tokenizer (nodes/configs/clip_tokenizer).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from nodegraph.fileio import atomic_write

from .convert import CLIP_PREFIX, UNET_PREFIX, VAE_PREFIX, LayoutError, clip_to_ldm, unet_to_ldm, vae_to_ldm
from .detect import SDGRAPH_CONFIG_KEY

FORMAT_VERSION = 1
DIFFUSERS_UNET_PREFIX = "unet."
DIFFUSERS_VAE_PREFIX = "vae."


def _jsonable(config: Mapping[str, Any]) -> dict[str, Any]:
    return json.loads(
        json.dumps(dict(config), default=lambda o: list(o) if isinstance(o, tuple | set) else str(o))
    )


def _plain(t: Any, dtype: Any) -> Any:
    t = t.detach().to("cpu")
    if dtype is not None and t.is_floating_point():
        t = t.to(dtype)
    t = t.contiguous()
    if t.untyped_storage().nbytes() != t.numel() * t.element_size() or t.storage_offset() != 0:
        t = t.clone()  # a view into a larger storage (safetensors refuses shared storage)
    return t


def unet_tensors_for_file(unet: Any) -> dict[str, Any]:
    """The UNet's tensors named as the file stores them (LDM names, or diffusers names as fallback)."""
    from .convert import ldm_unet_to_diffusers

    sd = unet.state_dict()
    try:
        ldm = unet_to_ldm(sd, unet.config)
        back = ldm_unet_to_diffusers(ldm, unet.config)  # prove the round trip before relying on it
        if set(back) != set(sd) or len(ldm) != len(sd):
            raise LayoutError("round trip differs")
        return {UNET_PREFIX + k: v for k, v in ldm.items()}
    except LayoutError:
        return {DIFFUSERS_UNET_PREFIX + k: v for k, v in sd.items()}


def vae_tensors_for_file(vae: Any) -> dict[str, Any]:
    from .convert import ldm_vae_to_diffusers

    sd = vae.state_dict()
    try:
        ldm = vae_to_ldm(sd, vae.config)
        back = ldm_vae_to_diffusers(ldm, vae.config)
        if set(back) != set(sd) or len(ldm) != len(sd) or any(back[k].shape != sd[k].shape for k in sd):
            raise LayoutError("round trip differs")
        return {VAE_PREFIX + k: v for k, v in ldm.items()}
    except LayoutError:
        return {DIFFUSERS_VAE_PREFIX + k: v for k, v in sd.items()}


def save_checkpoint(
    path: str | os.PathLike[str],
    unet: Any,
    vae: Any,
    text_encoder: Any,
    *,
    prediction_type: str = "epsilon",
    latent_scale_factor: float = 0.18215,
    clip_pad_id: int = 49407,
    dtype: Any = None,
) -> Path:
    """Write a diffusers UNet2DConditionModel, AutoencoderKL and transformers CLIPTextModel as one
    sdgraph .safetensors file (see the module docstring for the exact format).

    The write is atomic (nodegraph.fileio.atomic_write). `dtype` (e.g.
    torch.float16) casts floating-point tensors on the way out; None keeps the modules' dtypes.
    Returns the path written.
    """
    from safetensors.torch import save

    if prediction_type not in ("epsilon", "v_prediction"):
        raise ValueError(f"prediction_type must be 'epsilon' or 'v_prediction', not {prediction_type!r}")
    path = Path(path)
    tensors: dict[str, Any] = {}
    tensors.update(unet_tensors_for_file(unet))
    tensors.update(vae_tensors_for_file(vae))
    tensors.update({CLIP_PREFIX + k: v for k, v in clip_to_ldm(text_encoder.state_dict()).items()})
    tensors = {k: _plain(v, dtype) for k, v in tensors.items()}

    te_config = text_encoder.config.to_dict()
    te_config.pop("dtype", None)
    te_config.pop("torch_dtype", None)
    config = {
        "version": FORMAT_VERSION,
        "unet": _jsonable(unet.config),
        "vae": _jsonable(vae.config),
        "text_encoder": _jsonable(te_config),
        "prediction_type": prediction_type,
        "latent_scale_factor": float(latent_scale_factor),
        "clip_pad_id": int(clip_pad_id),
    }
    metadata = {"format": "pt", SDGRAPH_CONFIG_KEY: json.dumps(config, sort_keys=True)}

    atomic_write(path, save(tensors, metadata=metadata))
    return path
