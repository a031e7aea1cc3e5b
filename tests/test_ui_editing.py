"""Driving the editor as a user would: search, drags, edits, undo/redo, clipboard."""

from __future__ import annotations

from PySide6.QtCore import QPointF, Qt
from PySide6.QtTest import QTest

from tests import test_ui_support as support
from tests.test_ui_support import build_chain, drag, shot, socket_pos, vpos

window = support.window  # the fixture


def _type_in_search(qtbot, window, text: str) -> None:
    qtbot.waitUntil(window.search.isVisible, timeout=2000)
    QTest.keyClicks(window.search.edit, text)
    QTest.keyClick(window.search.edit, Qt.Key_Return)


def test_adding_nodes_through_the_search_box(qtbot, window):
    view = window.view
    view.setFocus()
    QTest.mouseDClick(view.viewport(), Qt.LeftButton, Qt.NoModifier, vpos(view, QPointF(0, 0)))
    assert window.search.isVisible()
    QTest.keyClicks(window.search.edit, "mul")
    assert window.search.results()[0] == "Mul"
    shot(window, "search_open")
    QTest.keyClick(window.search.edit, Qt.Key_Return)
    assert not window.search.isVisible()
    assert [n.type for n in window.editor.graph.nodes.values()] == ["Mul"]
    # Tab opens it too; fuzzy over the description ("constant" is in Number's docstring)
    view.setFocus()
    QTest.keyClick(view, Qt.Key_Tab)
    _type_in_search(qtbot, window, "constant")
    assert sorted(n.type for n in window.editor.graph.nodes.values()) == ["Mul", "Number"]
    assert len(window.scene.nodes) == 2


def test_connecting_by_drag_and_refusing_incompatible_drop(qtbot, window):
    ed = window.editor
    num = ed.add_node("Number", (0, 0))
    add = ed.add_node("Add", (350, 0))
    lat = ed.add_node("MakeLatent", (0, 200))
    window.view.fit_all()
    drag(window.view, socket_pos(window, num, output=0), socket_pos(window, add, input="a"))
    assert ed.graph.nodes[add].links == {"a": (num, 0)}
    assert (add, "a") in window.scene.edges
    # LATENT cannot feed a FLOAT input: the drop is refused with a visible hint
    drag(window.view, socket_pos(window, lat, output=0), socket_pos(window, add, input="b"))
    assert "b" not in ed.graph.nodes[add].links
    assert "types differ" in window.scene.last_hint
    assert window.scene._hint_item is not None and window.scene._hint_item.isVisible()
    shot(window, "refused_drop")
    # dragging a linked input away onto empty canvas disconnects it
    drag(window.view, socket_pos(window, add, input="a"), QPointF(200, 400))
    assert ed.graph.nodes[add].links == {}
    window.editor.undo.undo()
    assert ed.graph.nodes[add].links == {"a": (num, 0)}


def test_incompatible_sockets_dim_while_dragging(qtbot, window):
    ed = window.editor
    lat = ed.add_node("MakeLatent", (0, 0))
    add = ed.add_node("Add", (350, 0))
    show = ed.add_node("Show", (350, 200))
    window.view.fit_all()
    window.scene.begin_link_drag(window.scene.nodes[lat].outputs[0], QPointF(100, 0))
    assert window.scene.nodes[add].inputs["a"].dimmed
    assert not window.scene.nodes[show].inputs["value"].dimmed  # ANY accepts LATENT
    window.scene.end_link_drag(socket_pos(window, show, input="value"))
    assert ed.graph.nodes[show].links == {"value": (lat, 0)}
    assert not window.scene.nodes[add].inputs["a"].dimmed


def test_dropping_a_link_on_empty_canvas_offers_compatible_nodes(qtbot, window):
    ed = window.editor
    lat = ed.add_node("MakeLatent", (0, 0))
    window.view.fit_all()
    drag(window.view, socket_pos(window, lat, output=0), QPointF(400, 50))
    assert window.search.isVisible()
    assert window.search.results() == ["Show"]  # the only node taking a LATENT (through ANY)
    QTest.keyClick(window.search.edit, Qt.Key_Return)
    show = [n.id for n in ed.graph.nodes.values() if n.type == "Show"][0]
    assert ed.graph.nodes[show].links == {"value": (lat, 0)}
    ed.undo.undo()  # one step removes the node and its link
    assert list(ed.graph.nodes) == [lat]


