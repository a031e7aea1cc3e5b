"""Files in the editor: save/reopen, ComfyUI API and PNG import, dirty marker, autosave/restore."""

from __future__ import annotations

import json
from pathlib import Path

from PySide6.QtCore import QMimeData, QPointF, Qt, QUrl
from PySide6.QtGui import QDropEvent

from nodegraph.workflow import to_comfy_api, to_native
from tests import test_ui_support as support
from tests.test_ui_support import build_chain
from ui import files

window = support.window  # the fixture


def test_save_and_reopen_round_trip(qtbot, window, tmp_path):
    ed = window.editor
    a, b, c = build_chain(window, steps=9)
    ed.rename(b, "Counter")
    ed.set_as_socket(b, "delay", True)
    assert window.isWindowModified()
    path = tmp_path / "flow.json"
    window.ask_save_path = lambda title, suggested: str(path)
    assert window.save()
    assert not window.isWindowModified() and "flow.json" in window.windowTitle()
    saved = json.loads(path.read_text())
    assert saved["format"] == "sdgraph.workflow" and saved["nodes"][b]["values"]["steps"] == 9
    assert "view" in saved["ui"]
    before = to_native(ed.graph)
    window.new_document()
    assert len(ed.graph) == 0 and not window.scene.nodes
    assert window.open_path(str(path))
    assert to_native(ed.graph)["nodes"] == before["nodes"]
    assert window.scene.nodes[b].title() == "Counter" and "delay" in window.scene.nodes[b].inputs
    assert set(window.scene.edges) == {(b, "x"), (c, "value")}
    assert files.recent_files()[0] == str(path.resolve())
    assert window.recent_menu.actions()[0].text().endswith(str(path.resolve()))


def test_closing_with_unsaved_work_asks_first(qtbot, window):
    build_chain(window)
    asked = []
    window.ask_unsaved = lambda: asked.append(1) or "cancel"
    window.close()
    assert asked and window.isVisible()
    window.ask_unsaved = lambda: "discard"
    window.close()
    assert not window.isVisible()


def test_open_comfyui_api_json(qtbot, window, tmp_path):
    api = {"1": {"class_type": "Number", "inputs": {"value": 3.0}},
           "2": {"class_type": "Show", "inputs": {"value": ["1", 0]}, "_meta": {"title": "Result"}}}
    path = tmp_path / "api.json"
    path.write_text(json.dumps(api))
    assert window.open_path(str(path))
    ed = window.editor
    assert ed.graph.nodes["2"].links == {"value": ("1", 0)} and ed.graph.nodes["1"].values["value"] == 3.0
    assert window.scene.nodes["2"].title() == "Result"
    assert ed.path == str(path.resolve()) and window.doc_format == "comfy_api"  # saving over it asks first
    assert to_comfy_api(ed.graph)["2"]["inputs"] == {"value": ["1", 0]}


def test_reopen_a_png_that_a_run_produced(qtbot, window, tmp_path):
    """Run a workflow whose save node writes the PNG (with the workflow chunks SaveImage writes),
    then drop that PNG back onto the window: the graph that ran comes back."""
    from nodegraph.fileio import read_png_text
    from nodegraph.workflow import PNG_API_KEY, PNG_NATIVE_KEY

    ed = window.editor
    a, b, c = build_chain(window, steps=4)
    ed.rename(b, "Counter")
    g = ed.add_node("Gradient", (0, 260))
    s = ed.add_node("SaveImageToy", (320, 260))
    ed.connect(g, 0, s, "image")
    ed.set_value(g, "hue", 0.25)
    ed.set_as_socket(g, "steps", True)
    ran = to_native(ed.snapshot())
    job = window.run()
    support.wait_job(qtbot, job)
    assert job.status == "ok"
    [png] = window.gallery.paths()
    chunks = read_png_text(Path(png).read_bytes())
    assert json.loads(chunks[PNG_NATIVE_KEY])["nodes"] == ran["nodes"]
    assert json.loads(chunks[PNG_API_KEY])[s]["class_type"] == "SaveImageToy"
    ed.set_value(g, "hue", 0.9)  # the document moves on after the run…
    window.new_document()
    assert len(ed.graph) == 0
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(png)])
    window.view.dropEvent(QDropEvent(QPointF(50, 50), Qt.CopyAction, mime, Qt.LeftButton, Qt.NoModifier))
    # …and the PNG restores exactly the graph that ran, as an unsaved document
    assert to_native(ed.graph)["nodes"] == ran["nodes"]
    assert set(window.scene.nodes) == {a, b, c, g, s}
    assert set(window.scene.edges) == {(b, "x"), (c, "value"), (s, "image")}
    assert window.scene.nodes[b].title() == "Counter" and "steps" in window.scene.nodes[g].inputs
    assert ed.path is None  # imported: saving asks for a name
    job = window.run()  # and it runs again
    support.wait_job(qtbot, job)
    assert job.status == "ok" and window.scene.nodes[c].text_result == "5.0"


