"""The explain nodes for noise (nodes/explain_noise.py) on the bundled model: ForwardNoise is q(x_t | x₀)
for the model's own ᾱ table, its sampler form is what KSamplerAdvanced continues from, and the
figures (WhySchedulerStep, ScheduleExplorer, ForwardNoiseStrip) have the layout they promise."""

import types
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from nodegraph import REGISTRY, NodeInputError
from nodes.core.values import Latent
from nodes.explain_noise import noise_level, schedule_table, why_step_latents
from nodes.sampling import SCHEDULERS
from nodes.sampling.ksampler import sample, sigmas_for

REPO = Path(__file__).resolve().parent.parent
MODEL = REPO / "models" / "checkpoints" / "sdgraph-shapes.safetensors"
REGISTRY.discover("nodes")
CTX = types.SimpleNamespace(check_cancelled=lambda: None, progress=lambda *a: None, preview=lambda *a: None,
                            compile=None)
PROMPT = "a large red circle at the top left on a white background"


@pytest.fixture(scope="module")
def bundled():
    from nodes.imaging.preview import fit_latent_rgb
    from nodes.models import load_checkpoint
    from nodes.text import encode_text

    assert MODEL.is_file(), f"the bundled model is missing: {MODEL}"
    model, clip, vae = load_checkpoint(MODEL, device="cpu")
    model.latent_format = replace(model.latent_format, rgb_factors=fit_latent_rgb(vae, model.latent_format))
    return types.SimpleNamespace(model=model, vae=vae, positive=encode_text(clip, PROMPT, None),
                                 negative=encode_text(clip, "", None))


def node(name, **inputs):
    return REGISTRY.get(name)().run(CTX, **inputs)


def x0_latent(seed=1):
    # A raw (unscaled) latent of the bundled model's size: 64x64 px → 8x8 cells.
    return Latent(torch.randn(2, 4, 8, 8, generator=torch.manual_seed(seed)) * 2.0)


def seeded_noise(seed, shape=(2, 4, 8, 8)):
    return torch.randn(shape, generator=torch.manual_seed(seed))


@pytest.mark.parametrize("t", [0, 250, 999])
def test_forward_noise_is_sqrt_alpha_bar_x0_plus_sqrt_one_minus_alpha_bar_eps(bundled, t):
    model, latent = bundled.model, x0_latent()
    noisy, noise = node("ForwardNoise", model=model, samples=latent, seed=7, timestep=t, sigma=0.0,
                        form="sqrt_alpha").values
    alpha_bar = model.alphas_cumprod[t].item()  # the model's own table, float64
    x0 = latent.samples * model.latent_format.scale_factor  # sampler space, where ᾱ applies
    eps = seeded_noise(7)
    expected = alpha_bar ** 0.5 * x0 + (1 - alpha_bar) ** 0.5 * eps
    assert torch.allclose(model.latent_format.to_sampler(noisy.samples), expected, atol=1e-5)
    assert torch.allclose(model.latent_format.to_sampler(noise.samples), eps, atol=1e-6)


def test_sampler_form_is_x0_plus_sigma_eps_and_the_papers_form_over_sqrt_alpha_bar(bundled):
    model, latent = bundled.model, x0_latent()
    t = 600
    alpha_bar = model.alphas_cumprod[t].item()
    sigma = ((1 - alpha_bar) / alpha_bar) ** 0.5
    as_sampler = node("ForwardNoise", model=model, samples=latent, seed=3, timestep=t, sigma=0.0, form="sampler")
    papers = node("ForwardNoise", model=model, samples=latent, seed=3, timestep=t, sigma=0.0, form="sqrt_alpha")
    x = model.latent_format.to_sampler(as_sampler.values[0].samples)
    x0 = model.latent_format.to_sampler(latent.samples)
    assert torch.allclose(x, x0 + sigma * seeded_noise(3), atol=1e-4)
    assert torch.allclose(x * alpha_bar ** 0.5, model.latent_format.to_sampler(papers.values[0].samples), atol=1e-5)
    assert "σ=" in as_sampler.ui["text"][0]
    # σ far above 1 at t=600: the sampler's x is mostly noise, many times larger than x₀.
    assert sigma > 1.5 and x.std() > 1.5 * x0.std()


def test_a_sigma_input_replaces_the_timestep_with_alpha_bar_one_over_one_plus_sigma_squared(bundled):
    level = noise_level(bundled.model, 10, sigma=2.0)
    assert level["alpha_bar"] == pytest.approx(1 / 5)
    assert level["sqrt_one_minus"] ** 2 + level["sqrt_alpha_bar"] ** 2 == pytest.approx(1.0)
    table = noise_level(bundled.model, 999)
    assert table["sigma"] == pytest.approx(14.6, abs=0.1)  # SD's schedule ends near σ = 14.6


