"""Turns runner jobs and executor events into what the user sees: node highlights and badges,
progress, inline results and previews, the queue, the gallery, and the problems list."""

from __future__ import annotations

from PySide6.QtCore import QObject, QTimer

from nodegraph import events as ev
from nodegraph.validate import validate


class RunView(QObject):
    def __init__(self, window):
        super().__init__(window)
        self.w = window
        self.run_errors: dict[str, str] = {}  # node id → run error message
        self.problems: list = []  # validation Problems currently shown
        self.general: list[str] = []  # run messages not tied to a node
        self._revalidate = QTimer(self, singleShot=True, interval=400)
        self._revalidate.timeout.connect(self.validate_now)
        window.runner.node_event.connect(self.on_event)
        window.runner.job_changed.connect(self.on_job)
        window.runner.thumbnails.connect(self.on_thumbnails)

    @property
    def scene(self):
        return self.w.scene

    # -- problems ---------------------------------------------------------------------------------
    def validate_now(self) -> list:
        self.problems = validate(self.w.editor.graph, self.w.editor.registry, self.w.editor.env)
        self._show_problems()
        return self.problems

    def model_changed(self, change) -> None:
        """Edits clear a node's run error and re-check validation problems shortly after."""
        if change.node_id in self.run_errors and change.kind != "ui_changed":
            del self.run_errors[change.node_id]
            self._show_problems()
        if self.problems and change.kind not in ("ui_changed", "graph_ui_changed"):
            self._revalidate.start()

    def clear(self) -> None:
        self.w.trace_panel.clear()  # a new document: its node ids are not the traced ones
        self.run_errors.clear()
        self.problems = []
        self.general = []
        self._show_problems()

    def _show_problems(self) -> None:
        per_node: dict[str, list[str]] = {}
        entries: list[tuple[str | None, str]] = []
        for p in self.problems:
            said = "warning (this node feeds no output, so it does not run): " if p.warning else ""
            entries.append((p.node_id, said + str(p)))
            if p.node_id is not None:
                per_node.setdefault(p.node_id, []).append(said + p.message + (f" — {p.fix}" if p.fix else ""))
        for nid, msg in self.run_errors.items():
            entries.append((nid, msg))
            per_node.setdefault(nid, []).append(msg.split("): ", 1)[-1])
        entries.extend((None, m) for m in self.general)
        self.scene.set_problems({nid: "\n".join(msgs) for nid, msgs in per_node.items()})
        self.w.problems.set_problems(entries)
        if entries:
            self.w.problems_dock.show()
            self.w.problems_dock.raise_()

    # -- runner ------------------------------------------------------------------------------------
    def on_job(self, job) -> None:
        self.w.queue.update_job(job)
        running = job.status == "running"
        self.w.cancel_action.setEnabled(self.w.runner.busy)
        if running:
            self.w.progress.setRange(0, 0)
            self.w.progress.setFormat("starting…")
            self.w.progress.show()
        elif job.finished and not self.w.runner.busy:
            self.w.progress.hide()
            self.w.progress_label.setText(f"Run {job.id}: {job.status}" + (
                f" in {job.seconds:.1f} s" if job.status == "ok" else (f" — {job.message}" if job.message else "")))
            for item in self.scene.nodes.values():
                if item.status == "running":
                    item.set_status("")
            if job.status == "invalid":  # the run said what stops it; validation adds the warnings
                self.run_errors.clear()
                self.validate_now()

    def on_event(self, job, ui_event) -> None:
        """One executor event (wrapped in the runner's UiEvent, which carries its images)."""
        match ui_event.event:
            case ev.GraphStarted() as e:
                self._graph_started(e)
            case ev.NodeStarted() as e:
                self._node_started(e)
            case ev.Progress() as e:
                self._progress(e)
            case ev.Preview() as e:
                if ui_event.qimage is not None and (item := self._item(e.node_id)) is not None:
                    item.set_preview(ui_event.qimage)
            case ev.NodeFinished() as e:
                self._finished(e, ui_event, "done", e.seconds)
                if (item := self._item(e.node_id)) is not None:
                    item.finished()
            case ev.NodeCached() as e:
                self._finished(e, ui_event, "cached")
            case ev.NodeError() as e:
                self._node_error(e)
            case ev.RunInterrupted() as e:
                if (item := self._item(e.node_id)) is not None:
                    item.set_status("")
                self.w.statusBar().showMessage("Run cancelled", 4000)
            case ev.GraphFinished() as e:
                self.w.statusBar().showMessage(
                    f"Finished ({e.status}): {e.ran} ran, {e.cached} cached, {e.seconds:.2f} s", 6000)

    def on_thumbnails(self, job, thumbs) -> None:
        """After a run: each node's IMAGE/MASK output shown on it."""
        for nid, image in thumbs.items():
            if (item := self._item(nid)) is not None:
                item.set_thumbnail(image)

    def _item(self, nid):
        return self.scene.nodes.get(nid) if nid is not None else None

    def _graph_started(self, e: ev.GraphStarted) -> None:
        self.run_errors.clear()
        self.general = []
        self.problems = []
        self._show_problems()
        for nid in e.to_run:
            if (item := self._item(nid)) is not None:
                item.set_status("", reason="")
        self.total_nodes, self.done_nodes = len(e.to_run), 0
        self.w.progress_label.setText(f"Running {len(e.to_run)} node(s), {len(e.cached)} cached")

    def _node_started(self, e: ev.NodeStarted) -> None:
        if (item := self._item(e.node_id)) is not None:
            item.set_status("running", reason=e.reason)
        self.w.progress.setRange(0, 0)
        self.w.progress.setFormat(f"node {e.node_id} ({e.node_type})")
        self.w.progress.show()

    def _progress(self, e: ev.Progress) -> None:
        if (item := self._item(e.node_id)) is not None:
            item.set_progress(e.step, e.total)
        node_type = self.w.editor.graph.nodes[e.node_id].type if e.node_id in self.w.editor.graph.nodes else "?"
        self.w.progress.setRange(0, max(1, e.total))
        self.w.progress.setValue(e.step)
        self.w.progress.setFormat(f"node {e.node_id} ({node_type}) — step {e.step}/{e.total}")

    def _finished(self, e: ev.NodeFinished | ev.NodeCached, ui_event, status: str, seconds=None) -> None:
        item = self._item(e.node_id)
        if item is not None:
            item.set_status(status, reason="cached" if status == "cached" else "", seconds=seconds)
            if e.ui:
                item.set_result(e.ui, ui_event.qimage)
        traces = (e.ui or {}).get("trace")
        if isinstance(traces, list) and traces and isinstance(traces[0], dict):  # KSamplerTrace's record
            self.w.show_trace(e.node_id, traces[0])
        for i, path in enumerate(ui_event.paths):
            self.w.gallery.add(path, ui_event.qimage if i == 0 else None, f"node {e.node_id} ({e.node_type})")

    def _node_error(self, e: ev.NodeError) -> None:
        if e.node_id is not None and e.node_id in self.scene.nodes:
            self.run_errors[e.node_id] = "\n".join(filter(None, [self.run_errors.get(e.node_id), e.message]))
            self.scene.nodes[e.node_id].set_status("error")
        else:
            self.general.append(e.message)
        self._show_problems()
