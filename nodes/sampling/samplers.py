"""Samplers: pure functions `sample_xxx(denoiser, x, sigmas, *, callback=None, noise=None) -> x`.

The shape is k-diffusion's (Crowson): `denoiser(x, sigma)` returns the x0 prediction D(x; sigma)
for a 0-dim sigma, `sigmas` is descending and ends in 0, `callback(i, x, denoised)` reports each
step, `noise(sigma, sigma_next)` returns unit Gaussian noise for a step (GeneratorNoise or
BrownianTreeNoise from `noise.py`). Numbers follow ComfyUI 0.3.64's k-diffusion fork.

CFG++ samplers also read `denoiser.uncond_denoised` (the unconditional x0 of the last call); the
driver keeps it when a sampler is registered with `needs_uncond`. A few samplers use
`denoiser.model_sampling` (a ModelSampling) for ComfyUI's model-dependent defaults.
"""

from __future__ import annotations

import torch

from .noise import GeneratorNoise

# -- helpers ---------------------------------------------------------------------------------


def to_d(x, sigma, denoised):
    """Karras ODE derivative dx/dsigma from a denoiser output."""
    return (x - denoised) / sigma


def ancestral_step(sigma_from, sigma_to, eta=1.0):
    """(sigma_down, sigma_up) of an ancestral step: deterministic part down to sigma_down, then noise."""
    if not eta:
        return sigma_to, 0.0
    sigma_up = min(sigma_to, eta * (sigma_to**2 * (sigma_from**2 - sigma_to**2) / sigma_from**2) ** 0.5)
    sigma_down = (sigma_to**2 - sigma_up**2) ** 0.5
    return sigma_down, sigma_up


def _noise_or_default(noise, x):
    return GeneratorNoise(x, None) if noise is None else noise


def _report(callback, i, x, denoised):
    if callback is not None:
        callback(i, x, denoised)


def _t(sigma):  # half-logSNR time used by DPM-Solver: t = -log sigma
    return sigma.log().neg()


def _sigma(t):
    return t.neg().exp()


# -- Euler / Heun family (Karras et al. 2022) --------------------------------------------------


def sample_euler(denoiser, x, sigmas, *, callback=None, noise=None):
    """Euler steps on the probability-flow ODE (Karras et al. 2022, Algorithm 2 without churn)."""
    for i in range(len(sigmas) - 1):
        denoised = denoiser(x, sigmas[i])
        d = to_d(x, sigmas[i], denoised)
        _report(callback, i, x, denoised)
        x = x + d * (sigmas[i + 1] - sigmas[i])
    return x


def sample_euler_ancestral(denoiser, x, sigmas, *, callback=None, noise=None, eta=1.0, s_noise=1.0):
    """Ancestral Euler: Euler to sigma_down, then add noise (Song et al. 2021 / k-diffusion)."""
    noise = _noise_or_default(noise, x)
    for i in range(len(sigmas) - 1):
        denoised = denoiser(x, sigmas[i])
        sigma_down, sigma_up = ancestral_step(sigmas[i], sigmas[i + 1], eta)
        _report(callback, i, x, denoised)
        if sigma_down == 0:
            x = denoised
        else:
            d = to_d(x, sigmas[i], denoised)
            x = x + d * (sigma_down - sigmas[i]) + noise(sigmas[i], sigmas[i + 1]) * s_noise * sigma_up
    return x


def sample_heun(denoiser, x, sigmas, *, callback=None, noise=None):
    """Heun's second-order method (Karras et al. 2022, Algorithm 2 without churn)."""
    for i in range(len(sigmas) - 1):
        denoised = denoiser(x, sigmas[i])
        d = to_d(x, sigmas[i], denoised)
        _report(callback, i, x, denoised)
        dt = sigmas[i + 1] - sigmas[i]
        if sigmas[i + 1] == 0:
            x = x + d * dt
        else:
            x_2 = x + d * dt
            d_2 = to_d(x_2, sigmas[i + 1], denoiser(x_2, sigmas[i + 1]))
            x = x + (d + d_2) / 2 * dt
    return x


