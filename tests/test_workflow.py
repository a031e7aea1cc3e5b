import json
import struct
import zlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nodegraph import Graph, WorkflowError
from nodegraph.workflow import (
    dumps_native,
    from_comfy_api,
    from_data,
    from_native,
    load_workflow,
    save_workflow,
    to_comfy_api,
    to_native,
)
from tests.toy_nodes import make_registry

REGISTRY = make_registry()

NATIVE = {
    "format": "sdgraph.workflow",
    "version": 1,
    "nodes": {
        "1": {"type": "Number", "values": {"value": 2.5}, "links": {}, "ui": {"pos": [10, 20], "title": "two and a half"}},
        "2": {"type": "Steps", "values": {"x": 0.0, "steps": 4, "delay": 0.0}, "links": {"x": ["1", 0]},
              "ui": {"pos": [300, 20], "size": [200, 120]}},
        "3": {"type": "Show", "values": {"path": ""}, "links": {"value": ["2", 0]}},
    },
    "ui": {"view": {"zoom": 1.25, "offset": [-40, 15]}, "groups": []},
}


def test_native_round_trip_is_exact(tmp_path):
    graph = from_native(json.loads(json.dumps(NATIVE)), REGISTRY)
    assert to_native(graph) == NATIVE
    path = save_workflow(graph, tmp_path / "wf.json")
    text = path.read_text()
    again = load_workflow(path, REGISTRY)
    assert dumps_native(again) == text
    assert not list(tmp_path.glob(".*tmp"))  # the atomic write left nothing behind


def test_save_replaces_the_old_file_atomically(tmp_path, monkeypatch):
    path = tmp_path / "wf.json"
    path.write_text("old")
    import nodegraph.fileio as fileio

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(fileio.os, "replace", broken_replace)
    with pytest.raises(OSError):
        save_workflow(from_native(NATIVE, REGISTRY), path)
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["wf.json"]


def test_comfy_api_round_trip():
    api = {
        "1": {"inputs": {"value": 2.5}, "class_type": "Number", "_meta": {"title": "two and a half"}},
        "2": {"inputs": {"x": ["1", 0], "steps": 4, "delay": 0.0}, "class_type": "Steps", "_meta": {"title": "Steps"}},
        "3": {"inputs": {"value": ["2", 0], "path": ""}, "class_type": "Show", "_meta": {"title": "Show"}},
    }
    graph = from_comfy_api(api, REGISTRY)
    assert graph.nodes["2"].links == {"x": ("1", 0)}
    assert graph.nodes["2"].values == {"steps": 4, "delay": 0.0}
    assert graph.nodes["1"].ui["title"] == "two and a half"
    assert "pos" in graph.nodes["1"].ui  # an API file has no positions: it is laid out
    assert to_comfy_api(graph) == api
    # and through the native format and back
    assert to_comfy_api(from_native(to_native(graph), REGISTRY)) == api


def test_comfy_api_wrapped_in_a_prompt_body_is_accepted():
    graph = from_data({"prompt": {"5": {"class_type": "Number", "inputs": {"value": 1}}}, "client_id": "x"}, REGISTRY)
    assert graph.nodes["5"].type == "Number"


def test_unknown_types_and_inputs_are_listed_in_one_error():
    data = json.loads(json.dumps(NATIVE))
    data["nodes"]["1"]["type"] = "Numbr"
    data["nodes"]["2"]["values"]["stepz"] = 3
    data["nodes"]["3"]["links"]["valu"] = ["2", 0]
    with pytest.raises(WorkflowError) as info:
        from_native(data, REGISTRY)
    assert info.value.problems == [  # the same lines validation gives: one home per rule
        "node 1 (Numbr): unknown node type 'Numbr' — did you mean Number?",
        'node 2 (Steps): has no input "stepz" — did you mean steps?',
        'node 3 (Show): has no input "valu" — did you mean value?',
    ]


def test_bad_shapes_are_all_reported():
    data = {"format": "sdgraph.workflow", "version": 1, "nodes": {
        "1": [], "2": {"type": 5}, "3": {"type": "Add", "values": [], "links": {"a": ["9", 0], "b": "x"}}}}
    with pytest.raises(WorkflowError) as info:
        from_native(data, REGISTRY)
    assert info.value.problems == [
        "node 1: expected an object, found a list",
        'node 2: "type" must be a node type name',
        'node 3 (Add): "values" must be an object of input name → value',
        'node 3 (Add): link for input "b" must be [node id, output slot], found "x"',
        'node 3 (Add): input "a" is linked to missing node 9 — reconnect the input or remove the link',
    ]


