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


def fit_latent_rgb(vae: Any, latent_format: Any) -> tuple[tuple[float, float, float], ...] | None:
    """Least-squares map from sampler-space latent cells to RGB, fitted on flat colour patches
    encoded by this VAE in one small batch (milliseconds for the bundled model, well under a
    second for SD's VAE on a CPU)."""
    import torch

    colours = torch.tensor([[1, 1, 1], [0, 0, 0], [0.5, 0.5, 0.5], [1, 0, 0], [0, 1, 0], [0, 0, 1],
                            [1, 1, 0], [0, 1, 1], [1, 0, 1], [1, 0.5, 0], [0.5, 0, 1], [0.2, 0.6, 0.3]])
    side = 4 * latent_format.downscale
    pixels = colours[:, :, None, None].expand(-1, 3, side, side) * 2 - 1
    module = vae.vae
    param = next(module.parameters())
    try:
        with torch.inference_mode():
            raw = module.encode(pixels.to(param.device, param.dtype)).latent_dist.mode().float().cpu()
    except Exception:  # an unusual VAE: previews fall back to SD's table
        return None
    latents = latent_format.to_sampler(raw)
    x = latents.movedim(1, -1).reshape(-1, latents.shape[1])
    y = (colours * 2 - 1).repeat_interleave(latents.shape[2] * latents.shape[3], dim=0)
    x = torch.cat([x, torch.ones(len(x), 1)], dim=1).double()
    solution = torch.linalg.lstsq(x, y.double()).solution.float()
    return tuple(tuple(round(float(v), 5) for v in row) for row in solution)


def latent_to_preview(x: Any, factors=None):
    """First image of a sampler-space latent [B, C, h, w] → small PIL RGB image."""
    import torch
    from PIL import Image

    table = torch.tensor(factors or (*SD_LATENT_RGB, (0.0, 0.0, 0.0)), dtype=torch.float32)
    latent = x[0].detach().float().cpu()
    if latent.shape[0] != table.shape[0] - 1:
        return None
    rgb = torch.einsum("chw,cr->hwr", latent, table[:-1]) + table[-1]
    array = ((rgb + 1.0) * 127.5).clamp(0, 255).to(torch.uint8).numpy()
    image = Image.fromarray(array)
    scale = max(1, MAX_PREVIEW_SIDE // max(image.size))
    scale = min(scale, 8)
    # smooth, not blocky: one latent cell is 8×8 pixels, and a grid of flat squares reads as noise
    return image.resize((image.width * scale, image.height * scale), Image.Resampling.BICUBIC)


def step_callback(ctx: Any, factors=None, preview_every: int = 1):
    """A sampler callback that reports progress (checking cancellation) and sends previews."""

    def callback(step: int, total: int, x, denoised) -> None:
        if step % preview_every == 0 or step + 1 == total:
            image = latent_to_preview(denoised if denoised is not None else x, factors)
            if image is not None:
                ctx.preview(image, step + 1)
        ctx.progress(step + 1, total)

    return callback
