"""Latent nodes: an empty latent to start from, resizing, and the VAE between pixels and latents."""

from __future__ import annotations

from nodegraph import Choice, Int, Link, Node, Output, register
from nodegraph import types as T

UPSCALE_METHODS = ["nearest-exact", "bilinear", "area", "bicubic", "bislerp"]
CROP_METHODS = ["disabled", "center"]
MAX_RESOLUTION = 16384
CELL = 8  # the VAE works in 8×8 pixel cells: latent sizes are pixel sizes / 8

LATENT_OUT = Output("LATENT", T.LATENT, "latent image(s) in the VAE's space")


@register
class EmptyLatentImage(Node):
    """A blank latent of the given size: the sampler starts from pure noise on top of it."""

    category = "latent"
    inputs = [Int("width", 512, min=16, max=MAX_RESOLUTION, multiple_of=CELL, tooltip="image width in pixels"),
              Int("height", 512, min=16, max=MAX_RESOLUTION, multiple_of=CELL, tooltip="image height in pixels"),
              Int("batch_size", 1, min=1, max=4096, tooltip="how many images to make at once")]
    outputs = [LATENT_OUT]

    def run(self, ctx, width, height, batch_size):
        import torch

        from nodes.core.values import Latent

        return (Latent(torch.zeros([batch_size, 4, height // CELL, width // CELL])),)


@register
class LatentUpscale(Node):
    """Resize a latent (for a second, hires pass)."""

    category = "latent"
    inputs = [Link("samples", T.LATENT, tooltip="the latent to resize"),
              Choice("upscale_method", UPSCALE_METHODS, tooltip="how new cells are interpolated"),
              Int("width", 512, min=0, max=MAX_RESOLUTION, multiple_of=CELL,
                  tooltip="new width in pixels; 0 keeps the aspect ratio from the height"),
              Int("height", 512, min=0, max=MAX_RESOLUTION, multiple_of=CELL,
                  tooltip="new height in pixels; 0 keeps the aspect ratio from the width"),
              Choice("crop", CROP_METHODS, tooltip="center: crop to the new aspect ratio instead of stretching")]
    outputs = [LATENT_OUT]

    def run(self, ctx, samples, upscale_method, width, height, crop):
        from dataclasses import replace

        from nodes.imaging.ops import resize_bchw

        x = samples.samples
        if width == 0 and height == 0:
            return (samples,)
        h, w = x.shape[-2:]
        if width == 0:  # 0 keeps the aspect ratio from the other side
            width = max(CELL, round(w * (height / CELL) / h) * CELL)
        if height == 0:
            height = max(CELL, round(h * (width / CELL) / w) * CELL)
        out = resize_bchw(x, width // CELL, height // CELL, upscale_method, crop)
        return (replace(samples, samples=out, noise_mask=None),)


@register
class VAEDecode(Node):
    """Turn latents back into pixels with the VAE's decoder."""

    category = "latent"
    inputs = [Link("samples", T.LATENT, tooltip="the latent to decode"),
              Link("vae", T.VAE, tooltip="the autoencoder whose decoder turns latents into pixels")]
    outputs = [Output("IMAGE", T.IMAGE, "the decoded image(s)")]

    def run(self, ctx, samples, vae):
        from nodes.imaging.vae import decode

        return (decode(vae, samples.samples, check=ctx.check_cancelled),)


@register
class VAEEncode(Node):
    """Turn pixels into latents with the VAE's encoder (the start of image-to-image)."""

    category = "latent"
    inputs = [Link("pixels", T.IMAGE, tooltip="the image(s) to encode; sides are cropped to multiples of 8"),
              Link("vae", T.VAE, tooltip="the autoencoder whose encoder turns pixels into latents")]
    outputs = [LATENT_OUT]

    def run(self, ctx, pixels, vae):
        from nodes.core.values import Latent
        from nodes.imaging.vae import encode

        return (Latent(encode(vae, pixels, check=ctx.check_cancelled)),)
