"""Sampling nodes: ComfyUI's KSampler and KSamplerAdvanced, a diffusers-scheduler loop, and the
noise levels a schedule steps through."""

from __future__ import annotations

from nodegraph import Choice, Float, Input, Int, Link, Node, NodeInputError, NodeOutput, Output, register
from nodegraph import types as T
from nodes.sampling import SAMPLERS, SCHEDULERS
from nodes.sampling.diffusers_names import SCHEDULER_CLASSES, SIGMA_OPTIONS

MAX_SEED = 2**64 - 1

MODEL_IN = Link("model", T.MODEL, tooltip="the denoising UNet (from a checkpoint loader)")
STEPS = Int("steps", 20, min=1, max=10000, tooltip="how many denoising steps")
SAMPLER = Choice("sampler_name", list(SAMPLERS), "euler",
                 tooltip="the method that turns each prediction into the next, less noisy latent")
SCHEDULER = Choice("scheduler", list(SCHEDULERS), "normal", tooltip="how the noise levels are spaced")
DENOISE = Float("denoise", 1.0, min=0.0, max=1.0, step=0.01,
                tooltip="1: start from pure noise; lower keeps more of the input latent (img2img)")
LATENT_OUT = Output("LATENT", T.LATENT, "the denoised latent")
# Conditioning extras that place a prompt in the image or in time (read by nodes/sampling/conds.py).
PLACEMENT_KEYS = frozenset({"area", "mask", "start_percent", "end_percent"})


def seed_input(name: str) -> Input:
    return Int(name, 0, min=0, max=MAX_SEED, control_after_generate=True,
               tooltip="the noise comes from this number: the same seed gives the same image")


def cfg_input(default: float) -> Input:
    return Float("cfg", default, min=0.0, max=100.0, step=0.1,
                 tooltip="classifier-free guidance: how strongly to follow the prompt")


CONDITIONING_INPUTS = [
    Link("positive", T.CONDITIONING, tooltip="what the image should show"),
    Link("negative", T.CONDITIONING, tooltip="what the image should not show"),
    Link("latent_image", T.LATENT, tooltip="the latent to start from (EmptyLatentImage, or a VAEEncode for img2img)"),
]


def check_model_and_latent(model, latent) -> None:
    channels = model.latent_format.channels
    if latent.samples.shape[1] != channels:
        raise NodeInputError("latent_image", f"has {latent.samples.shape[1]} channels but this model works on "
                             f"{channels}; make it with EmptyLatentImage or a VAEEncode of this model's VAE")


def model_for_run(ctx, model):
    """The MODEL as this run samples it: compiled when the run's settings ask for it (`--compile`, the
    editor's Settings) and no TorchCompileModel node chose already."""
    if ctx.compile and not model.patches.compile:
        return model.patched(compile=ctx.compile)
    return model


def _run_sampler(ctx, model, positive, negative, latent_image, **kwargs):
    from dataclasses import replace

    from nodes.imaging.preview import step_callback
    from nodes.sampling.ksampler import sample

    check_model_and_latent(model, latent_image)
    model = model_for_run(ctx, model)
    # The callback reports progress, which raises Interrupted at the next step once cancelled.
    callback = step_callback(ctx, model.latent_format.rgb_factors)
    samples = sample(model, positive, negative, latent_image, callback=callback, **kwargs)
    return (replace(latent_image, samples=samples),)


@register
class KSampler(Node):
    """Denoise a latent with the UNet, guided by positive/negative conditioning, step by step."""

    category = "sampling"
    inputs = [MODEL_IN, seed_input("seed"), STEPS, cfg_input(8.0), SAMPLER, SCHEDULER,
              *CONDITIONING_INPUTS, DENOISE]
    outputs = [LATENT_OUT]

    def run(self, ctx, model, seed, steps, cfg, sampler_name, scheduler, positive, negative, latent_image, denoise):
        return _run_sampler(ctx, model, positive, negative, latent_image, seed=seed, steps=steps, cfg=cfg,
                            sampler_name=sampler_name, scheduler=scheduler, denoise=denoise)


