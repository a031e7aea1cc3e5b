"""Batch runs without Ray: tables, validation of every row, keys and resume, names, failures, Ctrl-C.

In-process, on toy nodes (tests/toy_nodes.py plus a seeded node here), so each test takes
milliseconds; test_batch_cli.py runs the command itself and the bundled model.
"""

from __future__ import annotations

import io
import json
import os
import signal
import sys

import pytest

from batch.driver import Backend, run_batch
from batch.manifest import MANIFEST, LockedError, OutputLock, read_manifest
from batch.plan import job_key, make_jobs, parse_seeds
from batch.table import TableError, read_table
from batch.worker import Worker, apply_values
from nodegraph import Environment, Float, Graph, Int, Node, Output, Paths, UserError
from nodegraph import types as T
from nodegraph.workflow import from_data, to_native
from tests import toy_nodes

UNLUCKY: set[int] = set()  # seeds the Seeded node refuses, while a test wants a row to fail


class Seeded(Node):
    """x + seed; fails for the seeds in UNLUCKY."""

    category = "values"
    inputs = [Float("x", 0.0), Int("seed", 0, min=0, max=2**32)]
    outputs = [Output("x", T.FLOAT)]

    def run(self, ctx, x, seed):
        toy_nodes.CALLS.append(ctx.node_id)
        if seed in UNLUCKY:
            raise UserError(f"seed {seed} is unlucky")
        return (x + seed,)


REGISTRY = toy_nodes.make_registry()
REGISTRY.register(Seeded)

# 1 Number → 2 Steps → 3 Seeded → 4 Show (writes v.txt); 5 Text → 6 Show (no file)
WORKFLOW = {"format": "sdgraph.workflow", "version": 1, "nodes": {
    "1": {"type": "Number", "values": {"value": 4.0}},
    "2": {"type": "Steps", "values": {"steps": 3, "delay": 0.0}, "links": {"x": ["1", 0]}},
    "3": {"type": "Seeded", "values": {"seed": 0}, "links": {"x": ["2", 0]}},
    "4": {"type": "Show", "values": {"path": "v.txt"}, "links": {"value": ["3", 0]}},
    "5": {"type": "Text", "values": {"text": "hello"}},
    "6": {"type": "Show", "values": {"path": ""}, "links": {"value": ["5", 0]}},
}}


@pytest.fixture(autouse=True)
def _fresh():
    UNLUCKY.clear()
    toy_nodes.CALLS.clear()
    yield
    UNLUCKY.clear()


def graph(data=None) -> Graph:
    return from_data(json.loads(json.dumps(data or WORKFLOW)), REGISTRY)


def env(tmp_path) -> Environment:
    return Environment(paths=Paths(tmp_path / "input", tmp_path / "out"))


def table(tmp_path, text: str, file: str = "rows.csv"):
    path = tmp_path / file
    path.write_text(text)
    return path


def jobs_for(tmp_path, text: str, file: str = "rows.csv", g=None, **kwargs):
    g = g or graph()
    path = table(tmp_path, text, file)
    return make_jobs(g, REGISTRY, env(tmp_path), read_table(path, g, REGISTRY), where=path.name, **kwargs)


def problems(tmp_path, text: str, file: str = "rows.csv", **kwargs) -> list[str]:
    with pytest.raises(TableError) as caught:
        jobs_for(tmp_path, text, file, **kwargs)
    return caught.value.lines


def run(tmp_path, text: str, g=None, folder=None, **kwargs):
    g = g or graph()
    jobs = jobs_for(tmp_path, text, g=g, **{k: kwargs.pop(k) for k in ("seeds", "name") if k in kwargs})
    folder = folder or tmp_path / "out"
    stream = io.StringIO()
    summary = run_batch(jobs, env=env(tmp_path), registry=REGISTRY, workflow=to_native(g), folder=folder,
                        where="rows.csv", stream=stream, **kwargs)
    summary.log = stream.getvalue()
    return summary


def manifest(folder) -> list[dict]:
    return [json.loads(line) for line in (folder / MANIFEST).read_text().splitlines()]


