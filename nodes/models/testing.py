"""Tiny random-weight SD-architecture models, for tests and benchmarks of the mechanics.

`tiny_components(seed)` gives a (UNet2DConditionModel, AutoencoderKL, CLIPTextModel) triple with the
SD 1.x structure (cross-attention down/up blocks, 8× VAE, CLIP tokenizer vocabulary) but a few
hundred thousand parameters, so a 64×64 image (8×8 latent) runs in milliseconds on CPU. Weights
are the modules' default random init under `torch.manual_seed(seed)`: meaningless images.

Write them as files with `write_tiny_checkpoint` (sdgraph single file via save_checkpoint) or
`write_tiny_diffusers_folder` (model_index.json + unet/ vae/ text_encoder/ tokenizer/ scheduler/).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch

from . import configs

TINY_UNET_CONFIG: dict[str, Any] = {
    "sample_size": 8,
    "in_channels": 4,
    "out_channels": 4,
    "layers_per_block": 1,
    "block_out_channels": [32, 64],
    "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"],
    "cross_attention_dim": 32,
    "attention_head_dim": 8,
    "norm_num_groups": 8,
    "use_linear_projection": False,
}
TINY_VAE_CONFIG: dict[str, Any] = {
    "sample_size": 64,
    "in_channels": 3,
    "out_channels": 3,
    "latent_channels": 4,
    "layers_per_block": 1,
    "block_out_channels": [8, 16, 16, 16],
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
    "norm_num_groups": 8,
    "scaling_factor": 0.18215,
}
TINY_TEXT_CONFIG: dict[str, Any] = {
    "vocab_size": 49408,
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "max_position_embeddings": 77,
    "hidden_act": "quick_gelu",
    "projection_dim": 32,
    "bos_token_id": 0,
    "eos_token_id": 2,
    "pad_token_id": 1,
}


def tiny_components(seed: int = 0, *, unet_overrides: dict[str, Any] | None = None):
    """(unet, vae, text_encoder): tiny SD-shaped modules, random but reproducible, float32, eval mode."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**{**TINY_UNET_CONFIG, **(unet_overrides or {})})
    vae = AutoencoderKL(**TINY_VAE_CONFIG)
    text_encoder = CLIPTextModel(CLIPTextConfig(**TINY_TEXT_CONFIG))
    for m in (unet, vae, text_encoder):
        m.eval().requires_grad_(False)
    return unet, vae, text_encoder


def write_tiny_checkpoint(
    path: str | Path,
    seed: int = 0,
    *,
    prediction_type: str = "epsilon",
    clip_pad_id: int = 49407,
    dtype: Any = None,
    components: tuple | None = None,
) -> Path:
    """Write tiny_components(seed) (or `components`) as an sdgraph single file."""
    from .sdgraph_format import save_checkpoint

    unet, vae, te = components or tiny_components(seed)
    return save_checkpoint(
        path, unet, vae, te, prediction_type=prediction_type, clip_pad_id=clip_pad_id, dtype=dtype
    )


