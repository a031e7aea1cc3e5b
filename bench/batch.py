"""Batch benchmark: the default workflow over 50 rows (5 prompts × 10 seeds) on the bundled model.

The reference is what a user does without `batch`: a shell loop of `main.py run`, one fresh process
per image, measured here on a few rows and given per row. Against it, the same 50 rows through the
batch driver: the local backend (one process, one executor; timed from before anything heavy is
imported, as a fresh process would pay it), and `--ray local` with one worker, which isolates what
Ray adds per row. Every case uses the same torch thread count (--threads, default 1: on a small
shared machine more threads mostly measure the neighbours).

    python bench/batch.py [--reference-rows 3] [--threads 1] [--no-ray]

Targets: local ≥ 10× the rows/s of the `main.py run` loop; resident memory after row 50 within 5 %
of after row 5.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

WORKFLOW = REPO / "workflows" / "default.json"
PROMPTS = [f"a large {colour} {shape} {where} on a {background} background" for colour, shape, where, background in (
    ("red", "circle", "at the top left", "white"), ("blue", "star", "on the left", "black"),
    ("green", "square", "in the center", "gray"), ("yellow", "triangle", "at the bottom", "black"),
    ("purple", "circle", "on the right", "white"))]
SEEDS = "0-9"


def rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:  # not Linux: the peak is the best there is
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)


def reference(rows: int, folder: Path, threads: int) -> float:
    """Seconds per image of `main.py run`, a fresh process each time."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", OMP_NUM_THREADS=str(threads))
    t0 = time.perf_counter()
    for i in range(rows):
        subprocess.run([sys.executable, str(REPO / "main.py"), "run", str(WORKFLOW), "--output-dir", str(folder),
                        "--set", f"2.text={PROMPTS[i % len(PROMPTS)]}", "--set", f"7.seed={i}"],
                       env=env, check=True, capture_output=True)
    return (time.perf_counter() - t0) / rows


def batch(folder: Path, table: Path, backend) -> tuple[float, list[float], list[int], float]:
    """(total seconds, when each row finished, RSS after each row, worker start-up seconds)."""
    t0 = time.perf_counter()
    import cli  # imported here, so the total includes what a fresh `main.py batch` imports
    from batch.driver import run_batch
    from batch.plan import make_jobs, parse_seeds
    from batch.table import read_table
    from nodegraph.workflow import load_workflow, to_native

    args = cli.common_options().parse_args(["--output-dir", str(folder)])
    env, registry = cli.make_env(args), cli.load_registry([])
    graph = load_workflow(WORKFLOW, registry, strict=False)
    jobs = make_jobs(graph, registry, env, read_table(table, graph, registry), seeds=parse_seeds(SEEDS))
    finished, rss = [], []

    def on_row(job, result, outputs):
        assert result["status"] == "ok", result["error"]
        finished.append(time.perf_counter() - t0)
        rss.append(rss_bytes())

    with open(os.devnull, "w") as quiet:
        summary = run_batch(jobs, env=env, registry=registry, workflow=to_native(graph), folder=folder,
                            backend=backend, on_row=on_row, stream=quiet)
    assert summary.ok == len(jobs), summary
    return time.perf_counter() - t0, finished, rss, summary.setup_seconds


def steady(finished: list[float]) -> float:
    """Seconds per row once warm: from row 5 to the last."""
    return (finished[-1] - finished[4]) / (len(finished) - 5)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--reference-rows", type=int, default=3, help="main.py run calls to time (default 3)")
    p.add_argument("--threads", type=int, default=1, help="torch threads in every case (default 1)")
    p.add_argument("--no-ray", action="store_true", help="skip the --ray local case")
    args = p.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from batch.driver import Backend

    with tempfile.TemporaryDirectory(prefix="sdgraph-bench-batch-") as tmp:
        tmp = Path(tmp)
        table = tmp / "prompts.csv"
        table.write_text("2.text\n" + "".join(f"{p}\n" for p in PROMPTS))
        threads = args.threads
        per_run = reference(args.reference_rows, tmp / "reference", threads)
        total, finished, rss, _ = batch(tmp / "local", table, Backend(cpus_per_worker=threads))
        rows = [("main.py run loop (reference)", args.reference_rows, per_run * args.reference_rows, per_run),
                ("batch, local", len(finished), total, total / len(finished))]
        ray_line = ""
        if not args.no_ray:
            ray_total, ray_finished, _, ray_setup = batch(
                tmp / "ray", table, Backend(ray="local", workers=1, cpus_per_worker=threads))
            rows.append(("batch --ray local (1 worker)", len(ray_finished), ray_total,
                         ray_total / len(ray_finished)))
            overhead = steady(ray_finished) - steady(finished)
            ray_line = (f"ray: cluster and worker up in {ray_setup:.1f} s; warm {steady(ray_finished):.3f} s/row, "
                        f"{overhead * 1000:+.0f} ms/row against local")

    print(f"batch benchmark: {WORKFLOW.name}, {len(finished)} rows ({len(PROMPTS)} prompts × 10 seeds), "
          f"torch threads {threads}")
    print(f"{'case':<42} {'rows':>5} {'total s':>8} {'s/row':>7} {'rows/s':>7} {'× ref':>6}")
    for name, count, seconds, per_row in rows:
        print(f"{name:<42} {count:>5} {seconds:>8.1f} {per_row:>7.3f} {1 / per_row:>7.2f} "
              f"{per_run / per_row:>6.1f}")
    speedup = per_run / (total / len(finished))
    growth = (rss[-1] - rss[4]) / rss[4] * 100
    print(f"local: warm {steady(finished):.3f} s/row; RSS {rss[4] / 2**20:.0f} MB after row 5, "
          f"{rss[-1] / 2**20:.0f} MB after row {len(rss)}: {growth:+.1f} % (target < 5 %) "
          f"{'OK' if growth < 5 else 'MISSED'}")
    if ray_line:
        print(ray_line)
    print(f"local rows/s vs a main.py run loop: {speedup:.1f}× (target ≥ 10×) {'OK' if speedup >= 10 else 'MISSED'}")
    return 0 if speedup >= 10 and growth < 5 else 1


if __name__ == "__main__":
    sys.exit(main())
