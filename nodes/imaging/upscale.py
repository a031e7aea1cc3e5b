"""Upscale models (ESRGAN, Real-ESRGAN, SwinIR, HAT, DAT, …) through spandrel, as ComfyUI runs them.

    model = load_upscale_model(path)                 # a spandrel ImageModelDescriptor, on the CPU
    image = upscale(model, image, device, progress=…, check=…)

Loading reads the file weights-only (a pickle is never run) and lets spandrel detect the
architecture; every failure is a one-line CheckpointError naming the file. Upscaling follows
ComfyUI's ImageUpscaleWithModel: the model runs in float32 on the device, in tiles of 512 pixels
overlapping by 32 (blended as ComfyUI's tiled_scale blends them), the tile halved after running out
of memory down to 128, the output clamped to 0..1 and left on the CPU; the model goes back to the CPU
afterwards so it does not hold the device's memory.

spandrel declares torchvision as a dependency but only its LaMa and RestoreFormer architectures use
it (for rotate/normalize), and its registry imports every architecture. sdgraph does not install
torchvision, so while spandrel is imported a placeholder stands in for it (removed right after, so
nothing else sees it); a file of those two architectures then gets a clear error instead.
"""

from __future__ import annotations

import enum
import logging
import sys
import threading
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from nodegraph import UserError
from nodegraph.memory import is_out_of_memory, release_accelerator_memory

from ..models.errors import CheckpointError
from ..models.files import SAFETENSORS_SUFFIXES
from .vae import tiled_map

log = logging.getLogger("sdgraph.upscale")

TILE, OVERLAP, MIN_TILE = 512, 32, 128  # ComfyUI's ImageUpscaleWithModel
NEEDS_TORCHVISION = ("LaMa", "RestoreFormer")
_IMPORT_LOCK = threading.Lock()


# -- spandrel without torchvision --------------------------------------------------------------

def _torchvision_placeholder() -> dict[str, types.ModuleType]:
    """Modules named like torchvision's, holding only what spandrel's architectures import at load
    time; calling any of it says torchvision is missing."""

    def missing(*_args: Any, **_kwargs: Any) -> Any:
        raise UserError("this upscale model's architecture needs torchvision, which sdgraph does not install")

    functional = types.ModuleType("torchvision.transforms.functional")
    functional.InterpolationMode = enum.Enum("InterpolationMode", "NEAREST BILINEAR BICUBIC")
    functional.rotate = functional.normalize = missing
    transforms = types.ModuleType("torchvision.transforms")
    transforms.functional = functional
    root = types.ModuleType("torchvision")
    root.transforms = transforms
    return {"torchvision": root, "torchvision.transforms": transforms, "torchvision.transforms.functional": functional}


def _torchvision_installed() -> bool:
    import importlib.util

    return "torchvision" in sys.modules or importlib.util.find_spec("torchvision") is not None


def spandrel() -> types.ModuleType:
    """Import spandrel (once), standing a placeholder in for torchvision while it imports if needed."""
    with _IMPORT_LOCK:
        if "spandrel" in sys.modules:
            return sys.modules["spandrel"]
        placeholder = {} if _torchvision_installed() else _torchvision_placeholder()
        sys.modules.update(placeholder)
        try:
            import spandrel as module
        except ImportError as exc:
            raise UserError(f"upscale models need the spandrel package ({exc}); install it with "
                            "`pip install --no-deps spandrel einops` (or `make`)") from None
        finally:
            for name, stub in placeholder.items():
                if sys.modules.get(name) is stub:
                    del sys.modules[name]
        return module


# -- loading ----------------------------------------------------------------------------------

def _read_state_dict(path: Path) -> dict[str, Any]:
    """All tensors of a .safetensors file, or a weights-only .pth/.pt/.ckpt/.bin (nested dicts kept,
    so spandrel can find `params_ema`, `state_dict`… inside)."""
    if path.suffix.lower() in SAFETENSORS_SUFFIXES:
        from ..models.files import TensorFile

        with TensorFile(path) as f:
            return f.read(f.shapes)
    if not path.is_file():
        raise CheckpointError(f'"{path}" not found')
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - pickle, zip and torch errors all mean the same to the user
        refused = "Unsupported global" in str(exc)  # torch's weights-only unpickler met code to run
        raise CheckpointError(
            f'"{path.name}" contains pickled Python code, which sdgraph never runs; use a .safetensors version'
            if refused else f'"{path.name}" is not a readable PyTorch model file (corrupt, truncated, or another format)'
        ) from None
    if not isinstance(obj, dict):
        raise CheckpointError(f'"{path.name}" holds a {type(obj).__name__}, not a state dict of tensors')
    return obj


