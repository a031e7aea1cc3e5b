"""Custom sampling: ComfyUI's KSampler taken apart into NOISE, GUIDER, SAMPLER and SIGMAS, each its
own node, put back together by SamplerCustom / SamplerCustomAdvanced. The same driver, samplers and
schedules as KSampler (nodes/sampling/): one implementation, two front doors."""

from __future__ import annotations

from nodegraph import Bool, Choice, Float, Int, Link, Node, Output, register
from nodegraph import types as T
from nodes.samplers import MODEL_IN, cfg_input, seed_input
from nodes.sampling import SAMPLERS, SCHEDULERS

CATEGORY = "sampling/custom_sampling"
SIGMAS_IN = Link("sigmas", T.SIGMAS, tooltip="the noise levels to step through (from a scheduler node)")
SIGMAS_OUT = Output("SIGMAS", T.SIGMAS, "the noise levels, from the noisiest down to (usually) 0")
SAMPLER_OUT = Output("SAMPLER", T.SAMPLER, "the sampling method, for SamplerCustom(Advanced)")
GUIDER_OUT = Output("GUIDER", T.GUIDER, "the model with its conditionings, for SamplerCustomAdvanced")
NOISE_OUT = Output("NOISE", T.NOISE, "the starting noise, for SamplerCustomAdvanced")
LATENT_IN = Link("latent_image", T.LATENT, tooltip="the latent to start from")
SAMPLED_OUTPUTS = [Output("output", T.LATENT, "the sampled latent"),
                   Output("denoised_output", T.LATENT, "the model's last prediction of the clean latent (x0)")]
STEPS = Int("steps", 20, min=1, max=10000, tooltip="how many denoising steps")
DENOISE = Float("denoise", 1.0, min=0.0, max=1.0, step=0.01, tooltip="1: the whole schedule; lower keeps its "
                "last part only (img2img)")
SIGMA_MAX = Float("sigma_max", 14.614642, min=0.0, max=5000.0, step=0.01, tooltip="the first, highest noise level")
SIGMA_MIN = Float("sigma_min", 0.0291675, min=0.0, max=5000.0, step=0.01, tooltip="the last noise level before 0")
ETA = Float("eta", 1.0, min=0.0, max=100.0, step=0.01, tooltip="how much fresh noise each step adds (0: none)")
S_NOISE = Float("s_noise", 1.0, min=0.0, max=100.0, step=0.01, tooltip="scales the fresh noise each step adds")
NOISE_DEVICE = Choice("noise_device", ["gpu", "cpu"], tooltip="where the Brownian noise is drawn (cpu: the same "
                      "on every machine)")


def _sample(ctx, guider, sampler, sigmas, latent_image, *, seed, add_noise):
    from dataclasses import replace

    from nodes.imaging.preview import step_callback
    from nodes.samplers import check_model_and_latent, model_for_run
    from nodes.sampling.custom import sample_custom

    check_model_and_latent(guider.model, latent_image)
    guider = replace(guider, model=model_for_run(ctx, guider.model))
    callback = step_callback(ctx, guider.model.latent_format.rgb_factors)
    samples, x0 = sample_custom(guider, sampler, sigmas, latent_image, seed=seed, add_noise=add_noise,
                                callback=callback)
    out = replace(latent_image, samples=samples)
    return (out, out if x0 is None else replace(latent_image, samples=x0))


@register
class SamplerCustom(Node):
    """Sample with a SAMPLER node's method and a SIGMAS node's noise levels, with CFG."""

    category = CATEGORY
    inputs = [MODEL_IN, Bool("add_noise", True, tooltip="off: continue a latent that still holds noise"),
              seed_input("noise_seed"), cfg_input(8.0),
              Link("positive", T.CONDITIONING, tooltip="what the image should show"),
              Link("negative", T.CONDITIONING, tooltip="what the image should not show"),
              Link("sampler", T.SAMPLER, tooltip="the sampling method (KSamplerSelect or a Sampler… node)"),
              SIGMAS_IN, LATENT_IN]
    outputs = SAMPLED_OUTPUTS

    def run(self, ctx, model, add_noise, noise_seed, cfg, positive, negative, sampler, sigmas, latent_image):
        from nodes.core.values import Guider

        guider = Guider(model, {"positive": list(positive), "negative": list(negative)}, cfg=cfg)
        return _sample(ctx, guider, sampler, sigmas, latent_image, seed=noise_seed, add_noise=add_noise)


