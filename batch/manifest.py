"""The output folder's record of a batch: manifest.jsonl, and the lock that keeps one driver per folder.

The manifest is append-only JSONL, one line per finished job (ok or error), written after the job's
files are complete and flushed to disk. A crash can leave at most a torn last line: reading skips
lines that are not whole JSON objects, and the next append starts on a fresh line.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

MANIFEST = "manifest.jsonl"
LOCK = ".batch.lock"


class LockedError(Exception):
    """Another driver holds the output folder."""


def read_manifest(folder: Path) -> list[dict[str, Any]]:
    path = Path(folder) / MANIFEST
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return []
    entries = []
    for line in text.splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line torn by a crash: that job simply runs again
        if isinstance(entry, dict) and isinstance(entry.get("key"), str):
            entries.append(entry)
    return entries


def finished(jobs, entries: list[dict[str, Any]], folder: Path) -> dict[int, dict[str, Any]]:
    """index in `jobs` → the manifest entry that already finished it.

    An entry counts when its status is ok and its files are still there. Entries match jobs by key:
    one with the same name first, then any (a row that moved in an edited table keeps its files
    under the name it had). A failed job has no ok entry, so it runs again.
    """
    done: dict[str, list[dict[str, Any]]] = {}
    latest = {(e["key"], e.get("name")): e for e in entries}  # a later line supersedes an earlier one
    for entry in latest.values():
        if entry.get("status") == "ok" and all((folder / f).is_file() for f in entry.get("outputs") or []):
            done.setdefault(entry["key"], []).append(entry)
    matched: dict[int, dict[str, Any]] = {}
    for exact in (True, False):
        for i, job in enumerate(jobs):
            candidates = done.get(job.key, [])
            if i in matched or not candidates:
                continue
            pick = next((e for e in candidates if e.get("name") == job.name), None) if exact else candidates[0]
            if pick is not None:
                candidates.remove(pick)
                matched[i] = pick
    return matched


class Manifest:
    """Appends one line per finished job, each flushed to disk before the next job is recorded."""

    def __init__(self, folder: Path):
        self.path = Path(folder) / MANIFEST
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        if _ends_torn(self.path):
            os.write(self._fd, b"\n")

    def append(self, entry: dict[str, Any]) -> None:
        line = json.dumps(entry, ensure_ascii=False, default=repr) + "\n"
        os.write(self._fd, line.encode("utf-8"))  # one write on an O_APPEND file: never interleaved
        os.fsync(self._fd)

    def close(self) -> None:
        os.close(self._fd)


def _ends_torn(path: Path) -> bool:
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        if f.tell() == 0:
            return False
        f.seek(-1, os.SEEK_END)
        return f.read(1) != b"\n"


class OutputLock:
    """An exclusive lock on the output folder, held while the driver runs; the system drops it when
    the process ends, however it ends, so a crash leaves no stale lock behind."""

    def __init__(self, folder: Path):
        self.path = Path(folder) / LOCK
        self._file = None

    def __enter__(self) -> OutputLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        f = open(self.path, "a+")  # noqa: SIM115 - held open for the lock's lifetime
        try:
            _lock(f)
        except OSError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            f.close()
            raise LockedError(f"{self.path.parent} is in use by another batch ({holder}); wait for it to "
                              "finish or use another --output-dir") from None
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()}")
        f.flush()
        self._file = f
        return self

    def __exit__(self, *exc) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def _lock(f) -> None:
    try:
        import fcntl
    except ImportError:  # Windows
        import msvcrt

        f.seek(0)
        msvcrt.locking(f.fileno(), msvcrt.LK_NBLCK, 1)
        return
    fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
