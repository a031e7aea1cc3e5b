"""The headless CLI, run as a user runs it: a subprocess per call."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def workflow(tmp_path, nodes, name="wf.json"):
    path = tmp_path / name
    path.write_text(json.dumps({"format": "sdgraph.workflow", "version": 1, "nodes": nodes}))
    return path


def cli(*args, tmp_path, **kwargs):
    env = dict(os.environ, SDGRAPH_NODE_PACKAGES="tests.toy_nodes", PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, str(REPO / "main.py"), *map(str, args)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60, **kwargs)


GOOD = {
    "1": {"type": "Number", "values": {"value": 4}},
    "2": {"type": "Steps", "values": {"steps": 3}, "links": {"x": ["1", 0]}},
    "3": {"type": "Show", "values": {"path": "result.txt"}, "links": {"value": ["2", 0]}},
}


def test_run_ok_prints_progress_and_writes_output(tmp_path):
    out = tmp_path / "out"
    proc = cli("run", workflow(tmp_path, GOOD), "--output-dir", out, tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert (out / "result.txt").read_text() == "7.0"
    assert "[2/3] Steps (node 2) — new" in proc.stderr
    assert "3/3]" in proc.stderr and f"wrote {out / 'result.txt'}" in proc.stderr


def test_set_overrides_are_typed_and_validated(tmp_path):
    path, out = workflow(tmp_path, GOOD), tmp_path / "out"
    proc = cli("run", path, "--output-dir", out, "--set", "2.steps=5", "--set", "1.value=1.5", tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert (out / "result.txt").read_text() == "6.5"
    bad = cli("run", path, "--set", "2.steps=lots", tmp_path=tmp_path)
    assert bad.returncode == 2
    assert "'lots' is not a valid INT for node 2 (Steps) input 'steps'" in bad.stderr
    missing = cli("run", path, "--set", "9.steps=1", tmp_path=tmp_path)
    assert missing.returncode == 2 and "there is no node 9 (nodes: 1, 2, 3)" in missing.stderr
    out_of_range = cli("run", path, "--set", "2.steps=0", tmp_path=tmp_path)
    assert out_of_range.returncode == 2
    assert 'node 2 (Steps): input "steps" = 0 is below the minimum 1' in out_of_range.stdout


def test_json_events_one_object_per_line(tmp_path):
    proc = cli("run", workflow(tmp_path, GOOD), "--output-dir", tmp_path, "--json-events", tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stderr
    events = [json.loads(line) for line in proc.stdout.splitlines()]
    kinds = [e["event"] for e in events]
    assert kinds[0] == "graph_started" and kinds[-1] == "graph_finished"
    assert kinds.count("progress") == 3 and kinds.count("node_finished") == 3
    assert events[-1]["status"] == "ok"


def test_validate_lists_every_problem_with_node_and_fix(tmp_path):
    broken = {
        "1": {"type": "Number", "values": {"value": "four"}},
        "2": {"type": "Steps", "values": {"steps": 0}, "links": {"x": ["1", 0]}},
        "3": {"type": "Fail", "values": {"how": "boom"}, "links": {"x": ["2", 0]}},
        "4": {"type": "Shw", "links": {"value": ["3", 0]}},
    }
    proc = cli("validate", workflow(tmp_path, broken), tmp_path=tmp_path)
    assert proc.returncode == 2
    lines = proc.stdout.splitlines()
    assert lines[:4] == [
        "node 4 (Shw): unknown node type 'Shw' — did you mean Show?",
        "node 1 (Number): input \"value\" = 'four' is not a FLOAT — enter a float value",
        'node 2 (Steps): input "steps" = 0 is below the minimum 1 — set it to 1 or more',
        "node 3 (Fail): input \"how\" = 'boom' is not one of the choices — choose one of: crash, input",
    ]
    assert lines[4].startswith("the workflow has no output node, so running it would do nothing — "
                               "add an output node (such as PreviewImage, SaveImage")
    assert len(lines) == 5
    ok = cli("validate", workflow(tmp_path, GOOD, "good.json"), tmp_path=tmp_path)
    assert ok.returncode == 0 and "ok (3 nodes)" in ok.stdout


def test_unreadable_workflow_exits_2(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2")
    proc = cli("run", bad, tmp_path=tmp_path)
    assert proc.returncode == 2 and "not valid JSON" in proc.stdout
    assert cli("run", tmp_path / "nope.json", tmp_path=tmp_path).returncode == 2
    assert cli("run", tmp_path=tmp_path).returncode == 2  # missing argument


def test_runtime_error_exits_1_with_node_message_not_traceback(tmp_path):
    nodes = {"1": {"type": "Fail"}, "2": {"type": "Show", "links": {"value": ["1", 0]}}}
    proc = cli("run", workflow(tmp_path, nodes), tmp_path=tmp_path)
    assert proc.returncode == 1
    assert "error: node 1 (Fail): ZeroDivisionError: division by zero" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_ctrl_c_cancels_cleanly_with_130(tmp_path):
    nodes = {"1": {"type": "Steps", "values": {"steps": 400, "delay": 0.05}},
             "2": {"type": "Show", "links": {"value": ["1", 0]}}}
    env = dict(os.environ, SDGRAPH_NODE_PACKAGES="tests.toy_nodes", PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, str(REPO / "main.py"), "run", str(workflow(tmp_path, nodes))],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 30
    line = ""
    while "[1/2]" not in line and time.time() < deadline:  # wait until the node is running
        line = proc.stderr.readline()
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130
    assert "interrupted" in err and "Traceback" not in err


def test_nodes_lists_declarations(tmp_path):
    proc = cli("nodes", "--json", tmp_path=tmp_path)
    assert proc.returncode == 0
    steps = next(n for n in json.loads(proc.stdout) if n["type"] == "Steps")
    assert steps["inputs"][1] == {"name": "steps", "type": "INT", "default": 3, "min": 1, "max": 1000, "step": 1}
    text = cli("nodes", tmp_path=tmp_path).stdout
    assert "Steps(x:FLOAT=0.0, steps:INT=3, delay:FLOAT=0.0) -> x:FLOAT" in text


@pytest.mark.parametrize("command", [["nodes"], ["validate", "workflows/txt2img.json"],
                                     ["validate", "workflows/txt2img.api.json"]])
def test_headless_commands_import_no_torch_or_qt(tmp_path, command):
    probe = ("import sys, runpy; sys.argv = ['main.py', *sys.argv[1:]];\n"
             "try:\n    runpy.run_path('main.py', run_name='__main__')\nexcept SystemExit:\n    pass\n"
             "heavy = [m for m in ('torch', 'PySide6', 'diffusers', 'transformers', 'safetensors') if m in sys.modules]\n"
             "print('HEAVY', heavy)")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, "-c", probe, *command], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=60)
    assert "HEAVY []" in proc.stdout, proc.stdout + proc.stderr
