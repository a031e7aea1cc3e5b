"""DESIGN.md §1, read from the source: which layer may import which.

    nodegraph/  the engine: no torch, no Qt, nothing from nodes or ui
    nodes/      the SD nodes: no Qt, nothing from ui
    ui/         the editor: nothing from nodes (main.py hands it the environment)

Every import counts, wherever it is written: at the top, inside a function, under `if TYPE_CHECKING:`,
relative (resolved to its absolute module), or `importlib.import_module("…")` / `__import__("…")` with a
literal name. tests/test_imports.py checks the runtime side (what importing the packages loads).
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Import:
    file: str  # path relative to the checkout
    line: int
    module: str  # absolute module name


def module_name(path: Path, root: Path = REPO) -> tuple[str, bool]:
    """The dotted name of a source file under `root`, and whether it is a package's __init__."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    is_package = parts[-1] == "__init__"
    if is_package:
        parts.pop()
    return ".".join(parts), is_package


def resolve_relative(module: str | None, level: int, importer: str, is_package: bool) -> str:
    """The absolute module of `from <level dots><module> import …` written in `importer`."""
    if level == 0:
        return module or ""
    package = importer.split(".") if is_package else importer.split(".")[:-1]
    if level > len(package):
        raise ImportError(f"relative import beyond the top-level package in {importer}")
    base = package[: len(package) - (level - 1)]
    return ".".join(base + ([module] if module else []))


DYNAMIC_IMPORTERS = {"import_module", "__import__"}


def imports_in_source(source: str, path: str, importer: str, is_package: bool) -> list[Import]:
    found: list[Import] = []
    for node in ast.walk(ast.parse(source, filename=path)):
        if isinstance(node, ast.Import):
            found += [Import(path, node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            try:
                base = resolve_relative(node.module, node.level, importer, is_package)
            except ImportError as e:
                raise AssertionError(f"{path}:{node.lineno}: {e}") from None
            if node.module is None:  # `from . import x`: each name may be a submodule
                found += [Import(path, node.lineno, f"{base}.{alias.name}") for alias in node.names]
            else:
                found.append(Import(path, node.lineno, base))
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant) \
                and isinstance(node.args[0].value, str):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
            if name in DYNAMIC_IMPORTERS:
                found.append(Import(path, node.lineno, node.args[0].value))
    return found


def imports_of(package: str, root: Path = REPO) -> list[Import]:
    """Every import written in the .py files of a first-party package folder."""
    folder = root / package
    assert folder.is_dir(), f"{folder} is missing"
    found: list[Import] = []
    for path in sorted(folder.rglob("*.py")):
        importer, is_package = module_name(path, root)
        found += imports_in_source(path.read_text(encoding="utf-8"), path.relative_to(root).as_posix(),
                                   importer, is_package)
    return found


def is_within(module: str, top: str) -> bool:
    return module == top or module.startswith(top + ".")


def violations(package: str, forbidden: tuple[str, ...], root: Path = REPO) -> list[str]:
    return [f"{imp.file}:{imp.line}: {package}/ imports {imp.module}" for imp in imports_of(package, root)
            for top in forbidden if is_within(imp.module, top)]


def test_engine_imports_no_torch_no_qt_and_nothing_from_nodes_or_ui():
    bad = violations("nodegraph", ("torch", "PySide6", "nodes", "ui"))
    assert not bad, "nodegraph/ knows graphs, not diffusion or Qt (DESIGN.md §1):\n" + "\n".join(bad)


def test_sd_nodes_import_no_qt_and_nothing_from_the_editor():
    bad = violations("nodes", ("PySide6", "ui"))
    assert not bad, "nodes/ must run headless (DESIGN.md §1):\n" + "\n".join(bad)


def test_editor_imports_nothing_from_the_sd_nodes():
    bad = violations("ui", ("nodes",))
    assert not bad, ("ui/ never imports nodes; main.py builds the environment and hands it over "
                     "(DESIGN.md §1):\n" + "\n".join(bad))


def test_every_layer_has_sources_and_its_imports_are_found():
    # Guards the three tests above against passing vacuously (a moved folder, a collector that finds nothing).
    assert any(is_within(i.module, "nodegraph") for i in imports_of("nodes"))
    assert any(is_within(i.module, "nodegraph") for i in imports_of("ui"))
    assert any(is_within(i.module, "PySide6") for i in imports_of("ui"))
    assert imports_of("nodegraph")


@pytest.mark.parametrize(("source", "importer", "is_package", "expected"), [
    ("import torch.nn as nn", "nodes.x", False, ["torch.nn"]),
    ("from PySide6.QtCore import Qt", "ui.view", False, ["PySide6.QtCore"]),
    ("from .values import Latent", "nodes.sampling.ksampler", False, ["nodes.sampling.values"]),
    ("from ..core.values import Latent", "nodes.sampling.ksampler", False, ["nodes.core.values"]),
    ("from . import env", "nodes", True, ["nodes.env"]),
    ("from .names import SAMPLERS", "nodes.sampling", True, ["nodes.sampling.names"]),
    ("from .. import samplers, conditioning", "nodes.sampling.ksampler", False,
     ["nodes.samplers", "nodes.conditioning"]),
    ("def f():\n    if True:\n        import torch\n", "nodegraph.cache", False, ["torch"]),
    ("if TYPE_CHECKING:\n    from torch import Tensor\n", "nodegraph.types", False, ["torch"]),
    ("import importlib\nm = importlib.import_module('nodes.env')", "ui.app", False, ["importlib", "nodes.env"]),
    ("m = __import__('torch')", "nodegraph.x", False, ["torch"]),
    ("from .nodes import x", "ui.scene", False, ["ui.nodes"]),  # the editor's own module, not the SD nodes
])
def test_import_collector_resolves_relative_nested_and_dynamic_imports(source, importer, is_package, expected):
    found = imports_in_source(source, "x.py", importer, is_package)
    assert [i.module for i in found] == expected


def test_violation_names_file_line_and_forbidden_module(tmp_path):
    pkg = tmp_path / "nodegraph" / "sub"
    pkg.mkdir(parents=True)
    (pkg.parent / "__init__.py").write_text("from . import sub\n")
    (pkg / "__init__.py").write_text("")
    (pkg / "run.py").write_text("import os\n\n\ndef go():\n    from torch import nn\n    from ui import view\n")
    assert violations("nodegraph", ("torch", "ui"), root=tmp_path) == [
        "nodegraph/sub/run.py:5: nodegraph/ imports torch",
        "nodegraph/sub/run.py:6: nodegraph/ imports ui",
    ]
