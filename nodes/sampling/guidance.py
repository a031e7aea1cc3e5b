"""Denoisers D(x, σ) that combine a UNet's predictions for several conditionings (the GUIDER side).

    CFGDenoiser      uncond + (cond − uncond)·cfg       KSampler, CFGGuider, BasicGuider
    DualCFGDenoiser  two prompts and a negative         DualCFGGuider (regular or nested)

Both run their conditionings through `conds.calc_cond_batch` (areas, masks, timestep ranges, batched
as ComfyUI batches them) and combine in x0 space through `cfg_function`, where a patched MODEL's CFG
hooks apply (ComfyUI's sampler_cfg_function / sampler_post_cfg_function, see ModelPatches).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch

from ..core.values import ConditioningEntry, ModelPatches
from .conds import Chunk, Cond, calc_cond_batch, process_conds
from .deepcache import guidance_scale_at, in_guidance_interval
from .model_sampling import ModelSampling

COND, UNCOND = 0, 1  # ComfyUI's cond_or_uncond values: the index of a chunk's side in calc_cond_batch


def repeat_to_batch(t: torch.Tensor, n: int) -> torch.Tensor:
    """t's first axis cut or repeated to n (ComfyUI's repeat_to_batch_size)."""
    if t.shape[0] == n:
        return t
    if t.shape[0] > n:
        return t[:n]
    return t.repeat((math.ceil(n / t.shape[0]),) + (1,) * (t.ndim - 1))[:n]


def _negative_marked(sides: dict[str, list[ConditioningEntry] | None]) -> dict[str, list[ConditioningEntry] | None]:
    """The negative side's entries say so (ComfyUI's prompt_type): the SDXL refiner tells its
    negative prompt an aesthetic score of 2.5 unless the conditioning sets one."""
    from dataclasses import replace

    negative = sides.get("negative")
    if not negative:
        return sides
    marked = [e if "prompt_type" in e.extras else replace(e, extras={**e.extras, "prompt_type": "negative"})
              for e in negative]
    return {**sides, "negative": marked}


class GuidedDenoiser:
    """The machinery shared by the guiders: resolved conditionings, batched UNet calls, CFG hooks.

    `sides` names the conditionings (positive, negative…); they are resolved against the latent on
    the first call. `uncond_denoised` keeps the last unconditional x0 (CFG++ samplers read it);
    `keep_uncond` runs the uncond pass even at cfg 1 (CFG++, or a patch that needs it).
    """

    def __init__(self, unet_call: Callable, model_sampling: ModelSampling,
                 sides: dict[str, Sequence[ConditioningEntry] | None], *, keep_uncond: bool = False,
                 patches: ModelPatches | None = None):
        self.unet_call = unet_call
        self.model_sampling = model_sampling
        self.sides = {k: None if v is None else list(v) for k, v in sides.items()}
        self.patches = patches or ModelPatches()
        self.keep_uncond = keep_uncond or self.patches.disable_cfg1_optimization
        self.uncond_denoised: torch.Tensor | None = None
        self.calls = 0
        self.observer: Any = None  # trace.TraceRecorder while an explain trace records the run
        self._resolved: dict[tuple, dict[str, list[Cond] | None]] = {}
        self._extra: dict[tuple, tuple[Any, list[Cond]]] = {}
        self._contexts: dict[tuple, tuple[list, torch.Tensor]] = {}

    # -- conditionings ---------------------------------------------------------------------------
    def conds(self, x: torch.Tensor) -> dict[str, list[Cond] | None]:
        """The sides resolved for x's latent size (once per size, as ComfyUI's process_conds)."""
        key = tuple(x.shape[-2:])
        if key not in self._resolved:
            self._resolved[key] = process_conds(_negative_marked(self.sides), key, self.model_sampling, x.device)
        return self._resolved[key]

    def resolve(self, entries: Sequence[ConditioningEntry], x: torch.Tensor) -> list[Cond]:
        """Extra conditioning (a patch's empty prompt) resolved for x, kept for the whole run."""
        key = (id(entries), tuple(x.shape[-2:]))
        if key not in self._extra:  # holding the entries keeps their id valid
            self._extra[key] = (entries, process_conds({"c": list(entries)}, key[1], self.model_sampling, x.device)["c"])
        return self._extra[key][1]

    # -- UNet calls --------------------------------------------------------------------------------
    def calc_cond_batch(self, sides: Sequence[Sequence[Cond] | None], x: torch.Tensor, sigma) -> list[torch.Tensor]:
        """Each side's x0 prediction at (x, σ); a side that is None predicts 0."""
        sig = torch.as_tensor(sigma, device=x.device, dtype=x.dtype)
        sig = sig.expand(x.shape[0]) if sig.ndim == 0 else sig  # [B]
        pooled = bool(getattr(self.unet_call, "text_time", False))
        return calc_cond_batch(lambda chunks: self._run(chunks, sig, tuple(x.shape[-2:])), sides, x, sig, pooled)

    def _context(self, b: int, entries: list[ConditioningEntry]) -> torch.Tensor:
        """The text context of one UNet call, built once per sampling run (it is the same each step):
        each entry's hidden states repeated along the tokens to the common length (LCM), which
        leaves attention unchanged."""
        key = (b, tuple(id(e) for e in entries))
        if key not in self._contexts:
            lcm = math.lcm(*(e.cond.shape[1] for e in entries))
            parts = []
            for e in entries:
                c = repeat_to_batch(e.cond, b)
                parts.append(c.repeat(1, lcm // c.shape[1], 1) if c.shape[1] < lcm else c)
            self._contexts[key] = (entries, torch.cat(parts))  # holding the entries keeps their ids valid
        return self._contexts[key][1]

    def _run(self, chunks: list[Chunk], sig: torch.Tensor, latent_hw: tuple[int, int]) -> list[torch.Tensor]:
        """One UNet call for chunks that share it; each chunk's x0 prediction."""
        b = chunks[0].x.shape[0]
        n = len(chunks)
        x_b = torch.cat([c.x for c in chunks])  # [n·B, C, h, w]
        s_b = sig.repeat(n)  # [n·B]
        entries = [c.cond.entry for c in chunks]
        context = self._context(b, entries)
        x_in = self.model_sampling.calculate_input(s_b, x_b)
        t = self.model_sampling.timestep(s_b).float()
        kwargs: dict[str, Any] = {}
        if getattr(self.unet_call, "wants_options", False):
            kwargs["options"] = {"cond_or_uncond": [c.side for c in chunks], "sigmas": sig,
                                 "areas": [c.cond.area for c in chunks]}  # where each chunk lies (concat.py)
        if self.observer is not None:
            self.observer.unet_call_starting(chunks, b)
        out = self.unet_call(x_in, t, context, [(e, b) for e in entries], latent_hw, **kwargs)
        self.calls += 1
        den = self.model_sampling.calculate_denoised(s_b, out, x_b)
        if self.observer is not None:
            self.observer.unet_call_done(chunks, out)
        return [den[j * b:(j + 1) * b] for j in range(n)]

    # -- combining ---------------------------------------------------------------------------------
    def cfg_function(self, cond_pred: torch.Tensor, uncond_pred: torch.Tensor, scale: float, x: torch.Tensor,
                     sigma, cond=None, uncond=None) -> torch.Tensor:
        """uncond + (cond − uncond)·scale in x0 space (Ho & Salimans 2022), or the MODEL's
        replacement for it, then its post-CFG hooks in order (ComfyUI's cfg_function)."""
        sig = torch.as_tensor(sigma, device=x.device, dtype=x.dtype)
        sig = sig.expand(x.shape[0]) if sig.ndim == 0 else sig
        fn = self.patches.sampler_cfg_function
        if fn is not None:
            args = {"cond": x - cond_pred, "uncond": x - uncond_pred, "cond_scale": scale, "timestep": sig,
                    "input": x, "sigma": sig, "cond_denoised": cond_pred, "uncond_denoised": uncond_pred,
                    "denoiser": self, "input_cond": cond, "input_uncond": uncond}
            result = x - fn(args)
        else:
            result = uncond_pred + (cond_pred - uncond_pred) * scale
        for post in self.patches.sampler_post_cfg_functions:
            result = post({"denoised": result, "cond": cond, "uncond": uncond, "cond_scale": scale,
                           "denoiser": self, "uncond_denoised": uncond_pred, "cond_denoised": cond_pred,
                           "sigma": sig, "input": x})
        if self.observer is not None:
            self.observer.guided(x, sig, cond_pred, uncond_pred if uncond else None, result)
        return result


class CFGDenoiser(GuidedDenoiser):
    """D(x, σ) with classifier-free guidance over positive/negative conditionings.

    When cfg == 1 the uncond pass is skipped (ComfyUI's cfg-1 optimisation gives the same numbers)
    unless `keep_uncond`. `negative` None or empty: no uncond pass, the uncond prediction is 0.
    A MODEL with a guidance interval (GuidanceInterval) samples the steps outside it as at cfg 1.
    """

    def __init__(self, unet_call: Callable, model_sampling: ModelSampling, positive: Sequence[ConditioningEntry],
                 negative: Sequence[ConditioningEntry] | None, cfg: float, keep_uncond: bool = False,
                 patches: ModelPatches | None = None):
        if not positive:
            raise ValueError("positive conditioning is empty")
        super().__init__(unet_call, model_sampling, {"positive": positive, "negative": negative},
                         keep_uncond=keep_uncond, patches=patches)
        self.cfg = float(cfg)

    def __call__(self, x: torch.Tensor, sigma) -> torch.Tensor:
        conds = self.conds(x)
        positive = conds["positive"]
        cfg = guidance_scale_at(self.patches.guidance_interval, sigma, self.cfg)
        negative = None if math.isclose(cfg, 1.0) and not self.keep_uncond else conds["negative"]
        cond_pred, uncond_pred = self.calc_cond_batch([positive, negative], x, sigma)
        self.uncond_denoised = uncond_pred
        return self.cfg_function(cond_pred, uncond_pred, cfg, x, sigma, positive, negative)


class DualCFGDenoiser(GuidedDenoiser):
    """Two prompts and a negative (ComfyUI's DualCFGGuider).

    regular: CFG(cond2 vs negative, cfg2) + (cond1 − cond2)·cfg1
    nested:  negative + cfg2·(CFG(cond1 vs cond2, cfg1) − negative)
    Outside a MODEL's guidance interval both scales are 1 (only cond1 is run).
    """

    def __init__(self, unet_call: Callable, model_sampling: ModelSampling, cond1, cond2, negative, cfg1: float,
                 cfg2: float, nested: bool = False, keep_uncond: bool = False, patches: ModelPatches | None = None):
        super().__init__(unet_call, model_sampling, {"positive": cond1, "middle": cond2, "negative": negative},
                         keep_uncond=keep_uncond, patches=patches)
        self.cfg1, self.cfg2, self.nested = float(cfg1), float(cfg2), nested

    def __call__(self, x: torch.Tensor, sigma) -> torch.Tensor:
        conds = self.conds(x)
        positive, middle, negative = conds["positive"], conds["middle"], conds["negative"]
        unguided = not in_guidance_interval(self.patches.guidance_interval, sigma)
        cfg1, cfg2 = (1.0, 1.0) if unguided else (self.cfg1, self.cfg2)
        if self.nested and not (unguided and not self.keep_uncond):  # unguided, both forms are cond1's prediction
            out = self.calc_cond_batch([negative, middle, positive], x, sigma)
            self.uncond_denoised = out[0]
            pred_text = self.cfg_function(out[2], out[1], cfg1, x, sigma, positive, middle)
            return out[0] + cfg2 * (pred_text - out[0])
        if not self.keep_uncond and math.isclose(cfg2, 1.0):
            negative = None
            if math.isclose(cfg1, 1.0):
                middle = None
        out = self.calc_cond_batch([negative, middle, positive], x, sigma)
        self.uncond_denoised = out[0]
        return self.cfg_function(out[1], out[0], cfg2, x, sigma, middle, negative) + (out[2] - out[1]) * cfg1
