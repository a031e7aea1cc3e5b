"""ComfyUI's own outputs for the conditioning, custom-sampling and ControlNet nodes
(shared/fixtures/comfy_ref_nodes: `area_composition`, `custom_sampling_b`, `controlnet`), reproduced
on the random SD 1.5 checkpoint the fixtures were made with, rebuilt once per module from the
fixture manifest (about 50 s on an idle machine).

Each case is a full 256² run of 10 steps: custom_sampling_b about a minute of CPU, the ControlNet
about two (the ControlNet runs beside the UNet), area_composition about three (three UNet calls per
step). Final latents to 1e-4 relative error, images to ≥ 45 dB.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from nodegraph import REGISTRY, Executor
from nodegraph.workflow import from_data
from nodes.core.env import SDEnvironment
from tests.shared import FIXTURES, fixture_script

REF = FIXTURES / "comfy_ref_nodes"
CKPT = "sd15_rand_v2.safetensors"
REGISTRY.discover("nodes")


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("sd15_rand")
    (root / "checkpoints").mkdir()
    subprocess.run([sys.executable, str(FIXTURES / "make_random_ckpt.py"), str(FIXTURES / "sd15_manifest.tsv"),
                    str(root / "checkpoints" / CKPT)], check=True, capture_output=True)
    yield root
    shutil.rmtree(root, ignore_errors=True)  # 2 GB: not left behind for pytest's tmp retention


@pytest.fixture(scope="module")
def executor(models_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("out")
    return Executor(REGISTRY, env=SDEnvironment(models_dir=models_dir, output_dir=out, input_dir=out, device="cpu",
                                                dtype="fp32"))  # ComfyUI's references are fp32 CPU runs


def psnr(ours: np.ndarray, ref: np.ndarray) -> float:
    mse = float(((ours.astype(np.float64) - ref.astype(np.float64)) ** 2).mean())
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def as_png_pixels(image: torch.Tensor) -> np.ndarray:
    """What SaveImage writes: floor(clip(255·x))."""
    return np.floor(np.clip(255.0 * image[0].numpy(), 0, 255))


def test_area_prompts_encode_to_comfyuis_hidden_states(executor):
    graph = from_data(json.loads((REF / "area_composition.json").read_text()), REGISTRY)
    result = executor.run(graph, outputs=["10", "12"])
    assert result.ok, result.error
    for node, name in (("10", "cond_area1"), ("12", "cond_area2")):
        ref = np.load(REF / f"area_composition.{name}.npy")
        ours = result.outputs[node][0][0].cond.float().numpy()
        assert ours.shape == ref.shape and np.abs(ours - ref).max() < 1e-3 * np.abs(ref).max()


def test_custom_sampling_b_matches_comfyui(executor):
    graph = from_data(json.loads((REF / "custom_sampling_b.json").read_text()), REGISTRY)
    result = executor.run(graph, outputs=["13", "14", "8"])
    assert result.ok, result.error
    assert np.array_equal(result.outputs["13"][0].numpy(), np.load(REF / "custom_sampling_b.sigmas.npy"))
    ours, ref = result.outputs["14"][0].samples.numpy(), np.load(REF / "custom_sampling_b.latent.npy")
    assert np.abs(ours - ref).max() / np.abs(ref).max() < 1e-4
    reference = np.asarray(Image.open(REF / "custom_sampling_b.png").convert("RGB"))
    assert psnr(as_png_pixels(result.outputs["8"][0]), reference) >= 45.0


def test_controlnet_matches_comfyui(executor, models_dir):
    """ControlNetLoader + ControlNetApplyAdvanced (0.8, from 0 to 0.8 of sampling, on both prompts) with
    the reference ControlNet (original layout, fp16 file run in fp32) and hint: ComfyUI's latent."""
    from safetensors.torch import save_file

    aux = fixture_script("comfy_ref_nodes/make_aux_models.py")

    (models_dir / "controlnet").mkdir(exist_ok=True)
    save_file(aux.build_controlnet(aux.read_manifest(str(FIXTURES / "sd15_manifest.tsv"))),
              str(models_dir / "controlnet" / "controlnet_sd15_rand.safetensors"))
    shutil.copyfile(REF / "lines_256.png", executor.env.paths.input / "lines_256.png")
    graph = from_data(json.loads((REF / "controlnet.json").read_text()), REGISTRY)
    result = executor.run(graph, outputs=["3", "8"])
    assert result.ok, result.error
    ours, ref = result.outputs["3"][0].samples.numpy(), np.load(REF / "controlnet.latent.npy")
    assert np.abs(ours - ref).max() / np.abs(ref).max() < 1e-4, float(np.abs(ours - ref).max() / np.abs(ref).max())
    reference = np.asarray(Image.open(REF / "controlnet.png").convert("RGB"))
    assert psnr(as_png_pixels(result.outputs["8"][0]), reference) >= 45.0


def test_area_composition_matches_comfyui(executor):
    """Two ConditioningSetArea prompts combined with the full prompt: three UNet calls per step with
    ComfyUI's crops, weights and feathering give ComfyUI's latent and image."""
    graph = from_data(json.loads((REF / "area_composition.json").read_text()), REGISTRY)
    [sampler] = [k for k, n in graph.nodes.items() if n.type == "KSampler"]
    [decode] = [k for k, n in graph.nodes.items() if n.type == "VAEDecode"]
    result = executor.run(graph, outputs=[sampler, decode])
    assert result.ok, result.error
    ours, ref = result.outputs[sampler][0].samples.numpy(), np.load(REF / "area_composition.latent.npy")
    assert np.abs(ours - ref).max() / np.abs(ref).max() < 1e-4
    reference = np.asarray(Image.open(REF / "area_composition.png").convert("RGB"))
    assert psnr(as_png_pixels(result.outputs[decode][0]), reference) >= 45.0


def test_kohya_lora_matches_comfyui(executor, models_dir):
    """LoraLoader (strength_model 0.8, strength_clip 0.6) with the reference kohya LoRA: the UNet and
    text-encoder deltas, in fp32 then rounded once, give ComfyUI's latent and image."""
    from safetensors.torch import save_file

    aux = fixture_script("comfy_ref_nodes/make_aux_models.py")
    (models_dir / "loras").mkdir(exist_ok=True)
    save_file(aux.build_kohya(aux.read_manifest(str(FIXTURES / "sd15_manifest.tsv"))),
              str(models_dir / "loras" / "lora_kohya_sd15.safetensors"))
    graph = from_data(json.loads((REF / "lora_kohya.json").read_text()), REGISTRY)
    result = executor.run(graph, outputs=["3", "8"])
    assert result.ok, result.error
    ours, ref = result.outputs["3"][0].samples.numpy(), np.load(REF / "lora_kohya.latent.npy")
    assert np.abs(ours - ref).max() / np.abs(ref).max() < 1e-3, float(np.abs(ours - ref).max() / np.abs(ref).max())
    reference = np.asarray(Image.open(REF / "lora_kohya.png").convert("RGB"))
    assert psnr(as_png_pixels(result.outputs["8"][0]), reference) >= 45.0
