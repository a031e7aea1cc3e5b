"""The sampling driver: one implementation behind two front doors.

    sample(model, positive, negative, latent, seed=…, steps=…, cfg=…, sampler_name=…, scheduler=…)

does what ComfyUI's KSampler / KSamplerAdvanced nodes do (`nodes.common_ksampler`): noise from the
seed on the CPU, the schedule with the sampler-specific rules, start/end step slicing; then

    run_sampling(guider, sampler, sigmas, noise, latent, seed=…)

— what SamplerCustom / SamplerCustomAdvanced call directly with their GUIDER, SAMPLER, SIGMAS and
NOISE — does the rest: start-noise scaling, latent-format scaling, the guided denoiser around the UNet
(guidance.py), the optional noise mask, and returns raw (unscaled) LATENT samples.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch

from nodegraph import UserError

from ..core.kernels import compiled
from ..core.values import ConditioningEntry, DiffusionModel, Guider, Latent, SamplerChoice
from .adm import add_unclip_inputs, sampling_seed
from .concat import ConcatInputs, bind_run
from .guidance import CFGDenoiser, DualCFGDenoiser
from .model_sampling import ModelSampling
from .noise import BrownianTreeNoise, GeneratorNoise, prepare_noise
from .registry import SamplerSpec, get_sampler
from .schedules import ksampler_sigmas, slice_steps

__all__ = ["CFGDenoiser", "DualCFGDenoiser", "UNetCaller", "run_sampling", "sample", "sigmas_for"]


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

    wants_options = True  # the denoiser passes the step's sigmas (ControlNets act in a sigma range)

    def __init__(self, model: DiffusionModel):
        self.unet = model.unet
        # The plain call may run compiled (TorchCompileModel, --compile); the block walk never does.
        self.call_unet = model.unet
        if model.patches.compile and type(self) is UNetCaller:
            self.call_unet = compiled(model.unet, model.patches.compile)
        self.dtype = model.dtype
        self.device = model.device
        self.model = model
        cfg = getattr(self.unet, "config", None)
        self.text_time = getattr(cfg, "addition_embed_type", None) == "text_time"
        self.concat = ConcatInputs.for_model(model)  # an inpainting UNet's mask and image channels (concat.py)

    def __call__(self, x_in: torch.Tensor, timestep: torch.Tensor, context: torch.Tensor,
                 entries: Sequence[tuple[ConditioningEntry, int]], latent_hw: tuple[int, int],
                 options: dict[str, Any] | None = None) -> torch.Tensor:
        dtype = self.dtype or x_in.dtype
        kwargs = self.unet_inputs(x_in, timestep, context, entries, latent_hw, options, dtype)
        out = self.call_unet(self.unet_x(x_in, entries, latent_hw, options).to(dtype), timestep.float(),
                             encoder_hidden_states=context.to(x_in.device, dtype), **kwargs)
        return getattr(out, "sample", out).float()

    def unet_inputs(self, x_in, timestep, context, entries, latent_hw, options, dtype) -> dict[str, Any]:
        """The call's inputs beside x, t and the context: SDXL's added conditioning, unCLIP's image
        embedding (adm.py) and the ControlNets' residuals (computed from the plain x_in)."""
        kwargs: dict[str, Any] = {}
        if self.text_time:
            kwargs["added_cond_kwargs"] = self.added_conditioning(entries, latent_hw, dtype, x_in.device,
                                                                  self.unet)
        add_unclip_inputs(kwargs, self, entries, x_in.device, dtype)
        control = entries[0][0].extras.get("control")  # the batch shares one (conds.can_batch)
        if control is not None:
            sigma = float((options or {}).get("sigmas", timestep).reshape(-1)[0])
            kwargs.update(self.control_residuals(control, x_in, timestep, context, sigma, kwargs.get("added_cond_kwargs")))
        return kwargs

    def unet_x(self, x_in, entries, latent_hw, options) -> torch.Tensor:
        """What the UNet reads as x: x_in, with an inpainting UNet's mask and image channels (concat.py)."""
        return x_in if self.concat is None else self.concat(x_in, entries, latent_hw, options)

    def control_residuals(self, control, x_in, timestep, context, sigma: float, added) -> dict[str, Any]:
        """The ControlNets chained on the batch's conditioning, each inside its sigma range, summed
        (ComfyUI's control_merge): the UNet's down/mid additional residuals."""
        from ..models.controlnet import residuals

        ms = model_sampling_for(self.model)  # only runs that carry a ControlNet need the sigma table here
        down, mid = None, None
        for hint in control.chain():
            start, end = ms.percent_to_sigma(hint.start_percent), ms.percent_to_sigma(hint.end_percent)
            if sigma > start or sigma < end:
                continue
            d, m = residuals(hint.net, x_in, timestep.float(), context.to(x_in.device), hint.hint.to(x_in.device),
                             hint.strength, added)
            down = d if down is None else [a + b for a, b in zip(down, d, strict=True)]
            mid = m if mid is None else mid + m
        if down is None:
            return {}
        return {"down_block_additional_residuals": tuple(down), "mid_block_additional_residual": mid}

    @staticmethod
    def added_conditioning(entries, latent_hw, dtype, device, unet):
        """SDXL's extra inputs per (entry, batch) chunk: pooled text [B, 1280] and size ids: [B, 6]
        (height, width, crop top, crop left, target height, target width) for the base, [B, 5]
        (height, width, crop top, crop left, aesthetic score) for the refiner, told apart by how
        many the UNet's embedding takes. Sizes the conditioning does not store come from the
        latent × 8, crop 0, target = size; the aesthetic score defaults to 6, and to 2.5 for the
        negative prompt (ComfyUI's)."""
        adm_in = unet.add_embedding.linear_1.in_features
        time_dim = int(unet.config.addition_time_embed_dim)
        pooled, time_ids = [], []
        for entry, n in entries:
            ex = entry.extras
            p = entry.pooled
            if p is None:
                raise UserError("this UNet needs a pooled text embedding (SDXL); the conditioning has none: "
                                "encode the prompt with this checkpoint's CLIP")
            h, w = ex.get("height", latent_hw[0] * 8), ex.get("width", latent_hw[1] * 8)
            ids = [h, w, ex.get("crop_h", 0), ex.get("crop_w", 0)]
            if (adm_in - p.shape[-1]) // time_dim == 5:  # ComfyUI: 6 for prompts, 2.5 for the negative one
                ids.append(ex.get("aesthetic_score", 2.5 if ex.get("prompt_type") == "negative" else 6.0))
            else:
                ids += [ex.get("target_height", h), ex.get("target_width", w)]
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


