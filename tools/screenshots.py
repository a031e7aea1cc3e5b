"""Render editor screenshots to docs/screenshots/ (offscreen, no display needed).

    python tools/screenshots.py                 toy nodes, a demo graph (works without models)
    python tools/screenshots.py --real --run    the SD nodes (REGISTRY.discover("nodes")) and
                                                workflows/default.json with the bundled model,
                                                run first (without --run: as opened)

Writes editor_after_run.png, node_search.png and error_state.png; with --real also
comfyui_workflow.png, a ComfyUI workflow as users share it (groups, notes, primitives), opened from
the shared test fixtures (--comfy-workflow picks another); with --real --run also trace_panel.png,
the trace panel after a KSamplerTrace run (the first workflows/explain_*.json that has one, else the
default workflow with its KSampler swapped for a KSamplerTrace), one token's heatmap shown.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("SDGRAPH_DATA_DIR", tempfile.mkdtemp(prefix="sdgraph-shots-"))

from tests.shared import FIXTURES  # noqa: E402  (after the path is set)

_KEEP: list = []
# ComfyUI's own SDXL example as its users share it: groups, notes, primitives (shared test fixtures)
COMFY_WORKFLOW = FIXTURES / "comfy_workflows" / "examples__sdxl_sdxl_refiner_prompt_example.ui.json"


def wait(app, cond, timeout=60.0) -> bool:
    end = time.time() + timeout
    while time.time() < end:
        app.processEvents()
        if cond():
            return True
        time.sleep(0.01)
    return False


def toy_graph(window) -> dict[str, str]:
    ed = window.editor
    ids = {}
    ids["text"] = ed.add_node("Text", (-40, -260))
    ids["show_text"] = ed.add_node("Show", (300, -260))
    ids["seed"] = ed.add_node("SeedNode", (-40, 0))
    ids["grad"] = ed.add_node("Gradient", (300, 0))
    ids["save"] = ed.add_node("SaveImageToy", (640, 0))
    ids["num"] = ed.add_node("Number", (-40, 220))
    ids["steps"] = ed.add_node("Steps", (300, 300))
    ids["show"] = ed.add_node("Show", (640, 330))
    ed.set_value(ids["text"], "text", "a red circle on a white table,\nstudio light")
    ed.connect(ids["text"], 0, ids["show_text"], "value")
    ed.set_as_socket(ids["grad"], "hue", True)
    ed.connect(ids["seed"], 0, ids["grad"], "hue")
    ed.set_value(ids["seed"], "seed", 1)
    ed.set_seed_mode(ids["seed"], "seed", "increment")
    ed.connect(ids["grad"], 0, ids["save"], "image")
    ed.connect(ids["num"], 0, ids["steps"], "x")
    ed.connect(ids["steps"], 0, ids["show"], "value")
    ed.set_value(ids["steps"], "steps", 12)
    ed.set_value(ids["steps"], "delay", 0.01)
    ed.rename(ids["steps"], "Count (Steps)")
    return ids


def _first_of(window, *types: str) -> str | None:
    """The id of the first node of the first of these types that the graph has."""
    for type_name in types:
        for nid, node in window.editor.graph.nodes.items():
            if node.type == type_name:
                return nid
    return None


def trace_workflow(default: Path, workdir: Path) -> Path:
    """A workflow with a KSamplerTrace: the first explainer workflow that has one, else `default`
    with its KSampler made a KSamplerTrace that names the attention maps by the prompt's words."""
    for path in sorted((REPO / "workflows").glob("explain_*.json")):
        if '"KSamplerTrace"' in path.read_text(encoding="utf-8"):
            return path
    data = json.loads(default.read_text(encoding="utf-8"))
    for node in data["nodes"].values():
        if node["type"] == "KSampler":
            node["type"] = "KSamplerTrace"
            # the positive prompt's encoder reads CLIPTokenize's TOKENS: the trace takes them too
            encoder = data["nodes"].get(node["links"].get("positive", [None])[0], {})
            if "tokens" in encoder.get("links", {}):
                node["links"]["tokens"] = encoder["links"]["tokens"]
    path = workdir / "trace.json"
    path.write_text(json.dumps(data))
    return path


