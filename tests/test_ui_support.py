"""Shared fixtures and helpers for the editor tests (pytest-qt, offscreen), plus two toy nodes that
make images, so results, previews and the gallery can be tested without Stable Diffusion."""

from __future__ import annotations

import colorsys
import time
from pathlib import Path

import pytest

pytest.importorskip("PySide6")
pytest.importorskip("pytestqt")

from PySide6.QtCore import QPointF, Qt  # noqa: E402
from PySide6.QtTest import QTest  # noqa: E402

from nodegraph import FileChoice, Float, Int, Link, Node, NodeOutput, Output  # noqa: E402
from nodegraph import types as T  # noqa: E402
from tests.toy_nodes import make_registry  # noqa: E402
from ui.latency import LoopLatency  # noqa: E402,F401  (the tests measure the GUI thread with it)

SHOTS = Path(__file__).resolve().parent.parent / "tmp" / "ui_shots"


class Gradient(Node):
    """Paints a small gradient image, showing a live preview every step."""
    category = "image"
    inputs = [Float("hue", 0.6, min=0.0, max=1.0, step=0.01), Int("steps", 4, min=1, max=100),
              Float("delay", 0.0, min=0.0, max=5.0)]
    outputs = [Output("image", T.IMAGE)]

    def run(self, ctx, hue, steps, delay):
        from PIL import Image, ImageOps

        img = None
        ramp = Image.linear_gradient("L").rotate(90).resize((128, 80))
        for i in range(steps):
            time.sleep(delay)
            level = (i + 1) / steps
            a = tuple(int(255 * c) for c in colorsys.hsv_to_rgb(hue % 1.0, 0.85, 0.35 + 0.6 * level))
            b = tuple(int(255 * c) for c in colorsys.hsv_to_rgb((hue + 0.35) % 1.0, 0.7, 0.9 * level))
            img = ImageOps.colorize(ramp, a, b)
            ctx.preview(img, i + 1)
            ctx.progress(i + 1, steps)
        return (img,)


class SaveImageToy(Node):
    """Output node: writes the image as a PNG (with the workflow inside) and shows it."""
    category = "image"
    output_node = True
    inputs = [Link("image", T.IMAGE)]
    outputs = []

    def run(self, ctx, image):
        from PIL.PngImagePlugin import PngInfo

        out = ctx.paths.output
        out.mkdir(parents=True, exist_ok=True)
        path = out / f"toy_{ctx.node_id}_{time.time_ns()}.png"
        info = PngInfo()
        for key, text in ctx.workflow_metadata().items():  # what the real SaveImage embeds
            info.add_text(key, text)
        image.save(path, pnginfo=info)
        return NodeOutput((), {"images": [str(path)]})


class SeedNode(Node):
    """Holds a seed (to test the seed widget)."""
    category = "values"
    inputs = [Int("seed", 7, min=0, max=2**64 - 1, control_after_generate=True,
                  tooltip="the random seed; the same seed gives the same picture"),
              Float("strength", 0.5, min=0.0, max=1.0, tooltip="how much of the seed to use")]
    outputs = [Output("value", T.FLOAT, tooltip="seed × strength")]

    def run(self, ctx, seed, strength):
        return (float(seed) * strength,)


class NoiseSource(Node):
    """The after-run control comes from the declaration, not the name: `noise` is declared
    control_after_generate, `seed` (an INT with that very name) is not."""
    category = "values"
    inputs = [Int("noise", 5, min=0, max=9, control_after_generate=True), Int("seed", 3, min=0, max=100)]
    outputs = [Output("value", T.INT)]

    def run(self, ctx, noise, seed):
        return (noise + seed,)


class PickModel(Node):
    """Picks a checkpoint file from the model folder (a file input)."""
    category = "loaders"
    inputs = [FileChoice("ckpt_name", "checkpoints", tooltip="a checkpoint in the model folder")]
    outputs = [Output("name", T.STRING)]

    def run(self, ctx, ckpt_name):
        return (ckpt_name,)


def ui_registry():
    reg = make_registry()
    for cls in (Gradient, SaveImageToy, SeedNode, NoiseSource, PickModel):
        reg.register(cls)
    return reg


@pytest.fixture
def window(qtbot, tmp_path, monkeypatch):
    monkeypatch.setenv("SDGRAPH_DATA_DIR", str(tmp_path / "data"))
    from nodes.core.env import SDEnvironment
    from ui import theme
    from ui.main_window import MainWindow

    theme.apply(__import__("PySide6.QtWidgets", fromlist=["QApplication"]).QApplication.instance())
    env = SDEnvironment(models_dir=tmp_path / "models", output_dir=tmp_path / "out", input_dir=tmp_path / "in")
    w = MainWindow(ui_registry(), env)
    w.quiet_errors = True
    w.ask_unsaved = lambda: "discard"
    w.ask_restore = lambda source: True
    qtbot.addWidget(w)
    w.resize(1300, 800)
    w.show()
    qtbot.waitExposed(w)
    yield w
    w.runner.shutdown()


def shot(widget, name: str) -> Path:
    """Save a screenshot for a human to look at (tmp/ui_shots/, ignored by git)."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / f"{name}.png"
    widget.grab().save(str(path))
    return path


def vpos(view, scene_point: QPointF):
    return view.mapFromScene(scene_point)


def drag(view, start: QPointF, end: QPointF, steps: int = 6, button=Qt.LeftButton) -> None:
    """Press at a scene point, move in steps, release at another scene point."""
    vp = view.viewport()
    a, b = vpos(view, start), vpos(view, end)
    QTest.mousePress(vp, button, Qt.NoModifier, a)
    for i in range(1, steps + 1):
        QTest.mouseMove(vp, a + (b - a) * i / steps)
    QTest.mouseRelease(vp, button, Qt.NoModifier, b)


def socket_pos(window, nid: str, *, output: int | None = None, input: str | None = None) -> QPointF:
    item = window.scene.nodes[nid]
    return item.output_anchor(output) if output is not None else item.input_anchor(input)


def wait_job(qtbot, job, timeout=15000) -> None:
    qtbot.waitUntil(lambda: job.finished, timeout=timeout)
    qtbot.wait(50)  # let queued events land


def build_chain(window, delay=0.0, steps=3):
    """Number → Steps → Show, positioned left to right. Returns the ids."""
    ed = window.editor
    a = ed.add_node("Number", (0, 0))
    b = ed.add_node("Steps", (320, 0))
    c = ed.add_node("Show", (640, 0))
    ed.connect(a, 0, b, "x")
    ed.connect(b, 0, c, "value")
    ed.set_value(b, "delay", float(delay))
    ed.set_value(b, "steps", int(steps))
    window.view.fit_all()
    return a, b, c
