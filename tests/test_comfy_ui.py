"""Reading ComfyUI's UI format as ComfyUI's front end reads it, and writing it back: positional
values with the seed's control value and LoadImage's upload value, links by link id, Reroute,
PrimitiveNode, Note, muted and bypassed nodes, subgraphs, the load-time fixes, unknown nodes."""

import json

import pytest

from nodegraph import REGISTRY, WorkflowError, validate
from nodegraph.comfy_ui_writer import to_comfy_ui
from nodegraph.workflow import from_comfy_api, from_comfy_ui, from_data, to_comfy_api

REGISTRY.discover("nodes")

def read_ui(doc):
    return from_comfy_ui(doc, REGISTRY, strict=False)  # unknown types are kept for validation to report


KSAMPLER_VALUES = [42, "randomize", 20, 8, "euler", "normal", 1]


def node(node_id, type_name, *, inputs=(), outputs=(), values=None, mode=0, **extra):
    out = {"id": node_id, "type": type_name, "pos": [100 * node_id, 50], "size": [300, 200], "flags": {},
           "order": node_id, "mode": mode, "properties": {"Node name for S&R": type_name}, **extra}
    out["inputs"] = [dict(name=n, type=t, link=link, **({"widget": {"name": n}} if w else {}))
                     for n, t, link, w in inputs]
    out["outputs"] = [{"name": n, "type": t, "links": links} for n, t, links in outputs]
    if values is not None:
        out["widgets_values"] = values
    return out


def txt2img(**changes):
    """ComfyUI's default workflow, as its Save button writes it (links as arrays: schema 0.4)."""
    nodes = [
        node(4, "CheckpointLoaderSimple", outputs=[("MODEL", "MODEL", [1]), ("CLIP", "CLIP", [3, 5]),
                                                   ("VAE", "VAE", [8])], values=["v1-5.safetensors"]),
        node(6, "CLIPTextEncode", inputs=[("clip", "CLIP", 3, False)], outputs=[("CONDITIONING", "CONDITIONING", [4])],
             values=["a cat"]),
        node(7, "CLIPTextEncode", inputs=[("clip", "CLIP", 5, False)], outputs=[("CONDITIONING", "CONDITIONING", [6])],
             values=["blurry"]),
        node(5, "EmptyLatentImage", outputs=[("LATENT", "LATENT", [2])], values=[512, 512, 1]),
        node(3, "KSampler", inputs=[("model", "MODEL", 1, False), ("positive", "CONDITIONING", 4, False),
                                    ("negative", "CONDITIONING", 6, False), ("latent_image", "LATENT", 2, False)],
             outputs=[("LATENT", "LATENT", [7])], values=list(KSAMPLER_VALUES)),
        node(8, "VAEDecode", inputs=[("samples", "LATENT", 7, False), ("vae", "VAE", 8, False)],
             outputs=[("IMAGE", "IMAGE", [9])]),
        node(9, "SaveImage", inputs=[("images", "IMAGE", 9, False)], values=["ComfyUI"]),
    ]
    links = [[1, 4, 0, 3, 0, "MODEL"], [2, 5, 0, 3, 3, "LATENT"], [3, 4, 1, 6, 0, "CLIP"], [4, 6, 0, 3, 1, "CONDITIONING"],
             [5, 4, 1, 7, 0, "CLIP"], [6, 7, 0, 3, 2, "CONDITIONING"], [7, 3, 0, 8, 0, "LATENT"], [8, 4, 2, 8, 1, "VAE"],
             [9, 8, 0, 9, 0, "IMAGE"]]
    doc = {"last_node_id": 9, "last_link_id": 9, "nodes": nodes, "links": links, "groups": [], "config": {},
           "extra": {}, "version": 0.4}
    doc.update(changes)
    return doc


def by_id(doc, node_id):
    return next(n for n in doc["nodes"] if n["id"] == node_id)


