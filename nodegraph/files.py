"""Choices backed by files: named folder kinds, each searched in one or more folders.

A node declares `FileChoice("ckpt_name", "checkpoints")`; the engine lists that kind's files as the
choices, fingerprints the chosen file for the cache (resolved path, size, modification time) and
resolves it once per run for `ctx.models.path(kind, name)`. What counts as an entry of a kind (file
suffixes; folders that are one model because they hold a marker file) is set by whoever builds the
environment: the engine knows folders, not diffusion.

Names are relative paths inside a folder. A name that is absolute or has a `..` part is refused;
symbolic links inside a folder are followed, wherever they point (users link model folders
between tools).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath

from .errors import UserError


class FileNameError(UserError):
    """A file name that would leave its folder (absolute, or with a `..` part)."""


class FileNotFound(UserError):
    """A file name that is not in any folder of its kind; the message lists what is there."""


@dataclass
class FolderKind:
    folders: list[Path]
    suffixes: tuple[str, ...] = ()  # lower-case; empty: every file
    markers: tuple[str, ...] = ()  # a sub-folder holding one of these files is one entry (a diffusers model)


def unsafe_name(name: str) -> str | None:
    """Why `name` may not be used as a file name inside a folder, or None when it is fine."""
    if not name:
        return "is empty"
    if PurePosixPath(name).is_absolute() or PureWindowsPath(name).is_absolute() or PureWindowsPath(name).drive:
        return "is an absolute path"
    if ".." in PurePosixPath(name.replace("\\", "/")).parts:
        return 'has a ".." part'
    return None


@dataclass
class Folders:
    """Folder kinds by name. `names(kind)` lists, `find`/`path` look up, `fingerprint` identifies."""

    kinds: dict[str, FolderKind] = field(default_factory=dict)

    def add(self, kind: str, folders: Iterable[str | os.PathLike], suffixes: Sequence[str] = (),
            markers: Sequence[str] = ()) -> None:
        entry = self.kinds.setdefault(kind, FolderKind([], tuple(s.lower() for s in suffixes), tuple(markers)))
        entry.folders.extend(Path(f) for f in folders)

    def folders(self, kind: str) -> list[Path]:
        entry = self.kinds.get(kind)
        return list(entry.folders) if entry else []

    def describe(self, kind: str) -> str:
        """The folders searched for a kind, for messages."""
        return ", ".join(str(f) for f in self.folders(kind)) or f"(no {kind} folder configured)"

    def names(self, kind: str) -> list[str]:
        """Names (relative POSIX paths) of a kind's entries in every folder, sorted, without repeats."""
        entry = self.kinds.get(kind)
        if entry is None:
            return []
        names: set[str] = set()
        for folder in entry.folders:
            if folder.is_dir():
                names.update(_walk(folder, entry))
        return sorted(names, key=str.lower)

    def find(self, kind: str, name: str) -> Path | None:
        """The first folder's `folder/name` that exists (links followed), or None. Refuses unsafe names."""
        why = unsafe_name(name)
        if why is not None:
            raise FileNameError(f'"{name}" {why}: give a name inside {self.describe(kind)}')
        for folder in self.folders(kind):
            candidate = folder / name
            if candidate.exists():
                return candidate.absolute()
        return None

    def path(self, kind: str, name: str) -> Path:
        found = self.find(kind, name)
        if found is None:
            there = self.names(kind)
            listing = f"found: {', '.join(there[:12])}" + (", …" if len(there) > 12 else "") if there else \
                "the folder is empty"
            raise FileNotFound(f'"{name}" not found in {self.describe(kind)} ({listing})')
        return found

    def fingerprint(self, kind: str, name: str) -> list | None:
        """[resolved path, size, mtime] (for a folder: file count, total size, newest mtime), or None
        when there is no such file. The resolved path tells apart same-named files in other folders."""
        try:
            path = self.find(kind, name)
        except FileNameError:
            return None
        if path is None:
            return None
        return file_fingerprint(path)


def file_fingerprint(path: Path) -> list:
    real = os.path.realpath(path)
    if path.is_dir():
        stats = [p.stat() for p in sorted(path.rglob("*")) if p.is_file()]
        return [real, len(stats), sum(s.st_size for s in stats), max((s.st_mtime_ns for s in stats), default=0)]
    stat = path.stat()
    return [real, stat.st_size, stat.st_mtime_ns]


def _walk(folder: Path, entry: FolderKind) -> set[str]:
    """Entries under one folder, following links to folders (each real folder visited once)."""
    out: set[str] = set()
    seen: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:  # a link loop, or two links to one folder
            dirnames.clear()
            continue
        seen.add(real)
        here = Path(dirpath)
        rel = here.relative_to(folder)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        if rel.parts and any(m in filenames for m in entry.markers):
            out.add(rel.as_posix())
            dirnames.clear()  # a model folder is one entry: don't list its parts
            continue
        for name in filenames:
            if name.startswith(".") or (entry.suffixes and not name.lower().endswith(entry.suffixes)):
                continue
            if (here / name).is_file():
                out.add((rel / name).as_posix())
    return out


class RunFiles:
    """One run's view of the folders: each (kind, name) is looked up once, by planning (for the
    fingerprint), and that same path is what nodes get from `ctx.models.path`."""

    def __init__(self, folders: Folders | None):
        self._folders = folders or Folders()
        self._found: dict[tuple[str, str], Path | None] = {}

    def find(self, kind: str, name: str) -> Path | None:
        key = (kind, name)
        if key not in self._found:
            self._found[key] = self._folders.find(kind, name)
        return self._found[key]

    def path(self, kind: str, name: str) -> Path:
        if self.find(kind, name) is None:
            self._found.pop((kind, name), None)
            return self._folders.path(kind, name)  # raises FileNotFound with the listing
        return self._found[(kind, name)]

    def fingerprint(self, kind: str, name: str) -> list | None:
        try:
            path = self.find(kind, name)
        except FileNameError:
            return None
        return file_fingerprint(path) if path is not None else None

    def names(self, kind: str) -> list[str]:
        return self._folders.names(kind)

    def folders(self, kind: str) -> list[Path]:
        return self._folders.folders(kind)
