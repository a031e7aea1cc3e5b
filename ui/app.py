"""Editor entry point: `python main.py [WORKFLOW]` parses the options and builds the environment
(cli.open_editor), then hands it here with the node packages to load: the editor imports nothing
from the node packages by name and builds no environment of its own.

The window shows first; node packages are discovered and the workflow is opened right after, on
the next turn of the event loop. Nothing here imports torch: nodes import it inside `run`. Once
the window is up and idle, ui/warmup.py imports torch/diffusers/transformers on a background
thread, so that the first run does not (importing holds the GIL and would stall the GUI thread).

SDGRAPH_STARTUP_PROBE=1 prints `sdgraph-startup-ms <ms>` (process start → window exposed) and quits
(used by bench/startup.py); SDGRAPH_STARTUP_PROBE=warm also runs the warm-up and prints
`sdgraph-warm-ms <ms> stall-ms <ms>` (process start → warm, and the longest event-loop stall
meanwhile) before quitting.
"""

from __future__ import annotations

import os
import sys
import time

_IMPORTED = time.perf_counter()


def process_age_s() -> float | None:
    """Seconds since this process started (Linux /proc), or None where unknown."""
    try:
        with open("/proc/self/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        start_ticks = int(fields[19])
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        return uptime - start_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def probe_warm_up(app, window, packages: list[str]) -> None:
    """Warm up now and report when it is done, with the worst event-loop lateness meanwhile."""
    from PySide6.QtCore import QTimer

    from .latency import LoopLatency

    latency = LoopLatency(10)

    def finished(_seconds: float) -> None:
        latency.stop()
        print(f"sdgraph-warm-ms {(process_age_s() or 0) * 1000:.0f} stall-ms {latency.max:.0f}"
              + "".join(f" failed={m.split(':')[0]}" for m in window.warmup.failed), flush=True)
        QTimer.singleShot(0, app.quit)

    window.warmup.finished.connect(finished)
    latency.start()
    window.warm_up(packages, delay_ms=0)


def main(workflow: str | None, env, packages: list[str], *, models_dir_given: bool = False) -> int:
    """Show the editor on `env` (a nodegraph.Environment) and run the event loop.

    `packages`: the node packages to discover once the window shows. `models_dir_given`: the model
    folder in `env` was chosen on the command line, so it wins over the one saved in Settings.
    """
    from PySide6.QtCore import QTimer
    from PySide6.QtWidgets import QApplication

    from nodegraph import REGISTRY

    from . import theme
    from .main_window import MainWindow

    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setApplicationName("sdgraph")
    app.setOrganizationName("sdgraph")
    theme.apply(app)
    window = MainWindow(REGISTRY, env, use_saved_models_dir=not models_dir_given)
    window.show()
    probe = os.environ.get("SDGRAPH_STARTUP_PROBE")

    def after_show() -> None:
        if probe:
            app.processEvents()
            age = process_age_s()
            ms = age * 1000 if age is not None else (time.perf_counter() - _IMPORTED) * 1000
            exposed = window.windowHandle() is not None and window.windowHandle().isExposed()
            print(f"sdgraph-startup-ms {ms:.0f} exposed={exposed}", flush=True)
        for message in REGISTRY.discover_all(packages):
            window.statusBar().showMessage(message, 10000)
        restored = False if probe else window.offer_restore()
        if workflow and not restored:
            window.open_path(str(workflow), ask=False)
        elif not restored and not probe:
            window.open_first_start()
        if probe:
            print(f"sdgraph-ready-ms {(process_age_s() or 0) * 1000:.0f} nodes={len(REGISTRY.names())}", flush=True)
        if probe == "warm":
            probe_warm_up(app, window, packages)
        elif probe:
            QTimer.singleShot(0, app.quit)
        else:
            window.warm_up(packages)

    QTimer.singleShot(0, after_show)
    return app.exec()
