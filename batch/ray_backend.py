"""The Ray backend: workers are Ray actors, each holding a Worker (one executor, models kept warm).

Ray does placement, GPU assignment, transport and restarts; this module only decides which worker
gets which row: a worker gets rows that load the model files it already holds, at most `in_flight`
at a time. A worker that dies is restarted by Ray (`max_restarts`); the rows it held are retried
once, on another worker where there is one. Imported only when --ray is given.
"""

from __future__ import annotations

import copy
import logging
import os
import time
from collections import OrderedDict, deque
from dataclasses import dataclass
from pathlib import Path

from .driver import Stop
from .worker import Worker

REPO = Path(__file__).resolve().parent.parent
MAX_RESTARTS = 3  # per worker; past that Ray leaves it dead and the others carry on
LOCAL_OBJECT_STORE = 128 * 2**20  # rows come back as PNG bytes: a small store is plenty


class RayUnavailable(Exception):
    """Ray is not installed, or the cluster cannot be reached or cannot hold the workers."""


@dataclass
class Slot:
    """The driver's view of one actor."""

    index: int
    handle: object
    name: str = ""
    model: str | None = None  # the model files it loaded last (what its executor holds)
    in_flight: int = 0
    dying: bool = False  # died, and Ray has not brought it back yet: no rows for it
    probe: object = None  # the pending "are you back?" call to a dying worker
    probe_at: float = 0.0  # when to ask next
    alive: bool = True

    @property
    def key(self) -> str:
        return f"worker {self.index}"


class JobQueue:
    """Pending jobs grouped by the model files they load, in plan order; retried jobs first."""

    def __init__(self, jobs: list):
        self.groups: OrderedDict[str, deque] = OrderedDict()
        for job in jobs:
            self.groups.setdefault(job.model, deque()).append(job)
        self.retry: deque = deque()

    def __len__(self) -> int:
        return len(self.retry) + sum(len(g) for g in self.groups.values())

    def take(self, slot: Slot, slots: list[Slot]):
        """The next job for `slot`: one it may retry, else one loading the model it holds, else one
        of a model no other worker holds, else any; None if all that is left must go elsewhere."""
        alive = {s.key for s in slots if s.alive}
        for job in self.retry:  # elsewhere than where it died, unless nowhere else is left
            if slot.key not in job.avoid or alive <= job.avoid:
                self.retry.remove(job)
                return job
        held = {s.model for s in slots if s.alive and s is not slot}
        model = slot.model if self.groups.get(slot.model) else next(
            (m for m in self.groups if m not in held), next(iter(self.groups), None))
        if model is None:
            return None
        group = self.groups[model]
        job = group.popleft()
        if not group:
            del self.groups[model]
        return job


def run_on_ray(jobs: list, recorder, *, env, workflow: dict, backend, packages: list[str], summary) -> None:
    ray = _import_ray()
    t0 = time.perf_counter()
    _init(ray, backend)
    try:
        slots = _start_workers(ray, backend, env, workflow, packages)
        summary.setup_seconds = time.perf_counter() - t0
        recorder.progress.line(f"ray: {len(slots)} worker(s) up in {summary.setup_seconds:.1f}s: "
                               + ", ".join(s.name for s in slots))
        _dispatch(ray, jobs, slots, recorder, backend.in_flight, summary)
    finally:
        ray.shutdown()


def _import_ray():
    try:
        import ray
    except ImportError:
        raise RayUnavailable("--ray needs Ray, which is not installed: pip install -e '.[ray]' "
                             "(or pip install 'ray[client]')") from None
    return ray


