"""Upscaling nodes: enlarge an image with a super-resolution model (ESRGAN, Real-ESRGAN, SwinIR, HAT,
DAT…, loaded by UpscaleModelLoader). Names, inputs and behaviour are ComfyUI's."""

from __future__ import annotations

from nodegraph import Link, Node, Output, register
from nodegraph import types as T


@register
class ImageUpscaleWithModel(Node):
    """Enlarge images with an upscale model (×2, ×4… as the model was trained), in tiles of 512 pixels
    overlapping by 32 so large images fit in memory (smaller tiles after running out of memory)."""

    category = "image/upscaling"
    inputs = [Link("upscale_model", T.UPSCALE_MODEL, tooltip="the model from UpscaleModelLoader"),
              Link("image", T.IMAGE, tooltip="the image(s) to enlarge")]
    outputs = [Output("IMAGE", T.IMAGE, "the enlarged image(s), the model's scale times larger, in 0..1")]

    def run(self, ctx, upscale_model, image):
        from nodes.imaging.upscale import upscale

        return (upscale(upscale_model, image, ctx.device, progress=ctx.progress, check=ctx.check_cancelled),)
