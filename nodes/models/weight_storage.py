"""Weights stored in a low-precision dtype (fp8), computed at the run's precision: UNETLoader's weight_dtype.

ComfyUI's `fp8_e4m3fn` / `fp8_e5m2` keep the diffusion model's weights in that 8-bit float type and cast
each layer's weight to the compute dtype when the layer runs ("manual cast"); `fp8_e4m3fn_fast` also
lets GPUs with fp8 matrix units multiply in fp8. sdgraph does the first everywhere (on CPU too): every
Linear and Conv2d weight is stored in the fp8 dtype (half of fp16's memory, a quarter of fp32's) and
cast per layer on use; biases, norms and embeddings stay at the run precision. `fast` is the same
storage (no fp8 matrix multiply here), so its pictures equal plain `fp8_e4m3fn`'s.

The conversion changes each layer's class to a cast-on-use subclass of Linear/Conv2d, so LoRA patching
(nodes.models.lora, which adds its delta in fp32 and rounds back to the weight's dtype, as ComfyUI
does for fp8 weights), merging and copying keep working on it.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

STORAGE_DTYPES = {
    "default": None,
    "fp8_e4m3fn": torch.float8_e4m3fn,
    "fp8_e4m3fn_fast": torch.float8_e4m3fn,
    "fp8_e5m2": torch.float8_e5m2,
}


def _cast(t: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor | None:
    return None if t is None else t.to(dtype=like.dtype, device=like.device)


class CastLinear(torch.nn.Linear):
    """A Linear whose weight is stored in another dtype and cast to the input's per call."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, _cast(self.weight, x), _cast(self.bias, x))


class CastConv2d(torch.nn.Conv2d):
    """A Conv2d whose weight is stored in another dtype and cast to the input's per call."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, _cast(self.weight, x), _cast(self.bias, x))


def store_weights_as(module: torch.nn.Module, dtype: Any) -> torch.nn.Module:
    """Store every Linear/Conv2d weight of `module` as `dtype` (in place), computing at the input's dtype.

    Returns the module. `dtype` None leaves it as it is.
    """
    if dtype is None:
        return module
    with torch.no_grad():
        for sub in module.modules():
            if type(sub) in (torch.nn.Linear, CastLinear):
                sub.__class__ = CastLinear
            elif type(sub) in (torch.nn.Conv2d, CastConv2d):
                sub.__class__ = CastConv2d
            else:
                continue
            sub.weight = torch.nn.Parameter(sub.weight.detach().to(dtype), requires_grad=False)
    return module
