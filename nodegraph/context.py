"""What the engine hands to nodes: the environment built once by the entry point, and the narrow,
typed context a running node receives (`ctx.models`, `ctx.paths`, `ctx.device`, `ctx.dtype`, `ctx.compile`,
progress, previews, cancellation, the workflow to embed in files)."""

from __future__ import annotations

import logging
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import events as ev
from .errors import Interrupted, NodeInputError
from .files import FileNameError, FileNotFound, Folders, RunFiles


@dataclass
class Paths:
    """Where nodes read user files from and write results to."""

    input: Path = Path("input")
    output: Path = Path("output")
    temp: Path = field(default_factory=lambda: Path(tempfile.gettempdir()) / "sdgraph")


class Environment:
    """Folders, paths and the device/precision policy, built once by the entry point and shared by
    the CLI, the editor and batch runs. `device`, `dtype` and `compile` are opaque to the engine: a
    node package's environment subclass gives them meaning (torch objects, resolved when first asked)."""

    def __init__(self, files: Folders | None = None, paths: Paths | None = None):
        self.files = files if files is not None else Folders()
        self.paths = paths if paths is not None else Paths()

    @property
    def device(self) -> Any:
        return None

    @property
    def dtype(self) -> Any:
        return None

    @property
    def compile(self) -> str | None:
        """The backend to compile models with when a node asks (None: run them as they are)."""
        return None


class CancelToken:
    """Set from any thread; checked between nodes and at every progress report."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def check(self) -> None:
        if self._event.is_set():
            raise Interrupted("cancelled")


class RunPaths:
    """`ctx.paths`: the input and output folders, and the one lookup of an input file by name."""

    def __init__(self, paths: Paths, files: RunFiles):
        self.input, self.output, self.temp = Path(paths.input), Path(paths.output), Path(paths.temp)
        self._files = files

    def input_file(self, name: str) -> Path:
        return self._files.path("input", name)


class NodeContext:
    """What a running node may use, and nothing else."""

    def __init__(self, node_id: str, node_type: str, env: Environment, files: RunFiles, bus: ev.EventBus,
                 cancel: CancelToken, metadata: Callable[[], dict[str, str]], file_inputs: dict[tuple[str, str], str]):
        self.node_id = node_id
        self.node_type = node_type
        self.models = _NamedFiles(files, file_inputs)
        self.paths = RunPaths(env.paths, self.models)
        self.log = logging.getLogger(f"sdgraph.node.{node_type}")
        self._env = env
        self._bus = bus
        self._cancel = cancel
        self._metadata = metadata

    @property
    def device(self) -> Any:
        return self._env.device

    @property
    def dtype(self) -> Any:
        return self._env.dtype

    @property
    def compile(self) -> str | None:
        return self._env.compile

    def progress(self, step: int, total: int) -> None:
        self._bus.emit(ev.Progress(self.node_id, int(step), int(total)))
        self._cancel.check()

    def preview(self, image: Any, step: int = 0) -> None:
        self._bus.emit(ev.Preview(self.node_id, int(step), image))

    def check_cancelled(self) -> None:
        self._cancel.check()

    @property
    def cancelled(self) -> bool:
        return self._cancel.cancelled

    def workflow_metadata(self) -> dict[str, str]:
        """Text entries that carry the running workflow (what SaveImage embeds in a PNG)."""
        return self._metadata()


class _NamedFiles:
    """`ctx.models`: the run's file lookups; a missing file is reported against the input that
    declared it, so the message reads `input "ckpt_name": "x" not found in …`."""

    def __init__(self, files: RunFiles, file_inputs: dict[tuple[str, str], str]):
        self._files = files
        self._inputs = file_inputs  # (kind, value) → input name, for this node

    def path(self, kind: str, name: str) -> Path:
        try:
            return self._files.path(kind, name)
        except (FileNotFound, FileNameError) as exc:
            input_name = self._inputs.get((kind, name))
            if input_name is None:
                raise
            raise NodeInputError(input_name, str(exc)) from None

    def names(self, kind: str) -> list[str]:
        return self._files.names(kind)
