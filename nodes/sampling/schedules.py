"""Noise schedules: (model sigma table, steps) -> descending float32 sigmas ending in 0.

Names, order and numbers follow ComfyUI 0.3.64 (`comfy/samplers.py` SCHEDULER_HANDLERS).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from .model_sampling import ModelSampling
from .names import DISCARD_PENULTIMATE_SIGMA, SCHEDULERS


def _append_zero(sigmas: torch.Tensor) -> torch.Tensor:
    return torch.cat([sigmas, sigmas.new_zeros([1])])


def karras_sigmas(n: int, sigma_min: float, sigma_max: float, rho: float = 7.0) -> torch.Tensor:
    """Karras et al. 2022 (EDM), eq. 5: evenly spaced in sigma^(1/rho)."""
    ramp = torch.linspace(0, 1, n)
    min_inv, max_inv = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return _append_zero((max_inv + ramp * (min_inv - max_inv)) ** rho)


def exponential_sigmas(n: int, sigma_min: float, sigma_max: float) -> torch.Tensor:
    """Evenly spaced in log sigma."""
    return _append_zero(torch.linspace(math.log(sigma_max), math.log(sigma_min), n).exp())


def polyexponential_sigmas(n: int, sigma_min: float, sigma_max: float, rho: float = 1.0) -> torch.Tensor:
    """Log sigma along a power ramp^rho from sigma_max to sigma_min (k-diffusion; rho 1 is exponential)."""
    ramp = torch.linspace(1, 0, n) ** rho
    return _append_zero(torch.exp(ramp * (math.log(sigma_max) - math.log(sigma_min)) + math.log(sigma_min)))


def karras(ms: ModelSampling, n: int, rho: float = 7.0) -> torch.Tensor:
    """Karras spacing between the model's sigma_min and sigma_max."""
    return karras_sigmas(n, float(ms.sigma_min), float(ms.sigma_max), rho)


def exponential(ms: ModelSampling, n: int) -> torch.Tensor:
    """Exponential spacing between the model's sigma_min and sigma_max."""
    return exponential_sigmas(n, float(ms.sigma_min), float(ms.sigma_max))


def normal(ms: ModelSampling, n: int, sgm: bool = False) -> torch.Tensor:
    """Evenly spaced training timesteps from 999 to 0 (sgm: n+1 points, last one dropped)."""
    start, end = ms.timestep(ms.sigma_max), ms.timestep(ms.sigma_min)
    append_zero = True
    if sgm:
        timesteps = torch.linspace(start, end, n + 1)[:-1]
    else:
        if math.isclose(float(ms.sigma(end)), 0, abs_tol=0.00001):
            n += 1
            append_zero = False
        timesteps = torch.linspace(start, end, n)
    sigs = [float(ms.sigma(ts)) for ts in timesteps]
    if append_zero:
        sigs.append(0.0)
    return torch.tensor(sigs, dtype=torch.float32)


def sgm_uniform(ms: ModelSampling, n: int) -> torch.Tensor:
    """The `normal` spacing as in SGM (Stability's generative-models): n+1 points, drop the last."""
    return normal(ms, n, sgm=True)


def simple(ms: ModelSampling, n: int) -> torch.Tensor:
    """Every len(table)/n-th table entry, from the top."""
    ss = len(ms.sigmas) / n
    sigs = [float(ms.sigmas[-(1 + int(x * ss))]) for x in range(n)]
    return torch.tensor([*sigs, 0.0], dtype=torch.float32)


