"""More samplers in the same shape as `samplers.py`: CFG++, RES, gradient estimation, ER-SDE, SEEDS,
SA-Solver and the DPM-Solver fast/adaptive drivers. Numbers follow ComfyUI 0.3.64."""

from __future__ import annotations

import math

import torch

from .samplers import _noise_or_default, _report, _sigma, _t, ancestral_step, to_d

# -- CFG++ (Chung et al. 2024, arXiv:2406.08070) ---------------------------------------------


def sample_euler_ancestral_cfg_pp(denoiser, x, sigmas, *, callback=None, noise=None, eta=1.0, s_noise=1.0):
    """Ancestral Euler with CFG++: renoise along the unconditional direction (Chung et al. 2024)."""
    noise = _noise_or_default(noise, x)
    for i in range(len(sigmas) - 1):
        denoised = denoiser(x, sigmas[i])
        uncond = denoiser.uncond_denoised
        _report(callback, i, x, denoised)
        if sigmas[i + 1] == 0:
            x = denoised
            continue
        alpha_s = sigmas[i] * _t(sigmas[i]).exp()
        alpha_t = sigmas[i + 1] * _t(sigmas[i + 1]).exp()
        d = to_d(x, sigmas[i], alpha_s * uncond)
        sigma_down, sigma_up = ancestral_step(sigmas[i] / alpha_s, sigmas[i + 1] / alpha_t, eta)
        sigma_down = alpha_t * sigma_down
        x = alpha_t * denoised + sigma_down * d
        if eta > 0 and s_noise > 0:
            x = x + alpha_t * noise(sigmas[i], sigmas[i + 1]) * s_noise * sigma_up
    return x


def sample_euler_cfg_pp(denoiser, x, sigmas, *, callback=None, noise=None):
    """Euler with CFG++ (Chung et al. 2024): the deterministic eta = 0 case of the ancestral one."""
    return sample_euler_ancestral_cfg_pp(denoiser, x, sigmas, callback=callback, noise=noise, eta=0.0, s_noise=0.0)


def sample_dpmpp_2s_ancestral_cfg_pp(denoiser, x, sigmas, *, callback=None, noise=None, eta=1.0, s_noise=1.0):
    """Ancestral DPM-Solver++(2S) with CFG++ (Lu et al. 2022; Chung et al. 2024), ComfyUI 0.3.64's variant.

    Each exponential-integrator update starts from x shifted by the guidance (cfg x0 - uncond x0) and
    extrapolates with the guided x0. The shift is re-read after the midpoint evaluation, so the final
    update of a step uses the midpoint call's unconditional x0 next to the first call's guided x0
    (ComfyUI reads its post-CFG capture after the second model call). The last step goes
    to the guided x0 along the unconditional direction.
    """
    noise = _noise_or_default(noise, x)
    for i in range(len(sigmas) - 1):
        denoised = denoiser(x, sigmas[i])
        sigma_down, sigma_up = ancestral_step(sigmas[i], sigmas[i + 1], eta)
        _report(callback, i, x, denoised)
        if sigma_down == 0:
            x = denoised + to_d(x, sigmas[i], denoiser.uncond_denoised) * sigma_down
        else:
            t, t_next = _t(sigmas[i]), _t(sigma_down)
            h = t_next - t
            s = t + 0.5 * h
            shifted = x + (denoised - denoiser.uncond_denoised)
            x_mid = (_sigma(s) / _sigma(t)) * shifted - (-0.5 * h).expm1() * denoised
            denoised_mid = denoiser(x_mid, _sigma(s))
            shifted = x + (denoised - denoiser.uncond_denoised)  # uncond x0 of the midpoint call
            x = (_sigma(t_next) / _sigma(t)) * shifted - (-h).expm1() * denoised_mid
        if sigmas[i + 1] > 0:
            x = x + noise(sigmas[i], sigmas[i + 1]) * s_noise * sigma_up
    return x


