"""Checkpoint loading: detection, key conversion, the sdgraph single-file format, tiny test models.

Importing this package is cheap (no torch, diffusers or transformers); the public functions are
resolved lazily from their modules on first use, so node declarations can name them freely.

Public API:
    load_checkpoint(path, *, device="cpu", dtype=torch.float32) -> (DiffusionModel, ClipModel, VaeModel)
    load_vae(path, *, device="cpu", dtype=torch.float32) -> VaeModel
    save_checkpoint(path, unet, vae, text_encoder, *, prediction_type="epsilon",
                    latent_scale_factor=0.18215, clip_pad_id=49407, dtype=None)
    CheckpointError
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from .errors import CheckpointError

_LAZY = {
    "load_checkpoint": "loader",
    "load_vae": "loader",
    "save_checkpoint": "sdgraph_format",
    "CheckpointInfo": "detect",
    "detect_checkpoint": "detect",
    "clip_tokenizer": "configs",
}

__all__ = ["CheckpointError", *_LAZY]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f".{module}", __name__), name)