def sample_heunpp2(denoiser, x, sigmas, *, callback=None, noise=None):
    """Heun++ with up to three evaluations per step (Carzit's sd-webui-samplers-scheduler)."""
    s_end = sigmas[-1]
    for i in range(len(sigmas) - 1):
        denoised = denoiser(x, sigmas[i])
        d = to_d(x, sigmas[i], denoised)
        _report(callback, i, x, denoised)
        dt = sigmas[i + 1] - sigmas[i]
        if sigmas[i + 1] == s_end:
            x = x + d * dt
        elif sigmas[i + 2] == s_end:
            x_2 = x + d * dt
            d_2 = to_d(x_2, sigmas[i + 1], denoiser(x_2, sigmas[i + 1]))
            w2 = sigmas[i + 1] / (2 * sigmas[0])
            x = x + (d * (1 - w2) + d_2 * w2) * dt
        else:
            x_2 = x + d * dt
            d_2 = to_d(x_2, sigmas[i + 1], denoiser(x_2, sigmas[i + 1]))
            x_3 = x_2 + d_2 * (sigmas[i + 2] - sigmas[i + 1])
            d_3 = to_d(x_3, sigmas[i + 2], denoiser(x_3, sigmas[i + 2]))
            w = 3 * sigmas[0]
            w2, w3 = sigmas[i + 1] / w, sigmas[i + 2] / w
            x = x + ((1 - w2 - w3) * d + w2 * d_2 + w3 * d_3) * dt
    return x


def sample_dpm_2(denoiser, x, sigmas, *, callback=None, noise=None):
    """DPM-Solver-2-like midpoint steps in log sigma (Karras et al. 2022; Lu et al. 2022)."""
    for i in range(len(sigmas) - 1):
        denoised = denoiser(x, sigmas[i])
        d = to_d(x, sigmas[i], denoised)
        _report(callback, i, x, denoised)
        if sigmas[i + 1] == 0:
            x = x + d * (sigmas[i + 1] - sigmas[i])
        else:
            sigma_mid = sigmas[i].log().lerp(sigmas[i + 1].log(), 0.5).exp()
            x_2 = x + d * (sigma_mid - sigmas[i])
            d_2 = to_d(x_2, sigma_mid, denoiser(x_2, sigma_mid))
            x = x + d_2 * (sigmas[i + 1] - sigmas[i])
    return x


def sample_dpm_2_ancestral(denoiser, x, sigmas, *, callback=None, noise=None, eta=1.0, s_noise=1.0):
    """Ancestral DPM-Solver-2 midpoint steps (Lu et al. 2022, via k-diffusion)."""
    noise = _noise_or_default(noise, x)
    for i in range(len(sigmas) - 1):
        denoised = denoiser(x, sigmas[i])
        sigma_down, sigma_up = ancestral_step(sigmas[i], sigmas[i + 1], eta)
        _report(callback, i, x, denoised)
        d = to_d(x, sigmas[i], denoised)
        if sigma_down == 0:
            x = x + d * (sigma_down - sigmas[i])
        else:
            sigma_mid = sigmas[i].log().lerp(sigma_down.log(), 0.5).exp()
            x_2 = x + d * (sigma_mid - sigmas[i])
            d_2 = to_d(x_2, sigma_mid, denoiser(x_2, sigma_mid))
            x = x + d_2 * (sigma_down - sigmas[i])
            x = x + noise(sigmas[i], sigmas[i + 1]) * s_noise * sigma_up
    return x


def _lms_coeff(order, t, i, j):
    from scipy import integrate

    def fn(tau):
        prod = 1.0
        for k in range(order):
            if j != k:
                prod *= (tau - t[i - k]) / (t[i - j] - t[i - k])
        return prod

    return integrate.quad(fn, t[i], t[i + 1], epsrel=1e-4)[0]


def sample_lms(denoiser, x, sigmas, *, callback=None, noise=None, order=4):
    """Linear multistep (Adams–Bashforth in sigma) with order up to 4 (Crowson's k-diffusion LMS)."""
    sigmas_cpu = sigmas.detach().cpu().numpy()
    ds = []
    for i in range(len(sigmas) - 1):
        denoised = denoiser(x, sigmas[i])
        ds.append(to_d(x, sigmas[i], denoised))
        if len(ds) > order:
            ds.pop(0)
        _report(callback, i, x, denoised)
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            cur = min(i + 1, order)
            coeffs = [_lms_coeff(cur, sigmas_cpu, i, j) for j in range(cur)]
            x = x + sum(c * d for c, d in zip(coeffs, reversed(ds), strict=False))
    return x


