"""Memory over a long session: the default workflow run many times in one process, switching checkpoints.

What a user of the editor (or a batch) does all day: the same Executor and cache (the editor's:
`Executor(registry, env=env)`, its default LRU cache), a new seed every run (what "control after
generate" does), and the checkpoint switched now and then between two files (the bundled model and
a copy of it under another name, in a temporary models folder). Resident memory (VmRSS from
/proc/self/status) is read after every run, after a gc.collect().

    python bench/memory.py            # 50 runs, 10 checkpoint switches (target: growth < 5 %)
    python bench/memory.py --quick    # 12 runs, 4 switches (a minute or less)

Growth is measured from the end of the warm-up (once every checkpoint has been loaded and run
once) to the end, as a percentage of the warm-up RSS. Target (issue 14): < 5 %. Exits 0 whether
the target is met or missed (printed as OK / MISSED), non-zero only on a crash.

tests/test_memory.py runs `measure()` below with fewer runs and a bound in MB.
"""

from __future__ import annotations

import argparse
import gc
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BUNDLED = REPO / "models" / "checkpoints" / "sdgraph-shapes.safetensors"
TARGET_GROWTH = 0.05  # issue 14: < 5 % after the first run

if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def release_free_heap() -> None:
    """Hand free malloc pages back to the system (glibc's malloc_trim), so RSS counts live memory only."""
    import ctypes

    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def rss_bytes() -> int:
    """Current resident set size of this process (VmRSS), in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status (Linux only)")


@dataclass
class Session:
    """RSS after each run, and where the warm-up ended."""

    rss: list[int] = field(default_factory=list)
    checkpoints: list[str] = field(default_factory=list)
    warmup_runs: int = 0
    seconds: float = 0.0

    @property
    def baseline(self) -> int:
        return self.rss[self.warmup_runs - 1]

    @property
    def growth_bytes(self) -> int:
        """RSS at the end minus RSS after the warm-up (the largest of the last three, to be fair to a leak)."""
        return max(self.rss[-3:]) - self.baseline

    @property
    def growth_fraction(self) -> float:
        return self.growth_bytes / self.baseline


def checkpoint_schedule(runs: int, switches: int, names: list[str]) -> list[str]:
    """Which checkpoint each run uses: `switches` changes spread evenly over `runs` runs."""
    if not 0 <= switches < runs:
        raise ValueError(f"switches must be in 0..{runs - 1}")
    block = runs / (switches + 1)
    return [names[int(i // block) % len(names)] for i in range(runs)]


def measure(models_dir: Path, output_dir: Path, runs: int, switches: int, *, dtype: str = "fp32",
            steps: int | None = None, cache=None, trim: bool = False,
            after_run: Callable[[int], None] | None = None) -> Session:
    """Run the default workflow `runs` times in this process as the editor would, switching between
    the checkpoints in models_dir/checkpoints `switches` times; RSS after every run. `steps`
    overrides the workflow's; `cache` replaces the editor's default cache (e.g. one that keeps
    nothing, so that every run loads its checkpoint again). `trim`: release free heap pages before
    each reading, so the series shows live memory (leaks) without the allocator's fragmentation."""
    from nodegraph import REGISTRY, Executor
    from nodegraph.workflow import load_workflow
    from nodes.core.env import SDEnvironment

    REGISTRY.discover("nodes")
    env = SDEnvironment(models_dir=models_dir, output_dir=output_dir, input_dir=output_dir, device="cpu", dtype=dtype)
    names = env.files.names("checkpoints")
    schedule = checkpoint_schedule(runs, switches, names)
    executor = Executor(REGISTRY, cache=cache, env=env)  # cache None: the editor's default (ui/runner.py)
    graph = load_workflow(REPO / "workflows" / "default.json", REGISTRY)
    loader = next(n for n, node in graph.nodes.items() if node.type == "CheckpointLoaderSimple")
    sampler = next(n for n, node in graph.nodes.items() if node.type == "KSampler")
    session = Session(checkpoints=schedule)
    seen: set[str] = set()
    t0 = time.perf_counter()
    for i, name in enumerate(schedule):
        graph.set_value(loader, "ckpt_name", name)
        graph.set_value(sampler, "seed", 1000 + i)  # a new image each run, as "control after generate" does
        if steps is not None:
            graph.set_value(sampler, "steps", steps)
        result = executor.run(graph)
        if not result.ok:
            raise RuntimeError(f"run {i + 1} failed: {result.error.message}")
        if after_run is not None:
            after_run(i)
        del result
        gc.collect()
        if trim:
            release_free_heap()
        session.rss.append(rss_bytes())
        seen.add(name)
        if not session.warmup_runs and seen == set(names):
            session.warmup_runs = i + 1  # every checkpoint loaded and run once
    session.seconds = time.perf_counter() - t0
    return session


def models_folder(root: Path, copies: int = 2) -> Path:
    """root/models/checkpoints holding the bundled model under `copies` names (the first is the file
    itself, hard-linked or copied; the others are copies: distinct files, as two models would be)."""
    folder = root / "models" / "checkpoints"
    folder.mkdir(parents=True, exist_ok=True)
    for k in range(copies):
        shutil.copyfile(BUNDLED, folder / f"shapes-{chr(ord('a') + k)}.safetensors")
    return root / "models"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=50)
    p.add_argument("--switches", type=int, default=10)
    p.add_argument("--dtype", default="fp32", choices=["auto", "fp32", "bf16"])
    p.add_argument("--quick", action="store_true", help="12 runs, 4 switches")
    args = p.parse_args(argv)
    if args.quick:
        args.runs, args.switches = 12, 4
    with tempfile.TemporaryDirectory(prefix="sdgraph-memory-") as tmp:
        models = models_folder(Path(tmp))
        s = measure(models, Path(tmp) / "out", args.runs, args.switches, dtype=args.dtype)
    mb = 1 / 2**20
    print(f"workload: workflows/default.json (bundled model, 64x64, 20 steps), {args.runs} runs, "
          f"{args.switches} checkpoint switches, {args.dtype}, one Executor with the editor's cache")
    print(f"RSS after run 1: {s.rss[0] * mb:.0f} MB; after the warm-up (run {s.warmup_runs}): {s.baseline * mb:.0f} MB; "
          f"at the end: {s.rss[-1] * mb:.0f} MB; peak of the series {max(s.rss) * mb:.0f} MB")
    print("RSS per run (MB): " + " ".join(f"{r * mb:.0f}" for r in s.rss))
    verdict = "OK" if s.growth_fraction < TARGET_GROWTH else "MISSED"
    print(f"growth after the warm-up: {s.growth_bytes * mb:+.1f} MB = {100 * s.growth_fraction:+.2f} % "
          f"(target < {100 * TARGET_GROWTH:.0f} %): {verdict}   [{s.seconds:.0f} s]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
