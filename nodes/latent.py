"""Latent nodes: an empty latent to start from, and resizing latents."""

from __future__ import annotations

from nodegraph import Choice, Int, Link, Node, Output, register
from nodegraph import types as T

UPSCALE_METHODS = ["nearest-exact", "bilinear", "area", "bicubic", "bislerp"]
CROP_METHODS = ["disabled", "center"]
MAX_RESOLUTION = 16384


def multiple_of_8(values, linked, names=("width", "height")):
    out = []
    for name in names:
        value = values.get(name)
        if name not in linked and isinstance(value, int) and value % 8:
            lower, upper = value - value % 8, value - value % 8 + 8
            out.append((name, f"= {value} is not a multiple of 8 (the VAE works in 8×8 pixel cells)",
                        f"use {max(lower, 8)} or {upper}"))
    return out


@register
class EmptyLatentImage(Node):
    """A blank latent of the given size: the sampler starts from pure noise on top of it."""

    category = "latent"
    inputs = [Int("width", 512, min=16, max=MAX_RESOLUTION, step=8),
              Int("height", 512, min=16, max=MAX_RESOLUTION, step=8),
              Int("batch_size", 1, min=1, max=4096)]
    outputs = [Output("LATENT", T.LATENT)]

    @classmethod
    def check_values(cls, values, linked):
        return multiple_of_8(values, linked)

    def run(self, ctx, width, height, batch_size):
        import torch

        from nodes.values import Latent

        return (Latent(torch.zeros([batch_size, 4, height // 8, width // 8])),)


@register
class LatentUpscale(Node):
    """Resize a latent (for a second, hires pass)."""

    category = "latent"
    inputs = [Link("samples", T.LATENT), Choice("upscale_method", UPSCALE_METHODS),
              Int("width", 512, min=0, max=MAX_RESOLUTION, step=8), Int("height", 512, min=0, max=MAX_RESOLUTION, step=8),
              Choice("crop", CROP_METHODS)]
    outputs = [Output("LATENT", T.LATENT)]

    @classmethod
    def check_values(cls, values, linked):
        return multiple_of_8(values, linked)

    def run(self, ctx, samples, upscale_method, width, height, crop):
        from dataclasses import replace

        from nodes.imageops import resize_bchw

        x = samples.samples
        if width == 0 and height == 0:
            return (samples,)
        h, w = x.shape[-2:]
        if width == 0:  # 0 keeps the aspect ratio from the other side
            width = max(8, round(w * (height / 8) / h) * 8)
        if height == 0:
            height = max(8, round(h * (width / 8) / w) * 8)
        out = resize_bchw(x, width // 8, height // 8, upscale_method, crop)
        return (replace(samples, samples=out, noise_mask=None),)
