"""UniPC multistep predictor-corrector, B(h) variants (Zhao et al. 2023, arXiv:2302.04867).

ComfyUI's version: data prediction, order min(3, steps - 1), lower order at the end, the solver runs
in variance-preserving space x / sqrt(1 + sigma²) with the last sigma 0 replaced by 0.001, and the
callback reports *after* each update, in that scaled space.
"""

from __future__ import annotations

import torch


def _log_alpha(sigma):
    return 0.5 * torch.log(1 / ((sigma * sigma) + 1))


def _alpha(sigma):
    return torch.exp(_log_alpha(sigma))


def _std(sigma):
    return torch.sqrt(1.0 - torch.exp(2.0 * _log_alpha(sigma)))


def _lambda(sigma):
    la = _log_alpha(sigma)
    return la - 0.5 * torch.log(1.0 - torch.exp(2.0 * la))


def _bcast(v, x):
    return v[(...,) + (None,) * (x.dim() - 1)]


class _UniPC:
    def __init__(self, denoiser, variant: str):
        self.denoiser = denoiser
        self.variant = variant

    def data_pred(self, x, t):
        # The k-diffusion denoiser works on x * sqrt(1 + sigma²); go there and back via eps.
        sig = _bcast(t, x)
        x_k = x * ((sig**2 + 1.0) ** 0.5)
        eps = (x_k - self.denoiser(x_k, t[0])) / sig
        return (x - _bcast(_std(t), x) * eps) / _bcast(_alpha(t), x)

    def update(self, x, model_prev, t_prev, t, order, use_corrector=True):
        dims = x.dim()
        t_prev_0 = t_prev[-1]
        lambda_prev_0, lambda_t = _lambda(t_prev_0), _lambda(t)
        m0 = model_prev[-1]
        sigma_prev_0, sigma_t = _std(t_prev_0), _std(t)
        alpha_t = torch.exp(_log_alpha(t))
        h = lambda_t - lambda_prev_0

        rks, d1s = [], []
        for i in range(1, order):
            rk = ((_lambda(t_prev[-(i + 1)]) - lambda_prev_0) / h)[0]
            rks.append(rk)
            d1s.append((model_prev[-(i + 1)] - m0) / rk)
        rks.append(1.0)
        rks = torch.tensor(rks, device=x.device)

        hh = -h[0]
        h_phi_1 = torch.expm1(hh)
        h_phi_k = h_phi_1 / hh - 1
        b_h = hh if self.variant == "bh1" else torch.expm1(hh)
        R, b = [], []
        fact = 1
        for i in range(1, order + 1):
            R.append(torch.pow(rks, i - 1))
            b.append(h_phi_k * fact / b_h)
            fact *= i + 1
            h_phi_k = h_phi_k / hh - 1 / fact
        R = torch.stack(R)
        b = torch.tensor(b, device=x.device)

        D1s = None
        if d1s:
            D1s = torch.stack(d1s, dim=1)
            rhos_p = torch.tensor([0.5], device=x.device) if order == 2 else torch.linalg.solve(R[:-1, :-1], b[:-1])
        if use_corrector:
            rhos_c = torch.tensor([0.5], device=x.device) if order == 1 else torch.linalg.solve(R, b)

        x_t_ = _bcast(sigma_t / sigma_prev_0, x) * x - _bcast(alpha_t * h_phi_1, x) * m0
        pred_res = torch.tensordot(D1s, rhos_p, dims=([1], [0])) if D1s is not None else 0
        x_t = x_t_ - _bcast(alpha_t * b_h, x) * pred_res
        model_t = None
        if use_corrector:
            model_t = self.data_pred(x_t, t)
            corr_res = torch.tensordot(D1s, rhos_c[:-1], dims=([1], [0])) if D1s is not None else 0
            x_t = x_t_ - _bcast(alpha_t * b_h, x) * (corr_res + rhos_c[-1] * (model_t - m0))
        del dims
        return x_t, model_t

    def sample(self, x, timesteps, order, callback):
        steps = len(timesteps) - 1
        model_prev: list = []
        t_prev: list = []
        for step_index in range(steps):
            if step_index == 0:
                vec_t = timesteps[0].expand(x.shape[0])
                model_prev = [self.data_pred(x, vec_t)]
                t_prev = [vec_t]
            elif step_index < order:
                vec_t = timesteps[step_index].expand(x.shape[0])
                x, model_x = self.update(x, model_prev, t_prev, vec_t, step_index, use_corrector=True)
                if model_x is None:
                    model_x = self.data_pred(x, vec_t)
                model_prev.append(model_x)
                t_prev.append(vec_t)
            else:
                last = step_index + (2 if step_index == steps - 1 else 1)
                for step in range(step_index, last):
                    vec_t = timesteps[step].expand(x.shape[0])
                    step_order = min(order, steps + 1 - step)
                    x, model_x = self.update(x, model_prev, t_prev, vec_t, step_order, use_corrector=step != steps)
                    for i in range(order - 1):
                        t_prev[i] = t_prev[i + 1]
                        model_prev[i] = model_prev[i + 1]
                    t_prev[-1] = vec_t
                    if step < steps:
                        if model_x is None:
                            model_x = self.data_pred(x, vec_t)
                        model_prev[-1] = model_x
            if callback is not None:
                callback(step_index, x, model_prev[-1])
        return x


def _sample_unipc(denoiser, x, sigmas, callback, variant):
    timesteps = sigmas.clone()
    if sigmas[-1] == 0:
        timesteps[-1] = 0.001
    x = x / torch.sqrt(1.0 + timesteps[0] ** 2.0)
    order = min(3, len(timesteps) - 2)
    x = _UniPC(denoiser, variant).sample(x, timesteps, order, callback)
    return x / _alpha(timesteps[-1])


def sample_uni_pc(denoiser, x, sigmas, *, callback=None, noise=None):
    """UniPC with B(h) = h, "bh1" (Zhao et al. 2023, arXiv:2302.04867)."""
    return _sample_unipc(denoiser, x, sigmas, callback, "bh1")


def sample_uni_pc_bh2(denoiser, x, sigmas, *, callback=None, noise=None):
    """UniPC with B(h) = e^h - 1, "bh2" (Zhao et al. 2023, arXiv:2302.04867)."""
    return _sample_unipc(denoiser, x, sigmas, callback, "bh2")
