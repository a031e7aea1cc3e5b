"""Image nodes: VAE decode/encode, loading, saving with the workflow embedded, previews, scaling."""

from __future__ import annotations

from typing import Any

from nodegraph import Choice, Int, Link, Node, NodeInputError, NodeOutput, Output, String, UserError, register
from nodegraph import types as T
from nodes.latent import CROP_METHODS, MAX_RESOLUTION, UPSCALE_METHODS

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")


@register
class VAEDecode(Node):
    """Turn latents back into pixels with the VAE's decoder."""

    category = "latent"
    inputs = [Link("samples", T.LATENT), Link("vae", T.VAE)]
    outputs = [Output("IMAGE", T.IMAGE)]

    def run(self, ctx, samples, vae):
        from nodes.vae_ops import decode

        return (decode(vae, samples.samples, check=ctx.check_cancelled),)


@register
class VAEEncode(Node):
    """Turn pixels into latents with the VAE's encoder (the start of image-to-image)."""

    category = "latent"
    inputs = [Link("pixels", T.IMAGE), Link("vae", T.VAE)]
    outputs = [Output("LATENT", T.LATENT)]

    def run(self, ctx, pixels, vae):
        from nodes.vae_ops import encode
        from nodes.values import Latent

        return (Latent(encode(vae, pixels, check=ctx.check_cancelled)),)


def _input_images(env: Any) -> list[str]:
    folder = getattr(env, "input_dir", None)
    if folder is None or not folder.is_dir():
        return []
    return sorted((p.relative_to(folder).as_posix() for p in folder.rglob("*")
                   if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS), key=str.lower)


@register
class LoadImage(Node):
    """Load an image from the input folder; its alpha channel becomes a MASK (1 where transparent)."""

    category = "image"
    inputs = [Choice("image", _input_images, tooltip="a file in the input folder (--input-dir)",
                     empty_hint="no images found: put a PNG or JPEG in the input folder (input/ or --input-dir)")]
    outputs = [Output("IMAGE", T.IMAGE), Output("MASK", T.MASK)]

    @classmethod
    def fingerprint(cls, values, env):
        path = _safe_path(env.input_dir, values.get("image", "")) if env is not None else None
        if path is None or not path.is_file():
            return None
        stat = path.stat()
        return [stat.st_size, stat.st_mtime_ns]

    def run(self, ctx, image):
        from nodes.image_files import load_image

        path = _safe_path(ctx.env.input_dir, image)
        if path is None or not path.is_file():
            found = _input_images(ctx.env)
            listing = f"found: {', '.join(found[:12])}" if found else "the folder is empty"
            raise NodeInputError("image", f'"{image}" not found in {ctx.env.input_dir} ({listing})')
        return load_image(path)


def _safe_path(folder, name: str):
    """folder/name, or None when name would leave the folder."""
    if not name:
        return None
    root = folder.resolve()
    path = (root / name).resolve()
    return path if root in path.parents else None


@register
class SaveImage(Node):
    """Save images as PNG in the output folder, with the workflow inside (drop one back in to reopen it)."""

    category = "image"
    output_node = True
    inputs = [Link("images", T.IMAGE), String("filename_prefix", "sdgraph",
                                               tooltip="file name start; may name a sub-folder, e.g. tests/cat")]
    outputs = []

    def run(self, ctx, images, filename_prefix):
        from nodegraph.workflow import workflow_chunks
        from nodes.image_files import save_images

        try:
            paths = save_images(images, ctx.env.output_dir, filename_prefix, workflow_chunks(ctx.graph))
        except ValueError as exc:
            raise NodeInputError("filename_prefix", str(exc)) from None
        except OSError as exc:
            raise UserError(f"cannot write to {ctx.env.output_dir}: {exc.strerror or exc}") from None
        return NodeOutput((), {"images": [str(p) for p in paths], "files": [str(p) for p in paths]})


@register
class PreviewImage(Node):
    """Show images in the editor without keeping them (written to a temporary folder)."""

    category = "image"
    output_node = True
    inputs = [Link("images", T.IMAGE)]
    outputs = []

    def run(self, ctx, images):
        import tempfile
        from pathlib import Path

        from nodes.image_files import save_images

        folder = Path(tempfile.gettempdir()) / "sdgraph-previews"
        paths = save_images(images, folder, f"preview_{ctx.node_id}", {})
        return NodeOutput((), {"images": [str(p) for p in paths]})


@register
class ImageScale(Node):
    """Resize images to a width and height (0 keeps the aspect ratio from the other side)."""

    category = "image"
    inputs = [Link("image", T.IMAGE), Choice("upscale_method", [m for m in UPSCALE_METHODS if m != "bislerp"]
                                              + ["lanczos"]),
              Int("width", 512, min=0, max=MAX_RESOLUTION), Int("height", 512, min=0, max=MAX_RESOLUTION),
              Choice("crop", CROP_METHODS)]
    outputs = [Output("IMAGE", T.IMAGE)]

    def run(self, ctx, image, upscale_method, width, height, crop):
        from nodes.imageops import resize_bchw

        if width == 0 and height == 0:
            return (image,)
        h, w = image.shape[1:3]
        width = width or max(1, round(w * height / h))
        height = height or max(1, round(h * width / w))
        x = image.movedim(-1, 1)
        return (resize_bchw(x, width, height, upscale_method, crop).movedim(1, -1).clamp(0, 1),)
