"""The extra input channels of inpainting UNets (ComfyUI's BaseModel.concat_cond).

An inpainting UNet (9 input channels: SD 1.5 / SD 2 / SDXL inpainting) reads, beside the noisy
latent, where to redraw and what surrounds it, stacked on the channel axis:

    [x (4), mask (1), masked-image latent (4)]      mask 1 = redraw, 0 = keep

Each conditioning entry may bring its own pair (InpaintModelConditioning stores "concat_mask", the
mask at pixel size, and "concat_latent_image", raw VAE latents of the image with the masked pixels
greyed); otherwise the sampling run's noise mask and input latent stand in, and with no mask at all
the UNet is told to redraw everything over a blank (grey) image. The pair is built once per entry for
the whole latent and cut to each call's area, so entries with different inputs can still share a UNet
call, each with its own (as ComfyUI's CONDNoiseShape). UNets that take only the latent ignore it all.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from nodegraph import NodeInputError, UserError

from ..core.values import ConditioningEntry, DiffusionModel
from ..imaging.ops import center_crop_to_aspect

INPAINT_IN_CHANNELS = 9  # the latent (4) + the mask (1) + the masked image's latent (4)
# Grey pixels (0.5, "nothing here") through SD's VAE, in sampler space (scaled): ComfyUI's blank image
# for an inpainting UNet sampled without any mask. Used for every latent format, as ComfyUI does.
BLANK_INPAINT_LATENT = (0.8223, -0.6876, 0.6364, 0.1380)

Area = tuple[int, int, int, int]  # (h, w, y, x) in latent cells


def resize_to_batch(t: torch.Tensor, batch: int) -> torch.Tensor:
    """t's first axis resampled to `batch` entries by nearest index, spread evenly (ComfyUI's
    resize_to_batch_size: [a, b] → [a, a, b, b], unlike a repeat's [a, b, a, b])."""
    n = t.shape[0]
    if n == batch:
        return t
    if batch <= 1:
        return t[:batch]
    if batch < n:
        scale = (n - 1) / (batch - 1)
        index = [min(round(i * scale), n - 1) for i in range(batch)]
    else:
        scale = n / batch
        index = [min(math.floor((i + 0.5) * scale), n - 1) for i in range(batch)]
    return t[index]