# -- DPM-Solver++ family (Lu et al. 2022) ----------------------------------------------------


def sample_dpmpp_2s_ancestral(denoiser, x, sigmas, *, callback=None, noise=None, eta=1.0, s_noise=1.0):
    """Ancestral DPM-Solver++(2S), single-step second order (Lu et al. 2022, arXiv:2211.01095)."""
    noise = _noise_or_default(noise, x)
    for i in range(len(sigmas) - 1):
        denoised = denoiser(x, sigmas[i])
        sigma_down, sigma_up = ancestral_step(sigmas[i], sigmas[i + 1], eta)
        _report(callback, i, x, denoised)
        if sigma_down == 0:
            x = x + to_d(x, sigmas[i], denoised) * (sigma_down - sigmas[i])
        else:
            t, t_next = _t(sigmas[i]), _t(sigma_down)
            h = t_next - t
            s = t + 0.5 * h
            x_2 = (_sigma(s) / _sigma(t)) * x - (-h * 0.5).expm1() * denoised
            denoised_2 = denoiser(x_2, _sigma(s))
            x = (_sigma(t_next) / _sigma(t)) * x - (-h).expm1() * denoised_2
        if sigmas[i + 1] > 0:
            x = x + noise(sigmas[i], sigmas[i + 1]) * s_noise * sigma_up
    return x


def sample_dpmpp_sde(denoiser, x, sigmas, *, callback=None, noise=None, eta=1.0, s_noise=1.0, r=0.5):
    """DPM-Solver++ stochastic, two stages per step (Lu et al. 2022, via k-diffusion)."""
    if len(sigmas) <= 1:
        return x
    noise = _noise_or_default(noise, x)
    fac = 1 / (2 * r)
    for i in range(len(sigmas) - 1):
        denoised = denoiser(x, sigmas[i])
        _report(callback, i, x, denoised)
        if sigmas[i + 1] == 0:
            x = denoised
            continue
        lambda_s, lambda_t = _t(sigmas[i]), _t(sigmas[i + 1])
        h = lambda_t - lambda_s
        lambda_s_1 = lambda_s + r * h
        sigma_s_1 = _sigma(lambda_s_1)
        alpha_s = sigmas[i] * lambda_s.exp()
        alpha_s_1 = sigma_s_1 * lambda_s_1.exp()
        alpha_t = sigmas[i + 1] * lambda_t.exp()
        # stage 1
        sd, su = ancestral_step(lambda_s.neg().exp(), lambda_s_1.neg().exp(), eta)
        h_ = sd.log().neg() - lambda_s
        x_2 = (alpha_s_1 / alpha_s) * (-h_).exp() * x - alpha_s_1 * (-h_).expm1() * denoised
        if eta > 0 and s_noise > 0:
            x_2 = x_2 + alpha_s_1 * noise(sigmas[i], sigma_s_1) * s_noise * su
        denoised_2 = denoiser(x_2, sigma_s_1)
        # stage 2
        sd, su = ancestral_step(lambda_s.neg().exp(), lambda_t.neg().exp(), eta)
        h_ = sd.log().neg() - lambda_s
        denoised_d = (1 - fac) * denoised + fac * denoised_2
        x = (alpha_t / alpha_s) * (-h_).exp() * x - alpha_t * (-h_).expm1() * denoised_d
        if eta > 0 and s_noise > 0:
            x = x + alpha_t * noise(sigmas[i], sigmas[i + 1]) * s_noise * su
    return x


def sample_dpmpp_2m(denoiser, x, sigmas, *, callback=None, noise=None):
    """DPM-Solver++(2M), multistep second order (Lu et al. 2022, arXiv:2211.01095)."""
    old_denoised = None
    for i in range(len(sigmas) - 1):
        denoised = denoiser(x, sigmas[i])
        _report(callback, i, x, denoised)
        t, t_next = _t(sigmas[i]), _t(sigmas[i + 1])
        h = t_next - t
        if old_denoised is None or sigmas[i + 1] == 0:
            x = (_sigma(t_next) / _sigma(t)) * x - (-h).expm1() * denoised
        else:
            r = (t - _t(sigmas[i - 1])) / h
            denoised_d = (1 + 1 / (2 * r)) * denoised - (1 / (2 * r)) * old_denoised
            x = (_sigma(t_next) / _sigma(t)) * x - (-h).expm1() * denoised_d
        old_denoised = denoised
    return x


