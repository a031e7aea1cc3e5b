"""VAE decode/encode between LATENT (raw VAE space) and IMAGE ([B, H, W, 3] in 0..1), whole or in
overlapping tiles (ComfyUI's tiled VAE), with ComfyUI's fallback to tiles when a whole-image pass
runs out of memory."""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable

import torch

from nodegraph import UserError
from nodegraph.memory import is_out_of_memory, release_accelerator_memory

from ..core.kernels import compiled
from ..core.values import VaeModel

log = logging.getLogger("sdgraph.vae")

# ComfyUI's tile sizes for the automatic fallback: latent cells for decoding, pixels for encoding.
FALLBACK_DECODE = (64, 64, 16)  # tile_x, tile_y, overlap
FALLBACK_ENCODE = (512, 512, 64)


def _device_dtype(vae: VaeModel):
    param = next(vae.vae.parameters())
    return vae.device or param.device, vae.dtype or param.dtype


def _upcast_on_overflow(vae: VaeModel, fn: Callable[[torch.Tensor], torch.Tensor]):
    """fn(x) in the VAE's dtype; a float16 result with inf/NaN (a VAE that overflows in fp16, such as
    SDXL's loaded without its force_upcast config) is computed again after moving the VAE to float32
    for good (later calls then run in float32 straight away)."""
    def run(x: torch.Tensor) -> torch.Tensor:
        device, dtype = _device_dtype(vae)
        out = fn(x.to(device, dtype))
        if dtype == torch.float16 and not bool(torch.isfinite(out).all()):
            log.warning("the VAE %s overflowed in float16; it runs in float32 from now on", vae.name or "(unnamed)")
            vae.vae.to(dtype=torch.float32)
            vae.dtype = torch.float32
            out = fn(x.to(device, torch.float32))
        return out.float().cpu()
    return run


def _decoder(vae: VaeModel, compile: str | None = None) -> Callable[[torch.Tensor], torch.Tensor]:
    """Raw latents [b, C, h, w] → decoder output [b, 3, 8h, 8w] in about -1..1, float32 on the CPU;
    torch.compile'd with backend `compile` when given (looked up per call: an upcast VAE compiles anew)."""
    if compile:
        return _upcast_on_overflow(vae, lambda z: compiled(vae.vae, compile, key="decode")(z).sample)
    return _upcast_on_overflow(vae, lambda z: vae.vae.decode(z).sample)


def _encoder(vae: VaeModel) -> Callable[[torch.Tensor], torch.Tensor]:
    """Pixels [b, 3, H, W] in 0..1 → raw latents (the mean of the encoder's distribution), float32, CPU."""
    encode = _upcast_on_overflow(vae, lambda x: vae.vae.encode(x).latent_dist.mode())
    return lambda x: encode(x * 2.0 - 1.0)


def _to_image(decoded: torch.Tensor) -> torch.Tensor:
    return ((decoded + 1.0) / 2.0).clamp(0.0, 1.0).movedim(1, -1)


def decode(vae: VaeModel, samples: torch.Tensor, check: Callable[[], None] | None = None,
           compile: str | None = None) -> torch.Tensor:
    """One image at a time, so a large batch does not need the memory of all of them at once. Out of
    memory, the whole batch is decoded again in tiles (64×64 cells, overlap 16), as ComfyUI does.
    `compile`: a torch.compile backend for the whole-image pass (kernels.py), None for eager."""
    run = _decoder(vae, compile)
    images = []
    try:
        with torch.inference_mode():
            for latent in samples:
                if check is not None:
                    check()
                images.append(_to_image(run(latent[None])))
    except Exception as exc:  # noqa: BLE001 - only out-of-memory errors are retried
        if not is_out_of_memory(exc):
            raise
        del images
        release_accelerator_memory()
        log.warning("ran out of memory decoding the whole image; retrying in tiles")
        tile_x, tile_y, overlap = FALLBACK_DECODE
        return decode_tiled(vae, samples, tile_x, tile_y, overlap, check=check)
    return torch.cat(images)


def crop_to_multiple_of_8(pixels: torch.Tensor) -> torch.Tensor:
    """Centre-crop [B, H, W, C] so both sides are multiples of 8 (what the VAE can encode)."""
    h, w = pixels.shape[1], pixels.shape[2]
    nh, nw = h // 8 * 8, w // 8 * 8
    if (nh, nw) == (h, w):
        return pixels
    top, left = (h % 8) // 2, (w % 8) // 2
    return pixels[:, top:top + nh, left:left + nw, :]


def _checked_pixels(pixels: torch.Tensor) -> torch.Tensor:
    if pixels.shape[1] < 8 or pixels.shape[2] < 8:
        raise UserError(f"the image is {pixels.shape[2]}×{pixels.shape[1]} pixels; the VAE needs at least 8×8")
    return crop_to_multiple_of_8(pixels[..., :3])