def test_editing_values_in_node_widgets_and_undo_redo(qtbot, window):
    ed = window.editor
    nid = ed.add_node("Steps", (0, 0))
    item = window.scene.nodes[nid]
    spin = item.fields["steps"]
    spin.lineEdit().selectAll()
    QTest.keyClicks(spin.lineEdit(), "12")
    QTest.keyClick(spin.lineEdit(), Qt.Key_Return)
    assert ed.graph.nodes[nid].values["steps"] == 12
    item.fields["delay"].setValue(0.25)
    assert ed.graph.nodes[nid].values["delay"] == 0.25
    ed.undo.undo()
    assert ed.graph.nodes[nid].values["delay"] == 0.0 and item.fields["delay"].value() == 0.0
    ed.undo.undo()
    assert ed.graph.nodes[nid].values["steps"] == 3 and spin.value() == 3
    ed.undo.redo()
    assert spin.value() == 12
    # a value above the declared maximum is clamped by the widget
    spin.lineEdit().selectAll()
    QTest.keyClicks(spin.lineEdit(), "5000")
    QTest.keyClick(spin.lineEdit(), Qt.Key_Return)
    assert ed.graph.nodes[nid].values["steps"] <= 1000


def test_text_and_choice_widgets(qtbot, window):
    ed = window.editor
    t = ed.add_node("Text", (0, 0))
    f = ed.add_node("Fail", (0, 250))
    text = window.scene.nodes[t].fields["text"]
    text.setFocus()
    QTest.keyClick(text, Qt.Key_End, Qt.ControlModifier)
    QTest.keyClicks(text, " world")
    assert ed.graph.nodes[t].values["text"].endswith(" world")
    ed.undo.undo()  # typing merges into one undo step
    assert ed.graph.nodes[t].values["text"] == "hello"
    combo = window.scene.nodes[f].fields["how"]
    combo.lineEdit().selectAll()
    QTest.keyClicks(combo.lineEdit(), "input")
    QTest.keyClick(combo.lineEdit(), Qt.Key_Return)
    assert ed.graph.nodes[f].values["how"] == "input"
    combo.lineEdit().selectAll()
    QTest.keyClicks(combo.lineEdit(), "nonsense")
    QTest.keyClick(combo.lineEdit(), Qt.Key_Return)
    assert ed.graph.nodes[f].values["how"] == "input"  # not a choice: refused


def test_seed_widget_randomize_and_after_run_modes(qtbot, window):
    ed = window.editor
    nid = ed.add_node("SeedNode", (0, 0))
    item = window.scene.nodes[nid]
    seed = item.fields["seed"]
    seed.spin.set_value(2**63)
    seed.spin._set_and_emit(2**63 + 5)  # beyond 32 bits
    assert ed.graph.nodes[nid].values["seed"] == 2**63 + 5
    QTest.mouseClick(seed.dice, Qt.LeftButton)
    assert ed.graph.nodes[nid].values["seed"] != 2**63 + 5
    item.fields["seed:after_run"].setCurrentText("increment")
    assert ed.graph.nodes[nid].ui["after_run"] == {"seed": "increment"}
    before = ed.graph.nodes[nid].values["seed"]
    ed.apply_seed_controls()
    assert ed.graph.nodes[nid].values["seed"] == before + 1
    assert window.scene.nodes[nid].fields["seed"].spin.value() == before + 1
    shot(window, "seed_node")


