"""Compiled kernels (nodes/core/kernels.py): `--compile`, the editor's setting and TorchCompileModel
reach the UNet and the VAE decoder; only the plain UNet call is compiled (the block walk of patched
models and the explain trace stay eager); one compiled function per module, weights dtype and
backend; and inductor's code gives eager's numbers on a tiny model."""

from __future__ import annotations

import gc
import json
import weakref
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from nodegraph import REGISTRY, Executor, NodeInputError
from nodegraph.workflow import from_data
from nodes.core import kernels
from nodes.core.env import SDEnvironment
from nodes.core.values import ConditioningEntry, DiffusionModel, Latent
from nodes.sampling import ksampler

REPO = Path(__file__).resolve().parent.parent
REGISTRY.discover("nodes")


class FakeCompile:
    """Stands in for torch.compile: records what was compiled and counts the calls of the result
    (which runs eagerly, so results are bit-identical)."""

    def __init__(self):
        self.compiled: list[tuple[str, str, str]] = []
        self.calls = 0

    def __call__(self, module, backend, key):
        self.compiled.append((type(module).__name__, backend, key))
        target = module if key == "forward" else getattr(module, key)

        def run(*args, **kwargs):
            self.calls += 1
            return target(*args, **kwargs)
        return run


@pytest.fixture
def fake(monkeypatch):
    f = FakeCompile()
    monkeypatch.setattr(kernels, "_compile", f)
    return f


@pytest.fixture
def tiny():  # per test: a compiled function is kept on its UNet
    from nodes.models.configs import alphas_cumprod
    from nodes.models.testing import tiny_components

    unet, _vae, _text = tiny_components(seed=4)
    model = DiffusionModel(unet=unet, alphas_cumprod=alphas_cumprod(), dtype=torch.float32, device=torch.device("cpu"))
    g = torch.Generator().manual_seed(0)
    pos = [ConditioningEntry(cond=torch.randn(1, 77, 32, generator=g))]
    neg = [ConditioningEntry(cond=torch.randn(1, 77, 32, generator=g))]
    return model, pos, neg


def sample(model, pos, neg, steps=3):
    return ksampler.sample(model, pos, neg, Latent(samples=torch.zeros(1, 4, 8, 8)), seed=3, steps=steps, cfg=5.0,
                           sampler_name="euler", scheduler="normal")


def default_graph(steps: int = 3):
    data = json.loads((REPO / "workflows" / "default.json").read_text())
    graph = from_data(data, REGISTRY)
    sampler = next(n for n in graph.nodes.values() if n.type == "KSampler")
    sampler.values["steps"] = steps
    return graph


def run_default(tmp_path, compile_setting):
    env = SDEnvironment(models_dir=REPO / "models", output_dir=tmp_path, input_dir=tmp_path, device="cpu",
                        dtype="fp32", compile=compile_setting)
    result = Executor(REGISTRY, env=env).run(default_graph())
    assert result.ok, result.error
    decode = next(nid for nid, n in default_graph().nodes.items() if n.type == "VAEDecode")
    return result.outputs[decode][0]


def test_the_compile_setting_reaches_the_unet_and_the_vae_decoder(fake, tmp_path):
    compiled_image = run_default(tmp_path, "inductor")
    assert ("UNet2DConditionModel", "inductor", "forward") in fake.compiled
    assert ("AutoencoderKL", "inductor", "decode") in fake.compiled
    assert fake.calls == 3 + 1  # every step's UNet call and the decode went through the compiled functions
    fake.compiled.clear()
    assert torch.equal(run_default(tmp_path, None), compiled_image)
    assert fake.compiled == []  # without the setting nothing is compiled


def test_torch_compile_model_compiles_only_its_own_branch(fake, tiny):
    model, pos, neg = tiny
    (patched,) = REGISTRY.get("TorchCompileModel")().run(None, model, "inductor")
    assert patched.unet is model.unet and model.patches.compile is None
    assert torch.equal(sample(patched, pos, neg), sample(model, pos, neg))
    assert fake.compiled == [("UNet2DConditionModel", "inductor", "forward")] and fake.calls == 3


