"""CheckpointSave on SDXL: the original single-file layout (sd_xl_base_1.0's exact names and shapes),
read back by the loader's own conversion into the same weights."""

import pytest
import torch
from safetensors import safe_open

from nodegraph import REGISTRY, Executor, Graph
from nodes.core.env import SDEnvironment
from nodes.core.values import ClipModel, DiffusionModel, VaeModel
from nodes.model_merging import sdxl_checkpoint_tensors
from nodes.models import load_checkpoint
from nodes.models.detect import CheckpointInfo, detect_checkpoint, ignored_on_purpose
from nodes.models.loader import build_modules, configs_for, convert_state_dict
from nodes.models.testing import manifest_state_dict, tiny_sdxl_configs, write_tiny_sdxl_diffusers_folder
from tests.shared import FIXTURES

REGISTRY.discover("nodes")


def _shapes(sd):
    return {k: tuple(v.shape) for k, v in sd.items()}


def test_sdxl_base_is_saved_with_exactly_the_original_single_file_names_and_shapes():
    """Full-size SDXL on the meta device (no memory): the saved names are the real file's, less the
    tensors ComfyUI's loader skips anyway (CLIP-L position_ids, bigG logit_scale)."""
    manifest = manifest_state_dict(FIXTURES / "sdxl_manifest.tsv")
    info = detect_checkpoint(_shapes(manifest), {}, lambda name: None, "sd_xl_base_1.0.safetensors")
    cfg = configs_for(info, _shapes(manifest))
    conv = convert_state_dict(manifest, info, cfg)
    unet, vae, towers = build_modules(conv, cfg, "xl", "meta")
    clip = ClipModel(None, towers[0], second=ClipModel(None, towers[1]))
    saved = sdxl_checkpoint_tensors(DiffusionModel(unet, torch.zeros(1000)), clip, VaeModel(vae))
    want = {k: v for k, v in _shapes(manifest).items() if not ignored_on_purpose(k)}
    assert _shapes(saved) == want


@pytest.fixture(scope="module")
def tiny_xl(tmp_path_factory):
    folder = write_tiny_sdxl_diffusers_folder(tmp_path_factory.mktemp("xl") / "models" / "checkpoints" / "tiny-xl", seed=5)
    return folder.parent.parent


def test_checkpoint_save_writes_sdxl_that_converts_back_to_the_same_weights(tiny_xl, tmp_path):
    g = Graph(REGISTRY)
    g.add_node("CheckpointLoaderSimple", "1", {"ckpt_name": "tiny-xl"})
    g.add_node("CheckpointSave", "2", {"filename_prefix": "checkpoints/xl"})
    for slot, name in ((0, "model"), (1, "clip"), (2, "vae")):
        g.connect("1", slot, "2", name)
    result = Executor(REGISTRY, env=SDEnvironment(models_dir=tiny_xl, output_dir=tmp_path)).run(g)
    assert result.ok, result.error or result.problems
    [path] = result.ui["2"]["files"]
    assert path.endswith("checkpoints/xl_00001_.safetensors")
    with safe_open(path, "pt") as f:
        sd = {k: f.get_tensor(k) for k in f.keys()}
        assert f.metadata()["modelspec.architecture"] == "stable-diffusion-xl-v1-base"
    assert detect_checkpoint(_shapes(sd), {}, None, "xl.safetensors").family == "sdxl"
    assert "conditioner.embedders.1.model.text_projection" in sd and "model.diffusion_model.label_emb.0.0.weight" in sd
    # The loader reads real SDXL files with the shipped full-size configs; a tiny one needs its own.
    cfg = tiny_sdxl_configs()
    conv = convert_state_dict(sd, CheckpointInfo("sdxl", "epsilon", "SDXL"), cfg)
    assert conv.unused == []
    unet, vae, (te, te2) = build_modules(conv, cfg, "xl", "cpu")
    model, clip, ae = load_checkpoint(tiny_xl / "checkpoints" / "tiny-xl")
    for original, loaded in ((model.unet, unet), (ae.vae, vae), (clip.text_encoder, te), (clip.second.text_encoder, te2)):
        want, have = original.state_dict(), loaded.state_dict()
        assert set(want) == set(have)
        assert all(torch.equal(want[k], have[k]) for k in want), type(original).__name__


def test_a_v_prediction_sdxl_is_saved_with_comfyuis_marker(tiny_xl):
    from dataclasses import replace

    model, clip, vae = load_checkpoint(tiny_xl / "checkpoints" / "tiny-xl")
    for prediction, family in (("epsilon", "epsilon"), ("v_prediction", "v_prediction")):
        sd = sdxl_checkpoint_tensors(replace(model, prediction_type=prediction), clip, vae)
        assert detect_checkpoint(_shapes(sd), {}, None, "xl.safetensors").prediction_type == family
