"""Advanced nodes (ComfyUI's "advanced/…" categories): SDXL's own prompt encoders with their size and
aesthetic-score conditioning, and how a model relates noise levels to its prediction."""

from __future__ import annotations

from nodegraph import Bool, Choice, Float, Input, Int, Link, Node, NodeInputError, Output, String, register
from nodegraph import types as T
from nodes.latent import MAX_RESOLUTION

CLIP_IN = Link("clip", T.CLIP, tooltip="the text encoders of an SDXL checkpoint")
CONDITIONING_OUT = Output("CONDITIONING", T.CONDITIONING, "the prompt's hidden states, pooled embedding and sizes")


def size(name: str, default: int, what: str) -> Input:
    return Int(name, default, min=0, max=MAX_RESOLUTION, tooltip=what)


@register
class CLIPTextEncodeSDXL(Node):
    """Encode a prompt for SDXL base with its size conditioning: one text for each text encoder,
    and the original size, crop and target size the model was told about in training."""

    category = "advanced/conditioning"
    inputs = [CLIP_IN,
              size("width", 1024, "the image's original width SDXL is told (conditioning, not the output size)"),
              size("height", 1024, "the image's original height SDXL is told"),
              size("crop_w", 0, "how far from the left the training crop started (0: uncropped)"),
              size("crop_h", 0, "how far from the top the training crop started (0: uncropped)"),
              size("target_width", 1024, "the width SDXL is told the result should have"),
              size("target_height", 1024, "the height SDXL is told the result should have"),
              String("text_g", "", multiline=True, tooltip="the prompt for the big OpenCLIP (bigG) encoder"),
              String("text_l", "", multiline=True, tooltip="the prompt for the CLIP-L encoder")]
    outputs = [CONDITIONING_OUT]

    def run(self, ctx, clip, width, height, crop_w, crop_h, target_width, target_height, text_g, text_l):
        from nodes.text import encode_sdxl_texts
        from nodes.text.embeddings import lookup_for

        try:
            [entry] = encode_sdxl_texts(clip, text_g, text_l, lookup_for(ctx))
        except ValueError as exc:
            raise NodeInputError("clip", f"{exc}: load an SDXL base checkpoint") from None
        entry.extras.update(width=width, height=height, crop_w=crop_w, crop_h=crop_h, target_width=target_width,
                            target_height=target_height)
        return ([entry],)


@register
class CLIPTextEncodeSDXLRefiner(Node):
    """Encode a prompt for the SDXL refiner with its aesthetic score (6 is what training called
    good; ComfyUI's refiner workflows give the negative prompt 2.5)."""

    category = "advanced/conditioning"
    inputs = [Float("ascore", 6.0, min=0.0, max=1000.0, step=0.01,
                    tooltip="aesthetic score the refiner is told: higher asks for a more 'aesthetic' image"),
              size("width", 1024, "the image's original width the refiner is told"),
              size("height", 1024, "the image's original height the refiner is told"),
              String("text", "", multiline=True, tooltip="the prompt"), CLIP_IN]
    outputs = [CONDITIONING_OUT]

    def run(self, ctx, ascore, width, height, text, clip):
        from nodes.text import encode_text
        from nodes.text.embeddings import lookup_for

        [entry] = encode_text(clip, text, lookup_for(ctx))
        entry.extras.update(aesthetic_score=ascore, width=width, height=height)
        return ([entry],)


@register
class ModelSamplingDiscrete(Node):
    """Say what a discrete-time model predicts (noise "eps" or "v_prediction", or "lcm" for latent
    consistency models), and optionally rescale its schedule to zero terminal SNR (Lin et al. 2024)."""

    category = "advanced/model"
    inputs = [Link("model", T.MODEL, tooltip="the model to re-read"),
              Choice("sampling", ["eps", "v_prediction", "lcm"],
                     tooltip="what the UNet was trained to predict (lcm: a latent consistency model or LoRA)"),
              Bool("zsnr", False, tooltip="rescale the noise schedule so its last step is pure noise")]
    outputs = [Output("MODEL", T.MODEL, "the same UNet with this prediction type and schedule")]

    def run(self, ctx, model, sampling, zsnr):
        from dataclasses import replace

        from nodes.sampling.model_sampling import zero_terminal_snr_alphas_cumprod

        alphas = zero_terminal_snr_alphas_cumprod(model.alphas_cumprod) if zsnr else model.alphas_cumprod
        prediction = {"eps": "epsilon", "v_prediction": "v_prediction", "lcm": "lcm"}[sampling]
        return (replace(model, prediction_type=prediction, alphas_cumprod=alphas),)
