"""Where the editor keeps its things: settings, recent files, autosave (atomic writes throughout)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from PySide6.QtCore import QSettings, QStandardPaths

from nodegraph.fileio import atomic_write
from nodegraph.workflow import dumps, dumps_native, from_data, load_workflow, read_workflow

AUTOSAVE_NAME = "autosave.json"
MAX_RECENT = 10
WORKFLOW_FILTER = ("Workflows and images (*.json *.png *.webp *.jpg *.jpeg);;sdgraph or ComfyUI workflow (*.json);;"
                   "Image with a workflow (*.png *.webp *.jpg *.jpeg);;All files (*)")
# what each format is called when the editor asks before changing a file's format
FORMAT_NAMES = {"native": "sdgraph workflow", "comfy_ui": "ComfyUI workflow", "comfy_api": "ComfyUI API workflow"}


def data_dir() -> Path:
    """The user data folder; SDGRAPH_DATA_DIR overrides it (tests)."""
    override = os.environ.get("SDGRAPH_DATA_DIR")
    if override:
        path = Path(override)
    else:
        path = Path(QStandardPaths.writableLocation(QStandardPaths.AppDataLocation) or Path.home() / ".sdgraph")
    path.mkdir(parents=True, exist_ok=True)
    return path


def settings() -> QSettings:
    """An ini file in the data folder when SDGRAPH_DATA_DIR is set, else the platform's settings."""
    if os.environ.get("SDGRAPH_DATA_DIR"):
        return QSettings(str(data_dir() / "settings.ini"), QSettings.IniFormat)
    return QSettings("sdgraph", "sdgraph")


def recent_files() -> list[str]:
    value = settings().value("recent_files", [])
    if isinstance(value, str):
        value = [value]
    return [v for v in (value or []) if isinstance(v, str)]


def add_recent(path: str) -> list[str]:
    path = str(Path(path).resolve())
    items = [path] + [p for p in recent_files() if p != path]
    items = items[:MAX_RECENT]
    s = settings()
    s.setValue("recent_files", items)
    s.sync()
    return items


def load(path: str, registry):
    """A graph from a workflow file (native, ComfyUI API, or a PNG carrying either). Unknown node
    types are kept (and reported by validation) rather than refusing the file."""
    return load_workflow(path, registry, strict=False)


def read(path: str, registry, env=None):
    """(graph, format) from any file sdgraph reads: its own JSON, ComfyUI's UI or API JSON, or an
    image from ComfyUI, sdgraph, A1111 or Fooocus. format: "native", "comfy_ui", "comfy_api",
    "a1111"…, with ":png" (etc.) for an image. An A1111 model name is matched against env's
    checkpoint folder."""
    folders = getattr(env, "files", None)
    checkpoints = (lambda: folders.names("checkpoints")) if folders is not None else None
    return read_workflow(path, registry, strict=False, checkpoints=checkpoints)


def save(graph, path: str, format: str = "native") -> Path:
    return atomic_write(path, dumps(graph, format))


class Autosave:
    """Unsaved work is written every 30 s; a clean exit or a save removes it. Finding it at start
    means the last session ended without saving: offer to restore it."""

    def __init__(self, folder: Path | None = None):
        self.folder = folder or data_dir()
        self.path = self.folder / AUTOSAVE_NAME

    def write(self, graph, source: str | None) -> Path:
        body = json.loads(dumps_native(graph))
        body.setdefault("ui", {})["autosave"] = {"source": source, "time": time.time()}
        return atomic_write(self.path, json.dumps(body, indent=1, ensure_ascii=False))

    def exists(self) -> bool:
        return self.path.is_file()

    def read(self, registry):
        """(graph, original file path or None)."""
        data = json.loads(self.path.read_text(encoding="utf-8"))
        meta = (data.get("ui") or {}).pop("autosave", {}) if isinstance(data, dict) else {}
        return from_data(data, registry, strict=False), meta.get("source")

    def clear(self) -> None:
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass
