"""SDXL base and refiner: detection and key mapping on the real layout (meta tensors), two text
towers, size conditioning as ComfyUI and diffusers build it, and parity with diffusers' SDXL
pipeline on a tiny random model of SDXL's shape."""

import json

import diffusers
import numpy as np
import pytest
import torch

from nodegraph import REGISTRY, Executor, Graph
from nodes.core.env import SDEnvironment
from nodes.models import CheckpointError, load_checkpoint
from nodes.models.convert import UNET_PREFIX, VAE_PREFIX
from nodes.models.detect import detect_checkpoint
from nodes.models.loader import build_modules, configs_for, convert_state_dict
from nodes.models.testing import manifest_state_dict, write_tiny_sdxl_diffusers_folder
from tests.shared import FIXTURES

REGISTRY.discover("nodes")
PROMPT = "a red circle at the top left"


@pytest.fixture(scope="module")
def sdxl_manifest():
    return manifest_state_dict(FIXTURES / "sdxl_manifest.tsv")


def _shapes(sd):
    return {k: tuple(v.shape) for k, v in sd.items()}


def test_every_sdxl_manifest_tensor_is_mapped_and_fills_every_parameter(sdxl_manifest):
    sd = sdxl_manifest
    info = detect_checkpoint(_shapes(sd), {}, lambda name: None, "sd_xl_base_1.0.safetensors")
    assert (info.family, info.prediction_type, info.context_dim) == ("sdxl", "epsilon", 2048)
    cfg = configs_for(info, _shapes(sd))
    conv = convert_state_dict(sd, info, cfg)
    assert conv.unused == []
    assert set(conv.ignored) == {"conditioner.embedders.0.transformer.text_model.embeddings.position_ids",
                                 "conditioner.embedders.1.model.logit_scale"}
    unet, vae, towers = build_modules(conv, cfg, "xl", "meta")
    n_params = sum(p.numel() for m in (unet, vae, *towers) for p in m.parameters())
    n_file = sum(v.numel() for k, v in sd.items() if k not in conv.ignored)
    assert n_params == n_file  # every file tensor lands in a parameter, and every parameter is filled
    assert sum(p.numel() for p in unet.parameters()) == sum(v.numel() for k, v in sd.items()
                                                            if k.startswith(UNET_PREFIX))
    assert towers[1].text_projection.weight.shape == (1280, 1280)
    assert (cfg.clip_layer, cfg.final_layer_norm, cfg.latent_scale_factor) == (-2, False, 0.13025)
    assert cfg.vae_upcast and not any(k.startswith(VAE_PREFIX) for k in conv.vae)


def test_sdxl_files_are_told_apart_from_the_refiner_and_v_prediction_variants(sdxl_manifest):
    shapes = _shapes(sdxl_manifest)
    assert detect_checkpoint({**shapes, "v_pred": ()}, {}, None, "x.safetensors").prediction_type == "v_prediction"
    refiner = {k.replace("conditioner.embedders.1.model.", "conditioner.embedders.0.model."): v
               for k, v in shapes.items() if not k.startswith("conditioner.embedders.0.")}
    refiner["model.diffusion_model.label_emb.0.0.weight"] = (1536, 2560)
    info = detect_checkpoint(refiner, {}, None, "sd_xl_refiner_1.0.safetensors")
    assert (info.family, info.description) == ("sdxl_refiner", "SDXL refiner")
    cfg = configs_for(info, refiner)
    assert cfg.unet["cross_attention_dim"] == 1280 and cfg.unet["projection_class_embeddings_input_dim"] == 2560
    assert cfg.text_encoder_2 is None and cfg.clip_pad_id == 0
    odd = {k: v for k, v in shapes.items() if not k.startswith("conditioner.embedders.0.")}  # bigG, no CLIP-L
    with pytest.raises(CheckpointError, match="match neither SDXL base"):
        detect_checkpoint(odd, {}, None, "odd.safetensors")


@pytest.fixture(scope="module")
def tiny_xl(tmp_path_factory):
    root = tmp_path_factory.mktemp("sdxl")
    write_tiny_sdxl_diffusers_folder(root / "models" / "checkpoints" / "tiny-xl")
    return root


def sampler_graph(sampler: str = "DiffusersSampler", encoder: str = "CLIPTextEncode", **encoder_values) -> Graph:
    g = Graph(REGISTRY)
    g.add_node("CheckpointLoaderSimple", "1", {"ckpt_name": "tiny-xl"})
    text = {"text": PROMPT} if encoder == "CLIPTextEncode" else {"text_g": PROMPT, "text_l": PROMPT}
    g.add_node(encoder, "2", {**text, **encoder_values})
    g.add_node("CLIPTextEncode", "3", {"text": ""})
    g.add_node("EmptyLatentImage", "4", {"width": 64, "height": 64})
    values = {"seed": 7, "steps": 4, "cfg": 6.0}
    if sampler == "DiffusersSampler":
        values["scheduler_class"] = "EulerDiscreteScheduler"
    g.add_node(sampler, "5", values)
    g.add_node("VAEDecode", "6")
    g.add_node("PreviewImage", "7")
    for src, slot, dst, name in [("1", 1, "2", "clip"), ("1", 1, "3", "clip"), ("1", 0, "5", "model"),
                                 ("2", 0, "5", "positive"), ("3", 0, "5", "negative"), ("4", 0, "5", "latent_image"),
                                 ("5", 0, "6", "samples"), ("1", 2, "6", "vae"), ("6", 0, "7", "images")]:
        g.connect(src, slot, dst, name)
    return g


def run_graph(root, g):
    result = Executor(REGISTRY, env=SDEnvironment(models_dir=root / "models", output_dir=root / "out",
                                                  device="cpu", dtype="fp32")).run(g)
    assert result.ok, result.error or result.problems
    return result


