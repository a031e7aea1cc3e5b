"""LATENT operations with ComfyUI's rules for what travels along: like ComfyUI's dict copies, every
result keeps the input's noise mask and batch indices unless the operation says otherwise.

Sizes and offsets given to nodes are in pixels; a latent cell is 8 pixels (`x // 8`).
"""

from __future__ import annotations

import math
from dataclasses import replace

import torch

from ..core.values import Latent
from .ops import fit_like, resize_bchw

CELL = 8


def with_samples(latent: Latent, samples: torch.Tensor) -> Latent:
    return replace(latent, samples=samples)


def from_batch(latent: Latent, index: int, length: int) -> Latent:
    """Entries index … index+length−1 (a negative index counts from the end; both are clamped). The
    noise mask follows when it has one entry per latent; `batch_index` records which entries these
    were, so the sampler still draws each one's own noise."""
    x = latent.samples
    n = x.shape[0]
    if index < 0:
        index += n
    index = max(0, min(n - 1, index))
    length = min(n - index, length)
    mask = latent.noise_mask
    if mask is not None:
        if mask.shape[0] == 1:
            mask = mask.clone()
        else:
            if mask.shape[0] < n:
                mask = mask.repeat(math.ceil(n / mask.shape[0]), 1, 1, 1)[:n]
            mask = mask[index:index + length].clone()
    indices = (list(range(index, index + length)) if latent.batch_index is None
               else latent.batch_index[index:index + length])
    return Latent(x[index:index + length].clone(), mask, indices)


def repeat(latent: Latent, amount: int) -> Latent:
    """The batch `amount` times over; batch indices continue past the highest one (so each copy gets
    new noise). A one-entry noise mask is shared; a per-entry one is repeated."""
    x = latent.samples
    mask = latent.noise_mask
    if mask is not None and mask.shape[0] > 1:
        mask = mask.repeat((amount,) + (1,) * (mask.ndim - 1))
    indices = latent.batch_index
    if indices is not None:
        offset = max(indices) - min(indices) + 1
        indices = indices + [i + k * offset for k in range(1, amount) for i in indices]
    return Latent(x.repeat((amount,) + (1,) * (x.ndim - 1)), mask, indices)


def concat(first: Latent, second: Latent) -> Latent:
    """Both batches in one (the second resized to the first's size where it differs); batch
    indices of each, or 0…n−1 where it has none, side by side."""
    a, b = first.samples, fit_like(second.samples, first.samples.shape, repeat_batch=False)
    indices = ((first.batch_index or list(range(a.shape[0]))) + (second.batch_index or list(range(b.shape[0]))))
    return replace(first, samples=torch.cat((a, b), dim=0), batch_index=indices)


def paste(to: torch.Tensor, source: torch.Tensor, x: int, y: int, feather: int) -> torch.Tensor:
    """LatentComposite: source pasted at cell (x, y) of a copy of `to`; with feather > 0 (cells) the
    pasted edges that are not on the border of `to` fade in linearly over `feather` cells."""
    out = to.clone()
    source = source[:, :, :to.shape[2] - y, :to.shape[3] - x]
    h, w = source.shape[2], source.shape[3]
    if feather == 0:
        out[:, :, y:y + h, x:x + w] = source
        return out
    mask = torch.ones_like(source)
    for t in range(feather):
        a = (1.0 / feather) * (t + 1)
        if y != 0:
            mask[:, :, t:1 + t, :] *= a
        if y + h < to.shape[2]:
            mask[:, :, h - 1 - t:h - t, :] *= a
        if x != 0:
            mask[:, :, :, t:1 + t] *= a
        if x + w < to.shape[3]:
            mask[:, :, :, w - 1 - t:w - t] *= a
    out[:, :, y:y + h, x:x + w] = source * mask + out[:, :, y:y + h, x:x + w] * (torch.ones_like(mask) - mask)
    return out


def crop(x: torch.Tensor, width: int, height: int, left: int, top: int) -> torch.Tensor:
    """LatentCrop in pixels: the corner is clamped so at least 8 cells remain (ComfyUI's rule)."""
    left, top = min(left // CELL, x.shape[3] - CELL), min(top // CELL, x.shape[2] - CELL)
    return x[:, :, top:top + height // CELL, left:left + width // CELL]


def blend(first: torch.Tensor, second: torch.Tensor, factor: float) -> torch.Tensor:
    """first·factor + second·(1 − factor), second resized (bicubic, centre crop) where sizes differ."""
    if first.shape != second.shape:
        second = resize_bchw(second, first.shape[3], first.shape[2], "bicubic", "center")
    return first * factor + second * (1 - factor)


def interpolate(first: torch.Tensor, second: torch.Tensor, ratio: float) -> torch.Tensor:
    """Per cell: the channel vectors' directions blended by ratio (towards first) and renormalised,
    their lengths blended linearly (LatentInterpolate)."""
    second = fit_like(second, first.shape)
    len1 = torch.linalg.vector_norm(first, dim=1, keepdim=True)
    len2 = torch.linalg.vector_norm(second, dim=1, keepdim=True)
    mixed = torch.nan_to_num(first / len1) * ratio + torch.nan_to_num(second / len2) * (1.0 - ratio)
    direction = torch.nan_to_num(mixed / torch.linalg.vector_norm(mixed, dim=1, keepdim=True))
    return direction * (len1 * ratio + len2 * (1.0 - ratio))
