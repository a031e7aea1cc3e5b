"""Conditioning entries made ready for sampling, and ComfyUI's batching of them into UNet calls.

A CONDITIONING side (positive, negative…) is a list of entries; each may carry an area, a mask, a
strength and a timestep range (ComfyUI's keys in `ConditioningEntry.extras`). Before sampling,
`process_conds` resolves them against the latent (ComfyUI's `process_conds`): percentage areas to
latent cells, masks to the latent's size (and to their bounding box for "mask bounds"), start/end
percents to sigmas, and every area on one side gets a twin on the other sides carrying that side's
prompt, so guidance inside an area compares like with like. Each step `calc_cond_batch` runs every
active entry on its crop of the latent, batching entries whose inputs can share one UNet call, and
blends the predictions with their weights (ComfyUI's `calc_cond_batch` / `get_area_and_mult`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import torch

from ..core.values import ConditioningEntry
from .model_sampling import ModelSampling

# Token lengths whose LCM exceeds this multiple of the shorter are not batched together
# (ComfyUI's CONDCrossAttn.can_concat limit): repeating tokens that often would cost more than it saves.
MAX_TOKEN_REPEAT = 4
FEATHER = 8  # latent cells over which an area's weight ramps up at edges inside the image


@dataclass
class Cond:
    """One conditioning entry resolved for a latent of a given size (ComfyUI's processed cond)."""

    entry: ConditioningEntry  # what the UNet sees: the text hidden states (and pooled output)
    area: tuple[int, int, int, int] | None = None  # (h, w, y, x) in latent cells
    strength: float = 1.0
    mask: torch.Tensor | None = None  # [B, h, w] at the latent's size
    mask_strength: float = 1.0
    sigma_start: float | None = None  # skipped while sigma > sigma_start
    sigma_end: float | None = None  # skipped while sigma < sigma_end


@dataclass
class Chunk:
    """One cond's share of a step: its crop of x and its per-cell weight."""

    x: torch.Tensor  # [B, C, h, w]: the area's crop of the latent
    mult: torch.Tensor  # [B, C, h, w]: strength × mask × edge feather
    cond: Cond
    side: int  # which list of calc_cond_batch's `sides` it belongs to


# -- resolving against the latent --------------------------------------------------------------------


def _mask_bounds(mask: torch.Tensor) -> tuple[int, int, int, int]:
    """(h, w, y, x) of the non-zero cells of any mask of the batch, at least 8×8 (ComfyUI's rule);
    (8, 8, 0, 0) for an all-zero mask, which then weighs nothing anyway."""
    bounds = mask.abs().max(dim=0).values  # [h, w]
    if not bool((bounds != 0).any()):
        return (8, 8, 0, 0)
    ys, xs = torch.where(bounds != 0)
    y0, y1, x0, x1 = int(ys.min()), int(ys.max()), int(xs.min()), int(xs.max())
    return (max(8, y1 - y0 + 1), max(8, x1 - x0 + 1), y0, x0)


def resolve(entry: ConditioningEntry, latent_hw: tuple[int, int], ms: ModelSampling, device) -> Cond:
    """The entry's extras in latent cells and sigmas (areas, masks, timestep range)."""
    ex = entry.extras
    h, w = latent_hw
    area = ex.get("area")
    # 1. A percentage area becomes cells: size at least 1, offsets rounded.
    if area is not None and area[0] == "percentage":
        _, ph, pw, py, px = area
        area = (max(1, round(ph * h)), max(1, round(pw * w)), round(py * h), round(px * w))
    # 2. A mask is resized (bilinear) to the latent; "mask bounds" crops the run to its box.
    mask = ex.get("mask")
    if mask is not None:
        mask = mask.to(device=device, dtype=torch.float32)
        if mask.ndim == 2:
            mask = mask.unsqueeze(0)
        if tuple(mask.shape[1:]) != (h, w):
            mask = torch.nn.functional.interpolate(mask.unsqueeze(1), size=(h, w), mode="bilinear").squeeze(1)
        if ex.get("set_area_to_bounds", False):
            area = _mask_bounds(mask)
    # 3. Start/end percents of the sampling become the sigmas they begin and stop at.
    start = ms.percent_to_sigma(ex["start_percent"]) if "start_percent" in ex else None
    end = ms.percent_to_sigma(ex["end_percent"]) if "end_percent" in ex else None
    return Cond(entry=entry, area=None if area is None else tuple(int(a) for a in area),
                strength=float(ex.get("strength", 1.0)), mask=mask, mask_strength=float(ex.get("mask_strength", 1.0)),
                sigma_start=start, sigma_end=end)


def _inside(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> bool:
    """Is area a within area b?"""
    return a[2] >= b[2] and a[3] >= b[3] and a[0] + a[2] <= b[0] + b[2] and a[1] + a[3] <= b[1] + b[3]


def _add_twin(side: list[Cond], c: Cond) -> None:
    """Give `side` an entry over c's area, carrying the prompt of its smallest entry that covers
    that area (an entry without an area covers everything), unless one has that exact area."""
    if c.area is None:
        return
    smallest: Cond | None = None
    for other in side:
        if other.area is not None:
            if _inside(c.area, other.area) and (smallest is None or smallest.area is None
                                                or math.prod(smallest.area[:2]) > math.prod(other.area[:2])):
                smallest = other
        elif smallest is None:
            smallest = other
    if smallest is None or smallest.area == c.area:
        return
    side.append(replace(c, entry=smallest.entry))


def share_control_with_uncond(sides: dict[str, Sequence[ConditioningEntry] | None]):
    """The old ControlNetApply steers the negative side too: when no whole-image negative entry has
    a ControlNet of its own, the whole-image negative entries take the positive side's (those set to
    apply to the uncond side), in turn (ComfyUI's apply_empty_x_to_equal_area)."""
    positive, negative = sides.get("positive"), sides.get("negative")
    if not positive or not negative:
        return sides
    controls = [e.extras["control"] for e in positive if e.extras.get("control") is not None
                and e.extras["control"].apply_to_uncond and e.extras.get("area") is None]
    whole = [k for k, e in enumerate(negative) if e.extras.get("area") is None]
    if not controls or not whole or any(negative[k].extras.get("control") is not None for k in whole):
        return sides
    negative = list(negative)
    for i, control in enumerate(controls):
        k = whole[i % len(whole)]
        negative[k] = replace(negative[k], extras={**negative[k].extras, "control": control})
    return {**sides, "negative": negative}


def process_conds(sides: dict[str, Sequence[ConditioningEntry] | None], latent_hw: tuple[int, int],
                  ms: ModelSampling, device) -> dict[str, list[Cond] | None]:
    """Every side's entries resolved against the latent, areas mirrored across the sides."""
    sides = share_control_with_uncond(sides)
    out = {k: None if v is None else [resolve(e, latent_hw, ms, device) for e in v] for k, v in sides.items()}
    present = [k for k, v in out.items() if v is not None]
    for k in present:
        i = 0
        while i < len(out[k]):  # twins appended to a side are visited too, as in ComfyUI
            for other in present:
                if other != k:
                    _add_twin(out[other], out[k][i])
            i += 1
    return out


# -- one step ---------------------------------------------------------------------------------------


def chunk_for(cond: Cond, side: int, x: torch.Tensor, sigma: torch.Tensor) -> Chunk | None:
    """The cond's crop and weight at this sigma, or None while its timestep range excludes it."""
    s = float(sigma.reshape(-1)[0])
    if (cond.sigma_start is not None and s > cond.sigma_start) or (cond.sigma_end is not None and s < cond.sigma_end):
        return None
    dims = x.shape[2:]
    area = None if cond.area is None else list(cond.area)
    x_in = x
    if area is not None:
        for i in range(2):  # clamp to the image, then crop
            area[i] = min(dims[i] - area[2 + i], area[i])
            x_in = x_in.narrow(i + 2, area[2 + i], area[i])
    if cond.mask is not None:
        mask = cond.mask[:x_in.shape[0]]
        if area is not None:
            for i in range(2):
                mask = mask.narrow(i + 1, area[2 + i], area[i])
        mask = mask * cond.mask_strength
        mask = mask.unsqueeze(1).repeat(x_in.shape[0] // mask.shape[0], x_in.shape[1], 1, 1)
    else:
        mask = torch.ones_like(x_in)
    mult = mask * cond.strength  # [B, C, h, w]
    if cond.mask is None and area is not None:
        # Feather: weight ramps (t+1)/rr over rr cells at every edge that lies inside the image.
        for i in range(2):
            rr = min(FEATHER, mult.shape[2 + i] // 4)
            if area[2 + i] != 0:
                for t in range(rr):
                    mult.narrow(i + 2, t, 1).mul_((1.0 / rr) * (t + 1))
            if area[i] + area[2 + i] < dims[i]:
                for t in range(rr):
                    mult.narrow(i + 2, area[i] - 1 - t, 1).mul_((1.0 / rr) * (t + 1))
    return Chunk(x=x_in, mult=mult, cond=replace(cond, area=None if area is None else tuple(area)), side=side)


def can_batch(a: Chunk, b: Chunk, pooled_matters: bool) -> bool:
    """Can two chunks share one UNet call? Same input shape, the same ControlNet hint (or none), text
    lengths that repeat cheaply to a common length, same pooled shape where the UNet reads it
    (ComfyUI's can_concat_cond)."""
    if a.x.shape != b.x.shape or a.cond.entry.extras.get("control") is not b.cond.entry.extras.get("control"):
        return False
    ca, cb = a.cond.entry.cond, b.cond.entry.cond
    if ca.shape[2] != cb.shape[2]:
        return False
    if ca.shape[1] != cb.shape[1] and math.lcm(ca.shape[1], cb.shape[1]) // min(ca.shape[1], cb.shape[1]) > MAX_TOKEN_REPEAT:
        return False
    if pooled_matters:
        pa, pb = a.cond.entry.pooled, b.cond.entry.pooled
        if (pa is None) != (pb is None) or (pa is not None and pa.shape != pb.shape):
            return False
    return True


def calc_cond_batch(run_batch: Callable[[list[Chunk]], list[torch.Tensor]], sides: Sequence[Sequence[Cond] | None],
                    x: torch.Tensor, sigma: torch.Tensor, pooled_matters: bool = False) -> list[torch.Tensor]:
    """Each side's prediction for x: its entries' x0 predictions, weighted and averaged per cell.

    `run_batch(chunks)` runs one UNet call for chunks that can share it and returns each chunk's
    denoised crop. A side that is None or has no active entry predicts 0 (ComfyUI's cfg-1 skip).
    """
    out = [torch.zeros_like(x) for _ in sides]
    counts = [torch.ones_like(x) * 1e-37 for _ in sides]
    # 1. Every active entry of every side, on its crop, with its weight.
    to_run = [c for k, side in enumerate(sides) if side is not None for cond in side
              if (c := chunk_for(cond, k, x, sigma)) is not None]
    # 2. Batches: the first waiting chunk and every chunk that can share its call, in order.
    while to_run:
        first = to_run[0]
        batch = [c for c in to_run if can_batch(c, first, pooled_matters)]
        to_run = [c for c in to_run if not any(c is b for b in batch)]
        # 3. Predictions are added where each chunk lies, weighted; the sums are normalised below.
        for chunk, den in zip(batch, run_batch(batch), strict=True):
            o, n = out[chunk.side], counts[chunk.side]
            if chunk.cond.area is not None:
                h, w, y, xx = chunk.cond.area
                o, n = o[:, :, y:y + h, xx:xx + w], n[:, :, y:y + h, xx:xx + w]
            o += den * chunk.mult
            n += chunk.mult
    return [o / n for o, n in zip(out, counts, strict=True)]


# -- conditioning arithmetic (ComfyUI's ConditioningAverage / Concat / ZeroOut) ----------------------


def average(to: Sequence[ConditioningEntry], source: Sequence[ConditioningEntry],
            to_strength: float) -> list[ConditioningEntry]:
    """Each `to` entry blended with the first `source` entry: to·s + source·(1 − s), the source cut
    or zero-padded to the entry's token count; pooled outputs blended the same way."""
    src, src_pooled = source[0].cond, source[0].pooled
    out = []
    for e in to:
        t0 = src[:, :e.cond.shape[1]]
        if t0.shape[1] < e.cond.shape[1]:
            t0 = torch.cat([t0, torch.zeros((1, e.cond.shape[1] - t0.shape[1], e.cond.shape[2]))], dim=1)
        blended = torch.mul(e.cond, to_strength) + torch.mul(t0, 1.0 - to_strength)
        pooled = e.pooled if e.pooled is not None else src_pooled
        if src_pooled is not None and pooled is not None:
            pooled = torch.mul(pooled, to_strength) + torch.mul(src_pooled, 1.0 - to_strength)
        out.append(replace(e, cond=blended, pooled=pooled, extras=dict(e.extras)))
    return out


def concat(to: Sequence[ConditioningEntry], source: Sequence[ConditioningEntry]) -> list[ConditioningEntry]:
    """Each `to` entry followed, along the tokens, by the first `source` entry's (pooled from `to`)."""
    return [replace(e, cond=torch.cat((e.cond, source[0].cond), 1), extras=dict(e.extras)) for e in to]


def zero_out(conditioning: Sequence[ConditioningEntry]) -> list[ConditioningEntry]:
    """Every entry's hidden states and pooled output set to zeros."""
    return [replace(e, cond=torch.zeros_like(e.cond), pooled=None if e.pooled is None else torch.zeros_like(e.pooled),
                    extras=dict(e.extras)) for e in conditioning]