# -- tables ------------------------------------------------------------------------------------
def test_csv_columns_by_node_input_and_by_bare_name_are_typed_like_set(tmp_path):
    path = table(tmp_path, "id,1.value,steps,text,3.seed\na,2.5,4,hi there,0x10\n")
    rows = read_table(path, graph(), REGISTRY).rows
    assert [(r.id, r.line) for r in rows] == [("a", 2)]
    assert rows[0].values == {"1.value": 2.5, "2.steps": 4, "5.text": "hi there", "3.seed": 16}
    assert type(rows[0].values["2.steps"]) is int and type(rows[0].values["1.value"]) is float


def test_jsonl_keeps_json_values_types_text_and_sets_an_empty_text(tmp_path):
    path = table(tmp_path, '{"value": 3, "steps": "7", "text": ""}\n\n{"id": 5, "steps": null}\n', "rows.jsonl")
    rows = read_table(path, graph(), REGISTRY).rows
    assert rows[0].values == {"1.value": 3.0, "2.steps": 7, "5.text": ""}
    assert type(rows[0].values["1.value"]) is float
    assert (rows[1].id, rows[1].line, rows[1].values) == ("5", 3, {})


def test_an_empty_csv_cell_keeps_the_workflows_value(tmp_path):
    rows = read_table(table(tmp_path, "steps,text\n,x\n5,\n"), graph(), REGISTRY).rows
    assert [r.values for r in rows] == [{"5.text": "x"}, {"2.steps": 5}]


def test_an_ambiguous_bare_column_lists_the_inputs_that_have_the_name(tmp_path):
    assert problems(tmp_path, "path\nx.txt\n") == [
        "rows.csv:1: column 'path': 2 inputs are called 'path' (4.path, 6.path); name one as NODE_ID.INPUT"]


def test_unknown_columns_are_reported_once_with_a_suggestion(tmp_path):
    assert problems(tmp_path, "stesp,9.value,2.x\n1,2,3\n4,5,6\n") == [
        "rows.csv:1: column 'stesp': no node has a value input 'stesp' — did you mean steps?",
        "rows.csv:1: column '9.value': there is no node 9 (nodes: 1, 2, 3, 4, 5, 6)",
        "rows.csv:1: column '2.x': input 'x' of node 2 is linked to node 1, so a value there is not used; "
        "set it on the node that feeds it",
    ]


def test_every_bad_row_is_reported_at_once_with_file_line_and_input(tmp_path):
    text = "steps,value\n0,1\nlots,1\n3,1\n2000,1\n3,\"1e9\"\n7,1,extra\n"
    assert problems(tmp_path, text) == [
        "rows.csv:2: 2.steps: 0 is below the minimum 1 — set it to 1 or more",
        "rows.csv:3: 2.steps: 'lots' is not a valid INT",
        "rows.csv:5: 2.steps: 2000 is above the maximum 1000 — set it to 1000 or less",
        "rows.csv:6: 1.value: 1000000000 is above the maximum 1000000 — set it to 1000000 or less",
        "rows.csv:7: 3 cells but the header names 2 columns",
    ]


def test_a_problem_every_row_shares_is_reported_once_as_the_workflows(tmp_path):
    broken = json.loads(json.dumps(WORKFLOW))
    broken["nodes"]["2"]["values"]["delay"] = 99.0
    lines = problems(tmp_path, "steps\n1\n2\n0\n", g=graph(broken), workflow="wf.json")
    assert lines == ["wf.json: 2.delay: 99 is above the maximum 10 — set it to 10 or less",
                     "rows.csv:4: 2.steps: 0 is below the minimum 1 — set it to 1 or more"]


def test_seeds_cross_every_row_and_name_the_outputs(tmp_path):
    jobs = jobs_for(tmp_path, "text\na\nb\n", seeds=parse_seeds("3-4"))
    assert [(j.row, j.seed, j.name) for j in jobs] == [(1, 3, "00001_3"), (1, 4, "00001_4"),
                                                       (2, 3, "00002_3"), (2, 4, "00002_4")]
    assert jobs[1].values == {"5.text": "a", "3.seed": 4}


