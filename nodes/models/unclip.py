"""SD 2.1 unCLIP: checkpoints whose UNet also takes a CLIP image embedding, and the vector it takes.

An unCLIP checkpoint (Stability's sd21-unclip-h/-l, and fine-tunes of them) is an SD 2.1 768-v
checkpoint plus:
  - `model.diffusion_model.label_emb.0.{0,2}`: the UNet's "adm" input, a two-layer MLP added to the
    time embedding (diffusers' `class_embed_type="projection"`, fed `class_labels`); it takes
    2048 numbers for unclip-h (ViT-H/14 image embedding 1024 + noise-level embedding 1024), 1536
    for unclip-l (768 + 768);
  - `embedder.model.visual.…`: the CLIP image encoder, OpenCLIP layout (CLIP_VISION);
  - `noise_augmentor.…`: schedule buffers, recomputed here, as ComfyUI does.

The adm vector (ComfyUI's unclip_adm with CLIPEmbeddingNoiseAugmentation): for each image embedding
e of each unCLIPConditioning on an entry, with level = round(999 · noise_augmentation),

    z = √ᾱ[level] · e + √(1 − ᾱ[level]) · n,   n ~ N(0, 1) seeded with (sampler seed − 10)
    adm = [z, timestep_embedding(level)] · strength

(ᾱ: the squared-cosine schedule of 1000 steps; the embedding: cos then sin, as the UNet's time
embedding). Several are summed, and the sum's first half noised once more at level
round(999 · 0.05) with the next draw of the same generator, its second half replaced by that
level's embedding. An entry without unCLIP conditioning gets zeros.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch

from nodegraph import UserError

from ..core.values import ClipModel, DiffusionModel, VaeModel
from .clip_vision import UNCLIP_PREFIX, ClipVision, vision_from_state_dict
from .convert import OPENCLIP_PREFIX, UNET_PREFIX
from .detect import CheckpointInfo, describe_keys, detect_checkpoint, ignored_on_purpose
from .errors import CheckpointError
from .files import TensorFile, _one_line

MAX_NOISE_LEVEL = 1000
NOISE_AUGMENT_MERGE = 0.05  # ComfyUI's unclip_noise_augment_merge default
SEED_OFFSET = -10  # ComfyUI seeds the augmentation noise with the sampler's seed - 10
LABEL_EMB = UNET_PREFIX + "label_emb.0.0.weight"
NOISE_AUGMENTOR_PREFIX = "noise_augmentor."
log = logging.getLogger(__name__)


# -- the adm vector -------------------------------------------------------------------------------------

@lru_cache(maxsize=1)
def _schedule() -> tuple[torch.Tensor, torch.Tensor]:
    """(√ᾱ, √(1 − ᾱ)) of the squared-cosine schedule ("squaredcos_cap_v2", 1000 steps, β ≤ 0.999),
    computed in float64 and stored as float32 (as the augmentor's buffers are)."""
    def alpha_bar(t: float) -> float:
        return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2

    n = MAX_NOISE_LEVEL
    betas = torch.tensor([min(1 - alpha_bar((i + 1) / n) / alpha_bar(i / n), 0.999) for i in range(n)],
                         dtype=torch.float64)
    ac = torch.cumprod(1.0 - betas, dim=0)
    return ac.sqrt().float(), (1.0 - ac).sqrt().float()


def timestep_embedding(level: int, dim: int) -> torch.Tensor:
    """The sinusoidal embedding of one noise level: [1, dim], cosines then sines (max period 10000)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000) * torch.arange(half, dtype=torch.float32) / half)
    args = torch.tensor([float(level)])[:, None] * freqs[None]  # [1, half]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


def _augment(x: torch.Tensor, level: int, generator: torch.Generator) -> torch.Tensor:
    """x [1, D] noised to `level` with the generator's next draw."""
    sqrt_ac, sqrt_1m = _schedule()
    noise = torch.randn(x.shape, dtype=x.dtype, generator=generator)
    return sqrt_ac[level] * x + sqrt_1m[level] * noise


def noise_level(augmentation: float) -> int:
    return round((MAX_NOISE_LEVEL - 1) * augmentation)


def unclip_adm(unclip_conditioning: Sequence[Mapping[str, Any]], dim: int, seed: int,
               merge: float = NOISE_AUGMENT_MERGE) -> torch.Tensor:
    """The UNet's adm input [1, 2·dim] (float32, CPU) for one entry's unCLIP conditionings, each a
    mapping with `clip_vision_output`, `strength` and `noise_augmentation` (ComfyUI's keys)."""
    generator = torch.Generator(device="cpu")
    parts = []
    # 1. Each image embedding noised to its level (the generator reseeded for each), joined to the
    #    level's embedding, weighted.
    for u in unclip_conditioning:
        embeds = u["clip_vision_output"].image_embeds.float().cpu()  # [B, D]
        if embeds.shape[-1] != dim:
            raise UserError(f"this model takes {dim}-number image embeddings but an unCLIPConditioning's CLIP vision "
                            f"output has {embeds.shape[-1]}: encode the image with the matching CLIP_VISION (the "
                            "unCLIP checkpoint's own; clip_vision_g for SDXL)")
        level = noise_level(float(u["noise_augmentation"]))
        for e in embeds:
            generator.manual_seed(seed)
            z = _augment(e[None], level, generator)  # [1, D]
            parts.append(torch.cat((z, timestep_embedding(level, dim)), dim=1) * float(u["strength"]))
    if len(parts) == 1:
        return parts[0]
    # 2. Several: summed, then the image half noised once more at the merge level.
    total = torch.stack(parts).sum(0)  # [1, 2D]
    level = noise_level(merge)
    return torch.cat((_augment(total[:, :dim], level, generator), timestep_embedding(level, dim)), dim=1)


# -- loading --------------------------------------------------------------------------------------------

def _unclip_info(shapes: Mapping[str, Any], metadata: Mapping[str, str], get, filename: str) -> CheckpointInfo:
    """What to build: the file's own configs (sdgraph metadata), else SD 2.1 768-v with the adm input."""
    if metadata and "sdgraph.config" in metadata:
        return detect_checkpoint(shapes, metadata, get, filename)
    if not any(n.startswith(OPENCLIP_PREFIX) for n in shapes):
        raise CheckpointError(f'"{filename}": an unCLIP UNet without the SD 2.x OpenCLIP text encoder '
                              f"(cond_stage_model.model.*); found {describe_keys(list(shapes))}")
    return CheckpointInfo("sd2", "v_prediction", "SD 2.1 unCLIP", context_dim=1024)


def load_unclip_checkpoint(path: str | Path, *, device: Any = "cpu", dtype: Any = torch.float32
                           ) -> tuple[DiffusionModel, ClipModel, VaeModel, ClipVision]:
    """unCLIPCheckpointLoader: (MODEL, CLIP, VAE, CLIP_VISION) from one unCLIP checkpoint file."""
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f'"{path.name}" is a folder; unCLIP checkpoints are single .safetensors/.ckpt files')
    with TensorFile(path) as f:
        wanted = [k for k in f.shapes if not k.startswith(("embedder.", NOISE_AUGMENTOR_PREFIX))
                  and not ignored_on_purpose(k) or k.startswith(UNCLIP_PREFIX)]
        check_unclip_names(list(f.shapes), f.name)
        info = _unclip_info(f.shapes, f.metadata, f.get, f.name)
        sd = f.read(wanted, dtype=dtype, device=device)
        metadata = dict(f.metadata)
    return unclip_from_state_dict(sd, info, metadata, path.name, device=device, dtype=dtype)


