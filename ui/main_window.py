"""The main window: canvas in the middle, queue/gallery/problems docks, menus with shortcuts."""

from __future__ import annotations

import atexit
import os
from pathlib import Path

from PySide6.QtCore import QPointF, Qt, QTimer
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import (
    QApplication,
    QDockWidget,
    QFileDialog,
    QLabel,
    QMainWindow,
    QMenu,
    QProgressBar,
)

from nodegraph import WorkflowError

from . import files
from . import help as help_pages
from .documents import DocumentMixin
from .editor import CLIP_MIME, Editor
from .panels import GalleryPanel, ProblemsPanel, QueuePanel
from .run_view import RunView
from .runner import Runner
from .scene import GraphScene
from .search import NodeSearch
from .trace_panel import TracePanel
from .view import GraphView
from .warmup import Warmup

AUTOSAVE_MS = int(os.environ.get("SDGRAPH_AUTOSAVE_MS", "30000"))


class MainWindow(DocumentMixin, QMainWindow):
    """The editor on a graph registry and an environment (nodegraph.Environment, built by the entry
    point). `use_saved_models_dir`: apply the model folder saved in Settings (off when the command
    line named one)."""

    def __init__(self, registry, env=None, *, use_saved_models_dir: bool = True):
        super().__init__()
        self._use_saved_models_dir = use_saved_models_dir
        self._restored_dirty = False
        self.doc_format = "native"  # the open file's format: saving over it in another asks first
        self.quiet_errors = False
        self.editor = Editor(registry, env, self)
        self.scene = GraphScene(self.editor, self)
        self.view = GraphView(self.scene, self)
        self.setCentralWidget(self.view)
        self.search = NodeSearch(registry, self.view)
        self.runner = Runner(registry, env, self)
        self.autosave = files.Autosave()
        self.warmup = Warmup(self)
        self.warmup.finished.connect(self._warmed_up)
        self._build_docks()
        self._build_status()
        self._build_actions()
        self.run_view = RunView(self)
        self._unsubscribe = None
        self._watch_graph(self.editor.graph)
        self.editor.graph_replaced.connect(self._watch_graph)
        self.editor.undo.cleanChanged.connect(self._clean_changed)
        self.scene.search_requested.connect(self.open_search)
        self.scene.canvas_menu_requested.connect(self._canvas_menu)
        self.scene.node_menu_requested.connect(self._node_menu)
        self.scene.message.connect(lambda m: self.statusBar().showMessage(m, 5000))
        self.scene.token_clicked.connect(self.token_clicked)
        self.scene.selectionChanged.connect(self._selection_changed)
        self.view.search_key.connect(lambda p: self.open_search(p, None))
        self.view.files_dropped.connect(self.files_dropped)
        self.search.chosen.connect(self._search_chosen)
        self.problems.node_activated.connect(self.center_on)
        self._autosave_timer = QTimer(self, interval=AUTOSAVE_MS)
        self._autosave_timer.timeout.connect(self.autosave_now)
        self._autosave_timer.start()
        self.setAcceptDrops(True)
        self.resize(1400, 860)
        self._restore_layout()
        self.update_title()

    # -- construction -----------------------------------------------------------------------------
    def _build_docks(self) -> None:
        self.queue, self.gallery, self.problems = QueuePanel(), GalleryPanel(), ProblemsPanel()
        self.queue.cancel_requested.connect(self.runner.cancel)
        docks = {}
        for name, widget, area in (("Queue", self.queue, Qt.RightDockWidgetArea),
                                   ("Gallery", self.gallery, Qt.RightDockWidgetArea),
                                   ("Problems", self.problems, Qt.BottomDockWidgetArea)):
            dock = QDockWidget(name, self)
            dock.setObjectName(f"{name}Dock")
            dock.setWidget(widget)
            self.addDockWidget(area, dock)
            docks[name] = dock
        self.queue_dock, self.gallery_dock, self.problems_dock = docks["Queue"], docks["Gallery"], docks["Problems"]
        self.resizeDocks([self.queue_dock, self.gallery_dock], [200, 520], Qt.Vertical)
        self.resizeDocks([self.queue_dock], [300], Qt.Horizontal)
        self.resizeDocks([self.problems_dock], [110], Qt.Vertical)
        # what a KSamplerTrace node recorded: shown (and raised) when one has run
        self.trace_panel = TracePanel()
        self.trace_dock = QDockWidget("Trace", self)
        self.trace_dock.setObjectName("TraceDock")
        self.trace_dock.setWidget(self.trace_panel)
        self.addDockWidget(Qt.BottomDockWidgetArea, self.trace_dock)
        self.tabifyDockWidget(self.problems_dock, self.trace_dock)
        self.trace_dock.hide()

    def _build_status(self) -> None:
        self.progress_label = QLabel("Ready")
        self.progress = QProgressBar()
        self.progress.setFixedWidth(340)
        self.progress.setTextVisible(True)
        self.progress.hide()
        self.statusBar().addPermanentWidget(self.progress_label)
        self.statusBar().addPermanentWidget(self.progress)

    def _act(self, menu: QMenu, text: str, slot, shortcut=None, *, tip: str = "") -> QAction:
        act = QAction(text, self)
        if shortcut:
            keys = shortcut if isinstance(shortcut, list) else [shortcut]
            act.setShortcuts([QKeySequence(k) for k in keys])
        act.triggered.connect(lambda _c=False: slot())
        if tip:
            act.setStatusTip(tip)
        menu.addAction(act)
        self.addAction(act)  # shortcuts work even with the menu bar hidden
        return act

    def _build_actions(self) -> None:
        mb = self.menuBar()
        f = mb.addMenu("&File")
        self._act(f, "&New", self.new_document, QKeySequence.New)
        self._act(f, "&Open…", self.open_dialog, QKeySequence.Open)
        self.recent_menu = f.addMenu("Open &Recent")
        self.rebuild_recent_menu()
        self._act(f, "Import ComfyUI Workflow or Image…", self.open_dialog, "Ctrl+I",
                  tip="ComfyUI's workflows (UI or API JSON) and PNG/WebP images, A1111 and Fooocus images")
        f.addSeparator()
        self._act(f, "&Save", self.save, QKeySequence.Save)
        self._act(f, "Save &As…", self.save_as, "Ctrl+Shift+S")
        self._act(f, "Save As ComfyUI Workflow…", self.save_as_comfy, "Ctrl+Alt+S",
                  tip="ComfyUI's UI format: open it in ComfyUI with its groups, notes and layout")
        self._act(f, "Export ComfyUI API JSON…", self.export_comfy_api, "Ctrl+E")
        f.addSeparator()
        self._act(f, "&Quit", self.close, QKeySequence.Quit)
        e = mb.addMenu("&Edit")
        undo = self.editor.undo.createUndoAction(self, "&Undo")
        undo.setShortcut(QKeySequence.Undo)
        redo = self.editor.undo.createRedoAction(self, "&Redo")
        redo.setShortcuts([QKeySequence("Ctrl+Shift+Z"), QKeySequence("Ctrl+Y")])
        e.addActions([undo, redo])
        self.addActions([undo, redo])
        e.addSeparator()
        self._act(e, "Cu&t", self.cut, QKeySequence.Cut)
        self._act(e, "&Copy", self.copy, QKeySequence.Copy)
        self._act(e, "&Paste", self.paste, QKeySequence.Paste)
        self._act(e, "&Duplicate", self.duplicate, "Ctrl+D")
        self._act(e, "De&lete", self.delete_selected, ["Del", "Backspace"])
        self._act(e, "Select &All", self.select_all, QKeySequence.SelectAll)
        e.addSeparator()
        self._act(e, "Re&name Node", self.rename_selected, "F2")
        self._act(e, "Collapse / Expand", self.toggle_collapse, "Alt+C")
        align = e.addMenu("Align")
        self._act(align, "Left Edges", lambda: self.align("left"), "Ctrl+Shift+Left")
        self._act(align, "Right Edges", lambda: self.align("right"), "Ctrl+Shift+Right")
        self._act(align, "Top Edges", lambda: self.align("top"), "Ctrl+Shift+Up")
        self._act(align, "Distribute Horizontally", lambda: self.align("distribute"), "Ctrl+Shift+H")
        v = mb.addMenu("&View")
        self._act(v, "Add Node…\tTab / double-click", lambda: self.open_search(self._view_centre(), None))
        self._act(v, "&Fit All", self.view.fit_all, ["F", "Home"])
        self._act(v, "Zoom &In", lambda: self.view.set_zoom(self.view.zoom * 1.2), QKeySequence.ZoomIn)
        self._act(v, "Zoom &Out", lambda: self.view.set_zoom(self.view.zoom / 1.2), QKeySequence.ZoomOut)
        self._act(v, "Actual Size", lambda: self.view.set_zoom(1.0), "Ctrl+0")
        v.addSeparator()
        for dock, key in ((self.queue_dock, "Ctrl+1"), (self.gallery_dock, "Ctrl+2"), (self.problems_dock, "Ctrl+3"),
                          (self.trace_dock, "Ctrl+4")):
            act = dock.toggleViewAction()
            act.setShortcut(QKeySequence(key))
            v.addAction(act)
        r = mb.addMenu("&Run")
        self.run_action = self._act(r, "&Run Workflow", self.run, ["Ctrl+Return", "Ctrl+Enter"])
        self.cancel_action = self._act(r, "&Cancel Run", self.cancel, "Ctrl+.")
        self.cancel_action.setEnabled(False)
        self._act(r, "&Validate", lambda: self.run_view.validate_now(), "F7")
        self.explain_menu = mb.addMenu("E&xplain")
        self.explain_menu.aboutToShow.connect(self.rebuild_explain_menu)
        self.rebuild_explain_menu()
        s = mb.addMenu("&Settings")
        self._act(s, "Model Folder…", self.choose_models_dir, "Ctrl+,").setEnabled(self.has_models_dir())
        self.compile_action = self._act(s, "Compile Models (torch.compile)", self.toggle_compile,
                                        tip="Run the UNet and the VAE decoder compiled: the first image of each size "
                                        "compiles (minutes on a CPU), later ones run faster (docs/performance.md)")
        self.compile_action.setCheckable(True)
        self.compile_action.setEnabled(self.has_compile_setting())
        h = mb.addMenu("&Help")
        for text, name in help_pages.EXPLAINER_PAGES:
            self._act(h, text + "…", lambda n=name: self.open_doc(n),
                      tip=f"docs/{name}: the pipeline step by step, with the Explain workflows")
        h.addSeparator()
        self._act(h, "Node Reference…", self.open_node_reference, "F1",
                  tip="What each node does, its inputs and outputs (F1: the selected node's)")
        tb = self.addToolBar("Main")
        tb.setObjectName("MainToolbar")
        tb.setMovable(False)
        tb.addActions([self.run_action, self.cancel_action])
        tb.addSeparator()
        stack = self.editor.undo
        for text, act, signal, enabled in (("Undo", undo, stack.canUndoChanged, stack.canUndo()),
                                           ("Redo", redo, stack.canRedoChanged, stack.canRedo())):
            button_act = tb.addAction(text, act.trigger)
            button_act.setToolTip(f"{text} ({act.shortcut().toString()})")
            button_act.setEnabled(enabled)
            signal.connect(button_act.setEnabled)

    # -- explain & help -----------------------------------------------------------------------------
    def rebuild_explain_menu(self) -> None:
        """One entry per workflows/explain_*.json there is now (new lessons need no code)."""
        menu = self.explain_menu
        menu.clear()
        paths = help_pages.explain_workflows()
        for path in paths:
            act = menu.addAction(help_pages.workflow_title(path))
            act.setStatusTip(str(path))
            act.setData(str(path))
            act.triggered.connect(lambda _c=False, p=path: self.open_copy(p))
        if not paths:
            menu.addAction("(no explainer workflows in workflows/)").setEnabled(False)
        menu.addSeparator()
        menu.addAction("Show the Trace Panel", lambda: (self.trace_dock.show(), self.trace_dock.raise_()))
        menu.addAction("How Stable Diffusion Works…", lambda: self.open_doc(help_pages.EXPLAINER_PAGES[0][1]))

    def open_doc(self, name: str) -> help_pages.DocViewer:
        viewer = help_pages.DocViewer(help_pages.DOCS / name, self)
        viewer.setAttribute(Qt.WA_DeleteOnClose)
        viewer.show()
        self.doc_viewer = viewer
        return viewer

    def open_node_reference(self, type_name: str | None = None) -> help_pages.NodeReference:
        """The node reference, at `type_name` or the selected node's type."""
        ref = help_pages.NodeReference(self.editor.registry, self)
        ref.setAttribute(Qt.WA_DeleteOnClose)
        selected = self.scene.selected_nodes()
        type_name = type_name or (selected[0].node.type if selected else None)
        if not (type_name and ref.select(type_name)) and ref.list.count():
            ref.list.setCurrentRow(0)
        ref.show()
        self.node_reference = ref
        return ref

    def open_copy(self, path: Path, *, ask: bool = True) -> bool:
        """A shipped workflow (an explainer, the default) as an unsaved copy: the learner's edits and
        Ctrl+S never overwrite the file in workflows/ (saving asks for a name)."""
        if ask and not self.maybe_keep_work():
            return False
        try:
            graph, _fmt = files.read(str(path), self.editor.registry, self.editor.env)
        except (WorkflowError, OSError, ValueError) as e:
            if ask:
                self.show_error("Cannot open workflow", f"{path}: {e}")
            return False
        self._set_document(graph, None)
        self.statusBar().showMessage(f"{help_pages.workflow_title(Path(path))} — a copy of {Path(path).name}: "
                                     "press Ctrl+Enter to run it", 10000)
        return True

    def open_first_start(self) -> bool:
        """On the very first start (nothing named, nothing to restore): the default workflow, as an
        unsaved copy (workflows/default.json stays as shipped)."""
        s = files.settings()
        if s.value("first_start_done", False, type=bool):
            return False
        s.setValue("first_start_done", True)
        s.sync()
        return self.open_copy(help_pages.WORKFLOWS / "default.json", ask=False)

    # -- trace --------------------------------------------------------------------------------------
    def show_trace(self, node_id: str, view: dict | None = None) -> None:
        """Show a KSamplerTrace node's trace (a new one when `view` is given) in the Trace dock."""
        if view is not None:
            self.trace_panel.add_trace(node_id, view)
        elif not self.trace_panel.show_trace(node_id):
            return
        self.trace_dock.show()
        self.trace_dock.raise_()

    def token_clicked(self, node_id: str, word: str, position: int) -> None:
        """A token clicked in CLIPTokenize's list: its heatmap in the trace panel."""
        if not self.trace_panel.traces:
            self.statusBar().showMessage("Run a KSamplerTrace node to see where each token steered the picture",
                                         6000)
            return
        if self.trace_panel.view is None:
            self.trace_panel.show_trace(next(reversed(self.trace_panel.traces)))
        self.trace_dock.show()
        self.trace_dock.raise_()
        if self.trace_panel.show_word(word, position):
            self.statusBar().showMessage(f"Trace: where “{word}” steered the picture", 4000)

    def _selection_changed(self) -> None:
        ids = self.scene.selected_ids()
        if len(ids) == 1 and ids[0] in self.trace_panel.traces and ids[0] != self.trace_panel.node_id:
            self.show_trace(ids[0])

    def _clean_changed(self, _clean: bool) -> None:
        self.update_title()

    # -- graph watching -----------------------------------------------------------------------------
    def _watch_graph(self, graph) -> None:
        if self._unsubscribe:
            self._unsubscribe()
        self._unsubscribe = graph.subscribe(lambda ch: self.run_view.model_changed(ch))

    # -- editing ------------------------------------------------------------------------------------
    def _view_centre(self) -> QPointF:
        return self.view.mapToScene(self.view.viewport().rect().center())

    def open_search(self, scene_pos: QPointF, filt) -> None:
        self.search.open_at(QPointF(self.view.mapFromScene(scene_pos)), scene_pos, filt)

    def _search_chosen(self, type_name: str, scene_pos: QPointF, filt) -> None:
        kwargs = {}
        if filt and "output" in filt:
            kwargs["link_from"] = filt["output"]
        elif filt and "input" in filt:
            kwargs["link_to"] = filt["input"]
            scene_pos = scene_pos - QPointF(260, 0)
        nid = self.editor.add_node(type_name, (scene_pos.x(), scene_pos.y()), **kwargs)
        self.scene.clearSelection()
        if nid in self.scene.nodes:
            self.scene.nodes[nid].setSelected(True)

    def delete_selected(self) -> None:
        self.editor.delete(self.scene.selected_ids())

    def select_all(self) -> None:
        for item in self.scene.nodes.values():
            item.setSelected(True)

    def copy(self) -> None:
        ids = self.scene.selected_ids()
        if ids:
            from PySide6.QtCore import QMimeData

            mime = QMimeData()
            text = self.editor.copy_text(ids)
            mime.setData(CLIP_MIME, text.encode())
            mime.setText(text)
            QApplication.clipboard().setMimeData(mime)
            _release_clipboard_at_exit()

    def cut(self) -> None:
        self.copy()
        self.delete_selected()

    def paste(self) -> None:
        mime = QApplication.clipboard().mimeData()
        text = bytes(mime.data(CLIP_MIME)).decode() if mime.hasFormat(CLIP_MIME) else mime.text()
        self._select(self.editor.paste_text(text))

    def duplicate(self) -> None:
        ids = self.scene.selected_ids()
        if ids:
            self._select(self.editor.paste_text(self.editor.copy_text(ids)))

    def _select(self, ids: list[str]) -> None:
        if ids:
            self.scene.clearSelection()
            for nid in ids:
                self.scene.nodes[nid].setSelected(True)

    def rename_selected(self) -> None:
        items = self.scene.selected_nodes()
        if items:
            items[0].edit_title()

    def toggle_collapse(self) -> None:
        items = self.scene.selected_nodes()
        if items:
            collapse = not all(i.node.ui.get("collapsed") for i in items)
            self.editor.set_collapsed([i.node_id for i in items], collapse)

    def align(self, edge: str) -> None:
        items = self.scene.selected_nodes()
        self.editor.align([i.node_id for i in items], edge, {i.node_id: (i.width, i.height) for i in items})

    def center_on(self, nid: str) -> None:
        item = self.scene.nodes.get(nid)
        if item is not None:
            self.view.centerOn(item.sceneBoundingRect().center())
            self.scene.clearSelection()
            item.setSelected(True)

    def _canvas_menu(self, scene_pos: QPointF, screen_pos) -> None:
        menu = QMenu(self)
        add = menu.addMenu("Add Node")
        cats: dict[str, list] = {}
        for cls in self.editor.registry.classes():
            cats.setdefault(cls.category, []).append(cls)
        for cat in sorted(cats, key=str.lower):
            sub = add.addMenu(cat)
            for cls in sorted(cats[cat], key=lambda c: c.display_name.lower()):
                act = sub.addAction(cls.display_name)
                act.setToolTip(cls.description)
                act.triggered.connect(lambda _c=False, t=cls.type_name: self._search_chosen(t, scene_pos, None))
        menu.addAction("Search Nodes…\tTab", lambda: self.open_search(scene_pos, None))
        menu.addSeparator()
        menu.addAction("Paste\tCtrl+V", self.paste)
        menu.addAction("Fit All\tF", self.view.fit_all)
        menu.exec(screen_pos)

    def _node_menu(self, item, screen_pos) -> None:
        menu = QMenu(self)
        nid = item.node_id
        menu.addAction("Rename\tF2", item.edit_title)
        menu.addAction("Collapse / Expand\tAlt+C", self.toggle_collapse)
        node, cls = item.node, item.cls
        if cls is not None:
            sockets = set(node.ui.get("sockets") or [])
            conv = menu.addMenu("Inputs")
            for spec in cls.inputs:
                if not spec.is_widget:
                    continue
                as_socket = spec.name in sockets
                label = f"Show “{spec.name}” as widget" if as_socket else f"Convert “{spec.name}” to input socket"
                conv.addAction(label, lambda n=spec.name, s=as_socket: self.editor.set_as_socket(nid, n, not s))
        ids = self.scene.selected_ids() if item.isSelected() else [nid]
        mode = node.ui.get("mode")
        menu.addAction("Unmute" if mode == "muted" else "Mute (leave out of runs)",
                       lambda: self.editor.set_mode(ids, None if mode == "muted" else "muted"))
        menu.addAction("Stop bypassing" if mode == "bypassed" else "Bypass (pass the input through)",
                       lambda: self.editor.set_mode(ids, None if mode == "bypassed" else "bypassed"))
        menu.addSeparator()
        menu.addAction("Copy\tCtrl+C", self.copy)
        menu.addAction("Duplicate\tCtrl+D", self.duplicate)
        menu.addAction("Delete\tDel", self.delete_selected)
        menu.exec(screen_pos)

    # -- running ------------------------------------------------------------------------------------
    def warm_up(self, packages: list[str] | None = None, delay_ms: int = 200) -> None:
        """Import torch & co. on a background thread once the event loop is idle (after the window
        has painted and the workflow is open); `self.warmup.finished` says when it is done."""
        if not self.warmup.started:
            QTimer.singleShot(delay_ms, lambda: self._start_warmup(packages))

    def _start_warmup(self, packages) -> None:
        if self.warmup.started:
            return
        if not self.runner.busy:
            self.progress_label.setText("Loading the model machinery…")
        self.warmup.start(packages)

    def _warmed_up(self, seconds: float) -> None:
        if self.progress_label.text().startswith("Loading the model machinery"):
            self.progress_label.setText("Ready")
        self.statusBar().showMessage(f"torch, diffusers and transformers loaded in {seconds:.1f} s", 4000)

    def run(self):
        self.search.hide()
        self.scene.setFocus()  # commit a field being edited
        job = self.runner.submit(self.editor.snapshot())
        self.editor.apply_seed_controls()
        return job

    def cancel(self) -> None:
        self.runner.cancel()

    # -- settings -----------------------------------------------------------------------------------
    def has_models_dir(self) -> bool:
        """Whether the environment has a settable model folder (the SD one does; a bare
        nodegraph.Environment has none)."""
        return isinstance(getattr(type(self.editor.env), "models_dir", None), property)

    def choose_models_dir(self, path: str | None = None) -> None:
        env = self.editor.env
        if not self.has_models_dir():
            self.statusBar().showMessage("This environment has no model folder to choose", 4000)
            return
        path = path or QFileDialog.getExistingDirectory(self, "Model folder", str(env.models_dir))
        if path:
            self.set_models_dir(path)
            s = files.settings()
            s.setValue("models_dir", path)
            s.sync()

    def set_models_dir(self, path: str) -> None:
        self.editor.env.models_dir = Path(path)  # rebuilds env.files: the file choices follow
        self.runner.set_env(self.editor.env)
        self.statusBar().showMessage(f"Model folder: {path}", 4000)

    def has_compile_setting(self) -> bool:
        return hasattr(self.editor.env, "compile_setting")

    def toggle_compile(self) -> None:
        """The Settings menu's compile switch: applies from the next run on, and is remembered."""
        if not self.has_compile_setting():
            return
        on = self.compile_action.isChecked()
        self.editor.env.compile_setting = "inductor" if on else None
        s = files.settings()
        s.setValue("compile", on)
        s.sync()
        self.statusBar().showMessage("Compiling models: the first image of each size compiles, later ones run "
                                     "faster" if on else "Models run uncompiled", 6000)

    def _restore_layout(self) -> None:
        s = files.settings()
        if self.has_compile_setting():  # `--compile` on the command line wins over a saved "off"
            if s.value("compile", False, type=bool) and not self.editor.env.compile_setting:
                self.editor.env.compile_setting = "inductor"
            self.compile_action.setChecked(bool(self.editor.env.compile_setting))
        if s.value("geometry") is not None:
            self.restoreGeometry(s.value("geometry"))
        if s.value("window_state") is not None:
            self.restoreState(s.value("window_state"))
        models = s.value("models_dir")
        if models and self._use_saved_models_dir and self.has_models_dir() and Path(str(models)).is_dir():
            self.set_models_dir(str(models))

    def closeEvent(self, event):  # noqa: N802 - Qt API
        if not self.maybe_keep_work():
            event.ignore()
            return
        s = files.settings()
        s.setValue("geometry", self.saveGeometry())
        s.setValue("window_state", self.saveState())
        s.sync()
        self.runner.shutdown()
        self.autosave.clear()
        event.accept()

    def dragEnterEvent(self, event):  # noqa: N802 - Qt API
        if event.mimeData().hasUrls():
            event.acceptProposedAction()

    def dropEvent(self, event):  # noqa: N802 - Qt API
        self.files_dropped([u.toLocalFile() for u in event.mimeData().urls() if u.isLocalFile()])


_clipboard_hook = False


def _release_clipboard_at_exit() -> None:
    """Qt owns the QMimeData we hand the clipboard, but its Python wrapper dies with the interpreter;
    Qt's own exit handlers then delete it after Python has finalized and the process segfaults.
    Clearing the clipboard while Python is still alive (atexit runs before finalization) avoids it."""
    global _clipboard_hook
    if _clipboard_hook:
        return
    _clipboard_hook = True

    def clear() -> None:
        app = QApplication.instance()
        if app is not None:
            app.clipboard().clear()

    atexit.register(clear)