def encode(vae: VaeModel, pixels: torch.Tensor, check: Callable[[], None] | None = None) -> torch.Tensor:
    """Pixels → raw latents, using the mean of the encoder's distribution (deterministic). Out of
    memory, the batch is encoded again in tiles (512 px, overlap 64), as ComfyUI does."""
    pixels = _checked_pixels(pixels)
    run = _encoder(vae)
    latents = []
    try:
        with torch.inference_mode():
            for image in pixels:
                if check is not None:
                    check()
                latents.append(run(image[None].movedim(-1, 1)))
    except Exception as exc:  # noqa: BLE001 - only out-of-memory errors are retried
        if not is_out_of_memory(exc):
            raise
        del latents
        release_accelerator_memory()
        log.warning("ran out of memory encoding the whole image; retrying in tiles")
        tile_x, tile_y, overlap = FALLBACK_ENCODE
        return encode_tiled(vae, pixels, tile_x, tile_y, overlap, check=check)
    return torch.cat(latents)


# -- tiles ----------------------------------------------------------------------------------------

def tiled_map(x: torch.Tensor, fn: Callable[[torch.Tensor], torch.Tensor], tile: tuple[int, int], overlap: int,
              scale: float, out_channels: int, check: Callable[[], None] | None = None) -> torch.Tensor:
    """Apply fn to overlapping tiles of x [B, C, H, W] and blend the results (ComfyUI's tiled_scale).

    `tile` is (height, width) and `overlap` is in x's units; fn maps a tile of size s to size s·scale.
    Tiles start every tile − overlap along each side (the last one is pulled back inside, so it may be
    shorter); every tile's output is weighted by a linear ramp of round(overlap·scale) on each of its
    edges, image borders included, and the weighted sum is divided by the summed weights. An input
    that fits in one tile is passed whole, unweighted.
    """
    size = [round(s * scale) for s in x.shape[2:]]
    output = torch.empty([x.shape[0], out_channels, *size])
    for b in range(x.shape[0]):
        item = x[b:b + 1]
        if all(item.shape[d + 2] <= tile[d] for d in range(2)):
            if check is not None:
                check()
            output[b:b + 1] = fn(item)
            continue
        for d in range(2):
            if item.shape[d + 2] > tile[d] and tile[d] <= overlap:
                raise UserError(f"tiles of {tile[1]}×{tile[0]} cannot overlap by {overlap}; lower the overlap or "
                                "raise the tile size")
        out = torch.zeros([1, out_channels, *size])
        weight = torch.zeros([1, out_channels, *size])
        starts = [range(0, item.shape[d + 2] - overlap, tile[d] - overlap) if item.shape[d + 2] > tile[d] else [0]
                  for d in range(2)]
        for corner in itertools.product(*starts):
            if check is not None:
                check()
            piece, placed = item, []
            for d in range(2):
                pos = max(0, min(item.shape[d + 2] - overlap, corner[d]))
                length = min(tile[d], item.shape[d + 2] - pos)
                piece = piece.narrow(d + 2, pos, length)
                placed.append(round(pos * scale))
            result = fn(piece)
            mask = torch.ones_like(result)
            for d in (2, 3):
                ramp = round(overlap * scale)
                if ramp >= mask.shape[d]:
                    continue
                for t in range(ramp):
                    a = (t + 1) / ramp
                    mask.narrow(d, t, 1).mul_(a)
                    mask.narrow(d, mask.shape[d] - 1 - t, 1).mul_(a)
            region = out.narrow(2, placed[0], mask.shape[2]).narrow(3, placed[1], mask.shape[3])
            region_w = weight.narrow(2, placed[0], mask.shape[2]).narrow(3, placed[1], mask.shape[3])
            region.add_(result * mask)
            region_w.add_(mask)
        output[b:b + 1] = out / weight
    return output


def decode_tiled(vae: VaeModel, samples: torch.Tensor, tile_x: int = 64, tile_y: int = 64, overlap: int = 16,
                 check: Callable[[], None] | None = None) -> torch.Tensor:
    """Latents → IMAGE in tiles of tile_x × tile_y latent cells: the mean of three tilings (half-wide
    and double-high, double-wide and half-high, as given) to hide the seams, as ComfyUI does."""
    tilings = [(tile_y * 2, tile_x // 2), (tile_y // 2, tile_x * 2), (tile_y, tile_x)]
    run = _decoder(vae)
    scale = vae.latent_format.downscale
    with torch.inference_mode():
        total = None
        for tile in tilings:
            part = tiled_map(samples.float(), run, tile, overlap, scale, 3, check)
            total = part if total is None else total + part
    return _to_image(total / 3.0)


def encode_tiled(vae: VaeModel, pixels: torch.Tensor, tile_x: int = 512, tile_y: int = 512, overlap: int = 64,
                 check: Callable[[], None] | None = None) -> torch.Tensor:
    """IMAGE → latents in tiles of tile_x × tile_y pixels: the mean of three tilings (as given,
    double-wide and half-high, half-wide and double-high), as ComfyUI does."""
    pixels = _checked_pixels(pixels)
    tilings = [(tile_y, tile_x), (tile_y // 2, tile_x * 2), (tile_y * 2, tile_x // 2)]
    run = _encoder(vae)
    scale = 1.0 / vae.latent_format.downscale
    channels = vae.latent_format.channels
    x = pixels.movedim(-1, 1).float()
    with torch.inference_mode():
        total = tiled_map(x, run, tilings[0], overlap, scale, channels, check)
        for tile in tilings[1:]:
            total += tiled_map(x, run, tile, overlap, scale, channels, check)
    return total / 3.0
