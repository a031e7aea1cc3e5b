"""The Explain and Help menus' contents: the explainer workflows (workflows/explain_*.json, listed
when the menu opens, so new ones need no code), the explainer page (docs/how-stable-diffusion-works.md
and its translations) shown in the editor, and the node reference (each node's description, inputs
and outputs, from the registry's declarations)."""

from __future__ import annotations

import html
import json
from pathlib import Path

from PySide6.QtCore import Qt, QUrl
from PySide6.QtGui import QDesktopServices, QTextDocument
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QHBoxLayout,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QSplitter,
    QTextBrowser,
    QVBoxLayout,
)

REPO = Path(__file__).resolve().parent.parent
WORKFLOWS = REPO / "workflows"
DOCS = REPO / "docs"
EXPLAINER = "how-stable-diffusion-works"
# the explainer page and its translations: (menu text, file name)
EXPLAINER_PAGES = (("How Stable Diffusion Works", f"{EXPLAINER}.md"),
                   ("How Stable Diffusion Works (简体中文)", f"{EXPLAINER}.zh-CN.md"))


def explain_workflows(folder: Path | None = None) -> list[Path]:
    """The explainer workflows there are now, in file-name order (their numbers order the lessons)."""
    return sorted((folder or WORKFLOWS).glob("explain_*.json"))


def workflow_title(path: Path) -> str:
    """A menu title for an explainer workflow: its own title where it has one, else its file name
    ("explain_why_step.json" → "Why step")."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        data = None
    if isinstance(data, dict):
        for holder in (data, data.get("extra"), data.get("ui"), data.get("meta")):
            if isinstance(holder, dict) and isinstance(holder.get("title"), str) and holder["title"].strip():
                return holder["title"].strip()
    name = path.stem.removeprefix("explain_").replace("_", " ").strip() or path.stem
    return name[:1].upper() + name[1:]


class DocViewer(QDialog):
    """A Markdown page of docs/ shown in the editor (its links to other pages and its images work)."""

    def __init__(self, path: Path, parent=None):
        super().__init__(parent)
        self.path = Path(path)
        self.setWindowTitle(self.path.stem.replace("-", " ").capitalize())
        self.resize(860, 760)
        lay = QVBoxLayout(self)
        self.browser = QTextBrowser()
        self.browser.setOpenExternalLinks(True)
        self.browser.setSearchPaths([str(self.path.parent)])
        self.browser.document().setDefaultStyleSheet("code { background: #1d2024; } pre { background: #1d2024; }")
        if self.path.is_file():
            self.browser.setSource(QUrl.fromLocalFile(str(self.path)), QTextDocument.MarkdownResource)
        else:
            self.browser.setMarkdown(f"*{self.path.name} is not there yet.*")
        lay.addWidget(self.browser)
        buttons = QDialogButtonBox(QDialogButtonBox.Close)
        outside = QPushButton("Open in Browser")
        outside.clicked.connect(lambda: QDesktopServices.openUrl(QUrl.fromLocalFile(str(self.path))))
        buttons.addButton(outside, QDialogButtonBox.ActionRole)
        buttons.rejected.connect(self.close)
        lay.addWidget(buttons)

    def text(self) -> str:
        return self.browser.toPlainText()


def node_help_html(cls) -> str:
    """A node's reference entry: what it does, then each input and output with what it is for."""
    def row(name, kind, note, tip):
        return (f"<tr><td><b>{html.escape(name)}</b></td><td style='color:#8b919a'>{html.escape(kind)}</td>"
                f"<td style='color:#8b919a'>{html.escape(note)}</td><td>{html.escape(tip)}</td></tr>")

    parts = [f"<h2>{html.escape(cls.display_name)}</h2>",
             f"<p style='color:#8b919a'>{html.escape(cls.type_name)} · {html.escape(cls.category)}"
             + (" · output node" if getattr(cls, "output_node", False) else "") + "</p>",
             "<p>" + html.escape(cls.description or "(no description)").replace("\n\n", "</p><p>") + "</p>"]
    if cls.inputs:
        parts.append("<h3>Inputs</h3><table cellspacing='0' cellpadding='4'>")
        for spec in cls.inputs:
            note = "optional" if spec.optional else ""
            if spec.is_widget and spec.has_default and spec.default not in ("", None):
                note = ", ".join(filter(None, [note, f"default {spec.default}"]))
            parts.append(row(spec.name, spec.type.name, note, spec.tooltip))
        parts.append("</table>")
    if cls.outputs:
        parts.append("<h3>Outputs</h3><table cellspacing='0' cellpadding='4'>")
        for out in cls.outputs:
            parts.append(row(out.name, out.type.name, "", getattr(out, "tooltip", "")))
        parts.append("</table>")
    return "\n".join(parts)


class NodeReference(QDialog):
    """Every node type, searchable, with its description, inputs and outputs."""

    def __init__(self, registry, parent=None):
        super().__init__(parent)
        self.setWindowTitle("Node Reference")
        self.resize(900, 620)
        self.registry = registry
        lay = QVBoxLayout(self)
        self.filter = QLineEdit()
        self.filter.setPlaceholderText("Filter nodes…")
        self.filter.textChanged.connect(self._filter)
        lay.addWidget(self.filter)
        split = QSplitter(Qt.Horizontal)
        self.list = QListWidget()
        self.list.currentItemChanged.connect(self._show)
        self.browser = QTextBrowser()
        split.addWidget(self.list)
        split.addWidget(self.browser)
        split.setSizes([280, 620])
        lay.addWidget(split, 1)
        row = QHBoxLayout()
        row.addStretch(1)
        close = QPushButton("Close")
        close.clicked.connect(self.close)
        row.addWidget(close)
        lay.addLayout(row)
        for cls in sorted(registry.classes(), key=lambda c: (c.category.lower(), c.display_name.lower())):
            item = QListWidgetItem(f"{cls.category} / {cls.display_name}")
            item.setData(Qt.UserRole, cls.type_name)
            item.setToolTip((cls.description or "").split("\n")[0])
            self.list.addItem(item)

    def select(self, type_name: str) -> bool:
        for i in range(self.list.count()):
            item = self.list.item(i)
            if item.data(Qt.UserRole) == type_name:
                item.setHidden(False)
                self.list.setCurrentItem(item)
                return True
        return False

    def current_type(self) -> str | None:
        item = self.list.currentItem()
        return item.data(Qt.UserRole) if item is not None else None

    def _filter(self, text: str) -> None:
        words = text.lower().split()
        for i in range(self.list.count()):
            item = self.list.item(i)
            hay = f"{item.text()} {item.data(Qt.UserRole)} {item.toolTip()}".lower()
            item.setHidden(not all(w in hay for w in words))

    def _show(self, item, _previous=None) -> None:
        cls = self.registry.get(item.data(Qt.UserRole)) if item is not None else None
        self.browser.setHtml(node_help_html(cls) if cls is not None else "")