def test_seed_ranges_parse_and_bad_ones_say_why():
    assert parse_seeds("0-3, 7") == [0, 1, 2, 3, 7]
    for text, why in (("3-1", "counts down; write 1-3"), ("x", "'x' is not a seed"), (",", "no seeds")):
        with pytest.raises(ValueError, match=why):
            parse_seeds(text)


def test_seeds_refused_when_the_table_sets_the_seed_too(tmp_path):
    assert problems(tmp_path, "seed\n1\n", seeds=[1]) == [
        "--seeds and the table's column 3.seed both set the seed; drop one"]


# -- names -------------------------------------------------------------------------------------
def test_default_names_are_row_and_seed_or_the_id_column(tmp_path):
    assert [j.name for j in jobs_for(tmp_path, "seed\n7\n\n9\n")] == ["00001_7", "00002_9"]
    assert [j.name for j in jobs_for(tmp_path, "id,seed\ncat,1\ndog,2\n")] == ["cat", "dog"]
    assert [j.name for j in jobs_for(tmp_path, "steps\n2\n", name="r{row}-{key}")][0].startswith("r1-")


def test_names_that_collide_or_escape_the_folder_are_refused(tmp_path):
    assert problems(tmp_path, "id,steps\ncat,1\ncat,2\n../up,3\n,4\n") == [
        "rows.csv:3: output name 'cat' is also row 1's (rows.csv:2); give rows distinct ids, or put {row} or "
        "{seed} in --name",
        "rows.csv:4: output name '../up' has a \"..\" part; use plain names (a/b makes a sub-folder)",
        "rows.csv:5: the row has no id, and --name '{id}' needs one: give every row an id",
    ]
    assert problems(tmp_path, "steps\n1\n", name="{row}_{prompt}") == [
        "--name '{row}_{prompt}': unknown field {prompt}; use {row}, {seed}, {id} or {key}"]


# -- keys and ordering -------------------------------------------------------------------------
def test_a_key_hashes_what_runs_not_the_layout(tmp_path):
    g = graph()
    moved = graph()
    moved.set_ui("3", pos=[500, 20], title="renamed")
    assert job_key(apply_values(g, {"2.steps": 5})) == job_key(apply_values(moved, {"2.steps": 5}))
    assert job_key(apply_values(g, {"2.steps": 5})) == job_key(apply_values(g, {"2.steps": 5.0}))
    assert job_key(apply_values(g, {"2.steps": 5})) != job_key(apply_values(g, {"2.steps": 6}))
    assert job_key(g) != job_key(apply_values(g, {"1.value": 4.5}))


def test_rows_that_share_upstream_values_run_next_to_each_other(tmp_path):
    jobs = jobs_for(tmp_path, "value,seed\n1,1\n2,2\n1,3\n2,4\n3,5\n1,6\n")
    assert [j.seed for j in jobs] == [1, 3, 6, 2, 4, 5]


# -- running, resume ---------------------------------------------------------------------------
def test_outputs_get_deterministic_names_and_the_same_bytes_every_time(tmp_path):
    first = run(tmp_path, "id,seed\nb,2\na,1\n", folder=tmp_path / "one")
    second = run(tmp_path, "id,seed\nb,2\na,1\n", folder=tmp_path / "two")
    assert first.ok == second.ok == 2
    for name, text in (("a.txt", "8.0"), ("b.txt", "9.0")):  # 4 + 3 steps + seed
        assert (tmp_path / "one" / name).read_text() == (tmp_path / "two" / name).read_text() == text
    entries = manifest(tmp_path / "one")
    assert [(e["row"], e["status"], e["outputs"], e["overrides"]) for e in entries] == [
        (1, "ok", ["b.txt"], {"3.seed": 2}), (2, "ok", ["a.txt"], {"3.seed": 1})]
    assert all(e["worker"] == "local" and e["error"] is None and e["seconds"] >= 0 for e in entries)
    assert sorted(p.name for p in (tmp_path / "one").iterdir()) == [".batch.lock", "a.txt", "b.txt", MANIFEST]


def test_rerunning_the_same_command_skips_finished_rows(tmp_path):
    run(tmp_path, "seed\n1\n2\n3\n")
    toy_nodes.CALLS.clear()
    again = run(tmp_path, "seed\n1\n2\n3\n")
    assert (again.skipped, again.ok, again.failed) == (3, 0, 0)
    assert toy_nodes.CALLS == [] and len(manifest(tmp_path / "out")) == 3
    assert "3 of 3 rows already done" in again.log


