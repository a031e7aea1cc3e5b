"""Explain nodes for the sampling loop itself: KSamplerTrace records a run step by step (the noisy
latent x_t, the model's noise estimate ε̂ for the prompt and without it, the guided x̂₀, the update
each step applied, the fresh noise of ancestral samplers, and where each prompt word attended), and
three viewers turn the recording into IMAGEs that save and compose like any other picture.

    x̂₀ = x_t − σ·ε̂       (ε-prediction; the trace keeps v̂ for v-prediction models)
    ε̂_guided = ε̂_uncond + cfg·(ε̂_cond − ε̂_uncond)

The recording machinery is nodes/sampling/trace.py; the numbers the sampler produces do not change
when it records (the LATENT output equals KSampler's, bit for bit).
"""

from __future__ import annotations

from nodegraph import Bool, Choice, Int, Link, Node, NodeInputError, NodeOutput, Output, String, register
from nodegraph import types as T
from nodes.samplers import (
    CONDITIONING_INPUTS,
    DENOISE,
    LATENT_OUT,
    MODEL_IN,
    SAMPLER,
    SCHEDULER,
    STEPS,
    cfg_input,
    check_model_and_latent,
    seed_input,
)

TRACE_IN = Link("trace", T.TRACE, tooltip="a recorded sampling run (from KSamplerTrace)")
VAE_OPT = Link("vae", T.VAE, optional=True,
               tooltip="decode x_t and x̂₀ with this VAE instead of the fast latent preview (slower, truer colours)")
IMAGE_OUT = Output("IMAGE", T.IMAGE, "the labelled figure, one image")
# Row sets of the filmstrip; names are what a workflow stores.
FILM_ROWS = {
    "x_t, x0, eps, update": ["x_t", "denoised", "eps", "update"],
    "x_t, x0": ["x_t", "denoised"],
    "x0": ["denoised"],
    "x_t": ["x_t"],
    "eps": ["eps"],
    "update, noise": ["update", "noise"],
}


def _temp_folder(ctx, kind: str):
    """A fresh folder for this node's files under the temp folder (the previous run's is removed)."""
    import re
    import shutil
    import uuid

    stem = re.sub(r"[^A-Za-z0-9_-]", "_", str(ctx.node_id or "node"))
    root = ctx.paths.temp / kind
    for old in root.glob(f"{stem}_*"):
        shutil.rmtree(old, ignore_errors=True)
    return root / f"{stem}_{uuid.uuid4().hex[:8]}"


@register
class KSamplerTrace(Node):
    """KSampler that also records every step (x_t, ε̂ with and without the prompt, x̂₀, the update,
    and optionally where each prompt word attends), for the trace panel and the explain viewers.
    The LATENT is KSampler's, bit for bit; of a batch, the first image is recorded."""

    category = "explain"
    output_node = True  # the editor's trace panel shows what it recorded, whether or not TRACE is linked
    inputs = [MODEL_IN, seed_input("seed"), STEPS, cfg_input(8.0), SAMPLER, SCHEDULER, *CONDITIONING_INPUTS, DENOISE,
              Bool("record_attention", True, tooltip="also record the cross-attention maps (which pixels "
                                                      "listened to which prompt word); costs a little time"),
              Link("tokens", T.TOKENS, optional=True,
                   tooltip="the positive prompt's tokens (CLIPTokenize), to name the attention maps by word")]
    outputs = [LATENT_OUT, Output("TRACE", T.TRACE, "the recorded run, for TraceFilmstrip, CrossAttentionMaps, "
                                                    "CFGInspector and the trace panel")]

    def run(self, ctx, model, seed, steps, cfg, sampler_name, scheduler, positive, negative, latent_image, denoise,
            record_attention, tokens=None):
        from dataclasses import replace

        from nodes.imaging.preview import step_callback
        from nodes.imaging.trace_figures import write_view
        from nodes.sampling.trace import record_sampling

        check_model_and_latent(model, latent_image)
        words = [w for chunk in tokens.words for w in chunk] if tokens is not None else None
        if words is not None and positive and len(words) != positive[0].cond.shape[1]:
            raise NodeInputError("tokens", f"has {len(words)} positions but the positive prompt has "
                                 f"{positive[0].cond.shape[1]}: connect the TOKENS it was encoded from")
        samples, trace = record_sampling(
            model, positive, negative, latent_image, seed=seed, steps=steps, cfg=cfg, sampler_name=sampler_name,
            scheduler=scheduler, denoise=denoise, record_attention=record_attention, words=words,
            callback=step_callback(ctx, model.latent_format.rgb_factors))
        view = write_view(trace, _temp_folder(ctx, "trace"), scheduler)
        return NodeOutput((replace(latent_image, samples=samples), trace), {"trace": [view]})


