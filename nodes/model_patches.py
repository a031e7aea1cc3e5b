"""Model patches: each node returns a new MODEL that shares the input's UNet weights and carries one
more patch, applied while sampling (nodes/sampling/patches.py). The input MODEL, and every other
branch that uses it, is left exactly as it was."""

from __future__ import annotations

from nodegraph import Bool, Choice, Float, Int, Link, Node, NodeInputError, Output, register
from nodegraph import types as T
from nodes.samplers import MODEL_IN

CATEGORY = "model_patches"
MODEL_OUT = Output("MODEL", T.MODEL, "the same model with the patch, applied while sampling")
RESIZE_METHODS = ["bicubic", "nearest-exact", "bilinear", "area", "bislerp"]


def _freeu_inputs(b1: float, b2: float) -> list:
    return [MODEL_IN,
            Float("b1", b1, min=0.0, max=10.0, step=0.01, tooltip="backbone boost in the deepest decoder blocks"),
            Float("b2", b2, min=0.0, max=10.0, step=0.01, tooltip="backbone boost in the next decoder blocks"),
            Float("s1", 0.9, min=0.0, max=10.0, step=0.01, tooltip="skip low-frequency scale, deepest blocks"),
            Float("s2", 0.2, min=0.0, max=10.0, step=0.01, tooltip="skip low-frequency scale, next blocks")]


@register
class FreeU(Node):
    """FreeU: boost the decoder's backbone features and damp its skip connections' low frequencies,
    for more detail at no cost."""

    category = CATEGORY
    inputs = _freeu_inputs(1.1, 1.2)
    outputs = [MODEL_OUT]

    def run(self, ctx, model, b1, b2, s1, s2):
        from nodes.sampling.patches import freeu

        return (model.patched(output_block=freeu(model.unet.config.block_out_channels[0], b1, b2, s1, s2)),)


@register
class FreeU_V2(Node):
    """FreeU version 2: the backbone boost follows each position's mean activation."""

    category = CATEGORY
    inputs = _freeu_inputs(1.3, 1.4)
    outputs = [MODEL_OUT]

    def run(self, ctx, model, b1, b2, s1, s2):
        from nodes.sampling.patches import freeu

        channels = model.unet.config.block_out_channels[0]
        return (model.patched(output_block=freeu(channels, b1, b2, s1, s2, v2=True)),)


@register
class RescaleCFG(Node):
    """Rescale the CFG result to the conditional prediction's spread, against washed-out or burnt
    images at high cfg (meant for v-prediction models)."""

    category = CATEGORY
    inputs = [MODEL_IN, Float("multiplier", 0.7, min=0.0, max=1.0, step=0.01,
                              tooltip="how much of the rescaled result to use (0: plain CFG)")]
    outputs = [MODEL_OUT]

    def run(self, ctx, model, multiplier):
        from nodes.sampling.patches import rescale_cfg

        return (model.patched(sampler_cfg_function=rescale_cfg(multiplier)),)


@register
class PerpNeg(Node):
    """Perp-Neg: push away from the negative prompt only where it does not fight the positive one."""

    category = CATEGORY
    inputs = [MODEL_IN, Link("empty_conditioning", T.CONDITIONING, tooltip="an empty prompt's encoding"),
              Float("neg_scale", 1.0, min=0.0, max=100.0, step=0.01, tooltip="how strongly to avoid the negative")]
    outputs = [MODEL_OUT]

    def run(self, ctx, model, empty_conditioning, neg_scale):
        from nodes.sampling.patches import perp_neg

        return (model.patched(sampler_cfg_function=perp_neg(list(empty_conditioning), neg_scale)),)


@register
class SelfAttentionGuidance(Node):
    """Self-attention guidance: blur what the model attends to and steer away from the blurred
    prediction, for sharper structure (one more UNet pass per step)."""

    category = CATEGORY
    inputs = [MODEL_IN, Float("scale", 0.5, min=-2.0, max=5.0, step=0.01, tooltip="guidance strength"),
              Float("blur_sigma", 2.0, min=0.0, max=10.0, step=0.1, tooltip="how strongly to blur (Gaussian sigma)")]
    outputs = [MODEL_OUT]

    def run(self, ctx, model, scale, blur_sigma):
        from nodes.sampling.patches import self_attention_guidance

        attn1, post_cfg = self_attention_guidance(scale, blur_sigma)
        return (model.patched(post_cfg_function=post_cfg, disable_cfg1_optimization=True,
                              attn1_replace=(("middle", 0, 0), attn1)),)


