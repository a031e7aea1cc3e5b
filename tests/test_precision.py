"""The precision policy (`--dtype auto`), loading straight into the target dtype, the VAE's fp16
safety net, and what bf16 costs in quality on the bundled model."""

import math
from pathlib import Path

import pytest
import torch

from nodegraph import REGISTRY, Executor
from nodegraph.workflow import load_workflow
from nodes.core import device as policy
from nodes.core.env import SDEnvironment

REPO = Path(__file__).resolve().parent.parent
MODEL = REPO / "models" / "checkpoints" / "sdgraph-shapes.safetensors"
REGISTRY.discover("nodes")

ZEN3_FLAGS = "fpu vme sse sse2 avx avx2 fma f16c bmi2 sha_ni vaes"  # AVX2, no bf16 (this kind of CPU: fp32)
SAPPHIRE_RAPIDS_FLAGS = "fpu sse2 avx2 avx512f avx512bw avx512_bf16 amx_bf16 amx_tile amx_int8"


def _cpuinfo(tmp_path, flags: str, key: str = "flags") -> Path:
    path = tmp_path / "cpuinfo"
    path.write_text(f"processor\t: 0\nmodel name\t: test\n{key}\t\t: {flags}\n\nprocessor\t: 1\n{key}\t\t: {flags}\n")
    return path


def test_native_bf16_is_read_from_the_cpu_flags(tmp_path):
    assert policy.cpu_has_native_bf16(_cpuinfo(tmp_path, SAPPHIRE_RAPIDS_FLAGS))
    assert policy.cpu_has_native_bf16(_cpuinfo(tmp_path, "fp asimd bf16 i8mm", key="Features"))  # ARMv8.6
    assert not policy.cpu_has_native_bf16(_cpuinfo(tmp_path, ZEN3_FLAGS))
    assert not policy.cpu_has_native_bf16(_cpuinfo(tmp_path, "avx512f avx512bw avx512_vnni"))  # AVX-512 alone


def test_auto_picks_bf16_only_on_cpus_with_native_bf16_and_fp32_stays_fp32(monkeypatch):
    monkeypatch.setattr(policy, "cpu_has_native_bf16", lambda: True)
    assert policy.resolve("cpu", "auto") == (torch.device("cpu"), torch.bfloat16)
    assert policy.resolve("cpu", "fp32")[1] == torch.float32  # --dtype fp32 reproduces ComfyUI's CPU images
    assert SDEnvironment(device="cpu", dtype="fp32").dtype == torch.float32
    assert SDEnvironment(device="cpu").dtype == torch.bfloat16  # the CLI's and the editor's default is auto
    monkeypatch.setattr(policy, "cpu_has_native_bf16", lambda: False)
    assert policy.resolve("cpu", "auto")[1] == torch.float32
    assert policy.auto_dtype(torch.device("cuda")) == torch.float16
    assert policy.auto_dtype(torch.device("mps")) == torch.float32


def test_a_vae_that_overflows_in_fp16_gets_bf16_or_fp32():
    cpu = torch.device("cpu")
    assert policy.vae_dtype(cpu, torch.float16, needs_upcast=True) == torch.float32  # no bf16 promise on CPU
    assert policy.vae_dtype(cpu, torch.float16, needs_upcast=False) == torch.float16
    assert policy.vae_dtype(cpu, torch.bfloat16, needs_upcast=True) == torch.bfloat16  # fp32's range already


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_weights_load_straight_into_the_target_dtype(dtype):
    from nodes.models import load_checkpoint

    model, clip, vae = load_checkpoint(MODEL, device="cpu", dtype=dtype)
    for module in (model.unet, clip.text_encoder, vae.vae):
        dtypes = {t.dtype for t in module.state_dict().values() if t.is_floating_point()}
        assert dtypes == {dtype}, (type(module).__name__, dtypes)
    assert (model.dtype, clip.dtype, vae.dtype) == (dtype, dtype, dtype)