def write_tiny_diffusers_folder(
    path: str | Path,
    seed: int = 0,
    *,
    prediction_type: str = "epsilon",
    clip_pad_id: int = 49407,
    components: tuple | None = None,
) -> Path:
    """Write tiny_components(seed) (or `components`) as a diffusers StableDiffusionPipeline folder.

    The tokenizer is the shipped one; with clip_pad_id=0 its pad token becomes "!" as in SD 2.x
    folders. The scheduler is the SD 1.5 PNDMScheduler config with `prediction_type` set.
    """
    path = Path(path)
    unet, vae, te = components or tiny_components(seed)
    path.mkdir(parents=True, exist_ok=True)
    unet.save_pretrained(path / "unet")
    vae.save_pretrained(path / "vae")
    te.save_pretrained(path / "text_encoder")
    tok = path / "tokenizer"
    tok.mkdir(exist_ok=True)
    for f in configs.TOKENIZER_DIR.iterdir():
        shutil.copyfile(f, tok / f.name)
    if clip_pad_id == configs.OPENCLIP_PAD_ID:
        for name in ("special_tokens_map.json", "tokenizer_config.json"):
            data = configs.read_json(tok / name)
            data["pad_token"] = "!"
            (tok / name).write_text(json.dumps(data, indent=2), encoding="utf-8")
    (path / "scheduler").mkdir(exist_ok=True)
    sched = configs.component_config(configs.SD15_DIR, "scheduler")
    sched["prediction_type"] = prediction_type
    (path / "scheduler" / "scheduler_config.json").write_text(json.dumps(sched, indent=2), encoding="utf-8")
    index = configs.read_json(configs.SD15_DIR / "model_index.json")
    (path / "model_index.json").write_text(json.dumps(index, indent=2), encoding="utf-8")
    return path


def manifest_state_dict(manifest: str | Path, device: str = "meta") -> dict[str, torch.Tensor]:
    """Tensors with exactly a manifest's names, shapes and dtypes (meta by default: no memory)."""
    dtypes = {
        "float16": torch.float16,
        "float32": torch.float32,
        "int64": torch.int64,
        "bfloat16": torch.bfloat16,
    }
    out = {}
    for line in Path(manifest).read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        name, shape, dtype = line.split("\t")
        dims = [int(x) for x in shape.strip("[] ").split(",") if x.strip()]
        out[name] = torch.empty(dims, dtype=dtypes[dtype.strip()], device=device)
    return out


# SDXL's shape in miniature: a DownBlock2D then cross-attention blocks, two text towers (CLIP-L and a
# bigG-like tower with a projection, hidden states joined: 32 + 32), size conditioning ("text_time":
# pooled 32 + 6 size ids × 8), a VAE with SDXL's latent scale that asks to be upcast in fp16.
TINY_SDXL_UNET_CONFIG: dict[str, Any] = {
    **TINY_UNET_CONFIG,
    "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D"],
    "up_block_types": ["CrossAttnUpBlock2D", "UpBlock2D"],
    "cross_attention_dim": 64,
    "transformer_layers_per_block": [1, 2],
    "addition_embed_type": "text_time",
    "addition_time_embed_dim": 8,
    "projection_class_embeddings_input_dim": 32 + 6 * 8,
    "use_linear_projection": True,
}
TINY_SDXL_VAE_CONFIG: dict[str, Any] = {**TINY_VAE_CONFIG, "scaling_factor": 0.13025, "force_upcast": True}
TINY_BIG_G_CONFIG: dict[str, Any] = {**TINY_TEXT_CONFIG, "hidden_act": "gelu", "num_hidden_layers": 3}


def tiny_sdxl_configs():
    """The loader's ModelConfigs for a tiny SDXL single file (the shipped SDXL configs are full size)."""
    from .loader import ModelConfigs

    big_g = {**TINY_BIG_G_CONFIG, "architectures": ["CLIPTextModelWithProjection"]}
    return ModelConfigs(unet=TINY_SDXL_UNET_CONFIG, vae=TINY_SDXL_VAE_CONFIG, text_encoder=TINY_TEXT_CONFIG,
                        text_encoder_2=big_g, prediction_type="epsilon", latent_scale_factor=0.13025,
                        clip_pad_id=49407, clip_layer=-2, final_layer_norm=False)


