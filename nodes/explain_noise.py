"""Explain nodes for the noise side of diffusion: the forward (noising) process q(x_t | x₀), why a
sampler steps instead of subtracting the predicted noise, and what each scheduler's noise levels are.

Symbols, as on the figures and in docs/how-stable-diffusion-works.md:

    ᾱ_t  the model's training schedule (MODEL.alphas_cumprod[t], t = 0…999)
    x_t = √ᾱ_t·x₀ + √(1−ᾱ_t)·ε           the papers' (DDPM) form, ε ~ N(0, I)
    x_t/√ᾱ_t = x₀ + σ_t·ε,  σ_t = √((1−ᾱ_t)/ᾱ_t)   the form ComfyUI's samplers carry
    ε̂  the UNet's (guided) noise estimate;  x̂₀ = (x_t − √(1−ᾱ_t)·ε̂)/√ᾱ_t = x_t/√ᾱ_t − σ_t·ε̂,
         its one-shot estimate of x₀

Where x₀ lives: in sampler space, the VAE latent × the model's scale factor (LatentFormat.to_sampler),
the space the UNet was trained and ᾱ defined in. LATENT sockets carry unscaled latents as everywhere
else, so these nodes scale on the way in and unscale on the way out (an all-zero latent stays
unscaled, as the sampler leaves it).

The numeric helpers below import torch inside; importing this module stays cheap.
"""

from __future__ import annotations

from nodegraph import Choice, Float, Int, Link, Node, NodeInputError, NodeOutput, Output, String, register
from nodegraph import types as T
from nodes.samplers import cfg_input, check_model_and_latent, seed_input
from nodes.sampling import SAMPLERS, SCHEDULERS

MODEL_IN = Link("model", T.MODEL, tooltip="the model whose noise schedule (ᾱ table) defines the noise levels")
VAE_IN = Link("vae", T.VAE, tooltip="the autoencoder that turns the latents into the pictures on the figure")
FORMS = ["sqrt_alpha", "sampler"]
DEFAULT_TIMESTEPS = "0,100,250,500,750,999"
TILE = 128  # px per tile side on the figures (64 px pictures and 8x8 latents are upscaled smoothly)
IMAGE_OUT = Output("IMAGE", T.IMAGE, "the labelled figure, one image")


# -- numbers ---------------------------------------------------------------------------------------

def noise_level(model, timestep: int, sigma: float = 0.0) -> dict[str, float]:
    """ᾱ, √ᾱ, √(1−ᾱ) and σ at training timestep `timestep`, or at noise level `sigma` when it is
    above 0 (then ᾱ = 1/(1+σ²), which is the same relation read backwards)."""
    import math

    if sigma > 0:
        alpha_bar = 1.0 / (1.0 + sigma * sigma)
    else:
        alpha_bar = float(model.alphas_cumprod[timestep])
        sigma = float(((1.0 - model.alphas_cumprod[timestep]) / model.alphas_cumprod[timestep]) ** 0.5)
    return {"t": timestep, "alpha_bar": alpha_bar, "sqrt_alpha_bar": math.sqrt(alpha_bar),
            "sqrt_one_minus": math.sqrt(1.0 - alpha_bar), "sigma": sigma}


def to_sampler_space(model, raw):
    """Unscaled LATENT samples → the sampler's space (an all-zero latent stays as it is)."""
    import torch

    return model.latent_format.to_sampler(raw) if torch.count_nonzero(raw) > 0 else raw.clone()


def forward_noise(samples, noise, level: dict[str, float], form: str):
    """q(x_t | x₀) in sampler space: √ᾱ·x₀ + √(1−ᾱ)·ε ("sqrt_alpha") or x₀ + σ·ε ("sampler").
    `samples` and `noise` are sampler-space [B, C, h, w]; returns the same shape."""
    if form == "sqrt_alpha":
        return level["sqrt_alpha_bar"] * samples + level["sqrt_one_minus"] * noise  # [B, C, h, w]
    return samples + level["sigma"] * noise  # [B, C, h, w]


