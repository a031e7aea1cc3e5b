"""Image nodes: loading, saving with the workflow embedded, previews, scaling, cropping, padding for
outpainting, compositing, colour and filter operations, edge detection. Names, inputs and rules are
ComfyUI's; positions and sizes are in pixels."""

from __future__ import annotations

from nodegraph import (
    Bool,
    Choice,
    Float,
    Int,
    Link,
    Node,
    NodeInputError,
    NodeOutput,
    Output,
    String,
    UserError,
    register,
)
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


IMAGE_UPSCALE_METHODS = [m for m in UPSCALE_METHODS if m != "bislerp"] + ["lanczos"]
IMAGE_IN = "the image(s) [batch, height, width, RGB] in 0..1"


@register
class ImageScale(Node):
    """Resize images to a width and height (0 keeps the aspect ratio from the other side)."""

    category = "image"
    inputs = [Link("image", T.IMAGE, tooltip="the image(s) to resize"),
              Choice("upscale_method", IMAGE_UPSCALE_METHODS, tooltip="how new pixels are interpolated"),
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
        return (resize_bchw(image.movedim(-1, 1), width, height, upscale_method, crop).movedim(1, -1),)


@register
class ImageScaleBy(Node):
    """Resize images by a factor."""

    category = "image"
    inputs = [Link("image", T.IMAGE, tooltip="the image(s) to resize"),
              Choice("upscale_method", IMAGE_UPSCALE_METHODS, tooltip="how new pixels are interpolated"),
              Float("scale_by", 1.0, min=0.01, max=8.0, tooltip="the factor; each side becomes round(side × factor)")]
    outputs = [IMAGE_OUT]

    def run(self, ctx, image, upscale_method, scale_by):
        from nodes.imaging.ops import resize_bchw

        h, w = image.shape[1:3]
        return (resize_bchw(image.movedim(-1, 1), round(w * scale_by), round(h * scale_by), upscale_method).movedim(1, -1),)


@register
class ImageScaleToTotalPixels(Node):
    """Resize images to about a number of megapixels, keeping the aspect ratio."""

    category = "image"
    inputs = [Link("image", T.IMAGE, tooltip="the image(s) to resize"),
              Choice("upscale_method", IMAGE_UPSCALE_METHODS, tooltip="how new pixels are interpolated"),
              Float("megapixels", 1.0, min=0.01, max=16.0, tooltip="target size in units of 1024 × 1024 pixels"),
              Int("resolution_steps", 1, min=1, max=256, tooltip="round each side to a multiple of this")]
    outputs = [IMAGE_OUT]

    def run(self, ctx, image, upscale_method, megapixels, resolution_steps):
        import math

        from nodes.imaging.ops import resize_bchw

        h, w = image.shape[1:3]
        scale = math.sqrt(megapixels * 1024 * 1024 / (w * h))
        width = round(w * scale / resolution_steps) * resolution_steps
        height = round(h * scale / resolution_steps) * resolution_steps
        return (resize_bchw(image.movedim(-1, 1), int(width), int(height), upscale_method).movedim(1, -1),)


@register
class ImageCrop(Node):
    """Cut a rectangle out of images (the corner is kept inside the image)."""

    category = "image"
    inputs = [Link("image", T.IMAGE, tooltip="the image(s) to crop"),
              Int("width", 512, min=1, max=MAX_RESOLUTION, tooltip="width of the rectangle"),
              Int("height", 512, min=1, max=MAX_RESOLUTION, tooltip="height of the rectangle"),
              Int("x", 0, min=0, max=MAX_RESOLUTION, tooltip="left edge of the rectangle"),
              Int("y", 0, min=0, max=MAX_RESOLUTION, tooltip="top edge of the rectangle")]
    outputs = [IMAGE_OUT]

    def run(self, ctx, image, width, height, x, y):
        x, y = min(x, image.shape[2] - 1), min(y, image.shape[1] - 1)
        return (image[:, y:y + height, x:x + width, :],)


@register
class ImageInvert(Node):
    """1 − image: a negative."""

    category = "image"
    inputs = [Link("image", T.IMAGE, tooltip=IMAGE_IN)]
    outputs = [IMAGE_OUT]

    def run(self, ctx, image):
        return (1.0 - image,)


@register
class ImageBatch(Node):
    """Put two batches of images into one (the second resized to the first's size if needed)."""

    category = "image"
    inputs = [Link("image1", T.IMAGE, tooltip="the first batch (sets the size)"),
              Link("image2", T.IMAGE, tooltip="the batch appended (bilinear, centre-cropped to the first's size)")]
    outputs = [IMAGE_OUT]

    def run(self, ctx, image1, image2):
        import torch

        from nodes.imaging.ops import match_channels, resize_bchw

        image1, image2 = match_channels(image1, image2)
        if image1.shape[1:] != image2.shape[1:]:
            image2 = resize_bchw(image2.movedim(-1, 1), image1.shape[2], image1.shape[1], "bilinear", "center")
            image2 = image2.movedim(1, -1)
        return (torch.cat((image1, image2), dim=0),)


@register
class EmptyImage(Node):
    """Images of one colour."""

    category = "image"
    inputs = [Int("width", 512, min=1, max=MAX_RESOLUTION, tooltip="width in pixels"),
              Int("height", 512, min=1, max=MAX_RESOLUTION, tooltip="height in pixels"),
              Int("batch_size", 1, min=1, max=4096, tooltip="how many images"),
              Int("color", 0, min=0, max=0xFFFFFF, tooltip="the colour as 0xRRGGBB (16777215 is white)")]
    outputs = [IMAGE_OUT]

    def run(self, ctx, width, height, batch_size, color):
        import torch

        rgb = [((color >> shift) & 0xFF) / 0xFF for shift in (16, 8, 0)]
        return (torch.tensor(rgb, dtype=torch.float32).expand(batch_size, height, width, 3).clone(),)


BLEND_MODES = ["normal", "multiply", "screen", "overlay", "soft_light", "difference"]


@register
class ImageBlend(Node):
    """Blend image2 over image1 with a blend mode, then mix: image1 × (1 − f) + blended × f."""

    category = "image"
    inputs = [Link("image1", T.IMAGE, tooltip="the base image(s) (sets the size)"),
              Link("image2", T.IMAGE, tooltip="the image(s) blended over it (bicubic, centre-cropped to fit)"),
              Float("blend_factor", 0.5, min=0.0, max=1.0, tooltip="how much of the blended result to take"),
              Choice("blend_mode", BLEND_MODES, tooltip="how the two images' pixels combine")]
    outputs = [IMAGE_OUT]

    def run(self, ctx, image1, image2, blend_factor, blend_mode):
        from nodes.imaging.ops import blend_images

        return (blend_images(image1, image2, blend_factor, blend_mode),)


@register
class ImageBlur(Node):
    """Gaussian blur."""

    category = "image"
    inputs = [Link("image", T.IMAGE, tooltip=IMAGE_IN),
              Int("blur_radius", 1, min=1, max=31, tooltip="the kernel reaches this many pixels each way"),
              Float("sigma", 1.0, min=0.1, max=10.0, step=0.1,
                    tooltip="the Gaussian's width, relative to the radius (1 = the kernel's edge)")]
    outputs = [IMAGE_OUT]

    def run(self, ctx, image, blur_radius, sigma):
        from nodes.imaging.ops import filter_image, gaussian_kernel

        return (filter_image(image, gaussian_kernel(blur_radius * 2 + 1, sigma), blur_radius),)


@register
class ImageSharpen(Node):
    """Sharpen by subtracting a Gaussian blur (unsharp masking); the result is clamped to 0..1."""

    category = "image"
    inputs = [Link("image", T.IMAGE, tooltip=IMAGE_IN),
              Int("sharpen_radius", 1, min=1, max=31, tooltip="the kernel reaches this many pixels each way"),
              Float("sigma", 1.0, min=0.1, max=10.0, tooltip="the Gaussian's width, relative to the radius"),
              Float("alpha", 1.0, min=0.0, max=5.0, tooltip="strength")]
    outputs = [IMAGE_OUT]

    def run(self, ctx, image, sharpen_radius, sigma, alpha):
        from nodes.imaging.ops import filter_image, sharpen_kernel

        kernel = sharpen_kernel(sharpen_radius * 2 + 1, sigma, alpha)
        return (filter_image(image, kernel, sharpen_radius).clamp(0, 1),)


@register
class Canny(Node):
    """Canny edge detection (kornia's): white edges on black, e.g. for a ControlNet."""

    category = "image"
    inputs = [Link("image", T.IMAGE, tooltip=IMAGE_IN),
              Float("low_threshold", 0.4, min=0.01, max=0.99, tooltip="weaker edges are dropped"),
              Float("high_threshold", 0.8, min=0.01, max=0.99,
                    tooltip="stronger edges are kept, and weak ones connected to them")]
    outputs = [IMAGE_OUT]

    def run(self, ctx, image, low_threshold, high_threshold):
        from kornia.filters import canny

        if low_threshold > high_threshold:
            raise NodeInputError("low_threshold", f"{low_threshold} is above high_threshold {high_threshold}")
        _, edges = canny(image[..., :3].movedim(-1, 1), low_threshold, high_threshold)
        return (edges.repeat(1, 3, 1, 1).movedim(1, -1),)


@register
class ImagePadForOutpaint(Node):
    """Add a border to paint into; the MASK is 1 there and fades into the old image over `feathering`."""

    category = "image"
    inputs = [Link("image", T.IMAGE, tooltip="the image(s) to extend"),
              *(Int(side, 0, min=0, max=MAX_RESOLUTION, multiple_of=8, tooltip=f"pixels to add on the {side}")
                for side in ("left", "top", "right", "bottom")),
              Int("feathering", 40, min=0, max=MAX_RESOLUTION,
                  tooltip="pixels over which the mask fades into the old image along the padded sides")]
    outputs = [Output("IMAGE", T.IMAGE, "the padded image(s); the border is grey (0.5)"),
               Output("MASK", T.MASK, "1 on the border, 0 on the old image, feathered between")]

    def run(self, ctx, image, left, top, right, bottom, feathering):
        import torch

        from nodes.imaging.masks import outpaint_mask

        b, h, w, c = image.shape
        padded = torch.full((b, h + top + bottom, w + left + right, c), 0.5, dtype=torch.float32)
        padded[:, top:top + h, left:left + w, :] = image
        return (padded, outpaint_mask(h, w, top, bottom, left, right, feathering))


@register
class ImageCompositeMasked(Node):
    """Paste one image onto another at (x, y), weighted by an optional mask."""

    category = "image"
    inputs = [Link("destination", T.IMAGE, tooltip="the image(s) pasted onto (sets the output size)"),
              Link("source", T.IMAGE, tooltip="the image(s) pasted, top-left corner at (x, y)"),
              Int("x", 0, min=0, max=MAX_RESOLUTION, tooltip="where the source's left edge goes"),
              Int("y", 0, min=0, max=MAX_RESOLUTION, tooltip="where the source's top edge goes"),
              Bool("resize_source", False, tooltip="first resize the source to the destination's size"),
              Link("mask", T.MASK, optional=True,
                   tooltip="how much of the source to take per pixel (resized to the source); none: all of it")]
    outputs = [IMAGE_OUT]

    def run(self, ctx, destination, source, x, y, resize_source, mask=None):
        from nodes.imaging.ops import composite, match_channels

        destination, source = match_channels(destination, source)
        out = composite(destination.clone().movedim(-1, 1), source.movedim(-1, 1), x, y, mask, 1, resize_source)
        return (out.movedim(1, -1),)