def test_positional_values_map_to_inputs_in_declaration_order_with_the_seed_control():
    graph = read_ui(txt2img())
    assert graph.nodes["3"].values == {"seed": 42, "steps": 20, "cfg": 8.0, "sampler_name": "euler",
                                       "scheduler": "normal", "denoise": 1.0}
    assert graph.nodes["3"].ui["after_run"] == {"seed": "randomize"}
    assert graph.nodes["3"].links == {"model": ("4", 0), "positive": ("6", 0), "negative": ("7", 0),
                                      "latent_image": ("5", 0)}
    assert graph.nodes["3"].ui["pos"] == [300, 50]
    assert validate(graph, REGISTRY) == [p for p in validate(graph, REGISTRY) if p.input == "ckpt_name"]


@pytest.mark.parametrize(("stored", "after_run"), [
    ([42, "fixed", 20, 8, "euler", "normal", 1], None),
    ([42, True, 20, 8, "euler", "normal", 1], {"seed": "randomize"}),  # 2023: "Random seed after every gen"
    ([42, False, 20, 8, "euler", "normal", 1], None),
    ([42, 20, 8, "euler", "normal", 1], None),  # the oldest files store no control value
])
def test_every_era_of_the_control_value_reads_the_same_values(stored, after_run):
    doc = txt2img()
    by_id(doc, 3)["widgets_values"] = stored
    graph = read_ui(doc)
    assert graph.nodes["3"].values["steps"] == 20 and graph.nodes["3"].values["denoise"] == 1.0
    assert graph.nodes["3"].ui.get("after_run") == after_run


def test_missing_trailing_values_get_defaults_and_extra_ones_are_ignored_with_warnings():
    doc = txt2img()
    by_id(doc, 3)["widgets_values"] = [42, "fixed", 20]
    by_id(doc, 5)["widgets_values"] = [512, 768, 1, "something newer"]
    graph = read_ui(doc)
    assert graph.nodes["3"].values["scheduler"] == "normal" and graph.nodes["3"].values["cfg"] == 8.0
    assert graph.nodes["5"].values == {"width": 512, "height": 768, "batch_size": 1}
    assert any("node 3 (KSampler): no value for cfg, sampler_name" in w for w in graph.warnings)
    assert any("node 5 (EmptyLatentImage): ignored 1 value" in w for w in graph.warnings)


def test_load_time_fixes_sampler_prefix_renamed_types_and_object_positions():
    doc = txt2img()
    by_id(doc, 3)["widgets_values"] = [42, True, 20, 8, "sample_dpmpp_2m", "normal", 1]
    by_id(doc, 3)["pos"] = {"0": 863.5, "1": 186}
    by_id(doc, 3)["size"] = {"0": 315, "1": 262}
    graph = read_ui(doc)
    assert graph.nodes["3"].values["sampler_name"] == "dpmpp_2m"
    assert graph.nodes["3"].ui["pos"] == [863.5, 186] and graph.nodes["3"].ui["size"] == [315, 262]
    assert "node 3 (KSampler): input \"sampler_name\": 'sample_dpmpp_2m' is now called 'dpmpp_2m'" in graph.warnings
    renamed = read_ui({"nodes": [node(1, "T2IAdapterLoader", values=["t2i.safetensors"])], "links": []})
    assert renamed.nodes["1"].type == "ControlNetLoader"


def test_load_image_skips_its_upload_value():
    doc = txt2img()
    doc["nodes"].append(node(10, "LoadImage", outputs=[("IMAGE", "IMAGE", []), ("MASK", "MASK", [])],
                             values=["cat.png", "image"]))
    graph = read_ui(doc)
    assert graph.nodes["10"].values == {"image": "cat.png"}
    assert not graph.warnings
    assert to_comfy_ui(graph)["nodes"][-1]["widgets_values"] == ["cat.png", "image"]


def test_links_are_found_by_link_id_not_by_slot_number():
    # Newer front ends list every widget as an input slot and drop the unconnected ones on save,
    # which renumbers the rest: the slot number in the link is not the position in "inputs".
    doc = txt2img()
    ks = by_id(doc, 3)
    ks["inputs"] = list(reversed(ks["inputs"]))
    doc["links"] = [[lid, o, os, t, 99 if t == 3 else ts, kind] for lid, o, os, t, ts, kind in doc["links"]]
    assert read_ui(doc).nodes["3"].links["latent_image"] == ("5", 0)


