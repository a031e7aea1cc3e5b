"""The batch driver: skips finished jobs, hands the rest to a backend, and writes every file and
every manifest line itself — workers only return bytes."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from nodegraph.fileio import atomic_write

from .manifest import MANIFEST, Manifest, OutputLock, finished, read_manifest
from .progress import BatchProgress, clock
from .table import TableError


@dataclass
class Backend:
    ray: str | None = None  # None: the local backend; else a Ray address (local, auto, HOST:PORT, ray://…)
    workers: int | None = None
    gpus_per_worker: float | None = None
    cpus_per_worker: int | None = None  # also torch's thread count
    in_flight: int = 2  # jobs queued on each worker, so it never waits for the driver


@dataclass
class Summary:
    total: int = 0
    skipped: int = 0
    ok: int = 0
    failed: int = 0
    interrupted: bool = False
    seconds: float = 0.0
    setup_seconds: float = 0.0  # until the workers were up (Ray: cluster and actors)


class Recorder:
    """Writes a job's files, then its manifest line; reports it."""

    def __init__(self, folder: Path, manifest: Manifest, progress: BatchProgress, summary: Summary,
                 on_row: Callable[[Any, dict, list[str]], None] | None = None):
        self.folder, self.manifest, self.progress, self.summary = folder, manifest, progress, summary
        self.on_row = on_row

    def record(self, job, result: dict[str, Any]) -> None:
        outputs = []
        if result["status"] == "ok":
            files = result["files"]
            for i, (suffix, data) in enumerate(files, 1):
                name = f"{job.name}{suffix}" if len(files) == 1 else f"{job.name}_{i}{suffix}"
                atomic_write(self.folder / name, data)
                outputs.append(name)
            self.summary.ok += 1
        else:
            self.summary.failed += 1
        self.manifest.append({
            "row": job.row, "id": job.id, "seed": job.seed, "key": job.key, "name": job.name,
            "status": result["status"], "outputs": outputs, "overrides": job.values,
            "seconds": round(result["seconds"], 3), "worker": result["worker"], "error": result["error"],
            "attempts": job.attempts + 1, "finished": datetime.now(UTC).isoformat(timespec="seconds"),
        })
        self.progress.row_done(job, result, outputs)
        if self.on_row is not None:
            self.on_row(job, result, outputs)


class Stop:
    """Ctrl-C: the first stops the batch at the next sampler step (the unfinished rows run next
    time), the second stops at once."""

    def __init__(self, on_stop: Callable[[], None], progress: BatchProgress):
        self.event = threading.Event()
        self._on_stop, self._progress = on_stop, progress
        self._previous = None

    def __enter__(self) -> Stop:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)

    def _handle(self, signum, frame) -> None:
        if self.event.is_set():
            raise KeyboardInterrupt
        self.event.set()
        self._progress.line("stopping at the next step… (Ctrl-C again to stop now)")
        self._on_stop()

    @property
    def stopped(self) -> bool:
        return self.event.is_set()


def run_batch(jobs: list, *, env, registry, workflow: dict, folder: Path, backend: Backend | None = None,
              packages: list[str] | None = None, where: str = "table",
              on_row: Callable[[Any, dict, list[str]], None] | None = None, stream=None) -> Summary:
    """Run the jobs not yet finished in `folder`; LockedError if another driver holds it, TableError
    if a job's name is held by another finished job."""
    backend = backend or Backend()
    started = time.perf_counter()
    with OutputLock(folder):
        done = finished(jobs, read_manifest(folder), folder)
        pending = [job for i, job in enumerate(jobs) if i not in done]
        _check_names(pending, done.values(), where)
        summary = Summary(total=len(jobs), skipped=len(done))
        progress = BatchProgress(len(pending), stream)
        if done:
            progress.line(f"{len(done)} of {len(jobs)} rows already done (per {folder / MANIFEST}); "
                          f"running {len(pending)}")
        manifest = Manifest(folder)
        try:
            recorder = Recorder(folder, manifest, progress, summary, on_row)
            if pending and backend.ray is None:
                from .local import run_local

                run_local(pending, recorder, env=env, registry=registry, workflow=workflow,
                          threads=backend.cpus_per_worker, summary=summary)
            elif pending:
                from .ray_backend import run_on_ray  # imports ray itself, only now

                run_on_ray(pending, recorder, env=env, workflow=workflow, backend=backend,
                           packages=packages or ["nodes"], summary=summary)
        finally:
            manifest.close()
        summary.seconds = time.perf_counter() - started
        progress.line(_closing_line(summary, folder))
    return summary


def _check_names(pending: list, finished_entries, where: str) -> None:
    held = {e.get("name"): e for e in finished_entries}
    problems = [f"{where}:{job.line}: output name {job.name!r} is held by row {held[job.name].get('row')} of an "
                "earlier run with other values, which is still in the table; give rows an id column, put "
                "{key} in --name, or use another --output-dir" for job in pending if job.name in held]
    if problems:
        raise TableError(problems)


def _closing_line(s: Summary, folder: Path) -> str:
    ran = s.ok + s.failed
    rate = f", {ran / s.seconds:.2f} rows/s" if ran and s.seconds > 0 else ""
    text = (f"{'interrupted' if s.interrupted else 'done'}: {s.ok} ok, {s.failed} failed, {s.skipped} already done, "
            f"{s.total - s.skipped - ran} left of {s.total} rows in {clock(s.seconds)}{rate}; "
            f"manifest: {folder / MANIFEST}")
    if s.interrupted:
        text += " — run the same command again to resume"
    elif s.failed:
        text += " — failed rows run again with the same command"
    return text
