"""Latent nodes: an empty latent to start from, resizing, compositing, batches, arithmetic, `.latent`
files, inpainting masks, and the VAE between pixels and latents (whole or in tiles).

Names, inputs and rules are ComfyUI's. Offsets and sizes are given in pixels and become latent
cells of 8 pixels (`x // 8`); like ComfyUI's dict copies, a result keeps its input's noise mask and
batch indices unless the node says otherwise.
"""

from __future__ import annotations

from nodegraph import (
    Bool,
    Choice,
    FileChoice,
    Float,
    Input,
    Int,
    Link,
    Node,
    NodeInputError,
    NodeOutput,
    Output,
    String,
    register,
)
from nodegraph import types as T

UPSCALE_METHODS = ["nearest-exact", "bilinear", "area", "bicubic", "bislerp"]
CROP_METHODS = ["disabled", "center"]
MAX_RESOLUTION = 16384
CELL = 8  # the VAE works in 8×8 pixel cells: latent sizes are pixel sizes / 8

LATENT_OUT = Output("LATENT", T.LATENT, "latent image(s) in the VAE's space")
SAMPLES = "the latent(s)"


def _cells(name: str, default: int, tooltip: str, low: int = 0) -> Input:
    """A pixel offset or size that must be a whole number of latent cells."""
    return Int(name, default, min=low, max=MAX_RESOLUTION, multiple_of=CELL, tooltip=tooltip)


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
                  tooltip="new width in pixels (at least 64); 0 keeps the aspect ratio from the height"),
              Int("height", 512, min=0, max=MAX_RESOLUTION, multiple_of=CELL,
                  tooltip="new height in pixels (at least 64); 0 keeps the aspect ratio from the width"),
              Choice("crop", CROP_METHODS, tooltip="center: crop to the new aspect ratio instead of stretching")]
    outputs = [LATENT_OUT]

    def run(self, ctx, samples, upscale_method, width, height, crop):
        from nodes.imaging.latents import with_samples
        from nodes.imaging.ops import resize_bchw

        if width == 0 and height == 0:
            return (samples,)
        h, w = samples.samples.shape[-2:]
        if width == 0:  # 0 keeps the aspect ratio from the other side; ComfyUI's minimum is 64 px
            height = max(64, height)
            width = max(64, round(w * height / h))
        elif height == 0:
            width = max(64, width)
            height = max(64, round(h * width / w))
        else:
            width, height = max(64, width), max(64, height)
        return (with_samples(samples, resize_bchw(samples.samples, width // CELL, height // CELL, upscale_method,
                                                  crop)),)


@register
class LatentUpscaleBy(Node):
    """Resize a latent by a factor (the usual hires-fix step)."""

    category = "latent"
    inputs = [Link("samples", T.LATENT, tooltip="the latent to resize"),
              Choice("upscale_method", UPSCALE_METHODS, tooltip="how new cells are interpolated"),
              Float("scale_by", 1.5, min=0.01, max=8.0, tooltip="the factor; each side becomes round(side × factor)")]
    outputs = [LATENT_OUT]

    def run(self, ctx, samples, upscale_method, scale_by):
        from nodes.imaging.latents import with_samples
        from nodes.imaging.ops import resize_bchw

        h, w = samples.samples.shape[-2:]
        return (with_samples(samples, resize_bchw(samples.samples, round(w * scale_by), round(h * scale_by),
                                                  upscale_method)),)


