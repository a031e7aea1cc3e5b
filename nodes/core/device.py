"""Device and precision policy: the `--device` / `--dtype` settings turned into torch objects.

`--dtype auto` (the CLI's and the editor's default) picks, per device:
- CUDA: float16 for the UNet and text encoders (as ComfyUI does for SD 1.x/2.x/SDXL: more mantissa
  than bfloat16 at the same speed); a VAE that overflows in float16 (SDXL's, `force_upcast`) runs
  in bfloat16 where the GPU has it, float32 otherwise (`vae_dtype`).
- CPU: bfloat16 when the CPU multiplies bf16 in hardware (AVX512-BF16 or AMX: about twice fp32's
  matrix throughput), float32 elsewhere (emulated bf16 is slower than fp32).
- MPS and anything else: float32.
`--dtype fp32` always means float32 everywhere: it reproduces ComfyUI's CPU images.
"""

from __future__ import annotations

from pathlib import Path

from nodegraph import UserError

DTYPES = ("fp32", "bf16", "fp16")
# /proc/cpuinfo flags of CPUs with bf16 matrix instructions (AVX512-BF16: Cooper Lake, Zen 4+; AMX: Sapphire Rapids+).
NATIVE_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})
CPUINFO = Path("/proc/cpuinfo")


def cpu_flags(cpuinfo: Path = CPUINFO) -> frozenset[str] | None:
    """The first CPU's feature flags from /proc/cpuinfo, or None where there is no such file (macOS, Windows)."""
    try:
        text = cpuinfo.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() in ("flags", "Features"):  # x86 / ARM spelling
            return frozenset(value.split())
    return frozenset()


def cpu_has_native_bf16(cpuinfo: Path = CPUINFO) -> bool:
    """True when this CPU computes bf16 matrix products in hardware (so bf16 is faster than fp32 there)."""
    flags = cpu_flags(cpuinfo)
    if flags is not None:
        return bool(flags & NATIVE_BF16_FLAGS) or "bf16" in flags  # "bf16": ARMv8.6 FEAT_BF16 (Graviton 3, ...)
    import torch  # no /proc/cpuinfo: ask torch whether it could set up AMX tiles

    try:
        return bool(torch._C._cpu._init_amx())
    except Exception:  # noqa: BLE001 - a private torch call: absent means "don't know", i.e. fp32
        return False


def auto_dtype(device):
    """The dtype `--dtype auto` means on `device` (a torch.device)."""
    import torch

    if device.type == "cuda":
        return torch.float16
    if device.type == "cpu" and cpu_has_native_bf16():
        return torch.bfloat16
    return torch.float32


def vae_dtype(device, dtype, needs_upcast: bool):
    """The dtype a VAE runs in: `dtype`, unless it is float16 and the VAE overflows there (SDXL's VAE
    gives NaN/inf in fp16): then bfloat16 (fp32's range) where the device supports it, else float32."""
    import torch

    if dtype != torch.float16 or not needs_upcast:
        return dtype
    device = torch.device(device)
    if device.type == "cuda" and torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


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
        return device, auto_dtype(device)
    if precision not in DTYPES:
        raise UserError(f"--dtype {precision!r}: expected auto, {', '.join(DTYPES)}")
    return device, {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]

