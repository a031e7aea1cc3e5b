"""The Stable Diffusion nodes end to end, on a tiny random model built here (mechanics only)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from nodegraph import REGISTRY, Executor
from nodegraph.fileio import read_png_text
from nodegraph.workflow import load_workflow
from nodes.core.env import SDEnvironment

REPO = Path(__file__).resolve().parent.parent
REGISTRY.discover("nodes")


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory):
    from nodes.models.testing import write_tiny_checkpoint, write_tiny_diffusers_folder

    root = tmp_path_factory.mktemp("sd")
    write_tiny_checkpoint(root / "models" / "checkpoints" / "tiny.safetensors")
    write_tiny_diffusers_folder(root / "models" / "checkpoints" / "tiny-diffusers")
    (root / "input").mkdir()
    gradient = np.linspace(0, 255, 64 * 64 * 3).reshape(64, 64, 3).astype(np.uint8)
    Image.fromarray(gradient).save(root / "input" / "example.png")
    return root


def env_for(root: Path) -> SDEnvironment:
    return SDEnvironment(models_dir=root / "models", output_dir=root / "output", input_dir=root / "input", device="cpu",
                         dtype="fp32")


def txt2img_graph(ckpt="tiny.safetensors", steps=4):
    graph = load_workflow(REPO / "workflows" / "txt2img.json", REGISTRY)
    graph.set_value("1", "ckpt_name", ckpt)
    graph.set_value("7", "steps", steps)
    return graph


def run_cli(*args, root):
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    return subprocess.run([sys.executable, str(REPO / "main.py"), "run", *map(str, args),
                           "--models-dir", root / "models", "--input-dir", root / "input",
                           "--output-dir", root / "output"], capture_output=True, text=True, env=env, timeout=300)


def pixels(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.int16)


# Both forms a checkpoint comes in: the single file (original layout) and the diffusers folder.
MODEL_FORMS = [pytest.param("tiny.safetensors", id="single-file"), pytest.param("tiny-diffusers", id="diffusers-folder")]


def cli_run_and_rerun_from_png(root: Path, workflow: str, ckpt: str, save_node: str, prefix: str, *sets: str):
    """`main.py run` a shipped workflow on `ckpt`, then run the PNG it wrote: the same image must come
    out (under the next counter). Returns the PNG's two workflow chunks, parsed."""
    proc = run_cli(REPO / "workflows" / workflow, "--set", f"1.ckpt_name={ckpt}", *sets,
                   "--set", f"{save_node}.filename_prefix={prefix}", root=root)
    assert proc.returncode == 0, proc.stderr
    first = root / "output" / f"{prefix}_00001_.png"
    assert f"wrote {first}" in proc.stderr
    with Image.open(first) as opened:
        assert opened.size == (64, 64)
    chunks = read_png_text(first.read_bytes())
    native, api = json.loads(chunks["sdgraph"]), json.loads(chunks["prompt"])
    assert native["nodes"]["1"]["values"]["ckpt_name"] == api["1"]["inputs"]["ckpt_name"] == ckpt
    again = run_cli(first, root=root)
    assert again.returncode == 0, again.stderr
    second = root / "output" / f"{prefix}_00002_.png"
    assert f"wrote {second}" in again.stderr
    assert np.array_equal(pixels(first), pixels(second))
    return native, api


@pytest.mark.parametrize("ckpt", MODEL_FORMS)
def test_txt2img_cli_writes_png_with_both_workflows_and_the_png_reproduces_it(model_dirs, ckpt):
    native, api = cli_run_and_rerun_from_png(model_dirs, "txt2img.json", ckpt, "9", f"e2e/txt2img-{ckpt}",
                                             "--set", "7.steps=3")
    assert native["nodes"]["7"]["values"]["steps"] == 3
    assert api["7"]["class_type"] == "KSampler" and api["7"]["inputs"]["model"] == ["1", 0]
    # separate tokenizer and text encoder stages
    assert api["2"]["class_type"] == "CLIPTokenize" and api["4"]["class_type"] == "CLIPTextEncodeTokens"


def test_single_file_and_diffusers_folder_give_the_same_image(model_dirs):
    results = {}
    for ckpt in ("tiny.safetensors", "tiny-diffusers"):
        graph = txt2img_graph(ckpt)
        result = Executor(REGISTRY, env=env_for(model_dirs)).run(graph)
        assert result.ok, result.error
        results[ckpt] = result.outputs["8"][0]
    a, b = results.values()
    assert a.shape == (1, 64, 64, 3)
    assert float((a - b).abs().max()) < 1e-5


def test_changing_only_the_seed_reruns_ksampler_and_what_follows(model_dirs):
    executor = Executor(REGISTRY, env=env_for(model_dirs))
    graph = txt2img_graph()
    assert executor.run(graph).ok
    graph.set_value("7", "seed", 43)
    result = executor.run(graph)
    assert result.ran == ["7", "8", "9"]
    assert result.reasons["7"] == "changed: seed"
    graph.set_value("2", "text", "a blue square")
    result = executor.run(graph)
    assert result.ran == ["2", "4", "7", "8", "9"]


