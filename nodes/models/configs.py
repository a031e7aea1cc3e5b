"""The configs shipped in nodes/configs/, and the pieces every SD model shares.

nodes/configs/
    sd15/   {unet,vae,text_encoder,scheduler}/*.json, model_index.json  (SD 1.x, CLIP-L)
    sd21v/  the same for SD 2.x (OpenCLIP ViT-H as a CLIPTextModel, linear proj, context 1024)
    sdxl/   SDXL base: text_encoder (CLIP-L) and text_encoder_2 (OpenCLIP bigG with projection)
    sdxl_refiner/unet/  the refiner's UNet (384 channels, 4-layer transformers, 1280 context,
            2560 size/score inputs), derived from ComfyUI's detection of the refiner layout
    clip_tokenizer/  the one copy of CLIP's vocab.json / merges.txt (pads with <|endoftext|>)

SD 2.x's tokenizer differs from SD 1.x's only by padding with id 0 ("!"). We keep the token ids
apart from the padding: the tokenizer is always the shipped one and `ClipModel.pad_id` says what
to pad with (49407 for CLIP-L, 0 for OpenCLIP). That also avoids diffusers issue #4153, where a
tokenizer whose pad token is "!" turns every literal "!" in a prompt into padding.
"""

from __future__ import annotations

import json
from functools import cache, lru_cache
from pathlib import Path
from typing import Any

CONFIG_ROOT = Path(__file__).resolve().parents[1] / "configs"
SD15_DIR = CONFIG_ROOT / "sd15"
SD21V_DIR = CONFIG_ROOT / "sd21v"
SDXL_DIR = CONFIG_ROOT / "sdxl"  # base: CLIP-L + OpenCLIP bigG, 2048 context, size conditioning
SDXL_REFINER_DIR = CONFIG_ROOT / "sdxl_refiner"  # its own UNet; VAE, bigG and schedule are SDXL's
TOKENIZER_DIR = CONFIG_ROOT / "clip_tokenizer"

CLIP_EOS_ID = 49407
OPENCLIP_PAD_ID = 0

# Stable Diffusion's training schedule ("scaled_linear"), shared by SD 1.x and 2.x.
DEFAULT_BETA_START = 0.00085
DEFAULT_BETA_END = 0.012
DEFAULT_TRAIN_STEPS = 1000


def read_json(path: Path) -> dict[str, Any]:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


@cache
def _cached_json(path: str) -> str:
    return Path(path).read_text(encoding="utf-8")


def component_config(family_dir: Path, component: str) -> dict[str, Any]:
    """A fresh dict of one shipped component config (unet, vae, text_encoder or scheduler)."""
    name = "scheduler_config.json" if component == "scheduler" else "config.json"
    return json.loads(_cached_json(str(family_dir / component / name)))


def alphas_cumprod(
    beta_start: float = DEFAULT_BETA_START,
    beta_end: float = DEFAULT_BETA_END,
    num_steps: int = DEFAULT_TRAIN_STEPS,
    schedule: str = "scaled_linear",
):
    """The training schedule's cumulative alphas, float64, as LDM/ComfyUI compute them."""
    import torch

    if schedule == "scaled_linear":
        betas = torch.linspace(beta_start**0.5, beta_end**0.5, num_steps, dtype=torch.float64) ** 2
    elif schedule == "linear":
        betas = torch.linspace(beta_start, beta_end, num_steps, dtype=torch.float64)
    else:
        raise ValueError(f"unsupported beta schedule {schedule!r} (expected scaled_linear or linear)")
    return torch.cumprod(1.0 - betas, dim=0)


def alphas_cumprod_from_scheduler_config(config: dict[str, Any]):
    if config.get("trained_betas") is not None:
        import torch

        betas = torch.tensor(config["trained_betas"], dtype=torch.float64)
        return torch.cumprod(1.0 - betas, dim=0)
    return alphas_cumprod(
        float(config.get("beta_start", DEFAULT_BETA_START)),
        float(config.get("beta_end", DEFAULT_BETA_END)),
        int(config.get("num_train_timesteps", DEFAULT_TRAIN_STEPS)),
        str(config.get("beta_schedule", "scaled_linear")),
    )


@lru_cache(maxsize=2)
def _tokenizer():
    from transformers import CLIPTokenizer

    return CLIPTokenizer.from_pretrained(str(TOKENIZER_DIR), local_files_only=True)


def clip_tokenizer():
    """The shipped CLIP BPE tokenizer (shared, read-only use: do not mutate it).

    It pads with <|endoftext|> (49407); models padded with 0 say so in `ClipModel.pad_id`.
    """
    return _tokenizer()
