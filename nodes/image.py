"""Image nodes: loading, saving with the workflow embedded, previews, scaling."""

from __future__ import annotations

from nodegraph import Choice, Int, Link, Node, NodeInputError, NodeOutput, Output, String, UserError, register
from nodegraph import types as T
from nodes.core.files import InputFile
from nodes.latent import CROP_METHODS, MAX_RESOLUTION, UPSCALE_METHODS

IMAGE_OUT = Output("IMAGE", T.IMAGE, "image(s) [batch, height, width, RGB] in 0..1")


@register
class LoadImage(Node):
    """Load an image from the input folder; its alpha channel becomes a MASK (1 where transparent)."""

    category = "image"
    inputs = [InputFile("image", tooltip="a file in the input folder (--input-dir)")]
    outputs = [IMAGE_OUT, Output("MASK", T.MASK, "1 where the image is transparent, else 0")]

    def run(self, ctx, image):
        from nodes.imaging.files import load_image

        try:
            return load_image(ctx.paths.input_file(image))
        except ValueError as exc:
            raise NodeInputError("image", str(exc)) from None


@register
class SaveImage(Node):
    """Save images as PNG in the output folder, with the workflow inside (drop one back in to reopen it)."""

    category = "image"
    output_node = True
    inputs = [Link("images", T.IMAGE, tooltip="the image(s) to save"),
              String("filename_prefix", "sdgraph", tooltip="file name start; may name a sub-folder, e.g. tests/cat")]
    outputs = []

    def run(self, ctx, images, filename_prefix):
        from nodes.imaging.files import save_images

        try:
            paths = save_images(images, ctx.paths.output, filename_prefix, ctx.workflow_metadata())
        except ValueError as exc:
            raise NodeInputError("filename_prefix", str(exc)) from None
        except OSError as exc:
            raise UserError(f"cannot write to {ctx.paths.output}: {exc.strerror or exc}") from None
        return NodeOutput((), {"images": [str(p) for p in paths], "files": [str(p) for p in paths]})


@register
class PreviewImage(Node):
    """Show images in the editor without keeping them (written to a temporary folder)."""

    category = "image"
    output_node = True
    inputs = [Link("images", T.IMAGE, tooltip="the image(s) to show")]
    outputs = []

    def run(self, ctx, images):
        from nodes.imaging.files import save_images

        paths = save_images(images, ctx.paths.temp / "previews", f"preview_{ctx.node_id}", {})
        return NodeOutput((), {"images": [str(p) for p in paths]})


@register
class ImageScale(Node):
    """Resize images to a width and height (0 keeps the aspect ratio from the other side)."""

    category = "image"
    inputs = [Link("image", T.IMAGE, tooltip="the image(s) to resize"),
              Choice("upscale_method", [m for m in UPSCALE_METHODS if m != "bislerp"] + ["lanczos"],
                     tooltip="how new pixels are interpolated"),
              # Any pixel size (ComfyUI's step is 1 here): VAEEncode crops to whole 8×8 cells itself.
              Int("width", 512, min=0, max=MAX_RESOLUTION,
                  tooltip="new width in pixels; 0 keeps the aspect ratio from the height"),
              Int("height", 512, min=0, max=MAX_RESOLUTION,
                  tooltip="new height in pixels; 0 keeps the aspect ratio from the width"),
              Choice("crop", CROP_METHODS, tooltip="center: crop to the new aspect ratio instead of stretching")]
    outputs = [IMAGE_OUT]

    def run(self, ctx, image, upscale_method, width, height, crop):
        from nodes.imaging.ops import resize_bchw

        if width == 0 and height == 0:
            return (image,)
        h, w = image.shape[1:3]
        width = width or max(1, round(w * height / h))
        height = height or max(1, round(h * width / w))
        x = image.movedim(-1, 1)
        return (resize_bchw(x, width, height, upscale_method, crop).movedim(1, -1).clamp(0, 1),)
