"""`main.py batch` as a user runs it: a subprocess per call, on toy nodes (tests/toy_nodes.py)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from batch.manifest import OutputLock

REPO = Path(__file__).resolve().parent.parent
# 1 Number → 2 Steps (sleeps `delay` per step) → 3 Show, which writes v.txt
NODES = {
    "1": {"type": "Number", "values": {"value": 4}},
    "2": {"type": "Steps", "values": {"steps": 3, "delay": 0.0}, "links": {"x": ["1", 0]}},
    "3": {"type": "Show", "values": {"path": "v.txt"}, "links": {"value": ["2", 0]}},
}


def setup(tmp_path, table: str, nodes=None) -> list[str]:
    (tmp_path / "wf.json").write_text(json.dumps({"format": "sdgraph.workflow", "version": 1,
                                                  "nodes": nodes or NODES}))
    (tmp_path / "rows.csv").write_text(table)
    return [sys.executable, str(REPO / "main.py"), "batch", "wf.json", "rows.csv", "--output-dir", "out"]


def environment() -> dict:
    return dict(os.environ, SDGRAPH_NODE_PACKAGES="tests.toy_nodes", PYTHONPATH=str(REPO))


def batch(tmp_path, table: str, *extra: str, nodes=None) -> subprocess.CompletedProcess:
    return subprocess.run([*setup(tmp_path, table, nodes), *extra], cwd=tmp_path, env=environment(),
                          capture_output=True, text=True, timeout=120)


def manifest(tmp_path) -> list[dict]:
    path = tmp_path / "out" / "manifest.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_bad_rows_are_all_listed_and_nothing_runs(tmp_path):
    proc = batch(tmp_path, "value,steps\n1,0\nx,2\n1,2\n")
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [
        "rows.csv:2: 2.steps: 0 is below the minimum 1 — set it to 1 or more",
        "rows.csv:3: 1.value: 'x' is not a valid FLOAT",
        "2 problem(s) found; nothing was run",
    ]
    assert not (tmp_path / "out").exists()


def test_rows_run_with_set_applied_to_each_and_a_rerun_skips_them(tmp_path):
    proc = batch(tmp_path, "id,value\na,1\nb,2\n", "--set", "2.steps=5")
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "out" / "a.txt").read_text() == "6.0" and (tmp_path / "out" / "b.txt").read_text() == "7.0"
    assert "[2/2] row 2 ok" in proc.stderr and "rows/s" in proc.stderr and "ETA" in proc.stderr
    again = batch(tmp_path, "id,value\na,1\nb,2\n", "--set", "2.steps=5")
    assert again.returncode == 0 and "2 of 2 rows already done" in again.stderr
    changed = batch(tmp_path, "id,value\na,1\nb,2\n", "--set", "2.steps=6")  # --set is part of every key
    assert "done: 2 ok" in changed.stderr and (tmp_path / "out" / "a.txt").read_text() == "7.0"


def test_a_failing_row_is_recorded_and_the_command_exits_1(tmp_path):
    nodes = {**NODES, "4": {"type": "Fail", "values": {"how": "input"}, "links": {"x": ["1", 0]}},
             "5": {"type": "Show", "values": {"path": ""}, "links": {"value": ["4", 0]}}}
    proc = batch(tmp_path, "id,value\na,1\n", nodes=nodes)
    assert proc.returncode == 1
    [entry] = manifest(tmp_path)
    assert entry["status"] == "error"
    assert entry["error"] == 'node 4 (Fail): input "x": must not be used here; pick another number'


def test_a_second_batch_on_the_same_output_folder_is_refused(tmp_path):
    with OutputLock(tmp_path / "out"):
        proc = batch(tmp_path, "value\n1\n")
    assert proc.returncode == 2
    assert proc.stderr.strip() == (f"error: out is in use by another batch (pid {os.getpid()}); wait for it to "
                                   "finish or use another --output-dir")


def test_workers_without_ray_is_a_usage_error(tmp_path):
    proc = batch(tmp_path, "value\n1\n", "--workers", "2")
    assert proc.returncode == 2 and "add --ray local" in proc.stderr


def test_ctrl_c_stops_at_the_next_step_exits_130_and_the_next_run_resumes(tmp_path):
    table = "value\n" + "".join(f"{i}\n" for i in range(1, 7))
    proc = subprocess.Popen([*setup(tmp_path, table), "--set", "2.delay=0.2"], cwd=tmp_path, env=environment(),
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while len(manifest(tmp_path)) < 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 130, stderr
    assert "stopping at the next step" in stderr and "run the same command again to resume" in stderr
    done = [e["row"] for e in manifest(tmp_path)]
    assert 1 <= len(done) < 6 and all(e["status"] == "ok" for e in manifest(tmp_path))
    again = batch(tmp_path, table, "--set", "2.delay=0.2")
    assert again.returncode == 0, again.stderr
    assert f"{len(done)} of 6 rows already done" in again.stderr
    assert sorted(e["row"] for e in manifest(tmp_path)) == [1, 2, 3, 4, 5, 6]


def test_a_local_batch_never_imports_ray(tmp_path):
    setup(tmp_path, "value\n1\n")
    code = ("import sys, cli; code = cli.main(['batch', 'wf.json', 'rows.csv', '--output-dir', 'out']); "
            "print(code, 'ray' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=environment(), capture_output=True,
                          text=True, timeout=60)
    assert proc.stdout.split() == ["0", "False"], proc.stderr