def _init(ray, backend) -> None:
    # sdgraph sends nothing anywhere; Ray reports usage unless told not to (RAY_USAGE_STATS_ENABLED=1 allows it)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    # Workers import batch/ and nodes/ from this checkout: every node of a cluster needs it at the same path.
    env_vars = {"PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    options: dict = {"runtime_env": {"env_vars": env_vars}, "logging_level": logging.WARNING}
    if backend.ray == "local":
        cpus = backend.workers * (backend.cpus_per_worker or 1) if backend.workers else os.cpu_count()
        options.update(address="local", num_cpus=cpus, include_dashboard=False,
                       object_store_memory=LOCAL_OBJECT_STORE)
    else:
        options["address"] = backend.ray
    try:
        ray.init(**options)
    except (ConnectionError, RuntimeError, ValueError) as e:
        raise RayUnavailable(f"--ray {backend.ray}: cannot start or reach the Ray cluster: {e}") from None


def _start_workers(ray, backend, env, workflow: dict, packages: list[str]) -> list[Slot]:
    resources = ray.cluster_resources()
    cpus_total, gpus_total = int(resources.get("CPU", 0)), int(resources.get("GPU", 0))
    gpus = backend.gpus_per_worker if backend.gpus_per_worker is not None else (1 if gpus_total else 0)
    cpus = backend.cpus_per_worker or 1
    count = backend.workers or max(1, int(gpus_total // gpus) if gpus else cpus_total // cpus)
    if count * gpus > gpus_total or count * cpus > cpus_total:
        raise RayUnavailable(f"--ray {backend.ray}: {count} worker(s) × {cpus} CPU, {gpus:g} GPU need more than "
                             f"the cluster has ({cpus_total} CPUs, {gpus_total} GPUs); lower --workers or "
                             "--cpus-per-worker/--gpus-per-worker")
    actor = _actor_class(ray)
    env = _portable(env)
    handles = [actor.options(num_cpus=cpus, num_gpus=gpus, max_restarts=MAX_RESTARTS, max_task_retries=0)
               .remote(env, workflow, packages, cpus) for _ in range(count)]
    try:
        names = ray.get([h.describe.remote() for h in handles])
    except ray.exceptions.RayActorError as e:  # its __init__ raised: Ray's last line is that exception
        raise RayUnavailable(f"a Ray worker failed to start: {str(e).strip().splitlines()[-1]}") from None
    return [Slot(i, h, n["name"]) for i, (h, n) in enumerate(zip(handles, names, strict=True), 1)]


def _actor_class(ray):
    @ray.remote(concurrency_groups={"control": 1})
    class BatchWorker:
        """Rows run one at a time in the default group; cancel and describe answer meanwhile."""

        def __init__(self, env, workflow, packages, threads):
            self.worker = Worker(env, workflow, packages=packages, threads=threads)

        def run(self, job):
            return self.worker.run(job)

        @ray.method(concurrency_group="control")
        def cancel(self):
            self.worker.cancel()

        @ray.method(concurrency_group="control")
        def describe(self):
            return self.worker.describe()

    return BatchWorker


def _portable(env):
    """The environment with absolute folders, for workers whose working folder is not ours."""
    env = copy.deepcopy(env)
    if hasattr(env, "models_dir"):
        env.models_dir = Path(env.models_dir).absolute()
        env.extra_model_dirs = {k: [Path(p).absolute() for p in v] for k, v in env.extra_model_dirs.items()}
        env.set_paths(input_dir=Path(env.paths.input).absolute())
    return env


def _dispatch(ray, jobs: list, slots: list[Slot], recorder, in_flight: int, summary) -> None:
    queue = JobQueue(jobs)
    running: dict = {}  # object ref → (job, slot); job None for a probe of a restarting worker
    progress = recorder.progress
    gone = ray.exceptions.ActorDiedError  # Ray will not restart it (again)

    def cancel_all():
        for slot in slots:
            if slot.alive and not slot.dying:
                slot.handle.cancel.remote()

    def lost(slot: Slot, error) -> None:
        """A worker died: every row it held fails, but the death is one, and Ray may bring it back."""
        if isinstance(error, gone):
            if slot.alive:
                progress.line(f"{slot.key} ({slot.name}) died and Ray will not restart it; the others carry on")
            slot.alive = False
        elif not slot.dying:
            progress.line(f"{slot.key} ({slot.name}) died; Ray restarts it")
        slot.dying, slot.model = True, None

    with Stop(cancel_all, progress) as stop:
        while running or (len(queue) and not stop.stopped):
            for slot in slots:  # ask a restarting worker whether it is back, twice a second
                if slot.alive and slot.dying and slot.probe is None and time.monotonic() >= slot.probe_at:
                    slot.probe = slot.handle.describe.remote()
                    running[slot.probe] = (None, slot)
            for depth in range(1, in_flight + 1):  # a row for every worker before a second for any
                for slot in slots:
                    if stop.stopped or not slot.alive or slot.dying or slot.in_flight >= depth or not len(queue):
                        continue
                    job = queue.take(slot, slots)
                    if job is None:  # only rows that died on this worker are left: they wait for another
                        continue
                    running[slot.handle.run.remote(job.message())] = (job, slot)
                    slot.in_flight += 1
                    slot.model = job.model
            if not running:
                if not any(s.alive and s.dying for s in slots):
                    if len(queue):
                        progress.line("no Ray worker is left alive; the remaining rows run next time")
                    break
                time.sleep(0.1)  # every worker left is restarting
                continue
            ready, _ = ray.wait(list(running), num_returns=1, timeout=0.5)
            for ref in ready:
                job, slot = running.pop(ref)
                if job is None:
                    slot.probe, slot.probe_at = None, time.monotonic() + 0.5
                else:
                    slot.in_flight -= 1
                try:
                    result = ray.get(ref)
                except ray.exceptions.RayActorError as e:
                    lost(slot, e)
                    if job is not None:
                        _retry(slot, job, queue, recorder)
                    continue
                except ray.exceptions.RayError as e:  # a bug in the worker itself: the row fails
                    if job is None:
                        slot.alive = False
                        continue
                    result = {"status": "error", "files": [], "seconds": 0.0, "worker": slot.name,
                              "error": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"}
                if job is None:
                    slot.dying, slot.name = False, result["name"]
                    progress.line(f"{slot.key} is back ({slot.name})")
                elif result["status"] != "interrupted":
                    recorder.record(job, result)
        summary.interrupted = stop.stopped


def _retry(slot: Slot, job, queue: JobQueue, recorder) -> None:
    """A row whose worker died runs once more, elsewhere where there is an elsewhere."""
    if job.attempts == 0:
        job.attempts = 1
        job.avoid.add(slot.key)
        queue.retry.append(job)
        recorder.progress.line(f"    row {job.row} is retried on another worker")
        return
    recorder.record(job, {"status": "error", "files": [], "seconds": 0.0, "worker": slot.name,
                          "error": "the worker running it died twice"})