def sample_dpmpp_2m_cfg_pp(denoiser, x, sigmas, *, callback=None, noise=None):
    """DPM-Solver++(2M) with CFG++ (Lu et al. 2022; Chung et al. 2024)."""
    old_uncond = None
    for i in range(len(sigmas) - 1):
        denoised = denoiser(x, sigmas[i])
        uncond = denoiser.uncond_denoised
        _report(callback, i, x, denoised)
        t, t_next = _t(sigmas[i]), _t(sigmas[i + 1])
        h = t_next - t
        if old_uncond is None or sigmas[i + 1] == 0:
            mix = -torch.exp(-h) * uncond
        else:
            r = (t - _t(sigmas[i - 1])) / h
            mix = -torch.exp(-h) * uncond - torch.expm1(-h) * (1 / (2 * r)) * (denoised - old_uncond)
        x = denoised + mix + torch.exp(-h) * x
        old_uncond = uncond
    return x


# -- RES multistep (Zhang et al. 2023, arXiv:2308.02157) -------------------------------------


def _res_multistep(denoiser, x, sigmas, callback, noise, eta, cfg_pp, s_noise=1.0):
    noise = _noise_or_default(noise, x)

    def phi1(t):
        return torch.expm1(t) / t

    def phi2(t):
        return (phi1(t) - 1.0) / t

    old_sigma_down = old_denoised = None
    for i in range(len(sigmas) - 1):
        denoised = denoiser(x, sigmas[i])
        uncond = denoiser.uncond_denoised if cfg_pp else None
        sigma_down, sigma_up = ancestral_step(sigmas[i], sigmas[i + 1], eta)
        _report(callback, i, x, denoised)
        if sigma_down == 0 or old_denoised is None:
            if cfg_pp:
                x = denoised + to_d(x, sigmas[i], uncond) * sigma_down
            else:
                x = x + to_d(x, sigmas[i], denoised) * (sigma_down - sigmas[i])
        else:
            t, t_old, t_next, t_prev = _t(sigmas[i]), _t(old_sigma_down), _t(sigma_down), _t(sigmas[i - 1])
            h = t_next - t
            c2 = (t_prev - t_old) / h
            p1, p2 = phi1(-h), phi2(-h)
            b1 = torch.nan_to_num(p1 - p2 / c2, nan=0.0)
            b2 = torch.nan_to_num(p2 / c2, nan=0.0)
            if cfg_pp:
                x = x + (denoised - uncond)
                x = _sigma(h) * x + h * (b1 * uncond + b2 * old_denoised)
            else:
                x = _sigma(h) * x + h * (b1 * denoised + b2 * old_denoised)
        if sigmas[i + 1] > 0:
            x = x + noise(sigmas[i], sigmas[i + 1]) * s_noise * sigma_up
        old_denoised = uncond if cfg_pp else denoised
        old_sigma_down = sigma_down
    return x


def sample_res_multistep(denoiser, x, sigmas, *, callback=None, noise=None):
    """RES second-order multistep exponential integrator (Zhang et al. 2023, arXiv:2308.02157)."""
    return _res_multistep(denoiser, x, sigmas, callback, noise, eta=0.0, cfg_pp=False)


def sample_res_multistep_cfg_pp(denoiser, x, sigmas, *, callback=None, noise=None):
    """RES multistep with CFG++ (Zhang et al. 2023; Chung et al. 2024)."""
    return _res_multistep(denoiser, x, sigmas, callback, noise, eta=0.0, cfg_pp=True)


def sample_res_multistep_ancestral(denoiser, x, sigmas, *, callback=None, noise=None, eta=1.0):
    """Ancestral RES multistep (Zhang et al. 2023)."""
    return _res_multistep(denoiser, x, sigmas, callback, noise, eta=eta, cfg_pp=False)


def sample_res_multistep_ancestral_cfg_pp(denoiser, x, sigmas, *, callback=None, noise=None, eta=1.0):
    """Ancestral RES multistep with CFG++ (Zhang et al. 2023; Chung et al. 2024)."""
    return _res_multistep(denoiser, x, sigmas, callback, noise, eta=eta, cfg_pp=True)


# -- Gradient estimation (Permenter & Yuan 2024, arXiv:2306.04848) --------------------------


