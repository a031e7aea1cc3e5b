"""Editor entry point: `python main.py [WORKFLOW]`.

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

import argparse
import os
import sys
import time
from pathlib import Path

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


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="main.py", description="sdgraph editor")
    p.add_argument("workflow", nargs="?", help="workflow JSON, ComfyUI API JSON, or a PNG made by sdgraph")
    p.add_argument("--node-package", action="append", default=[], metavar="MODULE",
                   help="import extra node types from this module (repeatable)")
    p.add_argument("--models-dir", help="model folder (default: the one chosen in Settings, else models/)")
    return p.parse_args(argv)


def node_packages(extra: list[str]) -> list[str]:
    return ["nodes", *extra, *filter(None, os.environ.get("SDGRAPH_NODE_PACKAGES", "").split(os.pathsep))]


def discover(registry, extra: list[str]) -> list[str]:
    """Import node packages; returns one message per package that failed."""
    packages = node_packages(extra)
    failed = []
    for package in packages:
        try:
            registry.discover(package)
        except Exception as e:  # noqa: BLE001 - a broken package must not stop the editor
            failed.append(f"cannot import node package {package!r}: {e}")
    return failed


def make_env(models_dir: str | None = None):
    try:
        from nodes.env import Env
    except Exception:  # noqa: BLE001 - an editor without the SD nodes still edits graphs
        return None
    env = Env()
    if models_dir:
        env.models_dir = Path(models_dir)
    return env


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


def main(argv: list[str]) -> int:
    args = parse_args(list(argv))
    from PySide6.QtCore import QTimer
    from PySide6.QtWidgets import QApplication

    from nodegraph import REGISTRY

    from . import theme
    from .main_window import MainWindow

    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setApplicationName("sdgraph")
    app.setOrganizationName("sdgraph")
    theme.apply(app)
    window = MainWindow(REGISTRY, make_env(args.models_dir))
    if args.models_dir:
        window.set_models_dir(args.models_dir)
    window.show()
    probe = os.environ.get("SDGRAPH_STARTUP_PROBE")

    def after_show() -> None:
        if probe:
            app.processEvents()
            age = process_age_s()
            ms = age * 1000 if age is not None else (time.perf_counter() - _IMPORTED) * 1000
            exposed = window.windowHandle() is not None and window.windowHandle().isExposed()
            print(f"sdgraph-startup-ms {ms:.0f} exposed={exposed}", flush=True)
        for message in discover(REGISTRY, args.node_package):
            window.statusBar().showMessage(message, 10000)
        restored = False if probe else window.offer_restore()
        if args.workflow and not restored:
            window.open_path(args.workflow, ask=False)
        if probe:
            print(f"sdgraph-ready-ms {(process_age_s() or 0) * 1000:.0f} nodes={len(REGISTRY.names())}", flush=True)
        if probe == "warm":
            probe_warm_up(app, window, node_packages(args.node_package))
        elif probe:
            QTimer.singleShot(0, app.quit)
        else:
            window.warm_up(node_packages(args.node_package))

    QTimer.singleShot(0, after_show)
    return app.exec()
