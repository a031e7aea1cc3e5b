"""Warm the node packages up (their `warm_up()` hook imports torch, diffusers… and builds what they
cache) on a background thread once the window is up, so that the first run does not import them.

Why: the nodes import torch & co. inside `run`, on the runner's worker thread. Importing holds
the GIL for long stretches (module bodies, and C calls such as loading extension modules), which
stalls the GUI thread 250-400 ms when it happens during the first run. Done at idle right after
start-up instead, while the user is still looking at the canvas, the first run starts warm. What
to import is the node package's business (nodes/core/warm.py); the editor names none of it.

The thread makes no Qt calls (see ui/runner.py on PySide6 and foreign threads): it sets a flag
that a GUI-thread timer polls, which then emits `finished` on the GUI thread.
"""

from __future__ import annotations

import gc
import importlib
import logging
import pkgutil
import threading
import time

from PySide6.QtCore import QObject, QTimer, Signal

log = logging.getLogger("sdgraph.ui.warmup")

def warm_imports(packages: list[str]) -> tuple[list[str], list[str]]:
    """Call each node package's `warm_up()` hook (it knows what its nodes import lazily), or import
    its sub-modules when it has none; returns (warmed, failed). Nothing here may raise."""
    done, failed = [], []
    for package in packages:
        try:
            module = importlib.import_module(package)
            hook = getattr(module, "warm_up", None)
            if callable(hook):
                failed += list(hook() or [])
            else:
                for info in pkgutil.walk_packages(getattr(module, "__path__", []), prefix=package + "."):
                    importlib.import_module(info.name)
            done.append(package)
        except Exception as e:  # noqa: BLE001 - a broken package only means a colder first run
            failed.append(f"{package}: {type(e).__name__}: {e}")
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
                # torch, diffusers and transformers leave millions of long-lived objects; a full
                # collection that scans them all, triggered in the run's thread, stalls the GUI for a
                # third of a second. Frozen, they are skipped by every later collection.
                gc.freeze()
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
