"""VAE decode/encode between LATENT (raw VAE space) and IMAGE ([B, H, W, 3] in 0..1)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from nodegraph import UserError

from ..core.values import VaeModel


def _device_dtype(vae: VaeModel):
    param = next(vae.vae.parameters())
    return vae.device or param.device, vae.dtype or param.dtype


def decode(vae: VaeModel, samples: torch.Tensor, check: Callable[[], None] | None = None) -> torch.Tensor:
    """One image at a time, so a large batch does not need the memory of all of them at once."""
    device, dtype = _device_dtype(vae)
    images = []
    with torch.inference_mode():
        for latent in samples:
            if check is not None:
                check()
            out = vae.vae.decode(latent[None].to(device, dtype)).sample.float()
            images.append(((out + 1.0) / 2.0).clamp(0.0, 1.0).movedim(1, -1).cpu())
    return torch.cat(images)


def crop_to_multiple_of_8(pixels: torch.Tensor) -> torch.Tensor:
    """Centre-crop [B, H, W, C] so both sides are multiples of 8 (what the VAE can encode)."""
    h, w = pixels.shape[1], pixels.shape[2]
    nh, nw = h // 8 * 8, w // 8 * 8
    if (nh, nw) == (h, w):
        return pixels
    top, left = (h % 8) // 2, (w % 8) // 2
    return pixels[:, top:top + nh, left:left + nw, :]


def encode(vae: VaeModel, pixels: torch.Tensor, check: Callable[[], None] | None = None) -> torch.Tensor:
    """Pixels → raw latents, using the mean of the encoder's distribution (deterministic)."""
    if pixels.shape[1] < 8 or pixels.shape[2] < 8:
        raise UserError(f"the image is {pixels.shape[2]}×{pixels.shape[1]} pixels; the VAE needs at least 8×8")
    device, dtype = _device_dtype(vae)
    pixels = crop_to_multiple_of_8(pixels[..., :3])
    latents = []
    with torch.inference_mode():
        for image in pixels:
            if check is not None:
                check()
            x = (image[None].movedim(-1, 1) * 2.0 - 1.0).to(device, dtype)
            latents.append(vae.vae.encode(x).latent_dist.mode().float().cpu())
    return torch.cat(latents)
