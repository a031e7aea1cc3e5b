"""Loader nodes: checkpoints, VAEs and LoRAs from the model folders."""

from __future__ import annotations

from nodegraph import Choice, Float, Link, Node, NodeInputError, Output, register
from nodegraph import types as T
from nodes.core.files import ModelFile


@register
class CheckpointLoaderSimple(Node):
    """Load a Stable Diffusion checkpoint: the UNet (MODEL), text encoder (CLIP) and VAE."""

    category = "loaders"
    inputs = [ModelFile("ckpt_name", "checkpoints",
                        tooltip="a .safetensors/.ckpt file or a diffusers folder in models/checkpoints")]
    outputs = [Output("MODEL", T.MODEL, "the denoising UNet and its noise schedule"),
               Output("CLIP", T.CLIP, "the tokenizer and text encoder, for prompts"),
               Output("VAE", T.VAE, "the autoencoder between pixels and latents")]

    def run(self, ctx, ckpt_name):
        from dataclasses import replace

        from nodes.imaging.preview import fit_latent_rgb
        from nodes.models import load_checkpoint

        model, clip, vae = load_checkpoint(ctx.models.path("checkpoints", ckpt_name), device=ctx.device,
                                           dtype=ctx.dtype)
        model.latent_format = replace(model.latent_format, rgb_factors=fit_latent_rgb(vae, model.latent_format))
        return (model, clip, vae)


@register
class VAELoader(Node):
    """Load a VAE on its own, to decode with a different autoencoder than the checkpoint's."""

    category = "loaders"
    inputs = [ModelFile("vae_name", "vae", tooltip="a VAE file or diffusers VAE folder in models/vae")]
    outputs = [Output("VAE", T.VAE, "the autoencoder between pixels and latents")]

    def run(self, ctx, vae_name):
        from nodes.models import load_vae

        return (load_vae(ctx.models.path("vae", vae_name), device=ctx.device, dtype=ctx.dtype),)


# The configs ComfyUI ships in models/configs, which old workflows name. sdgraph detects the model
# from the file itself; what a config adds is honoured: CLIP skip 2, and v- or eps-prediction for SD 2.x.
COMFY_CONFIGS = ["anything_v3.yaml", "v1-inference.yaml", "v1-inference_clip_skip_2.yaml",
                 "v1-inference_clip_skip_2_fp16.yaml", "v1-inference_fp16.yaml", "v1-inpainting-inference.yaml",
                 "v2-inference-v.yaml", "v2-inference-v_fp32.yaml", "v2-inference.yaml", "v2-inference_fp32.yaml",
                 "v2-inpainting-inference.yaml"]


@register
class CheckpointLoader(Node):
    """Load a checkpoint with one of ComfyUI's config files named (as old workflows do). The model
    is detected from the file; the config's CLIP skip and SD 2.x prediction type are applied."""

    category = "advanced/loaders"
    inputs = [Choice("config_name", COMFY_CONFIGS, "v1-inference.yaml",
                     tooltip="the LDM config old ComfyUI workflows name: *_clip_skip_2 stops CLIP one layer "
                             "early, v2-inference-v reads an SD 2.x model as v-prediction"),
              ModelFile("ckpt_name", "checkpoints", tooltip="a .safetensors/.ckpt file or a diffusers folder")]
    outputs = CheckpointLoaderSimple.outputs

    def run(self, ctx, config_name, ckpt_name):
        from dataclasses import replace

        model, clip, vae = CheckpointLoaderSimple().run(ctx, ckpt_name)
        if "clip_skip_2" in config_name:
            clip = clip.with_layer(-2)
        if config_name.startswith("v2-inference"):
            model = replace(model, prediction_type="v_prediction" if "-v" in config_name else "epsilon")
        return (model, clip, vae)


LORA_FILE = ModelFile("lora_name", "loras", tooltip="a LoRA/LyCORIS .safetensors file in models/loras")
MODEL_STRENGTH = Float("strength_model", 1.0, min=-100.0, max=100.0, step=0.01,
                       tooltip="how much of the LoRA's change to the UNet to add (0: none, negative: the opposite)")


