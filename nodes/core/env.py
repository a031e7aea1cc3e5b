"""The Stable Diffusion environment: model folders laid out as ComfyUI lays them out, the input and
output folders, and the device and precision policy.

Built once by the entry point (`main.py`/`cli.py`) and handed to the CLI, the editor and batch
runs; nodes see it only through their typed context (`ctx.models`, `ctx.paths`, `ctx.device`,
`ctx.dtype`). Cheap to import: torch is imported when `device` or `dtype` is first asked for.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from nodegraph import Environment, Folders, Paths

REPO = Path(__file__).resolve().parents[2]

# Folder kinds, laid out as ComfyUI lays them out under models/.
MODEL_KINDS = ("checkpoints", "vae", "loras", "embeddings", "diffusers", "upscale_models", "diffusion_models",
               "text_encoders", "controlnet", "clip_vision", "style_models", "gligen", "hypernetworks")
# Older folder names ComfyUI still reads for a kind (its folder_paths): models/unet, models/clip.
KIND_ALIASES = {"diffusion_models": ("unet",), "text_encoders": ("clip",)}
MODEL_SUFFIXES = (".safetensors", ".sft", ".ckpt", ".pt", ".pth", ".bin")
# A sub-folder holding one of these is one model (diffusers layout), listed by its folder name.
MODEL_MARKERS = {"checkpoints": ("model_index.json",), "vae": ("config.json",), "diffusers": ("model_index.json",),
                 "controlnet": ("config.json",)}
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")


class SDEnvironment(Environment):
    """Model folders (`models_dir/<kind>` plus extra folders per kind), input/output folders, and
    `device`/`dtype` settings ("auto" or a name) resolved to torch objects on first use."""

    def __init__(self, models_dir: str | os.PathLike = REPO / "models", *, input_dir: str | os.PathLike = REPO / "input",
                 output_dir: str | os.PathLike = REPO / "output", device: str = "auto", dtype: str = "auto",
                 compile: str | None = None):
        super().__init__(paths=Paths(Path(input_dir), Path(output_dir)))
        self.device_setting = device
        self.dtype_setting = dtype
        self.compile_setting = compile  # a torch.compile backend (kernels.COMPILE_BACKENDS) or None
        self.extra_model_dirs: dict[str, list[Path]] = {}
        self._models_dir = Path(models_dir)
        self._resolved: tuple[Any, Any] | None = None
        self._rebuild()

    # -- folders ------------------------------------------------------------------------------
    @property
    def models_dir(self) -> Path:
        return self._models_dir

    @models_dir.setter
    def models_dir(self, folder: str | os.PathLike) -> None:
        self._models_dir = Path(folder)
        self._rebuild()

    def set_paths(self, *, input_dir: str | os.PathLike | None = None,
                  output_dir: str | os.PathLike | None = None) -> None:
        if input_dir is not None:
            self.paths.input = Path(input_dir)
        if output_dir is not None:
            self.paths.output = Path(output_dir)
        self._rebuild()

    def _rebuild(self) -> None:
        files = Folders()
        aliased = {alias for names in KIND_ALIASES.values() for alias in names}
        for kind in sorted((set(MODEL_KINDS) | set(self.extra_model_dirs)) - aliased):
            folders = [self._models_dir / kind, *self.extra_model_dirs.get(kind, [])]
            for alias in KIND_ALIASES.get(kind, ()):
                folders += [self._models_dir / alias, *self.extra_model_dirs.get(alias, [])]
            files.add(kind, folders, MODEL_SUFFIXES, MODEL_MARKERS.get(kind, ()))
        files.add("input", [self.paths.input], IMAGE_SUFFIXES)
        files.add("input_latents", [self.paths.input], (".latent",))  # LoadLatent's choices
        self.files = files

    def add_extra_model_paths(self, yaml_file: str | os.PathLike) -> None:
        """Read ComfyUI's extra_model_paths.yaml: sections with a base_path and kind → folder(s).
        Raises ValueError (or yaml's error) for a file that is not such a mapping."""
        import yaml  # only needed when the option is given

        path = Path(yaml_file)
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected sections of 'kind: folder' entries")
        for section in data.values():
            if not isinstance(section, dict):
                continue
            base = Path(os.path.expandvars(str(section.get("base_path", path.parent)))).expanduser()
            if not base.is_absolute():
                base = path.parent / base
            for kind, value in section.items():
                if kind in ("base_path", "is_default") or not isinstance(value, str):
                    continue
                for line in value.splitlines():
                    if line.strip():
                        folder = Path(os.path.expandvars(line.strip())).expanduser()
                        self.extra_model_dirs.setdefault(kind, []).append(
                            folder if folder.is_absolute() else base / folder)
        self._rebuild()

    # -- device and precision -------------------------------------------------------------------
    @property
    def device(self) -> Any:
        return self._resolve()[0]

    @property
    def dtype(self) -> Any:
        return self._resolve()[1]

    @property
    def compile(self) -> str | None:
        return self.compile_setting

    def _resolve(self) -> tuple[Any, Any]:
        if self._resolved is None:
            from .device import resolve

            self._resolved = resolve(self.device_setting, self.dtype_setting)
        return self._resolved
