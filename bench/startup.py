"""Editor start-up time: spawn `python main.py [WORKFLOW]` with SDGRAPH_STARTUP_PROBE=1, which makes
the editor print the time from process start to its window being shown, then quit.

    python bench/startup.py [--runs 5] [--workflow workflows/default.json]

Prints a small table: per run the editor's own measure (process start → window exposed), the
time until node packages were discovered and the workflow opened, and the wall time seen from
here (spawn → the line arrives, which includes the interpreter's start). Goal: shown < 1000 ms.
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


def one_run(workflow: str | None) -> dict:
    env = dict(os.environ, SDGRAPH_STARTUP_PROBE="1", SDGRAPH_DATA_DIR=tempfile.mkdtemp(prefix="sdgraph-bench-"))
    env.setdefault("QT_QPA_PLATFORM", "offscreen")
    cmd = [sys.executable, str(REPO / "main.py")] + ([workflow] if workflow else [])
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out = {"shown": None, "ready": None, "wall": None}
    for line in proc.stdout:
        if line.startswith("sdgraph-startup-ms"):
            out["wall"] = (time.perf_counter() - t0) * 1000
            out["shown"] = float(line.split()[1])
        elif line.startswith("sdgraph-ready-ms"):
            out["ready"] = float(line.split()[1])
    proc.wait(timeout=60)
    out["rc"] = proc.returncode
    if out["shown"] is None:
        out["error"] = proc.stderr.read()[-2000:]
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--workflow", help="open this workflow too (e.g. workflows/default.json)")
    args = p.parse_args(argv)
    rows = [one_run(args.workflow) for _ in range(args.runs)]
    failed = [r for r in rows if r["shown"] is None]
    if failed:
        print("the editor did not report its start-up time:\n" + failed[0].get("error", ""), file=sys.stderr)
        return 1
    print(f"{'run':>4} {'shown ms':>9} {'ready ms':>9} {'wall ms':>9}")
    for i, r in enumerate(rows, 1):
        print(f"{i:>4} {r['shown']:>9.0f} {r['ready'] or 0:>9.0f} {r['wall']:>9.0f}")
    for label, key in (("median", statistics.median), ("best", min)):
        print(f"{label:>6} {key(r['shown'] for r in rows):>7.0f} {key(r['ready'] or 0 for r in rows):>9.0f} "
              f"{key(r['wall'] for r in rows):>9.0f}")
    verdict = "OK" if statistics.median(r["shown"] for r in rows) < 1000 else "SLOW"
    print(f"window shown within 1000 ms of process start: {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