def test_a_failing_row_is_recorded_the_batch_goes_on_and_the_next_run_retries_it(tmp_path):
    UNLUCKY.add(2)
    first = run(tmp_path, "seed\n1\n2\n3\n")
    assert (first.ok, first.failed) == (2, 1)
    failed = [e for e in manifest(tmp_path / "out") if e["status"] == "error"]
    assert [(e["row"], e["outputs"], e["error"]) for e in failed] == [(2, [], "node 3 (Seeded): seed 2 is unlucky")]
    assert not (tmp_path / "out" / "00002_2.txt").exists()
    assert "row 2 seed 2 failed: node 3 (Seeded): seed 2 is unlucky" in first.log
    UNLUCKY.clear()
    second = run(tmp_path, "seed\n1\n2\n3\n")
    assert (second.skipped, second.ok, second.failed) == (2, 1, 0)
    assert (tmp_path / "out" / "00002_2.txt").read_text() == "9.0"


def test_editing_the_table_keeps_finished_rows_and_runs_changed_and_new_ones(tmp_path):
    run(tmp_path, "id,seed\na,1\nb,2\n")
    edited = run(tmp_path, "id,seed\nnew,5\na,1\nb,3\n")  # a moved down, b changed, new row on top
    assert (edited.skipped, edited.ok) == (1, 2)
    assert (tmp_path / "out" / "b.txt").read_text() == "10.0" and (tmp_path / "out" / "new.txt").exists()
    third = run(tmp_path, "id,seed\nnew,5\na,1\nb,3\n")
    assert (third.skipped, third.ok) == (3, 0)


def test_a_row_that_moved_keeps_its_files_and_a_new_row_may_not_take_its_name(tmp_path):
    run(tmp_path, "seed\n1\n2\n", name="{row:05d}")
    with pytest.raises(TableError) as caught:  # the seed-1 row moved down, and 00001 is still its file
        run(tmp_path, "seed\n9\n1\n2\n", name="{row:05d}")
    assert caught.value.lines == [
        "rows.csv:2: output name '00001' is held by row 1 of an earlier run with other values, which is still "
        "in the table; give rows an id column, put {key} in --name, or use another --output-dir"]
    appended = run(tmp_path, "seed\n1\n2\n3\n", name="{row:05d}")
    assert (appended.skipped, appended.ok) == (2, 1)


def test_changing_the_workflow_runs_every_row_again(tmp_path):
    run(tmp_path, "seed\n1\n2\n")
    changed = json.loads(json.dumps(WORKFLOW))
    changed["nodes"]["1"]["values"]["value"] = 10.0
    again = run(tmp_path, "seed\n1\n2\n", g=graph(changed))
    assert (again.skipped, again.ok) == (0, 2)
    assert (tmp_path / "out" / "00001_1.txt").read_text() == "14.0"


def test_a_deleted_output_runs_its_row_again(tmp_path):
    run(tmp_path, "seed\n1\n2\n")
    (tmp_path / "out" / "00002_2.txt").unlink()
    again = run(tmp_path, "seed\n1\n2\n")
    assert (again.skipped, again.ok) == (1, 1) and (tmp_path / "out" / "00002_2.txt").exists()


def test_a_torn_last_manifest_line_is_skipped_and_the_next_line_starts_fresh(tmp_path):
    run(tmp_path, "seed\n1\n2\n")
    with open(tmp_path / "out" / MANIFEST, "a") as f:
        f.write('{"row": 3, "key": "ab')  # the driver died in the middle of a write
    again = run(tmp_path, "seed\n1\n2\n3\n")
    assert (again.skipped, again.ok) == (2, 1)
    lines = (tmp_path / "out" / MANIFEST).read_text().splitlines()
    assert lines[2] == '{"row": 3, "key": "ab' and json.loads(lines[3])["row"] == 3
    assert len(read_manifest(tmp_path / "out")) == 3


