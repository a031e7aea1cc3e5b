"""Sampler nodes: ComfyUI's KSampler and KSamplerAdvanced, and a diffusers-scheduler loop."""

from __future__ import annotations

from nodegraph import Choice, Float, Int, Link, Node, NodeInputError, Output, register
from nodegraph import types as T
from nodes.diffusers_names import SCHEDULER_CLASSES, SIGMA_OPTIONS
from nodes.sampling import SAMPLERS, SCHEDULERS

MAX_SEED = 2**64 - 1


def _common_inputs(seed_name: str) -> list:
    return [
        Link("model", T.MODEL), Int(seed_name, 0, min=0, max=MAX_SEED, tooltip="the noise comes from this number"),
        Int("steps", 20, min=1, max=10000), Float("cfg", 8.0, min=0.0, max=100.0, step=0.1,
                                                  tooltip="classifier-free guidance: how strongly to follow the prompt"),
        Choice("sampler_name", list(SAMPLERS), "euler"), Choice("scheduler", list(SCHEDULERS), "normal"),
        Link("positive", T.CONDITIONING), Link("negative", T.CONDITIONING), Link("latent_image", T.LATENT),
    ]


def _check_model_and_latent(model, latent) -> None:
    channels = model.latent_format.channels
    if latent.samples.shape[1] != channels:
        raise NodeInputError("latent_image", f"has {latent.samples.shape[1]} channels but this model works on "
                             f"{channels}; make it with EmptyLatentImage or a VAEEncode of this model's VAE")


def _run_sampler(ctx, model, positive, negative, latent_image, **kwargs):
    from dataclasses import replace

    from nodes.preview import step_callback
    from nodes.sampling.ksampler import sample

    _check_model_and_latent(model, latent_image)
    # The callback reports progress, which raises Interrupted at the next step once cancelled.
    callback = step_callback(ctx, model.latent_format.rgb_factors)
    samples = sample(model, positive, negative, latent_image, callback=callback, **kwargs)
    return (replace(latent_image, samples=samples),)


@register
class KSampler(Node):
    """Denoise a latent with the UNet, guided by positive/negative conditioning, step by step."""

    category = "sampling"
    inputs = [*_common_inputs("seed"),
              Float("denoise", 1.0, min=0.0, max=1.0, step=0.01,
                    tooltip="1: start from pure noise; lower keeps more of the input latent (img2img)")]
    outputs = [Output("LATENT", T.LATENT)]

    def run(self, ctx, model, seed, steps, cfg, sampler_name, scheduler, positive, negative, latent_image, denoise):
        return _run_sampler(ctx, model, positive, negative, latent_image, seed=seed, steps=steps, cfg=cfg,
                            sampler_name=sampler_name, scheduler=scheduler, denoise=denoise)


@register
class KSamplerAdvanced(Node):
    """KSampler with control over noise and the step range, to split sampling across nodes."""

    category = "sampling"
    inputs = [Link("model", T.MODEL), Choice("add_noise", ["enable", "disable"]),
              *_common_inputs("noise_seed")[1:],
              Int("start_at_step", 0, min=0, max=10000), Int("end_at_step", 10000, min=0, max=10000),
              Choice("return_with_leftover_noise", ["disable", "enable"])]
    outputs = [Output("LATENT", T.LATENT)]

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
    inputs = [Link("model", T.MODEL), Int("seed", 0, min=0, max=MAX_SEED), Int("steps", 20, min=1, max=10000),
              Float("cfg", 7.5, min=0.0, max=100.0, step=0.1),
              Choice("scheduler_class", list(SCHEDULER_CLASSES), "EulerDiscreteScheduler"),
              Choice("sigmas", list(SIGMA_OPTIONS), "default",
                     tooltip="karras/exponential/beta spacing, where the scheduler class supports it"),
              Link("positive", T.CONDITIONING), Link("negative", T.CONDITIONING), Link("latent_image", T.LATENT),
              Float("denoise", 1.0, min=0.0, max=1.0, step=0.01)]
    outputs = [Output("LATENT", T.LATENT)]

    def run(self, ctx, model, seed, steps, cfg, scheduler_class, sigmas, positive, negative, latent_image, denoise):
        from dataclasses import replace

        from nodes.diffusers_loop import run_diffusers_loop
        from nodes.preview import step_callback

        _check_model_and_latent(model, latent_image)
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
    inputs = [Link("model", T.MODEL), Int("steps", 20, min=1, max=10000),
              Choice("sampler_name", list(SAMPLERS), "euler"), Choice("scheduler", list(SCHEDULERS), "normal"),
              Float("denoise", 1.0, min=0.0, max=1.0, step=0.01)]
    outputs = [Output("text", T.STRING)]

    def run(self, ctx, model, steps, sampler_name, scheduler, denoise):
        from nodegraph import NodeOutput
        from nodes.sampling.ksampler import sigmas_for

        sigmas = [float(s) for s in sigmas_for(model, scheduler, sampler_name, steps, denoise)]
        lines = [f"step {i + 1:>3}: sigma {a:9.4f} → {b:9.4f}" for i, (a, b) in enumerate(zip(sigmas, sigmas[1:], strict=False))]
        text = "\n".join(lines) or "no steps: denoise is 0"
        return NodeOutput((text,), {"text": lines or [text]})