@register
class PatchModelAddDownscale(Node):
    """Kohya's Deep Shrink: sample the early, noisy steps with shrunken UNet features, so images
    larger than the model was trained on keep a coherent layout."""

    category = CATEGORY
    inputs = [MODEL_IN, Int("block_number", 3, min=1, max=32, tooltip="the input block after which to shrink"),
              Float("downscale_factor", 2.0, min=0.1, max=9.0, step=0.001, tooltip="how much to shrink"),
              Float("start_percent", 0.0, min=0.0, max=1.0, step=0.001, tooltip="where in the sampling to start"),
              Float("end_percent", 0.35, min=0.0, max=1.0, step=0.001, tooltip="where in the sampling to stop"),
              Bool("downscale_after_skip", True, tooltip="shrink after the block's skip connection is taken"),
              Choice("downscale_method", RESIZE_METHODS, tooltip="how to shrink"),
              Choice("upscale_method", RESIZE_METHODS, tooltip="how to grow back")]
    outputs = [MODEL_OUT]

    def run(self, ctx, model, block_number, downscale_factor, start_percent, end_percent, downscale_after_skip,
            downscale_method, upscale_method):
        from nodes.sampling.ksampler import model_sampling_for
        from nodes.sampling.patches import deep_shrink

        ms = model_sampling_for(model)
        return (model.patched(**deep_shrink(block_number, downscale_factor, ms.percent_to_sigma(start_percent),
                                            ms.percent_to_sigma(end_percent), downscale_after_skip,
                                            downscale_method, upscale_method)),)


@register
class DeepCache(Node):
    """DeepCache: reuse the UNet's deep features between steps; every `cache_interval` steps the
    whole UNet runs, in between only its shallow blocks (fewer model calls, slightly different
    images; docs/performance.md measures the cost)."""

    category = CATEGORY
    inputs = [MODEL_IN,
              Int("cache_interval", 3, min=1, max=1000, tooltip="run the whole UNet every this many steps (1: always)"),
              Int("cache_depth", 1, min=0, max=12,
                  tooltip="the input block (0 = conv_in) whose skip level keeps running; deeper ones are cached"),
              Float("start_percent", 0.0, min=0.0, max=1.0, step=0.001, tooltip="where in the sampling caching starts"),
              Float("end_percent", 1.0, min=0.0, max=1.0, step=0.001, tooltip="where in the sampling caching stops")]
    outputs = [MODEL_OUT]

    def run(self, ctx, model, cache_interval, cache_depth, start_percent, end_percent):
        from nodes.sampling.deepcache import DeepCacheSettings, count_blocks
        from nodes.sampling.ksampler import model_sampling_for

        n_in, _ = count_blocks(model.unet)
        if cache_depth > n_in - 1:
            raise NodeInputError("cache_depth", f"this UNet has input blocks 0 to {n_in - 1}; "
                                 f"choose a cache_depth of at most {n_in - 1}")
        ms = model_sampling_for(model)
        settings = DeepCacheSettings(cache_interval, cache_depth, ms.percent_to_sigma(start_percent),
                                     ms.percent_to_sigma(end_percent))
        return (model.patched(deep_cache=settings),)


@register
class GuidanceInterval(Node):
    """Classifier-free guidance only inside a σ interval: outside it the step is sampled as at
    cfg 1 and the uncond pass is not run (Kynkäänniemi et al. 2024; fewer model calls)."""

    category = CATEGORY
    inputs = [MODEL_IN,
              Float("sigma_start", 5.42, min=0.0, max=1000.0, step=0.01,
                    tooltip="guidance applies at σ at or below this (higher σ: no uncond pass)"),
              Float("sigma_end", 0.28, min=0.0, max=1000.0, step=0.01,
                    tooltip="guidance applies at σ at or above this (lower σ: no uncond pass)")]
    outputs = [MODEL_OUT]

    def run(self, ctx, model, sigma_start, sigma_end):
        if sigma_end > sigma_start:
            raise NodeInputError("sigma_end", f"sigma_end ({sigma_end}) is above sigma_start ({sigma_start}); "
                                 "the interval runs from sigma_start down to sigma_end")
        return (model.patched(guidance_interval=(float(sigma_start), float(sigma_end))),)


@register
class TorchCompileModel(Node):
    """Run the model's UNet through torch.compile: its first image of each size compiles (minutes on
    a CPU), later ones are faster. The same as `--compile` or the editor's Settings, for one model."""

    category = "_for_testing"
    inputs = [MODEL_IN, Choice("backend", ["inductor", "cudagraphs"],
                               tooltip="inductor: generated kernels (CPU and GPU); cudagraphs: CUDA graphs (GPU only)")]
    outputs = [MODEL_OUT]

    def run(self, ctx, model, backend):
        device = getattr(model.device, "type", "cpu")
        if backend == "cudagraphs" and device != "cuda":
            raise NodeInputError("backend", f"cudagraphs needs a CUDA GPU and this model runs on the {device}; "
                                 "choose inductor")
        return (model.patched(compile=backend),)
