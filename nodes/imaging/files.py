"""Reading and writing image files: PNGs with the workflow in text chunks, ComfyUI-style names."""

from __future__ import annotations

import io
import re
from pathlib import Path

import torch

from nodegraph.fileio import atomic_write

from .ops import image_to_pil, pil_to_image


def resolve_prefix(output_dir: Path, prefix: str) -> tuple[Path, str]:
    """(folder, file stem) for a filename_prefix like "cats/tabby"; never outside output_dir."""
    prefix = prefix.strip().replace("\\", "/") or "sdgraph"
    root = Path(output_dir).resolve()
    target = (root / prefix).resolve()
    if target != root and root not in target.parents:
        raise ValueError(f'"{prefix}" would write outside the output folder {root}; use a plain name '
                         "or a sub-folder like renders/cat")
    if target == root or not target.name:
        raise ValueError(f'"{prefix}" names no file; give a name like sdgraph or renders/cat')
    return target.parent, target.name


def _next_counter(folder: Path, stem: str) -> int:
    pattern = re.compile(re.escape(stem) + r"_(\d+)_\.png$")
    numbers = [int(m.group(1)) for p in folder.glob(f"{glob_escape(stem)}_*_.png") if (m := pattern.match(p.name))]
    return max(numbers, default=0) + 1


def glob_escape(text: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", text)


def save_images(images: torch.Tensor, output_dir: Path, prefix: str, chunks: dict[str, str]) -> list[Path]:
    """Write each image as {stem}_{counter:05}_.png (ComfyUI's naming), atomically."""
    from PIL.PngImagePlugin import PngInfo

    folder, stem = resolve_prefix(output_dir, prefix)
    folder.mkdir(parents=True, exist_ok=True)
    counter = _next_counter(folder, stem)
    paths = []
    for image in images:
        info = PngInfo()
        for key, text in chunks.items():
            info.add_text(key, text)
        buffer = io.BytesIO()
        image_to_pil(image).save(buffer, format="PNG", pnginfo=info, compress_level=4)
        path = folder / f"{stem}_{counter:05}_.png"
        atomic_write(path, buffer.getvalue())
        paths.append(path)
        counter += 1
    return paths


def load_image(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """(IMAGE [1, H, W, 3], MASK [1, H, W]); the mask is 1 where the image is transparent."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(path) as opened:
            pil = ImageOps.exif_transpose(opened)
            pil.load()
    except (UnidentifiedImageError, OSError) as exc:
        raise ValueError(f"{path.name} is not an image Pillow can read ({exc})") from None
    image = pil_to_image(pil)
    if "A" in pil.getbands():
        alpha = torch.from_numpy(__import__("numpy").asarray(pil.getchannel("A"), dtype="float32") / 255.0)
        mask = 1.0 - alpha[None]
    else:
        mask = torch.zeros((1, image.shape[1], image.shape[2]), dtype=torch.float32)
    return image, mask