def _gradient_estimation(denoiser, x, sigmas, callback, cfg_pp, ge_gamma=2.0):
    old_d = None
    for i in range(len(sigmas) - 1):
        denoised = denoiser(x, sigmas[i])
        d = to_d(x, sigmas[i], denoiser.uncond_denoised if cfg_pp else denoised)
        _report(callback, i, x, denoised)
        dt = sigmas[i + 1] - sigmas[i]
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            x = denoised + d * sigmas[i + 1] if cfg_pp else x + d * dt
            if i >= 1:
                x = x + (ge_gamma - 1) * (d - old_d) * dt
        old_d = d
    return x


def sample_gradient_estimation(denoiser, x, sigmas, *, callback=None, noise=None):
    """Gradient-estimation sampler (Permenter & Yuan 2024, "Interpreting and improving diffusion models")."""
    return _gradient_estimation(denoiser, x, sigmas, callback, cfg_pp=False)


def sample_gradient_estimation_cfg_pp(denoiser, x, sigmas, *, callback=None, noise=None):
    """Gradient-estimation sampler with CFG++ (Permenter & Yuan 2024; Chung et al. 2024)."""
    return _gradient_estimation(denoiser, x, sigmas, callback, cfg_pp=True)


# -- ER-SDE (Cui et al. 2023, arXiv:2309.06169) ----------------------------------------------


def er_sde_noise_scaler(v):
    """ER-SDE's default noise scale function, x·(e^(x^0.3) + 10)."""
    return v * ((v**0.3).exp() + 10.0)


def sample_er_sde(denoiser, x, sigmas, *, callback=None, noise=None, s_noise=1.0, max_stage=3, noise_scaler=None):
    """Extended reverse-time SDE solver, VP ER-SDE-Solver-3 (Cui et al. 2023, arXiv:2309.06169)."""
    noise = _noise_or_default(noise, x)
    scaler = er_sde_noise_scaler if noise_scaler is None else noise_scaler

    n_points = 200.0
    point_idx = torch.arange(0, n_points, dtype=torch.float32, device=x.device)
    er_lambdas = _t(sigmas).neg().exp()  # sigma / alpha, here sigma itself
    old_denoised = old_denoised_d = None
    for i in range(len(sigmas) - 1):
        denoised = denoiser(x, sigmas[i])
        _report(callback, i, x, denoised)
        stage = min(max_stage, i + 1)
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            ls, lt = er_lambdas[i], er_lambdas[i + 1]
            alpha_s, alpha_t = sigmas[i] / ls, sigmas[i + 1] / lt
            r_alpha = alpha_t / alpha_s
            r = scaler(lt) / scaler(ls)
            x = r_alpha * r * x + alpha_t * (1 - r) * denoised
            if stage >= 2:
                dt = lt - ls
                step = -dt / n_points
                pos = lt + point_idx * step
                scaled = scaler(pos)
                s = torch.sum(1 / scaled) * step
                denoised_d = (denoised - old_denoised) / (ls - er_lambdas[i - 1])
                x = x + alpha_t * (dt + s * scaler(lt)) * denoised_d
                if stage >= 3:
                    s_u = torch.sum((pos - ls) / scaled) * step
                    denoised_u = (denoised_d - old_denoised_d) / ((ls - er_lambdas[i - 2]) / 2)
                    x = x + alpha_t * ((dt**2) / 2 + s_u * scaler(lt)) * denoised_u
                old_denoised_d = denoised_d
            if s_noise > 0:
                x = x + alpha_t * noise(sigmas[i], sigmas[i + 1]) * s_noise * \
                    (lt**2 - ls**2 * r**2).sqrt().nan_to_num(nan=0.0)
        old_denoised = denoised
    return x


# -- SEEDS (Gonzalez et al. 2023, arXiv:2305.14267) -------------------------------------------


def _phi1(h):
    return torch.expm1(h)


def _phi2(h):
    return (torch.expm1(h) - h) / h