def test_broken_file_is_reported_not_fatal(qtbot, window, tmp_path):
    path = tmp_path / "bad.json"
    path.write_text("{not json")
    assert not window.open_path(str(path))
    assert "not valid JSON" in window.statusBar().currentMessage()


def test_dropping_a_file_on_the_window_opens_it(qtbot, window, tmp_path):
    build_chain(window)
    path = tmp_path / "dropped.json"
    files.save(window.editor.graph, str(path))
    window.new_document()
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(path))])
    event = QDropEvent(QPointF(50, 50), Qt.CopyAction, mime, Qt.LeftButton, Qt.NoModifier)
    window.view.dropEvent(event)
    assert len(window.editor.graph) == 3


def test_autosave_and_restore_after_a_crash(qtbot, window, tmp_path):
    build_chain(window, steps=11)
    window.autosave_now()
    assert window.autosave.exists()
    saved_nodes = to_native(window.editor.graph)["nodes"]
    # a new editor process finds the autosave file (the previous one "crashed")
    from ui.main_window import MainWindow

    other = MainWindow(window.editor.registry, window.editor.env)
    other.quiet_errors = True
    offered = []
    other.ask_restore = lambda source: offered.append(source) or True
    other.ask_unsaved = lambda: "discard"
    qtbot.addWidget(other)
    assert other.offer_restore()
    assert offered == [None]
    assert to_native(other.editor.graph)["nodes"] == saved_nodes
    assert other.is_dirty() and other.isWindowModified()
    # declining removes it
    other.autosave.write(other.editor.graph, None)
    other.ask_restore = lambda source: False
    assert not other.offer_restore() and not other.autosave.exists()


def test_model_folder_setting_is_remembered(qtbot, window, tmp_path):
    models = tmp_path / "my_models"
    models.mkdir()
    window.choose_models_dir(str(models))
    assert window.editor.env.models_dir == models
    from nodes.core.env import SDEnvironment
    from ui.main_window import MainWindow

    other = MainWindow(window.editor.registry, SDEnvironment())
    other.ask_unsaved = lambda: "discard"
    qtbot.addWidget(other)
    assert other.editor.env.models_dir == models


def test_a_model_folder_given_on_the_command_line_wins_over_the_saved_one(qtbot, window, tmp_path):
    saved, given = tmp_path / "saved_models", tmp_path / "given_models"
    saved.mkdir()
    given.mkdir()
    window.choose_models_dir(str(saved))  # remembered in Settings
    from nodes.core.env import SDEnvironment
    from ui.main_window import MainWindow

    other = MainWindow(window.editor.registry, SDEnvironment(models_dir=given), use_saved_models_dir=False)
    other.ask_unsaved = lambda: "discard"
    qtbot.addWidget(other)
    assert other.editor.env.models_dir == given
    assert files.settings().value("models_dir") == str(saved)  # and the setting is left alone


def test_compile_setting_applies_to_the_next_run_and_is_remembered(qtbot, window):
    assert window.compile_action.isEnabled() and not window.compile_action.isChecked()
    window.compile_action.trigger()  # Settings ▸ Compile Models
    assert window.editor.env.compile_setting == "inductor"
    assert window.runner.executor.env is window.editor.env  # what the next run's nodes see as ctx.compile
    from nodes.core.env import SDEnvironment
    from ui.main_window import MainWindow

    other = MainWindow(window.editor.registry, SDEnvironment())
    other.ask_unsaved = lambda: "discard"
    qtbot.addWidget(other)
    assert other.compile_action.isChecked() and other.editor.env.compile_setting == "inductor"
    other.compile_action.trigger()
    assert other.editor.env.compile_setting is None and not files.settings().value("compile", type=bool)