@register
class SamplerCustomAdvanced(Node):
    """Sample with separate NOISE, GUIDER, SAMPLER and SIGMAS nodes: every part of a KSampler swappable."""

    category = CATEGORY
    inputs = [Link("noise", T.NOISE, tooltip="the starting noise (RandomNoise, or DisableNoise)"),
              Link("guider", T.GUIDER, tooltip="the model with its conditionings (CFGGuider, BasicGuider…)"),
              Link("sampler", T.SAMPLER, tooltip="the sampling method (KSamplerSelect or a Sampler… node)"),
              SIGMAS_IN, LATENT_IN]
    outputs = SAMPLED_OUTPUTS

    def run(self, ctx, noise, guider, sampler, sigmas, latent_image):
        # DisableNoise: zero starting noise, and the samplers' step noise seeded with 0 (ComfyUI's).
        seed = 0 if noise.seed is None else noise.seed
        return _sample(ctx, guider, sampler, sigmas, latent_image, seed=seed, add_noise=noise.seed is not None)


# -- noise -------------------------------------------------------------------------------------------


@register
class RandomNoise(Node):
    """Gaussian starting noise from a seed (the same as KSampler's for the same seed)."""

    category = f"{CATEGORY}/noise"
    inputs = [seed_input("noise_seed")]
    outputs = [NOISE_OUT]

    def run(self, ctx, noise_seed):
        from nodes.core.values import NoiseSource

        return (NoiseSource(noise_seed),)


@register
class DisableNoise(Node):
    """No starting noise: sample the latent as it is (it should already hold its noise)."""

    category = f"{CATEGORY}/noise"
    inputs = []
    outputs = [NOISE_OUT]

    def run(self, ctx):
        from nodes.core.values import NoiseSource

        return (NoiseSource(None),)


# -- guiders -----------------------------------------------------------------------------------------


@register
class BasicGuider(Node):
    """The model's prediction for one conditioning, no CFG (for models trained without it)."""

    category = f"{CATEGORY}/guiders"
    inputs = [MODEL_IN, Link("conditioning", T.CONDITIONING, tooltip="what the image should show")]
    outputs = [GUIDER_OUT]

    def run(self, ctx, model, conditioning):
        from nodes.core.values import Guider

        return (Guider(model, {"positive": list(conditioning)}),)


@register
class CFGGuider(Node):
    """Classifier-free guidance: uncond + (cond − uncond)·cfg, as KSampler does."""

    category = f"{CATEGORY}/guiders"
    inputs = [MODEL_IN, Link("positive", T.CONDITIONING, tooltip="what the image should show"),
              Link("negative", T.CONDITIONING, tooltip="what the image should not show"), cfg_input(8.0)]
    outputs = [GUIDER_OUT]

    def run(self, ctx, model, positive, negative, cfg):
        from nodes.core.values import Guider

        return (Guider(model, {"positive": list(positive), "negative": list(negative)}, cfg=cfg),)


@register
class DualCFGGuider(Node):
    """Guidance by two prompts and a negative: cond2 against the negative, cond1 against cond2."""

    category = f"{CATEGORY}/guiders"
    inputs = [MODEL_IN, Link("cond1", T.CONDITIONING, tooltip="the main prompt"),
              Link("cond2", T.CONDITIONING, tooltip="the second prompt (e.g. an edit model's image conditioning)"),
              Link("negative", T.CONDITIONING, tooltip="what the image should not show"),
              Float("cfg_conds", 8.0, min=0.0, max=100.0, step=0.1, tooltip="guidance of cond1 against cond2"),
              Float("cfg_cond2_negative", 8.0, min=0.0, max=100.0, step=0.1,
                    tooltip="guidance of cond2 against the negative"),
              Choice("style", ["regular", "nested"], tooltip="nested: guide cond1-vs-cond2 first, then against "
                                                              "the negative")]
    outputs = [GUIDER_OUT]

    def run(self, ctx, model, cond1, cond2, negative, cfg_conds, cfg_cond2_negative, style):
        from nodes.core.values import Guider

        conds = {"positive": list(cond1), "middle": list(cond2), "negative": list(negative)}
        return (Guider(model, conds, kind="dual", cfg=cfg_conds, cfg2=cfg_cond2_negative, nested=style == "nested"),)


