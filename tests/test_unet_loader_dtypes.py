"""UNETLoader's weight_dtype: fp8 weights stored as fp8 and cast per layer to the run's precision
(ComfyUI's manual cast), with LoRA and sampling working on top."""

import copy

import pytest
import torch

import nodes.models.parts
from nodegraph import REGISTRY, Executor, Graph
from nodes.core.env import SDEnvironment
from nodes.models import load_checkpoint
from nodes.models.lora import Delta, LoraFile, patch_model
from nodes.models.testing import write_tiny_checkpoint
from nodes.models.weight_storage import STORAGE_DTYPES, store_weights_as

REGISTRY.discover("nodes")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return write_tiny_checkpoint(tmp_path_factory.mktemp("fp8") / "tiny.safetensors", seed=4)


def _denoise(unet, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 4, 8, 8, generator=g)
    context = torch.randn(2, 77, unet.config.cross_attention_dim, generator=g)
    with torch.no_grad():
        return unet(x, torch.tensor([500, 20]), encoder_hidden_states=context).sample


def _linear_and_conv_weights(unet):
    return {n: m.weight for n, m in unet.named_modules() if isinstance(m, torch.nn.Linear | torch.nn.Conv2d)}


@pytest.mark.parametrize("choice", ["fp8_e4m3fn", "fp8_e5m2"])
def test_fp8_weights_are_stored_in_fp8_and_computed_at_the_run_precision(tiny, choice):
    unet = load_checkpoint(tiny)[0].unet
    full = _denoise(unet)
    # the reference: the same weights rounded to fp8 and back, in an ordinary fp32 UNet
    rounded = copy.deepcopy(unet)
    for w in _linear_and_conv_weights(rounded).values():
        w.data = w.data.to(STORAGE_DTYPES[choice]).float()
    before = sum(w.nbytes for w in _linear_and_conv_weights(unet).values())
    store_weights_as(unet, STORAGE_DTYPES[choice])
    weights = _linear_and_conv_weights(unet)
    assert {w.dtype for w in weights.values()} == {STORAGE_DTYPES[choice]}
    assert sum(w.nbytes for w in weights.values()) * 4 == before  # a quarter of fp32
    assert unet.conv_norm_out.weight.dtype == torch.float32  # norms stay at the run precision
    out = _denoise(unet)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, _denoise(rounded), rtol=1e-5, atol=1e-6)
    # the rounding shows, a little (e5m2 has 2 mantissa bits, e4m3 3)
    err = ((out - full).norm() / full.norm()).item()
    assert 0 < err < 0.25


def test_a_lora_applies_to_fp8_weights_and_they_stay_fp8(tiny):
    model = load_checkpoint(tiny)[0]
    store_weights_as(model.unet, torch.float8_e4m3fn)
    name = "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k"
    layer = model.unet.get_submodule(name)
    g = torch.Generator().manual_seed(1)
    delta = Delta("lora", {"down": torch.randn(2, layer.in_features, generator=g),
                           "up": torch.randn(layer.out_features, 2, generator=g)}, alpha=2.0)
    lora = LoraFile("x.safetensors", {"unet": {name.replace(".", "_"): delta}})
    patched = patch_model(model, lora, 0.5)
    new = patched.unet.get_submodule(name).weight
    assert new.dtype == torch.float8_e4m3fn and layer.weight.dtype == torch.float8_e4m3fn
    want = (layer.weight.float() + 0.5 * delta.compute(layer.weight.shape)).to(torch.float8_e4m3fn)
    assert torch.equal(new.float(), want.float())
    assert not torch.equal(_denoise(patched.unet), _denoise(model.unet))


def test_unet_loader_fp8_choices_sample_and_fast_equals_plain(tiny, tmp_path, monkeypatch):
    """The node through the executor: CheckpointLoaderSimple's CLIP, UNETLoader's MODEL, KSampler."""
    models = tmp_path / "models"
    (models / "diffusion_models").mkdir(parents=True)
    (models / "checkpoints").mkdir()
    (models / "diffusion_models" / "unet.safetensors").write_bytes(tiny.read_bytes())
    (models / "checkpoints" / "tiny.safetensors").write_bytes(tiny.read_bytes())
    # load_unet reads full-size SD layouts only; the tiny checkpoint's UNet stands in for one.
    monkeypatch.setattr(nodes.models.parts, "load_unet",
                        lambda path, device, dtype: load_checkpoint(path, device=device, dtype=dtype)[0])
    g = Graph(REGISTRY)
    g.add_node("UNETLoader", "1", {"unet_name": "unet.safetensors", "weight_dtype": "default"})
    g.add_node("CheckpointLoaderSimple", "2", {"ckpt_name": "tiny.safetensors"})
    g.add_node("CLIPTextEncode", "3", {"text": "a red circle"})
    g.add_node("CLIPTextEncode", "4", {"text": ""})
    g.add_node("EmptyLatentImage", "5", {"width": 64, "height": 64, "batch_size": 1})
    g.add_node("KSampler", "6", {"seed": 3, "steps": 3, "cfg": 4.0, "sampler_name": "euler", "scheduler": "normal",
                                 "denoise": 1.0})
    for src, slot, dst, name in [("2", 1, "3", "clip"), ("2", 1, "4", "clip"), ("1", 0, "6", "model"),
                                 ("3", 0, "6", "positive"), ("4", 0, "6", "negative"), ("5", 0, "6", "latent_image")]:
        g.connect(src, slot, dst, name)
    latents, dtypes = {}, {}
    for choice in ("default", "fp8_e4m3fn", "fp8_e4m3fn_fast", "fp8_e5m2"):
        g.set_value("1", "weight_dtype", choice)
        result = Executor(REGISTRY, env=SDEnvironment(models_dir=models, output_dir=tmp_path)).run(
            g, outputs=["1", "6"], check=False)
        assert result.ok, result.error
        dtypes[choice] = result.outputs["1"][0].unet.conv_in.weight.dtype
        latents[choice] = result.outputs["6"][0].samples
    assert dtypes == {"default": torch.float32, "fp8_e4m3fn": torch.float8_e4m3fn,
                      "fp8_e4m3fn_fast": torch.float8_e4m3fn, "fp8_e5m2": torch.float8_e5m2}
    assert all(torch.isfinite(x).all() for x in latents.values())
    assert torch.equal(latents["fp8_e4m3fn"], latents["fp8_e4m3fn_fast"])
    assert not torch.equal(latents["default"], latents["fp8_e4m3fn"])
    assert not torch.equal(latents["fp8_e4m3fn"], latents["fp8_e5m2"])
