"""Building diffusers/transformers modules without a throw-away random init.

Modules are constructed on the meta device (no memory, no init cost), then their parameters are
*assigned* the loaded tensors (`load_state_dict(assign=True)`), so the weights are never copied a
second time. Non-persistent buffers (CLIP's `position_ids`) are rebuilt on the target device.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from .errors import CheckpointError


def empty_unet(config: Mapping[str, Any]):
    from diffusers import UNet2DConditionModel

    with torch.device("meta"):
        return UNet2DConditionModel.from_config(dict(config))


def empty_vae(config: Mapping[str, Any]):
    from diffusers import AutoencoderKL

    with torch.device("meta"):
        return AutoencoderKL.from_config(dict(config))


def text_config(config: Mapping[str, Any]):
    from transformers import CLIPTextConfig

    return CLIPTextConfig.from_dict(dict(config))


def empty_text_encoder(config: Mapping[str, Any]):
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    cfg = text_config(config)
    cls = (
        CLIPTextModelWithProjection
        if "CLIPTextModelWithProjection" in (config.get("architectures") or ())
        else CLIPTextModel
    )
    with torch.device("meta"):
        return cls(cfg)


def check_state_dict(module: torch.nn.Module, sd: Mapping[str, Any], what: str, filename: str) -> None:
    """Raise a one-line CheckpointError unless `sd` fills exactly the module's state dict, shape for shape."""
    expected = module.state_dict()
    missing = [k for k in expected if k not in sd]
    unexpected = [k for k in sd if k not in expected]
    wrong = [k for k in expected if k in sd and tuple(sd[k].shape) != tuple(expected[k].shape)]
    if not (missing or unexpected or wrong):
        return
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing (e.g. {missing[0]})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
    if wrong:
        k = wrong[0]
        parts.append(
            f"{len(wrong)} with other shapes (e.g. {k}: file {list(sd[k].shape)} vs model {list(expected[k].shape)})"
        )
    raise CheckpointError(
        f'"{filename}": the {what} weights do not fit the expected architecture: ' + "; ".join(parts)
    )


def fill(
    module: torch.nn.Module, sd: Mapping[str, Any], *, what: str, filename: str, device: Any
) -> torch.nn.Module:
    """Assign `sd` (already in the wanted dtype and on `device`) to a meta-built module."""
    check_state_dict(module, sd, what, filename)
    module.load_state_dict(dict(sd), strict=True, assign=True)
    for mod_name, mod in module.named_modules():
        for buf_name, buf in list(mod.named_buffers(recurse=False)):
            if buf.device.type != "meta":
                continue
            if buf_name == "position_ids":
                new = torch.arange(buf.shape[-1], device=device).expand(buf.shape)
                mod.register_buffer(buf_name, new, persistent=False)
            else:  # pragma: no cover - guards a future module with another non-persistent buffer
                raise CheckpointError(
                    f'"{filename}": {what} buffer {mod_name}.{buf_name} has no value after loading'
                )
    module.eval()
    module.requires_grad_(False)
    return module
