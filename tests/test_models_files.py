"""Tiny-model round trips through every file form, and the one-line errors for bad files."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from nodes.models import CheckpointError, load_checkpoint, load_vae, save_checkpoint
from nodes.models.convert import CLIP_PREFIX, UNET_PREFIX, VAE_PREFIX, strip_prefix
from nodes.models.testing import tiny_components, write_tiny_checkpoint, write_tiny_diffusers_folder

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny():
    return tiny_components(seed=0)


@pytest.fixture(scope="module")
def tiny_file(tiny, tmp_path_factory):
    return write_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.safetensors", components=tiny)


def _same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k].to(sa[k].dtype)), k


def _unet_out(unet):
    g = torch.Generator().manual_seed(1)
    x, ctx = torch.randn(2, 4, 8, 8, generator=g), torch.randn(2, 77, 32, generator=g)
    with torch.no_grad():
        return unet(x, torch.tensor([10, 500]), ctx).sample


def test_importing_the_package_does_not_import_torch():
    code = "import sys, nodes.models; from nodes.models import CheckpointError; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)


def test_save_checkpoint_writes_ldm_names_and_the_sdgraph_config(tiny_file):
    with safe_open(str(tiny_file), "pt") as f:
        names, meta = list(f.keys()), f.metadata()
    assert {n.split(".")[0] for n in names} == {"model", "first_stage_model", "cond_stage_model"}
    assert UNET_PREFIX + "input_blocks.0.0.weight" in names and UNET_PREFIX + "out.2.weight" in names
    assert VAE_PREFIX + "encoder.mid.attn_1.q.weight" in names
    assert CLIP_PREFIX + "text_model.final_layer_norm.weight" in names
    import json

    config = json.loads(meta["sdgraph.config"])
    assert config["prediction_type"] == "epsilon" and config["clip_pad_id"] == 49407
    assert config["latent_scale_factor"] == 0.18215 and config["unet"]["cross_attention_dim"] == 32
    assert not [p for p in tiny_file.parent.iterdir() if p.name.endswith(".tmp")]


def test_single_file_round_trip_gives_identical_weights_and_unet_output(tiny, tiny_file):
    unet, vae, te = tiny
    model, clip, vmodel = load_checkpoint(tiny_file)
    _same_weights(unet, model.unet)
    _same_weights(vae, vmodel.vae)
    _same_weights(te, clip.text_encoder)
    assert torch.equal(_unet_out(unet), _unet_out(model.unet))
    assert model.prediction_type == "epsilon" and model.alphas_cumprod.dtype == torch.float64
    assert model.alphas_cumprod.shape == (1000,) and abs(float(model.alphas_cumprod[-1]) - 0.0047) < 1e-3
    assert model.latent_format.scale_factor == 0.18215 and model.latent_format.downscale == 8
    assert (
        clip.pad_id == 49407
        and clip.layer == -1
        and clip.tokenizer("a cat").input_ids == [49406, 320, 2368, 49407]
    )
    assert not any(p.device.type == "meta" for p in clip.text_encoder.buffers())


def test_dtype_and_prediction_type_options(tiny, tmp_path):
    path = write_tiny_checkpoint(
        tmp_path / "v.safetensors", components=tiny, prediction_type="v_prediction", clip_pad_id=0
    )
    model, clip, vae = load_checkpoint(path, dtype=torch.float16)
    assert model.prediction_type == "v_prediction" and clip.pad_id == 0
    assert {p.dtype for m in (model.unet, vae.vae, clip.text_encoder) for p in m.parameters()} == {
        torch.float16
    }
    half = write_tiny_checkpoint(tmp_path / "h.safetensors", components=tiny, dtype=torch.float16)
    assert half.stat().st_size < path.stat().st_size * 0.6


def test_diffusers_folder_loads_the_same_model(tiny, tmp_path):
    folder = write_tiny_diffusers_folder(
        tmp_path / "tiny", components=tiny, prediction_type="v_prediction", clip_pad_id=0
    )
    model, clip, vae = load_checkpoint(folder)
    _same_weights(tiny[0], model.unet)
    _same_weights(tiny[1], vae.vae)
    _same_weights(tiny[2], clip.text_encoder)
    assert model.prediction_type == "v_prediction" and clip.pad_id == 0
    assert load_vae(folder).latent_format.scale_factor == 0.18215


def test_weights_only_ckpt_loads(tiny_file, tmp_path):
    with safe_open(str(tiny_file), "pt") as f:
        state = {k: f.get_tensor(k) for k in f.keys()}
        meta = f.metadata()
    ckpt = tmp_path / "tiny.ckpt"
    torch.save({"state_dict": state, "sdgraph.config": meta["sdgraph.config"], "global_step": 1}, ckpt)
    model, _, _ = load_checkpoint(ckpt)
    ref, _, _ = load_checkpoint(tiny_file)
    _same_weights(ref.unet, model.unet)


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_pickle_with_code_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.ckpt"
    with open(path, "wb") as f:
        pickle.dump({"state_dict": {"x": _Evil(marker)}}, f, protocol=2)
    with pytest.raises(
        CheckpointError, match=r'"evil.ckpt" contains pickled Python code, which sdgraph never runs'
    ):
        load_checkpoint(path)
    assert not marker.exists()


def test_missing_corrupt_and_truncated_files_give_one_line_errors(tiny_file, tmp_path):
    with pytest.raises(CheckpointError, match=r"nope.safetensors\" not found"):
        load_checkpoint(tmp_path / "nope.safetensors")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(os.urandom(256))
    with pytest.raises(CheckpointError, match=r'"junk.safetensors" is not a readable .safetensors file') as e:
        load_checkpoint(junk)
    assert "\n" not in str(e.value)
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(tiny_file.read_bytes()[: tiny_file.stat().st_size // 2])
    with pytest.raises(CheckpointError, match=r'"cut.safetensors"'):
        load_checkpoint(cut)
    with pytest.raises(CheckpointError, match=r'unsupported file type ".txt"'):
        (tmp_path / "x.txt").write_text("hi")
        load_checkpoint(tmp_path / "x.txt")
    with pytest.raises(CheckpointError, match="without model_index.json"):
        load_checkpoint(tmp_path)


def test_vae_or_lora_given_to_the_checkpoint_loader_is_named(tiny_file, tmp_path):
    with safe_open(str(tiny_file), "pt") as f:
        vae_sd = {k: f.get_tensor(k) for k in f.keys() if k.startswith(VAE_PREFIX)}
    vae_file = tmp_path / "vae.safetensors"
    save_file(strip_prefix(vae_sd, VAE_PREFIX), str(vae_file))
    with pytest.raises(
        CheckpointError,
        match=r'"vae.safetensors" is not a Stable Diffusion checkpoint: it looks like a standalone VAE',
    ):
        load_checkpoint(vae_file)
    lora = tmp_path / "lora.safetensors"
    save_file({"lora_unet_mid_block_attentions_0_proj_in.lora_down.weight": torch.zeros(4, 4)}, str(lora))
    with pytest.raises(CheckpointError, match="looks like a LoRA"):
        load_checkpoint(lora)
    with pytest.raises(CheckpointError, match=r'"lora.safetensors" is not a VAE: it looks like a LoRA'):
        load_vae(lora)


def test_load_vae_accepts_sdgraph_files_and_plain_ldm_and_diffusers_names(tiny, tiny_file, tmp_path):
    vae = tiny[1]
    _same_weights(vae, load_vae(tiny_file).vae)
    # plain diffusers names with the tiny config are not SD's VAE: a clear shape error, not a traceback
    plain = tmp_path / "diffusers_names.safetensors"
    save_file({k: v.contiguous() for k, v in vae.state_dict().items()}, str(plain))
    with pytest.raises(CheckpointError, match=r'"diffusers_names.safetensors": the VAE weights do not fit'):
        load_vae(plain)


def test_load_vae_reads_an_sd_shaped_ldm_vae(tmp_path):
    from nodes.models import configs
    from nodes.models.build import empty_vae
    from nodes.models.convert import vae_to_ldm

    config = configs.component_config(configs.SD15_DIR, "vae")
    meta = empty_vae(config)
    torch.manual_seed(0)
    sd = {k: torch.randn(v.shape, dtype=torch.float16) * 0.02 for k, v in meta.state_dict().items()}
    ldm = {k: v.contiguous() for k, v in vae_to_ldm(sd, config).items()}
    for prefix in ("", VAE_PREFIX):
        path = tmp_path / f"sd_vae{len(prefix)}.safetensors"
        save_file({prefix + k: v for k, v in ldm.items()}, str(path))
        loaded = load_vae(path, dtype=torch.float16)
        assert torch.equal(
            loaded.vae.state_dict()["decoder.mid_block.attentions.0.to_q.weight"],
            sd["decoder.mid_block.attentions.0.to_q.weight"],
        )
        assert loaded.latent_format.scale_factor == 0.18215


def test_save_checkpoint_falls_back_to_diffusers_names_when_ldm_cannot_express_the_unet(tmp_path):
    unet, vae, te = tiny_components(seed=3, unet_overrides={"layers_per_block": [1, 2]})
    path = save_checkpoint(tmp_path / "odd.safetensors", unet, vae, te)
    with safe_open(str(path), "pt") as f:
        assert any(k.startswith("unet.down_blocks.") for k in f.keys())
    model, _, _ = load_checkpoint(path)
    _same_weights(unet, model.unet)