def test_diffusers_sampler_on_sdxl_matches_the_sdxl_pipeline(tiny_xl):
    """Loading, both text towers (penultimate layer, no final norm, bigG's projected pooled output),
    size conditioning from the latent, SDXL's latent scale and the VAE: the same image as diffusers."""
    ours = run_graph(tiny_xl, sampler_graph()).outputs["6"][0]
    folder = tiny_xl / "models" / "checkpoints" / "tiny-xl"
    pipe = diffusers.StableDiffusionXLPipeline.from_pretrained(folder, local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    from nodes.sampling.diffusers_loop import make_scheduler

    ours_scheduler = make_scheduler(load_checkpoint(folder)[0], "EulerDiscreteScheduler")
    pipe.scheduler = diffusers.EulerDiscreteScheduler.from_config(ours_scheduler.config)
    theirs = pipe(PROMPT, negative_prompt="", num_inference_steps=4, guidance_scale=6.0, height=64, width=64,
                  generator=torch.Generator().manual_seed(7), output_type="np").images
    assert ours.shape == theirs.shape == (1, 64, 64, 3)
    assert np.abs(ours.numpy() - theirs).max() <= 1e-4


def test_ksampler_runs_sdxl_and_the_size_conditioning_reaches_the_unet(tiny_xl):
    plain = run_graph(tiny_xl, sampler_graph("KSampler")).outputs["5"][0].samples
    same = run_graph(tiny_xl, sampler_graph("KSampler", "CLIPTextEncodeSDXL", width=64, height=64,
                                            target_width=64, target_height=64)).outputs["5"][0].samples
    other = run_graph(tiny_xl, sampler_graph("KSampler", "CLIPTextEncodeSDXL")).outputs["5"][0].samples
    # CLIPTextEncode stores no size: the latent × 8 (64) is used, as CLIPTextEncodeSDXL at 64 says.
    assert torch.allclose(plain, same, atol=1e-5)
    assert not torch.allclose(plain, other, atol=1e-3)  # 1024 px told to the model: another image
    assert torch.isfinite(plain).all()


def test_sdxl_text_towers_join_their_hidden_states_and_pool_from_big_g(tiny_xl):
    result = run_graph(tiny_xl, sampler_graph("KSampler"))
    [entry] = result.outputs["2"][0]
    assert entry.cond.shape == (1, 77, 64) and entry.pooled.shape == (1, 32)
    model, clip, vae = result.outputs["1"]
    assert clip.layer == -2 and clip.second.layer == -2 and clip.second.pad_id == 0
    assert clip.with_layer(-1).second.layer == -1  # CLIPSetLastLayer sets both towers
    assert vae.latent_format.scale_factor == 0.13025


def test_sdxl_vae_is_upcast_when_the_model_loads_in_fp16(tiny_xl):
    model, clip, vae = load_checkpoint(tiny_xl / "models" / "checkpoints" / "tiny-xl", dtype=torch.float16)
    assert next(model.unet.parameters()).dtype == torch.float16
    assert vae.dtype == torch.float32 and next(vae.vae.parameters()).dtype == torch.float32


def test_model_sampling_discrete_sets_the_prediction_and_zero_terminal_snr(tiny_xl):
    from nodes.sampling.model_sampling import ModelSampling

    model = load_checkpoint(tiny_xl / "models" / "checkpoints" / "tiny-xl")[0]
    node = REGISTRY.get("ModelSamplingDiscrete")()
    (patched,) = node.run(None, model, "v_prediction", True)
    assert patched.prediction_type == "v_prediction" and model.prediction_type == "epsilon"
    sigmas = ModelSampling(patched.alphas_cumprod, patched.prediction_type).sigmas
    base = ModelSampling(model.alphas_cumprod).sigmas
    assert abs(float(sigmas[0]) / float(base[0]) - 1) < 1e-4  # the first step keeps its noise level (float32)
    assert 4500 < float(sigmas[-1]) < 4530  # the last is (almost) pure noise, ComfyUI's finite stand-in
    assert json.dumps(REGISTRY.get("ModelSamplingDiscrete").describe()["inputs"][1]["choices"]) == \
        '["eps", "v_prediction", "lcm"]'


def test_sdxl_single_file_names_convert_back_to_the_same_weights():
    """A tiny SDXL written with the original single-file names (label_emb, conditioner.embedders.0
    CLIP-L, conditioner.embedders.1 OpenCLIP bigG with fused q/k/v and a transposed projection)
    converts back to exactly the modules it came from."""
    from nodes.models.convert import (
        SDXL_CLIP_G_PREFIX,
        SDXL_CLIP_L_PREFIX,
        clip_to_ldm,
        hf_to_openclip,
        unet_to_ldm,
        vae_to_ldm,
    )
    from nodes.models.detect import CheckpointInfo
    from nodes.models.loader import build_modules
    from nodes.models.testing import tiny_sdxl_components, tiny_sdxl_configs

    unet, vae, te, te2 = tiny_sdxl_components(seed=3)
    sd = {UNET_PREFIX + k: v for k, v in unet_to_ldm(unet.state_dict(), dict(unet.config)).items()}
    sd |= {VAE_PREFIX + k: v for k, v in vae_to_ldm(vae.state_dict(), dict(vae.config)).items()}
    sd |= {SDXL_CLIP_L_PREFIX + k: v for k, v in clip_to_ldm(te.state_dict()).items()}
    sd |= {SDXL_CLIP_G_PREFIX + k: v for k, v in hf_to_openclip(te2.state_dict()).items()}
    assert "model.diffusion_model.label_emb.0.0.weight" in sd and SDXL_CLIP_G_PREFIX + "text_projection" in sd
    info = detect_checkpoint(_shapes(sd), {}, None, "tiny-xl.safetensors")
    assert info.family == "sdxl"
    cfg = tiny_sdxl_configs()
    conv = convert_state_dict(sd, CheckpointInfo("sdxl", "epsilon", "SDXL"), cfg)
    assert conv.unused == []
    got = build_modules(conv, cfg, "tiny-xl", "cpu")
    for original, loaded in zip((unet, vae, te, te2), (got[0], got[1], *got[2]), strict=True):
        want, have = original.state_dict(), loaded.state_dict()
        assert set(want) == set(have)
        assert all(torch.equal(want[k], have[k]) for k in want), type(original).__name__


def test_base_to_refiner_workflow_runs_headless_on_stand_ins_with_its_file_names(tmp_path):
    """workflows/sdxl_base_refiner.json as shipped (base steps 0–20 with leftover noise, refiner from
    20), on tiny models stored under the names it asks for, through the CLI a user runs."""
    import subprocess
    import sys
    from pathlib import Path

    from nodes.models.testing import write_tiny_sdxl_refiner_folder

    repo = Path(__file__).resolve().parent.parent
    checkpoints = tmp_path / "models" / "checkpoints"
    write_tiny_sdxl_diffusers_folder(checkpoints / "sd_xl_base_1.0.safetensors")
    write_tiny_sdxl_refiner_folder(checkpoints / "sd_xl_refiner_1.0.safetensors")
    model, clip, _ = load_checkpoint(checkpoints / "sd_xl_refiner_1.0.safetensors")
    assert clip.second is None and clip.pad_id == 0 and clip.layer == -2
    proc = subprocess.run([sys.executable, str(repo / "main.py"), "run", str(repo / "workflows" / "sdxl_base_refiner.json"),
                           "--models-dir", str(tmp_path / "models"), "--output-dir", str(tmp_path / "out"),
                           "--set", "5.width=64", "--set", "5.height=64", "--set", "10.steps=5",
                           "--set", "10.end_at_step=4", "--set", "11.steps=5", "--set", "11.start_at_step=4"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "KSamplerAdvanced (node 10)" in proc.stderr and "KSamplerAdvanced (node 11)" in proc.stderr
    assert (tmp_path / "out" / "sdxl_refiner_00001_.png").is_file()


def test_lcm_sampling_uses_the_distilled_50_step_table_and_the_consistency_output():
    from nodes.models.configs import alphas_cumprod
    from nodes.sampling.model_sampling import ModelSampling

    full, lcm = ModelSampling(alphas_cumprod()), ModelSampling(alphas_cumprod(), "lcm")
    assert len(lcm.sigmas) == 50 and torch.equal(lcm.sigmas[-1], full.sigmas[-1])
    assert torch.equal(lcm.sigmas[0], full.sigmas[19])  # every 20th from the last: 999, 979, …, 19
    assert lcm.timestep(lcm.sigmas[:3]).tolist() == [19, 39, 59]
    assert torch.allclose(lcm.sigma(torch.tensor([19.0, 999.0])), lcm.sigmas[[0, -1]])
    x, eps, sigma = torch.ones(1, 4, 2, 2), torch.full((1, 4, 2, 2), 0.5), lcm.sigmas[10:11]
    t = 10 * 20 + 19
    c_skip, c_out = 0.25 / ((t * 10.0) ** 2 + 0.25), (t * 10.0) / ((t * 10.0) ** 2 + 0.25) ** 0.5
    want = c_out * (x - eps * sigma) + c_skip * x
    assert torch.allclose(lcm.calculate_denoised(sigma, eps, x), want)


def test_the_refiner_tells_a_plain_negative_prompt_aesthetic_score_2_5_as_comfyui_does(tmp_path):
    from nodes.core.values import ConditioningEntry
    from nodes.models.testing import write_tiny_sdxl_refiner_folder
    from nodes.sampling.guidance import CFGDenoiser
    from nodes.sampling.ksampler import UNetCaller, model_sampling_for

    model = load_checkpoint(write_tiny_sdxl_refiner_folder(tmp_path / "refiner"))[0]
    pooled = torch.zeros(1, 32)
    plain = ConditioningEntry(torch.zeros(1, 77, 32), pooled)
    scored = ConditioningEntry(torch.zeros(1, 77, 32), pooled, extras={"aesthetic_score": 4.0})
    seen = []
    caller = UNetCaller(model)
    real = caller.added_conditioning

    def spy(entries, *args):
        out = real(entries, *args)
        seen.append(out["time_ids"][:, -1].tolist())
        return out

    caller.added_conditioning = spy
    denoiser = CFGDenoiser(caller, model_sampling_for(model), [plain], [plain], cfg=5.0)
    denoiser(torch.zeros(1, 4, 8, 8), torch.tensor(1.0))
    assert sorted(v for batch in seen for v in batch) == [2.5, 6.0]  # positive 6, negative 2.5
    seen.clear()
    CFGDenoiser(caller, model_sampling_for(model), [plain], [scored], cfg=5.0)(torch.zeros(1, 4, 8, 8), torch.tensor(1.0))
    assert sorted(v for batch in seen for v in batch) == [4.0, 6.0]  # a score the conditioning sets wins