def parse_timesteps(text: str, count: int) -> list[int]:
    """"0,100,250" → [0, 100, 250]; raises NodeInputError naming `timesteps` otherwise."""
    parts = [p.strip() for p in text.replace(";", ",").split(",") if p.strip()]
    try:
        values = [int(p) for p in parts]
    except ValueError:
        raise NodeInputError("timesteps", f"{text!r} is not a list of whole numbers; write e.g. "
                             f"{DEFAULT_TIMESTEPS}") from None
    bad = [v for v in values if not 0 <= v < count]
    if not values or bad:
        raise NodeInputError("timesteps", f"give 1 or more timesteps between 0 and {count - 1}"
                             + (f" ({', '.join(map(str, bad))} is outside)" if bad else ""))
    return values


def why_step_latents(model, positive, negative, latent, *, seed: int, steps: int, cfg: float, sampler_name: str,
                     scheduler: str, at_step: int, callback=None) -> dict:
    """One real sampling run, stopped to look at step `at_step`. Returns sampler-space latents
    [B, C, h, w]: "x" (what the sampler holds at that step, x_t/√ᾱ = x₀ + σ·ε), "x_t" (√ᾱ·x, the
    papers' form), "eps" (ε̂ = (x − D(x, σ))/σ, the guided noise estimate), "x0_hat" (D(x, σ), the
    one-shot x̂₀), "naive" (x_t − ε̂: "just subtract the noise"), "final" (where the same run ends:
    the rest of the real loop from that step), and the step's numbers under "level"."""
    from nodes.sampling.ksampler import sample, sigmas_for

    sigmas = sigmas_for(model, scheduler, sampler_name, steps)
    seen: dict = {}

    def spy(i, total, x, denoised):
        if i == at_step:
            seen["x"], seen["x0_hat"] = x.detach().float().cpu().clone(), denoised.detach().float().cpu().clone()
        if callback is not None:
            callback(i, total, x, denoised)

    # 1. The whole run; the callback keeps the sampler's x and its x̂₀ at the chosen step.
    final_raw = sample(model, positive, negative, latent, seed=seed, steps=steps, cfg=cfg, sampler_name=sampler_name,
                       scheduler=scheduler, callback=spy)
    # 2. The step's noise level and the noise its x̂₀ implies (x = x̂₀ + σ·ε̂, whatever the model predicts).
    level = noise_level(model, 0, float(sigmas[at_step]))
    x, x0_hat = seen["x"], seen["x0_hat"]  # [B, C, h, w], sampler space
    eps = (x - x0_hat) / level["sigma"]
    x_t = level["sqrt_alpha_bar"] * x
    return {"x": x, "x_t": x_t, "eps": eps, "x0_hat": x0_hat, "naive": x_t - eps,
            "final": to_sampler_space(model, final_raw), "level": level, "sigmas": sigmas}


def decode_pil(vae, model, x, check=None):
    """First image of a sampler-space latent decoded by the VAE, as a PIL image."""
    from nodes.imaging.tiles import image_to_pils
    from nodes.imaging.vae import decode

    return image_to_pils(decode(vae, model.latent_format.from_sampler(x[:1]), check=check))[0]


def schedule_table(model, steps: int, denoise: float) -> dict[str, list[float]]:
    """σ of every scheduler for this model over `steps` steps (KSampler's rules, Euler), ending in 0."""
    from nodes.sampling.ksampler import model_sampling_for
    from nodes.sampling.schedules import ksampler_sigmas

    ms = model_sampling_for(model)
    return {name: [float(s) for s in ksampler_sigmas(ms, name, "euler", steps, denoise)] for name in SCHEDULERS}


def _fmt(v: float) -> str:
    return f"{v:.3g}" if abs(v) < 1000 else f"{v:.0f}"


# -- nodes -----------------------------------------------------------------------------------------

