"""Opening checkpoint files: safetensors (memory-mapped, lazily) and weights-only .ckpt/.pt.

Every failure becomes a one-line CheckpointError naming the file.
"""

from __future__ import annotations

import pickle
import zipfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .errors import CheckpointError

SAFETENSORS_SUFFIXES = (".safetensors", ".sft")
PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")


class TensorFile:
    """Names, shapes and metadata of a weights file, with tensors read on demand.

    safetensors files are opened with `safe_open` (memory-mapped; a tensor is only read when asked
    for). Pickle checkpoints are loaded once with `torch.load(weights_only=True, mmap=True)`.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.name = self.path.name
        self.metadata: dict[str, str] = {}
        self._handle: Any = None
        self._tensors: dict[str, Any] | None = None
        if not self.path.exists():
            raise CheckpointError(f'"{self.path}" not found')
        if self.path.is_dir():
            raise CheckpointError(f'"{self.path}" is a folder without model_index.json, not a model file')
        suffix = self.path.suffix.lower()
        if suffix in SAFETENSORS_SUFFIXES:
            self._open_safetensors()
        elif suffix in PICKLE_SUFFIXES:
            self._open_pickle()
        else:
            raise CheckpointError(
                f'"{self.name}": unsupported file type "{suffix}" (expected .safetensors, or .ckpt/.pt)'
            )

    # -- opening
    def _open_safetensors(self) -> None:
        from safetensors import safe_open

        try:
            self._handle = safe_open(str(self.path), framework="pt", device="cpu")
            self.metadata = dict(self._handle.metadata() or {})
            self.shapes = {k: tuple(self._handle.get_slice(k).get_shape()) for k in self._handle.keys()}
        except Exception as e:  # safetensors raises SafetensorError / OSError / ValueError
            raise CheckpointError(
                f'"{self.name}" is not a readable .safetensors file (corrupt or truncated?): {_one_line(e)}'
            ) from None

    def _open_pickle(self) -> None:
        import torch

        try:
            try:
                obj = torch.load(str(self.path), map_location="cpu", weights_only=True, mmap=True)
            except RuntimeError as e:
                if "mmap" not in str(e):
                    raise
                obj = torch.load(str(self.path), map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as e:
            if "Unsupported global" in str(e) or "Unsupported class" in str(e):  # code to run, not data
                raise CheckpointError(
                    f'"{self.name}" contains pickled Python code, which sdgraph never runs (weights-only '
                    "loading refused it); use a .safetensors version of this model, or convert it with a tool you trust"
                ) from None
            raise CheckpointError(
                f'"{self.name}" is not a readable checkpoint (corrupt?): {_one_line(e)}'
            ) from None
        except (zipfile.BadZipFile, EOFError, RuntimeError, OSError, ValueError) as e:
            raise CheckpointError(
                f'"{self.name}" is not a readable checkpoint (corrupt or truncated?): {_one_line(e)}'
            ) from None
        if isinstance(obj, dict) and isinstance(obj.get("sdgraph.config"), str):
            self.metadata = {"sdgraph.config": obj["sdgraph.config"]}  # an sdgraph model saved as .ckpt
        if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
            obj = obj["state_dict"]
        if not isinstance(obj, dict):
            raise CheckpointError(f'"{self.name}" holds a {type(obj).__name__}, not a state dict of tensors')
        self._tensors = {k: v for k, v in obj.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
        self.shapes = {k: tuple(v.shape) for k, v in self._tensors.items()}

    # -- reading
    def get(self, name: str) -> Any:
        if self._tensors is not None:
            return self._tensors[name]
        try:
            return self._handle.get_tensor(name)
        except Exception as e:
            raise CheckpointError(
                f'"{self.name}": cannot read tensor {name} (corrupt file?): {_one_line(e)}'
            ) from None

    def read(self, names: Iterable[str], *, dtype: Any = None, device: Any = "cpu") -> dict[str, Any]:
        """Read tensors, casting floating-point ones to `dtype` and moving all to `device` one by one."""
        out = {}
        for n in names:
            t = self.get(n)
            if dtype is not None and t.is_floating_point():
                t = t.to(device=device, dtype=dtype)
            else:
                t = t.to(device=device)
            out[n] = t
        return out

    def close(self) -> None:
        self._handle = None
        self._tensors = None

    def __enter__(self) -> TensorFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return (text[0] if text else type(e).__name__)[:200]