@register
class TraceFilmstrip(Node):
    """A recorded run as a filmstrip: one column per step (labelled with its noise level σ), rows
    for the noisy latent x_t, the prediction x̂₀, the noise estimate ε̂ and the update applied."""

    category = "explain"
    inputs = [TRACE_IN, Choice("rows", list(FILM_ROWS), tooltip="which quantities to show, one row each"),
              Choice("decode", ["latent preview", "vae"],
                     tooltip="latent preview: a fast linear map to colours; vae: decode x_t and x̂₀ properly"),
              Int("every", 1, min=1, max=1000, tooltip="show every n-th step (the last one always)"), VAE_OPT]
    outputs = [IMAGE_OUT]

    def run(self, ctx, trace, rows, decode, every, vae=None):
        from nodes.imaging.tiles import pils_to_image
        from nodes.imaging.trace_figures import filmstrip

        if decode == "vae" and vae is None:
            raise NodeInputError("vae", "decode is 'vae' but no VAE is connected: connect one, or choose "
                                 "'latent preview'")
        _check_steps(trace)
        figure = filmstrip(trace, FILM_ROWS[rows], every, vae if decode == "vae" else None, ctx.check_cancelled)
        return (pils_to_image(figure),)


@register
class CrossAttentionMaps(Node):
    """Where each prompt word steered the picture: one heatmap per token of the cross-attention
    (softmax(QKᵀ), averaged over heads and layers), for one step or summed over the steps where the
    layout is decided (σ ≤ 1: there the maps point where the words were drawn)."""

    category = "explain"
    inputs = [TRACE_IN, Int("step", 0, min=0, max=10000,
                            tooltip="0: summed over the steps from σ ≤ 1 on (where the picture's layout is "
                                    "decided); n: step n only"),
              Int("max_tokens", 24, min=1, max=77, tooltip="show at most this many tokens, in prompt order"),
              Link("image", T.IMAGE, optional=True, tooltip="the decoded picture, drawn under the heatmaps")]
    outputs = [IMAGE_OUT]

    def run(self, ctx, trace, step, max_tokens, image=None):
        from nodes.imaging.tiles import pils_to_image
        from nodes.imaging.trace_figures import attention_figure

        _check_steps(trace)
        if not trace.has_attention:
            raise NodeInputError("trace", "this trace has no attention maps: turn record_attention on in KSamplerTrace")
        if step > len(trace.steps):
            raise NodeInputError("step", f"the trace has {len(trace.steps)} steps; choose 1…{len(trace.steps)} "
                                 "or 0 for the sum")
        return (pils_to_image(attention_figure(trace, step, max_tokens, image)),)


@register
class CFGInspector(Node):
    """Classifier-free guidance at chosen steps: the prediction without the prompt (uncond), with it
    (cond), their difference (what the prompt adds), and the guided mix uncond + cfg·(cond − uncond)."""

    category = "explain"
    inputs = [TRACE_IN, String("steps", "", tooltip="step numbers (1 = first), comma-separated; "
                                                    "empty: the first, middle and last step"),
              Choice("show", ["x0", "eps"],
                     tooltip="x0: the predicted clean image x̂₀; eps: the predicted noise ε̂"),
              VAE_OPT]
    outputs = [IMAGE_OUT]

    def run(self, ctx, trace, steps, show, vae=None):
        from nodes.imaging.tiles import pils_to_image
        from nodes.imaging.trace_figures import cfg_figure

        _check_steps(trace)
        return (pils_to_image(cfg_figure(trace, _parse_steps(steps, len(trace.steps)), show, vae)),)


def _check_steps(trace) -> None:
    if not trace.steps:
        raise NodeInputError("trace", "the run recorded no steps (denoise 0 or no noise levels): "
                             "raise denoise or steps")


def _parse_steps(text: str, count: int) -> list[int]:
    """"1, 10, 20" → [0, 9, 19] (indices); empty → first, middle, last."""
    parts = [p.strip() for p in text.replace(";", ",").split(",") if p.strip()]
    if not parts:
        return sorted({0, (count - 1) // 2, count - 1})
    try:
        numbers = [int(p) for p in parts]
    except ValueError:
        raise NodeInputError("steps", f"{text!r} is not a list of step numbers; write e.g. 1, 10, {count}") from None
    bad = [n for n in numbers if not 1 <= n <= count]
    if bad:
        raise NodeInputError("steps", f"the trace has steps 1…{count}; {', '.join(map(str, bad))} is outside")
    return [n - 1 for n in numbers]
