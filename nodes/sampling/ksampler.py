"""The KSampler driver: CFG denoiser around a diffusers UNet, and ComfyUI's KSampler semantics.

    sample(model, positive, negative, latent, seed=…, steps=…, cfg=…, sampler_name=…, scheduler=…)

does what ComfyUI's KSampler / KSamplerAdvanced nodes do (`nodes.common_ksampler`): noise from the
seed on the CPU, the schedule with the sampler-specific rules, start/end step slicing, start-noise
scaling, latent-format scaling, optional noise mask, and returns raw (unscaled) LATENT samples.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch

from ..core.values import ConditioningEntry, DiffusionModel, Latent
from .model_sampling import ModelSampling
from .noise import BrownianTreeNoise, GeneratorNoise, prepare_noise
from .registry import SamplerSpec, get_sampler
from .schedules import ksampler_sigmas, slice_steps

# Positive/negative token lengths whose LCM exceeds this multiple of the shorter are run as separate
# batches instead of being repeated (ComfyUI's CONDCrossAttn.can_concat limit).
MAX_TOKEN_REPEAT = 4


# -- model sampling cache ------------------------------------------------------------------------

def model_sampling_for(model: DiffusionModel) -> ModelSampling:
    """The ModelSampling (sigma table, prediction type) of a MODEL."""
    return ModelSampling(model.alphas_cumprod, model.prediction_type)


# -- UNet call -----------------------------------------------------------------------------------

class UNetCaller:
    """Calls a diffusers UNet2DConditionModel the way ComfyUI calls its UNet.

    Input in model dtype/device; timestep = integer training step as float; output cast to float32.
    SDXL-style UNets (addition_embed_type "text_time") get `added_cond_kwargs` from the entry's
    pooled output and size extras (default: latent size × 8, crop 0, target = size).
    """

    def __init__(self, model: DiffusionModel):
        self.unet = model.unet
        self.dtype = model.dtype
        self.device = model.device
        cfg = getattr(self.unet, "config", None)
        self.text_time = getattr(cfg, "addition_embed_type", None) == "text_time"

    def __call__(self, x_in: torch.Tensor, timestep: torch.Tensor, context: torch.Tensor,
                 entries: Sequence[tuple[ConditioningEntry, int]], latent_hw: tuple[int, int]) -> torch.Tensor:
        dtype = self.dtype or x_in.dtype
        kwargs: dict[str, Any] = {}
        if self.text_time:
            kwargs["added_cond_kwargs"] = self._added(entries, latent_hw, dtype, x_in.device)
        out = self.unet(x_in.to(dtype), timestep.float(), encoder_hidden_states=context.to(x_in.device, dtype), **kwargs)
        return getattr(out, "sample", out).float()

    @staticmethod
    def _added(entries, latent_hw, dtype, device):
        pooled, time_ids = [], []
        for entry, n in entries:
            ex = entry.extras
            h, w = ex.get("height", latent_hw[0] * 8), ex.get("width", latent_hw[1] * 8)
            ids = [h, w, ex.get("crop_h", 0), ex.get("crop_w", 0), ex.get("target_height", h), ex.get("target_width", w)]
            p = entry.pooled
            if p is None:
                raise ValueError("this UNet needs a pooled text embedding (SDXL); the conditioning has none")
            pooled.append(_repeat_batch(p, n))
            time_ids.append(torch.tensor([ids], dtype=torch.float32).repeat(n, 1))
        return {"text_embeds": torch.cat(pooled).to(device, dtype), "time_ids": torch.cat(time_ids).to(device, dtype)}


def _repeat_batch(t: torch.Tensor, n: int) -> torch.Tensor:
    if t.shape[0] == n:
        return t
    if t.shape[0] > n:
        return t[:n]
    reps = math.ceil(n / t.shape[0])
    return t.repeat((reps,) + (1,) * (t.ndim - 1))[:n]


# -- CFG denoiser --------------------------------------------------------------------------------

class CFGDenoiser:
    """D(x, sigma): x0 prediction with classifier-free guidance, cond and uncond in one UNet batch.

    Combines in x0 space: uncond + (cond - uncond) * cfg (Ho & Salimans 2022, as ComfyUI does). When
    cfg == 1 the uncond pass is skipped (ComfyUI's cfg1 optimisation gives the same numbers) unless
    `keep_uncond` (CFG++ samplers need the unconditional x0, kept in `uncond_denoised`).
    """

    def __init__(self, unet_call: Callable, model_sampling: ModelSampling, positive: Sequence[ConditioningEntry],
                 negative: Sequence[ConditioningEntry], cfg: float, keep_uncond: bool = False):
        if not positive:
            raise ValueError("positive conditioning is empty")
        self.unet_call = unet_call
        self.model_sampling = model_sampling
        self.positive = list(positive)
        self.negative = list(negative)
        self.cfg = float(cfg)
        self.keep_uncond = keep_uncond
        self.uncond_denoised: torch.Tensor | None = None
        self.calls = 0

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        skip_uncond = math.isclose(self.cfg, 1.0) and not self.keep_uncond
        groups = [self.positive] if skip_uncond or not self.negative else [self.positive, self.negative]
        preds = self._predict(x, sigma, groups)
        cond = preds[0]
        uncond = preds[1] if len(preds) > 1 else torch.zeros_like(cond)
        self.uncond_denoised = uncond
        return uncond + (cond - uncond) * self.cfg

    def _context(self, b: int, entries: list[ConditioningEntry]) -> torch.Tensor:
        """The text context of one UNet call, built once per sampling run (it is the same each step)."""
        key = (b, tuple(id(e) for e in entries))
        cache = self.__dict__.setdefault("_context_cache", {})
        if key not in cache:
            lcm = math.lcm(*(e.cond.shape[1] for e in entries))
            parts = []
            for e in entries:
                c = _repeat_batch(e.cond, b)
                parts.append(c.repeat(1, lcm // c.shape[1], 1) if c.shape[1] < lcm else c)
            cache[key] = (entries, torch.cat(parts))  # holding the entries keeps their ids valid
        return cache[key][1]

    def _predict(self, x: torch.Tensor, sigma: torch.Tensor, groups) -> list[torch.Tensor]:
        b = x.shape[0]
        sig = torch.as_tensor(sigma, device=x.device, dtype=x.dtype)
        sig = sig.expand(b) if sig.ndim == 0 else sig
        # Each (group, entry) is one chunk of batch b; chunks whose token lengths combine cheaply share
        # one UNet call (repeated along the token axis to the LCM, which leaves attention unchanged).
        chunks = [(g, e) for g, group in enumerate(groups) for e in group]
        outputs: dict[int, list[torch.Tensor]] = {g: [] for g in range(len(groups))}
        for batch in _batches([e.cond.shape[1] for _, e in chunks]):
            context = self._context(b, [chunks[k][1] for k in batch])
            n = len(batch)
            x_b = x.repeat((n,) + (1,) * (x.ndim - 1))
            s_b = sig.repeat(n)
            x_in = self.model_sampling.calculate_input(s_b, x_b)
            t = self.model_sampling.timestep(s_b).float()
            out = self.unet_call(x_in, t, context, [(chunks[k][1], b) for k in batch], tuple(x.shape[-2:]))
            self.calls += 1
            den = self.model_sampling.calculate_denoised(s_b, out, x_b)
            for j, k in enumerate(batch):
                outputs[chunks[k][0]].append(den[j * b:(j + 1) * b])
        return [torch.stack(outputs[g]).mean(0) if len(outputs[g]) > 1 else outputs[g][0] for g in range(len(groups))]


def _batches(lengths: list[int]) -> list[list[int]]:
    """Group chunk indices so that within a group lcm(lengths) // min(lengths) <= MAX_TOKEN_REPEAT."""
    groups: list[list[int]] = []
    for k, n in enumerate(lengths):
        for g in groups:
            ls = [lengths[j] for j in g] + [n]
            if math.lcm(*ls) // min(ls) <= MAX_TOKEN_REPEAT:
                g.append(k)
                break
        else:
            groups.append([k])
    return groups


class _MaskedDenoiser:
    """Keeps the unmasked area on the input latent's noising path (ComfyUI's KSamplerX0Inpaint)."""

    def __init__(self, inner: CFGDenoiser, mask: torch.Tensor, latent_image: torch.Tensor, noise: torch.Tensor):
        self.inner, self.mask, self.latent_image, self.noise = inner, mask, latent_image, noise
        self.model_sampling = inner.model_sampling

    @property
    def uncond_denoised(self):
        return self.inner.uncond_denoised

    def __call__(self, x, sigma):
        keep = 1.0 - self.mask
        x = x * self.mask + self.model_sampling.noise_scaling(sigma, self.noise, self.latent_image) * keep
        out = self.inner(x, sigma)
        return out * self.mask + self.latent_image * keep


def _prepare_mask(mask: torch.Tensor, shape, device) -> torch.Tensor:
    m = mask.reshape((-1, 1, mask.shape[-2], mask.shape[-1])).float()
    m = torch.nn.functional.interpolate(m, size=(shape[2], shape[3]), mode="bilinear")
    m = torch.cat([m] * shape[1], dim=1)
    return _repeat_batch(m, shape[0]).to(device)


# -- public API ----------------------------------------------------------------------------------

def sigmas_for(model: DiffusionModel, scheduler: str, sampler_name: str, steps: int, denoise: float = 1.0, *,
               start_step: int | None = None, end_step: int | None = None,
               return_with_leftover_noise: bool = False) -> torch.Tensor:
    """The sigma list KSampler(Advanced) actually samples with (float32, CPU; may be empty)."""
    sigmas = ksampler_sigmas(model_sampling_for(model), scheduler, sampler_name, steps, denoise)
    sliced = slice_steps(sigmas, start_step, end_step, force_full_denoise=not return_with_leftover_noise)
    return torch.zeros([0]) if sliced is None else sliced


def sample(model: DiffusionModel, positive: Sequence[ConditioningEntry], negative: Sequence[ConditioningEntry],
           latent: Latent, *, seed: int, steps: int, cfg: float, sampler_name: str, scheduler: str,
           denoise: float = 1.0, add_noise: bool = True, start_step: int | None = None, end_step: int | None = None,
           return_with_leftover_noise: bool = False,
           callback: Callable[[int, int, torch.Tensor, torch.Tensor], None] | None = None) -> torch.Tensor:
    """Run ComfyUI's KSampler / KSamplerAdvanced; return raw LATENT samples (float32, CPU).

    KSampler is `start_step=end_step=None, add_noise=True`. KSamplerAdvanced maps
    add_noise="enable"/"disable", start_at_step, end_at_step and return_with_leftover_noise directly
    (denoise stays 1.0). `callback(step, total, x, denoised)` runs once per sampler step, in sampler
    space; it may raise to stop sampling (the node's callback raises Interrupted once cancelled).
    """
    spec = get_sampler(sampler_name)
    ms = model_sampling_for(model)
    raw = latent.samples
    device = model.device if model.device is not None else torch.device("cpu")

    # 1. The noise levels to step through (empty: nothing to do, e.g. denoise 0 or start ≥ end).
    sigmas = sigmas_for(model, scheduler, sampler_name, steps, denoise, start_step=start_step, end_step=end_step,
                        return_with_leftover_noise=return_with_leftover_noise)
    if sigmas.shape[-1] == 0:
        return raw.clone()
    sigmas = sigmas.to(device)

    # 2. The seed's noise (drawn on the CPU, as ComfyUI does) and the starting latent.
    noise = initial_noise(raw, seed, latent.batch_index, add_noise).to(device=device, dtype=torch.float32)
    latent_image = raw.to(device=device, dtype=torch.float32)
    if torch.count_nonzero(latent_image) > 0:  # ComfyUI leaves an all-zero latent unscaled
        latent_image = model.latent_format.to_sampler(latent_image)

    with torch.inference_mode():
        # 3. The denoiser D(x, σ): UNet + CFG, with the noise mask blended in where there is one.
        denoiser = make_denoiser(model, ms, spec, positive, negative, cfg, latent.noise_mask, latent_image, noise,
                                 seed)
        x = ms.noise_scaling(sigmas[0], noise, latent_image, ms.is_max_denoise(sigmas))  # [B, C, h, w]
        # 4. The sampler, fed its step noise (ancestral and SDE methods add fresh noise each step).
        total = len(sigmas) - 1

        def step_callback(i, x_i, denoised):
            if callback is not None:
                callback(i, total, x_i, denoised)

        x = spec.fn(denoiser, x, sigmas, callback=step_callback, noise=step_noise(spec, x, sigmas, seed))
    return model.latent_format.from_sampler(x.to(torch.float32)).cpu()


def initial_noise(raw: torch.Tensor, seed: int, batch_index: list[int] | None, add_noise: bool) -> torch.Tensor:
    """The seed's Gaussian noise for every latent of the batch, or zeros when noise is not added."""
    if add_noise:
        return prepare_noise(raw, seed, batch_index)
    return torch.zeros(raw.size(), dtype=raw.dtype, layout=raw.layout, device="cpu")


def make_denoiser(model: DiffusionModel, ms: ModelSampling, spec: SamplerSpec, positive, negative, cfg: float,
                  noise_mask: torch.Tensor | None, latent_image: torch.Tensor, noise: torch.Tensor, seed: int):
    """CFGDenoiser around the UNet; with a noise mask, the unmasked area follows the input latent."""
    denoiser: Any = CFGDenoiser(UNetCaller(model), ms, positive, negative, cfg, keep_uncond=spec.needs_uncond)
    if noise_mask is None:
        return denoiser
    mask = _prepare_mask(noise_mask, noise.shape, noise.device)
    inpaint_noise = noise
    if spec.inpaint_random_noise:
        g = torch.manual_seed(seed + 1)
        inpaint_noise = torch.randn(noise.shape, generator=g, device="cpu").to(noise.device)
    return _MaskedDenoiser(denoiser, mask, latent_image, inpaint_noise)


def step_noise(spec: SamplerSpec, x: torch.Tensor, sigmas: torch.Tensor, seed: int):
    """Where a stochastic sampler's per-step noise comes from: a seeded generator, a Brownian tree
    over the sigma range (SDE samplers), or nothing for deterministic samplers."""
    if spec.noise == "generator":
        return GeneratorNoise(x, seed)
    if spec.noise == "brownian_tree" and len(sigmas) > 1:
        return BrownianTreeNoise(x, sigmas[sigmas > 0].min(), sigmas.max(), seed, cpu=not spec.brownian_on_device)
    return None
