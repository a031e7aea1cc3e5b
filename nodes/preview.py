"""Cheap per-step previews: a fixed linear map from latent channels to RGB (no VAE call)."""

from __future__ import annotations

from typing import Any

# A least-squares fit of SD 1.x/2.x VAE latents (sampler space, ×0.18215) to RGB in -1..1,
# one row per latent channel. Good enough to watch a picture form; not a decode.
SD_LATENT_RGB = (
    (0.3512, 0.2297, 0.3227),
    (0.3250, 0.4974, 0.2350),
    (-0.2829, 0.1762, 0.2721),
    (-0.2120, -0.2616, -0.7177),
)
MAX_PREVIEW_SIDE = 256


def latent_to_preview(x: Any, factors=None):
    """First image of a sampler-space latent [B, C, h, w] → small PIL RGB image."""
    import torch
    from PIL import Image

    factors = torch.tensor(factors or SD_LATENT_RGB, dtype=torch.float32)
    latent = x[0].detach().float().cpu()
    if latent.shape[0] != factors.shape[0]:
        return None
    rgb = torch.einsum("chw,cr->hwr", latent, factors)
    array = ((rgb + 1.0) * 127.5).clamp(0, 255).to(torch.uint8).numpy()
    image = Image.fromarray(array)
    scale = max(1, MAX_PREVIEW_SIDE // max(image.size))
    scale = min(scale, 8)
    return image.resize((image.width * scale, image.height * scale), Image.Resampling.NEAREST)


def step_callback(ctx: Any, factors=None, preview_every: int = 1):
    """A sampler callback that reports progress (checking cancellation) and sends previews."""

    def callback(step: int, total: int, x, denoised) -> None:
        if step % preview_every == 0 or step + 1 == total:
            image = latent_to_preview(denoised if denoised is not None else x, factors)
            if image is not None:
                ctx.preview(image, step + 1)
        ctx.progress(step + 1, total)

    return callback
