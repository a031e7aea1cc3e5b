"""Device and precision policy: the `--device` / `--dtype` settings turned into torch objects."""

from __future__ import annotations

from nodegraph import UserError


def resolve(device: str = "auto", precision: str = "auto"):
    """(torch.device, torch.dtype) for models, from the settings ('auto' allowed)."""
    import torch

    wanted = device or "auto"
    if wanted == "auto":
        if torch.cuda.is_available():
            wanted = "cuda"
        elif getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            wanted = "mps"
        else:
            wanted = "cpu"
    if wanted == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda was asked for, but this torch build sees no CUDA GPU; use --device cpu")
    if wanted == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise UserError("--device mps was asked for, but MPS is not available here; use --device cpu")
    device = torch.device(wanted)
    precision = precision or "auto"
    if precision == "auto":
        dtype = torch.float16 if device.type == "cuda" else torch.float32
    else:
        dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]
    return device, dtype
