"""The registry: node type name → node class, filled by `@register` and package discovery."""

from __future__ import annotations

import importlib
from collections.abc import Iterable

from .errors import GraphError
from .node import Node


class Registry:
    def __init__(self) -> None:
        self._nodes: dict[str, type[Node]] = {}
        self._loaded_packages: set[str] = set()

    def register(self, cls: type[Node]) -> type[Node]:
        """Class decorator. Registering another class under a taken name is refused."""
        if not (isinstance(cls, type) and issubclass(cls, Node)):
            raise TypeError(f"{cls!r} is not a Node subclass")
        name = cls.type_name
        existing = self._nodes.get(name)
        if existing is not None and existing is not cls and _qualname(existing) != _qualname(cls):
            raise GraphError(f"node type {name!r} is already registered by {_qualname(existing)}")
        self._nodes[name] = cls
        return cls

    def get(self, name: str) -> type[Node] | None:
        return self._nodes.get(name)

    def __contains__(self, name: object) -> bool:
        return name in self._nodes

    def names(self) -> list[str]:
        return sorted(self._nodes)

    def classes(self) -> list[type[Node]]:
        return [self._nodes[n] for n in self.names()]

    def discover(self, package: str) -> None:
        """Import a node package so its `@register` decorators run.

        Only the package itself is imported: its `__init__` imports the modules that declare
        nodes. Walking every sub-module would also import the heavy machinery (torch…) that
        declarations must not pull in.
        """
        if package in self._loaded_packages:
            return
        importlib.import_module(package)
        self._loaded_packages.add(package)

    def discover_all(self, packages: Iterable[str]) -> list[str]:
        """Import each package; returns one message per package that failed (the rest still load)."""
        failed = []
        for package in packages:
            try:
                self.discover(package)
            except Exception as e:  # noqa: BLE001 - a broken package must not stop the others
                failed.append(f"cannot import node package {package!r}: {type(e).__name__}: {e}")
        return failed


def _qualname(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


# The process-wide registry that `nodes` registers into; tests build their own.
REGISTRY = Registry()
register = REGISTRY.register