# -- samplers ------------------------------------------------------------------------------------------


def _choice(name, **options):
    from nodes.core.values import SamplerChoice

    return (SamplerChoice(name, options),)


@register
class KSamplerSelect(Node):
    """Pick one of KSampler's sampling methods by name, with its default options."""

    category = f"{CATEGORY}/samplers"
    inputs = [Choice("sampler_name", list(SAMPLERS), "euler", tooltip="the sampling method")]
    outputs = [SAMPLER_OUT]

    def run(self, ctx, sampler_name):
        return _choice(sampler_name)


@register
class SamplerEulerAncestral(Node):
    """Euler ancestral with its noise amount (eta) and scale (s_noise) exposed."""

    category = f"{CATEGORY}/samplers"
    inputs = [ETA, S_NOISE]
    outputs = [SAMPLER_OUT]

    def run(self, ctx, eta, s_noise):
        return _choice("euler_ancestral", eta=eta, s_noise=s_noise)


@register
class SamplerEulerAncestralCFGPP(Node):
    """Euler ancestral with CFG++ (the unconditional prediction steers the renoising)."""

    category = f"{CATEGORY}/samplers"
    inputs = [Float("eta", 1.0, min=0.0, max=1.0, step=0.01, tooltip="how much fresh noise each step adds (0: none)"),
              Float("s_noise", 1.0, min=0.0, max=10.0, step=0.01, tooltip="scales the fresh noise each step adds")]
    outputs = [SAMPLER_OUT]

    def run(self, ctx, eta, s_noise):
        return _choice("euler_ancestral_cfg_pp", eta=eta, s_noise=s_noise)


@register
class SamplerLMS(Node):
    """Linear multistep with a chosen order."""

    category = f"{CATEGORY}/samplers"
    inputs = [Int("order", 4, min=1, max=100, tooltip="how many past steps each step combines")]
    outputs = [SAMPLER_OUT]

    def run(self, ctx, order):
        return _choice("lms", order=order)


@register
class SamplerDPMPP_2S_Ancestral(Node):
    """DPM++ 2S ancestral with eta and s_noise exposed."""

    category = f"{CATEGORY}/samplers"
    inputs = [ETA, S_NOISE]
    outputs = [SAMPLER_OUT]

    def run(self, ctx, eta, s_noise):
        return _choice("dpmpp_2s_ancestral", eta=eta, s_noise=s_noise)


@register
class SamplerDPMPP_SDE(Node):
    """DPM++ SDE with eta, s_noise and the midpoint ratio r exposed."""

    category = f"{CATEGORY}/samplers"
    inputs = [ETA, S_NOISE, Float("r", 0.5, min=0.0, max=100.0, step=0.01,
                                  tooltip="where between the two noise levels the midpoint evaluation sits"),
              NOISE_DEVICE]
    outputs = [SAMPLER_OUT]

    def run(self, ctx, eta, s_noise, r, noise_device):
        return _choice("dpmpp_sde" if noise_device == "cpu" else "dpmpp_sde_gpu", eta=eta, s_noise=s_noise, r=r)


@register
class SamplerDPMPP_2M_SDE(Node):
    """DPM++ 2M SDE with its solver type, eta and s_noise exposed."""

    category = f"{CATEGORY}/samplers"
    inputs = [Choice("solver_type", ["midpoint", "heun"], tooltip="how the second-order correction is formed"),
              ETA, S_NOISE, NOISE_DEVICE]
    outputs = [SAMPLER_OUT]

    def run(self, ctx, solver_type, eta, s_noise, noise_device):
        name = "dpmpp_2m_sde" if noise_device == "cpu" else "dpmpp_2m_sde_gpu"
        return _choice(name, eta=eta, s_noise=s_noise, solver_type=solver_type)


@register
class SamplerDPMPP_3M_SDE(Node):
    """DPM++ 3M SDE with eta and s_noise exposed."""

    category = f"{CATEGORY}/samplers"
    inputs = [ETA, S_NOISE, NOISE_DEVICE]
    outputs = [SAMPLER_OUT]

    def run(self, ctx, eta, s_noise, noise_device):
        return _choice("dpmpp_3m_sde" if noise_device == "cpu" else "dpmpp_3m_sde_gpu", eta=eta, s_noise=s_noise)