def ddim_uniform(ms: ModelSampling, n: int) -> torch.Tensor:
    """DDIM's uniform timestep skipping (Song et al. 2020): table entries 1, 1+k, 1+2k, … reversed."""
    sigs: list[float] = []
    x = 1
    if math.isclose(float(ms.sigmas[x]), 0, abs_tol=0.00001):
        n += 1
    else:
        sigs = [0.0]
    ss = max(len(ms.sigmas) // n, 1)
    while x < len(ms.sigmas):
        sigs.append(float(ms.sigmas[x]))
        x += ss
    return torch.tensor(sigs[::-1], dtype=torch.float32)


def beta(ms: ModelSampling, n: int, alpha: float = 0.6, beta_: float = 0.6) -> torch.Tensor:
    """Beta-distribution timestep spacing (Lee et al. 2024, arXiv:2407.12173)."""
    import numpy
    import scipy.stats

    total = len(ms.sigmas) - 1
    ts = 1 - numpy.linspace(0, 1, n, endpoint=False)
    ts = numpy.rint(scipy.stats.beta.ppf(ts, alpha, beta_) * total)
    sigs: list[float] = []
    last_t = -1
    for t in ts:
        if t != last_t:
            sigs.append(float(ms.sigmas[int(t)]))
        last_t = t
    sigs.append(0.0)
    return torch.tensor(sigs, dtype=torch.float32)


def linear_quadratic(ms: ModelSampling, n: int, threshold_noise: float = 0.025, linear_steps=None) -> torch.Tensor:
    """Linear then quadratic in sigma/sigma_max (Genmo's Mochi schedule)."""
    if n == 1:
        sched = [1.0, 0.0]
    else:
        linear_steps = n // 2 if linear_steps is None else linear_steps
        lin = [i * threshold_noise / linear_steps for i in range(linear_steps)]
        diff = linear_steps - threshold_noise * n
        quad_steps = n - linear_steps
        quad_coef = diff / (linear_steps * quad_steps**2)
        lin_coef = threshold_noise / linear_steps - 2 * diff / (quad_steps**2)
        const = quad_coef * (linear_steps**2)
        quad = [quad_coef * (i**2) + lin_coef * i + const for i in range(linear_steps, n)]
        sched = [1.0 - x for x in lin + quad + [1.0]]
    return torch.tensor(sched, dtype=torch.float32) * ms.sigma_max


def kl_optimal(ms: ModelSampling, n: int) -> torch.Tensor:
    """KL-optimal schedule (Sabour et al. 2024, "Align Your Steps" appendix): linear in atan(sigma)."""
    sigma_min, sigma_max = float(ms.sigma_min), float(ms.sigma_max)
    idx = torch.arange(n, dtype=torch.float).div_(n - 1)
    sigmas = idx.new_zeros(n + 1)
    sigmas[:-1] = (idx * math.atan(sigma_min) + (1 - idx) * math.atan(sigma_max)).tan_()
    return sigmas


SCHEDULES: dict[str, Callable[[ModelSampling, int], torch.Tensor]] = {
    "normal": normal,
    "karras": karras,
    "exponential": exponential,
    "sgm_uniform": sgm_uniform,
    "simple": simple,
    "ddim_uniform": ddim_uniform,
    "beta": beta,
    "linear_quadratic": linear_quadratic,
    "kl_optimal": kl_optimal,
}
assert tuple(SCHEDULES) == SCHEDULERS


def calculate_sigmas(ms: ModelSampling, scheduler: str, steps: int) -> torch.Tensor:
    """The raw schedule `scheduler` gives for `steps` steps (float32, ends in 0)."""
    try:
        fn = SCHEDULES[scheduler]
    except KeyError:
        raise ValueError(f"unknown scheduler {scheduler!r} (choose from {', '.join(SCHEDULES)})") from None
    return fn(ms, steps).to(torch.float32)


def ksampler_sigmas(ms: ModelSampling, scheduler: str, sampler: str, steps: int, denoise: float = 1.0) -> torch.Tensor:
    """The sigmas ComfyUI's KSampler would use: penultimate-sigma rule and denoise slicing applied."""

    def full(n: int) -> torch.Tensor:
        if sampler in DISCARD_PENULTIMATE_SIGMA:
            s = calculate_sigmas(ms, scheduler, n + 1)
            return torch.cat([s[:-2], s[-1:]])
        return calculate_sigmas(ms, scheduler, n)

    if denoise is None or denoise > 0.9999:
        return full(steps)
    if denoise <= 0.0:
        return torch.zeros([0], dtype=torch.float32)
    return full(int(steps / denoise))[-(steps + 1):]


def slice_steps(sigmas: torch.Tensor, start_step=None, last_step=None, force_full_denoise: bool = False):
    """KSamplerAdvanced's start/end step rules. Returns None when there is nothing to sample."""
    if last_step is not None and last_step < len(sigmas) - 1:
        sigmas = sigmas[: last_step + 1].clone()
        if force_full_denoise:
            sigmas[-1] = 0
    if start_step is not None:
        if start_step < len(sigmas) - 1:
            sigmas = sigmas[start_step:]
        else:
            return None
    return sigmas


# -- custom sampling (ComfyUI's scheduler nodes) ----------------------------------------------------


def basic_sigmas(ms: ModelSampling, scheduler: str, steps: int, denoise: float = 1.0) -> torch.Tensor:
    """BasicScheduler: the schedule for steps / denoise steps, keeping its last steps + 1 sigmas."""
    total = steps
    if denoise < 1.0:
        if denoise <= 0.0:
            return torch.zeros([0], dtype=torch.float32)
        total = int(steps / denoise)
    return calculate_sigmas(ms, scheduler, total)[-(steps + 1):]


def sd_turbo_sigmas(ms: ModelSampling, steps: int, denoise: float = 1.0) -> torch.Tensor:
    """SD-Turbo's timesteps 999, 899, …, 99 (Sauer et al. 2023, ADD), starting later for denoise < 1."""
    start = 10 - int(10 * denoise)
    timesteps = torch.flip(torch.arange(1, 11) * 100 - 1, (0,))[start:start + steps]
    return _append_zero(ms.sigma(timesteps).to(torch.float32))


# Align Your Steps (Sabour et al. 2024, arXiv:2404.14507): NVIDIA's optimised 10-step noise levels.
AYS_NOISE_LEVELS: dict[str, list[float]] = {
    "SD1": [14.6146412293, 6.4745760956, 3.8636745985, 2.6946151520, 1.8841921177, 1.3943805092, 0.9642583904,
            0.6523686016, 0.3977456272, 0.1515232662, 0.0291671582],
    "SDXL": [14.6146412293, 6.3184485287, 3.7681790315, 2.1811480769, 1.3405244945, 0.8620721141, 0.5550693289,
             0.3798540708, 0.2332364134, 0.1114188177, 0.0291671582],
    "SVD": [700.00, 54.5, 15.886, 7.977, 4.248, 1.789, 0.981, 0.403, 0.173, 0.034, 0.002],
}


def align_your_steps_sigmas(model_type: str, steps: int, denoise: float = 1.0) -> torch.Tensor:
    """The AYS levels, log-linearly interpolated to steps + 1 points, last set to 0; denoise < 1
    keeps the last round(steps · denoise) steps."""
    import numpy

    total = steps
    if denoise < 1.0:
        if denoise <= 0.0:
            return torch.zeros([0], dtype=torch.float32)
        total = round(steps * denoise)
    levels = AYS_NOISE_LEVELS[model_type]
    if steps + 1 != len(levels):
        xs = numpy.linspace(0, 1, len(levels))
        ys = numpy.log(levels[::-1])
        levels = numpy.exp(numpy.interp(numpy.linspace(0, 1, steps + 1), xs, ys))[::-1].copy()
    sigmas = list(levels[-(total + 1):])
    sigmas[-1] = 0
    return torch.tensor([float(v) for v in sigmas], dtype=torch.float32)
