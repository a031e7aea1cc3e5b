"""Model patches: functions a patched MODEL carries (ModelPatches) and the sampler applies on use.

    freeu(...)           output-block patch     FreeU / FreeU_V2 (Si et al. 2023)
    rescale_cfg(...)     CFG replacement        RescaleCFG (Lin et al. 2024)
    perp_neg(...)        CFG replacement        PerpNeg (Armandpour et al. 2023)
    self_attention_guidance(...)  attention + post-CFG   SAG (Hong et al. 2023)
    deep_shrink(...)     input/output patches   PatchModelAddDownscale (Kohya's "Deep Shrink")

Each returns what `DiffusionModel.patched(...)` takes; none touches the UNet's weights. Numbers
follow ComfyUI 0.3.64's implementations of the same nodes.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from ..core.values import ConditioningEntry
from ..imaging.ops import resize_bchw

# -- FreeU ------------------------------------------------------------------------------------------


def fourier_filter(x: torch.Tensor, threshold: int, scale: float) -> torch.Tensor:
    """Scale the lowest spatial frequencies (a 2·threshold square around DC) of x by `scale`."""
    freq = torch.fft.fftshift(torch.fft.fftn(x.float(), dim=(-2, -1)), dim=(-2, -1))  # [B, C, H, W]
    b, c, h, w = freq.shape
    mask = torch.ones((b, c, h, w), device=x.device)
    crow, ccol = h // 2, w // 2
    mask[..., crow - threshold:crow + threshold, ccol - threshold:ccol + threshold] = scale
    filtered = torch.fft.ifftn(torch.fft.ifftshift(freq * mask, dim=(-2, -1)), dim=(-2, -1)).real
    return filtered.to(x.dtype)


def freeu(model_channels: int, b1: float, b2: float, s1: float, s2: float, v2: bool = False):
    """FreeU (Si et al. 2023, arXiv:2309.11497): in decoder blocks whose input has 4× / 2× the base
    channels, amplify the backbone's first half of channels by b and damp the skip's low
    frequencies by s. V2 scales the backbone by its normalised channel mean instead of uniformly."""
    scales = {model_channels * 4: (b1, s1), model_channels * 2: (b2, s2)}

    def output_block(h: torch.Tensor, skip: torch.Tensor, options: dict) -> tuple[torch.Tensor, torch.Tensor]:
        scale = scales.get(int(h.shape[1]))
        if scale is None:
            return h, skip
        half = h.shape[1] // 2
        if v2:
            mean = h.mean(1).unsqueeze(1)  # [B, 1, H, W]
            flat = mean.view(mean.shape[0], -1)
            lo, hi = flat.min(dim=-1, keepdim=True)[0], flat.max(dim=-1, keepdim=True)[0]
            mean = (mean - lo[:, :, None, None]) / (hi - lo)[:, :, None, None]
            factor = (scale[0] - 1) * mean + 1
        else:
            factor = scale[0]
        h = torch.cat([h[:, :half] * factor, h[:, half:]], dim=1)
        return h, fourier_filter(skip, threshold=1, scale=scale[1])

    return output_block


# -- CFG replacements ---------------------------------------------------------------------------------


def rescale_cfg(multiplier: float):
    """Rescaled CFG (Lin et al. 2024, arXiv:2305.08891 §3.4): match the guided v-prediction's std to
    the conditional one's, blended by `multiplier`, to undo CFG's over-exposure."""

    def cfg_function(args: dict) -> torch.Tensor:
        x_orig, scale = args["input"], args["cond_scale"]
        cond, uncond = args["cond"], args["uncond"]
        sigma = args["sigma"].view(args["sigma"].shape[:1] + (1,) * (cond.ndim - 1))  # [B, 1, 1, 1]
        # 1. To v-prediction space, where the rescale is defined.
        x = x_orig / (sigma * sigma + 1.0)
        cond = ((x - (x_orig - cond)) * (sigma**2 + 1.0) ** 0.5) / sigma
        uncond = ((x - (x_orig - uncond)) * (sigma**2 + 1.0) ** 0.5) / sigma
        # 2. CFG, rescaled to the conditional std, blended.
        x_cfg = uncond + scale * (cond - uncond)
        ro_pos = torch.std(cond, dim=(1, 2, 3), keepdim=True)
        ro_cfg = torch.std(x_cfg, dim=(1, 2, 3), keepdim=True)
        x_final = multiplier * (x_cfg * (ro_pos / ro_cfg)) + (1.0 - multiplier) * x_cfg
        # 3. Back to the noise prediction the caller expects.
        return x_orig - (x - x_final * sigma / (sigma * sigma + 1.0) ** 0.5)

    return cfg_function


def perp_neg(empty: list[ConditioningEntry], neg_scale: float):
    """Perp-Neg (Armandpour et al. 2023, arXiv:2304.04968): guide away from the negative prompt only
    along its component perpendicular to the positive one, both measured from an empty prompt."""

    def cfg_function(args: dict) -> torch.Tensor:
        denoiser, x, sigma = args["denoiser"], args["input"], args["sigma"]
        nocond = denoiser.resolve(empty, x)
        (pred_nocond,) = denoiser.calc_cond_batch([nocond], x, sigma)
        pos = args["cond_denoised"] - pred_nocond
        neg = args["uncond_denoised"] - pred_nocond
        # the projection is 0/0 when the positive prediction equals the empty one: drop it then
        scale = torch.nan_to_num(torch.mul(neg, pos).sum() / (torch.norm(pos) ** 2), nan=0.0, posinf=0.0, neginf=0.0)
        perp = neg - scale * pos
        return x - (pred_nocond + args["cond_scale"] * (pos - perp * neg_scale))

    return cfg_function


# -- Self-attention guidance --------------------------------------------------------------------------


def attention_with_scores(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int):
    """Plain softmax attention over [B, N, heads·d] inputs; (out [B, N, heads·d], scores [B·heads, N, N])."""
    b, _, inner = q.shape
    d = inner // heads

    def split(t):  # [B, N, heads·d] -> [B·heads, N, d]
        return t.reshape(b, -1, heads, d).permute(0, 2, 1, 3).reshape(b * heads, -1, d)

    q, k, v = split(q), split(k), split(v)
    scores = torch.einsum("bid,bjd->bij", q, k) * d**-0.5  # [B·heads, N, N]
    scores = scores.softmax(dim=-1)
    out = torch.einsum("bij,bjd->bid", scores.to(v.dtype), v)
    return out.reshape(b, heads, -1, d).permute(0, 2, 1, 3).reshape(b, -1, heads * d), scores


def gaussian_blur_2d(img: torch.Tensor, kernel_size: int, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur with reflect padding, per channel."""
    half = (kernel_size - 1) * 0.5
    x = torch.linspace(-half, half, steps=kernel_size)
    pdf = torch.exp(-0.5 * (x / sigma).pow(2))
    kernel = (pdf / pdf.sum()).to(device=img.device, dtype=img.dtype)
    kernel2d = torch.mm(kernel[:, None], kernel[None, :]).expand(img.shape[-3], 1, kernel_size, kernel_size)
    pad = kernel_size // 2
    return F.conv2d(F.pad(img, [pad, pad, pad, pad], mode="reflect"), kernel2d, groups=img.shape[-3])