def _fit(t: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """[B, C, H, W] to [B, C, h, w]: centre-cropped to the aspect ratio, then bilinear (ComfyUI's
    common_upscale with "bilinear", "center"); unchanged when already that size."""
    if tuple(t.shape[-2:]) == (h, w):
        return t
    return F.interpolate(center_crop_to_aspect(t, w, h), size=(h, w), mode="bilinear")


class ConcatInputs:
    """The mask and masked-image channels an inpainting UNet reads, per conditioning entry.

    `bind_run` gives it the run's input latent (sampler space) and prepared noise mask, which stand
    in for entries without their own; `__call__` extends a UNet call's input with them.
    """

    def __init__(self, model: DiffusionModel):
        self.latent_format = model.latent_format
        self.latent_image: torch.Tensor | None = None  # [B, C, h, w], sampler space
        self.noise_mask: torch.Tensor | None = None  # [B, C, h, w] at the latent's size, or None
        self._full: dict[tuple, tuple[ConditioningEntry, torch.Tensor]] = {}

    @staticmethod
    def for_model(model: DiffusionModel) -> ConcatInputs | None:
        """A ConcatInputs for an inpainting UNet; None for a UNet that takes only the latent."""
        config = getattr(model.unet, "config", None)
        in_channels = int(getattr(config, "in_channels", model.latent_format.channels))
        if in_channels == model.latent_format.channels:
            return None
        if in_channels != INPAINT_IN_CHANNELS:
            raise UserError(f"this MODEL's UNet takes {in_channels} input channels; only text-to-image "
                            f"({model.latent_format.channels}) and inpainting ({INPAINT_IN_CHANNELS}) UNets can sample")
        return ConcatInputs(model)

    def bind_run(self, latent_image: torch.Tensor | None, noise_mask: torch.Tensor | None) -> None:
        self.latent_image, self.noise_mask = latent_image, noise_mask
        self._full.clear()

    def full(self, entry: ConditioningEntry, shape: Sequence[int], device: Any) -> torch.Tensor:
        """The entry's [mask, masked-image latent] for the whole latent: [B, 1 + C, h, w], float32."""
        key = (id(entry), tuple(shape))
        if key not in self._full:  # holding the entry keeps its id valid
            self._full[key] = (entry, self._build(entry, shape, device))
        return self._full[key][1]

    def _build(self, entry: ConditioningEntry, shape: Sequence[int], device: Any) -> torch.Tensor:
        b, c, h, w = shape
        ex = entry.extras
        # 1. The image: the entry's latent (raw → sampler space) or the run's input latent, fitted to
        #    the latent's size and batch.
        image = ex.get("concat_latent_image")
        if image is not None:
            image = self.latent_format.to_sampler(image.to(device=device, dtype=torch.float32))
        elif self.latent_image is not None:
            image = self.latent_image.to(device=device, dtype=torch.float32)
        else:
            image = torch.zeros((b, c, h, w), device=device)
        if tuple(image.shape[1:]) != (c, h, w):
            image = _fit(image, h, w)
        image = resize_to_batch(image, b)  # [B, C, h, w]
        # 2. The mask: the entry's, else the run's noise mask; one channel, fitted, rounded to 0/1.
        mask = ex.get("concat_mask", self.noise_mask)
        if mask is None:  # nothing marks an area: redraw everything over a blank image
            blank = torch.tensor(BLANK_INPAINT_LATENT, device=device).reshape(1, -1, 1, 1).expand(b, c, h, w)
            return torch.cat([torch.ones((b, 1, h, w), device=device), blank], dim=1)
        mask = mask.to(device=device, dtype=torch.float32)
        if mask.ndim == len(shape):
            mask = mask[:, :1]
        mask = mask.reshape((-1, 1) + tuple(mask.shape[-2:]))
        mask = resize_to_batch(_fit(mask, h, w).round(), b)  # [B, 1, h, w]
        return torch.cat([mask, image], dim=1)

    def __call__(self, x_in: torch.Tensor, entries: Sequence[tuple[ConditioningEntry, int]],
                 latent_hw: tuple[int, int], options: dict[str, Any] | None = None) -> torch.Tensor:
        """x_in [n·B, C, h', w'] (the chunks of one UNet call, each on its area) with every chunk's
        mask and masked image, cut to that chunk's area, appended: [n·B, C + 1 + C, h', w']."""
        areas: list[Area | None] = list((options or {}).get("areas") or [None] * len(entries))
        parts = []
        for (entry, n), area in zip(entries, areas, strict=True):
            full = self.full(entry, (n, x_in.shape[1], *latent_hw), x_in.device)
            if area is not None:
                h, w, y, x = area
                full = full[:, :, y:y + h, x:x + w]
            if full.shape[-2:] != x_in.shape[-2:]:
                raise ValueError(f"inpainting inputs of {tuple(full.shape[-2:])} for a UNet input of "
                                 f"{tuple(x_in.shape[-2:])}: the call's areas are missing")
            parts.append(full)
        return torch.cat([x_in, torch.cat(parts).to(x_in.dtype)], dim=1)


def bind_run(unet_call: Any, latent_image: torch.Tensor | None, noise_mask: torch.Tensor | None) -> None:
    """Give a UNet caller's inpainting inputs the run's input latent and prepared noise mask (ComfyUI
    passes them to concat_cond as latent_image and denoise_mask); nothing for other UNets."""
    inputs = getattr(unet_call, "concat", None)
    if inputs is not None:
        inputs.bind_run(latent_image, noise_mask)


def inpaint_model_inputs(pixels: torch.Tensor, mask: torch.Tensor, cell: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """InpaintModelConditioning's arithmetic. pixels IMAGE [B, H, W, C], mask MASK [H, W] or [B, H, W].

    Returns (pixels to encode for the concat image, mask [B, 1, h, w]):
    - the mask is resized bilinear to the image; both are centre-cropped to whole `cell`s;
    - pixels where mask.round() == 1 become 0.5 (grey) in the first three channels;
    - the mask itself stays unrounded at pixel size (the sampler rounds it at the latent's size).
    """
    h, w = pixels.shape[1] // cell * cell, pixels.shape[2] // cell * cell
    mask = F.interpolate(mask.reshape((-1, 1, mask.shape[-2], mask.shape[-1])).float(),
                         size=(pixels.shape[1], pixels.shape[2]), mode="bilinear")  # [Bm, 1, H, W]
    if mask.shape[0] not in (1, pixels.shape[0]):
        raise NodeInputError("mask", f"{mask.shape[0]} masks for {pixels.shape[0]} images: give one mask, "
                                     "or one per image")
    pixels = pixels.clone()
    if (h, w) != tuple(pixels.shape[1:3]):
        dy, dx = (pixels.shape[1] % cell) // 2, (pixels.shape[2] % cell) // 2
        pixels = pixels[:, dy:h + dy, dx:w + dx, :]
        mask = mask[:, :, dy:h + dy, dx:w + dx]
    keep = (1.0 - mask.round()).squeeze(1)  # [Bm, h, w]
    for c in range(3):
        pixels[:, :, :, c] = (pixels[:, :, :, c] - 0.5) * keep + 0.5
    return pixels, mask
