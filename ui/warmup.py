"""Import the heavy machinery (torch, diffusers, transformers, the node packages' lazy modules) on a
background thread once the window is up, so that the first run does not import it.

Why: the nodes import torch & co. inside `run`, on the runner's worker thread. Importing holds
the GIL for long stretches (module bodies, and C calls such as loading extension modules), which
stalls the GUI thread 250-400 ms when it happens during the first run. Done at idle right after
start-up instead, while the user is still looking at the canvas, the first run starts warm. The
same goes for the few cached objects whose construction is one long GIL-holding C call
(`WARM_CALLS`).

The thread makes no Qt calls (see ui/runner.py on PySide6 and foreign threads): it sets a flag
that a GUI-thread timer polls, which then emits `finished` on the GUI thread.
"""

from __future__ import annotations

import importlib
import logging
import pkgutil
import sys
import threading
import time

from PySide6.QtCore import QObject, QTimer, Signal

log = logging.getLogger("sdgraph.ui.warmup")

# Third-party modules the SD nodes import lazily. `diffusers` and `transformers` are lazy modules:
# the classes have to be looked up for their code to be imported.
THIRD_PARTY: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("torch", ()),
    ("numpy", ()),
    ("PIL.Image", ()),
    ("PIL.PngImagePlugin", ()),
    ("safetensors.torch", ()),
    ("scipy.stats", ()),
    ("scipy.integrate", ()),
    ("diffusers", ("AutoencoderKL", "UNet2DConditionModel")),
    ("transformers", ("CLIPTextModel", "CLIPTextModelWithProjection", "CLIPTextConfig", "CLIPTokenizer")),
)

# Objects the nodes build once and cache, whose construction is one long C call that holds the GIL:
# CLIPTokenizer's vocabulary and merges become a Rust BPE model in a single call (~100 ms).
WARM_CALLS: tuple[str, ...] = ("nodes.models.configs:clip_tokenizer",)


def node_submodules(packages: list[str]) -> list[str]:
    """Every sub-module of the node packages (their declarations import them lazily, in `run`)."""
    names = []
    for package in packages:
        module = sys.modules.get(package)
        path = getattr(module, "__path__", None)
        if path is None:
            continue
        for info in pkgutil.walk_packages(path, prefix=package + "."):
            if "test" not in info.name.rsplit(".", 1)[-1]:
                names.append(info.name)
    return names


def warm_imports(packages: list[str]) -> tuple[list[str], list[str]]:
    """Import everything; returns (imported, failed). Nothing here may raise."""
    done, failed = [], []
    for name, attrs in THIRD_PARTY:
        try:
            module = importlib.import_module(name)
            for attr in attrs:
                getattr(module, attr)
            done.append(name)
        except Exception as e:  # noqa: BLE001 - a missing optional package only means a colder first run
            failed.append(f"{name}: {type(e).__name__}: {e}")
    for name in node_submodules(packages):
        try:
            importlib.import_module(name)
            done.append(name)
        except Exception as e:  # noqa: BLE001
            failed.append(f"{name}: {type(e).__name__}: {e}")
    for target in WARM_CALLS:
        module_name, func = target.split(":")
        if module_name.split(".")[0] not in packages:
            continue
        try:
            getattr(importlib.import_module(module_name), func)()
            done.append(target)
        except Exception as e:  # noqa: BLE001
            failed.append(f"{target}: {type(e).__name__}: {e}")
    return done, failed


class Warmup(QObject):
    """`start()` once; `finished(seconds)` is emitted on the GUI thread when the imports are done
    (`done` is True from then on)."""

    finished = Signal(float)

    def __init__(self, parent: QObject | None = None):
        super().__init__(parent)
        self.done = False
        self.started = False
        self.seconds = 0.0
        self.failed: list[str] = []
        self._flag = threading.Event()
        self._thread: threading.Thread | None = None
        self._poll = QTimer(self)
        self._poll.setInterval(50)
        self._poll.timeout.connect(self._check)

    def start(self, packages: list[str] | None = None) -> None:
        if self.started:
            return
        self.started = True
        packages = list(packages or ["nodes"])

        def work() -> None:
            t0 = time.perf_counter()
            try:
                _done, self.failed = warm_imports(packages)
            finally:
                self.seconds = time.perf_counter() - t0
                self._flag.set()

        self._thread = threading.Thread(target=work, name="sdgraph-warmup", daemon=True)
        self._thread.start()
        self._poll.start()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the imports are done (tools and tests; never on the GUI thread of the app)."""
        ok = self._flag.wait(timeout)
        self._check()
        return ok

    def _check(self) -> None:
        if self.done or not self._flag.is_set():
            return
        self._poll.stop()
        self.done = True
        for message in self.failed:
            log.info("warm-up: cannot import %s", message)
        self.finished.emit(self.seconds)