def test_fp16_vae_decode_that_overflows_is_redone_in_fp32():
    from nodes.core.values import VaeModel
    from nodes.imaging.vae import decode
    from nodes.models.testing import tiny_components

    _, module, _ = tiny_components()
    with torch.no_grad():
        module.decoder.conv_in.weight.mul_(3000.0)  # activations beyond fp16's 65504
    vae = VaeModel(vae=module.half(), dtype=torch.float16, device=torch.device("cpu"), name="hot")
    latents = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0)) * 50
    with torch.inference_mode():
        raw = module.decode(latents.half()).sample
    assert not torch.isfinite(raw).all()  # the plain fp16 pass really overflows
    image = decode(vae, latents)
    assert torch.isfinite(image).all() and image.shape == (1, 64, 64, 3)
    assert vae.dtype == torch.float32 and next(module.parameters()).dtype == torch.float32  # for later calls too
    reference = VaeModel(vae=module, dtype=torch.float32, device=torch.device("cpu"))
    assert torch.equal(image, decode(reference, latents))


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return 10 * math.log10(1.0 / max(float(((a - b) ** 2).mean()), 1e-12))


def test_bf16_images_of_the_bundled_model_stay_close_to_fp32(tmp_path):
    # docs/performance.md: 8 images at 20 steps gave 54 dB on average (49 dB at worst); a broken bf16
    # path (a wrong cast, NaN, the VAE in the wrong range) gives 10-20 dB.
    graph = load_workflow(REPO / "workflows" / "default.json", REGISTRY)
    graph.set_value("6", "batch_size", 2)
    graph.set_value("7", "steps", 4)
    images = {}
    for name in ("fp32", "bf16"):
        env = SDEnvironment(output_dir=tmp_path, device="cpu", dtype=name)
        result = Executor(REGISTRY, env=env).run(graph, outputs=["8"], check=False)
        assert result.ok, result.error
        images[name] = result.outputs["8"][0]
    assert not torch.equal(images["fp32"], images["bf16"])  # bf16 really ran
    for a, b in zip(images["fp32"], images["bf16"], strict=True):
        assert _psnr(a, b) > 35.0


LOAD_PEAK = r"""
import gc, sys, torch
from diffusers import AutoencoderKL, UNet2DConditionModel  # imported before the measurement
from transformers import CLIPTextModel
import nodes.models.loader as loader

def excess_mb():  # peak RSS while loading minus RSS once loaded
    d = dict(l.split(":", 1) for l in open("/proc/self/status") if l.startswith(("VmHWM", "VmRSS")))
    return (int(d["VmHWM"].split()[0]) - int(d["VmRSS"].split()[0])) / 1024

loader.load_checkpoint(sys.argv[1], dtype=torch.float32)  # warm up allocator and lazy imports
for label in ("read_cast", "memory_map"):
    if label == "memory_map":
        loader.read_cast = lambda *a: None
    gc.collect()
    open("/proc/self/clear_refs", "w").write("5")  # reset VmHWM to the current RSS
    models = loader.load_checkpoint(sys.argv[1], dtype=torch.float32)
    print(label, excess_mb())
    del models
"""


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux's /proc/self/clear_refs")
def test_casting_load_does_not_hold_the_whole_file_in_memory():
    # The bundled file is 29 MB of fp16; cast to fp32 from the memory map, every page of it was resident
    # until the file closed (peak = result + file). read_cast keeps one stored tensor at a time.
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", LOAD_PEAK, str(MODEL)], capture_output=True, text=True, cwd=REPO,
                          env={"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    excess = dict(line.split() for line in proc.stdout.splitlines() if line.startswith(("read_cast", "memory_map")))
    assert float(excess["memory_map"]) > 20, excess  # the old path's cost is visible here
    assert float(excess["read_cast"]) < 10, excess


def test_read_cast_gives_the_same_tensors_as_the_memory_mapped_read():
    from nodes.models.files import TensorFile
    from nodes.models.loader import read_cast

    with TensorFile(MODEL) as f:
        names = list(f.shapes)
        mapped = f.read(names, dtype=torch.bfloat16)
    read = read_cast(MODEL, names, torch.bfloat16, "cpu")
    assert read is not None and list(read) == names
    assert all(read[n].dtype == mapped[n].dtype and torch.equal(read[n], mapped[n]) for n in names)
    assert read_cast(MODEL, names, torch.float16, "cpu") is None  # stored as fp16 already: map, don't copy
