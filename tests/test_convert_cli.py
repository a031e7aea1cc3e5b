"""`main.py convert` and the other commands on ComfyUI's files, as a user runs them."""

import json

from tests.test_cli import cli

UI = {"nodes": [
    {"id": 1, "type": "Number", "pos": [0, 0], "size": [200, 80], "mode": 0, "outputs": [
        {"name": "value", "type": "FLOAT", "links": [1]}], "widgets_values": [4]},
    {"id": 2, "type": "Show", "pos": [300, 0], "size": [200, 80], "mode": 0,
     "inputs": [{"name": "value", "type": "*", "link": 1}], "widgets_values": [""]},
    {"id": 3, "type": "Note", "pos": [0, 200], "size": [200, 80], "widgets_values": ["read me"]},
    {"id": 4, "type": "Add", "pos": [0, 400], "size": [200, 80], "mode": 0, "widgets_values": ["x", 1]},
], "links": [[1, 1, 0, 2, 0, "FLOAT"]], "groups": [{"title": "all", "bounding": [-10, -10, 600, 300]}],
    "version": 0.4}


def test_convert_ui_to_each_format_on_stdout(tmp_path):
    path = tmp_path / "wf.json"
    path.write_text(json.dumps(UI))
    api = cli("convert", path, "--to", "comfy-api", tmp_path=tmp_path)
    assert api.returncode == 0, api.stderr
    assert json.loads(api.stdout) == {
        "1": {"inputs": {"value": 4.0}, "class_type": "Number", "_meta": {"title": "Number"}},
        "2": {"inputs": {"value": ["1", 0], "path": ""}, "class_type": "Show", "_meta": {"title": "Show"}},
        "4": {"inputs": {"a": "x", "b": 1.0}, "class_type": "Add", "_meta": {"title": "Add"}}}
    ours = json.loads(cli("convert", path, tmp_path=tmp_path).stdout)
    assert ours["format"] == "sdgraph.workflow" and ours["ui"]["notes"][0]["text"] == "read me"
    back = json.loads(cli("convert", path, "--to", "comfy-ui", tmp_path=tmp_path).stdout)
    assert [n["type"] for n in back["nodes"]] == ["Number", "Show", "Add", "Note"] and back["groups"] == UI["groups"]


def test_convert_never_silently_changes_a_files_format(tmp_path):
    path = tmp_path / "wf.json"
    path.write_text(json.dumps(UI))
    refused = cli("convert", path, "-o", path, tmp_path=tmp_path)
    assert refused.returncode == 2
    assert "is a ComfyUI workflow (UI format)" in refused.stderr and "--to comfy-ui" in refused.stderr
    assert json.loads(path.read_text()) == UI
    kept = cli("convert", path, "--to", "comfy-ui", "-o", path, tmp_path=tmp_path)
    assert kept.returncode == 0, kept.stderr
    assert json.loads(path.read_text())["nodes"][0]["widgets_values"] == [4.0]
    ours = tmp_path / "ours.json"
    assert cli("convert", path, "-o", ours, tmp_path=tmp_path).returncode == 0
    assert cli("convert", path, "-o", ours, tmp_path=tmp_path).returncode == 0  # sdgraph over sdgraph is fine


def test_validate_and_run_take_ui_files_and_warn_about_nodes_no_output_needs(tmp_path):
    path = tmp_path / "wf.json"
    path.write_text(json.dumps(UI))
    checked = cli("validate", path, tmp_path=tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert 'warning: node 4 (Add): input "a" = \'x\' is not a FLOAT' in checked.stdout
    assert "ok (3 nodes, 1 warning(s) in nodes no output needs)" in checked.stdout
    ran = cli("run", path, "--output-dir", tmp_path / "out", tmp_path=tmp_path)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert "warning: node 4 (Add)" in ran.stderr and "Add (node 4)" not in ran.stderr