@register
class LoraLoader(Node):
    """Add a LoRA's learned changes to a model and its text encoder (kohya, diffusers/PEFT, LoHa, LoKr).
    The input model is left as it was: other branches keep using it unchanged."""

    category = "loaders"
    inputs = [Link("model", T.MODEL, tooltip="the model to add the LoRA to"),
              Link("clip", T.CLIP, tooltip="the text encoder(s) to add the LoRA to"), LORA_FILE, MODEL_STRENGTH,
              Float("strength_clip", 1.0, min=-100.0, max=100.0, step=0.01,
                    tooltip="how much of the LoRA's change to the text encoder to add")]
    outputs = [Output("MODEL", T.MODEL, "the model with the LoRA"), Output("CLIP", T.CLIP, "the text encoder with the LoRA")]

    def run(self, ctx, model, clip, lora_name, strength_model, strength_clip):
        from nodes.models.lora import patch_clip, patch_model, read_lora

        if strength_model == 0 and strength_clip == 0:
            return (model, clip)
        lora = read_lora(ctx.models.path("loras", lora_name))
        return (patch_model(model, lora, strength_model), patch_clip(clip, lora, strength_clip))


@register
class LoraLoaderModelOnly(Node):
    """Add a LoRA's changes to the model only (the text encoder is not touched)."""

    category = "loaders"
    inputs = [Link("model", T.MODEL, tooltip="the model to add the LoRA to"), LORA_FILE, MODEL_STRENGTH]
    outputs = [Output("MODEL", T.MODEL, "the model with the LoRA")]

    def run(self, ctx, model, lora_name, strength_model):
        from nodes.models.lora import patch_model, read_lora

        if strength_model == 0:
            return (model,)
        return (patch_model(model, read_lora(ctx.models.path("loras", lora_name)), strength_model),)


@register
class UpscaleModelLoader(Node):
    """Load a super-resolution model (ESRGAN, Real-ESRGAN, SwinIR, HAT, DAT…; spandrel detects which)
    for ImageUpscaleWithModel."""

    category = "loaders"
    inputs = [ModelFile("model_name", "upscale_models",
                        tooltip="a .safetensors/.pth upscale model in models/upscale_models")]
    outputs = [Output("UPSCALE_MODEL", T.UPSCALE_MODEL, "the upscale model, with its scale (×2, ×4…)")]

    def run(self, ctx, model_name):
        from nodes.imaging.upscale import load_upscale_model

        return (load_upscale_model(ctx.models.path("upscale_models", model_name)),)


@register
class UNETLoader(Node):
    """Load a UNet on its own (a diffusion-model-only file from models/diffusion_models)."""

    category = "advanced/loaders"
    inputs = [ModelFile("unet_name", "diffusion_models", tooltip="a UNet-only file in models/diffusion_models (or models/unet)"),
              Choice("weight_dtype", ["default", "fp8_e4m3fn", "fp8_e4m3fn_fast", "fp8_e5m2"],
                     tooltip="how the weights are stored: default at the run's precision; fp8_* keep every "
                             "linear/conv weight in that 8-bit float (less memory, slightly different pictures) "
                             "and compute each layer at the run's precision; _fast is the same here (no fp8 "
                             "matrix multiply)")]
    outputs = [Output("MODEL", T.MODEL, "the denoising UNet and its noise schedule")]

    def run(self, ctx, unet_name, weight_dtype):
        from nodes.models.parts import load_unet
        from nodes.models.weight_storage import STORAGE_DTYPES, store_weights_as

        model = load_unet(ctx.models.path("diffusion_models", unet_name), device=ctx.device, dtype=ctx.dtype)
        store_weights_as(model.unet, STORAGE_DTYPES[weight_dtype])
        return (model,)


CLIP_FILE_TIP = "a text-encoder file in models/text_encoders (or models/clip)"
CLIP_DEVICE = Choice("device", ["default", "cpu"], optional=True, tooltip="cpu: keep the text encoder off the GPU")


