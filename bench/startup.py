"""Editor start-up time: spawn `python main.py [WORKFLOW]` with SDGRAPH_STARTUP_PROBE=1, which makes
the editor print the time from process start to its window being shown, then quit.

    python bench/startup.py [--runs 5] [--workflow workflows/default.json] [--no-warm]

Prints a small table: per run the editor's own measure (process start → window exposed), the
time until node packages were discovered and the workflow opened, the time until the background
warm-up (torch, diffusers, transformers) was done, the longest event-loop stall while it ran,
and the wall time seen from here (spawn → the first line arrives, which includes the interpreter's
start). Goal: shown < 1000 ms.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def one_run(workflow: str | None, warm: bool = True) -> dict:
    env = dict(os.environ, SDGRAPH_STARTUP_PROBE="warm" if warm else "1", SDGRAPH_DATA_DIR=tempfile.mkdtemp(prefix="sdgraph-bench-"))
    env.setdefault("QT_QPA_PLATFORM", "offscreen")
    cmd = [sys.executable, str(REPO / "main.py")] + ([workflow] if workflow else [])
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out = {"shown": None, "ready": None, "wall": None, "warm": None, "stall": None}
    for line in proc.stdout:
        if line.startswith("sdgraph-startup-ms"):
            out["wall"] = (time.perf_counter() - t0) * 1000
            out["shown"] = float(line.split()[1])
        elif line.startswith("sdgraph-ready-ms"):
            out["ready"] = float(line.split()[1])
        elif line.startswith("sdgraph-warm-ms"):
            fields = line.split()
            out["warm"], out["stall"] = float(fields[1]), float(fields[3])
    proc.wait(timeout=180)
    out["rc"] = proc.returncode
    if out["shown"] is None:
        out["error"] = proc.stderr.read()[-2000:]
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--workflow", help="open this workflow too (e.g. workflows/default.json)")
    p.add_argument("--no-warm", action="store_true", help="quit once shown; skip the warm-up columns")
    args = p.parse_args(argv)
    rows = [one_run(args.workflow, warm=not args.no_warm) for _ in range(args.runs)]
    failed = [r for r in rows if r["shown"] is None]
    if failed:
        print("the editor did not report its start-up time:\n" + failed[0].get("error", ""), file=sys.stderr)
        return 1
    cols = [("shown ms", "shown"), ("ready ms", "ready")]
    if not args.no_warm:
        cols += [("warm ms", "warm"), ("stall ms", "stall")]
    cols.append(("wall ms", "wall"))
    print(f"{'run':>6}" + "".join(f" {title:>9}" for title, _ in cols))
    for i, r in enumerate(rows, 1):
        print(f"{i:>6}" + "".join(f" {r[key] or 0:>9.0f}" for _, key in cols))
    for label, pick in (("median", statistics.median), ("best", min)):
        print(f"{label:>6}" + "".join(f" {pick(r[key] or 0 for r in rows):>9.0f}" for _, key in cols))
    if not args.no_warm:
        print("warm: process start → torch/diffusers/transformers imported in the background; "
              "stall: the longest the GUI thread was blocked meanwhile")
    verdict = "OK" if statistics.median(r["shown"] for r in rows) < 1000 else "SLOW"
    print(f"window shown within 1000 ms of process start: {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