def sample_seeds_2(denoiser, x, sigmas, *, callback=None, noise=None, eta=1.0, s_noise=1.0, r=0.5):
    """SEEDS-2, stochastic explicit exponential derivative-free solver, 2 stages (Gonzalez et al. 2023)."""
    noise = _noise_or_default(noise, x)
    inject = eta > 0 and s_noise > 0
    fac = 1 / (2 * r)
    for i in range(len(sigmas) - 1):
        denoised = denoiser(x, sigmas[i])
        _report(callback, i, x, denoised)
        if sigmas[i + 1] == 0:
            x = denoised
            continue
        lambda_s, lambda_t = _t(sigmas[i]), _t(sigmas[i + 1])
        h = lambda_t - lambda_s
        h_eta = h * (eta + 1)
        lambda_s_1 = torch.lerp(lambda_s, lambda_t, r)
        sigma_s_1 = _sigma(lambda_s_1)
        alpha_s_1 = sigma_s_1 * lambda_s_1.exp()
        alpha_t = sigmas[i + 1] * lambda_t.exp()
        x_2 = sigma_s_1 / sigmas[i] * (-r * h * eta).exp() * x - alpha_s_1 * _phi1(-r * h_eta) * denoised
        if inject:
            sde_noise = (-2 * r * h * eta).expm1().neg().sqrt() * noise(sigmas[i], sigma_s_1)
            x_2 = x_2 + sde_noise * sigma_s_1 * s_noise
        denoised_2 = denoiser(x_2, sigma_s_1)
        denoised_d = torch.lerp(denoised, denoised_2, fac)
        x = sigmas[i + 1] / sigmas[i] * (-h * eta).exp() * x - alpha_t * _phi1(-h_eta) * denoised_d
        if inject:
            seg = (r - 1) * h * eta
            sde_noise = sde_noise * seg.exp()
            sde_noise = sde_noise + seg.mul(2).expm1().neg().sqrt() * noise(sigma_s_1, sigmas[i + 1])
            x = x + sde_noise * sigmas[i + 1] * s_noise
    return x


def sample_seeds_3(denoiser, x, sigmas, *, callback=None, noise=None, eta=1.0, s_noise=1.0, r_1=1.0 / 3, r_2=2.0 / 3):
    """SEEDS-3, three-stage stochastic exponential solver (Gonzalez et al. 2023, arXiv:2305.14267)."""
    noise = _noise_or_default(noise, x)
    inject = eta > 0 and s_noise > 0
    for i in range(len(sigmas) - 1):
        denoised = denoiser(x, sigmas[i])
        _report(callback, i, x, denoised)
        if sigmas[i + 1] == 0:
            x = denoised
            continue
        lambda_s, lambda_t = _t(sigmas[i]), _t(sigmas[i + 1])
        h = lambda_t - lambda_s
        h_eta = h * (eta + 1)
        lambda_s_1, lambda_s_2 = torch.lerp(lambda_s, lambda_t, r_1), torch.lerp(lambda_s, lambda_t, r_2)
        sigma_s_1, sigma_s_2 = _sigma(lambda_s_1), _sigma(lambda_s_2)
        alpha_s_1 = sigma_s_1 * lambda_s_1.exp()
        alpha_s_2 = sigma_s_2 * lambda_s_2.exp()
        alpha_t = sigmas[i + 1] * lambda_t.exp()
        x_2 = sigma_s_1 / sigmas[i] * (-r_1 * h * eta).exp() * x - alpha_s_1 * _phi1(-r_1 * h_eta) * denoised
        if inject:
            sde_noise = (-2 * r_1 * h * eta).expm1().neg().sqrt() * noise(sigmas[i], sigma_s_1)
            x_2 = x_2 + sde_noise * sigma_s_1 * s_noise
        denoised_2 = denoiser(x_2, sigma_s_1)
        a3_2 = r_2 / r_1 * _phi2(-r_2 * h_eta)
        a3_1 = _phi1(-r_2 * h_eta) - a3_2
        x_3 = sigma_s_2 / sigmas[i] * (-r_2 * h * eta).exp() * x - alpha_s_2 * (a3_1 * denoised + a3_2 * denoised_2)
        if inject:
            seg = (r_1 - r_2) * h * eta
            sde_noise = sde_noise * seg.exp()
            sde_noise = sde_noise + seg.mul(2).expm1().neg().sqrt() * noise(sigma_s_1, sigma_s_2)
            x_3 = x_3 + sde_noise * sigma_s_2 * s_noise
        denoised_3 = denoiser(x_3, sigma_s_2)
        b3 = _phi2(-h_eta) / r_2
        b1 = _phi1(-h_eta) - b3
        x = sigmas[i + 1] / sigmas[i] * (-h * eta).exp() * x - alpha_t * (b1 * denoised + b3 * denoised_3)
        if inject:
            seg = (r_2 - 1) * h * eta
            sde_noise = sde_noise * seg.exp()
            sde_noise = sde_noise + seg.mul(2).expm1().neg().sqrt() * noise(sigma_s_2, sigmas[i + 1])
            x = x + sde_noise * sigmas[i + 1] * s_noise
    return x


