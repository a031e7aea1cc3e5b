"""Fewer model calls: step caching (DeepCache) and guidance limited to a σ interval.

DeepCache (Ma et al. 2023, arXiv:2312.00858): the UNet's deep, low-resolution features change little
from one sampling step to the next, its shallow ones a lot. Every `interval` steps the whole UNet
runs and the features entering the up-path at depth `depth` are kept; on the steps between, only the
shallow part runs (input blocks 0..depth and the output blocks that take their skips) and the kept
features stand in for everything below. `depth` counts ComfyUI input blocks (conv_in = 0), so the
output block fed from the cache is number n_output − depth − 1, the one whose skip is input block
`depth` (as the ComfyUI DeepCache nodes number it).

The settings live in the MODEL's patches (frozen, shared by every run and branch); the cached
features live in a `DeepCacheRun` that the run's UNet caller owns (unet_patched.PatchedUNetCaller
is built per sampling run), so nothing outlives a run or reaches the base MODEL.

GuidanceInterval (Kynkäänniemi et al. 2024, arXiv:2404.07724): CFG only for σ inside
[sigma_end, sigma_start]; outside it the step is sampled as at cfg 1, so the uncond pass is not run
at all (guidance.py reads `ModelPatches.guidance_interval`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass(frozen=True)
class DeepCacheSettings:
    """What the DeepCache node asked for: refresh every `interval` steps, cache at input block
    `depth`, and use the cache only for sigma_end ≤ σ ≤ sigma_start."""

    interval: int = 3
    depth: int = 1
    sigma_start: float = math.inf
    sigma_end: float = 0.0


@dataclass
class CachePlan:
    """One UNet call's part in the caching, for forward_with_patches: stop the input path after
    block `depth` and start the output path from `reuse` (a shallow call), or run everything and
    hand the features entering output block n_output − depth − 1 to `keep` (a full call)."""

    depth: int
    reuse: torch.Tensor | None = None
    kept: list[torch.Tensor] = field(default_factory=list)

    def keep(self, h: torch.Tensor) -> None:
        self.kept.append(h)


@dataclass
class _Kept:
    features: torch.Tensor  # [B, C, h, w]: the features entering the cached output block
    step: int  # the step they were computed at


class DeepCacheRun:
    """The cache of one sampling run, one entry per UNet batch layout (which conditionings, which
    sides, which crop sizes). A step is a new σ; each layout runs in full on its first call, then
    whenever `interval` steps have passed since its last full call, and whenever σ is outside the
    caching range; its other calls reuse its features."""

    def __init__(self, settings: DeepCacheSettings):
        self.settings = settings
        self.step = -1
        self._sigma: float | None = None
        self._kept: dict[tuple, _Kept] = {}
        self.full_calls = 0
        self.shallow_calls = 0

    def plan(self, key: tuple, sigma: float) -> CachePlan:
        # 1. A new σ starts a new step (several calls of one step share it: cond/uncond, areas, SAG).
        if sigma != self._sigma:
            self.step += 1
            self._sigma = sigma
        s = self.settings
        kept = self._kept.get(key)
        in_range = s.sigma_end <= sigma <= s.sigma_start
        # 2. Shallow only when this layout has features young enough and σ is in the range.
        if in_range and kept is not None and self.step - kept.step < s.interval:
            self.shallow_calls += 1
            return CachePlan(s.depth, reuse=kept.features)
        self.full_calls += 1
        return CachePlan(s.depth)

    def done(self, key: tuple, plan: CachePlan) -> None:
        """After a full call: its features become this layout's cache."""
        if plan.reuse is None and plan.kept:
            self._kept[key] = _Kept(plan.kept[-1], self.step)

    def clear(self) -> None:
        self._kept.clear()


def layout_key(x_in: torch.Tensor, entries, options: dict[str, Any]) -> tuple:
    """What makes two UNet calls' features comparable: the conditionings and sides batched, their
    crops, and the input's shape."""
    return (tuple(id(entry) for entry, _n in entries), tuple(options.get("cond_or_uncond") or ()),
            tuple(options.get("areas") or ()), tuple(x_in.shape))


def count_blocks(unet) -> tuple[int, int]:
    """(input blocks, output blocks) in ComfyUI's numbering."""
    from .unet_patched import _layers

    n_in = 1
    for down in unet.down_blocks:
        n_in += len(_layers(down)) + (1 if getattr(down, "downsamplers", None) is not None else 0)
    n_out = sum(len(_layers(up)) for up in unet.up_blocks)
    return n_in, n_out


def in_guidance_interval(interval: tuple[float, float] | None, sigma) -> bool:
    """Is σ inside [low, high] of a MODEL's guidance interval (always, without one)?"""
    if interval is None:
        return True
    high, low = interval
    s = float(torch.as_tensor(sigma).reshape(-1).max())  # [B] σ: one decision for the batch
    return low <= s <= high


def guidance_scale_at(interval: tuple[float, float] | None, sigma, cfg: float) -> float:
    """The CFG scale at σ: `cfg` inside the MODEL's guidance interval, 1 outside."""
    return cfg if in_guidance_interval(interval, sigma) else 1.0