@register
class CLIPLoader(Node):
    """Load one text encoder on its own: CLIP-L (SD 1.x), OpenCLIP-H (SD 2.x) or OpenCLIP bigG."""

    category = "advanced/loaders"
    inputs = [ModelFile("clip_name", "text_encoders", tooltip=CLIP_FILE_TIP),
              Choice("type", ["stable_diffusion", "stable_cascade", "sd3", "stable_audio", "mochi", "ltxv", "pixart",
                              "cosmos", "lumina2", "wan", "hidream", "chroma", "ace", "omnigen2", "qwen_image",
                              "hunyuan_image"], tooltip="the model family the encoder is for (SD-family only here)"),
              CLIP_DEVICE]
    outputs = [Output("CLIP", T.CLIP, "the text encoder, for prompts")]

    def run(self, ctx, clip_name, type, device="default"):
        from nodes.models.parts import load_text_encoder

        if type != "stable_diffusion":
            raise NodeInputError("type", f'"{type}" text encoders are for model families sdgraph does not run; '
                                 "use stable_diffusion")
        return (load_text_encoder(ctx.models.path("text_encoders", clip_name),
                                  device="cpu" if device == "cpu" else ctx.device, dtype=ctx.dtype),)


@register
class DualCLIPLoader(Node):
    """Load SDXL's two text encoders from separate files (CLIP-L and OpenCLIP bigG, either order)."""

    category = "advanced/loaders"
    inputs = [ModelFile("clip_name1", "text_encoders", tooltip=CLIP_FILE_TIP),
              ModelFile("clip_name2", "text_encoders", tooltip=CLIP_FILE_TIP),
              Choice("type", ["sdxl", "sd3", "flux", "hunyuan_video", "hidream", "hunyuan_image"],
                     tooltip="the model family the pair is for (sdxl here)"), CLIP_DEVICE]
    outputs = [Output("CLIP", T.CLIP, "both text encoders, for prompts")]

    def run(self, ctx, clip_name1, clip_name2, type, device="default"):
        from nodes.models.parts import load_text_encoder, sdxl_clip

        if type != "sdxl":
            raise NodeInputError("type", f'"{type}" pairs are for model families sdgraph does not run; use sdxl')
        where = "cpu" if device == "cpu" else ctx.device
        first, second = (load_text_encoder(ctx.models.path("text_encoders", name), device=where, dtype=ctx.dtype)
                         for name in (clip_name1, clip_name2))
        return (sdxl_clip(first, second),)


@register
class ControlNetLoader(Node):
    """Load a ControlNet (SD 1.x/2.x or SDXL; original or diffusers layout)."""

    category = "loaders"
    inputs = [ModelFile("control_net_name", "controlnet", tooltip="a ControlNet file in models/controlnet")]
    outputs = [Output("CONTROL_NET", T.CONTROL_NET, "the ControlNet, for ControlNetApply")]

    def run(self, ctx, control_net_name):
        from nodes.models.controlnet import load_controlnet

        return (load_controlnet(ctx.models.path("controlnet", control_net_name), device=ctx.device, dtype=ctx.dtype),)


@register
class DiffControlNetLoader(Node):
    """Load a "difference" ControlNet: its trunk is stored relative to the model it was made from."""

    category = "loaders"
    inputs = [Link("model", T.MODEL, tooltip="the model the ControlNet's differences are relative to"),
              ModelFile("control_net_name", "controlnet", tooltip="a difference ControlNet in models/controlnet")]
    outputs = [Output("CONTROL_NET", T.CONTROL_NET, "the ControlNet, for ControlNetApply")]

    def run(self, ctx, model, control_net_name):
        from nodes.models.controlnet import load_diff_controlnet

        return (load_diff_controlnet(ctx.models.path("controlnet", control_net_name), model.unet, device=ctx.device,
                                     dtype=ctx.dtype),)