@register
class ForwardNoise(Node):
    """Noise a latent to training timestep t exactly as the model's schedule defines it:
    x_t = √ᾱ_t·x₀ + √(1−ᾱ_t)·ε, or the sampler's form x₀ + σ_t·ε (= x_t/√ᾱ_t), with the seed's
    noise drawn as KSampler draws it (so KSamplerAdvanced with add_noise disabled continues it)."""

    category = "explain"
    inputs = [MODEL_IN, Link("samples", T.LATENT, tooltip="the clean latent x₀ (e.g. a VAEEncode or a finished sample)"),
              seed_input("seed"),
              Int("timestep", 500, min=0, max=999, tooltip="training timestep t: 0 is almost clean, 999 almost "
                                                           "pure noise"),
              Float("sigma", 0.0, min=0.0, max=10000.0, step=0.001,
                    tooltip="above 0: use this noise level σ instead of the timestep's (e.g. a sampler step's "
                            "σ from ShowNoiseLevels)"),
              Choice("form", FORMS, "sqrt_alpha", tooltip="sqrt_alpha: √ᾱ·x₀ + √(1−ᾱ)·ε (the papers'); sampler: "
                                                          "x₀ + σ·ε, what KSampler carries between steps")]
    outputs = [Output("noisy", T.LATENT, "the noised latent x_t (or x₀ + σ·ε in the sampler form)"),
               Output("noise", T.LATENT, "the noise ε that was added (unscaled like any LATENT)")]

    def run(self, ctx, model, samples, seed, timestep, sigma, form):
        from dataclasses import replace

        from nodes.sampling.noise import prepare_noise

        check_model_and_latent(model, samples)
        if timestep >= len(model.alphas_cumprod):
            raise NodeInputError("timestep", f"this model has {len(model.alphas_cumprod)} timesteps")
        level = noise_level(model, timestep, sigma)
        eps = prepare_noise(samples.samples, seed, samples.batch_index).float()  # [B, C, h, w], KSampler's
        x = forward_noise(to_sampler_space(model, samples.samples.float()), eps, level, form)
        unscale = model.latent_format.from_sampler
        where = f"t={timestep}" if sigma <= 0 else "σ given"
        text = (f"{where}  ᾱ={level['alpha_bar']:.5f}  √ᾱ={level['sqrt_alpha_bar']:.4f}  "
                f"√(1−ᾱ)={level['sqrt_one_minus']:.4f}  σ={level['sigma']:.4f}")
        noisy = replace(samples, samples=unscale(x), noise_mask=None)
        return NodeOutput((noisy, replace(samples, samples=unscale(eps), noise_mask=None)), {"text": [text]})


@register
class ForwardNoiseStrip(Node):
    """A strip of one latent noised to several timesteps, decoded, with √ᾱ, √(1−ᾱ) and σ on each."""

    category = "explain"
    inputs = [MODEL_IN, VAE_IN, Link("samples", T.LATENT, tooltip="the clean latent x₀ to noise"), seed_input("seed"),
              String("timesteps", DEFAULT_TIMESTEPS, tooltip="training timesteps to show, comma-separated (0…999)")]
    outputs = [IMAGE_OUT]

    def run(self, ctx, model, vae, samples, seed, timesteps):
        from nodes.imaging.tiles import grid, latent_tile, pils_to_image
        from nodes.sampling.noise import prepare_noise

        check_model_and_latent(model, samples)
        ts = parse_timesteps(timesteps, len(model.alphas_cumprod))
        x0 = to_sampler_space(model, samples.samples[:1].float())  # [1, C, h, w]
        eps = prepare_noise(samples.samples[:1], seed).float()
        decoded, channels, labels = [], [], []
        for t in ts:
            level = noise_level(model, t)
            x_t = forward_noise(x0, eps, level, "sqrt_alpha")
            decoded.append(decode_pil(vae, model, x_t, ctx.check_cancelled))
            channels.append(latent_tile(x_t, model.latent_format.rgb_factors, TILE))
            labels.append(f"t = {t}\n√ᾱ = {level['sqrt_alpha_bar']:.3f}\n√(1−ᾱ) = {level['sqrt_one_minus']:.3f}"
                          f"\nσ = {_fmt(level['sigma'])}")
        figure = grid([decoded, channels], labels, ["decoded x_t", "latent x_t\n(channels → RGB)"], min_side=TILE,
                      title="Forward process: x_t = √ᾱ_t·x₀ + √(1−ᾱ_t)·ε  (same ε in every column)")
        return (pils_to_image(figure),)