def test_cudagraphs_on_a_cpu_model_is_refused_on_the_backend_input(tiny):
    with pytest.raises(NodeInputError) as err:
        REGISTRY.get("TorchCompileModel")().run(None, tiny[0], "cudagraphs")
    assert err.value.input_name == "backend" and "inductor" in str(err.value)


def test_patched_models_and_the_trace_run_eager(fake, tiny):
    from nodes.sampling.trace import record_sampling

    model, pos, neg = tiny
    compiled = model.patched(compile="inductor")
    record_sampling(compiled, pos, neg, Latent(samples=torch.zeros(1, 4, 8, 8)), seed=3, steps=2, cfg=5.0,
                    sampler_name="euler", scheduler="normal", record_attention=True)
    (freeu,) = REGISTRY.get("FreeU")().run(None, compiled, 1.1, 1.2, 0.9, 0.2)
    sample(freeu, pos, neg, steps=2)
    assert fake.calls == 0


def test_one_compiled_function_per_module_backend_and_dtype(fake, tiny):
    import copy

    unet = tiny[0].unet
    first = kernels.compiled(unet)
    assert kernels.compiled(unet) is first and len(fake.compiled) == 1
    twin = copy.copy(unet)  # shares the weights and, through __dict__, the store: it must compile its own
    assert kernels.compiled(twin) is not first
    half = copy.deepcopy(unet).to(torch.float16)
    kernels.compiled(half)
    assert kernels.compiled(half) is not kernels.compiled(copy.deepcopy(unet))
    with pytest.raises(ValueError, match="inductor"):
        kernels.compiled(unet, "tensorrt")


def test_a_compiled_model_that_diffusers_sampler_cannot_use_runs_there_eager(fake, tiny, tmp_path):
    from nodes.sampling.diffusers_loop import run_diffusers_loop

    model, pos, neg = tiny
    compiled = model.patched(compile="inductor")
    out = run_diffusers_loop(compiled, pos, neg, Latent(samples=torch.zeros(1, 4, 8, 8)), seed=1, steps=2, cfg=5.0,
                             scheduler_class="EulerDiscreteScheduler")
    assert torch.isfinite(out).all() and fake.calls == 0


def test_the_cli_flag_sets_the_environment():
    import cli

    args = cli.build_parser().parse_args(["run", "workflows/default.json", "--compile"])
    assert cli.make_env(args).compile == "inductor"
    args = cli.build_parser().parse_args(["run", "workflows/default.json"])
    assert cli.make_env(args).compile is None


def test_the_persistent_cache_folder_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert kernels.compile_cache_dir() == tmp_path / "sdgraph" / "inductor"
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "mine"))
    assert kernels.compile_cache_dir() == tmp_path / "mine"


def test_inductor_gives_eagers_numbers(tiny, tmp_path, monkeypatch):
    """A real compile (inductor, freezing) of the tiny UNet: the sampled latent equals eager's to
    float rounding, and a second run reuses the compiled code."""
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    import torch._dynamo

    model, pos, neg = tiny
    unet = replace(model, unet=__import__("copy").deepcopy(model.unet))  # its own module: a fresh compile
    eager = sample(unet, pos, neg)
    torch._dynamo.reset()
    compiled = unet.patched(compile="inductor")
    first = sample(compiled, pos, neg)
    frames = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    second = sample(compiled, pos, neg)
    assert (first - eager).abs().max() <= 1e-5 * eager.abs().max()  # another summation order, nothing more
    assert torch.equal(first, second)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == frames  # nothing recompiled
    # Dropping the model frees its UNet, compiled code and all: switching checkpoints must not pile up.
    gone = weakref.ref(unet.unet)
    del unet, compiled
    gc.collect()
    assert gone() is None
