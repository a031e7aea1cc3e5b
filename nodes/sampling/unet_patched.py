"""A diffusers UNet walked block by block in ComfyUI's numbering, so a patched MODEL's UNet patches
apply on the way (FreeU, Deep Shrink, SAG's attention, hypernetworks) without changing the shared
UNet, together with what the conditioning brings (ControlNet residuals, GLIGEN's boxes).

ComfyUI numbers the SD UNet as input blocks (conv_in = 0, then each resnet(+attention) layer and each
downsampler), one middle block, and output blocks (each resnet(+attention) layer, the last of a
level with its upsampler). diffusers groups the same modules by level; `forward_with_patches` calls
them in the same order as `UNet2DConditionModel.forward`, so with no patches the numbers are the same.

Inside each transformer block the order is ComfyUI's: attn1_patch (on self-attention's inputs),
self-attention (or its attn1_replace), the residual, middle_patch (GLIGEN), attn2_patch, cross-
attention. The attention patches wrap each attention's current processor for one call (whatever it
is: the default, a replacement, an observer's), and the UNet's own processors come back after.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch

from nodegraph import UserError

from ..core.values import ConditioningEntry, DiffusionModel, ModelPatches
from .ksampler import UNetCaller

log = logging.getLogger(__name__)


class PatchedUNetCaller(UNetCaller):
    """UNetCaller for a MODEL with UNet patches (or a conditioning with GLIGEN boxes): the same
    inputs, the block walk below."""

    wants_options = True  # the denoiser passes cond_or_uncond and sigmas (ComfyUI's transformer_options)

    def __init__(self, model: DiffusionModel):
        super().__init__(model)
        self.patches = model.patches
        self._widths: dict[tuple[str, int], int] | None = None
        # DeepCache's features live here: this caller is built per sampling run (deepcache.py).
        self.deep_cache = None
        if model.patches.deep_cache is not None:
            from .deepcache import DeepCacheRun

            self.deep_cache = DeepCacheRun(model.patches.deep_cache)

    def __call__(self, x_in: torch.Tensor, timestep: torch.Tensor, context: torch.Tensor,
                 entries: Sequence[tuple[ConditioningEntry, int]], latent_hw: tuple[int, int],
                 options: dict[str, Any] | None = None) -> torch.Tensor:
        dtype = self.dtype or x_in.dtype
        opts = dict(options or {})
        # 1. What plain calls get too (UNetCaller.unet_inputs); ControlNets never see the patches.
        kwargs = self.unet_inputs(x_in, timestep, context, entries, latent_hw, options, dtype)
        added = kwargs.get("added_cond_kwargs")
        residuals = None
        if "down_block_additional_residuals" in kwargs:
            residuals = (kwargs["down_block_additional_residuals"], kwargs["mid_block_additional_residual"])
        # 2. GLIGEN's middle patch for the entries with boxes, sized to this call's (crop of the) latent.
        middle = self.gligen_patch(entries, tuple(x_in.shape[-2:]), x_in.device)
        x_unet = self.unet_x(x_in, entries, latent_hw, options)
        # 3. DeepCache: a full walk that keeps its deep features, or a shallow one that reuses them.
        plan, key = None, None
        if self.deep_cache is not None:
            from .deepcache import layout_key

            key = layout_key(x_in, entries, opts)
            plan = self.deep_cache.plan(key, float(opts.get("sigmas", timestep).reshape(-1)[0]))
        with attn1_replaced(self.unet, self.patches, opts), attention_inputs_patched(self.unet, self.patches, opts), \
                middle_patched(self.unet, middle, opts):
            out = forward_with_patches(self.unet, x_unet.to(dtype), timestep.float(), context.to(x_in.device, dtype),
                                       added, self.patches, opts, control=residuals, middle=middle is not None,
                                       class_labels=kwargs.get("class_labels"), cache=plan)
        if plan is not None:
            self.deep_cache.done(key, plan)
        return out.float()

    def gligen_patch(self, entries: Sequence[tuple[ConditioningEntry, int]], latent_hw: tuple[int, int],
                     device: Any) -> Callable | None:
        if not any(entry.extras.get("gligen") is not None for entry, _n in entries):
            return None
        from ..models.gligen import middle_patch

        if self._widths is None:
            self._widths = {place: int(t.transformer_blocks[0].attn1.to_q.in_features)
                            for place, t in transformer_map(self.unet).items()}
        return middle_patch(entries, latent_hw, device, self._widths)


def has_gligen(conds: dict[str, Sequence[ConditioningEntry] | None] | None) -> bool:
    """Does any conditioning carry GLIGEN boxes (which only the block walk applies)?"""
    return any(e.extras.get("gligen") is not None for side in (conds or {}).values() if side for e in side)


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


class _PatchedInputs:
    """An attention processor around another: ComfyUI's attn1_patch / attn2_patch functions
    (q_in, k_in, v_in, options) -> (q_in, k_in, v_in) change what the projections read, then the
    wrapped processor runs as usual. A changed key or value input reaches to_k / to_v through a
    forward pre-hook held only for this call, so any processor composes (k and v may now differ)."""

    def __init__(self, inner, fns: Sequence[Callable], options: dict[str, Any], place: tuple[str, int], index: int):
        self.inner, self.fns, self.options, self.place, self.index = inner, fns, options, place, index

    def __call__(self, attn, hidden_states, *args, **kwargs):
        encoder_hidden_states = kwargs.get("encoder_hidden_states", args[0] if args else None)
        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        options = {**self.options, "block": self.place, "block_index": self.index, "n_heads": attn.heads,
                   "dim_head": attn.inner_dim // attn.heads}
        q_in, k_in, v_in = hidden_states, context, context
        for fn in self.fns:
            q_in, k_in, v_in = fn(q_in, k_in, v_in, options)
        hooks = []
        try:
            for layer, given in ((attn.to_k, k_in), (attn.to_v, v_in)):
                if given is not context:
                    hooks.append(layer.register_forward_pre_hook(lambda _m, _a, t=given: (t,)))
            return self.inner(attn, q_in, *args, **kwargs)
        finally:
            for hook in hooks:
                hook.remove()


@contextmanager
def attention_inputs_patched(unet, patches: ModelPatches, options: dict[str, Any]) -> Iterator[None]:
    """Every transformer block's self-attention (attn1_patch) and cross-attention (attn2_patch)
    gets its input patches for one call, around the processor it has now."""
    if not (patches.attn1_patch or patches.attn2_patch):
        yield
        return
    swapped = []
    try:
        for place, transformer in transformer_map(unet).items():
            for index, block in enumerate(transformer.transformer_blocks):
                for attn, fns in ((block.attn1, patches.attn1_patch), (getattr(block, "attn2", None), patches.attn2_patch)):
                    if attn is None or not fns:
                        continue
                    swapped.append((attn, attn.processor))
                    attn.set_processor(_PatchedInputs(attn.processor, fns, options, place, index))
        yield
    finally:
        for attn, processor in reversed(swapped):
            attn.set_processor(processor)


class _MiddleCall:
    """Stands in for a transformer block's GLIGEN fuser (diffusers calls `block.fuser(x, objs)` between
    self- and cross-attention when the block gets gligen kwargs): ComfyUI's middle_patch there."""

    def __init__(self, patch: Callable, options: dict[str, Any], place: tuple[str, int], transformer_index: int,
                 index: int):
        self.patch, self.options = patch, options
        self.where = {"block": place, "transformer_index": transformer_index, "block_index": index}

    def __call__(self, x: torch.Tensor, _objs: Any) -> torch.Tensor:
        return self.patch(x, {**self.options, **self.where})