def test_undo_redo_of_structure_edits(qtbot, window):
    ed = window.editor
    a, b, c = build_chain(window)
    ed.rename(b, "Counter")
    ed.set_collapsed([c], True)
    ed.set_as_socket(b, "steps", True)
    ed.move({a: ([0, 0], [0, 120])})
    ed.delete([b])
    assert b not in ed.graph.nodes and (c, "value") not in window.scene.edges
    snapshots = []
    while ed.undo.canUndo():
        snapshots.append((sorted(ed.graph.nodes), {k: dict(n.links) for k, n in ed.graph.nodes.items()}))
        ed.undo.undo()
    assert len(ed.graph.nodes) == 0 and not window.scene.nodes
    while ed.undo.canRedo():
        ed.undo.redo()
    assert b not in ed.graph.nodes
    ed.undo.undo()  # bring back the deleted node with both links
    assert ed.graph.nodes[b].links == {"x": (a, 0)} and ed.graph.nodes[c].links == {"value": (b, 0)}
    assert ed.graph.nodes[b].ui["title"] == "Counter" and ed.graph.nodes[c].ui["collapsed"]
    assert "steps" in window.scene.nodes[b].inputs and "steps" not in window.scene.nodes[b].fields
    assert window.scene.nodes[a].pos() == QPointF(0, 120)
    assert set(window.scene.edges) == {(b, "x"), (c, "value")}


def test_moving_a_node_by_mouse_is_one_undo_step(qtbot, window):
    ed = window.editor
    nid = ed.add_node("Number", (0, 0))
    window.view.fit_all()
    drag(window.view, QPointF(60, 12), QPointF(160, 62))
    assert ed.graph.nodes[nid].ui["pos"] == [100.0, 50.0]
    ed.undo.undo()
    assert ed.graph.nodes[nid].ui["pos"] == [0.0, 0.0] and window.scene.nodes[nid].pos() == QPointF(0, 0)


def test_copy_paste_and_duplicate_keep_internal_links(qtbot, window):
    ed = window.editor
    a, b, c = build_chain(window)
    for nid in (a, b):
        window.scene.nodes[nid].setSelected(True)
    window.copy()
    window.paste()
    assert len(ed.graph.nodes) == 5
    new = window.scene.selected_ids()
    assert len(new) == 2 and set(new).isdisjoint({a, b, c})
    steps_copy = [n for n in new if ed.graph.nodes[n].type == "Steps"][0]
    num_copy = [n for n in new if ed.graph.nodes[n].type == "Number"][0]
    assert ed.graph.nodes[steps_copy].links == {"x": (num_copy, 0)}
    window.duplicate()
    assert len(ed.graph.nodes) == 7
    ed.undo.undo()
    ed.undo.undo()
    assert len(ed.graph.nodes) == 3 and len(window.scene.nodes) == 3


def test_rubber_band_selection_delete_and_align(qtbot, window):
    ed = window.editor
    a = ed.add_node("Number", (0, 0))
    b = ed.add_node("Number", (40, 200))
    c = ed.add_node("Number", (600, 600))
    window.view.fit_all()
    drag(window.view, QPointF(-30, -30), QPointF(320, 330))
    assert sorted(window.scene.selected_ids()) == sorted([a, b])
    window.align("left")
    assert ed.graph.nodes[b].ui["pos"][0] == 0
    window.view.setFocus()
    QTest.keyClick(window.view, Qt.Key_Delete)
    assert list(ed.graph.nodes) == [c]
    ed.undo.undo()
    assert sorted(ed.graph.nodes) == sorted([a, b, c])


def test_rename_inline_and_delete_key_does_not_eat_field_typing(qtbot, window):
    ed = window.editor
    nid = ed.add_node("Number", (0, 0))
    item = window.scene.nodes[nid]
    item.setSelected(True)
    item.edit_title()
    editor = item._title_editor.widget()
    editor.selectAll()
    QTest.keyClicks(editor, "Base value")
    QTest.keyClick(editor, Qt.Key_Return)
    assert ed.graph.nodes[nid].ui["title"] == "Base value"
    # Delete while typing in a field edits the field, not the graph
    line = item.fields["value"].lineEdit()
    item.fields["value"].setFocus()
    line.setFocus()
    QTest.keyClick(line, Qt.Key_End)
    QTest.keyClick(line, Qt.Key_Backspace)
    assert nid in ed.graph.nodes


