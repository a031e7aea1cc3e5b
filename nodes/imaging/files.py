"""Reading and writing image files (PNGs with the workflow in text chunks, ComfyUI-style names),
image masks, and ComfyUI's `.latent` files."""

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


def next_counter(folder: Path, stem: str, suffix: str = ".png") -> int:
    """The number after the highest of ComfyUI-style names {stem}_{counter:05}_{suffix} in folder."""
    pattern = re.compile(re.escape(stem) + r"_(\d+)_" + re.escape(suffix) + "$")
    numbers = [int(m.group(1)) for p in folder.glob(f"{glob_escape(stem)}_*_{suffix}") if (m := pattern.match(p.name))]
    return max(numbers, default=0) + 1


def glob_escape(text: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", text)


def save_images(images: torch.Tensor, output_dir: Path, prefix: str, chunks: dict[str, str]) -> list[Path]:
    """Write each image as {stem}_{counter:05}_.png (ComfyUI's naming), atomically."""
    from PIL.PngImagePlugin import PngInfo

    folder, stem = resolve_prefix(output_dir, prefix)
    folder.mkdir(parents=True, exist_ok=True)
    counter = next_counter(folder, stem)
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
    pil = _open_image(path)
    image = pil_to_image(pil)
    if "A" in pil.getbands():
        alpha = torch.from_numpy(__import__("numpy").asarray(pil.getchannel("A"), dtype="float32") / 255.0)
        mask = 1.0 - alpha[None]
    else:
        mask = torch.zeros((1, image.shape[1], image.shape[2]), dtype=torch.float32)
    return image, mask


def _open_image(path: Path):
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(path) as opened:
            pil = ImageOps.exif_transpose(opened)
            pil.load()
    except (UnidentifiedImageError, OSError) as exc:
        raise ValueError(f"{path.name} is not an image Pillow can read ({exc})") from None
    return pil


def load_image_mask(path: Path, channel: str) -> torch.Tensor:
    """MASK [1, H, W] from one channel of an image file (LoadImageMask): the image is taken as RGBA
    (16-bit grey scaled to 8 bits first); red/green/blue give the channel / 255, alpha gives
    1 − alpha / 255 (transparent = 1), so an image without alpha gives an all-zero mask."""
    import numpy as np

    pil = _open_image(path)
    if pil.getbands() != ("R", "G", "B", "A"):
        if pil.mode == "I":
            pil = pil.point(lambda v: v * (1 / 255))
        pil = pil.convert("RGBA")
    band = channel[0].upper()
    mask = torch.from_numpy(np.array(pil.getchannel(band)).astype(np.float32) / 255.0)
    return (1.0 - mask if band == "A" else mask)[None]


LATENT_KEY, LATENT_VERSION_KEY = "latent_tensor", "latent_format_version_0"


def save_latent(samples: torch.Tensor, output_dir: Path, prefix: str, metadata: dict[str, str]) -> Path:
    """Write {prefix}_{counter:05}_.latent: a safetensors file holding `latent_tensor` (raw VAE
    space) and an empty `latent_format_version_0` marker, the workflow in its metadata (ComfyUI's
    SaveLatent format)."""
    from safetensors.torch import save

    folder, stem = resolve_prefix(output_dir, prefix)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{stem}_{next_counter(folder, stem, '.latent'):05}_.latent"
    tensors = {LATENT_KEY: samples.detach().cpu().contiguous(), LATENT_VERSION_KEY: torch.tensor([])}
    atomic_write(path, save(tensors, metadata={k: str(v) for k, v in metadata.items()} or None))
    return path


def load_latent(path: Path) -> torch.Tensor:
    """Raw latents from a `.latent` file. Read with safetensors (never pickle); a file without the
    version marker holds sampler-space latents (ComfyUI's first format) and is divided by 0.18215."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        tensors = load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise ValueError(f"{path.name} is not a safetensors .latent file ({exc})") from None
    if LATENT_KEY not in tensors:
        raise ValueError(f"{path.name} has no {LATENT_KEY!r} tensor (found: {', '.join(sorted(tensors)) or 'none'})")
    scale = 1.0 if LATENT_VERSION_KEY in tensors else 1.0 / 0.18215
    return tensors[LATENT_KEY].float() * scale