def check_unclip_names(names: list[str], filename: str) -> None:
    """Refuse, by name, a file that is not an unCLIP checkpoint."""
    if not any(n.startswith(UNCLIP_PREFIX + "transformer.resblocks.") for n in names):
        raise CheckpointError(f'"{filename}" is not an unCLIP checkpoint: it has no CLIP image encoder '
                              f"({UNCLIP_PREFIX}*); load a plain checkpoint with CheckpointLoaderSimple")
    if LABEL_EMB not in names:
        raise CheckpointError(f'"{filename}" has a CLIP image encoder but its UNet takes no image embedding '
                              f"({LABEL_EMB} missing): not an unCLIP checkpoint")


def unclip_from_state_dict(sd: Mapping[str, Any], info: CheckpointInfo, metadata: Mapping[str, str], filename: str,
                           *, device: Any, dtype: Any) -> tuple[DiffusionModel, ClipModel, VaeModel, ClipVision]:
    """Build the four parts from an unCLIP checkpoint's tensors (works on meta tensors too)."""
    from .loader import _package, build_modules, configs_for, convert_state_dict

    shapes = {k: tuple(v.shape) for k, v in sd.items()}
    cfg = configs_for(info, shapes)
    if info.family != "sdgraph":
        cfg.unet.update(class_embed_type="projection", projection_class_embeddings_input_dim=int(shapes[LABEL_EMB][1]))
    # 1. The SD part: split, renamed (label_emb → class_embedding), built.
    rest = {k: v for k, v in sd.items() if not k.startswith(UNCLIP_PREFIX)}
    try:
        conv = convert_state_dict(rest, info, cfg)
    except (KeyError, IndexError, RuntimeError) as e:
        raise CheckpointError(f'"{filename}" (unCLIP): tensor names do not convert: {_one_line(e)}') from None
    if conv.unused:
        log.warning("%s: %d tensors not used (e.g. %s)", filename, len(conv.unused), conv.unused[0])
    unet, vae, encoders = build_modules(conv, cfg, filename, device)
    model, clip, vae_model = _package(unet, vae, encoders, cfg, Path(filename).stem, device, dtype)
    # 2. The image encoder (OpenCLIP layout under embedder.model.visual.).
    vision_sd = {k: v for k, v in sd.items() if k.startswith(UNCLIP_PREFIX)}
    vision = vision_from_state_dict(vision_sd, "openclip", "embedder.model.", metadata, filename, device=device,
                                    dtype=dtype)
    embed_dim = int(vision.model.config.projection_dim)
    if 2 * embed_dim != int(unet.config.projection_class_embeddings_input_dim):
        raise CheckpointError(f'"{filename}": its UNet takes {unet.config.projection_class_embeddings_input_dim} '
                              f"adm numbers but its image encoder gives {embed_dim}-number embeddings")
    return model, clip, vae_model, vision


def is_unclip_unet(unet: Any) -> bool:
    """Does this UNet take an unCLIP adm vector (a "projection" class embedding)?"""
    cfg = getattr(unet, "config", None)
    return getattr(cfg, "class_embed_type", None) == "projection" and getattr(unet, "class_embedding", None) is not None
