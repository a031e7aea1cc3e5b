"""Custom sampling: NOISE, GUIDER, SAMPLER and SIGMAS nodes, and SamplerCustom(Advanced) running the
same driver as KSampler (the toy model of the sampler fixtures)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nodes import custom_sampling as cs
from nodes.core.values import ConditioningEntry, Guider, Latent, SamplerChoice
from nodes.sampling import guidance, ksampler
from nodes.sampling.schedules import AYS_NOISE_LEVELS
from tests.shared import FIXTURES
from tests.test_sampling_parity import conds, toy_model


class Ctx:
    """What the sampling nodes use of the run context."""

    compile = None  # the run's compile setting: off

    def __init__(self):
        self.steps = []

    def progress(self, step, total):
        self.steps.append((step, total))

    def preview(self, image, step=0):
        pass


def node(cls, *args):
    return cls().run(Ctx(), *args)


def zeros_latent(h: int = 8, w: int = 8) -> Latent:
    return Latent(samples=torch.zeros(1, 4, h, w))


def advanced(model, seed, cfg, sampler_name, sigmas, latent=None, noise=None):
    pos, neg = conds()
    (guider,) = node(cs.CFGGuider, model, pos, neg, cfg)
    (sampler,) = node(cs.KSamplerSelect, sampler_name)
    (noise_value,) = node(cs.RandomNoise, seed) if noise is None else noise
    return node(cs.SamplerCustomAdvanced, noise_value, guider, sampler, sigmas, latent or zeros_latent())


def ksampler_latent(model, **kw):
    pos, neg = conds()
    args = dict(seed=7, steps=6, cfg=5.0, sampler_name="euler", scheduler="normal")
    args.update(kw)
    return ksampler.sample(model, pos, neg, zeros_latent(), **args)


@pytest.mark.parametrize("sampler_name", ["euler", "euler_ancestral", "dpmpp_2m_sde", "dpmpp_2m"])
def test_sampler_custom_advanced_is_ksampler_taken_apart(sampler_name):
    model = toy_model()
    (sigmas,) = node(cs.BasicScheduler, model, "karras", 6, 1.0)
    out, _ = advanced(model, 7, 5.0, sampler_name, sigmas)
    assert torch.equal(out.samples, ksampler_latent(toy_model(), sampler_name=sampler_name, scheduler="karras"))


def test_sampler_custom_is_ksampler_with_the_sampler_and_sigmas_as_inputs():
    model = toy_model()
    (sigmas,) = node(cs.BasicScheduler, model, "normal", 6, 1.0)
    (sampler,) = node(cs.KSamplerSelect, "euler_ancestral")
    pos, neg = conds()
    out, denoised = node(cs.SamplerCustom, model, True, 7, 5.0, pos, neg, sampler, sigmas, zeros_latent())
    assert torch.equal(out.samples, ksampler_latent(toy_model(), sampler_name="euler_ancestral"))
    assert torch.equal(denoised.samples, out.samples)  # euler ancestral's last step lands on its x0 prediction


def test_denoised_output_is_the_last_steps_prediction_in_latent_units():
    model = toy_model()
    (sigmas,) = node(cs.BasicScheduler, model, "normal", 4, 1.0)
    seen = []
    pos, neg = conds()
    guider = Guider(model, {"positive": pos, "negative": neg}, cfg=5.0)
    noise = ksampler.initial_noise(torch.zeros(1, 4, 8, 8), 3, None, True)
    _, x0 = ksampler.run_sampling(guider, SamplerChoice("euler"), sigmas, noise, zeros_latent(), seed=3,
                                  callback=lambda i, total, x, den: seen.append(den))
    assert torch.equal(x0, model.latent_format.from_sampler(seen[-1]))


def test_add_noise_off_starts_from_the_latent_itself():
    model = toy_model()
    start = Latent(samples=torch.randn(1, 4, 8, 8))
    (sigmas,) = node(cs.BasicScheduler, model, "normal", 4, 0.5)
    (sampler,) = node(cs.KSamplerSelect, "euler")
    pos, neg = conds()
    a, _ = node(cs.SamplerCustom, model, False, 1, 5.0, pos, neg, sampler, sigmas, start)
    b, _ = node(cs.SamplerCustom, model, False, 2, 5.0, pos, neg, sampler, sigmas, start)
    assert torch.equal(a.samples, b.samples)  # no noise added: the seed does not matter for euler
    c, _ = node(cs.SamplerCustom, model, True, 2, 5.0, pos, neg, sampler, sigmas, start)
    assert not torch.allclose(a.samples, c.samples)


def test_split_sigmas_run_in_two_samplers_equal_one_run():
    model = toy_model()
    (sigmas,) = node(cs.BasicScheduler, model, "normal", 10, 1.0)
    high, low = node(cs.SplitSigmas, sigmas, 5)
    assert torch.equal(high, sigmas[:6]) and torch.equal(low, sigmas[5:])  # the boundary sigma is shared
    first, _ = advanced(model, 42, 7.0, "euler", high)
    second, _ = advanced(model, 42, 7.0, "euler", low, latent=first, noise=node(cs.DisableNoise))
    whole, _ = advanced(model, 42, 7.0, "euler", sigmas)
    assert torch.allclose(second.samples, whole.samples, rtol=1e-5, atol=1e-5)


def test_disable_noise_gives_zero_noise_and_seeds_step_noise_with_zero():
    model = toy_model()
    (sigmas,) = node(cs.BasicScheduler, model, "normal", 4, 1.0)
    latent = Latent(samples=torch.randn(1, 4, 8, 8))
    out, _ = advanced(model, 0, 5.0, "euler_ancestral", sigmas, latent=latent, noise=node(cs.DisableNoise))
    pos, neg = conds()
    expected = ksampler.sample(toy_model(), pos, neg, latent, seed=0, steps=4, cfg=5.0, sampler_name="euler_ancestral",
                               scheduler="normal", add_noise=False)
    assert torch.equal(out.samples, expected)


def test_split_sigmas_denoise_keeps_the_last_fraction_of_the_steps():
    sigmas = torch.arange(10, -1, -1, dtype=torch.float32)  # 10 steps
    high, low = node(cs.SplitSigmasDenoise, sigmas, 0.3)
    assert low.tolist() == [3.0, 2.0, 1.0, 0.0] and high.tolist() == list(map(float, range(10, 2, -1)))


def test_flip_sigmas_reverses_and_lifts_a_leading_zero():
    (flipped,) = node(cs.FlipSigmas, torch.tensor([3.0, 1.0, 0.0]))
    assert flipped.tolist() == pytest.approx([0.0001, 1.0, 3.0])


def test_karras_scheduler_gives_comfyuis_sigmas():
    ref = np.load(FIXTURES / "comfy_ref_nodes" / "custom_sampling_b.sigmas.npy")
    (sigmas,) = node(cs.KarrasScheduler, 10, 8.0, 0.1, 3.0)
    assert sigmas.dtype == torch.float32 and np.array_equal(sigmas.numpy(), ref)


def test_basic_scheduler_applies_denoise_but_not_ksamplers_penultimate_rule():
    model = toy_model()
    (full,) = node(cs.BasicScheduler, model, "karras", 8, 1.0)
    assert torch.equal(full, ksampler.sigmas_for(model, "karras", "euler", 8))
    assert len(ksampler.sigmas_for(model, "karras", "dpm_2", 8)) == 9 and not torch.equal(
        full, ksampler.sigmas_for(model, "karras", "dpm_2", 8))
    (half,) = node(cs.BasicScheduler, model, "normal", 5, 0.5)
    assert torch.equal(half, ksampler.sigmas_for(model, "normal", "euler", 5, denoise=0.5))
    assert len(node(cs.BasicScheduler, model, "normal", 5, 0.0)[0]) == 0


def test_exponential_is_polyexponential_with_rho_one():
    (exp,) = node(cs.ExponentialScheduler, 12, 14.6, 0.03)
    (poly,) = node(cs.PolyexponentialScheduler, 12, 14.6, 0.03, 1.0)
    assert torch.allclose(exp, poly) and exp[-1] == 0 and exp[0] == pytest.approx(14.6)
    (steep,) = node(cs.PolyexponentialScheduler, 12, 14.6, 0.03, 2.0)
    assert steep[6] < exp[6]  # rho > 1 spends more steps at low noise


def test_sd_turbo_scheduler_uses_timesteps_999_899_and_so_on():
    model = toy_model()
    ms = ksampler.model_sampling_for(model)
    (sigmas,) = node(cs.SDTurboScheduler, model, 2, 1.0)
    assert torch.allclose(sigmas, torch.tensor([float(ms.sigmas[999]), float(ms.sigmas[899]), 0.0]))
    (later,) = node(cs.SDTurboScheduler, model, 1, 0.5)
    assert torch.allclose(later, torch.tensor([float(ms.sigmas[499]), 0.0]))


def test_align_your_steps_gives_nvidias_levels_and_interpolates_log_linearly():
    (ten,) = node(cs.AlignYourStepsScheduler, "SD1", 10, 1.0)
    assert ten.tolist() == pytest.approx(AYS_NOISE_LEVELS["SD1"][:-1] + [0.0])
    (twenty,) = node(cs.AlignYourStepsScheduler, "SD1", 20, 1.0)
    assert len(twenty) == 21 and twenty[0] == pytest.approx(14.6146, abs=1e-3)
    assert float(twenty[2]) == pytest.approx(float(ten[1]), rel=1e-5)  # every other point is an original level
    (half,) = node(cs.AlignYourStepsScheduler, "SD1", 10, 0.5)
    assert half.tolist() == pytest.approx(AYS_NOISE_LEVELS["SD1"][5:10] + [0.0])


def test_sampler_nodes_pass_their_options_to_the_sampler():
    model = toy_model()
    (sigmas,) = node(cs.BasicScheduler, model, "normal", 6, 1.0)
    pos, neg = conds()

    def sample(sampler, seed=7):
        out, _ = node(cs.SamplerCustom, model, True, seed, 5.0, pos, neg, sampler, sigmas, zeros_latent())
        return out.samples

    euler = sample(node(cs.KSamplerSelect, "euler")[0])
    assert torch.allclose(sample(node(cs.SamplerEulerAncestral, 0.0, 1.0)[0]), euler, atol=1e-6)  # eta 0: no noise
    assert torch.allclose(sample(node(cs.SamplerLMS, 1)[0]), euler, atol=1e-5)  # first-order LMS is Euler
    assert not torch.allclose(sample(node(cs.SamplerEulerAncestral, 1.0, 1.0)[0]), euler, atol=1e-3)
    sde = node(cs.SamplerDPMPP_2M_SDE, "heun", 0.0, 1.0, "cpu")[0]
    assert sde.name == "dpmpp_2m_sde" and sde.options == {"eta": 0.0, "s_noise": 1.0, "solver_type": "heun"}
    assert node(cs.SamplerDPMPP_3M_SDE, 1.0, 1.0, "gpu")[0].name == "dpmpp_3m_sde_gpu"
    assert torch.isfinite(sample(node(cs.SamplerDPMAdaptative, 3, 0.05, 0.0078, 0.05, 0, 1, 0, 0.81, 0.5, 1.0)[0])).all()


def test_er_sde_ode_adds_no_step_noise():
    model = toy_model()
    (sigmas,) = node(cs.BasicScheduler, model, "normal", 6, 1.0)
    pos, neg = conds()
    guider = Guider(model, {"positive": pos, "negative": neg}, cfg=5.0)
    noise = ksampler.initial_noise(torch.zeros(1, 4, 8, 8), 3, None, True)
    ode = node(cs.SamplerER_SDE, "ODE", 3, 1.0, 1.0)[0]
    a, _ = ksampler.run_sampling(guider, ode, sigmas, noise, zeros_latent(), seed=1)
    b, _ = ksampler.run_sampling(guider, ode, sigmas, noise, zeros_latent(), seed=2)
    sde = node(cs.SamplerER_SDE, "ER-SDE", 3, 1.0, 1.0)[0]
    c, _ = ksampler.run_sampling(guider, sde, sigmas, noise, zeros_latent(), seed=1)
    assert torch.equal(a, b) and not torch.allclose(a, c, atol=1e-3)


def test_basic_guider_is_the_conditional_prediction_alone():
    model = toy_model()
    pos, _ = conds()
    (guider,) = node(cs.BasicGuider, model, pos)
    (cfg_one,) = node(cs.CFGGuider, model, pos, conds()[1], 1.0)
    (sigmas,) = node(cs.BasicScheduler, model, "normal", 4, 1.0)
    (sampler,) = node(cs.KSamplerSelect, "euler")
    (noise,) = node(cs.RandomNoise, 5)
    a = node(cs.SamplerCustomAdvanced, noise, guider, sampler, sigmas, zeros_latent())[0]
    b = node(cs.SamplerCustomAdvanced, noise, cfg_one, sampler, sigmas, zeros_latent())[0]
    assert torch.equal(a.samples, b.samples)


@pytest.mark.parametrize("style", ["regular", "nested"])
def test_dual_cfg_guider_combines_two_prompts_and_a_negative(style):
    model = toy_model()
    c1 = [ConditioningEntry(cond=torch.full((1, 77, 8), 0.4))]
    c2 = [ConditioningEntry(cond=torch.full((1, 77, 8), 0.1))]
    neg = [ConditioningEntry(cond=torch.full((1, 77, 8), -0.3))]
    (guider,) = node(cs.DualCFGGuider, model, c1, c2, neg, 3.0, 2.0, style)
    ms = ksampler.model_sampling_for(model)
    denoiser = ksampler.guided_denoiser(guider, ms)
    x, sigma = torch.randn(1, 4, 8, 8), torch.tensor(2.0)
    probe = guidance.GuidedDenoiser(ksampler.UNetCaller(model), ms, {"c1": c1, "c2": c2, "neg": neg})
    sides = probe.conds(x)
    p, m, n = probe.calc_cond_batch([sides["c1"], sides["c2"], sides["neg"]], x, sigma)
    expected = n + (m - n) * 2.0 + (p - m) * 3.0 if style == "regular" else n + 2.0 * ((m + (p - m) * 3.0) - n)
    assert torch.allclose(denoiser(x, sigma), expected, atol=1e-5)


def test_sampler_custom_reports_progress_per_step():
    model = toy_model()
    (sigmas,) = node(cs.BasicScheduler, model, "normal", 3, 1.0)
    (sampler,) = node(cs.KSamplerSelect, "euler")
    pos, neg = conds()
    ctx = Ctx()
    cs.SamplerCustom().run(ctx, model, True, 1, 5.0, pos, neg, sampler, sigmas, zeros_latent())
    assert ctx.steps == [(1, 3), (2, 3), (3, 3)]


def test_empty_sigmas_return_the_latent_and_one_sigma_only_adds_its_noise():
    model = toy_model()
    latent = Latent(samples=torch.randn(1, 4, 8, 8))
    out, denoised = advanced(model, 1, 5.0, "euler", torch.zeros([0]), latent=latent)
    assert torch.equal(out.samples, latent.samples) and denoised is out
    noisy, _ = advanced(model, 1, 5.0, "euler", torch.tensor([2.0]), latent=latent)
    noise = ksampler.initial_noise(latent.samples, 1, None, True)
    expected = model.latent_format.from_sampler(model.latent_format.to_sampler(latent.samples) + noise * 2.0)
    assert torch.allclose(noisy.samples, expected, atol=1e-5)


def test_set_first_sigma_replaces_only_the_first_level_of_a_copy():
    sigmas = torch.tensor([14.6, 3.0, 0.0])
    (out,) = node(cs.SetFirstSigma, sigmas, 136.0)
    assert out.tolist() == pytest.approx([136.0, 3.0, 0.0]) and sigmas[0] == pytest.approx(14.6)