def tiny_sdxl_components(seed: int = 0):
    """(unet, vae, text_encoder, text_encoder_2): tiny SDXL-shaped modules, float32, eval mode."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**TINY_SDXL_UNET_CONFIG)
    vae = AutoencoderKL(**TINY_SDXL_VAE_CONFIG)
    text_encoder = CLIPTextModel(CLIPTextConfig(**TINY_TEXT_CONFIG))
    text_encoder_2 = CLIPTextModelWithProjection(CLIPTextConfig(**TINY_BIG_G_CONFIG))
    for m in (unet, vae, text_encoder, text_encoder_2):
        m.eval().requires_grad_(False)
    return unet, vae, text_encoder, text_encoder_2


def write_tiny_sdxl_diffusers_folder(path: str | Path, seed: int = 0) -> Path:
    """Write tiny_sdxl_components(seed) as a StableDiffusionXLPipeline folder: the shipped tokenizer
    twice (the second padding with "!", id 0, as SDXL's tokenizer_2 does) and SDXL's scheduler."""
    path = Path(path)
    unet, vae, te, te2 = tiny_sdxl_components(seed)
    path.mkdir(parents=True, exist_ok=True)
    for module, sub in ((unet, "unet"), (vae, "vae"), (te, "text_encoder"), (te2, "text_encoder_2")):
        module.save_pretrained(path / sub)
    for sub, pad in (("tokenizer", None), ("tokenizer_2", "!")):
        (path / sub).mkdir(exist_ok=True)
        for f in configs.TOKENIZER_DIR.iterdir():
            shutil.copyfile(f, path / sub / f.name)
        if pad is not None:
            for name in ("special_tokens_map.json", "tokenizer_config.json"):
                data = configs.read_json(path / sub / name)
                data["pad_token"] = pad
                (path / sub / name).write_text(json.dumps(data, indent=2), encoding="utf-8")
    (path / "scheduler").mkdir(exist_ok=True)
    sched = configs.component_config(configs.SDXL_DIR, "scheduler")
    (path / "scheduler" / "scheduler_config.json").write_text(json.dumps(sched, indent=2), encoding="utf-8")
    index = configs.read_json(configs.SDXL_DIR / "model_index.json")
    (path / "model_index.json").write_text(json.dumps(index, indent=2), encoding="utf-8")
    return path


def write_tiny_sdxl_refiner_folder(path: str | Path, seed: int = 0) -> Path:
    """A tiny SDXL-refiner-shaped diffusers folder: bigG alone (text_encoder_2), a UNet whose
    cross-attention takes bigG's width and whose size embedding takes 5 ids (with the aesthetic score)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    path = Path(path)
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**{**TINY_SDXL_UNET_CONFIG, "cross_attention_dim": 32,
                                   "projection_class_embeddings_input_dim": 32 + 5 * 8})
    vae = AutoencoderKL(**TINY_SDXL_VAE_CONFIG)
    te2 = CLIPTextModelWithProjection(CLIPTextConfig(**TINY_BIG_G_CONFIG))
    path.mkdir(parents=True, exist_ok=True)
    for module, sub in ((unet, "unet"), (vae, "vae"), (te2, "text_encoder_2")):
        module.eval().requires_grad_(False).save_pretrained(path / sub)
    (path / "tokenizer_2").mkdir(exist_ok=True)
    for f in configs.TOKENIZER_DIR.iterdir():
        shutil.copyfile(f, path / "tokenizer_2" / f.name)
    (path / "scheduler").mkdir(exist_ok=True)
    sched = configs.component_config(configs.SDXL_DIR, "scheduler")
    (path / "scheduler" / "scheduler_config.json").write_text(json.dumps(sched, indent=2), encoding="utf-8")
    index = {"_class_name": "StableDiffusionXLImg2ImgPipeline", "text_encoder": [None, None],
             "text_encoder_2": ["transformers", "CLIPTextModelWithProjection"], "tokenizer": [None, None],
             "tokenizer_2": ["transformers", "CLIPTokenizer"], "unet": ["diffusers", "UNet2DConditionModel"],
             "vae": ["diffusers", "AutoencoderKL"], "scheduler": ["diffusers", "EulerDiscreteScheduler"]}
    (path / "model_index.json").write_text(json.dumps(index, indent=2), encoding="utf-8")
    return path
