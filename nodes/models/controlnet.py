"""ControlNet files: SD 1.x/2.x and SDXL ControlNets in the original (`control_model.…`, or bare
`input_blocks…` with `input_hint_block`) and diffusers layouts, loaded into diffusers' ControlNetModel
with the configuration of the UNet family they were trained beside.

"Diff" ControlNets (DiffControlNetLoader) store their trunk as a difference to the UNet they were made
from: the trunk weights are the model's UNet weights plus the file's.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from . import configs
from .build import fill
from .detect import describe_keys
from .errors import CheckpointError
from .files import TensorFile

LDM_PREFIX = "control_model."
_CONTEXT_KEYS = ("input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight",
                 "input_blocks.4.1.transformer_blocks.0.attn2.to_k.weight",
                 "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight",
                 "down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.weight")
_FAMILY_DIR = {768: "sd15", 1024: "sd21v", 2048: "sdxl"}


@dataclass
class ControlNet:
    """CONTROL_NET: a diffusers ControlNetModel and the dtype/device it runs in."""

    model: Any
    dtype: Any = None
    device: Any = None
    name: str = ""

    def cache_nbytes(self) -> int:
        return int(sum(p.numel() * p.element_size() for p in self.model.parameters()))


def controlnet_config(unet_config: dict[str, Any]) -> dict[str, Any]:
    """A ControlNetModel configuration matching a UNet2DConditionModel configuration."""
    keys = ("in_channels", "down_block_types", "block_out_channels", "layers_per_block", "cross_attention_dim",
            "attention_head_dim", "use_linear_projection", "class_embed_type", "addition_embed_type",
            "addition_time_embed_dim", "projection_class_embeddings_input_dim", "transformer_layers_per_block",
            "upcast_attention", "num_class_embeds", "flip_sin_to_cos", "freq_shift", "norm_num_groups",
            "norm_eps", "act_fn", "downsample_padding", "mid_block_scale_factor", "resnet_time_scale_shift",
            "only_cross_attention", "num_attention_heads")
    out = {k: unet_config[k] for k in keys if k in unet_config}
    out["conditioning_channels"] = 3
    return out


def read_state_dict(path: Path, dtype: Any, device: Any) -> dict[str, torch.Tensor]:
    with TensorFile(path) as f:
        sd = f.read(list(f.shapes), dtype=dtype, device=device)
    if any(k.startswith(LDM_PREFIX) for k in sd):
        sd = {k[len(LDM_PREFIX):]: v for k, v in sd.items() if k.startswith(LDM_PREFIX)}
    return sd


def family_config(sd: dict[str, torch.Tensor], filename: str) -> dict[str, Any]:
    key = next((k for k in _CONTEXT_KEYS if k in sd), None)
    if key is None or not any("hint" in k or "controlnet_cond_embedding" in k for k in sd):
        raise CheckpointError(f'"{filename}" is not a ControlNet ({describe_keys(list(sd))})')
    context = int(sd[key].shape[1])
    if context not in _FAMILY_DIR:
        raise CheckpointError(f'"{filename}": a ControlNet with {context}-wide cross-attention is not for SD 1.x/2.x/SDXL')
    return configs.component_config(configs.CONFIG_ROOT / _FAMILY_DIR[context], "unet")


def build(sd: dict[str, torch.Tensor], filename: str, device: Any) -> Any:
    """ControlNetModel from a state dict in either layout (diffusers' converter maps the original)."""
    from diffusers import ControlNetModel
    from diffusers.loaders.single_file_utils import convert_controlnet_checkpoint

    config = controlnet_config(family_config(sd, filename))
    if "time_embed.0.weight" in sd:
        sd = convert_controlnet_checkpoint(sd, config)
    with torch.device("meta"):
        model = ControlNetModel.from_config(config)
    return fill(model, sd, what="ControlNet", filename=filename, device=device)


def load_controlnet(path: str | Path, *, device: Any = "cpu", dtype: Any = torch.float32) -> ControlNet:
    path = Path(path)
    if path.is_dir():  # a diffusers ControlNet folder (config.json beside its weights)
        from diffusers import ControlNetModel

        try:
            model = ControlNetModel.from_pretrained(str(path), local_files_only=True, torch_dtype=dtype)
        except Exception as e:  # noqa: BLE001 - diffusers raises several types
            raise CheckpointError(f'"{path.name}": not a diffusers ControlNet folder: {str(e).splitlines()[0][:160]}') from None
        return ControlNet(model.to(device).eval().requires_grad_(False), dtype, torch.device(device), path.name)
    return ControlNet(build(read_state_dict(path, dtype, device), path.name, device), dtype, torch.device(device),
                      path.stem)


def load_diff_controlnet(path: str | Path, unet: Any, *, device: Any = "cpu", dtype: Any = torch.float32) -> ControlNet:
    """A difference ControlNet: its trunk is added to the UNet's own weights of the same names."""
    path = Path(path)
    sd = read_state_dict(path, dtype, device)
    config = controlnet_config(family_config(sd, path.name))
    from diffusers.loaders.single_file_utils import convert_controlnet_checkpoint

    if "time_embed.0.weight" in sd:
        sd = convert_controlnet_checkpoint(sd, config)
    base = unet.state_dict()
    merged = {k: (v + base[k].to(v.device, v.dtype) if k in base and base[k].shape == v.shape else v) for k, v in sd.items()}
    return ControlNet(build(merged, path.name, device), dtype, torch.device(device), path.stem)


def residuals(net: ControlNet, x: torch.Tensor, timestep: torch.Tensor, context: torch.Tensor, hint: torch.Tensor,
              strength: float, added: dict[str, torch.Tensor] | None = None):
    """The ControlNet's additions for one UNet call: (down residuals, mid residual), × strength.

    x [B, C, h, w] is the UNet input (already scaled), hint [B or 1, 3, H, W] in 0..1 at 8× the latent
    size; they are resized to that size here as ComfyUI does (nearest-exact, centre crop)."""
    from nodes.imaging.ops import resize_bchw

    h, w = x.shape[-2] * 8, x.shape[-1] * 8
    if hint.shape[-2:] != (h, w):
        hint = resize_bchw(hint.float(), w, h, "nearest-exact", "center")
    if hint.shape[0] != x.shape[0]:
        hint = hint.repeat((x.shape[0] + hint.shape[0] - 1) // hint.shape[0], 1, 1, 1)[: x.shape[0]]
    dtype = net.dtype or x.dtype
    out = net.model(x.to(dtype), timestep, encoder_hidden_states=context.to(dtype),
                    controlnet_cond=hint.to(x.device, dtype), conditioning_scale=float(strength),
                    added_cond_kwargs=added, return_dict=False)
    down, mid = out
    return list(down), mid


@dataclass(frozen=True)
class ControlHint:
    """What ControlNetApply puts on a conditioning entry (extras["control"]): the net, its hint image
    [B, 3, H, W] in 0..1, strength, the part of sampling it acts in (ComfyUI's percents: 0 is the
    start), the control already on the entry (chained ControlNets add up), and whether the
    unconditional side gets it too (the old ControlNetApply)."""

    net: ControlNet
    hint: torch.Tensor
    strength: float = 1.0
    start_percent: float = 0.0
    end_percent: float = 1.0
    previous: ControlHint | None = None
    apply_to_uncond: bool = False

    def chain(self) -> list[ControlHint]:
        out, node = [], self
        while node is not None:
            out.append(node)
            node = node.previous
        return out
