"""The local backend: one process, one worker (one executor), rows in the planned order."""

from __future__ import annotations

import time

from .driver import Stop
from .worker import Worker


def run_local(jobs: list, recorder, *, env, registry, workflow: dict, threads: int | None, summary) -> None:
    t0 = time.perf_counter()
    worker = Worker(env, workflow, registry=registry, name="local", threads=threads)
    summary.setup_seconds = time.perf_counter() - t0
    progress = recorder.progress
    unsubscribe = worker.executor.add_listener(progress.on_event)
    try:
        with Stop(worker.cancel, progress) as stop:
            for job in jobs:
                if stop.stopped:
                    break
                progress.row_started(job)
                result = worker.run(job.message())
                if result["status"] == "interrupted":
                    break
                recorder.record(job, result)
            summary.interrupted = stop.stopped
    finally:
        unsubscribe()
        worker.close()
