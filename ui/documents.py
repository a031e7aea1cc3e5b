"""File handling for the main window: new/open/save/save-as, ComfyUI's formats (UI and API JSON,
images from ComfyUI, A1111 and Fooocus), recent files, dropped files, the dirty marker and the
prompt before losing work or changing a file's format, autosave and restore."""

from __future__ import annotations

import json
from pathlib import Path

from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QFileDialog, QMessageBox

from nodegraph import Graph, WorkflowError
from nodegraph.fileio import atomic_write
from nodegraph.workflow import to_comfy_api

from . import files


class DocumentMixin:
    """Mixed into MainWindow; expects self.editor, self.view, self.scene, self.run_view."""

    # -- questions (tests replace these) ----------------------------------------------------------
    def ask_unsaved(self) -> str:
        """"save", "discard" or "cancel"."""
        box = QMessageBox(QMessageBox.Warning, "Unsaved changes",
                          f"Save the changes to {self.document_name()} before closing it?",
                          QMessageBox.Save | QMessageBox.Discard | QMessageBox.Cancel, self)
        answer = box.exec()
        return {QMessageBox.Save: "save", QMessageBox.Discard: "discard"}.get(answer, "cancel")

    def ask_keep_format(self, path: str, fmt: str) -> str:
        """Saving over a ComfyUI file: "keep" its format, save as "sdgraph" (a new file), or "cancel"."""
        name = files.FORMAT_NAMES.get(fmt, fmt)
        box = QMessageBox(QMessageBox.Question, "Save ComfyUI workflow",
                          f"{Path(path).name} is a {name}. Save it in ComfyUI's format (ComfyUI opens it as "
                          "before), or as an sdgraph workflow in a new file?", QMessageBox.Cancel, self)
        keep = box.addButton("Keep ComfyUI Format", QMessageBox.AcceptRole)
        ours = box.addButton("Save as sdgraph…", QMessageBox.ActionRole)
        box.exec()
        return {keep: "keep", ours: "sdgraph"}.get(box.clickedButton(), "cancel")

    def ask_restore(self, source: str | None) -> bool:
        where = f" (from {source})" if source else ""
        return QMessageBox.question(
            self, "Restore unsaved work?",
            f"sdgraph did not close normally last time. Restore the unsaved workflow{where}?",
            QMessageBox.Yes | QMessageBox.No, QMessageBox.Yes) == QMessageBox.Yes

    def ask_open_path(self, title: str) -> str | None:
        path, _ = QFileDialog.getOpenFileName(self, title, self._last_dir(), files.WORKFLOW_FILTER)
        return path or None

    def ask_save_path(self, title: str, suggested: str) -> str | None:
        path, _ = QFileDialog.getSaveFileName(self, title, str(Path(self._last_dir()) / suggested),
                                              "sdgraph workflow (*.json)")
        return path or None

    def show_error(self, title: str, text: str) -> None:
        self.statusBar().showMessage(text.splitlines()[0] if text else title, 8000)
        if not getattr(self, "quiet_errors", False):
            QMessageBox.warning(self, title, text)

    # -- state --------------------------------------------------------------------------------------
    def document_name(self) -> str:
        return Path(self.editor.path).name if self.editor.path else "Untitled"

    def is_dirty(self) -> bool:
        return not self.editor.undo.isClean() or self._restored_dirty

    def update_title(self) -> None:
        self.setWindowTitle(f"{self.document_name()}[*] — sdgraph")
        self.setWindowModified(self.is_dirty())

    def _last_dir(self) -> str:
        recent = files.recent_files()
        return str(Path(recent[0]).parent) if recent else str(Path.cwd())

    def maybe_keep_work(self) -> bool:
        """True when it is fine to drop the current document."""
        if not self.is_dirty():
            return True
        answer = self.ask_unsaved()
        if answer == "save":
            return self.save()
        return answer == "discard"

    # -- commands -----------------------------------------------------------------------------------
    def new_document(self) -> None:
        if self.maybe_keep_work():
            self._set_document(Graph(self.editor.registry), None)

    def open_dialog(self) -> None:
        if self.maybe_keep_work():
            path = self.ask_open_path("Open workflow")
            if path:
                self.open_path(path, ask=False)

    def open_path(self, path: str, *, ask: bool = True) -> bool:
        if ask and not self.maybe_keep_work():
            return False
        try:
            graph, fmt = files.read(path, self.editor.registry, self.editor.env)
        except WorkflowError as e:
            self.show_error("Cannot open workflow", str(e))
            return False
        except (OSError, ValueError) as e:
            self.show_error("Cannot open workflow", f"{path}: {e}")
            return False
        # a workflow file stays that file (saving over a ComfyUI one asks first); an image is imported
        is_file = fmt in files.FORMAT_NAMES
        self._set_document(graph, str(Path(path).resolve()) if is_file else None, fmt if is_file else "native")
        if not is_file:  # an imported image becomes an unsaved document
            self.statusBar().showMessage(f"Imported {Path(path).name} — save to keep it as a workflow", 6000)
        elif graph.warnings:
            self.statusBar().showMessage(f"Opened {Path(path).name}: {len(graph.warnings)} note(s) on reading it "
                                         "— see Problems", 6000)
        self._add_recent(path)
        return True

    def _set_document(self, graph: Graph, path: str | None, fmt: str = "native") -> None:
        self._restored_dirty = False
        self.doc_format = fmt
        self.run_view.clear()
        self.run_view.general = [f"on reading the file: {w}" for w in graph.warnings]
        self.editor.replace_graph(graph, path)
        self.update_title()
        if len(graph) or self.run_view.general:
            self.run_view.validate_now()  # first: it may open the Problems panel, which shrinks the canvas
        view = graph.ui.get("view") if isinstance(graph.ui, dict) else None
        if not (isinstance(view, dict) and self.view.restore_view(view)):
            self.view.fit_all()
            QTimer.singleShot(0, self.view.fit_all)  # again once a panel that just opened has its room

    def save(self) -> bool:
        if not self.editor.path:
            return self.save_as()
        if self.doc_format != "native":  # never change a user's file format without asking
            answer = self.ask_keep_format(self.editor.path, self.doc_format)
            if answer == "keep":
                return self._write(self.editor.path, self.doc_format)
            return self.save_as() if answer == "sdgraph" else False
        return self._write(self.editor.path)

    def save_as(self) -> bool:
        suggested = Path(self.editor.path or "workflow.json").name
        if self.doc_format != "native" and self.editor.path:
            suggested = Path(self.editor.path).stem + ".sdgraph.json"  # not over the ComfyUI file
        path = self.ask_save_path("Save workflow as", suggested)
        if not path:
            return False
        if not path.lower().endswith(".json"):
            path += ".json"
        return self._write(path)

    def save_as_comfy(self) -> bool:
        """Save in ComfyUI's UI format, to take the workflow back to ComfyUI."""
        stem = Path(self.editor.path).stem.removesuffix(".sdgraph") if self.editor.path else "workflow"
        path = self.ask_save_path("Save as ComfyUI workflow", f"{stem}.comfyui.json")
        if not path:
            return False
        if not path.lower().endswith(".json"):
            path += ".json"
        return self._write(path, "comfy_ui")

    def _write(self, path: str, fmt: str = "native") -> bool:
        graph = self.editor.graph
        graph.ui["view"] = self.view.view_state()
        try:
            files.save(graph, path, fmt)
        except OSError as e:
            self.show_error("Cannot save", f"{path}: {e.strerror or e}")
            return False
        self.doc_format = fmt
        self.editor.path = str(Path(path).resolve())
        self.editor.undo.setClean()
        self._restored_dirty = False
        self.autosave.clear()
        self._add_recent(path)
        self.update_title()
        self.statusBar().showMessage(f"Saved {path}", 4000)
        return True

    def export_comfy_api(self, path: str | None = None) -> None:
        path = path or self.ask_save_path("Export ComfyUI API JSON", Path(self.document_name()).stem + "_api.json")
        if path:
            atomic_write(path, json.dumps(to_comfy_api(self.editor.graph), indent=2) + "\n")
            self.statusBar().showMessage(f"Exported {path}", 4000)

    def files_dropped(self, paths: list[str]) -> None:
        for path in paths[:1]:
            self.open_path(path)

    # -- recent files ---------------------------------------------------------------------------------
    def _add_recent(self, path: str) -> None:
        files.add_recent(path)
        self.rebuild_recent_menu()

    def rebuild_recent_menu(self) -> None:
        menu = self.recent_menu
        menu.clear()
        recent = files.recent_files()
        for i, path in enumerate(recent):
            act = menu.addAction(f"&{i + 1}  {path}" if i < 9 else path)
            act.triggered.connect(lambda _c=False, p=path: self.open_path(p))
        menu.setEnabled(bool(recent))

    # -- autosave -------------------------------------------------------------------------------------
    def autosave_now(self) -> None:
        if self.is_dirty() and len(self.editor.graph):
            self.autosave.write(self.editor.graph, self.editor.path)

    def offer_restore(self) -> bool:
        if not self.autosave.exists():
            return False
        try:
            graph, source = self.autosave.read(self.editor.registry)
        except Exception as e:  # noqa: BLE001 - a broken autosave must not stop the editor
            self.statusBar().showMessage(f"Ignored a broken autosave file: {e}", 6000)
            self.autosave.clear()
            return False
        if not self.ask_restore(source):
            self.autosave.clear()
            return False
        self._set_document(graph, source)
        self._restored_dirty = True
        self.update_title()
        self.statusBar().showMessage("Restored unsaved work from the last session", 6000)
        return True

