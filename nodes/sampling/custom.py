"""The custom-sampling front door: what SamplerCustom / SamplerCustomAdvanced hand the shared driver
(ksampler.run_sampling), and the SAMPLER values the Sampler* nodes build."""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..core.values import Guider, Latent, SamplerChoice
from .ksampler import initial_noise, run_sampling


def sample_custom(guider: Guider, sampler: SamplerChoice, sigmas: torch.Tensor, latent: Latent, *, seed: int,
                  add_noise: bool = True, callback: Callable | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(samples, last x0 or None), raw LATENT space. The starting noise is the seed's (zeros without
    add_noise); the samplers' step noise is seeded with `seed` either way, as in ComfyUI."""
    start = initial_noise(latent.samples, seed, latent.batch_index, add_noise)
    return run_sampling(guider, sampler, sigmas, start, latent, seed=seed, callback=callback)


def er_sde_sampler(solver_type: str, max_stage: int, eta: float, s_noise: float) -> SamplerChoice:
    """er_sde with its noise scale function ψ(x) = x^(1−η)·φ(x)^η for the chosen solver type."""
    if solver_type == "ODE" or eta == 0:
        solver_type, s_noise = "ODE", 0.0

    def er_sde(v):  # ER-SDE's φ(x) = x·(e^(x^0.3) + 10), to the power η
        return v * ((v**0.3).exp() + 10.0) ** eta

    def reverse_time_sde(v):
        return v ** (eta + 1)

    def ode(v):
        return v

    scaler = {"ER-SDE": er_sde, "Reverse-time SDE": reverse_time_sde, "ODE": ode}[solver_type]
    return SamplerChoice("er_sde", {"s_noise": s_noise, "noise_scaler": scaler, "max_stage": max_stage})