def sample_dpmpp_2m_sde(denoiser, x, sigmas, *, callback=None, noise=None, eta=1.0, s_noise=1.0,
                        solver_type="midpoint"):
    """DPM-Solver++(2M) SDE (Lu et al. 2022), midpoint or Heun correction of the second-order term."""
    if len(sigmas) <= 1:
        return x
    if solver_type not in ("heun", "midpoint"):
        raise ValueError("solver_type must be 'heun' or 'midpoint'")
    noise = _noise_or_default(noise, x)
    old_denoised, h, h_last = None, None, None
    for i in range(len(sigmas) - 1):
        denoised = denoiser(x, sigmas[i])
        _report(callback, i, x, denoised)
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            lambda_s, lambda_t = _t(sigmas[i]), _t(sigmas[i + 1])
            h = lambda_t - lambda_s
            h_eta = h * (eta + 1)
            alpha_t = sigmas[i + 1] * lambda_t.exp()
            x = sigmas[i + 1] / sigmas[i] * (-h * eta).exp() * x + alpha_t * (-h_eta).expm1().neg() * denoised
            if old_denoised is not None:
                r = h_last / h
                if solver_type == "heun":
                    x = x + alpha_t * ((-h_eta).expm1().neg() / (-h_eta) + 1) * (1 / r) * (denoised - old_denoised)
                else:
                    x = x + 0.5 * alpha_t * (-h_eta).expm1().neg() * (1 / r) * (denoised - old_denoised)
            if eta > 0 and s_noise > 0:
                x = x + noise(sigmas[i], sigmas[i + 1]) * sigmas[i + 1] * (-2 * h * eta).expm1().neg().sqrt() * s_noise
        old_denoised = denoised
        h_last = h
    return x


def sample_dpmpp_2m_sde_heun(denoiser, x, sigmas, *, callback=None, noise=None, eta=1.0, s_noise=1.0):
    """DPM-Solver++(2M) SDE with the Heun-type second-order term (Lu et al. 2022)."""
    return sample_dpmpp_2m_sde(denoiser, x, sigmas, callback=callback, noise=noise, eta=eta, s_noise=s_noise,
                               solver_type="heun")


def sample_dpmpp_3m_sde(denoiser, x, sigmas, *, callback=None, noise=None, eta=1.0, s_noise=1.0):
    """DPM-Solver++(3M) SDE, multistep third order (Lu et al. 2022, via k-diffusion)."""
    if len(sigmas) <= 1:
        return x
    noise = _noise_or_default(noise, x)
    denoised_1 = denoised_2 = None
    h = h_1 = h_2 = None
    for i in range(len(sigmas) - 1):
        denoised = denoiser(x, sigmas[i])
        _report(callback, i, x, denoised)
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            lambda_s, lambda_t = _t(sigmas[i]), _t(sigmas[i + 1])
            h = lambda_t - lambda_s
            h_eta = h * (eta + 1)
            alpha_t = sigmas[i + 1] * lambda_t.exp()
            x = sigmas[i + 1] / sigmas[i] * (-h * eta).exp() * x + alpha_t * (-h_eta).expm1().neg() * denoised
            if h_2 is not None:
                r0, r1 = h_1 / h, h_2 / h
                d1_0 = (denoised - denoised_1) / r0
                d1_1 = (denoised_1 - denoised_2) / r1
                d1 = d1_0 + (d1_0 - d1_1) * r0 / (r0 + r1)
                d2 = (d1_0 - d1_1) / (r0 + r1)
                phi_2 = h_eta.neg().expm1() / h_eta + 1
                phi_3 = phi_2 / h_eta - 0.5
                x = x + (alpha_t * phi_2) * d1 - (alpha_t * phi_3) * d2
            elif h_1 is not None:
                d = (denoised - denoised_1) / (h_1 / h)
                phi_2 = h_eta.neg().expm1() / h_eta + 1
                x = x + (alpha_t * phi_2) * d
            if eta > 0 and s_noise > 0:
                x = x + noise(sigmas[i], sigmas[i + 1]) * sigmas[i + 1] * (-2 * h * eta).expm1().neg().sqrt() * s_noise
        denoised_1, denoised_2 = denoised, denoised_1
        h_1, h_2 = h, h_1
    return x


# -- DDPM / LCM ----------------------------------------------------------------------------