def test_newer_format_version_asks_for_an_update():
    with pytest.raises(WorkflowError, match="update sdgraph"):
        from_native({"format": "sdgraph.workflow", "version": 7, "nodes": {}})


def test_comfy_ui_format_is_read():
    graph = from_data({"nodes": [{"id": 1, "type": "Number", "pos": [5, 6], "widgets_values": [3.5]}],
                       "links": [], "version": 0.4}, REGISTRY)
    assert graph.nodes["1"].values == {"value": 3.5}
    assert graph.nodes["1"].ui["pos"] == [5, 6]


def test_not_json_and_missing_file(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{ nope")
    with pytest.raises(WorkflowError, match=r"bad.json: not valid JSON \(line 1 column 3"):
        load_workflow(bad)
    with pytest.raises(WorkflowError, match="file not found"):
        load_workflow(tmp_path / "missing.json")
    binary = tmp_path / "x.bin"
    binary.write_bytes(b"\xff\xfe\x00\x01")
    with pytest.raises(WorkflowError, match="not a text file"):
        load_workflow(binary)


def _png_with_text(chunks: dict[str, str]) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00\x00\x00\x00")
    texts = b"".join(chunk(b"tEXt", k.encode() + b"\0" + v.encode("latin-1")) for k, v in chunks.items())
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + texts + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def test_workflow_is_read_back_from_a_png(tmp_path):
    png = tmp_path / "image.png"
    png.write_bytes(_png_with_text({"sdgraph": json.dumps(NATIVE), "prompt": "{}"}))
    assert to_native(load_workflow(png, REGISTRY)) == NATIVE
    api_only = tmp_path / "comfy.png"
    api_only.write_bytes(_png_with_text({"prompt": json.dumps({"1": {"class_type": "Number", "inputs": {}}})}))
    assert load_workflow(api_only, REGISTRY).nodes["1"].type == "Number"
    plain = tmp_path / "plain.png"
    plain.write_bytes(_png_with_text({}))
    with pytest.raises(WorkflowError, match="holds no workflow"):
        load_workflow(plain)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4),
    max_leaves=20,
)
node_like = st.fixed_dictionaries({}, optional={
    "type": st.sampled_from(["Number", "Add", "Show", "Nope"]) | json_values,
    "class_type": st.sampled_from(["Number", "Add", "Show"]) | json_values,
    "values": st.dictionaries(st.sampled_from(["value", "a", "b", "x"]), json_values, max_size=3) | json_values,
    "inputs": st.dictionaries(st.sampled_from(["value", "a", "b"]),
                              json_values | st.tuples(st.sampled_from(["1", "2", "x"]), st.integers(-1, 3)).map(list),
                              max_size=3) | json_values,
    "links": st.dictionaries(st.sampled_from(["value", "a", "b"]),
                             st.tuples(st.sampled_from(["1", "2", "x"]), st.integers(-1, 3)).map(list) | json_values,
                             max_size=3) | json_values,
    "ui": json_values,
})
documents = (
    json_values
    | st.fixed_dictionaries({"format": st.just("sdgraph.workflow")}, optional={
        "version": st.integers(-1, 3) | json_values,
        "nodes": st.dictionaries(st.sampled_from(["1", "2", "3"]), node_like, max_size=3) | json_values,
        "ui": json_values})
    | st.dictionaries(st.sampled_from(["1", "2", "3", "prompt"]), node_like, max_size=3)
)


@settings(max_examples=2500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(documents)
def test_only_workflow_errors_escape_the_loader(doc):
    try:
        graph = from_data(doc, REGISTRY)
    except WorkflowError as e:
        assert e.problems and all(isinstance(p, str) and p for p in e.problems)
    else:
        assert isinstance(graph, Graph)
        # a graph that loaded can always be written out again and read back the same way
        assert to_native(from_native(json.loads(json.dumps(to_native(graph))), REGISTRY)) == to_native(graph)