def test_zoom_to_cursor_and_pan(qtbot, window):
    view = window.view
    window.editor.add_node("Number", (0, 0))
    anchor = QPointF(200, 150)
    before = view.mapToScene(anchor.toPoint())
    view.set_zoom(2.0, anchor)
    after = view.mapToScene(anchor.toPoint())
    assert abs(view.zoom - 2.0) < 1e-6
    assert (before - after).manhattanLength() < 2.0
    centre = view.mapToScene(view.viewport().rect().center())
    start = view.viewport().rect().center()
    QTest.mousePress(view.viewport(), Qt.MiddleButton, Qt.NoModifier, start)
    QTest.mouseMove(view.viewport(), start + type(start)(100, 0))
    QTest.mouseRelease(view.viewport(), Qt.MiddleButton, Qt.NoModifier, start + type(start)(100, 0))
    moved = view.mapToScene(view.viewport().rect().center())
    assert abs((centre - moved).x() - 50) < 3  # 100 px at zoom 2 = 50 scene units
    # space + left drag pans too
    view.setFocus()
    QTest.keyPress(view, Qt.Key_Space)
    QTest.mousePress(view.viewport(), Qt.LeftButton, Qt.NoModifier, start)
    QTest.mouseMove(view.viewport(), start + type(start)(0, 60))
    QTest.mouseRelease(view.viewport(), Qt.LeftButton, Qt.NoModifier, start + type(start)(0, 60))
    QTest.keyRelease(view, Qt.Key_Space)
    after = view.mapToScene(view.viewport().rect().center())
    assert abs((moved - after).y() - 30) < 3
    assert not window.scene.selectedItems()  # it panned; no rubber band selection happened


def test_dynamic_choices_come_from_the_model_folder(qtbot, window):
    folder = window.editor.env.models_dir / "checkpoints"
    folder.mkdir(parents=True)
    (folder / "a.safetensors").write_bytes(b"x")
    (folder / "b.ckpt").write_bytes(b"x")
    nid = window.editor.add_node("PickModel", (0, 0))
    combo = window.scene.nodes[nid].fields["ckpt_name"]
    combo.refresh()
    assert [combo.itemText(i) for i in range(combo.count())] == ["a.safetensors", "b.ckpt"]
    combo.lineEdit().selectAll()
    QTest.keyClicks(combo.lineEdit(), "b.ckpt")
    QTest.keyClick(combo.lineEdit(), Qt.Key_Return)
    assert window.editor.graph.nodes[nid].values["ckpt_name"] == "b.ckpt"


def test_undo_redo_of_align(qtbot, window):
    ed = window.editor
    a = ed.add_node("Number", (0, 0))
    b = ed.add_node("Number", (60, 200))
    c = ed.add_node("Add", (500, 90))
    items = {n: window.scene.nodes[n] for n in (a, b, c)}
    window.view.fit_all()
    before = {n: list(ed.graph.nodes[n].ui["pos"]) for n in items}
    for edge, check in (
            ("left", lambda: {ed.graph.nodes[n].ui["pos"][0] for n in items} == {0.0}),
            ("top", lambda: {ed.graph.nodes[n].ui["pos"][1] for n in items} == {0.0}),
            ("right", lambda: len({round(ed.graph.nodes[n].ui["pos"][0] + items[n].width) for n in items}) == 1),
            ("distribute", lambda: sorted(ed.graph.nodes[n].ui["pos"][0] for n in items)[1]
             == sorted(ed.graph.nodes[n].ui["pos"][0] for n in items)[0] + items[a].width + 40)):
        window.scene.clearSelection()
        for item in items.values():
            item.setSelected(True)
        depth = ed.undo.index()
        window.align(edge)
        assert ed.undo.index() == depth + 1, edge  # one undo step per align
        assert ed.undo.undoText() == f"Align {edge}"
        assert check(), edge
        aligned = {n: list(ed.graph.nodes[n].ui["pos"]) for n in items}
        assert all(items[n].pos() == QPointF(*aligned[n]) for n in items)  # the scene followed
        ed.undo.undo()
        assert {n: list(ed.graph.nodes[n].ui["pos"]) for n in items} == before, edge
        assert all(items[n].pos() == QPointF(*before[n]) for n in items), edge
        ed.undo.redo()
        assert {n: list(ed.graph.nodes[n].ui["pos"]) for n in items} == aligned, edge
        ed.undo.undo()
    # the Align menu reaches the same command through its shortcut
    for item in items.values():
        item.setSelected(True)
    window.view.setFocus()
    QTest.keyClick(window.view, Qt.Key_Left, Qt.ControlModifier | Qt.ShiftModifier)
    assert {ed.graph.nodes[n].ui["pos"][0] for n in items} == {0.0}
    QTest.keyClick(window.view, Qt.Key_Z, Qt.ControlModifier)
    assert {n: list(ed.graph.nodes[n].ui["pos"]) for n in items} == before