@register
class LatentComposite(Node):
    """Paste one latent onto another at (x, y), optionally fading its inner edges."""

    category = "latent"
    inputs = [Link("samples_to", T.LATENT, tooltip="the latent pasted onto (sets the output size)"),
              Link("samples_from", T.LATENT, tooltip="the latent pasted, top-left corner at (x, y)"),
              _cells("x", 0, "where the pasted latent's left edge goes, in pixels"),
              _cells("y", 0, "where the pasted latent's top edge goes, in pixels"),
              _cells("feather", 0, "pixels over which the pasted edges fade in (edges on the border stay hard)")]
    outputs = [LATENT_OUT]

    def run(self, ctx, samples_to, samples_from, x, y, feather):
        from nodes.imaging.latents import paste, with_samples

        out = paste(samples_to.samples, samples_from.samples, x // CELL, y // CELL, feather // CELL)
        return (with_samples(samples_to, out),)


@register
class LatentCompositeMasked(Node):
    """Paste one latent onto another at (x, y), weighted by an optional mask."""

    category = "latent"
    inputs = [Link("destination", T.LATENT, tooltip="the latent pasted onto (sets the output size)"),
              Link("source", T.LATENT, tooltip="the latent pasted, top-left corner at (x, y)"),
              _cells("x", 0, "where the source's left edge goes, in pixels"),
              _cells("y", 0, "where the source's top edge goes, in pixels"),
              Bool("resize_source", False, tooltip="first resize the source to the destination's size"),
              Link("mask", T.MASK, optional=True,
                   tooltip="how much of the source to take per pixel (resized to the source); none: all of it")]
    outputs = [LATENT_OUT]

    def run(self, ctx, destination, source, x, y, resize_source, mask=None):
        from nodes.imaging.latents import with_samples
        from nodes.imaging.ops import composite

        out = composite(destination.samples.clone(), source.samples, x, y, mask, CELL, resize_source)
        return (with_samples(destination, out),)


@register
class LatentBlend(Node):
    """Mix two latents: samples1 × blend_factor + samples2 × (1 − blend_factor)."""

    category = "latent"
    inputs = [Link("samples1", T.LATENT, tooltip="the first latent (sets the output size)"),
              Link("samples2", T.LATENT, tooltip="the second latent (resized to the first's size if needed)"),
              Float("blend_factor", 0.5, min=0, max=1, tooltip="the weight of samples1")]
    outputs = [LATENT_OUT]

    def run(self, ctx, samples1, samples2, blend_factor):
        from nodes.imaging.latents import blend, with_samples

        return (with_samples(samples1, blend(samples1.samples, samples2.samples, blend_factor)),)


@register
class LatentFromBatch(Node):
    """Take some latents out of a batch (each keeps the noise its position in the batch would get)."""

    category = "latent"
    inputs = [Link("samples", T.LATENT, tooltip="the batch of latents"),
              Int("batch_index", 0, min=-MAX_RESOLUTION, max=MAX_RESOLUTION,
                  tooltip="the first one to take (0 = the first; negative counts from the end)"),
              Int("length", 1, min=1, max=64, tooltip="how many to take")]
    outputs = [LATENT_OUT]

    def run(self, ctx, samples, batch_index, length):
        from nodes.imaging.latents import from_batch

        return (from_batch(samples, batch_index, length),)


@register
class RepeatLatentBatch(Node):
    """Repeat a batch of latents several times."""

    category = "latent"
    inputs = [Link("samples", T.LATENT, tooltip="the latent(s) to repeat"),
              Int("amount", 1, min=1, max=64, tooltip="how many copies of the batch")]
    outputs = [LATENT_OUT]

    def run(self, ctx, samples, amount):
        from nodes.imaging.latents import repeat

        return (repeat(samples, amount),)


@register
class LatentBatch(Node):
    """Put two batches of latents into one (the second resized to the first's size if needed)."""

    category = "latent"
    inputs = [Link("samples1", T.LATENT, tooltip="the first batch (sets the size)"),
              Link("samples2", T.LATENT, tooltip="the batch appended after it")]
    outputs = [LATENT_OUT]

    def run(self, ctx, samples1, samples2):
        from nodes.imaging.latents import concat

        return (concat(samples1, samples2),)


@register
class LatentCrop(Node):
    """Cut a rectangle out of a latent (the noise mask is kept as it is)."""

    category = "latent"
    inputs = [Link("samples", T.LATENT, tooltip=SAMPLES),
              _cells("width", 512, "width of the rectangle in pixels", low=64),
              _cells("height", 512, "height of the rectangle in pixels", low=64),
              _cells("x", 0, "left edge in pixels (kept at least 64 px from the right edge)"),
              _cells("y", 0, "top edge in pixels (kept at least 64 px from the bottom edge)")]
    outputs = [LATENT_OUT]

    def run(self, ctx, samples, width, height, x, y):
        from nodes.imaging.latents import crop, with_samples

        return (with_samples(samples, crop(samples.samples, width, height, x, y)),)


@register
class LatentFlip(Node):
    """Mirror a latent."""

    category = "latent"
    inputs = [Link("samples", T.LATENT, tooltip=SAMPLES),
              Choice("flip_method", ["x-axis: vertically", "y-axis: horizontally"],
                     tooltip="vertically: top and bottom swap; horizontally: left and right swap")]
    outputs = [LATENT_OUT]

    def run(self, ctx, samples, flip_method):
        import torch

        from nodes.imaging.latents import with_samples

        return (with_samples(samples, torch.flip(samples.samples, dims=[2 if flip_method.startswith("x") else 3])),)


@register
class LatentRotate(Node):
    """Rotate a latent clockwise by quarter turns."""

    category = "latent"
    inputs = [Link("samples", T.LATENT, tooltip=SAMPLES),
              Choice("rotation", ["none", "90 degrees", "180 degrees", "270 degrees"], tooltip="clockwise")]
    outputs = [LATENT_OUT]

    def run(self, ctx, samples, rotation):
        import torch

        from nodes.imaging.latents import with_samples

        turns = {"none": 0, "90 degrees": 1, "180 degrees": 2, "270 degrees": 3}[rotation]
        return (with_samples(samples, torch.rot90(samples.samples, k=turns, dims=[3, 2])),)


class _LatentPair(Node):
    """Two latents combined cell by cell; samples2 is resized and its batch cycled to samples1's."""

    category = "latent/advanced"
    inputs = [Link("samples1", T.LATENT, tooltip="the first latent (sets the size and batch)"),
              Link("samples2", T.LATENT, tooltip="the second latent (resized to the first's if needed)")]
    outputs = [LATENT_OUT]

    @staticmethod
    def combine(a, b):  # pragma: no cover - abstract
        raise NotImplementedError

    def run(self, ctx, samples1, samples2):
        from nodes.imaging.latents import with_samples
        from nodes.imaging.ops import fit_like

        a = samples1.samples
        return (with_samples(samples1, self.combine(a, fit_like(samples2.samples, a.shape))),)


@register
class LatentAdd(_LatentPair):
    """samples1 + samples2."""

    @staticmethod
    def combine(a, b):
        return a + b


@register
class LatentSubtract(_LatentPair):
    """samples1 − samples2."""

    @staticmethod
    def combine(a, b):
        return a - b


@register
class LatentMultiply(Node):
    """Scale a latent by a number."""

    category = "latent/advanced"
    inputs = [Link("samples", T.LATENT, tooltip=SAMPLES),
              Float("multiplier", 1.0, min=-10.0, max=10.0, tooltip="every value is multiplied by this")]
    outputs = [LATENT_OUT]

    def run(self, ctx, samples, multiplier):
        from nodes.imaging.latents import with_samples

        return (with_samples(samples, samples.samples * multiplier),)


@register
class LatentInterpolate(Node):
    """Blend two latents cell by cell, directions and lengths separately (keeps the latents' norm)."""

    category = "latent/advanced"
    inputs = [Link("samples1", T.LATENT, tooltip="the first latent (sets the size and batch)"),
              Link("samples2", T.LATENT, tooltip="the second latent (resized to the first's if needed)"),
              Float("ratio", 1.0, min=0.0, max=1.0, tooltip="the weight of samples1 (1 = all samples1)")]
    outputs = [LATENT_OUT]

    def run(self, ctx, samples1, samples2, ratio):
        from nodes.imaging.latents import interpolate, with_samples

        return (with_samples(samples1, interpolate(samples1.samples, samples2.samples, ratio)),)


@register
class SaveLatent(Node):
    """Save latents as a ComfyUI `.latent` file in the output folder (LoadLatent reads it back)."""

    category = "latent"
    output_node = True
    inputs = [Link("samples", T.LATENT, tooltip="the latent(s) to save"),
              String("filename_prefix", "latents/ComfyUI", tooltip="file name start; may name a sub-folder")]
    outputs = [Output("samples", T.LATENT, "the same latent(s), passed on")]

    def run(self, ctx, samples, filename_prefix):
        from nodegraph import UserError
        from nodes.imaging.files import save_latent

        try:
            path = save_latent(samples.samples, ctx.paths.output, filename_prefix, ctx.workflow_metadata())
        except ValueError as exc:
            raise NodeInputError("filename_prefix", str(exc)) from None
        except OSError as exc:
            raise UserError(f"cannot write to {ctx.paths.output}: {exc.strerror or exc}") from None
        return NodeOutput((samples,), {"latents": [str(path)], "files": [str(path)]})


@register
class LoadLatent(Node):
    """Load a `.latent` file (from SaveLatent, here or in ComfyUI) from the input folder."""

    category = "latent"
    inputs = [FileChoice("latent", "input_latents", tooltip="a .latent file in the input folder (--input-dir)")]
    outputs = [LATENT_OUT]

    def run(self, ctx, latent):
        from nodes.core.values import Latent
        from nodes.imaging.files import load_latent

        try:
            return (Latent(load_latent(ctx.models.path("input_latents", latent))),)
        except ValueError as exc:
            raise NodeInputError("latent", str(exc)) from None


# -- inpainting -----------------------------------------------------------------------------------

@register
class SetLatentNoiseMask(Node):
    """Limit sampling to a mask: outside it the sampler keeps the input latent (inpainting)."""

    category = "latent/inpaint"
    inputs = [Link("samples", T.LATENT, tooltip="the latent to sample into"),
              Link("mask", T.MASK, tooltip="1 where the sampler may change the latent (resized to it when sampling)")]
    outputs = [LATENT_OUT]

    def run(self, ctx, samples, mask):
        from dataclasses import replace

        return (replace(samples, noise_mask=mask.reshape((-1, 1, mask.shape[-2], mask.shape[-1]))),)


@register
class VAEEncodeForInpaint(Node):
    """Encode an image for inpainting: the masked area is greyed out first and becomes the noise mask."""

    category = "latent/inpaint"
    inputs = [Link("pixels", T.IMAGE, tooltip="the image to inpaint"),
              Link("vae", T.VAE, tooltip="the autoencoder whose encoder turns pixels into latents"),
              Link("mask", T.MASK, tooltip="1 where the image is to be redrawn"),
              Int("grow_mask_by", 6, min=0, max=64,
                  tooltip="grow the noise mask by this many pixels so the new area blends in")]
    outputs = [LATENT_OUT]

    def run(self, ctx, pixels, vae, mask, grow_mask_by):
        from nodes.core.values import Latent
        from nodes.imaging.masks import inpaint_prepare
        from nodes.imaging.vae import encode

        pixels, noise_mask = inpaint_prepare(pixels, mask, grow_mask_by, vae.latent_format.downscale)
        return (Latent(encode(vae, pixels, check=ctx.check_cancelled), noise_mask=noise_mask),)


# -- the VAE ---------------------------------------------------------------------------------------

@register
class VAEDecode(Node):
    """Turn latents back into pixels with the VAE's decoder (in tiles if memory runs out)."""

    category = "latent"
    inputs = [Link("samples", T.LATENT, tooltip="the latent to decode"),
              Link("vae", T.VAE, tooltip="the autoencoder whose decoder turns latents into pixels")]
    outputs = [Output("IMAGE", T.IMAGE, "the decoded image(s)")]

    def run(self, ctx, samples, vae):
        from nodes.imaging.vae import decode

        return (decode(vae, samples.samples, check=ctx.check_cancelled, compile=ctx.compile),)


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


TEMPORAL = [Int("temporal_size", 64, min=8, max=4096, step=4, tooltip="only for video VAEs: frames per tile (unused)"),
            Int("temporal_overlap", 8, min=4, max=4096, step=4,
                tooltip="only for video VAEs: frames the tiles share (unused)")]


@register
class VAEDecodeTiled(Node):
    """Decode in overlapping tiles: less memory for large images, seams blended away."""

    category = "latent"
    inputs = [Link("samples", T.LATENT, tooltip="the latent to decode"),
              Link("vae", T.VAE, tooltip="the autoencoder whose decoder turns latents into pixels"),
              Int("tile_size", 512, min=64, max=4096, step=32, tooltip="tile side in pixels"),
              Int("overlap", 64, min=0, max=4096, step=32,
                  tooltip="pixels neighbouring tiles share (at most a quarter of the tile)"),
              *TEMPORAL]
    outputs = [Output("IMAGE", T.IMAGE, "the decoded image(s)")]

    def run(self, ctx, samples, vae, tile_size, overlap, temporal_size, temporal_overlap):
        from nodes.imaging.vae import decode_tiled

        overlap = tile_size // 4 if tile_size < overlap * 4 else overlap
        cell = vae.latent_format.downscale
        return (decode_tiled(vae, samples.samples, tile_size // cell, tile_size // cell, overlap // cell,
                             check=ctx.check_cancelled),)


@register
class VAEEncodeTiled(Node):
    """Encode in overlapping tiles: less memory for large images, seams blended away."""

    category = "latent"
    inputs = [Link("pixels", T.IMAGE, tooltip="the image(s) to encode; sides are cropped to multiples of 8"),
              Link("vae", T.VAE, tooltip="the autoencoder whose encoder turns pixels into latents"),
              Int("tile_size", 512, min=64, max=4096, step=64, tooltip="tile side in pixels"),
              Int("overlap", 64, min=0, max=4096, step=32, tooltip="pixels neighbouring tiles share"),
              *TEMPORAL]
    outputs = [LATENT_OUT]

    def run(self, ctx, pixels, vae, tile_size, overlap, temporal_size, temporal_overlap):
        from nodes.core.values import Latent
        from nodes.imaging.vae import encode_tiled

        return (Latent(encode_tiled(vae, pixels, tile_size, tile_size, overlap, check=ctx.check_cancelled)),)