def test_schema_1_link_objects_read_like_arrays():
    doc = txt2img(version=1)
    doc["links"] = [dict(zip(("id", "origin_id", "origin_slot", "target_id", "target_slot", "type"), link, strict=True))
                    for link in doc["links"]]
    assert to_comfy_api(read_ui(doc)) == to_comfy_api(read_ui(txt2img()))


def test_a_linked_widget_overrides_its_value():
    doc = txt2img()
    doc["nodes"].append(node(20, "EmptyLatentImage", outputs=[("LATENT", "LATENT", [])], values=[64, 64, 1]))
    ks = by_id(doc, 3)
    ks["inputs"].append({"name": "seed", "type": "INT", "widget": {"name": "seed"}, "link": 30})
    doc["nodes"].append(node(21, "SomePack.IntSource", outputs=[("INT", "INT", [30])], values=[5]))
    doc["links"].append([30, 21, 0, 3, 4, "INT"])
    graph = read_ui(doc)
    assert graph.nodes["3"].links["seed"] == ("21", 0)
    assert graph.nodes["3"].values["seed"] == 42  # kept for the widget, but the link is what runs
    assert to_comfy_api(graph)["3"]["inputs"]["seed"] == ["21", 0]


def test_reroutes_pass_links_through_and_primitives_become_values():
    doc = txt2img()
    # model goes 4 → reroute 30 → reroute 31 → 3; steps come from a primitive shared with node 32
    link = next(lk for lk in doc["links"] if lk[0] == 1)
    link[3], link[4] = 30, 0
    doc["nodes"] += [
        node(30, "Reroute", inputs=[("", "*", 1, False)], outputs=[("", "MODEL", [40])]),
        node(31, "Reroute", inputs=[("", "*", 40, False)], outputs=[("", "MODEL", [41])]),
        node(33, "PrimitiveNode", outputs=[("INT", "INT", [42])], values=[33, "fixed"], title="steps"),
    ]
    by_id(doc, 33)["outputs"][0]["widget"] = {"name": "steps"}
    ks = by_id(doc, 3)
    ks["inputs"][0]["link"] = 41
    ks["inputs"].append({"name": "steps", "type": "INT", "widget": {"name": "steps"}, "link": 42})
    doc["links"] += [[40, 30, 0, 31, 0, "MODEL"], [41, 31, 0, 3, 0, "MODEL"], [42, 33, 0, 3, 5, "INT"]]
    graph = read_ui(doc)
    assert graph.nodes["3"].links["model"] == ("4", 0)
    assert graph.nodes["3"].values["steps"] == 33 and "steps" not in graph.nodes["3"].links
    assert graph.nodes["3"].ui["via"] == {"model": "31", "steps": "33"}
    assert {r["id"] for r in graph.ui["reroutes"]} == {"30", "31"}
    assert set(graph.nodes) == {"3", "4", "5", "6", "7", "8", "9"}
    api = to_comfy_api(graph)
    assert api["3"]["inputs"]["model"] == ["4", 0] and api["3"]["inputs"]["steps"] == 33
    # written back, the reroutes and the primitive are where they were
    again = to_comfy_ui(graph)
    kinds = sorted(n["type"] for n in again["nodes"])
    assert kinds.count("Reroute") == 2 and kinds.count("PrimitiveNode") == 1
    back = read_ui(again)
    assert back.nodes["3"].ui["via"] == {"model": "31", "steps": "33"}
    assert to_comfy_api(back) == api