def _one_line(exc: BaseException, limit: int = 300) -> str:
    text = " ".join(line.strip() for line in str(exc).splitlines() if line.strip()) or type(exc).__name__
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _what_it_looks_like(state: dict[str, Any]) -> str:
    from ..models.detect import describe_keys, sniff_other_kind

    names = [k for k, v in state.items() if isinstance(v, torch.Tensor)]
    kind = sniff_other_kind(names)
    if kind is None and any(n.startswith(("model.diffusion_model.", "cond_stage_model.", "conditioner.")) for n in names):
        kind = "a Stable Diffusion checkpoint (put it in models/checkpoints)"
    return f"it looks like {kind}" if kind else describe_keys(names)


def load_upscale_model(path: str | Path) -> Any:
    """A spandrel ImageModelDescriptor (`.model`, `.scale`, `.architecture`…) in eval mode on the CPU.
    Raises CheckpointError, naming the file, for anything that is not a single-image model."""
    path = Path(path)
    sp = spandrel()
    state = sp.canonicalize_state_dict(_read_state_dict(path))
    try:
        model = sp.ModelLoader().load_from_state_dict(state)
    except sp.UnsupportedModelError:
        raise CheckpointError(f'"{path.name}" is not an upscale model that spandrel recognises '
                              f"(ESRGAN, Real-ESRGAN, SwinIR, HAT, DAT, …): {_what_it_looks_like(state)}") from None
    except Exception as exc:  # noqa: BLE001 - a known architecture whose tensors do not fit it
        raise CheckpointError(f'"{path.name}" looks like an upscale model but its tensors do not fit: '
                              f"{_one_line(exc)}") from None
    name = model.architecture.name
    if not isinstance(model, sp.ImageModelDescriptor):
        raise CheckpointError(f'"{path.name}" is a {name} {model.purpose.lower()} model, not a single-image '
                              "upscale model")
    if name in NEEDS_TORCHVISION and not _torchvision_installed():
        raise CheckpointError(f'"{path.name}" is a {name} model, which needs torchvision (not installed with sdgraph)')
    return model.eval()


# -- upscaling --------------------------------------------------------------------------------

def tile_count(height: int, width: int, tile: int, overlap: int) -> int:
    """How many tiles `tiled_map` runs for one image of height × width."""
    count = 1
    for size in (height, width):
        if size > tile:
            count *= len(range(0, size - overlap, tile - overlap))
    return count


def upscale(model: Any, image: torch.Tensor, device: Any, *, tile: int = TILE, overlap: int = OVERLAP,
            progress: Callable[[int, int], None] | None = None,
            check: Callable[[], None] | None = None) -> torch.Tensor:
    """IMAGE [B, H, W, C] → IMAGE [B, H·scale, W·scale, C'] in 0..1 (float32, CPU), in tiles of
    `tile` pixels overlapping by `overlap`; out of memory, again with half the tile, down to 128 pixels
    (then the out-of-memory error is raised)."""
    channels = model.input_channels
    if image.shape[-1] != channels:
        raise UserError(f"the image has {image.shape[-1]} channels; this {model.architecture.name} model "
                        f"takes {channels}")
    pixels = image.movedim(-1, 1).float().cpu()
    model.to(device=device, dtype=torch.float32)
    try:
        while True:
            try:
                out = _tiled(model, pixels, device, tile, overlap, progress, check)
                break
            except Exception as exc:  # noqa: BLE001 - only out-of-memory errors are retried
                if not is_out_of_memory(exc):
                    raise
                release_accelerator_memory()
                if tile // 2 < MIN_TILE:
                    raise  # the executor reports it, releasing its cached models
                tile //= 2
                log.warning("out of memory upscaling; retrying in tiles of %d pixels", tile)
    finally:
        model.to("cpu")
        release_accelerator_memory()
    return out.clamp(0.0, 1.0).movedim(1, -1)


def _tiled(model: Any, pixels: torch.Tensor, device: Any, tile: int, overlap: int,
           progress: Callable[[int, int], None] | None, check: Callable[[], None] | None) -> torch.Tensor:
    total = pixels.shape[0] * tile_count(pixels.shape[2], pixels.shape[3], tile, overlap)
    done = 0

    def run(piece: torch.Tensor) -> torch.Tensor:
        nonlocal done
        out = model(piece.to(device)).float().cpu()
        done += 1
        if progress is not None:
            progress(done, total)
        return out

    with torch.inference_mode():
        return tiled_map(pixels, run, (tile, tile), overlap, model.scale, model.output_channels, check)