@register
class SamplerDPMAdaptative(Node):
    """DPM-Solver adaptive: picks its own step sizes to keep the error below a tolerance."""

    category = f"{CATEGORY}/samplers"
    inputs = [Int("order", 3, min=2, max=3, tooltip="solver order (2 or 3)"),
              Float("rtol", 0.05, min=0.0, max=100.0, step=0.01, tooltip="relative error tolerance"),
              Float("atol", 0.0078, min=0.0, max=100.0, step=0.01, tooltip="absolute error tolerance"),
              Float("h_init", 0.05, min=0.0, max=100.0, step=0.01, tooltip="the first step size (log-SNR time)"),
              Float("pcoeff", 0.0, min=0.0, max=100.0, step=0.01, tooltip="step-size controller: proportional"),
              Float("icoeff", 1.0, min=0.0, max=100.0, step=0.01, tooltip="step-size controller: integral"),
              Float("dcoeff", 0.0, min=0.0, max=100.0, step=0.01, tooltip="step-size controller: derivative"),
              Float("accept_safety", 0.81, min=0.0, max=100.0, step=0.01, tooltip="how sure a step must be to keep it"),
              Float("eta", 0.0, min=0.0, max=100.0, step=0.01, tooltip="fresh noise per accepted step (0: none)"),
              S_NOISE]
    outputs = [SAMPLER_OUT]

    def run(self, ctx, order, rtol, atol, h_init, pcoeff, icoeff, dcoeff, accept_safety, eta, s_noise):
        return _choice("dpm_adaptive", order=order, rtol=rtol, atol=atol, h_init=h_init, pcoeff=pcoeff, icoeff=icoeff,
                       dcoeff=dcoeff, accept_safety=accept_safety, eta=eta, s_noise=s_noise)


@register
class SamplerER_SDE(Node):
    """ER-SDE with its solver type, stages, eta and s_noise exposed."""

    category = f"{CATEGORY}/samplers"
    inputs = [Choice("solver_type", ["ER-SDE", "Reverse-time SDE", "ODE"], tooltip="the noise scale function"),
              Int("max_stage", 3, min=1, max=3, tooltip="highest order of the solver's stages"),
              Float("eta", 1.0, min=0.0, max=10.0, step=0.01, tooltip="stochastic strength; 0 is the ODE"),
              S_NOISE]
    outputs = [SAMPLER_OUT]

    def run(self, ctx, solver_type, max_stage, eta, s_noise):
        from nodes.sampling.custom import er_sde_sampler

        return (er_sde_sampler(solver_type, max_stage, eta, s_noise),)


# -- schedulers and sigmas -----------------------------------------------------------------------------


@register
class BasicScheduler(Node):
    """The noise levels of one of KSampler's schedules, for this model."""

    category = f"{CATEGORY}/schedulers"
    inputs = [MODEL_IN, Choice("scheduler", list(SCHEDULERS), "normal", tooltip="how the noise levels are spaced"),
              STEPS, DENOISE]
    outputs = [SIGMAS_OUT]

    def run(self, ctx, model, scheduler, steps, denoise):
        from nodes.sampling.ksampler import model_sampling_for
        from nodes.sampling.schedules import basic_sigmas

        return (basic_sigmas(model_sampling_for(model), scheduler, steps, denoise),)


@register
class KarrasScheduler(Node):
    """Karras et al.'s schedule between any two noise levels: denser near the low end for rho > 1."""

    category = f"{CATEGORY}/schedulers"
    inputs = [STEPS, SIGMA_MAX, SIGMA_MIN,
              Float("rho", 7.0, min=0.0, max=100.0, step=0.01, tooltip="higher: more steps at low noise")]
    outputs = [SIGMAS_OUT]

    def run(self, ctx, steps, sigma_max, sigma_min, rho):
        from nodes.sampling.schedules import karras_sigmas

        return (karras_sigmas(steps, sigma_min, sigma_max, rho),)


@register
class ExponentialScheduler(Node):
    """Noise levels evenly spaced in log sigma between any two levels."""

    category = f"{CATEGORY}/schedulers"
    inputs = [STEPS, SIGMA_MAX, SIGMA_MIN]
    outputs = [SIGMAS_OUT]

    def run(self, ctx, steps, sigma_max, sigma_min):
        from nodes.sampling.schedules import exponential_sigmas

        return (exponential_sigmas(steps, sigma_min, sigma_max),)