@register
class KSamplerAdvanced(Node):
    """KSampler with control over noise and the step range, to split sampling across nodes."""

    category = "sampling"
    inputs = [MODEL_IN, Choice("add_noise", ["enable", "disable"], tooltip="disable to continue a latent that "
                                                                          "still holds noise from an earlier pass"),
              seed_input("noise_seed"), STEPS, cfg_input(8.0), SAMPLER, SCHEDULER, *CONDITIONING_INPUTS,
              Int("start_at_step", 0, min=0, max=10000, tooltip="the first of the steps to run"),
              Int("end_at_step", 10000, min=0, max=10000, tooltip="stop before this step"),
              Choice("return_with_leftover_noise", ["disable", "enable"],
                     tooltip="enable to hand a still-noisy latent to another sampler")]
    outputs = [LATENT_OUT]

    def run(self, ctx, model, add_noise, noise_seed, steps, cfg, sampler_name, scheduler, positive, negative,
            latent_image, start_at_step, end_at_step, return_with_leftover_noise):
        return _run_sampler(ctx, model, positive, negative, latent_image, seed=noise_seed, steps=steps, cfg=cfg,
                            sampler_name=sampler_name, scheduler=scheduler, denoise=1.0,
                            add_noise=add_noise == "enable", start_step=start_at_step, end_step=end_at_step,
                            return_with_leftover_noise=return_with_leftover_noise == "enable")


@register
class DiffusersSampler(Node):
    """Sample with a diffusers scheduler class and the loop diffusers users know
    (unet → CFG → scheduler.step), to compare with ComfyUI-style sampling."""

    category = "sampling"
    inputs = [MODEL_IN, seed_input("seed"), STEPS, cfg_input(7.5),
              Choice("scheduler_class", list(SCHEDULER_CLASSES), "EulerDiscreteScheduler",
                     tooltip="the diffusers scheduler whose step() turns each prediction into the next latent"),
              Choice("sigmas", list(SIGMA_OPTIONS), "default",
                     tooltip="karras/exponential/beta spacing, where the scheduler class supports it"),
              *CONDITIONING_INPUTS, DENOISE]
    outputs = [LATENT_OUT]

    def run(self, ctx, model, seed, steps, cfg, scheduler_class, sigmas, positive, negative, latent_image, denoise):
        from dataclasses import replace

        from nodes.imaging.preview import step_callback
        from nodes.sampling.diffusers_loop import run_diffusers_loop

        check_model_and_latent(model, latent_image)
        for name, conditioning in (("positive", positive), ("negative", negative)):
            placed = sorted({k for e in conditioning for k in e.extras if k in PLACEMENT_KEYS})
            if placed or len(conditioning) > 1:
                raise NodeInputError(name, "diffusers' loop takes one prompt per side; areas, masks, time ranges and "
                                     "combined prompts need KSampler" + (f" (this one has {', '.join(placed)})"
                                                                          if placed else ""))
        samples = run_diffusers_loop(model, positive, negative, latent_image, seed=seed, steps=steps, cfg=cfg,
                                     scheduler_class=scheduler_class, sigmas=sigmas, denoise=denoise,
                                     callback=step_callback(ctx, model.latent_format.rgb_factors))
        return (replace(latent_image, samples=samples, noise_mask=None),)


@register
class ShowNoiseLevels(Node):
    """Show the noise levels (sigmas) a KSampler with these settings steps through, from the first,
    noisiest one down to 0 — what "scheduler" and "denoise" change."""

    category = "sampling"
    output_node = True
    inputs = [MODEL_IN, STEPS, SAMPLER, SCHEDULER, DENOISE]
    outputs = [Output("text", T.STRING, "one line per step: the noise level it starts from and ends at")]

    def run(self, ctx, model, steps, sampler_name, scheduler, denoise):
        from nodes.sampling.ksampler import sigmas_for

        sigmas = [float(s) for s in sigmas_for(model, scheduler, sampler_name, steps, denoise)]
        lines = [f"step {i + 1:>3}: sigma {a:9.4f} → {b:9.4f}" for i, (a, b) in enumerate(zip(sigmas, sigmas[1:], strict=False))]
        text = "\n".join(lines) or "no steps: denoise is 0"
        return NodeOutput((text,), {"text": lines or [text]})
