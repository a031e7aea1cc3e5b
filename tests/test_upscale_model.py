"""Upscale models (UpscaleModelLoader + ImageUpscaleWithModel, through spandrel) against ComfyUI's own
output (../shared/fixtures/comfy_ref_nodes, case upscale_model), and the tiling, out-of-memory,
cancellation and error behaviour around them.

The case ran ComfyUI 0.3.64 on the tiny random 4× ESRGAN that make_aux_models.py rebuilds
(build_esrgan, byte-identical: its sha256 is checked here) on upscale_in_64.png; no diffusion.
"""

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from nodegraph import REGISTRY, Executor, UserError
from nodegraph.workflow import load_workflow
from nodes.core.env import SDEnvironment
from tests.shared import FIXTURES, fixture_script

REF = FIXTURES / "comfy_ref_nodes"
REPO = Path(__file__).resolve().parent.parent
REGISTRY.discover("nodes")


def psnr(ours: np.ndarray, reference: np.ndarray, peak: float = 255.0) -> float:
    mse = float(((ours.astype(np.float64) - reference.astype(np.float64)) ** 2).mean())
    return float("inf") if mse == 0 else 10 * np.log10(peak**2 / mse)


def pixels(path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


@pytest.fixture(scope="module")
def aux():
    return fixture_script("comfy_ref_nodes/make_aux_models.py")


@pytest.fixture(scope="module")
def models(tmp_path_factory, aux):
    """A models/ folder with ComfyUI's ESRGAN in upscale_models/ (and a checkpoint in checkpoints/)."""
    from safetensors.torch import save_file

    root = tmp_path_factory.mktemp("upscale") / "models"
    path = root / aux.FILES["esrgan"]
    path.parent.mkdir(parents=True)
    save_file(aux.build_esrgan(), str(path), metadata={"format": "pt"})
    assert hashlib.sha256(path.read_bytes()).hexdigest() == aux.EXPECTED["esrgan"]  # the file ComfyUI ran
    (root / "checkpoints").mkdir()
    os.symlink(REPO / "models" / "checkpoints" / "sdgraph-shapes.safetensors",
               root / "checkpoints" / "sdgraph-shapes.safetensors")
    return root


@pytest.fixture(scope="module")
def esrgan(models):
    from nodes.imaging.upscale import load_upscale_model

    return load_upscale_model(models / "upscale_models" / "esrgan_tiny_x4.safetensors")


def run_workflow(graph, models, tmp_path):
    env = SDEnvironment(models_dir=models, input_dir=REF, output_dir=tmp_path / "out", device="cpu", dtype="fp32")
    return Executor(REGISTRY, env=env).run(graph)


def test_comfyuis_upscale_workflow_reproduces_its_image(models, tmp_path):
    graph = load_workflow(REF / "upscale_model.json", REGISTRY)  # ComfyUI's API workflow, unchanged
    result = run_workflow(graph, models, tmp_path)
    assert result.ok, result.error
    [saved] = result.ui["9"]["images"]
    ours, reference = pixels(saved), pixels(REF / "upscale_model.png")
    assert ours.shape == reference.shape == (256, 256, 3)
    assert psnr(ours, reference) >= 45.0  # measured: identical (inf dB)
    # The bar is real: a plain 4× enlargement of the input is ~6 dB from ComfyUI's image.
    nearest = np.asarray(Image.open(REF / "upscale_in_64.png").convert("RGB").resize((256, 256), Image.NEAREST))
    assert psnr(nearest, reference) < 20.0


def test_the_loader_reports_the_models_scale_and_architecture(esrgan):
    assert (esrgan.architecture.name, esrgan.scale, esrgan.input_channels) == ("ESRGAN", 4, 3)
    assert not esrgan.model.training


def test_the_loader_lists_the_files_of_models_upscale_models(models, tmp_path):
    env = SDEnvironment(models_dir=models, input_dir=tmp_path, output_dir=tmp_path)
    choices = REGISTRY.get("UpscaleModelLoader").input("model_name").choice_list(env)
    assert choices == ["esrgan_tiny_x4.safetensors"]  # not the checkpoint next door
    extra = tmp_path / "comfy" / "upscale_models"
    extra.mkdir(parents=True)
    (extra / "4x_other.pth").write_bytes(b"")
    yaml_file = tmp_path / "extra_model_paths.yaml"
    yaml_file.write_text(f"comfy:\n  base_path: {tmp_path / 'comfy'}\n  upscale_models: upscale_models\n")
    env.add_extra_model_paths(yaml_file)
    assert REGISTRY.get("UpscaleModelLoader").input("model_name").choice_list(env) == [
        "4x_other.pth", "esrgan_tiny_x4.safetensors"]


NOT_UPSCALE_MODELS = {  # file name → what its error must say
    "sdgraph-shapes.safetensors": "is not an upscale model that spandrel recognises (ESRGAN, Real-ESRGAN, SwinIR, "
                                  "HAT, DAT, …): it looks like a Stable Diffusion checkpoint",
    "lora.safetensors": "is not an upscale model that spandrel recognises (ESRGAN, Real-ESRGAN, SwinIR, HAT, DAT, "
                        "…): it looks like a LoRA",
    "garbage.pth": "is not a readable PyTorch model file (corrupt, truncated, or another format)",
    "code.pth": "contains pickled Python code, which sdgraph never runs",
    "wrong_shape.safetensors": "looks like an upscale model but its tensors do not fit: Error(s) in loading "
                               "state_dict for RRDBNet: size mismatch for model.3.weight",
}


@pytest.mark.parametrize("name", NOT_UPSCALE_MODELS)
def test_a_file_that_is_not_an_upscale_model_fails_in_one_line_naming_it(models, tmp_path, name):
    from safetensors.torch import load_file, save_file

    folder = tmp_path / "models" / "upscale_models"
    folder.mkdir(parents=True)
    if name == "sdgraph-shapes.safetensors":
        os.symlink(models / "checkpoints" / name, folder / name)
    elif name == "lora.safetensors":
        save_file({"lora_unet_down_blocks_0.lora_down.weight": torch.zeros(4, 8)}, str(folder / name))
    elif name == "garbage.pth":
        (folder / name).write_bytes(b"this is not a model")
    elif name == "code.pth":
        torch.save({"params_ema": {"model.0.weight": torch.zeros(1)}, "where": Path("/")}, folder / name)
    else:
        state = load_file(str(models / "upscale_models" / "esrgan_tiny_x4.safetensors"))
        state["model.3.weight"] = torch.zeros(16, 8, 3, 3)
        save_file(state, str(folder / name))
    graph = load_workflow(REF / "upscale_model.json", REGISTRY)
    graph.set_value("11", "model_name", name)
    result = run_workflow(graph, tmp_path / "models", tmp_path)
    assert result.status == "error"
    # A CheckpointError's own words: any other exception would read "node 11 (…): SomeError: …".
    assert result.error.message.startswith(f'node 11 (UpscaleModelLoader): "{name}" {NOT_UPSCALE_MODELS[name]}')
    assert "\n" not in result.error.message


def test_tiled_upscaling_matches_one_pass(esrgan):
    from nodes.imaging.upscale import tile_count, upscale

    image = torch.rand(1, 72, 88, 3, generator=torch.Generator().manual_seed(0))  # noise: the hardest case
    whole = upscale(esrgan, image, "cpu")  # fits in one 512 tile
    steps = []
    tiled = upscale(esrgan, image, "cpu", tile=40, overlap=16, progress=lambda i, n: steps.append((i, n)))
    assert tile_count(72, 88, 40, 16) == 3 * 3
    assert steps == [(i, 9) for i in range(1, 10)]
    assert tiled.shape == whole.shape == (1, 288, 352, 3)
    assert psnr(tiled.numpy(), whole.numpy(), peak=1.0) >= 45.0  # measured 53 dB
    assert float((tiled - whole).abs().max()) < 0.1
    assert not torch.equal(tiled, whole)  # it really did run in tiles


class FakeModel:
    """Stands in for a spandrel ImageModelDescriptor: 2× nearest, out of memory above `limit` pixels a side."""

    scale, input_channels, output_channels = 2, 3, 3
    architecture = type("Arch", (), {"name": "Fake"})()

    def __init__(self, limit):
        self.limit, self.sides, self.device = limit, [], None

    def to(self, device=None, dtype=None):
        self.device = str(device)
        return self

    def __call__(self, x):
        self.sides.append(max(x.shape[2:]))
        if max(x.shape[2:]) > self.limit:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return torch.nn.functional.interpolate(x, scale_factor=2, mode="nearest")


def test_out_of_memory_halves_the_tile_down_to_128():
    from nodes.imaging.upscale import upscale

    image = torch.rand(2, 300, 600, 3)
    model = FakeModel(limit=256)
    out = upscale(model, image, "cpu")
    assert model.sides[0] == 512 and max(model.sides[1:]) == 256  # 512 ran out of memory, 256 did the rest
    assert torch.allclose(out, image.repeat_interleave(2, 1).repeat_interleave(2, 2))
    assert model.device == "cpu"
    model = FakeModel(limit=100)
    with pytest.raises(torch.OutOfMemoryError):  # raised on, for the executor to report and free memory
        upscale(model, image, "cpu")
    assert model.sides == [512, 256, 128] and model.device == "cpu"


def test_cancelling_stops_between_tiles():
    from nodes.imaging.upscale import upscale

    class Stop(Exception):
        pass

    model, calls = FakeModel(limit=10_000), []

    def check():
        calls.append(1)
        if len(calls) == 3:
            raise Stop

    with pytest.raises(Stop):
        upscale(model, torch.rand(1, 600, 1200, 3), "cpu", check=check)
    assert len(model.sides) == 2 and model.device == "cpu"


def test_an_image_with_the_wrong_channel_count_is_refused_clearly(esrgan):
    from nodes.imaging.upscale import upscale

    with pytest.raises(UserError, match="the image has 4 channels; this ESRGAN model takes 3"):
        upscale(esrgan, torch.rand(1, 16, 16, 4), "cpu")


def test_spandrel_loads_without_torchvision_and_leaves_no_stand_in_behind():
    code = ("import importlib.util, sys; from nodes.imaging.upscale import spandrel; m = spandrel();"
            "print(m.__version__, 'torchvision' in sys.modules, importlib.util.find_spec('torchvision'))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    version, leftover, spec = proc.stdout.split()
    assert version.startswith("0.4.") and leftover == "False" and spec == "None"  # torchvision is not installed


def test_the_torchvision_stand_in_says_what_is_missing():
    from nodes.imaging.upscale import _torchvision_placeholder

    functional = _torchvision_placeholder()["torchvision.transforms.functional"]
    with pytest.raises(UserError, match="needs torchvision"):
        functional.rotate(torch.zeros(1), 90.0, functional.InterpolationMode.BILINEAR)
