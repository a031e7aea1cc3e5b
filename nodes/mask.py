"""Mask nodes: make, load, convert, combine and reshape MASKs (float [B, H, W], 1 = the area to change).

Names, inputs and edge rules are ComfyUI's; positions and sizes are in pixels.
"""

from __future__ import annotations

from nodegraph import Bool, Choice, Float, Input, Int, Link, Node, NodeInputError, Output, register
from nodegraph import types as T
from nodes.core.files import InputFile
from nodes.latent import MAX_RESOLUTION

MASK_OUT = Output("MASK", T.MASK, "mask(s) [batch, height, width], 1 = the area to change")
MASK_IN = "the mask(s) [batch, height, width] in 0..1"
CHANNELS = ["red", "green", "blue", "alpha"]


def _pixels(name: str, default: int, tooltip: str, low: int = 0) -> Input:
    return Int(name, default, min=low, max=MAX_RESOLUTION, tooltip=tooltip)


@register
class LoadImageMask(Node):
    """Load one channel of an image in the input folder as a mask (alpha: 1 where transparent)."""

    category = "mask"
    inputs = [InputFile("image", tooltip="a file in the input folder (--input-dir)"),
              Choice("channel", ["alpha", "red", "green", "blue"],
                     tooltip="which channel becomes the mask; alpha is inverted (transparent = 1)")]
    outputs = [MASK_OUT]

    def run(self, ctx, image, channel):
        from nodes.imaging.files import load_image_mask

        try:
            return (load_image_mask(ctx.paths.input_file(image), channel),)
        except ValueError as exc:
            raise NodeInputError("image", str(exc)) from None


@register
class MaskToImage(Node):
    """Show a mask as a grey image (the mask in all three channels)."""

    category = "mask"
    inputs = [Link("mask", T.MASK, tooltip=MASK_IN)]
    outputs = [Output("IMAGE", T.IMAGE, "the mask as grey image(s) [batch, height, width, RGB]")]

    def run(self, ctx, mask):
        return (mask.reshape((-1, 1, mask.shape[-2], mask.shape[-1])).movedim(1, -1).expand(-1, -1, -1, 3),)


@register
class ImageToMask(Node):
    """Take one channel of an image as a mask."""

    category = "mask"
    inputs = [Link("image", T.IMAGE, tooltip="the image(s) to take a channel from"),
              Choice("channel", CHANNELS, tooltip="the channel that becomes the mask (alpha needs an RGBA image)")]
    outputs = [MASK_OUT]

    def run(self, ctx, image, channel):
        index = CHANNELS.index(channel)
        if index >= image.shape[-1]:
            raise NodeInputError("channel", f"the image has {image.shape[-1]} channels, no {channel} channel")
        return (image[:, :, :, index],)


@register
class SolidMask(Node):
    """A mask of one value everywhere."""

    category = "mask"
    inputs = [Float("value", 1.0, min=0.0, max=1.0, tooltip="the value of every pixel"),
              _pixels("width", 512, "width in pixels", low=1), _pixels("height", 512, "height in pixels", low=1)]
    outputs = [MASK_OUT]

    def run(self, ctx, value, width, height):
        import torch

        return (torch.full((1, height, width), value, dtype=torch.float32),)


@register
class InvertMask(Node):
    """1 − mask: swap the area to change and the area to keep."""

    category = "mask"
    inputs = [Link("mask", T.MASK, tooltip=MASK_IN)]
    outputs = [MASK_OUT]

    def run(self, ctx, mask):
        return (1.0 - mask,)


@register
class CropMask(Node):
    """Cut a rectangle out of a mask."""

    category = "mask"
    inputs = [Link("mask", T.MASK, tooltip=MASK_IN),
              _pixels("x", 0, "left edge of the rectangle"), _pixels("y", 0, "top edge of the rectangle"),
              _pixels("width", 512, "width of the rectangle", low=1),
              _pixels("height", 512, "height of the rectangle", low=1)]
    outputs = [MASK_OUT]

    def run(self, ctx, mask, x, y, width, height):
        from nodes.imaging.masks import as_batch

        return (as_batch(mask)[:, y:y + height, x:x + width],)


@register
class MaskComposite(Node):
    """Combine a source mask into a destination mask at (x, y); the result is clamped to 0..1."""

    category = "mask"
    inputs = [Link("destination", T.MASK, tooltip="the mask combined into (sets the output size)"),
              Link("source", T.MASK, tooltip="the mask placed with its top-left corner at (x, y)"),
              _pixels("x", 0, "where the source's left edge goes"), _pixels("y", 0, "where the source's top edge goes"),
              Choice("operation", ["multiply", "add", "subtract", "and", "or", "xor"],
                     tooltip="how overlapping values combine; and/or/xor round both to 0 or 1 first")]
    outputs = [MASK_OUT]

    def run(self, ctx, destination, source, x, y, operation):
        from nodes.imaging.masks import combine

        return (combine(destination, source, x, y, operation),)


@register
class FeatherMask(Node):
    """Fade a mask out towards its edges over the given widths."""

    category = "mask"
    inputs = [Link("mask", T.MASK, tooltip=MASK_IN),
              *(_pixels(side, 0, f"how many pixels the mask fades over at the {side} edge")
                for side in ("left", "top", "right", "bottom"))]
    outputs = [MASK_OUT]

    def run(self, ctx, mask, left, top, right, bottom):
        from nodes.imaging.masks import feather

        return (feather(mask, left, top, right, bottom),)


@register
class GrowMask(Node):
    """Grow (or, with a negative amount, shrink) a mask by whole pixels."""

    category = "mask"
    inputs = [Link("mask", T.MASK, tooltip=MASK_IN),
              Int("expand", 0, min=-MAX_RESOLUTION, max=MAX_RESOLUTION,
                  tooltip="pixels to grow by; negative shrinks"),
              Bool("tapered_corners", True, tooltip="round the corners as it grows (a diamond step, not a square)")]
    outputs = [MASK_OUT]

    def run(self, ctx, mask, expand, tapered_corners):
        from nodes.imaging.masks import grow

        return (grow(mask, expand, tapered_corners),)


@register
class ThresholdMask(Node):
    """1 where the mask is above a value, else 0."""

    category = "mask"
    inputs = [Link("mask", T.MASK, tooltip=MASK_IN),
              Float("value", 0.5, min=0.0, max=1.0, tooltip="pixels strictly above this become 1")]
    outputs = [MASK_OUT]

    def run(self, ctx, mask, value):
        return ((mask > value).float(),)
