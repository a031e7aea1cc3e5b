"""Conditioning nodes: the tokenizer and the text encoder as two visible stages, the one-node form,
which CLIP layer to stop at; and ComfyUI's nodes that combine conditionings and place them in the
image (areas, masks) or in time (timestep ranges), which the sampler honours (nodes/sampling/conds.py);
and the mask and masked image an inpainting model reads (nodes/sampling/concat.py)."""

from __future__ import annotations

from nodegraph import (
    Bool,
    Choice,
    Float,
    Int,
    Link,
    Node,
    NodeInputError,
    NodeOutput,
    Output,
    String,
    register,
)
from nodegraph import types as T

CLIP_IN = Link("clip", T.CLIP, tooltip="the tokenizer and text encoder (from a checkpoint loader)")
PROMPT = String("text", "", multiline=True, tooltip="the prompt; (word:1.3) weights it")
CONDITIONING_OUT = Output("CONDITIONING", T.CONDITIONING,
                          "the prompt as the text encoder's hidden states, for the sampler's cross-attention")


def tokens_summary(tokens) -> dict:
    """What the editor shows under CLIPTokenize: each chunk's words with ids and weights."""
    rows = []
    for c, (ids, words, weights) in enumerate(zip(tokens.ids, tokens.words, tokens.weights, strict=True)):
        used = [(i, w, wt) for i, w, wt in zip(ids, words, weights, strict=True) if w != "<pad>"]
        rows.append(" ".join(f"{w}({i})" + (f"×{wt:g}" if wt != 1.0 else "") for i, w, wt in used)
                    + f"   [chunk {c + 1}: {len(used) - 2} tokens + padding]")
    return {"text": rows}


@register
class CLIPTokenize(Node):
    """Split a prompt into CLIP's BPE tokens (77 per chunk), with (weights:1.2) parsed — see what the
    text encoder will read."""

    category = "conditioning"
    inputs = [CLIP_IN, PROMPT]
    outputs = [Output("TOKENS", T.TOKENS, "token ids, the words they stand for and their weights")]

    def run(self, ctx, clip, text):
        from nodes.text import tokenize
        from nodes.text.embeddings import lookup_for

        tokens = tokenize(clip.tokenizer, text, pad_id=clip.pad_id, embeddings=lookup_for(ctx))
        return NodeOutput((tokens,), tokens_summary(tokens))


@register
class CLIPTextEncodeTokens(Node):
    """Run the text encoder on TOKENS: one hidden-state vector per token position (CONDITIONING)."""

    category = "conditioning"
    inputs = [CLIP_IN, Link("tokens", T.TOKENS, tooltip="the prompt's tokens (from CLIPTokenize)")]
    outputs = [CONDITIONING_OUT]

    def run(self, ctx, clip, tokens):
        from nodes.text import encode_tokens

        return (encode_tokens(clip, tokens),)


@register
class CLIPTextEncode(Node):
    """Tokenize and encode a prompt in one step (ComfyUI's node)."""

    category = "conditioning"
    inputs = [PROMPT, CLIP_IN]
    outputs = [CONDITIONING_OUT]

    def run(self, ctx, text, clip):
        from nodes.text import encode_text
        from nodes.text.embeddings import lookup_for

        return (encode_text(clip, text, lookup_for(ctx)),)


@register
class CLIPSetLastLayer(Node):
    """CLIP skip: take the text encoder's hidden state from an earlier layer (-1 is the last)."""

    category = "conditioning"
    inputs = [CLIP_IN, Int("stop_at_clip_layer", -1, min=-24, max=-1,
                           tooltip="-1: last layer; -2: the one before (\"clip skip 2\")")]
    outputs = [Output("CLIP", T.CLIP, "the same text encoder, stopping at the chosen layer")]

    def run(self, ctx, clip, stop_at_clip_layer):
        from nodes.text import clip_layer_range

        low, high = clip_layer_range(clip.text_encoder)
        if not low <= stop_at_clip_layer <= high:
            raise NodeInputError("stop_at_clip_layer", f"{stop_at_clip_layer} is out of range: this text encoder "
                                 f"has {-low} layers, so use a value from {low} to {high}")
        return (clip.with_layer(stop_at_clip_layer),)


# -- combining and placing conditionings (ComfyUI's conditioning nodes) -------------------------------

COND_IN = Link("conditioning", T.CONDITIONING, tooltip="the conditioning to change (from a text encoder)")
STRENGTH = Float("strength", 1.0, min=0.0, max=10.0, step=0.01,
                 tooltip="how much this conditioning weighs against the others where they overlap")
MAX_RESOLUTION = 16384