def test_undo_redo_of_the_seed_after_run_mode(qtbot, window):
    ed = window.editor
    nid = ed.add_node("SeedNode", (0, 0))
    ed.set_value(nid, "seed", 10)
    item = window.scene.nodes[nid]
    combo = item.fields["seed:after_run"]
    assert combo.currentText() == "fixed" and "after_run" not in ed.graph.nodes[nid].ui
    depth = ed.undo.index()
    combo.setCurrentText("increment")  # as picking it from the list does
    assert ed.graph.nodes[nid].ui["after_run"] == {"seed": "increment"}
    assert ed.undo.index() == depth + 1 and ed.undo.undoText() == "After run"
    assert item.fields["seed:after_run"] is combo  # the combo being used is not rebuilt under the user
    combo.setCurrentText("randomize")
    ed.undo.undo()
    assert ed.graph.nodes[nid].ui["after_run"] == {"seed": "increment"} and combo.currentText() == "increment"
    ed.undo.undo()
    assert "after_run" not in ed.graph.nodes[nid].ui and combo.currentText() == "fixed"
    ed.undo.redo()
    assert ed.graph.nodes[nid].ui["after_run"] == {"seed": "increment"} and combo.currentText() == "increment"
    # the mode drives the seed change after a run, itself one undo step
    job = window.run()
    support.wait_job(qtbot, job)
    assert ed.graph.nodes[nid].values["seed"] == 11 and item.fields["seed"].spin.value() == 11
    assert ed.undo.undoText() == "Seed after run"
    ed.undo.undo()
    assert ed.graph.nodes[nid].values["seed"] == 10 and item.fields["seed"].spin.value() == 10
    ed.undo.undo()  # and then the mode itself
    assert "after_run" not in ed.graph.nodes[nid].ui and combo.currentText() == "fixed"


def test_fit_all_keeps_node_text_readable(qtbot, window):
    from ui.view import FIT_MIN_ZOOM

    ed = window.editor
    first = ed.add_node("Number", (0, 0))
    ed.add_node("Show", (320, 0))
    window.view.fit_all()
    assert window.view.zoom == 1.0  # a small graph is shown at 100 %, not blown up
    ed.add_node("Show", (8000, 3000))
    window.view.fit_all()
    assert abs(window.view.zoom - FIT_MIN_ZOOM) < 1e-6  # not zoomed out to a blur
    seen = window.view.mapToScene(window.view.viewport().rect()).boundingRect()
    assert seen.contains(window.scene.nodes[first].sceneBoundingRect())  # where the flow starts


def test_after_run_control_comes_from_the_declaration_not_the_name(qtbot, window):
    """`noise` is declared control_after_generate and gets the dice and the after-run control; an
    INT that happens to be called `seed` but is not declared so gets a plain number field."""
    from ui.widgets import IntSpin, SeedField

    ed = window.editor
    nid = ed.add_node("NoiseSource", (0, 0))
    item = window.scene.nodes[nid]
    assert isinstance(item.fields["noise"], SeedField) and "noise:after_run" in item.fields
    assert isinstance(item.fields["seed"], IntSpin) and "seed:after_run" not in item.fields
    assert [item.fields["noise:after_run"].itemText(i) for i in range(item.fields["noise:after_run"].count())] \
        == ["fixed", "increment", "decrement", "randomize"]
    # a mode stored for an undeclared input (a hand-edited file) changes nothing after a run
    ed.set_seed_mode(nid, "seed", "increment")
    ed.apply_seed_controls()
    assert ed.graph.nodes[nid].values == {"noise": 5, "seed": 3}
    item.fields["noise:after_run"].setCurrentText("increment")
    ed.apply_seed_controls()
    assert ed.graph.nodes[nid].values == {"noise": 6, "seed": 3}


