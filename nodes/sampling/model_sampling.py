"""How a discrete-time SD model relates noise level sigma, timestep and its prediction.

Follows the variance-exploding view of Karras et al. 2022 (EDM) for DDPM-trained models, with
ComfyUI's numbers: float32 sigma table, float32 log sigmas, nearest-log-sigma timestep.
"""

from __future__ import annotations

import math

import torch


def sigmas_from_alphas_cumprod(alphas_cumprod: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (sigmas, log_sigmas), both float32, from a float64 alphas_cumprod table."""
    ac = alphas_cumprod.detach().to("cpu", torch.float64)
    sigmas = ((1.0 - ac) / ac) ** 0.5
    return sigmas.to(torch.float32), sigmas.log().to(torch.float32)


# Latent consistency models (Luo et al. 2023) are distilled on 50 of the 1000 training timesteps.
LCM_TIMESTEPS = 50


class ModelSampling:
    """Sigma table plus eps / v-prediction conversions (ComfyUI's ModelSamplingDiscrete + EPS/V), and
    "lcm": the distilled 50-step table with LCM's boundary-condition output (ComfyUI's
    ModelSamplingDiscreteDistilled + LCM)."""

    def __init__(self, alphas_cumprod: torch.Tensor, prediction_type: str = "epsilon"):
        if prediction_type not in ("epsilon", "v_prediction", "lcm"):
            raise ValueError(f"unknown prediction type {prediction_type!r} (expected epsilon, v_prediction or lcm)")
        self.prediction_type = prediction_type
        self.alphas_cumprod = alphas_cumprod.detach().to("cpu", torch.float64)
        self.sigmas, self.log_sigmas = sigmas_from_alphas_cumprod(self.alphas_cumprod)
        self.sigma_data = 1.0
        self.skip_steps = 1
        if prediction_type == "lcm":
            # Every 20th sigma counted from the last, which the distilled model was trained on.
            self.skip_steps = len(self.sigmas) // LCM_TIMESTEPS
            picks = [len(self.sigmas) - 1 - k * self.skip_steps for k in range(LCM_TIMESTEPS)][::-1]
            self.sigmas = self.sigmas[picks].clone()
            self.log_sigmas = self.sigmas.log()

    @property
    def sigma_min(self) -> torch.Tensor:
        return self.sigmas[0]

    @property
    def sigma_max(self) -> torch.Tensor:
        return self.sigmas[-1]

    def timestep(self, sigma: torch.Tensor) -> torch.Tensor:
        """Nearest training timestep (integer-valued) for each sigma, by distance in log sigma."""
        sigma = torch.as_tensor(sigma)
        dists = sigma.to("cpu", torch.float32).log().reshape(-1) - self.log_sigmas[:, None]
        index = dists.abs().argmin(dim=0).reshape(sigma.shape)
        return (index * self.skip_steps + (self.skip_steps - 1)).to(sigma.device)

    def sigma(self, timestep: torch.Tensor) -> torch.Tensor:
        """Sigma at a (possibly fractional) timestep: log-linear interpolation in the table."""
        timestep = torch.as_tensor(timestep)
        t = (timestep.float().cpu() - (self.skip_steps - 1)) / self.skip_steps
        t = torch.clamp(t, min=0, max=len(self.sigmas) - 1)
        low, high = t.floor().long(), t.ceil().long()
        w = t.frac()
        log_sigma = (1 - w) * self.log_sigmas[low] + w * self.log_sigmas[high]
        return log_sigma.exp().to(timestep.device)

    def percent_to_sigma(self, percent: float) -> float:
        if percent <= 0.0:
            return 999999999.9
        if percent >= 1.0:
            return 0.0
        return self.sigma(torch.tensor((1.0 - percent) * 999.0)).item()

    # -- model input / output -------------------------------------------------------------
    def calculate_input(self, sigma: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        sigma = _bcast(sigma, x)
        return x / (sigma**2 + self.sigma_data**2) ** 0.5

    def calculate_denoised(self, sigma: torch.Tensor, model_output: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        if self.prediction_type == "lcm":
            return self._lcm_denoised(sigma, model_output, x)
        sigma = _bcast(sigma, x)
        if self.prediction_type == "epsilon":
            return x - model_output * sigma
        sd = self.sigma_data
        return x * sd**2 / (sigma**2 + sd**2) - model_output * sigma * sd / (sigma**2 + sd**2) ** 0.5

    def _lcm_denoised(self, sigma: torch.Tensor, model_output: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """LCM's consistency-function output: c_skip·x + c_out·x̂₀, with the timestep scaled by 10."""
        timestep = _bcast(self.timestep(torch.as_tensor(sigma)).to(x.device), x)
        sigma = _bcast(sigma, x)
        x0 = x - model_output * sigma
        sigma_data, scaled = 0.5, timestep * 10.0
        c_skip = sigma_data**2 / (scaled**2 + sigma_data**2)
        c_out = scaled / (scaled**2 + sigma_data**2) ** 0.5
        return c_out * x0 + c_skip * x

    # -- start noise ------------------------------------------------------------------------
    def is_max_denoise(self, sigmas: torch.Tensor) -> bool:
        """True when the schedule starts at the model's sigma_max (a full denoise)."""
        max_sigma = float(self.sigma_max)
        sigma = float(sigmas[0])
        return math.isclose(max_sigma, sigma, rel_tol=1e-05) or sigma > max_sigma

    def noise_scaling(self, sigma, noise: torch.Tensor, latent: torch.Tensor, max_denoise: bool = False):
        """x at the first sigma: noise * sqrt(1 + sigma²) for a full denoise, else noise * sigma."""
        sigma = torch.as_tensor(sigma, device=noise.device)
        if max_denoise:
            noise = noise * torch.sqrt(1.0 + sigma**2.0)
        else:
            noise = noise * sigma
        return noise + latent


def _bcast(sigma, x: torch.Tensor) -> torch.Tensor:
    sigma = torch.as_tensor(sigma, device=x.device)
    if sigma.ndim == 0:
        return sigma
    return sigma.reshape(sigma.shape[:1] + (1,) * (x.ndim - 1))


# The terminal ᾱ ComfyUI puts in place of 0 (so σ stays finite: about 4519).
ZSNR_TERMINAL_ALPHA_BAR = 4.8973451890853435e-08


def zero_terminal_snr_alphas_cumprod(alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """Lin et al. 2024, "Common Diffusion Noise Schedules and Sample Steps Are Flawed", Alg. 1: shift
    and scale √ᾱ so the last step is pure noise, computed as ComfyUI does on its float32 sigmas."""
    sigmas, _ = sigmas_from_alphas_cumprod(alphas_cumprod)  # float32, as ComfyUI holds them
    root = (1.0 / (sigmas * sigmas + 1.0)).sqrt()  # √ᾱ
    first, last = root[0].clone(), root[-1].clone()
    root = (root - last) * (first / (first - last))
    alpha_bar = root**2
    alpha_bar[-1] = ZSNR_TERMINAL_ALPHA_BAR
    new_sigmas = ((1 - alpha_bar) / alpha_bar) ** 0.5  # float32 σ, what ComfyUI samples with
    return 1.0 / (new_sigmas.double() ** 2 + 1.0)  # back to ᾱ (float64) for DiffusionModel