def test_sampler_form_continued_by_ksampler_advanced_equals_ksampler_adding_its_own_noise(bundled):
    model, latent = bundled.model, x0_latent()
    steps, start, seed = 4, 2, 11
    sigma = float(sigmas_for(model, "normal", "euler", steps)[start])
    noisy, _ = node("ForwardNoise", model=model, samples=latent, seed=seed, timestep=0, sigma=sigma,
                    form="sampler").values
    common = dict(model=model, noise_seed=seed, steps=steps, cfg=5.0, sampler_name="euler", scheduler="normal",
                  positive=bundled.positive, negative=bundled.negative, start_at_step=start, end_at_step=10000,
                  return_with_leftover_noise="disable")
    continued = node("KSamplerAdvanced", add_noise="disable", latent_image=noisy, **common)[0].samples
    own_noise = node("KSamplerAdvanced", add_noise="enable", latent_image=latent, **common)[0].samples
    # Equal up to float32 rounding of the LATENT's unscale/rescale round trip (values reach about 10).
    assert torch.allclose(continued, own_noise, rtol=1e-5, atol=1e-4)
    assert (continued - latent.samples).abs().mean() > 1e-2  # the two steps did change the latent


def test_why_step_naive_subtraction_differs_from_x0_hat_as_the_algebra_says(bundled):
    model = bundled.model
    latent = Latent(torch.zeros(1, 4, 8, 8))
    steps, at = 4, 1
    parts = why_step_latents(model, bundled.positive, bundled.negative, latent, seed=5, steps=steps, cfg=5.0,
                             sampler_name="euler", scheduler="normal", at_step=at)
    level = parts["level"]
    a, b = level["sqrt_alpha_bar"], level["sqrt_one_minus"]
    assert level["sigma"] == pytest.approx(float(sigmas_for(model, "normal", "euler", steps)[at]))
    # x_t = √ᾱ·x̂₀ + √(1−ᾱ)·ε̂ exactly: x̂₀ is the one-shot inversion of the forward process…
    assert torch.allclose(parts["x_t"], a * parts["x0_hat"] + b * parts["eps"], atol=1e-4)
    # …so subtracting the whole ε̂ leaves √ᾱ·x̂₀ − (1 − √(1−ᾱ))·ε̂: a scaled, still noisy latent.
    assert torch.allclose(parts["naive"], a * parts["x0_hat"] - (1 - b) * parts["eps"], atol=1e-4)
    gap = (parts["naive"] - parts["x0_hat"]).abs().mean() / parts["x0_hat"].abs().mean()
    assert gap > 0.3
    # The third branch is the rest of the real loop: KSamplerAdvanced from that step on the held x.
    held = Latent(model.latent_format.from_sampler(parts["x"]))
    rest = sample(model, bundled.positive, bundled.negative, held, seed=5, steps=steps, cfg=5.0,
                  sampler_name="euler", scheduler="normal", add_noise=False, start_step=at)
    assert torch.allclose(model.latent_format.to_sampler(rest), parts["final"], atol=1e-4)


def test_why_step_figure_shows_four_columns_of_two_rows(bundled):
    (image,) = node("WhySchedulerStep", model=bundled.model, positive=bundled.positive, negative=bundled.negative,
                    latent_image=Latent(torch.zeros(1, 4, 8, 8)), seed=1, steps=3, cfg=5.0, sampler_name="euler",
                    scheduler="normal", at_step=0, vae=bundled.vae)
    assert image.shape[0] == 1 and image.shape[-1] == 3
    assert image.shape[2] > 4 * 96 and image.shape[1] > 2 * 96  # 4 tiles wide, 2 tall, ≥ 96 px each
    with pytest.raises(NodeInputError) as err:
        node("WhySchedulerStep", model=bundled.model, positive=bundled.positive, negative=bundled.negative,
             latent_image=Latent(torch.zeros(1, 4, 8, 8)), seed=1, steps=3, cfg=5.0, sampler_name="euler",
             scheduler="normal", at_step=3, vae=bundled.vae)
    assert err.value.input_name == "at_step"


def test_forward_noise_strip_has_one_column_per_timestep(bundled):
    latent = x0_latent()
    two = node("ForwardNoiseStrip", model=bundled.model, vae=bundled.vae, samples=latent, seed=1,
               timesteps="0, 999")[0]
    four = node("ForwardNoiseStrip", model=bundled.model, vae=bundled.vae, samples=latent, seed=1,
                timesteps="0,250,500,999")[0]
    assert two.shape[1] == four.shape[1]
    assert four.shape[2] - two.shape[2] >= 2 * 96  # two more columns of ≥ 96 px tiles
    for bad in ("0,1000", "a,b", ""):
        with pytest.raises(NodeInputError) as err:
            node("ForwardNoiseStrip", model=bundled.model, vae=bundled.vae, samples=latent, seed=1, timesteps=bad)
        assert err.value.input_name == "timesteps"


def test_schedule_explorer_covers_every_scheduler_from_sigma_max_to_zero(bundled):
    table = schedule_table(bundled.model, 10, 1.0)
    assert set(table) == set(SCHEDULERS)
    sigma_max = noise_level(bundled.model, 999)["sigma"]
    for name, sigmas in table.items():
        assert sigmas[-1] == 0.0, name
        assert sigmas[0] <= sigma_max * 1.001, name
    assert table["normal"][0] == pytest.approx(sigma_max, rel=1e-4)
    (image,) = node("ScheduleExplorer", model=bundled.model, steps=10, denoise=1.0, scheduler="karras")
    assert image.shape[0] == 1 and image.shape[2] > image.shape[1] > 300  # two plots side by side
    half = node("ScheduleExplorer", model=bundled.model, steps=10, denoise=0.5, scheduler="karras")[0]
    assert not torch.equal(image, half)  # denoise changes the levels plotted
