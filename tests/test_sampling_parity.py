"""Numerical parity of the sampling machinery with ComfyUI 0.3.64 (shared/fixtures/comfy_samplers.json).

The fixture's toy model is driven through the real KSampler path: `ksampler.sample` with a
DiffusionModel whose `unet` is a fake diffusers UNet (called as unet(x_in, t, encoder_hidden_states=…)
and returning an object with `.sample`), so CFG batching, timestep lookup, eps -> x0, start-noise
scaling, noise sources and the LATENT scale are all exercised.
"""

from __future__ import annotations

import json
import types
import warnings
from functools import lru_cache

import pytest
import torch

from nodes.core.values import ConditioningEntry, DiffusionModel, Latent
from nodes.models.configs import alphas_cumprod as sd_alphas_cumprod
from nodes.sampling import SAMPLERS, SCHEDULERS, ksampler
from nodes.sampling.model_sampling import ModelSampling
from nodes.sampling.schedules import calculate_sigmas, ksampler_sigmas
from tests.shared import FIXTURES

FIXTURES = FIXTURES
TOL = 1e-4  # relative to the largest magnitude of the reference


@lru_cache(maxsize=1)
def fixture() -> dict:
    return json.loads((FIXTURES / "comfy_samplers.json").read_text())


class ToyUNet:
    """The fixture's weight-free model: eps = tanh(0.5 * x_in + 0.001 * t + c), c = context[:, 0, 0]."""

    def __init__(self):
        self.calls = 0

    def __call__(self, x_in, timestep, encoder_hidden_states):
        self.calls += 1
        c = encoder_hidden_states[:, 0, 0].reshape(-1, 1, 1, 1)
        a = 0.5 * x_in
        a = a + 0.001 * timestep.reshape(-1, 1, 1, 1)
        a = a + c
        return types.SimpleNamespace(sample=torch.tanh(a))


def toy_model() -> DiffusionModel:
    return DiffusionModel(unet=ToyUNet(), alphas_cumprod=sd_alphas_cumprod(), dtype=torch.float32,
                          device=torch.device("cpu"))


def conds(pos_tokens: int = 77, neg_tokens: int = 77):
    pos = [ConditioningEntry(cond=torch.full((1, pos_tokens, 8), 0.3))]
    neg = [ConditioningEntry(cond=torch.full((1, neg_tokens, 8), -0.2))]
    return pos, neg


def run(name: str, scheduler: str, latent=None, model=None, **kw) -> torch.Tensor:
    d = fixture()
    model = model or toy_model()
    pos, neg = conds()
    latent = latent if latent is not None else Latent(samples=torch.zeros(d["shape"]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torchsde's harmless "Should have ta>=t0" at the interval ends
        return ksampler.sample(model, pos, neg, latent, seed=d["seed"], steps=kw.pop("steps", d["steps"]),
                               cfg=d["cfg"], sampler_name=name, scheduler=scheduler, **kw)


def rel_err(out: torch.Tensor, ref) -> float:
    ref = torch.tensor(ref, dtype=torch.float32)
    return ((out - ref).abs().max() / ref.abs().max()).item()


COMBOS = [k for k in fixture()["results"] if k.split("/")[0] in SAMPLERS]


@pytest.mark.parametrize("combo", COMBOS)
def test_final_latent_and_model_calls_match_comfyui(combo):
    name, scheduler = combo.split("/")
    model = toy_model()
    out = run(name, scheduler, model=model)
    assert rel_err(out, fixture()["results"][combo]) < TOL
    assert model.unet.calls == fixture()["nfe"][combo]


def test_sigma_table_matches_bit_for_bit():
    ms = ModelSampling(sd_alphas_cumprod())
    assert torch.equal(ms.sigmas, torch.tensor(fixture()["model_sigmas"], dtype=torch.float32))
    assert torch.equal(ms.log_sigmas, torch.tensor(fixture()["model_log_sigmas"], dtype=torch.float32))


@pytest.mark.parametrize("steps", ["8", "20"])
@pytest.mark.parametrize("scheduler", SCHEDULERS)
def test_schedules_match(scheduler, steps):
    ms = ModelSampling(sd_alphas_cumprod())
    ref = torch.tensor(fixture()["sigmas"][scheduler][steps])
    got = calculate_sigmas(ms, scheduler, int(steps))
    assert got.shape == ref.shape and (got - ref).abs().max().item() < 1e-6
    assert got[-1] == 0


@pytest.mark.parametrize("scheduler", SCHEDULERS)
def test_penultimate_sigma_is_discarded_for_dpm2_and_unipc(scheduler):
    ms = ModelSampling(sd_alphas_cumprod())
    fx = fixture()["sigmas_discard_penultimate_8"]
    for name in fx["applies_to"]:
        got = ksampler_sigmas(ms, scheduler, name, 8)
        assert (got - torch.tensor(fx["sigmas"][scheduler])).abs().max().item() < 1e-6


@pytest.mark.parametrize("combo", list(fixture()["trajectories"]["runs"]))
def test_trajectories_match(combo):
    name, scheduler = combo.split("/")
    seen = []
    run(name, scheduler, callback=lambda i, total, x, den: seen.append((i, x.clone(), den.clone())))
    ref = fixture()["trajectories"]["runs"][combo]
    assert [s[0] for s in seen] == [r["i"] for r in ref]
    for (_, x, den), r in zip(seen, ref, strict=True):
        assert rel_err(x, r["x"]) < TOL
        assert rel_err(den, r["denoised"]) < TOL


@pytest.mark.parametrize("combo", list(fixture()["denoise_0_5"]["runs"]))
def test_img2img_denoise_half_matches(combo):
    name, scheduler = combo.split("/")
    fx = fixture()["denoise_0_5"]
    r = fx["runs"][combo]
    ms = ModelSampling(sd_alphas_cumprod())
    sig = ksampler_sigmas(ms, scheduler, name, r["steps"], r["denoise"])
    assert (sig - torch.tensor(r["sigmas_used"])).abs().max().item() < 1e-6
    model = toy_model()
    latent = Latent(samples=torch.tensor(fx["input_latent"], dtype=torch.float32))
    out = run(name, scheduler, latent=latent, model=model, steps=r["steps"], denoise=r["denoise"])
    assert rel_err(out, r["result"]) < TOL
    assert model.unet.calls == r["nfe"]


def test_initial_noise_is_comfyui_prepare_noise():
    from nodes.sampling.noise import prepare_noise

    noise = prepare_noise(torch.zeros(fixture()["shape"]), fixture()["seed"])
    assert torch.equal(noise, torch.tensor(fixture()["noise"], dtype=torch.float32))


def test_sampler_list_is_comfyuis_in_its_order():
    fixture_names = list(dict.fromkeys(k.split("/")[0] for k in fixture()["results"]))
    assert fixture_names == list(SAMPLERS)