def _set(conditioning, **values):
    from nodes.core.values import conditioning_set_values

    return (conditioning_set_values(conditioning, values),)


@register
class ConditioningCombine(Node):
    """Both conditionings, side by side: the sampler predicts with each and averages the predictions
    (weighted by their areas and strengths) — unlike Concat, which makes one longer prompt."""

    category = "conditioning"
    inputs = [Link("conditioning_1", T.CONDITIONING, tooltip="the first conditioning"),
              Link("conditioning_2", T.CONDITIONING, tooltip="the second conditioning")]
    outputs = [Output("CONDITIONING", T.CONDITIONING, "the entries of both, each still used on its own")]

    def run(self, ctx, conditioning_1, conditioning_2):
        return (list(conditioning_1) + list(conditioning_2),)


@register
class ConditioningAverage(Node):
    """Blend two prompts' hidden states: to·strength + from·(1 − strength), token by token."""

    category = "conditioning"
    inputs = [Link("conditioning_to", T.CONDITIONING, tooltip="the conditioning kept at strength 1"),
              Link("conditioning_from", T.CONDITIONING, tooltip="blended in at 1 − strength (its first entry)"),
              Float("conditioning_to_strength", 1.0, min=0.0, max=1.0, step=0.01,
                    tooltip="1: only conditioning_to; 0: only conditioning_from")]
    outputs = [Output("CONDITIONING", T.CONDITIONING, "the blended hidden states")]

    def run(self, ctx, conditioning_to, conditioning_from, conditioning_to_strength):
        from nodes.sampling.conds import average

        return (average(conditioning_to, conditioning_from, conditioning_to_strength),)


@register
class ConditioningConcat(Node):
    """Append one prompt's tokens after another's: one longer prompt the UNet attends to as a whole."""

    category = "conditioning"
    inputs = [Link("conditioning_to", T.CONDITIONING, tooltip="the tokens that come first"),
              Link("conditioning_from", T.CONDITIONING, tooltip="the tokens appended after them (its first entry)")]
    outputs = [Output("CONDITIONING", T.CONDITIONING, "the joined token sequence")]

    def run(self, ctx, conditioning_to, conditioning_from):
        from nodes.sampling.conds import concat

        return (concat(conditioning_to, conditioning_from),)


