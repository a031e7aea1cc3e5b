"""Tensor image helpers shared by the image, latent and mask nodes: ComfyUI's resizing (its centre
crop, its spherical "bislerp" and PIL's Lanczos), batch repeats, compositing, PIL conversion.

Tensors are [B, C, H, W] here unless a name says otherwise; IMAGE is [B, H, W, C], MASK [B, H, W].
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def repeat_to_batch(x: torch.Tensor, batch: int) -> torch.Tensor:
    """Cut or cycle x along dim 0 to `batch` entries (ComfyUI's repeat_to_batch_size)."""
    n = x.shape[0]
    if n > batch:
        return x[:batch]
    if n < batch:
        return x.repeat((math.ceil(batch / n),) + (1,) * (x.ndim - 1))[:batch]
    return x


def center_crop_to_aspect(x: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """Crop [..., H, W] around the centre to the aspect ratio width:height. The same number of rows
    (or columns) goes from both sides, rounded half to even, as ComfyUI crops before resizing."""
    h, w = x.shape[-2:]
    old, new = w / h, width / height
    left = top = 0
    if old > new:
        left = round((w - w * (new / old)) / 2)
    elif old < new:
        top = round((h - h * (old / new)) / 2)
    return x[..., top:h - top, left:w - left]


def _slerp(a: torch.Tensor, b: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """Rows of a [N, C] towards rows of b by r [N, 1]: directions on the sphere, lengths linearly.
    Nearly equal directions keep a; opposite ones fall back to a straight line."""
    channels = a.shape[-1]
    len_a, len_b = a.norm(dim=-1, keepdim=True), b.norm(dim=-1, keepdim=True)
    unit_a, unit_b = a / len_a, b / len_b
    unit_a[len_a.expand(-1, channels) == 0.0] = 0.0
    unit_b[len_b.expand(-1, channels) == 0.0] = 0.0
    cos = (unit_a * unit_b).sum(1)
    angle = torch.acos(cos)
    sin = torch.sin(angle)
    t = r.squeeze(1)
    out = (torch.sin((1.0 - t) * angle) / sin).unsqueeze(1) * unit_a + (torch.sin(t * angle) / sin).unsqueeze(1) * unit_b
    out *= (len_a * (1.0 - r) + len_b * r).expand(-1, channels)
    same, opposite = cos > 1 - 1e-5, cos < 1e-5 - 1
    out[same] = a[same]
    out[opposite] = (a * (1.0 - r) + b * r)[opposite]
    return out


def _neighbours(old: int, new: int, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For each of `new` positions: the two source indices a bilinear resize reads and the weight of
    the second (the source coordinate, as F.interpolate computes it, split into floor and fraction)."""
    index = torch.arange(old, dtype=torch.float32, device=device).reshape(1, 1, 1, -1)
    coord = F.interpolate(index, size=(1, new), mode="bilinear")
    weight = coord - coord.floor()
    upper = index + 1
    upper[..., -1] -= 1
    upper = F.interpolate(upper, size=(1, new), mode="bilinear")
    return weight, coord.to(torch.int64), upper.to(torch.int64)


def bislerp(x: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """Resize [B, C, H, W] like bilinear, but blend each cell's channel vector spherically: first
    along the width, then along the height (ComfyUI's "bislerp" latent upscale)."""
    dtype = x.dtype
    x = x.float()
    n, c, h, w = x.shape
    weight, lo, hi = _neighbours(w, width, x.device)
    a = x.gather(-1, lo.expand(n, c, h, -1)).movedim(1, -1).reshape(-1, c)
    b = x.gather(-1, hi.expand(n, c, h, -1)).movedim(1, -1).reshape(-1, c)
    r = weight.expand(n, 1, h, -1).movedim(1, -1).reshape(-1, 1)
    x = _slerp(a, b, r).reshape(n, h, width, c).movedim(-1, 1)
    weight, lo, hi = _neighbours(h, height, x.device)
    a = x.gather(-2, lo.reshape(1, 1, -1, 1).expand(n, c, -1, width)).movedim(1, -1).reshape(-1, c)
    b = x.gather(-2, hi.reshape(1, 1, -1, 1).expand(n, c, -1, width)).movedim(1, -1).reshape(-1, c)
    r = weight.reshape(1, 1, -1, 1).expand(n, 1, -1, width).movedim(1, -1).reshape(-1, 1)
    return _slerp(a, b, r).reshape(n, height, width, c).movedim(-1, 1).to(dtype)


def lanczos(x: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """Resize RGB [B, 3, H, W] in 0..1 with PIL's Lanczos filter, through 8-bit pixels as ComfyUI does."""
    import numpy as np
    from PIL import Image

    out = []
    for image in x:
        array = np.clip(255.0 * image.movedim(0, -1).detach().cpu().float().numpy(), 0, 255).astype(np.uint8)
        resized = Image.fromarray(array).resize((width, height), resample=Image.Resampling.LANCZOS)
        out.append(torch.from_numpy(np.asarray(resized).astype(np.float32) / 255.0).movedim(-1, 0))
    return torch.stack(out).to(x.device, x.dtype)


def resize_bchw(x: torch.Tensor, width: int, height: int, method: str, crop: str = "disabled") -> torch.Tensor:
    """ComfyUI's common_upscale: optional centre crop to the new aspect ratio, then `method`
    (nearest-exact, bilinear, area, bicubic: F.interpolate without antialiasing; bislerp; lanczos)."""
    if crop == "center":
        x = center_crop_to_aspect(x, width, height)
    if method == "bislerp":
        return bislerp(x, width, height)
    if method == "lanczos":
        return lanczos(x, width, height)
    if method not in ("nearest-exact", "bilinear", "area", "bicubic"):
        raise ValueError(f"unknown resize method {method!r}")
    return F.interpolate(x, size=(height, width), mode=method)


def fit_like(x: torch.Tensor, target_shape, *, repeat_batch: bool = True) -> torch.Tensor:
    """Resize x [B, C, H, W] (bilinear, centre crop) to target's size where they differ, and cycle its
    batch to target's (ComfyUI's reshape_latent_to, used by the latent arithmetic nodes)."""
    if tuple(x.shape[1:]) != tuple(target_shape[1:]):
        x = resize_bchw(x, target_shape[-1], target_shape[-2], "bilinear", "center")
    return repeat_to_batch(x, target_shape[0]) if repeat_batch else x


def composite(destination: torch.Tensor, source: torch.Tensor, x: int, y: int, mask: torch.Tensor | None = None,
              multiplier: int = 8, resize_source: bool = False) -> torch.Tensor:
    """Paste source [B, C, h, w] into destination [B, C, H, W] (changed in place and returned) with its
    top-left at (x, y) in pixels; `multiplier` pixels make one cell (8 for latents, 1 for images).
    A mask (any [.., mh, mw]) is resized bilinear to the source and weights it; outside the
    destination nothing is written."""
    source = source.to(destination.device)
    if resize_source:
        source = F.interpolate(source, size=tuple(destination.shape[-2:]), mode="bilinear")
    source = repeat_to_batch(source, destination.shape[0])
    x = max(-source.shape[3] * multiplier, min(x, destination.shape[3] * multiplier))
    y = max(-source.shape[2] * multiplier, min(y, destination.shape[2] * multiplier))
    left, top = x // multiplier, y // multiplier
    right, bottom = left + source.shape[3], top + source.shape[2]
    if mask is None:
        mask = torch.ones_like(source)
    else:
        mask = mask.to(destination.device, copy=True).reshape(-1, 1, mask.shape[-2], mask.shape[-1])
        mask = repeat_to_batch(F.interpolate(mask, size=tuple(source.shape[-2:]), mode="bilinear"), source.shape[0])
    visible_w = destination.shape[3] - left + min(0, x)
    visible_h = destination.shape[2] - top + min(0, y)
    mask = mask[:, :, :visible_h, :visible_w]
    pasted = mask * source[:, :, :visible_h, :visible_w]
    kept = (torch.ones_like(mask) - mask) * destination[:, :, top:bottom, left:right]
    destination[:, :, top:bottom, left:right] = pasted + kept
    return destination


def match_channels(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Give two IMAGEs the same channel count: an RGB one gains an opaque alpha channel."""
    if a.shape[-1] < b.shape[-1]:
        a = F.pad(a, (0, b.shape[-1] - a.shape[-1]), value=1.0)
    elif b.shape[-1] < a.shape[-1]:
        b = F.pad(b, (0, a.shape[-1] - b.shape[-1]), value=1.0)
    return a, b


def gaussian_kernel(size: int, sigma: float, device=None, dtype=torch.float32) -> torch.Tensor:
    """A size×size Gaussian over the square [-1, 1]² (not over pixel distances), summing to 1."""
    ys, xs = torch.meshgrid(torch.linspace(-1, 1, size, device=device), torch.linspace(-1, 1, size, device=device),
                            indexing="ij")
    d = torch.sqrt(xs * xs + ys * ys)
    g = torch.exp(-(d * d) / (2.0 * sigma * sigma))
    return (g / g.sum()).to(dtype)


def filter_image(image: torch.Tensor, kernel: torch.Tensor, radius: int) -> torch.Tensor:
    """Convolve every channel of IMAGE [B, H, W, C] with a (2r+1)² kernel, edges reflected."""
    channels = image.shape[-1]
    weight = kernel.to(image.dtype).repeat(channels, 1, 1).unsqueeze(1)
    x = F.pad(image.permute(0, 3, 1, 2), (radius, radius, radius, radius), "reflect")
    out = F.conv2d(x, weight, padding=kernel.shape[-1] // 2, groups=channels)[:, :, radius:-radius, radius:-radius]
    return out.permute(0, 2, 3, 1)


def sharpen_kernel(size: int, sigma: float, alpha: float) -> torch.Tensor:
    """Unsharp-mask kernel: the Gaussian scaled by −10·alpha, with the centre raised so it sums to 1."""
    kernel = gaussian_kernel(size, sigma) * -(alpha * 10)
    centre = size // 2
    kernel[centre, centre] = kernel[centre, centre] - kernel.sum() + 1.0
    return kernel


def _soft_light_curve(x: torch.Tensor) -> torch.Tensor:
    return torch.where(x <= 0.25, ((16 * x - 12) * x + 4) * x, torch.sqrt(x))


_BLEND = {
    "normal": lambda a, b: b,
    "multiply": lambda a, b: a * b,
    "screen": lambda a, b: 1 - (1 - a) * (1 - b),
    "overlay": lambda a, b: torch.where(a <= 0.5, 2 * a * b, 1 - 2 * (1 - a) * (1 - b)),
    "soft_light": lambda a, b: torch.where(b <= 0.5, a - (1 - 2 * b) * a * (1 - a),
                                           a + (2 * b - 1) * (_soft_light_curve(a) - a)),
    "difference": lambda a, b: a - b,
}


def blend_images(image1: torch.Tensor, image2: torch.Tensor, factor: float, mode: str) -> torch.Tensor:
    """ImageBlend: image2 resized (bicubic, centre crop) to image1 where they differ, combined by
    `mode`, mixed as image1·(1 − factor) + combined·factor and clamped; image1's alpha is kept."""
    image1, image2 = match_channels(image1, image2)
    image2 = image2.to(image1.device)
    if image1.shape != image2.shape:
        image2 = resize_bchw(image2.permute(0, 3, 1, 2), image1.shape[2], image1.shape[1], "bicubic", "center")
        image2 = image2.permute(0, 2, 3, 1)
    out = torch.clamp(image1 * (1 - factor) + _BLEND[mode](image1, image2) * factor, 0, 1)
    if image1.shape[-1] == 4:  # alpha is transparency, not colour
        out[..., 3] = image1[..., 3]
    return out


def image_to_pil(image: torch.Tensor):
    """One IMAGE [H, W, 3] in 0..1 to a PIL image, truncating to uint8 as ComfyUI does."""
    import numpy as np
    from PIL import Image

    array = np.clip(255.0 * image.detach().cpu().float().numpy(), 0, 255).astype(np.uint8)
    return Image.fromarray(array)


def pil_to_image(pil) -> torch.Tensor:
    """A PIL RGB image to IMAGE [1, H, W, 3] float in 0..1."""
    import numpy as np

    array = np.asarray(pil.convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(array)[None]