def test_decrement_after_run_counts_down_and_wraps_to_the_maximum(qtbot, window):
    ed = window.editor
    nid = ed.add_node("NoiseSource", (0, 0))  # noise: 0..9, starts at 5
    ed.set_value(nid, "noise", 1)
    item = window.scene.nodes[nid]
    item.fields["noise:after_run"].setCurrentText("decrement")
    assert ed.graph.nodes[nid].ui["after_run"] == {"noise": "decrement"}
    ed.apply_seed_controls()
    assert ed.graph.nodes[nid].values["noise"] == 0 and item.fields["noise"].spin.value() == 0
    ed.apply_seed_controls()
    assert ed.graph.nodes[nid].values["noise"] == 9  # below the minimum wraps to the maximum
    ed.undo.undo()
    assert ed.graph.nodes[nid].values["noise"] == 0
    # increment wraps the other way; a run applies the mode too, as one undo step
    item.fields["noise:after_run"].setCurrentText("increment")
    ed.set_value(nid, "noise", 9)
    job = window.run()
    support.wait_job(qtbot, job)
    assert ed.graph.nodes[nid].values["noise"] == 0 and ed.undo.undoText() == "Seed after run"


def test_sockets_and_widgets_show_their_declared_tooltips(qtbot, window):
    ed = window.editor
    nid = ed.add_node("SeedNode", (0, 0))
    item = window.scene.nodes[nid]
    seed_tip = item.fields["seed"].toolTip()
    assert "seed: INT" in seed_tip and "the same seed gives the same picture" in seed_tip
    assert "how much of the seed to use" in item.fields["strength"].toolTip()
    assert "strength: FLOAT" in item.fields["strength"].toolTip()
    assert "the same seed gives the same picture" in item.inputs["seed"].toolTip()  # its socket too
    out_tip = item.outputs[0].toolTip()
    assert "value: FLOAT" in out_tip and "seed × strength" in out_tip
    ed.set_as_socket(nid, "strength", True)  # shown as a socket, it keeps its tooltip
    item = window.scene.nodes[nid]
    assert "strength" not in item.fields and "how much of the seed to use" in item.inputs["strength"].toolTip()
    pick = window.scene.nodes[ed.add_node("PickModel", (0, 300))]
    assert "a file in checkpoints" in pick.fields["ckpt_name"].toolTip()
    assert "a checkpoint in the model folder" in pick.inputs["ckpt_name"].toolTip()


def test_a_new_loader_starts_at_the_first_file(qtbot, window):
    ed = window.editor
    empty = ed.add_node("PickModel", (0, 0))
    assert ed.graph.nodes[empty].values["ckpt_name"] == ""  # nothing to choose yet
    folder = ed.env.models_dir / "checkpoints"
    folder.mkdir(parents=True)
    for name in ("b.ckpt", "a.safetensors", "notes.txt"):
        (folder / name).write_bytes(b"x")
    nid = ed.add_node("PickModel", (0, 200))
    assert ed.graph.nodes[nid].values["ckpt_name"] == "a.safetensors"
    assert window.scene.nodes[nid].fields["ckpt_name"].currentText() == "a.safetensors"
    assert not [p for p in window.run_view.validate_now() if p.node_id == nid]
    ed.undo.undo()
    ed.undo.redo()
    assert ed.graph.nodes[nid].values["ckpt_name"] == "a.safetensors"
    # a chosen file is kept when the node is copied: only a new node starts at the first file
    ed.set_value(nid, "ckpt_name", "b.ckpt")
    [copy] = ed.paste_text(ed.copy_text([nid]))
    assert ed.graph.nodes[copy].values["ckpt_name"] == "b.ckpt"
