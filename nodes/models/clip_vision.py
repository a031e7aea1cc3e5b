"""CLIP image encoders (CLIP_VISION) and what they make of an image (CLIP_VISION_OUTPUT), as ComfyUI's
comfy/clip_vision.py does it.

Files come in two layouts, both accepted wherever a CLIP vision tower is read:
  - transformers: `vision_model.…` and `visual_projection.weight` (models/clip_vision files such as
    CLIP-ViT-H-14-laion2B-s32B-b79K.safetensors or clip_vision_g.safetensors; a whole CLIPModel's
    `text_model.…`, `text_projection` and `logit_scale` are left aside);
  - OpenCLIP: `visual.…` (`transformer.resblocks.N.attn.in_proj_weight`, `conv1`, `proj`…), as in
    open_clip files and, under `embedder.model.visual.`, in SD 2.1 unCLIP checkpoints.
The tower is recognised as ComfyUI recognises it, by its depth: 48 layers = ViT-bigG/14, 32 =
ViT-H/14, 24 = ViT-L/14 (configs in nodes/configs/clip_vision/); the image size follows from the
position embeddings (ViT-L/14 at 336 px has 577). A file made by sdgraph may carry its own
transformers config in the metadata key `sdgraph.clip_vision_config` (the tiny test towers do).

Encoding (`encode_image`): the image is resized so its short side is the tower's input size
(bicubic, antialiased) and centre-cropped ("center"), or squashed to a square ("none"); rounded to
8-bit levels; normalised with CLIP's mean and std. Out come the last hidden state, the projected
image embedding and the penultimate layer's hidden state.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .errors import CheckpointError
from .files import TensorFile

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs" / "clip_vision"
CONFIG_KEY = "sdgraph.clip_vision_config"
# ComfyUI's test of which tower a file holds: the deepest layer present.
DEPTH_CONFIGS = ((47, "vit_g.json"), (30, "vit_h.json"), (22, "vit_l.json"))
UNCLIP_PREFIX = "embedder.model.visual."  # the image tower inside SD 2.1 unCLIP checkpoints


@dataclass
class ClipVision:
    """CLIP_VISION: a transformers `CLIPVisionModelWithProjection` and how it wants its pixels."""

    model: Any
    image_size: int = 224
    dtype: Any = None
    device: Any = None
    name: str = ""

    def cache_nbytes(self) -> int:
        return int(sum(p.numel() * p.element_size() for p in self.model.parameters()))


@dataclass
class ClipVisionOutput:
    """CLIP_VISION_OUTPUT (float32, CPU), ComfyUI's field names: `last_hidden_state` [B, 1+patches, W]
    (no final LayerNorm), `image_embeds` [B, D] (the projected class token), and
    `penultimate_hidden_states` [B, 1+patches, W] (the layer before the last)."""

    last_hidden_state: torch.Tensor
    image_embeds: torch.Tensor
    penultimate_hidden_states: torch.Tensor

    def cache_nbytes(self) -> int:
        return int(sum(t.numel() * t.element_size() for t in
                       (self.last_hidden_state, self.image_embeds, self.penultimate_hidden_states)))


# -- preprocessing ------------------------------------------------------------------------------------

def preprocess(image: torch.Tensor, size: int = 224, crop: bool = True) -> torch.Tensor:
    """IMAGE [B, H, W, C] in 0..1 → normalised pixels [B, 3, size, size] (ComfyUI's clip_preprocess)."""
    image = image[..., :3].float()
    mean = torch.tensor(CLIP_MEAN, dtype=image.dtype, device=image.device).view(3, 1, 1)
    std = torch.tensor(CLIP_STD, dtype=image.dtype, device=image.device).view(3, 1, 1)
    x = image.movedim(-1, 1)  # [B, 3, H, W]
    h, w = x.shape[2], x.shape[3]
    if (h, w) != (size, size):
        # 1. Short side to `size` keeping the aspect ("center"), or both sides to `size` ("none").
        if crop:
            scale = size / min(h, w)
            target = (round(scale * h), round(scale * w))
        else:
            target = (size, size)
        x = torch.nn.functional.interpolate(x, size=target, mode="bicubic", antialias=True)
        # 2. The centre square.
        top, left = (x.shape[2] - size) // 2, (x.shape[3] - size) // 2
        x = x[:, :, top:top + size, left:left + size]
    # 3. 8-bit levels, then CLIP's normalisation.
    x = torch.clip(255.0 * x, 0, 255).round() / 255.0
    return (x - mean) / std


# -- layouts --------------------------------------------------------------------------------------------

_OPENCLIP_TOP = {
    "class_embedding": "vision_model.embeddings.class_embedding",
    "conv1.weight": "vision_model.embeddings.patch_embedding.weight",
    "positional_embedding": "vision_model.embeddings.position_embedding.weight",
    "ln_pre.weight": "vision_model.pre_layrnorm.weight",
    "ln_pre.bias": "vision_model.pre_layrnorm.bias",
    "ln_post.weight": "vision_model.post_layernorm.weight",
    "ln_post.bias": "vision_model.post_layernorm.bias",
}
_OPENCLIP_BLOCK = re.compile(r"^transformer\.resblocks\.(\d+)\.(attn\.in_proj|.+)[._](weight|bias)$")
_OPENCLIP_BLOCK_PARTS = {"ln_1": "layer_norm1", "ln_2": "layer_norm2", "mlp.c_fc": "mlp.fc1",
                         "mlp.c_proj": "mlp.fc2", "attn.out_proj": "self_attn.out_proj"}


def openclip_visual_to_hf(sd: Mapping[str, Any]) -> dict[str, Any]:
    """An OpenCLIP image tower's tensors (names without their `visual.` prefix) → transformers names.
    The fused attention input projection is split into q, k, v; `proj` (x @ P) becomes the
    projection Linear's weight Pᵀ. Unknown names raise CheckpointError."""
    out: dict[str, Any] = {}
    for name, t in sd.items():
        if name in _OPENCLIP_TOP:
            out[_OPENCLIP_TOP[name]] = t
        elif name == "proj":
            out["visual_projection.weight"] = t.transpose(0, 1).contiguous()
        elif m := _OPENCLIP_BLOCK.match(name):
            layer, part, leaf = m[1], m[2], m[3]
            base = f"vision_model.encoder.layers.{layer}."
            if part == "attn.in_proj":
                q, k, v = t.chunk(3, dim=0)
                for letter, piece in zip("qkv", (q, k, v), strict=True):
                    out[f"{base}self_attn.{letter}_proj.{leaf}"] = piece.contiguous()
            elif part in _OPENCLIP_BLOCK_PARTS:
                out[f"{base}{_OPENCLIP_BLOCK_PARTS[part]}.{leaf}"] = t
            else:
                raise CheckpointError(f"unknown OpenCLIP image-tower tensor {name!r}")
        else:
            raise CheckpointError(f"unknown OpenCLIP image-tower tensor {name!r}")
    return out


def split_vision_tensors(names: list[str], prefix: str = "") -> tuple[str, list[str]]:
    """Which layout the image tower under `prefix` has ("hf" or "openclip") and its tensor names.
    Raises CheckpointError when there is none."""
    hf = [n for n in names if n.startswith(prefix + "vision_model.") or n == prefix + "visual_projection.weight"]
    if any(n.startswith(prefix + "vision_model.encoder.layers.") for n in hf):
        return "hf", hf
    visual = prefix if prefix.endswith("visual.") else prefix + "visual."
    oc = [n for n in names if n.startswith(visual)]
    if any(n.startswith(visual + "transformer.resblocks.") for n in oc):
        return "openclip", oc
    raise CheckpointError("no CLIP image encoder in it (neither vision_model.* nor visual.* tensors)")


# -- configs --------------------------------------------------------------------------------------------

def vision_config_for(sd_shapes: Mapping[str, Any], metadata: Mapping[str, str] | None, filename: str) -> dict[str, Any]:
    """The transformers CLIPVisionConfig dict for a tower given by its (transformers-named) shapes."""
    if metadata and CONFIG_KEY in metadata:
        try:
            return dict(json.loads(metadata[CONFIG_KEY]))
        except (json.JSONDecodeError, TypeError, ValueError):
            raise CheckpointError(f'"{filename}": its {CONFIG_KEY} metadata is not a JSON object') from None
    if "vision_model.embeddings.class_embedding" not in sd_shapes:
        raise CheckpointError(f'"{filename}": an image encoder without a class token (SigLIP or similar); '
                              "only CLIP ViT-L/14, ViT-H/14 and ViT-bigG/14 image encoders are supported")
    for depth, file in DEPTH_CONFIGS:
        if f"vision_model.encoder.layers.{depth}.layer_norm1.weight" in sd_shapes:
            config = json.loads((CONFIG_DIR / file).read_text(encoding="utf-8"))
            config.pop("_comment", None)
            positions = sd_shapes.get("vision_model.embeddings.position_embedding.weight")
            if positions is not None:  # ViT-L/14 also comes at 336 px (577 positions)
                side = round((int(positions[0]) - 1) ** 0.5)
                config["image_size"] = side * int(config["patch_size"])
            return config
    layers = sum(1 for n in sd_shapes if n.startswith("vision_model.encoder.layers.") and n.endswith(".layer_norm1.weight"))
    raise CheckpointError(f'"{filename}": a CLIP image encoder with {layers} layers; only ViT-L/14 (24), '
                          "ViT-H/14 (32) and ViT-bigG/14 (48) are known")


def empty_vision_model(config: Mapping[str, Any]):
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    cfg = CLIPVisionConfig.from_dict({k: v for k, v in config.items() if not k.startswith("_")})
    with torch.device("meta"):
        return CLIPVisionModelWithProjection(cfg)


# -- loading --------------------------------------------------------------------------------------------

def vision_from_state_dict(sd: Mapping[str, Any], layout: str, prefix: str, metadata: Mapping[str, str] | None,
                           filename: str, *, device: Any, dtype: Any) -> ClipVision:
    """Build the CLIP_VISION from a file's image-tower tensors (already in `dtype` on `device`)."""
    from .build import fill

    if layout == "openclip":
        visual = prefix if prefix.endswith("visual.") else prefix + "visual."
        tensors = openclip_visual_to_hf({k[len(visual):]: v for k, v in sd.items() if k.startswith(visual)})
    else:
        tensors = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
    tensors.pop("vision_model.embeddings.position_ids", None)
    config = vision_config_for({k: tuple(v.shape) for k, v in tensors.items()}, metadata, filename)
    model = fill(empty_vision_model(config), tensors, what="CLIP vision", filename=filename, device=device)
    return ClipVision(model=model, image_size=int(config.get("image_size", 224)), dtype=dtype,
                      device=torch.device(device), name=Path(filename).stem)


def load_clip_vision(path: str | Path, *, device: Any = "cpu", dtype: Any = torch.float32) -> ClipVision:
    """CLIPVisionLoader: a CLIP image encoder file, transformers or OpenCLIP layout."""
    from .detect import describe_keys, sniff_other_kind

    with TensorFile(path) as f:
        names = list(f.shapes)
        try:
            layout, wanted = split_vision_tensors(names)
        except CheckpointError:
            other = sniff_other_kind(names)
            if any(n.startswith(UNCLIP_PREFIX) for n in names):
                other = "an unCLIP checkpoint (load it with unCLIPCheckpointLoader; its CLIP_VISION output is the encoder)"
            elif any(n.startswith("model.diffusion_model.") for n in names):
                other = other or "a Stable Diffusion checkpoint"
            why = f"it looks like {other}" if other else f"found {describe_keys(names)}"
            raise CheckpointError(f'"{f.name}" is not a CLIP vision model: {why}') from None
        sd = f.read(wanted, dtype=dtype, device=device)
        metadata = dict(f.metadata)
    return vision_from_state_dict(sd, layout, "", metadata, Path(path).name, device=device, dtype=dtype)


# -- encoding -------------------------------------------------------------------------------------------

def encode_image(clip_vision: ClipVision, image: torch.Tensor, crop: bool = True) -> ClipVisionOutput:
    """CLIPVisionEncode: the tower's outputs for every image of the batch."""
    model = clip_vision.model
    device = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    pixels = preprocess(image.to(device), clip_vision.image_size, crop)  # [B, 3, S, S] float32
    with torch.inference_mode():
        out = model(pixel_values=pixels.to(dtype), output_hidden_states=True)
    return ClipVisionOutput(
        last_hidden_state=out.last_hidden_state.float().cpu(),
        image_embeds=out.image_embeds.float().cpu(),
        penultimate_hidden_states=out.hidden_states[-2].float().cpu(),
    )
