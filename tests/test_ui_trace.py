"""The editor's Explain mode: the trace panel (step scrubber and tiles, the schedule plot, token
heatmaps and the hover ranking), clicking a token in CLIPTokenize's list, the Explain and Help
menus, live previews that stay, and the default workflow on first start.

The trace is a fabricated view in the KSamplerTrace node's format, handed over by a toy node through
the executor as the real node hands it (the editor reads only `ui` dicts)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from PySide6.QtCore import QPointF, Qt
from PySide6.QtGui import QColor
from PySide6.QtTest import QTest

from nodegraph import Link, Node, NodeOutput, Output, String
from nodegraph import types as T
from tests import test_ui_support as support
from tests.test_ui_support import wait_job

STEPS = 5
TOKENS = ["a", "red", "circle", "<end>"]
H = W = 16
# each token's share of a pixel on the left half and on the right half of the image
LEFT = {"a": 0.10, "red": 0.21, "circle": 0.62, "<end>": 0.07}
RIGHT = {"a": 0.05, "red": 0.70, "circle": 0.15, "<end>": 0.10}
TOKEN_LINE = "<start>(49406) a(320) red(736) circle(7117) <end>(49407)   [chunk 1: 3 tokens + padding]"


def tile_colour(row: int, step: int) -> tuple[int, int, int]:
    """A colour that says which row and step a tile is (so the test can tell what is shown)."""
    return (40 * row + 20, 40 * step + 30, 200 - 30 * row)


def fabricate_view(folder) -> dict:
    """A trace in the KSamplerTrace contract (notes/trace_contract.md): PNG tiles, every schedule's
    sigmas, the prompt's tokens and an .npz of per-step attention maps."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = ("x_t", "denoised", "eps", "update")
    tiles = {name: [] for name in rows}
    for r, name in enumerate(rows):
        for s in range(STEPS):
            path = folder / f"{name}_{s}.png"
            Image.new("RGB", (32, 32), tile_colour(r, s)).save(path)
            tiles[name].append(str(path))
    normal = [14.6, 6.0, 2.5, 0.9, 0.25, 0.0]
    karras = [14.6, 4.2, 1.0, 0.2, 0.03, 0.0]
    maps = np.zeros((STEPS, len(TOKENS), H, W), np.float32)
    for k, token in enumerate(TOKENS):
        maps[:, k, :, : W // 2] = LEFT[token]
        maps[:, k, :, W // 2:] = RIGHT[token]
    maps[0, 2] *= 0.5  # the first step looks less at "circle" (so steps differ)
    np.savez(folder / "attention.npz", maps=maps, total=maps.sum(axis=0))
    return {
        "steps": [{"index": i, "sigma_from": normal[i], "sigma_to": normal[i + 1], "t": 999.0 - 200 * i}
                  for i in range(STEPS)],
        "tiles": tiles,
        "row_labels": {"x_t": "x_t (noisy latent)", "denoised": "x̂₀ (denoised)", "eps": "ε̂ (guided noise)",
                       "update": "applied update"},
        "schedule": {"active": "normal", "sigmas": {"normal": normal, "karras": karras}},
        "tokens": list(TOKENS),
        "attention": str(folder / "attention.npz"),
        "image_size": [64, 64],
    }


class TokenizeToy(Node):
    """Shows a token list as CLIPTokenize does (its TOKENS output is what makes the list clickable)."""
    category = "conditioning"
    inputs = [String("text", "a red circle")]
    outputs = [Output("TOKENS", T.TOKENS, "the tokens")]

    def run(self, ctx, text):
        return NodeOutput((text,), {"text": [TOKEN_LINE]})


class TraceToy(Node):
    """Hands the editor a fabricated trace, as KSamplerTrace does."""
    category = "sampling"
    output_node = True
    inputs = [Link("tokens", T.TOKENS, tooltip="the prompt")]
    outputs = []
    view: dict = {}

    def run(self, ctx, tokens):
        return NodeOutput((), {"trace": [TraceToy.view]})


class LatentPreviewToy(Node):
    """Previews each step of a LATENT it makes (a sampler's live preview, no IMAGE output)."""
    category = "sampling"
    inputs = [String("label", "x")]
    outputs = [Output("LATENT", T.LATENT, "a latent")]

    def run(self, ctx, label):
        for i in range(3):
            ctx.preview(Image.new("RGB", (64, 64), (60 * i, 90, 160)), i + 1)
            ctx.progress(i + 1, 3)
        return (label,)


@pytest.fixture
def window(qtbot, tmp_path, monkeypatch):
    monkeypatch.setenv("SDGRAPH_DATA_DIR", str(tmp_path / "data"))
    from nodes.core.env import SDEnvironment
    from ui import theme
    from ui.main_window import MainWindow

    theme.apply(__import__("PySide6.QtWidgets", fromlist=["QApplication"]).QApplication.instance())
    registry = support.ui_registry()
    for cls in (TokenizeToy, TraceToy, LatentPreviewToy):
        registry.register(cls)
    env = SDEnvironment(models_dir=tmp_path / "models", output_dir=tmp_path / "out", input_dir=tmp_path / "in")
    w = MainWindow(registry, env)
    w.quiet_errors = True
    w.ask_unsaved = lambda: "discard"
    qtbot.addWidget(w)
    w.resize(1400, 900)
    w.show()
    qtbot.waitExposed(w)
    yield w
    w.runner.shutdown()


@pytest.fixture
def traced(qtbot, window, tmp_path):
    """The window after running CLIPTokenize-like → TraceToy: (window, tokenize id, trace id)."""
    TraceToy.view = fabricate_view(tmp_path / "trace")
    ed = window.editor
    tok = ed.add_node("TokenizeToy", (0, 0))
    trace = ed.add_node("TraceToy", (360, 0))
    ed.connect(tok, 0, trace, "tokens")
    window.view.fit_all()
    job = window.run()
    wait_job(qtbot, job)
    assert job.status == "ok", job.message
    return window, tok, trace


def test_a_trace_opens_the_panel_and_the_scrubber_shows_each_steps_tiles(qtbot, traced):
    window, _tok, trace = traced
    panel = window.trace_panel
    assert window.trace_dock.isVisible() and panel.node_id == trace
    assert (panel.slider.minimum(), panel.slider.maximum(), panel.slider.value()) == (0, STEPS - 1, STEPS - 1)
    # the token list: each word with its share of the run's attention to the prompt (left and right halves)
    total = {t: (4.5 if t == "circle" else 5) * (LEFT[t] + RIGHT[t]) for t in TOKENS}  # "circle" halved at step 1
    expected = [f"{t}   {total[t] / sum(total.values()):.0%}" for t in TOKENS]
    assert [panel.token_list.item(i).text() for i in range(panel.token_list.count())] == expected
    panel.slider.setFocus()
    for step in reversed(range(STEPS)):  # scrub back with the keyboard, one step at a time
        if step != STEPS - 1:
            QTest.keyClick(panel.slider, Qt.Key_Left)
        assert panel.step == step and panel.plot.step == step
        for r, name in enumerate(("x_t", "denoised", "eps", "update")):
            assert panel.tiles[name].image.pixelColor(5, 5) == QColor(*tile_colour(r, step)), (name, step)
        assert panel.step_label.text().startswith(f"step {step + 1}/{STEPS}")
    assert panel.tiles["denoised"].caption == "x̂₀ (denoised)"

    # the schedule plot marks the step where the run's schedule is at that step's sigma
    panel.slider.setValue(2)
    plot = panel.plot
    image = plot.grab().toImage()
    lo, hi = plot._range()
    from PySide6.QtCore import QRectF

    area = QRectF(46, 26, plot.width() - 60, plot.height() - 58)
    marked = plot.point(area, 2, 6, 2.5, lo, hi)
    ratio = image.width() / plot.width()
    colour = image.pixelColor(int(marked.x() * ratio), int(marked.y() * ratio))
    assert (colour.red(), colour.green(), colour.blue()) == (0xf2, 0xc1, 0x4e)  # the step's marker
    elsewhere = plot.point(area, 4, 6, 0.25, lo, hi)
    colour = image.pixelColor(int(elsewhere.x() * ratio), int(elsewhere.y() * ratio))
    assert (colour.red(), colour.green(), colour.blue()) != (0xf2, 0xc1, 0x4e)
    assert set(plot.schedules) == {"normal", "karras"} and plot.active == "normal"


def test_hovering_the_image_ranks_the_tokens_at_that_pixel(qtbot, traced):
    window, _tok, _trace = traced
    panel = window.trace_panel
    view = panel.heatmap
    left = view.widget_pos(8, 2)
    QTest.mouseMove(view, left.toPoint())
    qtbot.waitUntil(lambda: panel.ranking != [])
    # in the picture's pixels: map pixel (8, 2) of 16×16 is (10, 34) of the 64×64 image
    assert panel.rank_label.text() == "at pixel (10, 34), share of the prompt's words: " \
                                      "circle 0.62, red 0.21, a 0.10, <end> 0.07"
    assert view.toolTip() == "circle 0.62, red 0.21, a 0.10, <end> 0.07"
    QTest.mouseMove(view, view.widget_pos(3, 13).toPoint())
    qtbot.waitUntil(lambda: panel.ranking and panel.ranking[0][0] == "red")
    assert [w for w, _s in panel.ranking] == ["red", "circle", "<end>", "a"]
    assert panel.ranking[0][1] == pytest.approx(0.70, abs=1e-6)
    # at the first step "circle" had half its weight: the per-step ranking says so, the sum less so
    panel.slider.setValue(0)
    first = panel.hover_at(8, 2)
    assert first[0] == ("circle", pytest.approx(0.31 / 0.69, abs=1e-5))
    panel.scope.setCurrentIndex(1)  # summed over the decided steps
    summed = panel.hover_at(8, 2)
    assert summed[0] == ("circle", pytest.approx((0.31 + 4 * 0.62) / (0.69 + 4 * 1.0), abs=1e-5))


def test_clicking_a_token_in_the_token_list_shows_its_heatmap(qtbot, traced):
    window, tok, _trace = traced
    panel = window.trace_panel
    panel.show_token(1)  # "red"
    item = window.scene.nodes[tok]
    assert item.shows_tokens() and item.result_lines
    # the word "circle" in the node's list, found as the user sees it
    from PySide6.QtGui import QFontMetricsF

    from ui import theme
    from ui.node_item import PAD

    row, line = next((i, text) for i, text in enumerate(item.result_lines) if "circle(" in text)
    start = line.index("circle(")
    fm = QFontMetricsF(theme.node_font(8.5))
    local = QPointF(PAD + 4 + fm.horizontalAdvance(line[:start]) + 6,
                    item._result_top() + 3 + fm.lineSpacing() * (row + 0.5))
    assert item.token_at(local) == ("circle", 3)
    window.trace_dock.hide()
    point = window.view.mapFromScene(item.mapToScene(local))
    QTest.mouseMove(window.view.viewport(), point)  # the word under the mouse says it can be clicked
    qtbot.waitUntil(lambda: item._hover_token is not None)
    assert item.cursor().shape() == Qt.PointingHandCursor
    QTest.mouseClick(window.view.viewport(), Qt.LeftButton, Qt.NoModifier, point)
    qtbot.waitUntil(lambda: panel.token == 2)
    assert window.trace_dock.isVisible() and panel.token_list.currentRow() == 2
    # the map shown is "circle"'s: brightest on the left half, where it had the larger share
    panel.style_box.setCurrentIndex(1)  # as a colour map
    heat = panel.heat_values()
    assert heat[:, : W // 2].mean() == pytest.approx(1.0) and heat[:, W // 2:].mean() < 0.3
    image = panel.heatmap.grab().toImage()
    l_pt, r_pt = panel.heatmap.widget_pos(8, 3), panel.heatmap.widget_pos(8, 12)
    ratio = image.width() / panel.heatmap.width()
    bright = QColor(image.pixelColor(int(l_pt.x() * ratio), int(l_pt.y() * ratio))).lightness()
    dim = QColor(image.pixelColor(int(r_pt.x() * ratio), int(r_pt.y() * ratio))).lightness()
    assert bright > dim + 80
    # a token the trace has not: said, not guessed
    assert not panel.show_word("banana") and "banana" in panel.rank_label.text()
    support.shot(window, "trace_panel")


def test_the_trace_follows_the_selected_trace_node(qtbot, traced, tmp_path):
    window, _tok, trace = traced
    panel = window.trace_panel
    panel.add_trace("99", fabricate_view(tmp_path / "other"))
    assert panel.node_id == "99"
    window.scene.clearSelection()
    window.scene.nodes[trace].setSelected(True)
    assert panel.node_id == trace


def test_the_explain_menu_lists_the_explainer_workflows_there_are_now(qtbot, window, tmp_path, monkeypatch):
    from ui import help as help_pages

    folder = tmp_path / "workflows"
    folder.mkdir()
    monkeypatch.setattr(help_pages, "WORKFLOWS", folder)
    window.rebuild_explain_menu()
    assert not [a for a in window.explain_menu.actions() if a.data()]
    graph = {"format": "sdgraph.workflow", "version": 1, "nodes": {"1": {"type": "Number", "values": {"value": 2}}}}
    (folder / "explain_02_schedules.json").write_text(json.dumps(graph))
    (folder / "explain_01_tokens.json").write_text(json.dumps({**graph, "ui": {"title": "What the prompt becomes"}}))
    (folder / "other.json").write_text(json.dumps(graph))
    window.explain_menu.aboutToShow.emit()  # what opening the menu does: lists the files there are now
    lessons = [a for a in window.explain_menu.actions() if a.data()]
    assert [a.text() for a in lessons] == ["What the prompt becomes", "02 schedules"]
    lessons[1].trigger()
    assert [n.type for n in window.editor.graph.nodes.values()] == ["Number"]
    assert window.editor.path is None  # a copy: Ctrl+S asks for a name, the lesson stays as shipped
    assert "explain_02_schedules.json" in window.statusBar().currentMessage()


def test_help_shows_the_explainer_page_and_f1_the_selected_nodes_reference(qtbot, window, tmp_path, monkeypatch):
    from ui import help as help_pages

    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "how-stable-diffusion-works.md").write_text("# How Stable Diffusion works\n\nNoise, then **less** noise.\n")
    monkeypatch.setattr(help_pages, "DOCS", docs)
    help_menu = next(a.menu() for a in window.menuBar().actions() if a.text() == "&Help")
    texts = [a.text() for a in help_menu.actions()]
    assert "How Stable Diffusion Works…" in texts and "How Stable Diffusion Works (简体中文)…" in texts
    next(a for a in help_menu.actions() if a.text() == "How Stable Diffusion Works…").trigger()
    assert "Noise, then less noise." in window.doc_viewer.text()
    nid = window.editor.add_node("Steps", (0, 0))
    window.scene.clearSelection()
    window.scene.nodes[nid].setSelected(True)
    window.view.setFocus()
    QTest.keyClick(window.view, Qt.Key_F1)
    ref = window.node_reference
    assert ref.current_type() == "Steps"
    cls = window.editor.registry.get("Steps")
    assert cls.description.split("\n")[0] in ref.browser.toPlainText()
    assert all(spec.name in ref.browser.toPlainText() for spec in cls.inputs)
    ref.filter.setText("latent preview")
    visible = [ref.list.item(i).data(Qt.UserRole) for i in range(ref.list.count()) if not ref.list.item(i).isHidden()]
    assert visible == ["LatentPreviewToy"]


def test_a_samplers_live_preview_stays_on_the_node_after_the_run(qtbot, window):
    nid = window.editor.add_node("LatentPreviewToy", (0, 0))
    show = window.editor.add_node("Show", (320, 0))
    window.editor.connect(nid, 0, show, "value")
    job = window.run()
    wait_job(qtbot, job)
    assert job.status == "ok"
    item = window.scene.nodes[nid]
    assert item.image is not None and item.image_is_preview
    assert item.image.pixelColor(10, 10) == QColor(120, 90, 160)  # the last step's preview


def test_the_first_start_opens_the_default_workflow_as_an_unsaved_copy(qtbot, tmp_path, monkeypatch):
    monkeypatch.setenv("SDGRAPH_DATA_DIR", str(tmp_path / "data"))
    from nodegraph import REGISTRY
    from nodes.core.env import SDEnvironment
    from ui.main_window import MainWindow

    REGISTRY.discover("nodes")
    env = SDEnvironment(models_dir=tmp_path / "models", output_dir=tmp_path / "out", input_dir=tmp_path / "in")
    w = MainWindow(REGISTRY, env)
    w.quiet_errors = True
    w.ask_unsaved = lambda: "discard"
    qtbot.addWidget(w)
    assert w.open_first_start()
    types = {n.type for n in w.editor.graph.nodes.values()}
    assert {"CheckpointLoaderSimple", "CLIPTokenize", "KSampler", "SaveImage"} <= types
    assert w.editor.path is None  # saving asks for a name: workflows/default.json stays as shipped
    w.new_document()
    assert not w.open_first_start() and not w.editor.graph.nodes  # only the first time
    w.runner.shutdown()