# -- SA-Solver (Xue et al. 2023, arXiv:2309.05019) --------------------------------------------


def _sa_exp_coeffs(s, t, order, tau):
    tau_mul = 1 + tau**2
    h = t - s
    p = torch.arange(order, dtype=s.dtype, device=s.device)
    terms = t**p - s**p * (-tau_mul * h).exp()
    depth = p.unsqueeze(1) - p.unsqueeze(0)
    log_fact = (p + 1).lgamma()
    coeff = log_fact.unsqueeze(1) - log_fact.unsqueeze(0)
    if tau > 0:
        coeff = coeff - depth * math.log(tau_mul)
    signs = torch.where(depth % 2 == 0, 1.0, -1.0)
    return (coeff.exp() * signs).tril() @ terms


def _sa_b_coeffs(sigma_next, lambdas, lambda_s, lambda_t, tau):
    n = lambdas.shape[0]
    exp_c = _sa_exp_coeffs(lambda_s, lambda_t, n, tau)
    vander_t = torch.vander(lambdas, n, increasing=True).T
    return sigma_next * lambda_t.exp() * torch.linalg.solve(vander_t, exp_c)


def sample_sa_solver(denoiser, x, sigmas, *, callback=None, noise=None, s_noise=1.0, predictor_order=3,
                     corrector_order=4, use_pece=False, tau_interval=None):
    """SA-Solver, stochastic Adams predictor-corrector in data prediction (Xue et al. 2023)."""
    if len(sigmas) <= 1:
        return x
    noise = _noise_or_default(noise, x)
    lambdas = _t(sigmas)
    if tau_interval is None:
        ms = getattr(denoiser, "model_sampling", None)
        if ms is None:
            raise ValueError("sa_solver needs denoiser.model_sampling or an explicit tau_interval")
        tau_interval = (ms.percent_to_sigma(0.2), ms.percent_to_sigma(0.8))
    start_sigma, end_sigma = tau_interval

    def tau_func(sigma):
        sigma = float(sigma)
        return 1.0 if start_sigma >= sigma >= end_sigma else 0.0

    max_order = max(predictor_order, corrector_order)
    x_pred = x
    h = 0.0
    tau_t = 0.0
    step_noise = 0.0
    preds: list[torch.Tensor] = []
    lower_to_end = sigmas[-1].item() == 0
    for i in range(len(sigmas) - 1):
        denoised = denoiser(x_pred, sigmas[i])
        _report(callback, i, x_pred, denoised)
        preds.append(denoised)
        preds = preds[-max_order:]
        p_order = min(predictor_order, len(preds))
        c_order = 0 if i == 0 or (sigmas[i + 1] == 0 and not use_pece) else min(corrector_order, len(preds))
        if lower_to_end:
            p_order = min(p_order, len(sigmas) - 2 - i)
            c_order = min(c_order, len(sigmas) - 1 - i)
        if c_order == 0:
            x = x_pred
        else:
            b = _sa_b_coeffs(sigmas[i], lambdas[i - c_order + 1:i + 1], lambdas[i - 1], lambdas[i], tau_t)
            res = torch.tensordot(torch.stack(preds[-c_order:], dim=1), b, dims=([1], [0]))
            x = sigmas[i] / sigmas[i - 1] * (-(tau_t**2) * h).exp() * x + res
            if tau_t > 0 and s_noise > 0:
                x = x + step_noise
            if use_pece:
                denoised = denoiser(x, sigmas[i])
                preds[-1] = denoised
        if sigmas[i + 1] == 0:
            x_pred = denoised
        else:
            tau_t = tau_func(sigmas[i + 1])
            b = _sa_b_coeffs(sigmas[i + 1], lambdas[i - p_order + 1:i + 1], lambdas[i], lambdas[i + 1], tau_t)
            res = torch.tensordot(torch.stack(preds[-p_order:], dim=1), b, dims=([1], [0]))
            h = lambdas[i + 1] - lambdas[i]
            x_pred = sigmas[i + 1] / sigmas[i] * (-(tau_t**2) * h).exp() * x + res
            if tau_t > 0 and s_noise > 0:
                step_noise = noise(sigmas[i], sigmas[i + 1]) * sigmas[i + 1] * \
                    (-2 * tau_t**2 * h).expm1().neg().sqrt() * s_noise
                x_pred = x_pred + step_noise
    return x_pred


