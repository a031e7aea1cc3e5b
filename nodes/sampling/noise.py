"""Initial noise and the per-step noise sources of stochastic samplers (ComfyUI's conventions)."""

from __future__ import annotations

import torch


def prepare_noise(latent_samples: torch.Tensor, seed: int, batch_index: list[int] | None = None) -> torch.Tensor:
    """CPU float32-or-latent-dtype `torch.randn` for the whole batch from `manual_seed(seed)`.

    With `batch_index` (a LATENT cut out of a bigger batch), noise is drawn image by image up to the
    largest index and the rows at those indices are returned, so image k of a batch gets the same
    noise whether it is sampled alone or with the others.
    """
    generator = torch.manual_seed(seed)
    shape = list(latent_samples.size())
    kw = dict(dtype=latent_samples.dtype, layout=latent_samples.layout, generator=generator, device="cpu")
    if batch_index is None:
        return torch.randn(shape, **kw)
    unique = sorted(set(batch_index))
    wanted = set(unique)
    drawn: dict[int, torch.Tensor] = {}
    for i in range(unique[-1] + 1):
        n = torch.randn([1, *shape[1:]], **kw)
        if i in wanted:
            drawn[i] = n
    return torch.cat([drawn[i] for i in batch_index], dim=0)


class GeneratorNoise:
    """Fresh Gaussian noise from a torch.Generator seeded with the KSampler seed, in request order."""

    def __init__(self, x: torch.Tensor, seed: int | None):
        self.shape, self.dtype, self.device = x.shape, x.dtype, x.device
        if seed is None:
            self.generator = None
        else:
            self.generator = torch.Generator(device=x.device)
            self.generator.manual_seed(seed)

    def __call__(self, sigma=None, sigma_next=None) -> torch.Tensor:
        return torch.randn(self.shape, dtype=self.dtype, device=self.device, generator=self.generator)


class BrownianTreeNoise:
    """Brownian-motion increments from torchsde.BrownianTree over [sigma_lo, sigma_hi] (seed = entropy).

    `noise(sigma, sigma_next)` is W(sigma_next) - W(sigma) normalised by sqrt(|sigma_next - sigma|), so
    the same seed gives consistent noise whatever the step sizes (Kidger et al. 2021).
    """

    def __init__(self, x: torch.Tensor, sigma_min, sigma_max, seed: int | None, cpu: bool = True):
        import torchsde

        self.cpu = cpu
        t0, t1 = torch.as_tensor(sigma_min), torch.as_tensor(sigma_max)
        t0, t1, self.sign = (t0, t1, 1) if t0 < t1 else (t1, t0, -1)
        w0 = torch.zeros_like(x)
        if seed is None:
            seed = int(torch.randint(0, 2**63 - 1, ()).item())
        if cpu:
            t0, w0, t1 = t0.detach().cpu(), w0.detach().cpu(), t1.detach().cpu()
        self.tree = torchsde.BrownianTree(t0, w0, t1, entropy=seed)

    def _w(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        a, b, sign = (a, b, 1) if a < b else (b, a, -1)
        device, dtype = a.device, a.dtype
        if self.cpu:
            a, b = a.detach().cpu().float(), b.detach().cpu().float()
        return self.tree(a, b).to(device=device, dtype=dtype) * (self.sign * sign)

    def __call__(self, sigma, sigma_next) -> torch.Tensor:
        t0, t1 = torch.as_tensor(sigma), torch.as_tensor(sigma_next)
        return self._w(t0, t1) / (t1 - t0).abs().sqrt()
