"""Model merging (ComfyUI's "advanced/model_merging"): blend, add or subtract two models' weights, and
save the result as a checkpoint. The input models are never changed."""

from __future__ import annotations

from nodegraph import Float, Input, Link, Node, NodeOutput, Output, String, UserError, register
from nodegraph import types as T

MODEL1 = Link("model1", T.MODEL, tooltip="the model whose layout and other settings the result keeps")
MODEL2 = Link("model2", T.MODEL, tooltip="the model blended in")
CLIP1 = Link("clip1", T.CLIP, tooltip="the text encoder whose layout the result keeps")
CLIP2 = Link("clip2", T.CLIP, tooltip="the text encoder blended in")
MODEL_OUT = Output("MODEL", T.MODEL, "the merged model")
CLIP_OUT = Output("CLIP", T.CLIP, "the merged text encoder")


def ratio(name: str, what: str) -> Input:
    return Float(name, 1.0, min=0.0, max=1.0, step=0.01, tooltip=f"1: all of model1{what}, 0: all of model2")


def merge_model(model1, model2, strengths):
    from dataclasses import replace

    from nodes.models.merge import merge_modules

    return replace(model1, unet=merge_modules(model1.unet, model2.unet, strengths), base_unet=None, weight_patches=())


def merge_clip(clip1, clip2, strengths):
    from dataclasses import replace

    from nodes.models.merge import clip_skip, merge_modules

    def tower(a, b):
        return replace(a, text_encoder=merge_modules(a.text_encoder, b.text_encoder, strengths, clip_skip),
                       base_text_encoder=None, weight_patches=())

    merged = tower(clip1, clip2)
    if clip1.second is not None and clip2.second is not None:
        merged = replace(merged, second=tower(clip1.second, clip2.second))
    return merged


@register
class ModelMergeSimple(Node):
    """Blend two models of the same family: model1 × ratio + model2 × (1 − ratio)."""

    category = "advanced/model_merging"
    inputs = [MODEL1, MODEL2, ratio("ratio", "")]
    outputs = [MODEL_OUT]

    def run(self, ctx, model1, model2, ratio):
        return (merge_model(model1, model2, lambda name: (ratio, 1.0 - ratio)),)


@register
class ModelMergeAdd(Node):
    """Add model2's weights to model1's (for adding a difference made with ModelMergeSubtract)."""

    category = "advanced/model_merging"
    inputs = [MODEL1, MODEL2]
    outputs = [MODEL_OUT]

    def run(self, ctx, model1, model2):
        return (merge_model(model1, model2, lambda name: (1.0, 1.0)),)


@register
class ModelMergeSubtract(Node):
    """(model1 − model2) × multiplier: what a fine-tune changed, to add to another model."""

    category = "advanced/model_merging"
    inputs = [MODEL1, MODEL2, Float("multiplier", 1.0, min=-10.0, max=10.0, step=0.01,
                                    tooltip="scales the difference")]
    outputs = [MODEL_OUT]

    def run(self, ctx, model1, model2, multiplier):
        return (merge_model(model1, model2, lambda name: (multiplier, -multiplier)),)


@register
class ModelMergeBlocks(Node):
    """Blend two models with a ratio per UNet part: input (down) blocks, middle block, output (up)
    blocks; the rest (time embedding, first and last convolutions) follows the input ratio."""

    category = "advanced/model_merging"
    inputs = [MODEL1, MODEL2, ratio("input", "'s input blocks"), ratio("middle", "'s middle block"),
              ratio("out", "'s output blocks")]
    outputs = [MODEL_OUT]

    def run(self, ctx, model1, model2, input, middle, out):
        from nodes.models.lora import ldm_module_names
        from nodes.models.merge import block_of

        names = ldm_module_names(model1.unet)
        ratios = {"input": input, "middle": middle, "output": out, "": input}

        def strengths(name):
            r = ratios[block_of(names, name)]
            return (r, 1.0 - r)

        return (merge_model(model1, model2, strengths),)


@register
class CLIPMergeSimple(Node):
    """Blend two text encoders of the same family: clip1 × ratio + clip2 × (1 − ratio)."""

    category = "advanced/model_merging"
    inputs = [CLIP1, CLIP2, Float("ratio", 1.0, min=0.0, max=1.0, step=0.01, tooltip="1: all of clip1, 0: all of clip2")]
    outputs = [CLIP_OUT]

    def run(self, ctx, clip1, clip2, ratio):
        return (merge_clip(clip1, clip2, lambda name: (ratio, 1.0 - ratio)),)


@register
class CLIPMergeAdd(Node):
    """Add clip2's weights to clip1's."""

    category = "advanced/model_merging"
    inputs = [CLIP1, CLIP2]
    outputs = [CLIP_OUT]

    def run(self, ctx, clip1, clip2):
        return (merge_clip(clip1, clip2, lambda name: (1.0, 1.0)),)


