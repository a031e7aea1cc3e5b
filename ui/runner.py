"""Runs workflows on a worker thread, one job at a time. Executor events cross to the GUI thread
through a thread-safe queue that a GUI-thread timer drains every 15 ms while a job is active,
re-emitting them there as Qt signals (so slots always run on the GUI thread, in order). Images are
decoded on the worker so the GUI thread only paints: each executor event travels wrapped in a
`UiEvent` that carries them (the engine's events are left as the engine made them).

Why not emit queued signals from the worker: with PySide6 6.12 on Python 3.11, `Signal.emit`
called from a non-GUI thread (QThread or threading.Thread, connected or not), and also an emit
made inside a Python `QObject.event()` override for a posted event, over-release a reference to
True/False/None; after a few hundred emits the interpreter aborts at exit ("bool_dealloc").
The worker therefore makes no Qt calls except building QImages.
"""

from __future__ import annotations

import itertools
import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, Qt, QTimer, Signal
from PySide6.QtGui import QImage

from nodegraph import CancelToken, Executor
from nodegraph import events as ev

THUMB = 512


@dataclass
class UiEvent:
    """An executor event as the editor receives it, with what the worker prepared for the GUI
    thread: the preview or first result image as a QImage, and the result's image files."""

    event: ev.Event
    qimage: QImage | None = None
    paths: list[str] = field(default_factory=list)


@dataclass
class Job:
    id: int
    graph: Any
    status: str = "queued"  # queued, running, ok, error, interrupted, invalid, cancelled
    token: CancelToken = field(default_factory=CancelToken)
    submitted: float = field(default_factory=time.time)
    seconds: float = 0.0
    nodes: int = 0
    message: str = ""
    result: Any = None

    @property
    def finished(self) -> bool:
        return self.status not in ("queued", "running")


def to_qimage(image: Any) -> QImage | None:
    """A PIL image (or anything with mode/size/tobytes) → an RGB QImage that owns its data."""
    try:
        rgb = image.convert("RGB") if getattr(image, "mode", "RGB") != "RGB" else image
        w, h = rgb.size
        data = rgb.tobytes()
        return QImage(data, w, h, 3 * w, QImage.Format_RGB888).copy()
    except Exception:  # noqa: BLE001 - a preview must never break a run
        return None


def image_paths(ui: dict, env: Any = None) -> list[str]:
    """Paths of images named in a node's `ui` dict: plain paths, or ComfyUI-style
    {"filename", "subfolder", "type"} entries relative to the output folder."""
    out = []
    for entry in (ui or {}).get("images", []):
        if isinstance(entry, str):
            out.append(entry)
        elif isinstance(entry, dict):
            if "path" in entry:
                out.append(str(entry["path"]))
            elif "filename" in entry:
                base = Path(env.paths.output) if env is not None else Path(".")
                out.append(str(base / entry.get("subfolder", "") / entry["filename"]))
    return out


def load_thumb(path: str) -> QImage | None:
    img = QImage(path)
    if img.isNull():
        return None
    if max(img.width(), img.height()) > THUMB:
        img = img.scaled(THUMB, THUMB, Qt.KeepAspectRatio, Qt.SmoothTransformation)
    return img


THUMBNAIL_TYPES = ("IMAGE", "MASK")