def test_identical_rows_each_write_their_file(tmp_path):
    summary = run(tmp_path, "id,seed\nx,1\ny,1\n")
    assert summary.ok == 2
    assert (tmp_path / "out" / "x.txt").read_text() == (tmp_path / "out" / "y.txt").read_text() == "8.0"


def test_a_job_with_several_files_numbers_them(tmp_path):
    two = json.loads(json.dumps(WORKFLOW))
    two["nodes"]["6"]["values"]["path"] = "t.txt"
    run(tmp_path, "id,text\nr,hi\n", g=graph(two))
    assert (tmp_path / "out" / "r_1.txt").read_text() == "7.0"
    assert (tmp_path / "out" / "r_2.txt").read_text() == "hi"


def test_the_worker_returns_bytes_and_keeps_no_files(tmp_path):
    worker = Worker(env(tmp_path), WORKFLOW, registry=REGISTRY)
    result = worker.run({"row": 1, "key": "k", "values": {"3.seed": 2}})
    assert (result["status"], result["files"], result["error"]) == ("ok", [[".txt", b"9.0"]], None)
    assert list(worker.folder.iterdir()) == [] and not (tmp_path / "out").exists()
    worker.close()
    assert not worker.folder.exists()


def test_a_second_driver_on_the_same_folder_is_refused(tmp_path):
    with OutputLock(tmp_path / "out"), pytest.raises(LockedError, match=f"pid {os.getpid()}"):
        run(tmp_path, "seed\n1\n")
    assert run(tmp_path, "seed\n1\n").ok == 1  # released


def test_ctrl_c_stops_cleanly_and_the_next_run_resumes(tmp_path):
    def interrupt_after_first(job, result, outputs):
        if len(manifest(tmp_path / "out")) == 1:
            os.kill(os.getpid(), signal.SIGINT)

    first = run(tmp_path, "seed\n1\n2\n3\n4\n", on_row=interrupt_after_first)
    assert first.interrupted and first.ok == 1
    assert "run the same command again to resume" in first.log
    assert len(manifest(tmp_path / "out")) == 1
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    second = run(tmp_path, "seed\n1\n2\n3\n4\n")
    assert (second.skipped, second.ok, second.interrupted) == (1, 3, False)
    assert sorted(e["row"] for e in manifest(tmp_path / "out")) == [1, 2, 3, 4]


def test_workers_need_ray_and_counts_must_be_positive():
    from batch.command import _backend

    class Args:
        ray, workers, gpus_per_worker, cpus_per_worker = None, 2, None, None

    with pytest.raises(ValueError, match="add --ray local"):
        _backend(Args)
    Args.ray, Args.cpus_per_worker = "local", 0
    with pytest.raises(ValueError, match="--cpus-per-worker 0: must be 1 or more"):
        _backend(Args)
    Args.cpus_per_worker = 2
    assert _backend(Args) == Backend("local", 2, None, 2)


def test_without_ray_installed_ray_runs_say_how_to_install_it(tmp_path, monkeypatch):
    from batch.ray_backend import RayUnavailable

    monkeypatch.setitem(sys.modules, "ray", None)  # what `import ray` meets where Ray is not installed
    with pytest.raises(RayUnavailable, match=r"pip install -e '\.\[ray\]'"):
        run(tmp_path, "seed\n1\n", backend=Backend(ray="local"))
    assert manifest(tmp_path / "out") == []


def test_ray_rows_go_to_the_worker_holding_their_model_and_a_retry_goes_elsewhere():
    from batch.plan import Job
    from batch.ray_backend import JobQueue, Slot

    queue = JobQueue([Job(row, row, None, None, {}, model=m) for row, m in enumerate("AABBA")])
    w1, w2 = Slot(1, None, model="A"), Slot(2, None)
    slots = [w1, w2]
    assert queue.take(w1, slots).row == 0
    assert queue.take(w2, slots).row == 2  # holds nothing: the model no other worker holds
    w2.model = "B"
    queue.retry.append(Job(9, 9, None, None, {}, model="A", attempts=1, avoid={"worker 1"}))
    assert queue.take(w1, slots).row == 1  # the retry died on worker 1: not there
    assert [queue.take(w2, slots).row for _ in range(3)] == [9, 3, 4]
    assert queue.take(w1, slots) is None and len(queue) == 0