@register
class CLIPVisionLoader(Node):
    """Load a CLIP image encoder (ViT-L/14, ViT-H/14 or ViT-bigG/14; transformers or OpenCLIP layout)
    for CLIPVisionEncode: unCLIP, style models and SDXL revision read images through it."""

    category = "loaders"
    inputs = [ModelFile("clip_name", "clip_vision", tooltip="a CLIP vision .safetensors file in models/clip_vision")]
    outputs = [Output("CLIP_VISION", T.CLIP_VISION, "the CLIP image encoder")]

    def run(self, ctx, clip_name):
        from nodes.models.clip_vision import load_clip_vision

        return (load_clip_vision(ctx.models.path("clip_vision", clip_name), device=ctx.device, dtype=ctx.dtype),)


@register
class unCLIPCheckpointLoader(Node):
    """Load an SD 2.1 unCLIP checkpoint (sd21-unclip-h/-l): the model, text encoder and VAE, plus the
    CLIP image encoder whose embeddings unCLIPConditioning feeds the model."""

    category = "loaders"
    inputs = [ModelFile("ckpt_name", "checkpoints", tooltip="an unCLIP .safetensors/.ckpt file in models/checkpoints")]
    outputs = [*CheckpointLoaderSimple.outputs,
               Output("CLIP_VISION", T.CLIP_VISION, "the checkpoint's CLIP image encoder, for CLIPVisionEncode")]

    def run(self, ctx, ckpt_name):
        from dataclasses import replace

        from nodes.imaging.preview import fit_latent_rgb
        from nodes.models.unclip import load_unclip_checkpoint

        model, clip, vae, vision = load_unclip_checkpoint(ctx.models.path("checkpoints", ckpt_name),
                                                          device=ctx.device, dtype=ctx.dtype)
        model.latent_format = replace(model.latent_format, rgb_factors=fit_latent_rgb(vae, model.latent_format))
        return (model, clip, vae, vision)


@register
class StyleModelLoader(Node):
    """Load a style model (T2I-Adapter style, SD 1.x) for StyleModelApply."""

    category = "loaders"
    inputs = [ModelFile("style_model_name", "style_models", tooltip="a style model file in models/style_models")]
    outputs = [Output("STYLE_MODEL", T.STYLE_MODEL, "the style model")]

    def run(self, ctx, style_model_name):
        from nodes.models.style_model import load_style_model

        return (load_style_model(ctx.models.path("style_models", style_model_name)),)


@register
class GLIGENLoader(Node):
    """Load a GLIGEN model: it lets GLIGENTextBoxApply place objects described in words in boxes."""

    category = "loaders"
    inputs = [ModelFile("gligen_name", "gligen", tooltip="a GLIGEN file (e.g. gligen_sd14_textbox_pruned) in models/gligen")]
    outputs = [Output("GLIGEN", T.GLIGEN, "the GLIGEN model, for GLIGENTextBoxApply")]

    def run(self, ctx, gligen_name):
        from nodes.models.gligen import load_gligen

        return (load_gligen(ctx.models.path("gligen", gligen_name), device=ctx.device, dtype=ctx.dtype),)


@register
class HypernetworkLoader(Node):
    """Add a hypernetwork (the webui's .pt format) to a model: small networks that nudge the keys and
    values of every attention layer. The input model is left as it was."""

    category = "loaders"
    inputs = [Link("model", T.MODEL, tooltip="the model to add the hypernetwork to"),
              ModelFile("hypernetwork_name", "hypernetworks", tooltip="a hypernetwork .pt file in models/hypernetworks"),
              Float("strength", 1.0, min=-10.0, max=10.0, step=0.01,
                    tooltip="how much of the hypernetwork's nudge to add (0: none, negative: the opposite)")]
    outputs = [Output("MODEL", T.MODEL, "the model with the hypernetwork, applied while sampling")]

    def run(self, ctx, model, hypernetwork_name, strength):
        from nodes.models.hypernetwork import load_hypernetwork

        net = load_hypernetwork(ctx.models.path("hypernetworks", hypernetwork_name),
                                device=model.device or "cpu", dtype=model.dtype or ctx.dtype)
        patch = net.attention_patch(strength)
        return (model.patched(attn1_patch=patch, attn2_patch=patch),)