class _MaskedDenoiser:
    """Keeps the unmasked area on the input latent's noising path (ComfyUI's KSamplerX0Inpaint)."""

    def __init__(self, inner: CFGDenoiser, mask: torch.Tensor, latent_image: torch.Tensor, noise: torch.Tensor):
        self.inner, self.mask, self.latent_image, self.noise = inner, mask, latent_image, noise
        self.model_sampling = inner.model_sampling

    @property
    def uncond_denoised(self):
        return self.inner.uncond_denoised

    def __call__(self, x, sigma):
        # Before the model call the kept area is put back on the input latent's noising path
        # (latent + σ·noise, the unscaled start noise); after it, its prediction is the clean latent.
        keep = 1.0 - self.mask
        s = torch.as_tensor(sigma, device=x.device)
        s = s.reshape(s.shape[:1] + (1,) * (x.ndim - 1)) if s.ndim else s  # a σ per batch entry
        x = x * self.mask + self.model_sampling.noise_scaling(s, self.noise, self.latent_image) * keep
        out = self.inner(x, sigma)
        return out * self.mask + self.latent_image * keep


def _prepare_mask(mask: torch.Tensor, shape, device) -> torch.Tensor:
    """ComfyUI's reshape_mask: [.., h, w] → bilinear (align_corners False, no rounding) to the latent's
    size, repeated over the channels and cycled (or cut) to the batch."""
    m = mask.reshape((-1, 1, mask.shape[-2], mask.shape[-1])).float()
    m = torch.nn.functional.interpolate(m, size=(shape[2], shape[3]), mode="bilinear")
    m = m.repeat((1, shape[1], 1, 1))
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
           callback: Callable[[int, int, torch.Tensor, torch.Tensor], None] | None = None,
           observer: Any = None) -> torch.Tensor:
    """Run ComfyUI's KSampler / KSamplerAdvanced; return raw LATENT samples (float32, CPU).

    KSampler is `start_step=end_step=None, add_noise=True`. KSamplerAdvanced maps
    add_noise="enable"/"disable", start_at_step, end_at_step and return_with_leftover_noise directly
    (denoise stays 1.0). `callback(step, total, x, denoised)` runs once per sampler step, in sampler
    space; it may raise to stop sampling (the node's callback raises Interrupted once cancelled).
    `observer` (a trace.TraceRecorder) records the run step by step without changing it.
    """
    # 1. The noise levels to step through (empty: nothing to do, e.g. denoise 0 or start ≥ end).
    sigmas = sigmas_for(model, scheduler, sampler_name, steps, denoise, start_step=start_step, end_step=end_step,
                        return_with_leftover_noise=return_with_leftover_noise)
    if sigmas.shape[-1] == 0:
        return latent.samples.clone()
    # 2. The seed's noise (drawn on the CPU, as ComfyUI does), then the shared sampling run.
    noise = initial_noise(latent.samples, seed, latent.batch_index, add_noise)
    guider = Guider(model, {"positive": list(positive), "negative": list(negative)}, cfg=cfg)
    samples, _ = run_sampling(guider, SamplerChoice(sampler_name), sigmas, noise, latent, seed=seed, callback=callback,
                              observer=observer)
    return samples