@register
class ConditioningSetArea(Node):
    """Apply the prompt only to a rectangle of the image (regional prompting), in pixels; the
    sampler runs the UNet on that crop and blends it in with soft edges."""

    category = "conditioning"
    inputs = [COND_IN,
              Int("width", 64, min=64, max=MAX_RESOLUTION, step=8, tooltip="the area's width in pixels"),
              Int("height", 64, min=64, max=MAX_RESOLUTION, step=8, tooltip="the area's height in pixels"),
              Int("x", 0, min=0, max=MAX_RESOLUTION, step=8, tooltip="the area's left edge in pixels"),
              Int("y", 0, min=0, max=MAX_RESOLUTION, step=8, tooltip="the area's top edge in pixels"), STRENGTH]
    outputs = [Output("CONDITIONING", T.CONDITIONING, "the conditioning, limited to the area")]

    def run(self, ctx, conditioning, width, height, x, y, strength):
        return _set(conditioning, area=(height // 8, width // 8, y // 8, x // 8), strength=strength,
                    set_area_to_bounds=False)


@register
class ConditioningSetAreaPercentage(Node):
    """ConditioningSetArea in fractions of the image, so it fits any size."""

    category = "conditioning"
    inputs = [COND_IN,
              Float("width", 1.0, min=0.0, max=1.0, step=0.01, tooltip="the area's width, as a fraction of the image"),
              Float("height", 1.0, min=0.0, max=1.0, step=0.01, tooltip="the area's height, as a fraction"),
              Float("x", 0.0, min=0.0, max=1.0, step=0.01, tooltip="the area's left edge, as a fraction"),
              Float("y", 0.0, min=0.0, max=1.0, step=0.01, tooltip="the area's top edge, as a fraction"), STRENGTH]
    outputs = [Output("CONDITIONING", T.CONDITIONING, "the conditioning, limited to the area")]

    def run(self, ctx, conditioning, width, height, x, y, strength):
        return _set(conditioning, area=("percentage", height, width, y, x), strength=strength,
                    set_area_to_bounds=False)


@register
class ConditioningSetAreaStrength(Node):
    """Change how much a conditioning weighs against the others where they overlap."""

    category = "conditioning"
    inputs = [COND_IN, STRENGTH]
    outputs = [Output("CONDITIONING", T.CONDITIONING, "the conditioning with the new strength")]

    def run(self, ctx, conditioning, strength):
        return _set(conditioning, strength=strength)


@register
class ConditioningSetMask(Node):
    """Apply the prompt only where the mask is set (weighted by its values): regional prompting with
    any shape."""

    category = "conditioning"
    inputs = [COND_IN, Link("mask", T.MASK, tooltip="where the prompt applies (1) and where not (0)"),
              STRENGTH,
              Choice("set_cond_area", ["default", "mask bounds"],
                     tooltip="mask bounds: run the UNet only on the mask's bounding box (faster, and the "
                             "prompt sees just that part)")]
    outputs = [Output("CONDITIONING", T.CONDITIONING, "the conditioning, limited to the mask")]

    def run(self, ctx, conditioning, mask, strength, set_cond_area):
        if mask.ndim < 3:
            mask = mask.unsqueeze(0)
        return _set(conditioning, mask=mask, set_area_to_bounds=set_cond_area != "default", mask_strength=strength)


@register
class ConditioningZeroOut(Node):
    """All-zero hidden states (and pooled output): "no prompt at all", which differs from an empty
    prompt's encoding."""

    category = "conditioning"
    inputs = [COND_IN]
    outputs = [Output("CONDITIONING", T.CONDITIONING, "zeros of the same shape")]

    def run(self, ctx, conditioning):
        from nodes.sampling.conds import zero_out

        return (zero_out(conditioning),)


@register
class ConditioningSetTimestepRange(Node):
    """Use the conditioning only during part of the sampling: 0 is the first (noisiest) step, 1 the end."""

    category = "conditioning"
    inputs = [COND_IN,
              Float("start", 0.0, min=0.0, max=1.0, step=0.001, tooltip="where in the sampling it starts applying"),
              Float("end", 1.0, min=0.0, max=1.0, step=0.001, tooltip="where in the sampling it stops applying")]
    outputs = [Output("CONDITIONING", T.CONDITIONING, "the conditioning with its time range")]

    def run(self, ctx, conditioning, start, end):
        return _set(conditioning, start_percent=start, end_percent=end)


VISION_OUTPUT_IN = Link("clip_vision_output", T.CLIP_VISION_OUTPUT, tooltip="the encoded image (from CLIPVisionEncode)")


@register
class CLIPVisionEncode(Node):
    """Encode images with a CLIP image encoder (resized to its input size, 224 px): for unCLIP,
    style models and SDXL revision."""

    category = "conditioning"
    inputs = [Link("clip_vision", T.CLIP_VISION, tooltip="the CLIP image encoder (from CLIPVisionLoader)"),
              Link("image", T.IMAGE, tooltip="the image(s) to encode"),
              Choice("crop", ["center", "none"], tooltip="center: short side to 224 px, then the centre square; "
                                                         "none: squash the whole image to a square")]
    outputs = [Output("CLIP_VISION_OUTPUT", T.CLIP_VISION_OUTPUT,
                      "the image's hidden states and embedding, per image of the batch")]

    def run(self, ctx, clip_vision, image, crop="center"):
        from nodes.models.clip_vision import encode_image

        return (encode_image(clip_vision, image, crop=crop == "center"),)


@register
class unCLIPConditioning(Node):
    """Steer an unCLIP model (or SDXL, through revision) with an image: its CLIP embedding joins the
    prompt. Chain several to mix images."""

    category = "conditioning"
    inputs = [COND_IN, VISION_OUTPUT_IN,
              Float("strength", 1.0, min=-10.0, max=10.0, step=0.01, tooltip="how strongly the image steers (0: not at all)"),
              Float("noise_augmentation", 0.0, min=0.0, max=1.0, step=0.01,
                    tooltip="noise added to the image embedding: higher keeps less of the image, more variation")]
    outputs = [Output("CONDITIONING", T.CONDITIONING, "the conditioning with the image embedding attached")]

    def run(self, ctx, conditioning, clip_vision_output, strength, noise_augmentation):
        from dataclasses import replace

        if strength == 0:
            return (conditioning,)
        new = {"clip_vision_output": clip_vision_output, "strength": strength, "noise_augmentation": noise_augmentation}
        return ([replace(e, extras={**e.extras, "unclip_conditioning": [*e.extras.get("unclip_conditioning", ()), new]})
                 for e in conditioning],)


@register
class StyleModelApply(Node):
    """Append a style model's tokens, made from an encoded image, to the prompt (T2I-Adapter style, SD 1.x)."""

    category = "conditioning/style_model"
    inputs = [COND_IN, Link("style_model", T.STYLE_MODEL, tooltip="the style model (from StyleModelLoader)"),
              VISION_OUTPUT_IN,
              Float("strength", 1.0, min=0.0, max=10.0, step=0.001, tooltip="how strongly the style tokens act"),
              Choice("strength_type", ["multiply", "attn_bias"],
                     tooltip="multiply: scale the style tokens; attn_bias: an attention bias on them (read by "
                             "joint-attention models such as Flux; SD UNets ignore it, as in ComfyUI)")]
    outputs = [Output("CONDITIONING", T.CONDITIONING, "the prompt with the style tokens appended")]

    def run(self, ctx, conditioning, style_model, clip_vision_output, strength, strength_type):
        from nodes.models.style_model import apply_style, style_tokens

        try:
            tokens = style_tokens(style_model, clip_vision_output)
        except ValueError as e:
            raise NodeInputError("clip_vision_output", f"{e}: encode the image with a CLIP ViT-L/14 CLIP_VISION") from None
        width = conditioning[0].cond.shape[-1] if conditioning else tokens.shape[-1]
        if tokens.shape[-1] != width:
            raise NodeInputError("style_model", f"the style model makes {tokens.shape[-1]}-wide tokens but the prompt's "
                                 f"are {width}-wide: style models are for SD 1.x (CLIP-L) prompts")
        return (apply_style(conditioning, tokens, strength, strength_type),)


# -- inpainting models ------------------------------------------------------------------------------


@register
class InpaintModelConditioning(Node):
    """Prepare an inpainting model's inputs: the mask and the image with the masked area greyed out go
    into both conditionings (an inpainting UNet reads them beside the latent; other UNets ignore them),
    and the whole image becomes the latent to sample from."""

    category = "conditioning/inpaint"
    inputs = [Link("positive", T.CONDITIONING, tooltip="what the redrawn area should show"),
              Link("negative", T.CONDITIONING, tooltip="what it should not show"),
              Link("vae", T.VAE, tooltip="the autoencoder whose encoder turns pixels into latents"),
              Link("pixels", T.IMAGE, tooltip="the image to inpaint; sides are cropped to multiples of 8"),
              Link("mask", T.MASK, tooltip="1 where the image is to be redrawn"),
              Bool("noise_mask", True, tooltip="also limit sampling to the mask (a noise mask on the latent): "
                                               "usually better; some models do better without")]
    outputs = [Output("positive", T.CONDITIONING, "the positive conditioning with the mask and masked image"),
               Output("negative", T.CONDITIONING, "the negative conditioning with the mask and masked image"),
               Output("latent", T.LATENT, "the whole image encoded (with the mask as noise mask if asked)")]

    def run(self, ctx, positive, negative, vae, pixels, mask, noise_mask):
        from nodes.core.values import Latent, conditioning_set_values
        from nodes.imaging.vae import encode
        from nodes.sampling.concat import inpaint_model_inputs

        masked, mask = inpaint_model_inputs(pixels, mask, vae.latent_format.downscale)
        values = {"concat_latent_image": encode(vae, masked, check=ctx.check_cancelled), "concat_mask": mask}
        latent = Latent(encode(vae, pixels, check=ctx.check_cancelled), noise_mask=mask if noise_mask else None)
        return (conditioning_set_values(positive, values), conditioning_set_values(negative, values), latent)


@register
class GLIGENTextBoxApply(Node):
    """GLIGEN: ask for what the text describes inside a box of the image (x, y, width, height in
    pixels). Chain several for several boxes; works best for objects the prompt also names."""

    category = "conditioning/gligen"
    inputs = [Link("conditioning_to", T.CONDITIONING, tooltip="the prompt the box is added to"), CLIP_IN,
              Link("gligen_textbox_model", T.GLIGEN, tooltip="the GLIGEN model (from GLIGENLoader)"),
              String("text", "", multiline=True, tooltip="what goes in the box, e.g. \"a red car\""),
              Int("width", 64, min=8, max=MAX_RESOLUTION, step=8, tooltip="the box's width in pixels"),
              Int("height", 64, min=8, max=MAX_RESOLUTION, step=8, tooltip="the box's height in pixels"),
              Int("x", 0, min=0, max=MAX_RESOLUTION, step=8, tooltip="the box's left edge in pixels"),
              Int("y", 0, min=0, max=MAX_RESOLUTION, step=8, tooltip="the box's top edge in pixels")]
    outputs = [Output("CONDITIONING", T.CONDITIONING, "the prompt with the box, placed while sampling")]

    def run(self, ctx, conditioning_to, clip, gligen_textbox_model, text, width, height, x, y):
        from nodes.models.gligen import add_text_box, phrase_embedding
        from nodes.text.embeddings import lookup_for

        pooled = phrase_embedding(clip, text, lookup_for(ctx))
        return (add_text_box(conditioning_to, gligen_textbox_model, pooled, (height // 8, width // 8, y // 8, x // 8)),)
