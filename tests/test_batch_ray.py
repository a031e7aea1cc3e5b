"""`main.py batch … --ray local` end to end, in a subprocess, on the bundled model: a one-machine Ray
cluster with 2 CPUs, no dashboard and a small object store (what --ray local starts), torn down
when the command ends. A few short rows each, so the file takes well under a minute."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nodegraph.fileio import read_png_text

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow
PROMPTS = ["a large red circle at the top left on a white background",
           "a small blue star on the right on a black background",
           "a large green square in the center on a gray background"]


def command(tmp_path, out: Path, *extra: str, rows: int = 3, steps: int = 6) -> list[str]:
    table = tmp_path / "rows.csv"
    table.write_text("2.text,seed\n" + "".join(f'"{PROMPTS[i % 3]}",{i}\n' for i in range(rows)))
    return [sys.executable, str(REPO / "main.py"), "batch", str(REPO / "workflows" / "default.json"), str(table),
            "--output-dir", str(out), "--set", f"7.steps={steps}", "--cpus-per-worker", "1", *extra]


def environment() -> dict:
    return dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", RAY_USAGE_STATS_ENABLED="0")


def batch(tmp_path, out: Path, *extra: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(command(tmp_path, out, *extra, **kwargs), cwd=tmp_path, env=environment(),
                          capture_output=True, text=True, timeout=240)


def manifest(out: Path) -> list[dict]:
    path = out / "manifest.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def stop(proc: subprocess.Popen) -> None:
    """End a driver that is still running the way Ctrl-C does, so it shuts its Ray cluster down
    (a killed driver leaves Ray's agent processes behind)."""
    for _ in range(2):
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            time.sleep(0.5)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture(scope="module")
def local_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("local")
    proc = batch(tmp, tmp / "out")
    assert proc.returncode == 0, proc.stderr
    return tmp / "out"


def test_the_local_backend_writes_each_row_with_its_workflow_inside(local_run):
    pngs = sorted(p.name for p in local_run.glob("*.png"))
    assert pngs == ["00001_0.png", "00002_1.png", "00003_2.png"]
    embedded = json.loads(read_png_text((local_run / "00002_1.png").read_bytes())["sdgraph"])
    assert embedded["nodes"]["2"]["values"]["text"] == PROMPTS[1]
    assert (embedded["nodes"]["7"]["values"]["seed"], embedded["nodes"]["7"]["values"]["steps"]) == (1, 6)


def test_ray_local_gives_pngs_byte_identical_to_the_local_backend(local_run, tmp_path):
    out = tmp_path / "out"
    proc = batch(tmp_path, out, "--ray", "local", "--workers", "2")
    assert proc.returncode == 0, proc.stderr
    assert "ray: 2 worker(s) up" in proc.stderr
    ours = {p.name: p.read_bytes() for p in local_run.glob("*.png")}
    theirs = {p.name: p.read_bytes() for p in out.glob("*.png")}
    assert theirs == ours
    assert len({e["worker"] for e in manifest(out)}) == 2  # both workers got rows


def test_a_killed_ray_worker_is_restarted_and_the_batch_completes(tmp_path):
    out = tmp_path / "out"
    proc = subprocess.Popen(command(tmp_path, out, "--ray", "local", "--workers", "2", rows=6, steps=20),
                            cwd=tmp_path, env=environment(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 180
        while not manifest(out) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        first = manifest(out)[0]
        os.kill(int(first["worker"].rpartition(":")[2]), signal.SIGKILL)  # the worker that ran it, mid-row
        _, stderr = proc.communicate(timeout=180)
    finally:
        stop(proc)
    assert proc.returncode == 0, stderr
    assert "died; Ray restarts it" in stderr and "is retried on another worker" in stderr
    entries = manifest(out)
    assert sorted(e["row"] for e in entries) == [1, 2, 3, 4, 5, 6]
    assert all(e["status"] == "ok" for e in entries)
    assert any(e["attempts"] == 2 for e in entries)
    assert len(list(out.glob("*.png"))) == 6