@contextmanager
def middle_patched(unet, patch: Callable | None, options: dict[str, Any]) -> Iterator[None]:
    """ComfyUI's middle_patch (x, options) -> x in every transformer block for one call, told its
    transformer by options["block"] (and "transformer_index": the transformers counted in the
    order they run). The walk must pass MIDDLE_KWARGS to the transformers for it to act."""
    if patch is None:
        yield
        return
    placed = []
    try:
        for transformer_index, (place, transformer) in enumerate(transformer_map(unet).items()):
            for index, block in enumerate(transformer.transformer_blocks):
                if hasattr(block, "fuser"):
                    raise UserError("this UNet has GLIGEN layers of its own; load a plain SD UNet to use a GLIGEN model")
                block.fuser = _MiddleCall(patch, options, place, transformer_index, index)
                placed.append(block)
        yield
    finally:
        for block in placed:
            del block.fuser


MIDDLE_KWARGS = {"gligen": {"objs": None}}  # makes diffusers' transformer blocks call `fuser` (see _MiddleCall)


def _add_control(h: torch.Tensor, residual: torch.Tensor | None, where: str) -> torch.Tensor:
    """h + a ControlNet residual; one of another size (Deep Shrink resized h) is left out with a
    warning, as ComfyUI's apply_control does."""
    if residual is None:
        return h
    if residual.shape != h.shape:
        log.warning("ControlNet residual for the %s not applied: it is %s, the UNet's features %s",
                    where, tuple(residual.shape), tuple(h.shape))
        return h
    return h + residual


