"""Running workflows from the editor: progress, results, previews, cancel, errors, responsiveness."""

from __future__ import annotations

import time

from nodegraph import events as ev
from tests import test_ui_support as support
from tests.test_ui_support import LoopLatency, build_chain, shot, wait_job

window = support.window  # the fixture


def test_run_shows_progress_and_result_on_the_output_node(qtbot, window):
    a, b, c = build_chain(window, delay=0.02, steps=5)
    progress_seen = []
    window.runner.node_event.connect(lambda job, u: progress_seen.append((u.event.step, u.event.total))
                                     if isinstance(u.event, ev.Progress) else None)
    job = window.run()
    qtbot.waitUntil(lambda: window.scene.nodes[b].status == "running", timeout=5000)
    wait_job(qtbot, job)
    assert job.status == "ok"
    assert progress_seen[-1] == (5, 5)
    assert window.scene.nodes[c].text_result == "6.0"  # 1.0 + 5 steps
    assert window.scene.nodes[b].status == "done" and "new" in window.scene.nodes[b].toolTip()
    assert window.queue.rows[job.id].text(1) == "ok"
    # a second run answers from the cache, and says so
    job2 = window.run()
    wait_job(qtbot, job2)
    assert window.scene.nodes[c].status == "cached"
    assert "cached" in window.scene.nodes[c].toolTip()
    window.editor.set_value(a, "value", 2.0)
    job3 = window.run()
    wait_job(qtbot, job3)
    assert "changed: value" in window.scene.nodes[a].toolTip()
    assert window.scene.nodes[c].text_result == "7.0"


def test_images_preview_inline_and_land_in_the_gallery(qtbot, window):
    ed = window.editor
    g = ed.add_node("Gradient", (0, 0))
    s = ed.add_node("SaveImageToy", (320, 0))
    ed.connect(g, 0, s, "image")
    ed.set_value(g, "delay", 0.05)
    previews = []  # (step, the node showed an image) at each live preview
    window.runner.node_event.connect(lambda job, u: previews.append(
        (u.event.step, window.scene.nodes[g].image is not None)) if isinstance(u.event, ev.Preview) else None)
    window.view.fit_all()
    job = window.run()
    wait_job(qtbot, job)
    assert job.status == "ok"
    assert previews == [(1, True), (2, True), (3, True), (4, True)]  # live preview on the node, per step
    assert window.scene.nodes[g].image is not None  # and it stays once the node is done (Explain mode, issue 13)
    assert window.scene.nodes[s].image is not None and window.scene.nodes[s].image.width() == 128
    assert len(window.gallery.paths()) == 1
    saved = window.gallery.save_as(window.gallery.paths()[0], str(window.editor.env.paths.output / "copy.png"))
    assert saved and (window.editor.env.paths.output / "copy.png").stat().st_size > 0
    window.view.fit_all()
    shot(window, "run_images")


def test_cancel_stops_at_the_next_step(qtbot, window):
    a, b, c = build_chain(window, delay=0.1, steps=200)
    interrupted = []
    window.runner.node_event.connect(lambda job, u: interrupted.append(u.event.node_id)
                                     if isinstance(u.event, ev.RunInterrupted) else None)
    job = window.run()
    qtbot.waitUntil(lambda: window.scene.nodes[b].progress is not None, timeout=5000)
    t0 = time.perf_counter()
    window.cancel()
    wait_job(qtbot, job)
    assert job.status == "interrupted"
    assert time.perf_counter() - t0 < 2.0
    assert window.scene.nodes[b].status != "running"
    assert window.queue.rows[job.id].text(1) == "interrupted"
    assert interrupted == [b]  # the run view hears the engine's RunInterrupted, for the node it stopped in


def test_failing_node_is_marked_with_its_message(qtbot, window):
    ed = window.editor
    n = ed.add_node("Number", (0, 0))
    f = ed.add_node("Fail", (320, 0))
    s = ed.add_node("Show", (640, 0))
    ed.connect(n, 0, f, "x")
    ed.connect(f, 0, s, "value")
    window.view.fit_all()
    job = window.run()
    wait_job(qtbot, job)
    assert job.status == "error"
    item = window.scene.nodes[f]
    assert item.status == "error" and "ZeroDivisionError" in item.message
    assert any(f"node {f} (Fail)" in m for m in window.problems.messages())
    shot(window, "run_error")
    # clicking the problem centres and selects the node
    window.view.centerOn(5000, 5000)
    window.problems.itemClicked.emit(window.problems.item(0))
    assert window.scene.selected_ids() == [f]
    assert window.view.mapToScene(window.view.viewport().rect().center()).x() < 1000
    # editing the node clears its run error
    ed.set_value(f, "how", "input")
    assert item.message == ""


def test_validation_problems_mark_nodes_before_running(qtbot, window):
    ed = window.editor
    st = ed.add_node("Steps", (0, 0))
    ed.add_node("Show", (320, 0))  # its "value" input is not connected
    ed.set_value(st, "steps", 0)  # below the minimum
    job = window.run()
    wait_job(qtbot, job)
    assert job.status == "invalid"
    messages = window.problems.messages()
    assert any('"steps" = 0 is below the minimum 1' in m for m in messages)
    assert any('required input "value" is not set' in m for m in messages)
    assert "below the minimum" in window.scene.nodes[st].message
    ed.set_value(st, "steps", 4)  # fixing it clears the mark shortly after
    qtbot.waitUntil(lambda: window.scene.nodes[st].message == "", timeout=3000)


def test_gui_thread_stays_responsive_during_a_run(qtbot, window):
    """Event-loop latency while Steps nodes sleep on the worker thread and report progress (the
    same measure with the real SD nodes is in test_ui_default_workflow.py)."""
    ed = window.editor
    prev = None
    for i in range(3):
        nid = ed.add_node("Steps", (i * 300, 0))
        ed.set_value(nid, "steps", 20)
        ed.set_value(nid, "delay", 0.02)
        if prev:
            ed.connect(prev, 0, nid, "x")
        prev = nid
    show = ed.add_node("Show", (900, 0))
    ed.connect(prev, 0, show, "value")
    lat = LoopLatency(10)
    lat.start()
    job = window.run()
    wait_job(qtbot, job, timeout=30000)
    lat.stop()
    print(f"\nmax event-loop latency during run: {lat.max:.0f} ms over {lat.ticks} ticks")
    assert job.status == "ok"
    assert lat.ticks > 20
    assert lat.max < 100
