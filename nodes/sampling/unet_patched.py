"""A diffusers UNet walked block by block in ComfyUI's numbering, so a patched MODEL's UNet patches
apply on the way (FreeU, Deep Shrink, SAG's attention) without changing the shared UNet.

ComfyUI numbers the SD UNet as input blocks (conv_in = 0, then each resnet(+attention) layer and each
downsampler), one middle block, and output blocks (each resnet(+attention) layer, the last of a
level with its upsampler). diffusers groups the same modules by level; `forward_with_patches` calls
them in the same order as `UNet2DConditionModel.forward`, so with no patches the numbers are the same.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch

from nodegraph import UserError

from ..core.values import ConditioningEntry, DiffusionModel, ModelPatches
from .ksampler import UNetCaller


class PatchedUNetCaller(UNetCaller):
    """UNetCaller for a MODEL with UNet patches: the same inputs, the block walk below."""

    wants_options = True  # the denoiser passes cond_or_uncond and sigmas (ComfyUI's transformer_options)

    def __init__(self, model: DiffusionModel):
        super().__init__(model)
        self.patches = model.patches

    def __call__(self, x_in: torch.Tensor, timestep: torch.Tensor, context: torch.Tensor,
                 entries: Sequence[tuple[ConditioningEntry, int]], latent_hw: tuple[int, int],
                 options: dict[str, Any] | None = None) -> torch.Tensor:
        dtype = self.dtype or x_in.dtype
        added = None
        if self.text_time:
            added = self.added_conditioning(entries, latent_hw, dtype, x_in.device, self.unet)
        if any(entry.extras.get("control") is not None for entry, _n in entries):
            raise UserError("a ControlNet cannot yet be combined with UNet patches (FreeU, SAG, Deep Shrink) "
                            "here: apply the patch or the ControlNet, not both")
        opts = dict(options or {})
        with attn1_replaced(self.unet, self.patches, opts):
            out = forward_with_patches(self.unet, x_in.to(dtype), timestep.float(), context.to(x_in.device, dtype),
                                       added, self.patches, opts)
        return out.float()


def _layers(block) -> list[tuple[Any, Any]]:
    """(resnet, attention or None) pairs of a diffusers down/mid/up block."""
    attentions = getattr(block, "attentions", None)
    if attentions is None:
        return [(r, None) for r in block.resnets]
    return list(zip(block.resnets, attentions, strict=False))


def transformer_map(unet) -> dict[tuple[str, int], Any]:
    """ComfyUI's (block, number) → the diffusers Transformer2DModel at that place."""
    found: dict[tuple[str, int], Any] = {}
    n = 0
    for down in unet.down_blocks:
        for _, attn in _layers(down):
            n += 1
            if attn is not None:
                found[("input", n)] = attn
        if getattr(down, "downsamplers", None) is not None:
            n += 1
    mid_attn = getattr(unet.mid_block, "attentions", None)
    if mid_attn:
        found[("middle", 0)] = mid_attn[0]
    n = 0
    for up in unet.up_blocks:
        for _, attn in _layers(up):
            if attn is not None:
                found[("output", n)] = attn
            n += 1
    return found


class _ReplacedSelfAttention:
    """An attention processor that hands (q, k, v) to a patch function (ComfyUI's attn1 replace)."""

    def __init__(self, fn, options: dict[str, Any]):
        self.fn, self.options = fn, options

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs):
        if hidden_states.ndim != 3 or attn.group_norm is not None or attn.spatial_norm is not None:
            raise UserError("this attention patch supports SD's transformer self-attention only")
        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        q, k, v = attn.to_q(hidden_states), attn.to_k(context), attn.to_v(context)  # [B, N, inner]
        out = self.fn(q, k, v, {**self.options, "n_heads": attn.heads, "attn_precision": None})
        out = attn.to_out[1](attn.to_out[0](out))
        if attn.residual_connection:
            out = out + hidden_states
        return out / attn.rescale_output_factor