def sample_sa_solver_pece(denoiser, x, sigmas, *, callback=None, noise=None):
    """SA-Solver in PECE mode: re-evaluate after each correction (Xue et al. 2023)."""
    return sample_sa_solver(denoiser, x, sigmas, callback=callback, noise=noise, use_pece=True)


# -- DPM-Solver fast / adaptive (Lu et al. 2022, arXiv:2206.00927) ----------------------------


class _DPMSolver:
    def __init__(self, denoiser, callback):
        self.denoiser = denoiser
        self.callback = callback

    def eps(self, cache, key, x, t):
        if key in cache:
            return cache[key], cache
        e = (x - self.denoiser(x, _sigma(t))) / _sigma(t)
        return e, {key: e, **cache}

    def step1(self, x, t, t_next, cache):
        h = t_next - t
        e, cache = self.eps(cache, "eps", x, t)
        return x - _sigma(t_next) * h.expm1() * e, cache

    def step2(self, x, t, t_next, cache, r1=0.5):
        h = t_next - t
        e, cache = self.eps(cache, "eps", x, t)
        s1 = t + r1 * h
        u1 = x - _sigma(s1) * (r1 * h).expm1() * e
        e_r1, cache = self.eps(cache, "eps_r1", u1, s1)
        x_2 = x - _sigma(t_next) * h.expm1() * e - _sigma(t_next) / (2 * r1) * h.expm1() * (e_r1 - e)
        return x_2, cache

    def step3(self, x, t, t_next, cache, r1=1 / 3, r2=2 / 3):
        h = t_next - t
        e, cache = self.eps(cache, "eps", x, t)
        s1, s2 = t + r1 * h, t + r2 * h
        u1 = x - _sigma(s1) * (r1 * h).expm1() * e
        e_r1, cache = self.eps(cache, "eps_r1", u1, s1)
        u2 = x - _sigma(s2) * (r2 * h).expm1() * e - _sigma(s2) * (r2 / r1) * ((r2 * h).expm1() / (r2 * h) - 1) * (e_r1 - e)
        e_r2, cache = self.eps(cache, "eps_r2", u2, s2)
        x_3 = x - _sigma(t_next) * h.expm1() * e - _sigma(t_next) / r2 * (h.expm1() / h - 1) * (e_r2 - e)
        return x_3, cache


def _dpm_ends(sigmas):
    sigma_min = sigmas[-1]
    if sigma_min == 0:
        sigma_min = sigmas[-2]
    return sigma_min, sigmas[0]


