"""A1111/Forge infotext: every field a parser must find (../shared/fixtures/comfy_workflows/a1111
infotext_samples.json), and the txt2img workflow it becomes: A1111's sampler and schedule names in
ComfyUI's, hires fix as a second pass, LoRA tags and fields with no node listed in a note, the
model name matched against the checkpoint folder."""

import json

import pytest

from nodegraph import REGISTRY, validate
from nodegraph.a1111 import graph_from_parameters, parse_parameters
from tests.shared import FIXTURES

REGISTRY.discover("nodes")


def samples():
    return json.loads((FIXTURES / "comfy_workflows" / "a1111" / "infotext_samples.json").read_text())


def test_every_sample_gives_the_fields_it_should(shared_fixtures):
    checked = 0
    for sample in samples():
        if sample["text"] is None:
            continue  # the stealth sample is an image: see test_workflow_images
        fields = parse_parameters(sample["text"])
        for key, value in sample["expect"].items():
            assert fields.get(key) == value, (sample["id"], key)
            checked += 1
    assert checked >= 24


def by_type(graph):
    out = {}
    for node in graph.nodes.values():
        out.setdefault(node.type, []).append(node)
    return out


@pytest.mark.parametrize(("label", "schedule", "sampler", "scheduler"), [
    ("DPM++ 2M Karras", None, "dpmpp_2m", "karras"),
    ("Euler a", "Karras", "euler_ancestral", "karras"),
    ("DPM++ SDE", "Exponential", "dpmpp_sde", "exponential"),
    ("UniPC", "Automatic", "uni_pc", "normal"),
    ("DDIM", "SGM Uniform", "ddim", "sgm_uniform"),
])
def test_a1111_sampler_names_become_comfyuis_sampler_and_schedule(label, schedule, sampler, scheduler):
    text = f"a cat\nSteps: 20, Sampler: {label}, " + (f"Schedule type: {schedule}, " if schedule else "") + \
        "CFG scale: 7, Seed: 3, Size: 512x512"
    [ksampler] = by_type(graph_from_parameters(text, REGISTRY))["KSampler"]
    assert (ksampler.values["sampler_name"], ksampler.values["scheduler"]) == (sampler, scheduler)


def test_hires_fix_loras_and_unused_fields_in_the_workflow_and_its_note():
    text = next(s["text"] for s in samples() if s["id"] == "hires_lora_unicode")
    graph = graph_from_parameters(text, REGISTRY, lambda: ["other.safetensors", "majicMIX alpha 麦橘男团.safetensors"])
    nodes = by_type(graph)
    first, second = sorted(nodes["KSampler"], key=lambda n: int(n.id))
    assert (first.values["steps"], first.values["denoise"]) == (30, 1.0)
    assert (second.values["steps"], second.values["denoise"]) == (10, 0.45)
    [upscale] = nodes["LatentUpscale"]
    assert (upscale.values["width"], upscale.values["height"]) == (1024, 1536)
    assert second.links["latent_image"] == (upscale.id, 0)
    assert nodes["CLIPSetLastLayer"][0].values["stop_at_clip_layer"] == -2
    assert nodes["CheckpointLoaderSimple"][0].values["ckpt_name"] == "majicMIX alpha 麦橘男团.safetensors"
    prompts = [n.values["text"] for n in nodes["CLIPTextEncode"]]
    assert prompts[0] == "masterpiece,gufeng boy, armor" and "<lora" not in prompts[0]
    note = graph.ui["notes"][0]["text"]
    for line in ("<lora:gufeng boy_20230805210621:0.8>", "Hires upscaler: R-ESRGAN 4x+", "Model hash: 87ce93011a",
                 "Lora hashes: gufeng boy_20230805210621: 60129e9d06ab", "Version: v1.3.1"):
        assert line in note
    assert "Steps:" not in note and "Seed:" not in note  # used fields are not listed


def test_the_workflow_validates_once_the_model_is_there(tmp_path):
    from nodegraph import Environment, Folders

    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "dreamshaper_8.safetensors").write_bytes(b"")
    files = Folders()
    files.add("checkpoints", [tmp_path / "checkpoints"])
    text = next(s["text"] for s in samples() if s["id"] == "schedule_type_v1_10")
    graph = graph_from_parameters(text, REGISTRY, lambda: files.names("checkpoints"))
    assert validate(graph, REGISTRY, Environment(files)) == []
    assert all("pos" in n.ui for n in graph.nodes.values())