def forward_with_patches(unet, sample: torch.Tensor, timestep: torch.Tensor, context: torch.Tensor,
                         added_cond_kwargs: dict | None, patches: ModelPatches, options: dict[str, Any], *,
                         control: tuple[Sequence[torch.Tensor], torch.Tensor] | None = None, middle: bool = False,
                         class_labels: torch.Tensor | None = None, cache: Any = None) -> torch.Tensor:
    """UNet2DConditionModel.forward, module by module, with ComfyUI's block patches applied.

    `control`: ControlNet (down residuals, mid residual); as ComfyUI, each skip takes its residual
    when the output blocks pop it (before the output-block patches see it), the middle block's output
    the mid one. `middle`: the transformers get MIDDLE_KWARGS (see middle_patched).
    `class_labels`: unCLIP's image embedding, for UNets with a class embedding.
    `cache`: a deepcache.CachePlan: with `reuse`, only input blocks 0..depth and the output blocks
    from n_output − depth − 1 on run, that block starting from `reuse`; without, the features
    entering that block go to `cache.keep`."""
    # 1. Time embedding (plus SDXL's pooled-text/size embedding), as diffusers computes it.
    if unet.config.center_input_sample:
        sample = 2 * sample - 1.0
    emb = unet.time_embedding(unet.get_time_embed(sample=sample, timestep=timestep), None)
    class_emb = unet.get_class_embed(sample=sample, class_labels=class_labels)
    if class_emb is not None:
        emb = emb + class_emb
    aug = unet.get_aug_embed(emb=emb, encoder_hidden_states=context, added_cond_kwargs=added_cond_kwargs or {})
    if aug is not None:
        emb = emb + aug
    if unet.time_embed_act is not None:
        emb = unet.time_embed_act(emb)
    context = unet.process_encoder_hidden_states(encoder_hidden_states=context, added_cond_kwargs=added_cond_kwargs)

    transformer_kwargs = MIDDLE_KWARGS if middle else None
    down_residuals = list(control[0]) if control is not None else []
    mid_residual = control[1] if control is not None else None

    def attend(attn, h):
        if attn is None:
            return h
        return attn(h, encoder_hidden_states=context, cross_attention_kwargs=transformer_kwargs, return_dict=False)[0]

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

    shallow = cache is not None and cache.reuse is not None  # DeepCache: the deep blocks do not run

    def input_blocks() -> torch.Tensor:
        h = input_block_done(unet.conv_in(sample), 0)  # [B, C0, h, w]
        number = 0
        for down in unet.down_blocks:
            for resnet, attn in _layers(down):
                if shallow and number == cache.depth:
                    return h
                number += 1
                h = input_block_done(attend(attn, resnet(h, emb)), number)
            if getattr(down, "downsamplers", None) is not None:
                if shallow and number == cache.depth:
                    return h
                for downsampler in down.downsamplers:
                    h = downsampler(h)
                number += 1
                h = input_block_done(h, number)
        return h

    h = input_blocks()

    # 3. Middle block.
    options["block"] = ("middle", 0)
    mid = unet.mid_block
    if mid is not None and not shallow:
        h = mid.resnets[0](h, emb)
        for attn, resnet in zip(getattr(mid, "attentions", None) or [None] * (len(mid.resnets) - 1), mid.resnets[1:],
                                strict=True):
            h = resnet(attend(attn, h), emb)
    h = _add_control(h, mid_residual, "middle block") if not shallow else h
    cached_at = None if cache is None else sum(len(_layers(up)) for up in unet.up_blocks) - cache.depth - 1

    # 4. Output blocks: patches see h and its skip before they are joined; a level's last block
    # upsamples to the size of the next skip (which Deep Shrink may have changed).
    number = 0
    for up in unet.up_blocks:
        layers = _layers(up)
        for j, (resnet, attn) in enumerate(layers):
            if shallow and number < cached_at:  # a deep block: the cache stands in for it
                if down_residuals:
                    down_residuals.pop()
                number += 1
                continue
            if number == cached_at:
                if shallow:
                    h = cache.reuse
                else:
                    cache.keep(h)
            options["block"] = ("output", number)
            skip = skips.pop()
            if down_residuals:
                skip = _add_control(skip, down_residuals.pop(), f"skip of output block {number}")
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
