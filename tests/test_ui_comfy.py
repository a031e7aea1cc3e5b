"""ComfyUI's workflows in the editor: a UI workflow opens with its groups as framed regions and its
notes as comment cards, unknown nodes greyed with their own title and type; it saves back in
ComfyUI's format (asking before it changes the file's format) and reopens the same; ComfyUI and
A1111 images dropped on the window open; Fit All shows every node clear of the side panels."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PySide6.QtCore import QMimeData, QPointF, Qt, QUrl
from PySide6.QtGui import QDropEvent

from nodegraph import REGISTRY
from nodegraph.workflow import detect_format, to_comfy_api, to_native
from tests.shared import FIXTURES
from tests.test_ui_support import shot
from ui.decorations import GroupItem, NoteItem

COMFY = FIXTURES / "comfy_workflows"
REPO = Path(__file__).resolve().parent.parent
SDXL = "examples__sdxl_sdxl_refiner_prompt_example.ui.json"


@pytest.fixture
def sd_window(qtbot, tmp_path, monkeypatch, shared_fixtures):
    monkeypatch.setenv("SDGRAPH_DATA_DIR", str(tmp_path / "data"))
    from PySide6.QtWidgets import QApplication

    from nodes.core.env import SDEnvironment
    from ui import theme
    from ui.main_window import MainWindow

    REGISTRY.discover("nodes")
    theme.apply(QApplication.instance())
    (tmp_path / "models" / "checkpoints").mkdir(parents=True)
    (tmp_path / "models" / "checkpoints" / "realistic_realisticVisionV20_v20.safetensors").write_bytes(b"")
    env = SDEnvironment(models_dir=tmp_path / "models", output_dir=tmp_path / "out", input_dir=tmp_path / "in")
    w = MainWindow(REGISTRY, env)
    w.quiet_errors = True
    w.ask_unsaved = lambda: "discard"
    qtbot.addWidget(w)
    w.resize(1600, 950)
    w.show()
    qtbot.waitExposed(w)
    return w


def drop(window, path: Path) -> None:
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(path))])
    window.view.dropEvent(QDropEvent(QPointF(50, 50), Qt.CopyAction, mime, Qt.LeftButton, Qt.NoModifier))


def test_a_ui_workflow_opens_with_groups_and_notes_and_saves_back_in_comfyuis_format(qtbot, sd_window, tmp_path):
    w = sd_window
    source = tmp_path / SDXL
    source.write_text((COMFY / SDXL).read_text())
    assert w.open_path(str(source))
    doc = json.loads(source.read_text())
    groups = [d for d in w.scene.decorations if isinstance(d, GroupItem)]
    notes = [d for d in w.scene.decorations if isinstance(d, NoteItem)]
    assert sorted(g.title for g in groups) == sorted(g["title"] for g in doc["groups"])
    assert len([n for n in notes if n.key == "notes"]) == sum(n["type"] in ("Note", "MarkdownNote")
                                                              for n in doc["nodes"]) > 0
    assert len([n for n in notes if n.key == "primitives"]) == sum(n["type"] == "PrimitiveNode" for n in doc["nodes"])
    for group, item in zip(doc["groups"], groups, strict=True):  # drawn where ComfyUI draws them
        assert (item.pos().x(), item.pos().y()) == tuple(group["bounding"][:2])
    assert not set(w.editor.graph.nodes) & {n.note_id for n in notes}  # cards, not nodes: they never run
    assert w.editor.path == str(source.resolve()) and w.doc_format == "comfy_ui"
    qtbot.wait(50)
    shot(w, "comfyui_workflow")

    # Save over it: the editor asks, and keeping ComfyUI's format writes ComfyUI's format
    before = to_native(w.editor.graph)
    w.editor.set_value("10", "steps", 30)
    asked = []
    w.ask_keep_format = lambda path, fmt: asked.append(fmt) or "cancel"
    assert not w.save() and asked == ["comfy_ui"] and json.loads(source.read_text()) == doc
    w.ask_keep_format = lambda path, fmt: "keep"
    assert w.save()
    saved = json.loads(source.read_text())
    assert detect_format(saved) == "comfy_ui"
    assert next(n for n in saved["nodes"] if n["id"] == 10)["widgets_values"][3] == 30

    # and reopened it is the same workflow
    assert w.open_path(str(source))
    again = to_native(w.editor.graph)
    before["nodes"]["10"]["values"]["steps"] = 30
    again["ui"].pop("view"), before["ui"].pop("view", None)
    assert again == before


def test_save_as_comfyui_workflow_then_save_as_sdgraph(qtbot, sd_window, tmp_path):
    w = sd_window
    assert w.open_path(str(REPO / "workflows" / "txt2img.json"))
    target = tmp_path / "back_to_comfy.json"
    w.ask_save_path = lambda title, suggested: str(target)
    assert w.save_as_comfy()
    assert detect_format(json.loads(target.read_text())) == "comfy_ui" and w.doc_format == "comfy_ui"
    api = to_comfy_api(w.editor.graph)
    assert w.open_path(str(target))
    assert to_comfy_api(w.editor.graph) == api
    ours = tmp_path / "ours.json"
    w.ask_keep_format = lambda path, fmt: "sdgraph"
    w.ask_save_path = lambda title, suggested: str(ours)
    w.editor.set_value("7", "steps", 12)
    assert w.save()
    assert detect_format(json.loads(ours.read_text())) == "native"
    assert detect_format(json.loads(target.read_text())) == "comfy_ui"  # the ComfyUI file is as it was


def test_unknown_nodes_are_greyed_with_their_own_title_and_type(qtbot, sd_window):
    w = sd_window
    assert w.open_path(str(COMFY / "examples__edit_models_sdxl_edit_model.ui.json"))
    item = w.scene.nodes["37"]
    assert item.cls is None and item.title() == "workflow/IP2PSampler"
    texts = [text for _rect, text, _align, _colour in item.labels]
    assert "workflow/IP2PSampler — unknown here, not run" in texts
    assert set(item.inputs) == {"model", "positive", "negative", "vae", "pixels"}
    assert [s.name for s in item.outputs] == ["output", "denoised_output"]
    assert any("unknown node type" in m for m in w.problems.messages())
    bypassed = w.scene.nodes["38"]
    assert bypassed.node.ui["mode"] == "bypassed"


def test_dropping_comfyui_and_a1111_images_opens_their_workflows(qtbot, sd_window):
    w = sd_window
    drop(w, COMFY / "png" / "examples__lora_lora.png")
    assert {n.type for n in w.editor.graph.nodes.values()} >= {"KSampler", "CheckpointLoaderSimple", "SaveImage"}
    assert w.editor.path is None  # an image is imported: saving asks for a workflow file
    drop(w, COMFY / "a1111" / "sdparsers__AUTOMATIC1111_automatic1111_cropped.png")
    graph = w.editor.graph
    [sampler] = [n for n in graph.nodes.values() if n.type == "KSampler"]
    assert sampler.values["sampler_name"] == "uni_pc" and sampler.values["steps"] == 15
    [loader] = [n for n in graph.nodes.values() if n.type == "CheckpointLoaderSimple"]
    assert loader.values["ckpt_name"] == "realistic_realisticVisionV20_v20.safetensors"  # matched in the folder
    assert [d for d in w.scene.decorations if isinstance(d, NoteItem)]  # the fields with no node


def test_fit_all_shows_every_node_clear_of_the_side_panels(qtbot, sd_window):
    w = sd_window
    for path in (REPO / "workflows" / "txt2img.api.json", COMFY / SDXL,
                 COMFY / "examples__area_composition_square_area_for_subject.api.json"):
        assert w.open_path(str(path))
        qtbot.wait(20)  # the second fit, after the Problems panel took its room
        seen = w.view.mapToScene(w.view.viewport().rect()).boundingRect()
        for nid, item in w.scene.nodes.items():
            assert seen.contains(item.sceneBoundingRect()), (path.name, nid)
        canvas = w.view.viewport().rect().translated(w.view.viewport().mapTo(w, QPointF(0, 0).toPoint()))
        for dock in (w.queue_dock, w.gallery_dock, w.problems_dock):
            if dock.isVisible():
                assert not canvas.intersects(dock.geometry()), dock.objectName()


def test_moving_a_note_is_kept_and_undone(qtbot, sd_window):
    w = sd_window
    assert w.open_path(str(COMFY / SDXL))
    note = next(d for d in w.scene.decorations if isinstance(d, NoteItem) and d.key == "notes")
    old = next(n["pos"] for n in w.editor.graph.ui["notes"] if n["id"] == note.note_id)
    w.editor.move_note(note.note_id, [old[0] + 100, old[1]])
    assert next(n["pos"] for n in w.editor.graph.ui["notes"] if n["id"] == note.note_id) == [old[0] + 100, old[1]]
    moved = next(d for d in w.scene.decorations if isinstance(d, NoteItem) and d.note_id == note.note_id)
    assert moved.pos().x() == old[0] + 100
    w.editor.undo.undo()
    assert next(n["pos"] for n in w.editor.graph.ui["notes"] if n["id"] == note.note_id) == old
