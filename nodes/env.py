"""Where nodes find files, and which device and precision they run at.

Built once by the CLI or the editor and handed to every node as `ctx.env`. Cheap to import: no
torch here (the device is resolved by the model machinery when a model is loaded).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# Folder kinds, laid out as ComfyUI lays them out under models/.
MODEL_KINDS = ("checkpoints", "vae", "loras", "embeddings", "diffusers", "upscale_models")
MODEL_EXTENSIONS = (".safetensors", ".ckpt", ".pt", ".pth", ".bin")


@dataclass
class Env:
    models_dir: Path = REPO / "models"
    output_dir: Path = REPO / "output"
    input_dir: Path = REPO / "input"
    device: str = "auto"  # auto | cpu | cuda | mps
    dtype: str = "auto"  # auto | fp32 | bf16 | fp16
    extra_model_dirs: dict[str, list[Path]] = field(default_factory=dict)

    def model_folders(self, kind: str) -> list[Path]:
        return [Path(self.models_dir) / kind, *self.extra_model_dirs.get(kind, [])]

    def list_models(self, kind: str) -> list[str]:
        """Names (relative paths) of model files and diffusers folders of one kind, sorted."""
        names: set[str] = set()
        for folder in self.model_folders(kind):
            if not folder.is_dir():
                continue
            for dirpath, dirnames, filenames in os.walk(folder):
                here = Path(dirpath)
                dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
                if "model_index.json" in filenames or (kind == "vae" and "config.json" in filenames
                                                       and here != folder):
                    names.add(here.relative_to(folder).as_posix())
                    dirnames.clear()  # a diffusers folder is one model: don't list its parts
                    continue
                for name in filenames:
                    if name.lower().endswith(MODEL_EXTENSIONS) and not name.startswith("."):
                        names.add((here / name).relative_to(folder).as_posix())
        return sorted(names, key=str.lower)

    def find_model(self, kind: str, name: str) -> Path | None:
        for folder in self.model_folders(kind):
            candidate = (folder / name).resolve()
            if candidate.exists() and folder.resolve() in candidate.parents:
                return candidate
        return None

    def add_extra_model_paths(self, yaml_file: str | Path) -> None:
        """Read ComfyUI's extra_model_paths.yaml: sections with a base_path and kind → folder(s)."""
        import yaml  # only needed when the option is given

        path = Path(yaml_file)
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected sections of 'kind: folder' entries")
        for section in data.values():
            if not isinstance(section, dict):
                continue
            base = Path(str(section.get("base_path", path.parent))).expanduser()
            if not base.is_absolute():
                base = path.parent / base
            for kind, value in section.items():
                if kind in ("base_path", "is_default") or not isinstance(value, str):
                    continue
                for line in value.splitlines():
                    if line.strip():
                        folder = Path(line.strip()).expanduser()
                        self.extra_model_dirs.setdefault(kind, []).append(
                            folder if folder.is_absolute() else base / folder)