def trace_shot(app, window, path: Path, out: Path) -> bool:
    """Run a KSamplerTrace workflow; show the trace panel at a middle step with the heatmap of the
    prompt word that steers the most, hovered where it is strongest."""
    from PySide6.QtCore import Qt

    if not window.open_path(str(path), ask=False):
        print(f"cannot open {path}: {window.statusBar().currentMessage()}", file=sys.stderr)
        return False
    job = window.run()
    wait(app, lambda: job.finished, 900)
    panel = window.trace_panel
    if job.status != "ok" or panel.view is None:
        print(f"the trace run did not succeed: {job.status} {job.message}", file=sys.stderr)
        return False
    window.problems_dock.hide()
    window.trace_dock.show()
    window.trace_dock.raise_()
    window.resizeDocks([window.trace_dock], [400], Qt.Vertical)
    tokens = panel.view.get("tokens") or []
    panel.show_word("circle") or (tokens and panel.show_token(0))
    panel.slider.setValue(len(panel.view.get("steps") or []) // 2)
    values = panel.heat_values()
    if values is not None:
        y, x = divmod(int(values.argmax()), values.shape[1])
        panel.heatmap.hover = (y, x)
        panel.hover_at(y, x)
        panel.heatmap.update()
    nid = panel.node_id
    window.scene.clearSelection()
    if nid in window.scene.nodes:
        window.scene.nodes[nid].setSelected(True)
    wait(app, lambda: False, 0.3)
    window.view.fit_all()
    wait(app, lambda: False, 0.3)
    window.grab().save(str(out / "trace_panel.png"))
    return True


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="render editor screenshots")
    p.add_argument("--real", action="store_true", help="use the SD nodes and --workflow")
    p.add_argument("--workflow", default=str(REPO / "workflows" / "default.json"))
    p.add_argument("--run", action="store_true", help="with --real: run the workflow before the shot")
    p.add_argument("--out", default=str(REPO / "docs" / "screenshots"))
    p.add_argument("--models-dir", default=str(REPO / "models"), help="with --real: the model folder")
    p.add_argument("--size", default="1920x1080", help="window size (the canvas gets what the docks leave)")
    p.add_argument("--comfy-workflow", default=str(COMFY_WORKFLOW), help="with --real: a ComfyUI UI-format workflow")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    from PySide6.QtCore import QPointF
    from PySide6.QtWidgets import QApplication

    app = QApplication.instance() or QApplication(sys.argv[:1])
    from nodes.core.env import SDEnvironment
    from ui import theme
    from ui.main_window import MainWindow

    theme.apply(app)
    workdir = Path(tempfile.mkdtemp(prefix="sdgraph-shots-out-"))
    if args.real:
        from nodegraph import REGISTRY

        REGISTRY.discover("nodes")
        registry = REGISTRY
        env = SDEnvironment(models_dir=Path(args.models_dir), output_dir=workdir, input_dir=REPO / "input")
    else:
        from tests.test_ui_support import ui_registry

        registry = ui_registry()
        env = SDEnvironment(models_dir=workdir / "models", output_dir=workdir, input_dir=workdir / "input")
    w, h = (int(v) for v in args.size.split("x"))
    window = MainWindow(registry, env)
    window.quiet_errors = True
    window.ask_unsaved = lambda: "discard"
    window.resize(w, h)
    window.show()
    wait(app, lambda: window.windowHandle() is not None and window.windowHandle().isExposed(), 5)

    if args.real:  # first, in a fresh window: a ComfyUI workflow as its users share it
        if not window.open_path(args.comfy_workflow, ask=False):
            print(f"cannot open {args.comfy_workflow}: {window.statusBar().currentMessage()}", file=sys.stderr)
            return 1
        window.problems_dock.hide()  # its SDXL models are not here: the canvas is the point
        wait(app, lambda: False, 0.3)
        window.view.fit_all()
        wait(app, lambda: False, 0.3)
        window.grab().save(str(out / "comfyui_workflow.png"))
        window.problems_dock.show()
        if not window.open_path(args.workflow, ask=False):
            print(f"cannot open {args.workflow}: {window.statusBar().currentMessage()}", file=sys.stderr)
            return 1
        if args.run:
            window.warm_up(["nodes"], delay_ms=0)  # as the editor does once it is idle
            wait(app, lambda: window.warmup.done, 300)
            job = window.run()
            wait(app, lambda: job.finished, 600)
            if job.status != "ok":
                print(f"the run did not succeed: {job.status} {job.message}", file=sys.stderr)
                return 1
        ids = {"source": _first_of(window, "VAEDecode", "EmptyLatentImage")}
    else:
        ids = toy_graph(window)
        ids["source"] = ids["grad"]
        job = window.run()
        wait(app, lambda: job.finished, 60)
        window.run_view.clear()
    if not window.problems.count():
        window.problems_dock.hide()  # an empty problems list only takes room (it opens on problems)
    window.view.fit_all()
    wait(app, lambda: False, 0.3)
    window.grab().save(str(out / "editor_after_run.png"))

    # node search, opened from a link dragged out of an output onto empty canvas
    source = window.scene.nodes.get(ids["source"])
    if source is not None:
        end = source.output_anchor(0) + QPointF(140, 90)
        window.scene.begin_link_drag(source.outputs[0], end)
        window.scene.end_link_drag(end)
    else:
        window.open_search(window.view.mapToScene(window.view.viewport().rect().center()), None)
    wait(app, lambda: False, 0.2)
    window.grab().save(str(out / "node_search.png"))
    window.search.hide()

    # error state: a failing node and a validation problem
    ed = window.editor
    if not args.real:
        fail = ed.add_node("Fail", (640, 560))
        ed.connect(ids["steps"], 0, fail, "x")
        bad = ed.add_node("Show", (980, 560))
        ed.connect(fail, 0, bad, "value")
    else:  # a checkpoint that is not there and an out-of-range value, as a user might leave them
        loader = _first_of(window, "CheckpointLoaderSimple")
        sampler = _first_of(window, "KSampler")
        if loader:
            ed.set_value(loader, "ckpt_name", "sd15-missing.safetensors")
        if sampler:
            ed.set_value(sampler, "steps", 0)
    job = window.run()
    wait(app, lambda: job.finished, 60)
    window.view.fit_all()
    wait(app, lambda: False, 0.3)
    window.grab().save(str(out / "error_state.png"))
    names = ["editor_after_run", "node_search", "error_state"] + (["comfyui_workflow"] if args.real else [])
    if args.real and args.run:
        if not trace_shot(app, window, trace_workflow(Path(args.workflow), workdir), out):
            return 1
        names.append("trace_panel")
    for name in names:
        print(out / f"{name}.png")
    window.close()
    app.processEvents()
    _KEEP.extend([app, window])  # let the interpreter tear Qt down in its own order
    return 0


if __name__ == "__main__":
    sys.exit(main())