def blur_where_attended(x0: torch.Tensor, scores: torch.Tensor, sigma: float, threshold: float = 1.0) -> torch.Tensor:
    """x0 blurred where the middle block's self-attention concentrates (its summed attention received
    exceeds `threshold`), unchanged elsewhere."""
    _, hw1, hw2 = scores.shape
    b, _, lh, lw = x0.shape
    attended = scores.reshape(b, -1, hw1, hw2).mean(1).sum(1) > threshold  # [B, hw1]
    ratio = 2 ** (math.ceil(math.sqrt(lh * lw / hw1)) - 1).bit_length()
    mask = attended.reshape(b, math.ceil(lh / ratio), math.ceil(lw / ratio)).unsqueeze(1).type(scores.dtype)
    mask = F.interpolate(mask, (lh, lw))  # [B, 1, lh, lw]
    blurred = gaussian_blur_2d(x0, kernel_size=9, sigma=sigma)
    return blurred * mask + x0 * (1 - mask)


def self_attention_guidance(scale: float, blur_sigma: float) -> tuple[Any, Any]:
    """SAG (Hong et al. 2023, arXiv:2210.00939): blur the unconditional x0 where the middle block
    attends, re-predict from that degraded input, and push away from the result.
    Returns (attention replacement for ("middle", 0, 0), post-CFG function)."""
    recorded: dict[str, torch.Tensor] = {}

    def attn1(q, k, v, options):
        heads, sides = options["n_heads"], options["cond_or_uncond"]
        if 1 not in sides:
            return F.scaled_dot_product_attention(*(t.reshape(t.shape[0], -1, heads, t.shape[-1] // heads)
                                                    .transpose(1, 2) for t in (q, k, v))
                                                  ).transpose(1, 2).reshape(q.shape)
        out, scores = attention_with_scores(q, k, v, heads)
        n = heads * (q.shape[0] // len(sides))
        i = sides.index(1)
        recorded["uncond"] = scores[n * i:n * (i + 1)]  # the unconditional chunk's maps
        return out

    def post_cfg(args: dict) -> torch.Tensor:
        result, uncond_pred, x = args["denoised"], args["uncond_denoised"], args["input"]
        if min(result.shape[2:]) <= 4 or "uncond" not in recorded or args["uncond"] is None:
            return result  # too small to pad for the blur, or no unconditional pass to compare with
        degraded = blur_where_attended(uncond_pred, recorded["uncond"], blur_sigma)
        (sag,) = args["denoiser"].calc_cond_batch([args["uncond"]], degraded + x - uncond_pred, args["sigma"])
        return result + (degraded - sag) * scale

    return attn1, post_cfg


# -- Deep Shrink ------------------------------------------------------------------------------------------


def deep_shrink(block_number: int, factor: float, sigma_start: float, sigma_end: float, after_skip: bool,
                downscale_method: str, upscale_method: str) -> dict[str, Any]:
    """Kohya's Deep Shrink: shrink the UNet's features after input block `block_number` while
    sigma_end < σ ≤ sigma_start, and grow them back where they meet a larger skip."""

    def input_block(h: torch.Tensor, options: dict) -> torch.Tensor:
        if options["block"][1] == block_number:
            sigma = float(options["sigmas"][0])
            if sigma_end < sigma <= sigma_start:
                h = resize_bchw(h, round(h.shape[-1] * (1.0 / factor)), round(h.shape[-2] * (1.0 / factor)),
                                downscale_method)
        return h

    def output_block(h: torch.Tensor, skip: torch.Tensor, options: dict) -> tuple[torch.Tensor, torch.Tensor]:
        if h.shape[2] != skip.shape[2]:
            h = resize_bchw(h, skip.shape[-1], skip.shape[-2], upscale_method)
        return h, skip

    key = "input_block_after_skip" if after_skip else "input_block"
    return {key: input_block, "output_block": output_block}