def _ddpm_step(x, sigma, sigma_prev, eps, noise):
    alpha_cumprod = 1 / ((sigma * sigma) + 1)
    alpha_cumprod_prev = 1 / ((sigma_prev * sigma_prev) + 1)
    alpha = alpha_cumprod / alpha_cumprod_prev
    mu = (1.0 / alpha).sqrt() * (x - (1 - alpha) * eps / (1 - alpha_cumprod).sqrt())
    if sigma_prev > 0:
        mu += ((1 - alpha) * (1.0 - alpha_cumprod_prev) / (1.0 - alpha_cumprod)).sqrt() * noise(sigma, sigma_prev)
    return mu


def sample_ddpm(denoiser, x, sigmas, *, callback=None, noise=None):
    """Ancestral DDPM posterior sampling (Ho et al. 2020), in variance-preserving space."""
    noise = _noise_or_default(noise, x)
    for i in range(len(sigmas) - 1):
        denoised = denoiser(x, sigmas[i])
        _report(callback, i, x, denoised)
        x = _ddpm_step(x / torch.sqrt(1.0 + sigmas[i] ** 2.0), sigmas[i], sigmas[i + 1],
                       (x - denoised) / sigmas[i], noise)
        if sigmas[i + 1] != 0:
            x *= torch.sqrt(1.0 + sigmas[i + 1] ** 2.0)
    return x


def sample_lcm(denoiser, x, sigmas, *, callback=None, noise=None):
    """Latent Consistency Model sampling: jump to x0, re-noise to the next sigma (Luo et al. 2023)."""
    noise = _noise_or_default(noise, x)
    for i in range(len(sigmas) - 1):
        denoised = denoiser(x, sigmas[i])
        _report(callback, i, x, denoised)
        x = denoised
        if sigmas[i + 1] > 0:
            x = noise(sigmas[i], sigmas[i + 1]) * sigmas[i + 1] + x
    return x


# -- Pseudo-numerical / exponential-integrator multistep -----------------------------------


def _shift(buffer, d, max_order):
    if len(buffer) == max_order - 1:
        buffer.pop(0)
    buffer.append(d)


def sample_ipndm(denoiser, x, sigmas, *, callback=None, noise=None, max_order=4):
    """Improved PNDM, fixed Adams–Bashforth coefficients up to order 4 (Zhang & Chen 2023, DEIS paper)."""
    buf: list[torch.Tensor] = []
    for i in range(len(sigmas) - 1):
        t_cur, t_next = sigmas[i], sigmas[i + 1]
        denoised = denoiser(x, t_cur)
        _report(callback, i, x, denoised)
        d = (x - denoised) / t_cur
        order = min(max_order, i + 1)
        dt = t_next - t_cur
        if t_next == 0:
            x_next = denoised
        elif order == 1:
            x_next = x + dt * d
        elif order == 2:
            x_next = x + dt * (3 * d - buf[-1]) / 2
        elif order == 3:
            x_next = x + dt * (23 * d - 16 * buf[-1] + 5 * buf[-2]) / 12
        else:
            x_next = x + dt * (55 * d - 59 * buf[-1] + 37 * buf[-2] - 9 * buf[-3]) / 24
        _shift(buf, d, max_order)
        x = x_next
    return x