def test_muted_nodes_are_left_out_and_bypassed_ones_wired_through():
    doc = txt2img()
    doc["nodes"].append(node(10, "LatentUpscale", inputs=[("samples", "LATENT", 7, False)],
                             outputs=[("LATENT", "LATENT", [10])], values=["nearest-exact", 1024, 1024, "disabled"],
                             mode=4))
    doc["links"] = [lk for lk in doc["links"] if lk[0] != 7] + [[7, 3, 0, 10, 0, "LATENT"], [10, 10, 0, 8, 0, "LATENT"]]
    by_id(doc, 8)["inputs"][0]["link"] = 10
    doc["nodes"].append(node(11, "PreviewImage", inputs=[("images", "IMAGE", 11, False)], mode=2))
    doc["links"].append([11, 8, 0, 11, 0, "IMAGE"])
    graph = read_ui(doc)
    assert graph.nodes["10"].ui["mode"] == "bypassed" and graph.nodes["11"].ui["mode"] == "muted"
    api = to_comfy_api(graph)
    assert "10" not in api and "11" not in api
    assert api["8"]["inputs"]["samples"] == ["3", 0]
    assert validate(graph, REGISTRY) == validate(read_ui(txt2img()), REGISTRY)
    back = to_comfy_ui(graph)
    assert by_id(back, 10)["mode"] == 4 and by_id(back, 11)["mode"] == 2


def test_notes_and_groups_are_kept_as_the_workflows_ui_data():
    doc = txt2img(groups=[{"title": "Prompts", "bounding": [0, 0, 600, 400], "color": "#3f789e", "font_size": 24}])
    doc["nodes"].append(node(12, "Note", values=["Use a v1.5 model."], color="#432"))
    doc["nodes"].append(node(13, "MarkdownNote", values=["# Read me"]))
    graph = read_ui(doc)
    assert graph.ui["groups"] == doc["groups"]
    assert [(n["type"], n["text"], n.get("color")) for n in graph.ui["notes"]] == [
        ("Note", "Use a v1.5 model.", "#432"), ("MarkdownNote", "# Read me", None)]
    assert "12" not in graph.nodes
    back = to_comfy_ui(graph)
    assert back["groups"] == doc["groups"]
    assert by_id(back, 12)["widgets_values"] == ["Use a v1.5 model."] and by_id(back, 13)["type"] == "MarkdownNote"


def test_unknown_nodes_keep_their_sockets_values_and_links():
    doc = txt2img()
    doc["nodes"].append(node(14, "LoraLoaderPlus|pysssss", inputs=[("model", "MODEL", 20, False),
                                                                    ("clip", "CLIP", 21, False)],
                             outputs=[("MODEL", "MODEL", [22]), ("CLIP", "CLIP", [])],
                             values=["detail.safetensors", 0.8, 1.0, "[none]"], title="My LoRA"))
    doc["links"] += [[20, 4, 0, 14, 0, "MODEL"], [21, 4, 1, 14, 1, "CLIP"], [22, 14, 0, 3, 0, "MODEL"]]
    doc["links"] = [lk for lk in doc["links"] if lk[0] != 1]
    by_id(doc, 3)["inputs"][0]["link"] = 22
    graph = read_ui(doc)
    lora = graph.nodes["14"]
    assert lora.type == "LoraLoaderPlus|pysssss" and lora.ui["title"] == "My LoRA"
    assert lora.links == {"model": ("4", 0), "clip": ("4", 1)}
    assert lora.ui["comfy"]["widgets_values"] == ["detail.safetensors", 0.8, 1.0, "[none]"]
    assert graph.nodes["3"].links["model"] == ("14", 0)
    [problem] = [p for p in validate(graph, REGISTRY) if p.check == "unknown_type"]
    assert "custom node pack" in str(problem) and "did you mean" not in str(problem)
    back = to_comfy_ui(graph)
    written = by_id(back, 14)
    assert written["widgets_values"] == ["detail.safetensors", 0.8, 1.0, "[none]"]
    assert [s["name"] for s in written["inputs"]] == ["model", "clip"]
    assert by_id(back, 3)["inputs"][0]["link"] in written["outputs"][0]["links"]