@pytest.mark.parametrize("ckpt", MODEL_FORMS)
def test_img2img_cli_writes_png_and_the_png_reproduces_it(model_dirs, ckpt):
    native, api = cli_run_and_rerun_from_png(model_dirs, "img2img.json", ckpt, "8", f"e2e/img2img-{ckpt}",
                                             "--set", "6.steps=2")
    assert native["nodes"]["6"]["values"]["steps"] == 2
    assert api["4"]["class_type"] == "LoadImage" and api["4"]["inputs"]["image"] == "example.png"
    assert api["6"]["class_type"] == "KSampler" and api["6"]["inputs"]["latent_image"] == ["5", 0]


def test_img2img_workflow_runs_from_an_input_image(model_dirs):
    graph = load_workflow(REPO / "workflows" / "img2img.json", REGISTRY)
    graph.set_value("1", "ckpt_name", "tiny.safetensors")
    graph.set_value("6", "steps", 4)
    events = []
    executor = Executor(REGISTRY, env=env_for(model_dirs))
    executor.add_listener(events.append)
    result = executor.run(graph)
    assert result.ok, result.error
    assert result.outputs["5"][0].samples.shape == (1, 4, 8, 8)
    # denoise 0.6 of 4 steps → the schedule for int(4 / 0.6) = 6 steps, last 4 + 1 sigmas: 4 steps
    assert [e.step for e in events if e.kind == "progress" and e.node_id == "6"] == [1, 2, 3, 4]
    assert any(e.kind == "preview" and e.node_id == "6" for e in events)
    assert Path(result.ui["8"]["images"][0]).is_file()


def test_comfy_api_workflow_runs_unchanged(model_dirs):
    graph = load_workflow(REPO / "workflows" / "txt2img.api.json", REGISTRY)
    graph.set_value("1", "ckpt_name", "tiny.safetensors")
    graph.set_value("7", "steps", 2)
    result = Executor(REGISTRY, env=env_for(model_dirs)).run(graph)
    assert result.ok, result.error


def test_a_prompt_longer_than_75_tokens_is_chunked_not_refused(model_dirs):
    graph = txt2img_graph(steps=2)
    graph.set_value("2", "text", ", ".join(["a red circle on a white background"] * 20))
    result = Executor(REGISTRY, env=env_for(model_dirs)).run(graph)
    assert result.ok, result.error
    assert result.outputs["4"][0][0].cond.shape[1] % 77 == 0 and result.outputs["4"][0][0].cond.shape[1] > 77


def test_missing_checkpoint_lists_what_is_there(model_dirs):
    graph = txt2img_graph("v1-5.safetensors")
    env = env_for(model_dirs)
    result = Executor(REGISTRY, env=env).run(graph)
    assert result.status == "invalid"
    [problem] = result.problems
    assert str(problem).startswith("node 1 (CheckpointLoaderSimple): input \"ckpt_name\" = 'v1-5.safetensors' "
                                   "is not one of the choices — choose one of: tiny-diffusers, tiny.safetensors")
    result = Executor(REGISTRY, env=env).run(graph, check=False)
    assert result.error.message.startswith('node 1 (CheckpointLoaderSimple): input "ckpt_name": '
                                           '"v1-5.safetensors" not found in')


def test_unreadable_and_wrong_kind_files_get_one_line_errors(model_dirs, tmp_path):
    models = tmp_path / "models" / "checkpoints"
    models.mkdir(parents=True)
    (models / "broken.safetensors").write_bytes(b"\x00\x01 not a safetensors file")
    import torch
    from safetensors.torch import save_file

    save_file({"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": torch.zeros(4, 4)},
              str(models / "a-lora.safetensors"))
    env = SDEnvironment(models_dir=tmp_path / "models", output_dir=tmp_path / "out")
    for name in ("broken.safetensors", "a-lora.safetensors"):
        result = Executor(REGISTRY, env=env).run(txt2img_graph(name))
        assert result.status == "error"
        message = result.error.message
        assert message.startswith("node 1 (CheckpointLoaderSimple): ") and name in message
        assert "\n" not in message and "Traceback" not in message
    assert "LoRA" in message


def test_width_not_a_multiple_of_8_is_a_validation_error():
    graph = txt2img_graph()
    graph.set_value("6", "width", 100)
    problems = [str(p) for p in Executor(REGISTRY).run(graph).problems if p.check == "multiple_of"]
    assert problems == ['node 6 (EmptyLatentImage): input "width" = 100 is not a multiple of 8 — use 96 or 104']


def test_save_image_prefix_cannot_leave_the_output_folder(model_dirs):
    graph = txt2img_graph(steps=1)
    graph.set_value("9", "filename_prefix", "../../escape")
    result = Executor(REGISTRY, env=env_for(model_dirs)).run(graph)
    assert result.status == "error"
    assert "would write outside the output folder" in result.error.message
    assert not list(model_dirs.parent.glob("escape*"))


def test_noise_levels_node_shows_the_schedule_a_learner_asks_about(model_dirs):
    from nodegraph import Graph

    graph = Graph(REGISTRY)
    graph.add_node("CheckpointLoaderSimple", "1", {"ckpt_name": "tiny.safetensors"})
    graph.add_node("ShowNoiseLevels", "2", {"steps": 4, "scheduler": "karras"})
    graph.connect("1", 0, "2", "model")
    result = Executor(REGISTRY, env=env_for(model_dirs)).run(graph)
    lines = result.ui["2"]["text"]
    assert len(lines) == 4
    assert lines[0].startswith("step   1: sigma   14.6146 →")
    assert lines[-1].endswith("→    0.0000")