@register
class CLIPMergeSubtract(Node):
    """(clip1 − clip2) × multiplier."""

    category = "advanced/model_merging"
    inputs = [CLIP1, CLIP2, Float("multiplier", 1.0, min=-10.0, max=10.0, step=0.01, tooltip="scales the difference")]
    outputs = [CLIP_OUT]

    def run(self, ctx, clip1, clip2, multiplier):
        return (merge_clip(clip1, clip2, lambda name: (multiplier, -multiplier)),)


def sdxl_checkpoint_tensors(model, clip, vae) -> dict:
    """SDXL base or refiner modules named as in the original single file (sd_xl_base_1.0.safetensors):
    `model.diffusion_model.*` (LDM UNet), `first_stage_model.*` (LDM VAE), then base: CLIP-L at
    `conditioner.embedders.0.transformer.*` and OpenCLIP bigG at `conditioner.embedders.1.model.*`;
    refiner: bigG alone at `conditioner.embedders.0.model.*`. A v-prediction model gets ComfyUI's empty
    `v_pred` marker. Works on meta tensors."""
    import torch

    from nodes.models.convert import (
        REFINER_CLIP_G_PREFIX,
        SDXL_CLIP_G_PREFIX,
        SDXL_CLIP_L_PREFIX,
        UNET_PREFIX,
        VAE_PREFIX,
        clip_to_ldm,
        hf_to_openclip,
        unet_to_ldm,
        vae_to_ldm,
    )

    sd = {UNET_PREFIX + k: v for k, v in unet_to_ldm(model.unet.state_dict(), dict(model.unet.config)).items()}
    sd |= {VAE_PREFIX + k: v for k, v in vae_to_ldm(vae.vae.state_dict(), dict(vae.vae.config)).items()}
    if clip.second is not None:
        sd |= {SDXL_CLIP_L_PREFIX + k: v for k, v in clip_to_ldm(clip.text_encoder.state_dict()).items()
               if not k.endswith("position_ids")}
        sd |= {SDXL_CLIP_G_PREFIX + k: v for k, v in hf_to_openclip(clip.second.text_encoder.state_dict()).items()}
    else:
        sd |= {REFINER_CLIP_G_PREFIX + k: v for k, v in hf_to_openclip(clip.text_encoder.state_dict()).items()}
    if model.prediction_type == "v_prediction":
        sd["v_pred"] = torch.tensor([])
    return sd


def is_sdxl_family(model, clip) -> bool:
    """SDXL base (two text towers) or refiner (a UNet with SDXL's size conditioning, bigG alone)."""
    return clip.second is not None or model.unet.config.get("addition_embed_type") == "text_time"


@register
class CheckpointSave(Node):
    """Save a model, text encoder and VAE as one .safetensors checkpoint in the output folder, in the
    original single-file layout ComfyUI and A1111 read (SD 1.x/2.x-shaped models, SDXL base and refiner)."""

    category = "advanced/model_merging"
    output_node = True
    inputs = [Link("model", T.MODEL, tooltip="the UNet to save"), Link("clip", T.CLIP, tooltip="the text encoder to save"),
              Link("vae", T.VAE, tooltip="the VAE to save"),
              String("filename_prefix", "checkpoints/sdgraph", tooltip="file name start, under the output folder")]
    outputs = []

    def run(self, ctx, model, clip, vae, filename_prefix):
        from nodes.imaging.files import next_counter, resolve_prefix
        from nodes.models import save_checkpoint

        try:
            folder, stem = resolve_prefix(ctx.paths.output, filename_prefix)
        except ValueError as exc:
            raise UserError(str(exc)) from None
        path = folder / f"{stem}_{next_counter(folder, stem, '.safetensors'):05}_.safetensors"
        if is_sdxl_family(model, clip):
            from safetensors.torch import save

            from nodegraph.fileio import atomic_write
            from nodes.models.sdgraph_format import _plain

            tensors = {k: _plain(v, None) for k, v in sdxl_checkpoint_tensors(model, clip, vae).items()}
            # ComfyUI's modelspec entries, which model browsers read
            metadata = {"format": "pt", "modelspec.sai_model_spec": "1.0.0", "modelspec.implementation": "sgm",
                        "modelspec.architecture": "stable-diffusion-xl-v1-" + ("base" if clip.second else "refiner"),
                        "modelspec.title": path.stem}
            if model.prediction_type == "v_prediction":
                metadata["modelspec.predict_key"] = "v"
            atomic_write(path, save(tensors, metadata=metadata))
        else:
            save_checkpoint(path, model.unet, vae.vae, clip.text_encoder, prediction_type=model.prediction_type,
                            latent_scale_factor=vae.latent_format.scale_factor, clip_pad_id=clip.pad_id)
        return NodeOutput((), {"files": [str(path)]})
