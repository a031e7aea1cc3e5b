"""MASK arithmetic shared by the mask, image and latent nodes, with ComfyUI's exact edge rules.

A MASK is float [B, H, W] in 0..1 (1 = the area to change); every function here accepts any
[..., H, W] and returns [B, H, W] unless it says otherwise.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def as_batch(mask: torch.Tensor) -> torch.Tensor:
    """[H, W], [B, H, W] or [B, 1, H, W] → [B, H, W]."""
    return mask.reshape((-1, mask.shape[-2], mask.shape[-1]))


def grow(mask: torch.Tensor, expand: int, tapered_corners: bool) -> torch.Tensor:
    """Dilate (expand > 0) or erode (< 0) by |expand| pixels, one 3×3 grey-morphology step at a time;
    tapered corners leave the kernel's corners out (a diamond), else a full square."""
    import numpy as np
    from scipy import ndimage

    corner = 0 if tapered_corners else 1
    footprint = np.array([[corner, 1, corner], [1, 1, 1], [corner, 1, corner]])
    step = ndimage.grey_erosion if expand < 0 else ndimage.grey_dilation
    out = []
    for m in as_batch(mask):
        array = m.detach().cpu().numpy()
        for _ in range(abs(expand)):
            array = step(array, footprint=footprint)
        out.append(torch.from_numpy(array))
    return torch.stack(out, dim=0)


def feather(mask: torch.Tensor, left: int, top: int, right: int, bottom: int) -> torch.Tensor:
    """Fade the mask towards its edges over the given widths: the k-th row/column from an edge is
    scaled by (k+1)/width. As in ComfyUI, the right and bottom fades start at index 0 (-0), so the
    first column (row) is also scaled by 1/right (1/bottom) when those are set."""
    out = as_batch(mask).clone()
    h, w = out.shape[-2:]
    left, right, top, bottom = min(left, w), min(right, w), min(top, h), min(bottom, h)
    for k in range(left):
        out[:, :, k] *= (k + 1.0) / left
    for k in range(right):
        out[:, :, -k] *= (k + 1) / right
    for k in range(top):
        out[:, k, :] *= (k + 1) / top
    for k in range(bottom):
        out[:, -k, :] *= (k + 1) / bottom
    return out


_LOGIC = {"and": torch.bitwise_and, "or": torch.bitwise_or, "xor": torch.bitwise_xor}


def combine(destination: torch.Tensor, source: torch.Tensor, x: int, y: int, operation: str) -> torch.Tensor:
    """Combine source into destination with its top-left at pixel (x, y); the result is clamped to 0..1.
    multiply/add/subtract use the values, and/or/xor the values rounded to 0 or 1."""
    out, source = as_batch(destination).clone(), as_batch(source)
    right, bottom = min(x + source.shape[-1], out.shape[-1]), min(y + source.shape[-2], out.shape[-2])
    if right <= x or bottom <= y:  # placed wholly outside: nothing to combine
        return out.clamp(0.0, 1.0)
    src, dst = source[:, :bottom - y, :right - x], out[:, y:bottom, x:right]
    if operation == "multiply":
        result = dst * src
    elif operation == "add":
        result = dst + src
    elif operation == "subtract":
        result = dst - src
    elif operation in _LOGIC:
        result = _LOGIC[operation](dst.round().bool(), src.round().bool()).float()
    else:
        raise ValueError(f"unknown mask operation {operation!r}")
    out[:, y:bottom, x:right] = result
    return out.clamp(0.0, 1.0)


def outpaint_mask(height: int, width: int, top: int, bottom: int, left: int, right: int,
                  feathering: int) -> torch.Tensor:
    """The mask of ImagePadForOutpaint, [1, H + top + bottom, W + left + right]: 1 on the new border;
    over the old image 0, except within `feathering` pixels of a padded side, where it rises as
    ((feathering - d) / feathering)² with d the distance to the nearest padded side. No feathering
    when 2·feathering does not fit inside the image."""
    mask = torch.ones((height + top + bottom, width + left + right), dtype=torch.float32)
    inner = torch.zeros((height, width), dtype=torch.float64)
    if feathering > 0 and feathering * 2 < height and feathering * 2 < width:
        i = torch.arange(height, dtype=torch.float64)[:, None]
        j = torch.arange(width, dtype=torch.float64)[None, :]
        far_h, far_w = torch.full_like(i, height), torch.full_like(j, width)
        d = torch.minimum(torch.minimum(i if top else far_h, height - i if bottom else far_h),
                          torch.minimum(j if left else far_w, width - j if right else far_w))
        v = (feathering - d) / feathering
        inner = torch.where(d < feathering, v * v, inner)
    mask[top:top + height, left:left + width] = inner.float()
    return mask[None]


def inpaint_prepare(pixels: torch.Tensor, mask: torch.Tensor, grow_by: int, cell: int = 8):
    """VAEEncodeForInpaint's arithmetic. pixels IMAGE [B, H, W, C], mask MASK.

    Returns (pixels to encode, noise mask [B, 1, h, w] at pixel resolution):
    - the mask is resized bilinear to the image; both are centre-cropped to whole `cell`s;
    - pixels where mask.round() == 1 become 0.5 (grey) in the first three channels;
    - the noise mask is mask.round() grown by a grow_by×grow_by box (padding ceil((grow_by-1)/2):
      asymmetric for an even size: 6 grows 2 px up/left and 3 px down/right), clamped, rounded.
    """
    import math

    h, w = pixels.shape[1] // cell * cell, pixels.shape[2] // cell * cell
    mask = F.interpolate(mask.reshape((-1, 1, mask.shape[-2], mask.shape[-1])).float(),
                         size=(pixels.shape[1], pixels.shape[2]), mode="bilinear")
    pixels = pixels.clone()
    if (h, w) != tuple(pixels.shape[1:3]):
        dy, dx = (pixels.shape[1] % cell) // 2, (pixels.shape[2] % cell) // 2
        pixels = pixels[:, dy:h + dy, dx:w + dx, :]
        mask = mask[:, :, dy:h + dy, dx:w + dx]
    if grow_by == 0:
        grown = mask
    else:
        kernel = torch.ones((1, 1, grow_by, grow_by))
        grown = torch.clamp(F.conv2d(mask.round(), kernel, padding=math.ceil((grow_by - 1) / 2)), 0, 1)
    keep = (1.0 - mask.round()).squeeze(1)
    for c in range(3):
        pixels[:, :, :, c] -= 0.5
        pixels[:, :, :, c] *= keep
        pixels[:, :, :, c] += 0.5
    return pixels, grown[:, :, :h, :w].round()