@register
class WhySchedulerStep(Node):
    """Why the sampler steps instead of subtracting the predicted noise: at one step, side by side,
    x_t − ε̂ (subtracting), the one-shot estimate x̂₀ = (x_t − √(1−ᾱ)·ε̂)/√ᾱ (a blurry average), and
    where the real sampling loop goes from that step."""

    category = "explain"
    inputs = [MODEL_IN, Link("positive", T.CONDITIONING, tooltip="what the image should show"),
              Link("negative", T.CONDITIONING, tooltip="what the image should not show"),
              Link("latent_image", T.LATENT, tooltip="the latent to start from (EmptyLatentImage)"),
              seed_input("seed"), Int("steps", 12, min=1, max=10000, tooltip="how many denoising steps"),
              cfg_input(5.0),
              Choice("sampler_name", list(SAMPLERS), "euler", tooltip="the method that turns each prediction into "
                                                                       "the next, less noisy latent"),
              Choice("scheduler", list(SCHEDULERS), "normal", tooltip="how the noise levels are spaced"),
              Int("at_step", 2, min=0, max=10000, tooltip="the step to look at, counted from 0 like KSamplerAdvanced's "
                                                          "start_at_step (0 = before the first step)"),
              VAE_IN]
    outputs = [IMAGE_OUT]

    def run(self, ctx, model, positive, negative, latent_image, seed, steps, cfg, sampler_name, scheduler, at_step,
            vae):
        from nodes.imaging.tiles import grid, latent_tile, pils_to_image
        from nodes.sampling.ksampler import sigmas_for

        check_model_and_latent(model, latent_image)
        if at_step >= len(sigmas_for(model, scheduler, sampler_name, steps)) - 1:
            raise NodeInputError("at_step", f"must be below steps ({steps}); the steps are numbered from 0")
        parts = why_step_latents(model, positive, negative, latent_image, seed=seed, steps=steps, cfg=cfg,
                                 sampler_name=sampler_name, scheduler=scheduler, at_step=at_step,
                                 callback=lambda i, n, x, d: ctx.progress(i + 1, n))
        keys = ["x_t", "naive", "x0_hat", "final"]
        level = parts["level"]
        # Labelled from 1 like the trace figures: at_step k (KSamplerAdvanced's count) is step k+1.
        col_labels = [f"x_t before step {at_step + 1}\n(σ = {_fmt(level['sigma'])}, √ᾱ = {level['sqrt_alpha_bar']:.3f})",
                      "naive:\nx_t − ε̂", "one shot:\nx̂₀ = (x_t − √(1−ᾱ)·ε̂)/√ᾱ",
                      f"the sampler:\nsteps {at_step + 1}…{steps} with {sampler_name}"]
        decoded = [decode_pil(vae, model, parts[k], ctx.check_cancelled) for k in keys]
        channels = [latent_tile(parts[k], model.latent_format.rgb_factors, TILE) for k in keys]
        figure = grid([decoded, channels], col_labels, ["decoded", "latent\n(channels → RGB)"], min_side=TILE,
                      title=f"Why scheduler.step(): {steps} steps, {scheduler} schedule, looked at before step "
                            f"{at_step + 1}")
        return (pils_to_image(figure),)


@register
class ScheduleExplorer(Node):
    """Every scheduler's noise levels σ (log scale) and signal-to-noise ratio for this model and
    step count in one plot, the active one highlighted."""

    category = "explain"
    inputs = [MODEL_IN, Int("steps", 20, min=1, max=1000, tooltip="how many denoising steps"),
              Float("denoise", 1.0, min=0.01, max=1.0, step=0.01,
                    tooltip="1: from pure noise; lower starts partway (img2img) and shows only the last steps"),
              Choice("scheduler", list(SCHEDULERS), "normal", tooltip="the schedule to highlight")]
    outputs = [IMAGE_OUT]

    def run(self, ctx, model, steps, denoise, scheduler):
        from nodes.imaging.tiles import grid, line_plot, pils_to_image

        table = schedule_table(model, steps, denoise)
        # The final σ = 0 has no log: plot the levels each step starts from (SNR = 1/σ² = ᾱ/(1−ᾱ)).
        sigma_series = [(name, list(range(1, len(s))), s[:-1], name == scheduler) for name, s in table.items()]
        snr_series = [(name, xs, [1.0 / (v * v) for v in ys], hl) for name, xs, ys, hl in sigma_series]
        left = line_plot(sigma_series, title="noise level σ_t each step starts from", xlabel="step",
                         ylabel="σ (log)", log_y=True)
        right = line_plot(snr_series, title="signal-to-noise ratio ᾱ/(1−ᾱ) = 1/σ²", xlabel="step",
                          ylabel="SNR (log)", log_y=True)
        figure = grid([[left, right]], title=f"Schedulers for this model: {steps} steps, denoise {denoise:g} "
                                             f"(highlighted: {scheduler}; every schedule ends at σ = 0)")
        return (pils_to_image(figure),)
