"""Inline value editors shown on nodes. Each has `edited` (a user change) and `set_value` (from the
model, silent), so model → view updates never echo back as new edits."""

from __future__ import annotations

import random
import time
from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QValidator
from PySide6.QtWidgets import (
    QAbstractSpinBox,
    QCheckBox,
    QComboBox,
    QCompleter,
    QDoubleSpinBox,
    QHBoxLayout,
    QLineEdit,
    QPlainTextEdit,
    QToolButton,
    QWidget,
)

INT64 = 2**64 - 1


class _NoWheelUnlessFocused:
    def wheelEvent(self, event):  # noqa: N802 - Qt API
        if self.hasFocus():
            super().wheelEvent(event)
        else:
            event.ignore()


class IntSpin(_NoWheelUnlessFocused, QAbstractSpinBox):
    """A spin box for Python ints of any size (QSpinBox stops at 2**31 - 1; seeds need 2**64 - 1)."""

    edited = Signal(object)

    def __init__(self, lo: int | None, hi: int | None, step: int = 1, parent: QWidget | None = None):
        super().__init__(parent)
        self.lo = int(lo) if lo is not None else -INT64
        self.hi = int(hi) if hi is not None else INT64
        self.step = max(1, int(step or 1))
        self._value = max(self.lo, min(self.hi, 0))
        self.setKeyboardTracking(False)
        self.setAlignment(Qt.AlignRight | Qt.AlignVCenter)
        self.editingFinished.connect(self._commit_text)
        self.lineEdit().setText(str(self._value))

    def value(self) -> int:
        return self._value

    def set_value(self, value: Any) -> None:
        try:
            self._value = int(value)
        except (TypeError, ValueError):
            return
        self.lineEdit().setText(str(self._value))

    def _set_and_emit(self, value: int) -> None:
        value = max(self.lo, min(self.hi, value))
        changed = value != self._value
        self.set_value(value)
        if changed:
            self.edited.emit(value)

    def _commit_text(self) -> None:
        try:
            self._set_and_emit(int(self.lineEdit().text().strip()))
        except ValueError:
            self.set_value(self._value)

    def stepBy(self, steps: int) -> None:  # noqa: N802 - Qt API
        self._set_and_emit(self._value + steps * self.step)

    def stepEnabled(self):  # noqa: N802 - Qt API
        flags = QAbstractSpinBox.StepNone
        if self._value < self.hi:
            flags |= QAbstractSpinBox.StepUpEnabled
        if self._value > self.lo:
            flags |= QAbstractSpinBox.StepDownEnabled
        return flags

    def validate(self, text: str, pos: int):
        t = text.strip()
        if t in ("", "-", "+"):
            return QValidator.Intermediate, text, pos
        try:
            v = int(t)
        except ValueError:
            return QValidator.Invalid, text, pos
        return (QValidator.Acceptable if self.lo <= v <= self.hi else QValidator.Intermediate), text, pos


class FloatSpin(_NoWheelUnlessFocused, QDoubleSpinBox):
    edited = Signal(object)

    def __init__(self, lo, hi, step, parent=None):
        super().__init__(parent)
        step = float(step or 0.01)
        decimals = 2 if step >= 0.01 else min(6, len(f"{step:.10f}".rstrip("0").split(".")[1]))
        self.setDecimals(max(decimals, 1 if step >= 1 else 2))
        self.setRange(-1e12 if lo is None else float(lo), 1e12 if hi is None else float(hi))
        self.setSingleStep(step)
        self.setKeyboardTracking(False)
        self.setAlignment(Qt.AlignRight | Qt.AlignVCenter)
        self.valueChanged.connect(lambda v: self.edited.emit(float(v)))

    def set_value(self, value: Any) -> None:
        self.blockSignals(True)
        try:
            self.setValue(float(value))
        except (TypeError, ValueError):
            pass
        self.blockSignals(False)


class FilterCombo(_NoWheelUnlessFocused, QComboBox):
    """Choices with type-to-filter; dynamic choice lists are re-read each time the list opens."""

    edited = Signal(object)

    def __init__(self, choices_fn, parent=None):
        super().__init__(parent)
        self.choices_fn = choices_fn
        self.setEditable(True)
        self.setInsertPolicy(QComboBox.NoInsert)
        self.setSizeAdjustPolicy(QComboBox.AdjustToMinimumContentsLengthWithIcon)
        self.setMinimumContentsLength(6)
        comp = self.completer()
        comp.setFilterMode(Qt.MatchContains)
        comp.setCompletionMode(QCompleter.PopupCompletion)
        comp.setCaseSensitivity(Qt.CaseInsensitive)
        self._value = ""
        self.refresh()
        self.activated.connect(lambda i: self._commit(self.itemText(i)))
        self.lineEdit().editingFinished.connect(lambda: self._commit(self.currentText()))

    def refresh(self) -> None:
        items = list(self.choices_fn())
        self.blockSignals(True)
        self.clear()
        self.addItems(items)
        self.setEditText(self._value)
        self.blockSignals(False)

    def showPopup(self) -> None:  # noqa: N802 - Qt API
        self.refresh()
        super().showPopup()

    def _commit(self, text: str) -> None:
        if text == self._value:
            return
        if self.findText(text, Qt.MatchExactly) < 0:
            self.setEditText(self._value)  # not a choice: go back
            return
        self._value = text
        self.edited.emit(text)

    def set_value(self, value: Any) -> None:
        self._value = str(value)
        self.blockSignals(True)
        idx = self.findText(self._value, Qt.MatchExactly)
        if idx >= 0:
            self.setCurrentIndex(idx)
        self.setEditText(self._value)
        self.lineEdit().setCursorPosition(0)  # a long name too wide for the field shows its start
        self.blockSignals(False)