def test_subgraphs_are_expanded_into_their_nodes_with_comfyui_ids():
    inner_nodes = [node(1, "VAEDecode", inputs=[("samples", "LATENT", 101, False), ("vae", "VAE", 102, False)],
                        outputs=[("IMAGE", "IMAGE", [103])])]
    subgraph = {"id": "9f1c", "name": "Decode", "nodes": inner_nodes,
                "inputs": [{"name": "samples", "type": "LATENT"}, {"name": "vae", "type": "VAE"}],
                "outputs": [{"name": "IMAGE", "type": "IMAGE"}],
                "links": [{"id": 101, "origin_id": -10, "origin_slot": 0, "target_id": 1, "target_slot": 0},
                          {"id": 102, "origin_id": -10, "origin_slot": 1, "target_id": 1, "target_slot": 1},
                          {"id": 103, "origin_id": 1, "origin_slot": 0, "target_id": -20, "target_slot": 0}]}
    doc = txt2img(definitions={"subgraphs": [subgraph]})
    by_id(doc, 8)["type"] = "9f1c"
    graph = read_ui(doc)
    assert "8" not in graph.nodes
    assert graph.nodes["8:1"].links == {"samples": ("3", 0), "vae": ("4", 2)}
    assert graph.nodes["9"].links == {"images": ("8:1", 0)}
    assert any(g["title"] == "Decode" for g in graph.ui["groups"])
    assert not [p for p in validate(graph, REGISTRY) if p.check not in ("choice",)]


def test_broken_documents_give_one_error_listing_what_is_wrong():
    with pytest.raises(WorkflowError) as info:
        from_data({"nodes": [{"id": 1}, "x", node(2, "KSampler"), node(2, "VAEDecode")], "links": [[1, 2]]},
                  REGISTRY)
    text = str(info.value)
    assert 'a node must be an object with an "id" and a "type"' in text
    assert "node id 2 is used by two nodes" in text


def test_writer_puts_values_in_comfyui_order_with_control_values():
    graph = read_ui(txt2img())
    graph.nodes["3"].ui["after_run"] = {"seed": "increment"}
    doc = to_comfy_ui(graph)
    ks = by_id(doc, 3)
    assert ks["widgets_values"] == [42, "increment", 20, 8.0, "euler", "normal", 1.0]
    assert [s["name"] for s in ks["inputs"]] == ["model", "positive", "negative", "latent_image"]
    assert {tuple(lk[1:5]) for lk in doc["links"]} == {tuple(lk[1:5]) for lk in txt2img()["links"]}
    json.dumps(doc)  # plain JSON


def test_api_files_are_read_as_comfyui_reads_them():
    api = to_comfy_api(read_ui(txt2img()))
    api["10"] = {"class_type": "LoadImage", "inputs": {"image": "cat.png", "upload": "image",
                                                       "choose file to upload": "image"}}
    api["3"]["inputs"]["Random seed after every gen"] = True
    api["3"]["inputs"]["sampler_name"] = "sample_euler"
    graph = from_comfy_api(api, REGISTRY)
    assert graph.nodes["10"].values == {"image": "cat.png"}
    assert graph.nodes["3"].values["sampler_name"] == "euler"
    assert ('node 10 (LoadImage): ignored inputs "upload", "choose file to upload": LoadImage does not declare '
            "them (ComfyUI ignores them too)") in graph.warnings
    assert any('"Random seed after every gen"' in w for w in graph.warnings)
    assert all("pos" in n.ui for n in graph.nodes.values())  # laid out: API files have no positions


def test_a_node_that_took_a_notes_id_keeps_both_on_saving():
    # ComfyUI's ids cover notes too; our editor numbers only nodes, so a new node can take a note's id
    graph = read_ui(txt2img())
    graph.ui["notes"] = [{"id": "10", "type": "Note", "text": "hi", "pos": [0, 0]}]
    graph.add_node("EmptyLatentImage", "10", {"width": 64, "height": 64, "batch_size": 1}, {"pos": [5, 5]})
    doc = to_comfy_ui(graph)
    assert len({n["id"] for n in doc["nodes"]}) == len(doc["nodes"]) == 9
    back = read_ui(doc)
    assert back.nodes["10"].type == "EmptyLatentImage" and back.ui["notes"][0]["id"] == "10"
