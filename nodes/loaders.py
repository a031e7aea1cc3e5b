"""Loader nodes: checkpoints and VAEs from the model folders."""

from __future__ import annotations

from nodegraph import Node, Output, register
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