@contextmanager
def attn1_replaced(unet, patches: ModelPatches, options: dict[str, Any]) -> Iterator[None]:
    """Swap in the self-attention replacements for one call; the UNet's own processors come back after."""
    if not patches.attn1_replace:
        yield
        return
    places = transformer_map(unet)
    swapped = []
    try:
        for (block, number, index), fn in patches.attn1_replace:
            transformer = places.get((block, number))
            if transformer is None or index >= len(transformer.transformer_blocks):
                raise UserError(f"this UNet has no transformer {index} in its {block} block {number}")
            attn = transformer.transformer_blocks[index].attn1
            swapped.append((attn, attn.processor))
            attn.set_processor(_ReplacedSelfAttention(fn, options))
        yield
    finally:
        for attn, processor in reversed(swapped):
            attn.set_processor(processor)


def forward_with_patches(unet, sample: torch.Tensor, timestep: torch.Tensor, context: torch.Tensor,
                         added_cond_kwargs: dict | None, patches: ModelPatches, options: dict[str, Any]) -> torch.Tensor:
    """UNet2DConditionModel.forward, module by module, with ComfyUI's block patches applied."""
    # 1. Time embedding (plus SDXL's pooled-text/size embedding), as diffusers computes it.
    if unet.config.center_input_sample:
        sample = 2 * sample - 1.0
    emb = unet.time_embedding(unet.get_time_embed(sample=sample, timestep=timestep), None)
    class_emb = unet.get_class_embed(sample=sample, class_labels=None)
    if class_emb is not None:
        emb = emb + class_emb
    aug = unet.get_aug_embed(emb=emb, encoder_hidden_states=context, added_cond_kwargs=added_cond_kwargs or {})
    if aug is not None:
        emb = emb + aug
    if unet.time_embed_act is not None:
        emb = unet.time_embed_act(emb)
    context = unet.process_encoder_hidden_states(encoder_hidden_states=context, added_cond_kwargs=added_cond_kwargs)

    def attend(attn, h):
        return h if attn is None else attn(h, encoder_hidden_states=context, return_dict=False)[0]

    # 2. Input blocks: after each, its patches, the skip saved, then the after-skip patches.
    skips: list[torch.Tensor] = []

    def input_block_done(h: torch.Tensor, number: int) -> torch.Tensor:
        options["block"] = ("input", number)
        for p in patches.input_block:
            h = p(h, options)
        skips.append(h)
        for p in patches.input_block_after_skip:
            h = p(h, options)
        return h

    h = input_block_done(unet.conv_in(sample), 0)  # [B, C0, h, w]
    number = 0
    for down in unet.down_blocks:
        for resnet, attn in _layers(down):
            number += 1
            h = input_block_done(attend(attn, resnet(h, emb)), number)
        if getattr(down, "downsamplers", None) is not None:
            for downsampler in down.downsamplers:
                h = downsampler(h)
            number += 1
            h = input_block_done(h, number)

    # 3. Middle block.
    options["block"] = ("middle", 0)
    mid = unet.mid_block
    if mid is not None:
        h = mid.resnets[0](h, emb)
        for attn, resnet in zip(getattr(mid, "attentions", None) or [None] * (len(mid.resnets) - 1), mid.resnets[1:],
                                strict=True):
            h = resnet(attend(attn, h), emb)

    # 4. Output blocks: patches see h and its skip before they are joined; a level's last block
    # upsamples to the size of the next skip (which Deep Shrink may have changed).
    number = 0
    for up in unet.up_blocks:
        layers = _layers(up)
        for j, (resnet, attn) in enumerate(layers):
            options["block"] = ("output", number)
            skip = skips.pop()
            for p in patches.output_block:
                h, skip = p(h, skip, options)
            h = attend(attn, resnet(torch.cat([h, skip], dim=1), emb))
            if j == len(layers) - 1 and getattr(up, "upsamplers", None) is not None:
                size = tuple(skips[-1].shape[-2:]) if skips else None
                natural = (h.shape[-2] * 2, h.shape[-1] * 2)
                for upsampler in up.upsamplers:
                    h = upsampler(h, None if size in (None, natural) else size)
            number += 1

    # 5. Out.
    if unet.conv_norm_out is not None:
        h = unet.conv_act(unet.conv_norm_out(h))
    return unet.conv_out(h)