def sample_dpm_fast(denoiser, x, sigmas, *, callback=None, noise=None):
    """DPM-Solver-fast: fixed orders 3,3,…,2/1 in log-SNR time, nfe = steps (Lu et al. 2022)."""
    if len(sigmas) <= 1:
        return x
    sigma_min, sigma_max = _dpm_ends(sigmas)
    nfe = len(sigmas) - 1
    solver = _DPMSolver(denoiser, callback)
    t_start, t_end = _t(torch.tensor(float(sigma_max))), _t(torch.tensor(float(sigma_min)))
    m = math.floor(nfe / 3) + 1
    ts = torch.linspace(t_start, t_end, m + 1, device=x.device)
    orders = [3] * (m - 2) + [2, 1] if nfe % 3 == 0 else [3] * (m - 1) + [nfe % 3]
    for i, order in enumerate(orders):
        cache: dict = {}
        t, t_next = ts[i], ts[i + 1]
        e, cache = solver.eps(cache, "eps", x, t)
        _report(callback, i, x, x - _sigma(t) * e)
        step = {1: solver.step1, 2: solver.step2, 3: solver.step3}[order]
        x, cache = step(x, t, t_next, cache)
    return x


def sample_dpm_adaptive(denoiser, x, sigmas, *, callback=None, noise=None, order=3, rtol=0.05, atol=0.0078,
                        h_init=0.05, pcoeff=0.0, icoeff=1.0, dcoeff=0.0, accept_safety=0.81, eta=0.0, s_noise=1.0):
    """DPM-Solver-12/23, PID step-size control on the embedded error, ancestral if eta > 0 (Lu et al. 2022)."""
    if len(sigmas) <= 1:
        return x
    noise = _noise_or_default(noise, x)
    sigma_min, sigma_max = _dpm_ends(sigmas)
    solver = _DPMSolver(denoiser, callback)
    t_start, t_end = _t(torch.tensor(float(sigma_max))), _t(torch.tensor(float(sigma_min)))
    forward = t_end > t_start
    h = abs(h_init) * (1 if forward else -1)
    atol_t, rtol_t = torch.tensor(atol), torch.tensor(rtol)
    b1 = (pcoeff + icoeff + dcoeff) / order
    b2 = -(pcoeff + 2 * dcoeff) / order
    b3 = dcoeff / order
    errs: list[float] = []
    s = t_start
    x_prev = x
    steps = 0
    while s < t_end - 1e-5 if forward else s > t_end + 1e-5:
        cache: dict = {}
        t = torch.minimum(t_end, s + h) if forward else torch.maximum(t_end, s + h)
        t_, su = t, 0.0
        if eta:  # step deterministically to sigma_down, then add noise up to sigma(t)
            sd, _ = ancestral_step(_sigma(s), _sigma(t), eta)
            t_ = torch.minimum(t_end, _t(sd))
            su = (_sigma(t) ** 2 - _sigma(t_) ** 2) ** 0.5
        e, cache = solver.eps(cache, "eps", x, s)
        denoised = x - _sigma(s) * e
        if order == 2:
            x_low, cache = solver.step1(x, s, t_, cache)
            x_high, cache = solver.step2(x, s, t_, cache)
        else:
            x_low, cache = solver.step2(x, s, t_, cache, r1=1 / 3)
            x_high, cache = solver.step3(x, s, t_, cache)
        delta = torch.maximum(atol_t, rtol_t * torch.maximum(x_low.abs(), x_prev.abs()))
        error = torch.linalg.norm((x_low - x_high) / delta) / x.numel() ** 0.5
        # PID controller (Söderlind 2003), as in k-diffusion
        inv_error = 1 / (float(error) + 1e-8)
        if not errs:
            errs = [inv_error, inv_error, inv_error]
        errs[0] = inv_error
        factor = errs[0] ** b1 * errs[1] ** b2 * errs[2] ** b3
        factor = 1 + math.atan(factor - 1)
        accept = factor >= accept_safety
        if accept:
            errs[2], errs[1] = errs[1], errs[0]
        h *= factor
        if accept:
            x_prev = x_low
            x = x_high + su * s_noise * noise(_sigma(s), _sigma(t)) if eta else x_high
            s = t
        steps += 1
        _report(callback, steps - 1, x, denoised)
    return x