def sample_ipndm_v(denoiser, x, sigmas, *, callback=None, noise=None, max_order=4):
    """iPNDM with variable-step Adams–Bashforth coefficients (Zhang & Chen 2023; zju-pi diff-solvers)."""
    buf: list[torch.Tensor] = []
    t = sigmas
    for i in range(len(sigmas) - 1):
        t_cur, t_next = sigmas[i], sigmas[i + 1]
        denoised = denoiser(x, t_cur)
        _report(callback, i, x, denoised)
        d = (x - denoised) / t_cur
        order = min(max_order, i + 1)
        h = t_next - t_cur
        if t_next == 0:
            x_next = denoised
        elif order == 1:
            x_next = x + h * d
        elif order == 2:
            h1 = t_cur - t[i - 1]
            c1, c2 = (2 + h / h1) / 2, -(h / h1) / 2
            x_next = x + h * (c1 * d + c2 * buf[-1])
        elif order == 3:
            h1, h2 = t_cur - t[i - 1], t[i - 1] - t[i - 2]
            temp = (1 - h / (3 * (h + h1)) * (h * (h + h1)) / (h1 * (h1 + h2))) / 2
            c1 = (2 + h / h1) / 2 + temp
            c2 = -(h / h1) / 2 - (1 + h1 / h2) * temp
            c3 = temp * h1 / h2
            x_next = x + h * (c1 * d + c2 * buf[-1] + c3 * buf[-2])
        else:
            h1, h2, h3 = t_cur - t[i - 1], t[i - 1] - t[i - 2], t[i - 2] - t[i - 3]
            temp1 = (1 - h / (3 * (h + h1)) * (h * (h + h1)) / (h1 * (h1 + h2))) / 2
            temp2 = ((1 - h / (3 * (h + h1))) / 2 + (1 - h / (2 * (h + h1))) * h / (6 * (h + h1 + h2))) \
                * (h * (h + h1) * (h + h1 + h2)) / (h1 * (h1 + h2) * (h1 + h2 + h3))
            q = h1 * (h1 + h2) / (h2 * (h2 + h3))
            c1 = (2 + h / h1) / 2 + temp1 + temp2
            c2 = -(h / h1) / 2 - (1 + h1 / h2) * temp1 - (1 + h1 / h2 + q) * temp2
            c3 = temp1 * h1 / h2 + (h1 / h2 + q * (1 + h2 / h3)) * temp2
            c4 = -temp2 * q * h1 / h2
            x_next = x + h * (c1 * d + c2 * buf[-1] + c3 * buf[-2] + c4 * buf[-3])
        _shift(buf, d, max_order)
        x = x_next
    return x


def _deis_coefficients(t_steps: torch.Tensor, max_order: int, n: int = 10000) -> list[list[torch.Tensor]]:
    """DEIS 'tAB' coefficients: integrate the Lagrange basis against the VP weight (Zhang & Chen 2023)."""
    eps_s, smin, smax = 1e-3, torch.tensor(0.002), torch.tensor(80.0)
    beta_d = 2 * (torch.log(smin**2 + 1) / eps_s - torch.log(smax**2 + 1)) / (eps_s - 1)
    beta_min = torch.log(smax**2 + 1) - 0.5 * beta_d
    ts = ((beta_min**2 + 2 * beta_d * (t_steps.cpu() ** 2 + 1).log()).sqrt() - beta_min) / beta_d
    beta_0, beta_1 = beta_min, beta_d + beta_min
    coeffs: list[list[torch.Tensor]] = []
    for i in range(len(ts) - 1):
        order = min(i + 1, max_order)
        if order == 1:
            coeffs.append([])
            continue
        t_cur, t_next = ts[i], ts[i + 1]
        taus = torch.linspace(t_cur, t_next, n)
        dtau = (t_next - t_cur) / n
        prev_t = ts[[i - k for k in range(order)]]
        alpha = torch.exp(-0.5 * taus**2 * (beta_1 - beta_0) - taus * beta_0)
        d_log_alpha = -(taus * (beta_1 - beta_0) + beta_0)
        integrand = -0.5 * d_log_alpha / torch.sqrt(alpha * (1 - alpha))
        row = []
        for j in range(order):
            poly = 1
            for k in range(order):
                if k != j:
                    poly = poly * (taus - prev_t[k]) / (prev_t[j] - prev_t[k])
            row.append(torch.sum(integrand * poly) * dtau)
        coeffs.append(row)
    return coeffs


def sample_deis(denoiser, x, sigmas, *, callback=None, noise=None, max_order=3):
    """DEIS, diffusion exponential integrator sampler, tAB variant (Zhang & Chen 2023, arXiv:2204.13902)."""
    coeff_list = _deis_coefficients(sigmas, max_order)
    buf: list[torch.Tensor] = []
    for i in range(len(sigmas) - 1):
        t_cur, t_next = sigmas[i], sigmas[i + 1]
        denoised = denoiser(x, t_cur)
        _report(callback, i, x, denoised)
        d = (x - denoised) / t_cur
        order = min(max_order, i + 1)
        if t_next <= 0:
            order = 1
        if order == 1:
            x_next = x + (t_next - t_cur) * d
        else:
            c = coeff_list[i]
            x_next = x + c[0] * d
            for k in range(1, order):
                x_next = x_next + c[k] * buf[-k]
        _shift(buf, d, max_order)
        x = x_next
    return x