def run_sampling(guider: Guider, sampler: SamplerChoice, sigmas: torch.Tensor, noise: torch.Tensor, latent: Latent,
                 *, seed: int, callback: Callable[[int, int, torch.Tensor, torch.Tensor], None] | None = None,
                 observer: Any = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Sample `latent` along `sigmas` from `noise` (raw latent shape, unscaled); return the raw
    LATENT samples and the last step's x0 prediction (raw; None when no step ran), float32, CPU.

    `seed` seeds the sampler's own step noise (ancestral / SDE samplers). Empty sigmas return the
    latent unchanged; a single sigma only adds its noise (as ComfyUI does).
    """
    spec = get_sampler(sampler.name)
    model = guider.model
    ms = model_sampling_for(model)
    raw = latent.samples
    if sigmas.shape[-1] == 0:
        return raw.clone(), None
    device = model.device if model.device is not None else torch.device("cpu")
    sigmas = sigmas.to(device=device, dtype=torch.float32)

    # 1. The noise and the starting latent, in sampler space.
    noise = noise.to(device=device, dtype=torch.float32)
    latent_image = raw.to(device=device, dtype=torch.float32)
    if torch.count_nonzero(latent_image) > 0:  # ComfyUI leaves an all-zero latent unscaled
        latent_image = model.latent_format.to_sampler(latent_image)

    last_x0: list[torch.Tensor] = []
    with torch.inference_mode(), sampling_seed(seed):  # unCLIP's noise augmentation is seeded from it (adm.py)
        # 2. The denoiser D(x, σ): UNet + guidance, with the noise mask blended in where there is one.
        denoiser = make_denoiser(guider, ms, spec, latent.noise_mask, latent_image, noise, seed)
        x = ms.noise_scaling(sigmas[0], noise, latent_image, ms.is_max_denoise(sigmas))  # [B, C, h, w]
        # 3. The sampler, fed its step noise (ancestral and SDE methods add fresh noise each step).
        total = len(sigmas) - 1
        noise_source = step_noise(spec, x, sigmas, seed)
        if observer is not None:  # an explain trace: it watches the denoiser, the steps and the step noise
            noise_source = observer.begin(denoiser, noise_source, sigmas, ms, sampler)

        def step_callback(i, x_i, denoised):
            last_x0[:] = [denoised]
            if observer is not None:
                observer.step(i, x_i, denoised)
            if callback is not None:
                callback(i, total, x_i, denoised)

        x = spec.fn(denoiser, x, sigmas, callback=step_callback, noise=noise_source, **sampler.options)
        if observer is not None:
            observer.end(x)
    samples = model.latent_format.from_sampler(x.to(torch.float32)).cpu()
    x0 = model.latent_format.from_sampler(last_x0[0].to(torch.float32)).cpu() if last_x0 else None
    return samples, x0


def initial_noise(raw: torch.Tensor, seed: int, batch_index: list[int] | None, add_noise: bool) -> torch.Tensor:
    """The seed's Gaussian noise for every latent of the batch, or zeros when noise is not added."""
    if add_noise:
        return prepare_noise(raw, seed, batch_index)
    return torch.zeros(raw.size(), dtype=raw.dtype, layout=raw.layout, device="cpu")


def unet_caller(model: DiffusionModel, conds: dict[str, Sequence[ConditioningEntry] | None] | None = None) -> Callable:
    """How the denoiser calls the MODEL's UNet: directly, or through the block walk that applies the
    MODEL's UNet patches (FreeU, Deep Shrink, SAG's attention, hypernetworks) and the conditioning's
    GLIGEN boxes on the way."""
    from .unet_patched import PatchedUNetCaller, has_gligen

    if model.patches.changes_unet or has_gligen(conds):
        return PatchedUNetCaller(model)
    return UNetCaller(model)


def guided_denoiser(guider: Guider, ms: ModelSampling, keep_uncond: bool = False):
    """The guider's D(x, σ) around its MODEL's UNet."""
    model, conds = guider.model, guider.conds
    caller = unet_caller(model, conds)
    if guider.kind == "dual":
        return DualCFGDenoiser(caller, ms, conds["positive"], conds["middle"], conds["negative"], guider.cfg,
                               guider.cfg2, nested=guider.nested, keep_uncond=keep_uncond, patches=model.patches)
    return CFGDenoiser(caller, ms, conds["positive"], conds.get("negative"), guider.cfg, keep_uncond=keep_uncond,
                       patches=model.patches)


def make_denoiser(guider: Guider, ms: ModelSampling, spec: SamplerSpec, noise_mask: torch.Tensor | None,
                  latent_image: torch.Tensor, noise: torch.Tensor, seed: int):
    """The guided denoiser; with a noise mask, the unmasked area follows the input latent."""
    denoiser: Any = guided_denoiser(guider, ms, keep_uncond=spec.needs_uncond)
    mask = None if noise_mask is None else _prepare_mask(noise_mask, noise.shape, noise.device)
    bind_run(denoiser.unet_call, latent_image, mask)  # an inpainting UNet's stand-ins for entries without their own
    if mask is None:
        return denoiser
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