def tensor_thumbnail(value: Any, type_name: str) -> QImage | None:
    """The first IMAGE ([B, H, W, C] in 0..1) or MASK ([B, H, W] or [H, W]) of a node's output as a
    small RGB QImage. Uses only the tensor's own methods (the editor imports no torch)."""
    try:
        first = value[0] if (type_name == "IMAGE" or value.dim() == 3) else value
        if type_name == "MASK":
            first = first.unsqueeze(-1).expand(-1, -1, 3)
        h, w = int(first.shape[0]), int(first.shape[1])
        step = max(1, -(-max(h, w) // THUMB))
        small = first[::step, ::step, :3].detach().float().clamp(0, 1).mul(255).byte().cpu().contiguous()
        h, w = int(small.shape[0]), int(small.shape[1])
        return QImage(small.numpy().tobytes(), w, h, 3 * w, QImage.Format_RGB888).copy()
    except Exception:  # noqa: BLE001 - a thumbnail must never break a run
        return None


def output_thumbnails(registry: Any, graph: Any, result: Any) -> dict[str, QImage]:
    """A thumbnail for each node of a finished run that has an IMAGE or MASK output (its first such
    output) and no images of its own in its `ui` (SaveImage, PreviewImage show their files)."""
    thumbs = {}
    for node_id, values in (getattr(result, "outputs", None) or {}).items():
        node = graph.nodes.get(node_id)
        cls = registry.get(node.type) if node is not None else None
        if cls is None or (result.ui.get(node_id) or {}).get("images"):
            continue
        for spec, value in zip(cls.outputs, values, strict=False):
            if spec.type.name in THUMBNAIL_TYPES:
                image = tensor_thumbnail(value, spec.type.name)
                if image is not None:
                    thumbs[node_id] = image
                break
    return thumbs


class _Worker:
    """Everything the worker thread touches. A plain Python object: the thread makes no calls on
    QObjects (see the module docstring) — it only fills `inbox`, which the GUI thread drains."""

    def __init__(self, executor: Executor):
        self.executor = executor
        self.jobs: queue.Queue = queue.Queue()
        self.inbox: queue.SimpleQueue = queue.SimpleQueue()  # (signal name, args)
        self.current: Job | None = None
        executor.add_listener(self.on_event)

    def loop(self) -> None:
        while True:
            job = self.jobs.get()
            if job is None:
                return
            if job.token.cancelled:
                continue
            self.current = job
            job.status = "running"
            self.inbox.put(("job_changed", (job,)))
            t0 = time.perf_counter()
            try:
                result = self.executor.run(job.graph, cancel=job.token)
                job.result = result
                thumbs = output_thumbnails(self.executor.registry, job.graph, result)
                if thumbs:
                    self.inbox.put(("thumbnails", (job, thumbs)))
                job.status = result.status
                if result.error is not None:
                    job.message = result.error.message
                elif result.problems:
                    job.message = f"{len(result.problems)} problem(s)"
            except Exception as e:  # noqa: BLE001 - an engine bug must not kill the worker
                job.status, job.message = "error", f"{type(e).__name__}: {e}"
            job.seconds = time.perf_counter() - t0
            self.current = None
            self.inbox.put(("job_changed", (job,)))

    def on_event(self, event: ev.Event) -> None:
        wrapped = UiEvent(event)
        if isinstance(event, ev.Preview):
            wrapped.qimage = to_qimage(event.image)
        elif isinstance(event, ev.NodeFinished | ev.NodeCached):
            wrapped.paths = image_paths(event.ui, self.executor.env)
            wrapped.qimage = load_thumb(wrapped.paths[0]) if wrapped.paths else None
        self.inbox.put(("node_event", (self.current, wrapped)))


class Runner(QObject):
    node_event = Signal(object, object)  # job, UiEvent (the executor event and its images)
    job_changed = Signal(object)  # job
    thumbnails = Signal(object, object)  # job, {node id: QImage of its IMAGE/MASK output}

    def __init__(self, registry, env=None, parent=None):
        super().__init__(parent)
        self.executor = Executor(registry, env=env)
        self._worker = _Worker(self.executor)
        self.jobs: list[Job] = []
        self._ids = itertools.count(1)
        self._thread: threading.Thread | None = None
        self._pump = QTimer(self)
        self._pump.setInterval(15)
        self._pump.timeout.connect(self.deliver)

    @property
    def current(self) -> Job | None:
        return self._worker.current

    def set_env(self, env) -> None:
        self.executor.env = env

    @property
    def busy(self) -> bool:
        return any(not j.finished for j in self.jobs)

    def submit(self, graph) -> Job:
        job = Job(next(self._ids), graph, nodes=len(graph.nodes))
        self.jobs.append(job)
        self.job_changed.emit(job)
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._worker.loop, name="sdgraph-runner", daemon=True)
            self._thread.start()
        self._worker.jobs.put(job)
        self._pump.start()
        return job

    def cancel(self, job: Job | None = None) -> None:
        """Cancel a job (default: the running one). The executor stops at the next step."""
        job = job or self.current
        if job is None:
            return
        job.token.cancel()
        if job.status == "queued":
            job.status = "cancelled"
            self.job_changed.emit(job)

    def cancel_all(self) -> None:
        for job in self.jobs:
            if not job.finished:
                self.cancel(job)

    def shutdown(self, timeout: float = 2.0) -> None:
        self.cancel_all()
        self._worker.jobs.put(None)
        if self._thread is not None:
            self._thread.join(timeout)
        self.deliver()

    def deliver(self) -> None:
        """Emit, on the GUI thread, everything the worker has posted so far (in order)."""
        inbox = self._worker.inbox
        while True:
            try:
                name, args = inbox.get_nowait()
            except queue.Empty:
                break
            getattr(self, name).emit(*args)
        if not self.busy and inbox.empty():
            self._pump.stop()
