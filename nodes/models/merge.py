"""Model merging as ComfyUI does it: every weight w = w1 · strength_model + w2 · strength_patch,
computed in float32 and cast back to w1's dtype, into a new module (the inputs stay untouched).

ModelMergeSimple(ratio): w1·ratio + w2·(1 − ratio); Add: w1 + w2; Subtract(m): (w1 − w2)·m;
ModelMergeBlocks: the ratio of the UNet block a weight belongs to (input, middle, output; other
weights take the input ratio, as ComfyUI's first argument). CLIP merges skip position ids and
logit scale.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch

from .errors import CheckpointError

# (strength_model, strength_patch) for a weight name.
Strengths = Callable[[str], tuple[float, float]]


def merge_modules(first: torch.nn.Module, second: torch.nn.Module, strengths: Strengths,
                  skip: Callable[[str], bool] = lambda name: False) -> torch.nn.Module:
    """A copy of `first` whose floating-point parameters are merged with `second`'s of the same name
    and shape; what `second` lacks (or `skip` names) is shared with `first` unchanged."""
    theirs = dict(second.named_parameters())
    memo = {id(t): t for t in (*first.parameters(), *first.buffers())}
    merged = copy.deepcopy(first, memo)
    matched = 0
    with torch.no_grad():
        for name, weight in list(merged.named_parameters()):
            other = theirs.get(name)
            if other is None or skip(name) or other.shape != weight.shape or not weight.is_floating_point():
                continue
            keep, add = strengths(name)
            value = weight.float() * keep + other.to(weight.device).float() * add
            owner, _, leaf = name.rpartition(".")
            setattr(merged.get_submodule(owner) if owner else merged, leaf,
                    torch.nn.Parameter(value.to(weight.dtype), requires_grad=False))
            matched += 1
    if matched == 0:
        raise CheckpointError("the two models share no weights of the same shape: they are of different families")
    return merged


def block_of(ldm_names: dict[str, str], name: str) -> str:
    """"input", "middle", "output" or "" for a diffusers UNet weight name, by its LDM block."""
    module = name.rsplit(".", 1)[0]
    ldm = ldm_names.get(module, "")
    for prefix, block in (("input_blocks", "input"), ("middle_block", "middle"), ("output_blocks", "output")):
        if ldm.startswith(prefix):
            return block
    return ""


def clip_skip(name: str) -> bool:
    return name.endswith(("position_ids", "logit_scale"))
