"""DiffusersSampler's machinery: any diffusers scheduler, driven by the loop from diffusers' own
text-to-image and image-to-image pipelines, so results can be checked against them step for step.

    latents = noise * scheduler.init_noise_sigma
    for t in scheduler.timesteps:
        noise_pred = unet(scheduler.scale_model_input(latents, t), t, text_embeddings)
        noise_pred = uncond + cfg * (cond - uncond)
        latents = scheduler.step(noise_pred, t, latents).prev_sample
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Sequence
from dataclasses import replace

import torch

from nodegraph import NodeInputError, UserError

from ..core.env import REPO
from ..core.values import ConditioningEntry, DiffusionModel, Latent
from ..models.configs import alphas_cumprod_from_scheduler_config, read_json
from .ksampler import UNetCaller

SD_SCHEDULER_CONFIG = REPO / "nodes" / "configs" / "sd15" / "scheduler" / "scheduler_config.json"
SIGMA_FLAGS = {"karras": "use_karras_sigmas", "exponential": "use_exponential_sigmas", "beta": "use_beta_sigmas"}


def make_scheduler(model: DiffusionModel, scheduler_class: str, sigmas: str = "default", seed: int | None = None):
    """A scheduler of the named class with SD's training schedule and the model's prediction type.

    `seed` seeds the scheduler's own noise source where the class has one (DPMSolverSDEScheduler's
    Brownian tree, `noise_sampler_seed`); left unset, diffusers would seed it from the global torch RNG
    and the same seed would not give the same image twice.
    """
    import diffusers

    cls = getattr(diffusers, scheduler_class, None)
    if cls is None:
        raise NodeInputError("scheduler_class", f"{scheduler_class} is not in the installed diffusers")
    config = {k: v for k, v in read_json(SD_SCHEDULER_CONFIG).items() if not k.startswith("_")}
    if model.prediction_type not in ("epsilon", "v_prediction"):
        raise UserError(f"DiffusersSampler runs epsilon and v-prediction models; this one is {model.prediction_type}: "
                        "use KSampler")
    config["prediction_type"] = model.prediction_type
    standard = alphas_cumprod_from_scheduler_config(config)
    if not torch.allclose(standard, model.alphas_cumprod.double().cpu(), rtol=1e-6, atol=1e-9):
        config["trained_betas"] = _betas_from_alphas_cumprod(model.alphas_cumprod).tolist()
    accepted = inspect.signature(cls.__init__).parameters
    if sigmas != "default":
        flag = SIGMA_FLAGS[sigmas]
        if flag not in accepted:
            raise NodeInputError("sigmas", f'{scheduler_class} has no "{sigmas}" sigma option; use "default" '
                                 f"or a scheduler class that has {flag}")
        config[flag] = True
    if seed is not None and "noise_sampler_seed" in accepted:
        config["noise_sampler_seed"] = int(seed)
    return cls.from_config(config)


def _betas_from_alphas_cumprod(alphas_cumprod: torch.Tensor) -> torch.Tensor:
    ac = alphas_cumprod.double().cpu()
    previous = torch.cat([torch.ones(1, dtype=ac.dtype), ac[:-1]])
    return 1.0 - ac / previous


def _embeddings(entries: Sequence[ConditioningEntry], batch: int) -> torch.Tensor:
    if len(entries) != 1:
        raise NodeInputError("positive", "DiffusersSampler takes one conditioning entry per input; "
                             "use KSampler to combine several")
    cond = entries[0].cond
    return cond.repeat(batch // cond.shape[0], 1, 1) if cond.shape[0] != batch else cond


def _match_lengths(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Prompts of different chunk counts: repeat each along tokens to a common length."""
    if a.shape[1] == b.shape[1]:
        return a, b
    n = math.lcm(a.shape[1], b.shape[1])
    return a.repeat(1, n // a.shape[1], 1), b.repeat(1, n // b.shape[1], 1)


def run_diffusers_loop(model: DiffusionModel, positive, negative, latent: Latent, *, seed: int, steps: int,
                       cfg: float, scheduler_class: str, sigmas: str = "default", denoise: float = 1.0,
                       callback: Callable[[int, int, torch.Tensor, torch.Tensor | None], None] | None = None
                       ) -> torch.Tensor:
    """Returns raw LATENT samples (float32, CPU)."""
    if getattr(model.unet.config, "in_channels", 4) != model.latent_format.channels:
        raise NodeInputError("model", "is an inpainting model (its UNet also reads a mask and the masked image); "
                             "DiffusersSampler runs text-to-image models: sample it with KSampler")
    if replace(model.patches, compile=None).active:  # compiling changes the speed, not the result: runs eager here
        raise NodeInputError("model", "carries model patches (FreeU, SAG, a hypernetwork…) that diffusers' loop does "
                             "not apply; sample a patched model with KSampler, or connect the unpatched model")
    scheduler = make_scheduler(model, scheduler_class, sigmas, seed=seed)
    device, dtype = model.device or torch.device("cpu"), model.dtype or torch.float32
    fmt = model.latent_format
    shape = tuple(latent.samples.shape)
    # One generator for the initial noise and every stochastic step, as the pipelines use it.
    generator = torch.Generator("cpu").manual_seed(int(seed) % 2**64)
    noise = torch.randn(shape, generator=generator, dtype=torch.float32)

    scheduler.set_timesteps(steps, device=device)
    timesteps = scheduler.timesteps
    if denoise >= 1.0:
        latents = noise.to(device) * scheduler.init_noise_sigma
    else:  # image-to-image: start part-way, from the input latent noised by the forward process
        init_steps = min(int(steps * denoise), steps)
        if init_steps == 0:
            return latent.samples.float().cpu()
        t_start = max(steps - init_steps, 0) * scheduler.order
        timesteps = timesteps[t_start:]
        if hasattr(scheduler, "set_begin_index"):
            scheduler.set_begin_index(t_start)
        init = fmt.to_sampler(latent.samples.float()).to(device)
        latents = scheduler.add_noise(init, noise.to(device), timesteps[:1])

    batch = shape[0]
    cond, uncond = _match_lengths(_embeddings(positive, batch), _embeddings(negative, batch))
    guided = cfg > 1.0
    context = (torch.cat([uncond, cond]) if guided else cond).to(device, dtype)
    unet_kwargs = {}
    if getattr(model.unet.config, "addition_embed_type", None) == "text_time":  # SDXL: pooled text + sizes
        sides = [(negative[0], batch), (positive[0], batch)] if guided else [(positive[0], batch)]
        unet_kwargs["added_cond_kwargs"] = UNetCaller.added_conditioning(sides, tuple(shape[-2:]), dtype, device,
                                                                        model.unet)
    step_params = inspect.signature(scheduler.step).parameters
    extra = {}
    if "eta" in step_params:
        extra["eta"] = 0.0
    if "generator" in step_params:
        extra["generator"] = generator

    with torch.inference_mode():
        for i, t in enumerate(timesteps):
            model_input = torch.cat([latents] * 2) if guided else latents
            model_input = scheduler.scale_model_input(model_input, t)
            noise_pred = model.unet(model_input.to(dtype), t, encoder_hidden_states=context,
                                    **unet_kwargs).sample.float()
            if guided:
                pred_uncond, pred_cond = noise_pred.chunk(2)
                noise_pred = pred_uncond + cfg * (pred_cond - pred_uncond)
            out = scheduler.step(noise_pred, t, latents, **extra)
            latents = out.prev_sample
            if callback is not None:
                callback(i, len(timesteps), latents, getattr(out, "pred_original_sample", None))
    return fmt.from_sampler(latents.float()).cpu()
