"""Our node declarations against ComfyUI's public node definitions.

Each JSON file in tests/comfy_node_defs/ holds a table built by hand from ComfyUI's own node
definitions (its INPUT_TYPES / RETURN_TYPES, as `/object_info` shows them):

    {"source": "where the table was read from",
     "nodes": {"GrowMask": {
         "inputs": [["mask", "MASK"],
                    ["expand", "INT", {"default": 0, "min": -16384, "max": 16384}],
                    ["tapered_corners", "BOOLEAN", {"default": true}]],
         "outputs": ["MASK"]}}}

An input is [name, type] or [name, type, options]; inputs are listed in ComfyUI's order (required,
then optional). Options checked when present: "default", "min", "max", "choices" (a COMBO's list),
"files" (a COMBO of the files of a folder kind), "optional". Outputs are the types in order;
"output_names" (optional) the names. A workflow written for ComfyUI relies on all of these.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nodegraph import REGISTRY

REGISTRY.discover("nodes")
DEFS = Path(__file__).resolve().parent / "comfy_node_defs"


def _tables() -> list[tuple[str, str, dict]]:
    rows = []
    for path in sorted(DEFS.glob("*.json")):
        table = json.loads(path.read_text(encoding="utf-8"))
        rows += [(path.name, name, spec) for name, spec in table["nodes"].items()]
    return rows


TABLE = _tables()


def _differences(name: str, spec: dict) -> list[str]:
    cls = REGISTRY.get(name)
    if cls is None:
        return [f"{name} is not registered"]
    problems = []
    want_names = [entry[0] for entry in spec["inputs"]]
    have_names = [i.name for i in cls.inputs]
    if want_names != have_names:
        problems.append(f"inputs {have_names}, ComfyUI has {want_names}")
    for entry in spec["inputs"]:
        input_name, kind = entry[0], entry[1]
        options = entry[2] if len(entry) > 2 else {}
        ours = cls.input(input_name)
        if ours is None:
            continue
        where = f"{name}.{input_name}"
        if ours.type.name != kind:
            problems.append(f"{where} is {ours.type.name}, ComfyUI has {kind}")
        if "default" in options and (not ours.has_default or ours.default != options["default"]
                                     or type(ours.default) is not type(options["default"])):
            problems.append(f"{where} default {ours.default if ours.has_default else None!r}, "
                            f"ComfyUI has {options['default']!r}")
        for bound in ("min", "max"):
            if bound in options and getattr(ours, bound) != options[bound]:
                problems.append(f"{where} {bound} {getattr(ours, bound)!r}, ComfyUI has {options[bound]!r}")
        if "choices" in options and ours.choice_list() != options["choices"]:
            problems.append(f"{where} choices {ours.choice_list()}, ComfyUI has {options['choices']}")
        if "files" in options and ours.files != options["files"]:
            problems.append(f"{where} lists files of {ours.files!r}, ComfyUI lists {options['files']!r}")
        if bool(options.get("optional")) != ours.optional:
            problems.append(f"{where} optional={ours.optional}, ComfyUI has optional={bool(options.get('optional'))}")
    have_outputs = [o.type.name for o in cls.outputs]
    if have_outputs != spec["outputs"]:
        problems.append(f"outputs {have_outputs}, ComfyUI has {spec['outputs']}")
    if "output_names" in spec and [o.name for o in cls.outputs] != spec["output_names"]:
        problems.append(f"output names {[o.name for o in cls.outputs]}, ComfyUI has {spec['output_names']}")
    return problems


def test_the_tables_are_there_and_name_each_node_once():
    names = [name for _, name, _ in TABLE]
    assert len(names) >= 40
    assert len(names) == len(set(names)), sorted({n for n in names if names.count(n) > 1})


@pytest.mark.parametrize(("table", "name", "spec"), TABLE, ids=[f"{t}:{n}" for t, n, _ in TABLE])
def test_node_declaration_matches_comfyui(table, name, spec):
    assert _differences(name, spec) == []


def test_a_changed_default_is_reported():
    spec = {"inputs": [["width", "INT", {"default": 1024, "min": 16}], ["height", "INT"],
                       ["batch_size", "INT"]], "outputs": ["LATENT"]}
    assert _differences("EmptyLatentImage", spec) == ["EmptyLatentImage.width default 512, ComfyUI has 1024"]
    spec["inputs"].reverse()
    assert _differences("EmptyLatentImage", spec)[0].startswith("inputs ['width', 'height', 'batch_size']")