@register
class PolyexponentialScheduler(Node):
    """Log sigma along a power curve: rho 1 is exponential, higher puts more steps at low noise."""

    category = f"{CATEGORY}/schedulers"
    inputs = [STEPS, SIGMA_MAX, SIGMA_MIN,
              Float("rho", 1.0, min=0.0, max=100.0, step=0.01, tooltip="the curve's power (1: exponential)")]
    outputs = [SIGMAS_OUT]

    def run(self, ctx, steps, sigma_max, sigma_min, rho):
        from nodes.sampling.schedules import polyexponential_sigmas

        return (polyexponential_sigmas(steps, sigma_min, sigma_max, rho),)


@register
class SDTurboScheduler(Node):
    """SD-Turbo's few-step schedule (timesteps 999, 899, …)."""

    category = f"{CATEGORY}/schedulers"
    inputs = [MODEL_IN, Int("steps", 1, min=1, max=10, tooltip="how many steps (1 to 10)"),
              Float("denoise", 1.0, min=0.0, max=1.0, step=0.01, tooltip="lower starts later in the schedule")]
    outputs = [SIGMAS_OUT]

    def run(self, ctx, model, steps, denoise):
        from nodes.sampling.ksampler import model_sampling_for
        from nodes.sampling.schedules import sd_turbo_sigmas

        return (sd_turbo_sigmas(model_sampling_for(model), steps, denoise),)


@register
class AlignYourStepsScheduler(Node):
    """NVIDIA's Align Your Steps noise levels, optimised for few steps."""

    category = f"{CATEGORY}/schedulers"
    inputs = [Choice("model_type", ["SD1", "SDXL", "SVD"], tooltip="which model family's levels"),
              Int("steps", 10, min=1, max=10000, tooltip="how many denoising steps"), DENOISE]
    outputs = [SIGMAS_OUT]

    def run(self, ctx, model_type, steps, denoise):
        from nodes.sampling.schedules import align_your_steps_sigmas

        return (align_your_steps_sigmas(model_type, steps, denoise),)


@register
class SplitSigmas(Node):
    """Split the noise levels at a step, for two samplers in a row; both halves share that level."""

    category = f"{CATEGORY}/sigmas"
    inputs = [SIGMAS_IN, Int("step", 0, min=0, max=10000, tooltip="the step where the second half begins")]
    outputs = [Output("high_sigmas", T.SIGMAS, "the noise levels up to the split (the noisy start)"),
               Output("low_sigmas", T.SIGMAS, "the noise levels from the split on (the detailed end)")]

    def run(self, ctx, sigmas, step):
        return (sigmas[:step + 1], sigmas[step:])


@register
class SplitSigmasDenoise(Node):
    """Split the noise levels so the second half is the last `denoise` fraction of the steps."""

    category = f"{CATEGORY}/sigmas"
    inputs = [SIGMAS_IN, Float("denoise", 1.0, min=0.0, max=1.0, step=0.01,
                               tooltip="the fraction of the steps the second half keeps")]
    outputs = [Output("high_sigmas", T.SIGMAS, "the noise levels before the last part"),
               Output("low_sigmas", T.SIGMAS, "the last `denoise` fraction of the noise levels")]

    def run(self, ctx, sigmas, denoise):
        total = round(max(sigmas.shape[-1] - 1, 0) * denoise)
        return (sigmas[:-total], sigmas[-(total + 1):])


@register
class FlipSigmas(Node):
    """Reverse the noise levels (0 becomes 0.0001): sample from an image towards noise."""

    category = f"{CATEGORY}/sigmas"
    inputs = [SIGMAS_IN]
    outputs = [SIGMAS_OUT]

    def run(self, ctx, sigmas):
        if len(sigmas) == 0:
            return (sigmas,)
        flipped = sigmas.flip(0)
        if flipped[0] == 0:
            flipped[0] = 0.0001
        return (flipped,)


@register
class SetFirstSigma(Node):
    """Replace the first noise level (e.g. a higher start for a model trained to begin there)."""

    category = f"{CATEGORY}/sigmas"
    inputs = [SIGMAS_IN, Float("sigma", 136.0, min=0.0, max=20000.0, step=0.001, tooltip="the new first noise level")]
    outputs = [SIGMAS_OUT]

    def run(self, ctx, sigmas, sigma):
        sigmas = sigmas.clone()
        sigmas[0] = sigma
        return (sigmas,)
