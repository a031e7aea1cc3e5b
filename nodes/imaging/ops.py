"""Tensor image helpers shared by the image and latent nodes: resizing, PIL conversion."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def center_crop_to_aspect(x: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """Crop [B, C, H, W] around the centre to the aspect ratio width:height."""
    h, w = x.shape[-2:]
    target, current = width / height, w / h
    if current > target:  # too wide
        new_w = round(h * target)
        left = (w - new_w) // 2
        return x[..., :, left:left + new_w]
    if current < target:  # too tall
        new_h = round(w / target)
        top = (h - new_h) // 2
        return x[..., top:top + new_h, :]
    return x


def _bislerp(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Resize by interpolating each cell's channel vector on the sphere: directions are blended
    bilinearly and renormalised, lengths linearly, so latents keep their norm statistics."""
    norm = x.norm(dim=1, keepdim=True).clamp_min(1e-8)
    direction = F.interpolate(x / norm, size=(height, width), mode="bilinear", align_corners=False)
    direction = direction / direction.norm(dim=1, keepdim=True).clamp_min(1e-8)
    length = F.interpolate(norm, size=(height, width), mode="bilinear", align_corners=False)
    return direction * length


def resize_bchw(x: torch.Tensor, width: int, height: int, method: str, crop: str = "disabled") -> torch.Tensor:
    if crop == "center":
        x = center_crop_to_aspect(x, width, height)
    if method == "bislerp":
        return _bislerp(x.float(), height, width).to(x.dtype)
    mode = {"nearest-exact": "nearest-exact", "bilinear": "bilinear", "area": "area", "bicubic": "bicubic",
            "lanczos": "bicubic"}[method]
    kwargs = {"align_corners": False} if mode in ("bilinear", "bicubic") else {}
    return F.interpolate(x, size=(height, width), mode=mode, **kwargs)


def image_to_pil(image: torch.Tensor):
    """One IMAGE [H, W, 3] in 0..1 to a PIL image, truncating to uint8 as ComfyUI does."""
    import numpy as np
    from PIL import Image

    array = np.clip(255.0 * image.detach().cpu().float().numpy(), 0, 255).astype(np.uint8)
    return Image.fromarray(array)


def pil_to_image(pil) -> torch.Tensor:
    """A PIL RGB image to IMAGE [1, H, W, 3] float in 0..1."""
    import numpy as np

    array = np.asarray(pil.convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(array)[None]