class TextField(QPlainTextEdit):
    edited = Signal(object)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setTabChangesFocus(True)
        self.textChanged.connect(lambda: self.edited.emit(self.toPlainText()))

    def set_value(self, value: Any) -> None:
        if self.toPlainText() != str(value):
            self.blockSignals(True)
            self.setPlainText(str(value))
            self.blockSignals(False)


class LineField(QLineEdit):
    edited = Signal(object)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.textEdited.connect(lambda t: self.edited.emit(t))

    def set_value(self, value: Any) -> None:
        if self.text() != str(value):
            self.setText(str(value))


class BoolField(QCheckBox):
    edited = Signal(object)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.toggled.connect(lambda b: self.edited.emit(bool(b)))

    def set_value(self, value: Any) -> None:
        self.blockSignals(True)
        self.setChecked(bool(value))
        self.blockSignals(False)


class SeedField(QWidget):
    """An integer spin box with a randomize button, for inputs declared `control_after_generate`."""

    edited = Signal(object)

    def __init__(self, lo, hi, parent=None):
        super().__init__(parent)
        self.setAttribute(Qt.WA_TranslucentBackground)
        lay = QHBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.setSpacing(3)
        self.spin = IntSpin(lo if lo is not None else 0, hi, 1)
        self.spin.setObjectName("NodeField")
        self.spin.edited.connect(self.edited)
        self.dice = QToolButton()
        self.dice.setObjectName("NodeButton")
        self.dice.setText("⚄")
        self.dice.setToolTip("New random value")
        self.dice.setFixedWidth(22)
        self.dice.clicked.connect(self.randomize)
        lay.addWidget(self.spin, 1)
        lay.addWidget(self.dice)

    def randomize(self) -> None:
        self.spin._set_and_emit(random.randint(max(self.spin.lo, 0), min(self.spin.hi, 2**53)))

    def set_value(self, value: Any) -> None:
        self.spin.set_value(value)


_CHOICES: dict[tuple[int, int], tuple[float, object, object, list[str]]] = {}


def cached_choices(spec, env, ttl: float = 2.0) -> list[str]:
    """A dynamic choice list (the files of a folder kind, a callable's answer) read at most every
    `ttl` seconds, so rebuilding nodes does not rescan folders on the GUI thread each time. A file
    input is cached per `env.files` (a new model folder is a new Folders object: read afresh)."""
    if spec.files is None and not callable(spec.choices):
        return spec.choice_list(env)
    source = getattr(env, "files", None) if spec.files is not None else env
    key = (id(spec), id(source))
    now = time.monotonic()
    hit = _CHOICES.get(key)
    # the entry holds spec and source, so their ids cannot be reused by other objects meanwhile
    if hit is None or now - hit[0] > ttl or hit[1] is not spec or hit[2] is not source:
        hit = _CHOICES[key] = (now, spec, source, spec.choice_list(env))
    return hit[3]


def input_tooltip(spec) -> str:
    """What a socket or an inline widget says about its input: name, type, declared constraints,
    and the declaration's tooltip."""
    notes = []
    if getattr(spec, "optional", False):
        notes.append("optional")
    if getattr(spec, "files", None):
        notes.append(f"a file in {spec.files}")
    if getattr(spec, "multiple_of", None):
        notes.append(f"multiple of {spec.multiple_of}")
    if getattr(spec, "control_after_generate", False):
        notes.append("can change after each run")
    head = f"{spec.name}: {spec.type.name}" + (f" ({', '.join(notes)})" if notes else "")
    tip = getattr(spec, "tooltip", "")
    return f"{head}\n{tip}" if tip else head


def output_tooltip(out) -> str:
    head = f"{out.name}: {out.type.name}"
    tip = getattr(out, "tooltip", "")
    return f"{head}\n{tip}" if tip else head


def make_field(spec, env) -> QWidget:
    """The editor widget for one declared value input; its tooltip is the declaration's. An
    integer declared `control_after_generate` gets a dice button (and, on the node, the after-run
    control)."""
    kind = spec.type.name
    if kind == "INT" and spec.control_after_generate:
        w = SeedField(spec.min, spec.max)
    elif kind == "INT":
        w = IntSpin(spec.min, spec.max, spec.step or 1)
    elif kind == "FLOAT":
        w = FloatSpin(spec.min, spec.max, spec.step)
    elif kind == "BOOLEAN":
        w = BoolField()
        w.setText(spec.name)
    elif kind == "COMBO" or spec.choices is not None or spec.files is not None:
        w = FilterCombo(lambda: cached_choices(spec, env))
    elif spec.multiline:
        w = TextField()
    else:
        w = LineField()
    if not isinstance(w, SeedField):
        w.setObjectName("NodeField")
    w.setToolTip(input_tooltip(spec))
    return w
