"""Declaring a node: typed inputs and outputs on a small class with a `run` method.

    @register
    class Add(Node):
        '''Add two numbers.'''
        category = "math"
        inputs = [Int("a", 0), Int("b", 0, min=-10, max=10)]
        outputs = [Output("sum", INT)]

        def run(self, ctx, a, b):
            return (a + b,)

An input of a widget type (INT, FLOAT, STRING, BOOLEAN, COMBO) holds a value edited in place and
may also be fed by a link; other inputs (MODEL, LATENT…) must be linked.

Everything the editor, the validator and the workflow readers need to know about an input is
declared on it, once: bounds, `multiple_of`, `control_after_generate` (ComfyUI's flag: its UI files
store one more value after such an input, and the editor offers fixed/increment/randomize),
`files` (the choices are the files of a folder kind; the engine lists them, fingerprints the chosen
one for the cache and resolves it once per run), tooltips. Nothing is recognised by its name.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from . import types as T

_REQUIRED = object()  # default for inputs that have no default value


class AlwaysChanged:
    """Fingerprint marker: the node's output can differ on every run (random sources…)."""

    def __repr__(self) -> str:
        return "ALWAYS_CHANGED"


ALWAYS_CHANGED = AlwaysChanged()


@dataclass(frozen=True)
class Input:
    """One input socket. For widget types `default` is the value a new node starts with."""

    name: str
    type: T.SocketType
    default: Any = _REQUIRED
    min: float | None = None
    max: float | None = None
    step: float | None = None
    choices: Sequence[str] | Callable[[Any], Sequence[str]] | None = None
    multiline: bool = False
    tooltip: str = ""
    optional: bool = False
    # The editor shows a socket, not a widget, even for a widget type.
    link_only: bool = False
    # A seed-like value the editor can change after each run (fixed/increment/decrement/randomize).
    control_after_generate: bool = False
    multiple_of: int | None = None  # integer values must be a multiple of this (validation checks)
    files: str | None = None  # a folder kind (checkpoints, vae, input…): the choices are its files
    # ComfyUI's upload button ("image"): UI-format files store one more value after this input.
    upload: str | None = None

    @property
    def is_widget(self) -> bool:
        return self.type.widget and not self.link_only

    @property
    def has_default(self) -> bool:
        return self.default is not _REQUIRED

    def coerce(self, value: Any) -> tuple[bool, Any]:
        """(ok, value in this input's type): the harmless conversions (20.0 → 20 for an INT, 8 → 8.0
        for a FLOAT) are made here, once, where a value enters the graph; not ok leaves it as it was."""
        kind = self.type.name
        if kind == "INT":
            if isinstance(value, bool):
                return False, value
            if isinstance(value, int):
                return True, value
            if isinstance(value, float) and math.isfinite(value) and value.is_integer():
                return True, int(value)
            return False, value
        if kind == "FLOAT":
            if isinstance(value, bool) or not isinstance(value, int | float):
                return False, value
            return (math.isfinite(value), float(value))
        if kind == "BOOLEAN":
            return isinstance(value, bool), value
        if kind in ("STRING", "COMBO"):
            return isinstance(value, str), value
        return True, value

    def choice_list(self, env: Any = None) -> list[str]:
        """The valid choices; a file input lists its folder kind in `env.files`."""
        if self.files is not None:
            folders = getattr(env, "files", None)
            try:
                return folders.names(self.files) if folders is not None else []
            except OSError:  # a broken folder must not break listing or validation
                return []
        if self.choices is None:
            return []
        if callable(self.choices):
            return list(self.choices(env))
        return list(self.choices)

    def describe(self) -> dict[str, Any]:
        """A JSON-able description for `main.py nodes --json` and the editor."""
        out: dict[str, Any] = {"name": self.name, "type": self.type.name}
        if self.has_default:
            out["default"] = self.default
        for key in ("min", "max", "step"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        if self.files is not None:
            out["files"] = self.files
        elif self.choices is not None:
            out["choices"] = self.choice_list() if not callable(self.choices) else "dynamic"
        for key in ("multiline", "optional", "link_only", "control_after_generate"):
            if getattr(self, key):
                out[key] = True
        for key in ("multiple_of", "upload"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        if self.tooltip:
            out["tooltip"] = self.tooltip
        return out


@dataclass(frozen=True)
class Output:
    name: str
    type: T.SocketType
    tooltip: str = ""

    def describe(self) -> dict[str, Any]:
        out = {"name": self.name, "type": self.type.name}
        if self.tooltip:
            out["tooltip"] = self.tooltip
        return out


def Int(name: str, default: int = 0, *, min: int | None = None, max: int | None = None, step: int | None = None,
        multiple_of: int | None = None, control_after_generate: bool = False, tooltip: str = "",
        optional: bool = False) -> Input:
    """An integer; `multiple_of` also sets the editor's step unless `step` is given."""
    return Input(name, T.INT, default, min, max, step or multiple_of or 1, tooltip=tooltip, optional=optional,
                 multiple_of=multiple_of, control_after_generate=control_after_generate)


def Float(name: str, default: float = 0.0, *, min: float | None = None, max: float | None = None,
          step: float = 0.01, tooltip: str = "", optional: bool = False) -> Input:
    return Input(name, T.FLOAT, default, min, max, step, tooltip=tooltip, optional=optional)


def String(name: str, default: str = "", *, multiline: bool = False, tooltip: str = "",
           optional: bool = False) -> Input:
    return Input(name, T.STRING, default, multiline=multiline, tooltip=tooltip, optional=optional)


def Bool(name: str, default: bool = False, *, tooltip: str = "", optional: bool = False) -> Input:
    return Input(name, T.BOOLEAN, default, tooltip=tooltip, optional=optional)


def Choice(name: str, choices: Sequence[str] | Callable[[Any], Sequence[str]], default: str | None = None,
           *, tooltip: str = "", optional: bool = False) -> Input:
    if default is None and not callable(choices):
        default = list(choices)[0] if choices else ""
    return Input(name, T.COMBO, "" if default is None else default, choices=choices, tooltip=tooltip,
                 optional=optional)


def FileChoice(name: str, kind: str, *, tooltip: str = "", optional: bool = False,
               upload: str | None = None) -> Input:
    """One of the files of a folder kind (see `nodegraph.files.Folders`). A new node starts at the
    first file found; the engine fingerprints the chosen file and resolves it once per run."""
    return Input(name, T.COMBO, "", tooltip=tooltip, optional=optional, files=kind, upload=upload)


def Link(name: str, type: T.SocketType, *, tooltip: str = "", optional: bool = False) -> Input:
    """An input that must be fed by a link (MODEL, LATENT, …)."""
    return Input(name, type, tooltip=tooltip, optional=optional)


@dataclass
class NodeOutput:
    """What `run` may return instead of a plain tuple, to also hand the editor something to show."""

    values: tuple = ()
    ui: dict[str, Any] = field(default_factory=dict)


class Node:
    """Base class of every node. Subclasses declare inputs/outputs and implement `run`."""

    type_name: ClassVar[str] = ""  # defaults to the class name
    display_name: ClassVar[str] = ""
    category: ClassVar[str] = "misc"
    description: ClassVar[str] = ""  # defaults to the class docstring
    version: ClassVar[int] = 1  # bump when the same inputs give different outputs: invalidates caches
    output_node: ClassVar[bool] = False  # a graph runs to produce the results of its output nodes
    inputs: ClassVar[list[Input]] = []
    outputs: ClassVar[list[Output]] = []

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if not cls.__dict__.get("type_name"):
            cls.type_name = cls.__name__
        if not cls.__dict__.get("display_name"):
            cls.display_name = cls.type_name
        if not cls.__dict__.get("description"):
            cls.description = (cls.__doc__ or "").strip()
        cls._input_map = {i.name: i for i in cls.inputs}

    @classmethod
    def input(cls, name: str) -> Input | None:
        return cls._input_map.get(name)

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        return {i.name: i.default for i in cls.inputs if i.is_widget and i.has_default}

    @classmethod
    def fingerprint(cls, values: dict[str, Any]) -> Any:
        """Extra cache-key material beyond the values and the declared files: ALWAYS_CHANGED for a
        node whose output differs on every run. JSON-able or None."""
        return None

    @classmethod
    def describe(cls) -> dict[str, Any]:
        return {
            "type": cls.type_name,
            "display_name": cls.display_name,
            "category": cls.category,
            "description": cls.description,
            "version": cls.version,
            "output_node": cls.output_node,
            "inputs": [i.describe() for i in cls.inputs],
            "outputs": [o.describe() for o in cls.outputs],
        }

    def run(self, ctx: Any, **inputs: Any) -> tuple | NodeOutput:  # pragma: no cover - abstract
        raise NotImplementedError(f"{self.type_name}.run is not implemented")
