"""LoRA and LyCORIS: ComfyUI's arithmetic (strength · alpha/rank · up@down in fp32, one rounding), the
formats people share (kohya, diffusers/PEFT, LoHa, LoKr, SDXL's te1/te2 and LDM names), stacking,
and a LoRA'd branch that never changes the model another branch uses."""

import pytest
import torch
from safetensors.torch import save_file

from nodegraph import REGISTRY, Executor, Graph
from nodes.core.env import SDEnvironment
from nodes.models import CheckpointError, load_checkpoint
from nodes.models.lora import module_index, patch_clip, patch_model, read_lora
from nodes.models.testing import tiny_sdxl_components, write_tiny_checkpoint
from tests.shared import fixture_script

REGISTRY.discover("nodes")
TARGET = "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_q"  # a Linear in the tiny UNet
TEXT_TARGET = "encoder.layers.1.self_attn.v_proj"


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("lora")
    write_tiny_checkpoint(root / "models" / "checkpoints" / "tiny.safetensors")
    (root / "models" / "loras").mkdir()
    return root


@pytest.fixture(scope="module")
def base(models):
    return load_checkpoint(models / "models" / "checkpoints" / "tiny.safetensors")


def lowrank(out_dim, in_dim, rank, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(rank, in_dim, generator=g) * 0.1, torch.randn(out_dim, rank, generator=g) * 0.1


def write(path, tensors):
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path))
    return path


def kohya_file(path, unet_weight, text_weight, rank=4, alpha=2.0, seed=0):
    down, up = lowrank(unet_weight.shape[0], unet_weight.shape[1], rank, seed)
    tdown, tup = lowrank(text_weight.shape[0], text_weight.shape[1], rank, seed + 1)
    unet_key = "lora_unet_" + TARGET.replace(".", "_")
    text_key = "lora_te_text_model_" + TEXT_TARGET.replace(".", "_")
    write(path, {f"{unet_key}.lora_down.weight": down.half(), f"{unet_key}.lora_up.weight": up.half(),
                 f"{unet_key}.alpha": torch.tensor(alpha), f"{text_key}.lora_down.weight": tdown,
                 f"{text_key}.lora_up.weight": tup, f"{text_key}.alpha": torch.tensor(alpha)})
    return (up.half().float() @ down.half().float()) * alpha / rank, (tup @ tdown) * alpha / rank


def test_kohya_lora_adds_strength_alpha_over_rank_up_down_and_leaves_the_base_alone(models, base):
    model, clip, _ = base
    w = model.unet.get_submodule(TARGET).weight
    tw = clip.text_encoder.get_submodule(TEXT_TARGET).weight
    before, text_before = w.clone(), tw.clone()
    delta, text_delta = kohya_file(models / "models" / "loras" / "k.safetensors", w, tw)
    lora = read_lora(models / "models" / "loras" / "k.safetensors")
    patched = patch_model(model, lora, 0.8)
    patched_clip = patch_clip(clip, lora, 0.6)
    assert torch.equal(patched.unet.get_submodule(TARGET).weight, before + 0.8 * delta)
    assert torch.equal(patched_clip.text_encoder.get_submodule(TEXT_TARGET).weight, text_before + 0.6 * text_delta)
    assert torch.equal(w, before) and torch.equal(tw, text_before)  # the base is untouched
    assert patched.unet is not model.unet and patched.base_unet is model.unet
    shared = {id(p) for p in model.unet.parameters()}
    changed = [n for n, p in patched.unet.named_parameters() if id(p) not in shared]
    assert changed == [TARGET + ".weight"]  # every other tensor is shared, not copied
    assert patched.cache_nbytes() == w.numel() * w.element_size()


def test_stacked_loras_add_in_fp32_then_round_once(models, base):
    model, _, _ = base
    half = model.unet.half()
    try:
        w = half.get_submodule(TARGET).weight
        d1, _ = kohya_file(models / "models" / "loras" / "a.safetensors", w, torch.zeros(32, 32), seed=3)
        d2, _ = kohya_file(models / "models" / "loras" / "b.safetensors", w, torch.zeros(32, 32), seed=5)
        from dataclasses import replace

        m = replace(model, unet=half)
        m = patch_model(m, read_lora(models / "models" / "loras" / "a.safetensors"), 0.5)
        m = patch_model(m, read_lora(models / "models" / "loras" / "b.safetensors"), -0.3)
        want = (w.float() + 0.5 * d1 - 0.3 * d2).half()
        assert torch.equal(m.unet.get_submodule(TARGET).weight, want)
        assert len(m.weight_patches) == 2 and m.base_unet is half
    finally:
        model.unet.float()


@pytest.mark.parametrize("down_suffix, up_suffix, spell", [
    (".lora_A.weight", ".lora_B.weight", "unet.{}"),
    (".lora.down.weight", ".lora.up.weight", "unet.{}"),
    ("_lora.down.weight", "_lora.up.weight", "unet.{}"),
])
def test_diffusers_and_peft_spellings_reach_the_same_layer(models, base, down_suffix, up_suffix, spell):
    model, _, _ = base
    w = model.unet.get_submodule(TARGET).weight
    down, up = lowrank(w.shape[0], w.shape[1], 2, 9)
    name = TARGET.replace(".to_q", ".processor.to_q") if down_suffix.startswith("_lora") else TARGET
    path = write(models / "models" / "loras" / "d.safetensors",
                 {spell.format(name) + down_suffix: down, spell.format(name) + up_suffix: up})
    patched = patch_model(model, read_lora(path), 1.0)
    assert torch.equal(patched.unet.get_submodule(TARGET).weight, w + up @ down)  # no alpha: scale 1


def test_loha_and_lokr_deltas(models, base):
    model, _, _ = base
    w = model.unet.get_submodule(TARGET).weight  # [32, 64]? whatever the tiny UNet has
    out_dim, in_dim = w.shape
    g = torch.Generator().manual_seed(1)
    r = lambda *s: torch.randn(*s, generator=g) * 0.1  # noqa: E731
    key = "lora_unet_" + TARGET.replace(".", "_")
    w1a, w1b, w2a, w2b = r(out_dim, 2), r(2, in_dim), r(out_dim, 2), r(2, in_dim)
    loha = write(models / "models" / "loras" / "loha.safetensors", {
        f"{key}.hada_w1_a": w1a, f"{key}.hada_w1_b": w1b, f"{key}.hada_w2_a": w2a, f"{key}.hada_w2_b": w2b,
        f"{key}.alpha": torch.tensor(1.0)})
    got = patch_model(model, read_lora(loha), 1.0).unet.get_submodule(TARGET).weight
    assert torch.allclose(got, w + (w1a @ w1b) * (w2a @ w2b) * 0.5, atol=1e-7)
    k1, k2 = r(4, 4), r(out_dim // 4, in_dim // 4)
    lokr = write(models / "models" / "loras" / "lokr.safetensors", {f"{key}.lokr_w1": k1, f"{key}.lokr_w2": k2})
    got = patch_model(model, read_lora(lokr), 1.0).unet.get_submodule(TARGET).weight
    assert torch.allclose(got, w + torch.kron(k1, k2), atol=1e-7)


def test_sdxl_kohya_names_te1_te2_and_ldm_unet_names_are_mapped():
    from dataclasses import replace

    from nodes.core.values import ClipModel, DiffusionModel

    unet, _, te, te2 = tiny_sdxl_components()
    index = module_index(unet, __import__("nodes.models.lora", fromlist=["x"]).ldm_module_names(unet))
    ldm = "input_blocks_3_1_transformer_blocks_0_attn2_to_q"  # kohya SDXL spelling (1 layer per block here)
    assert index[ldm] == "down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_q"
    model = DiffusionModel(unet=unet, alphas_cumprod=torch.ones(1000))
    clip = ClipModel(tokenizer=None, text_encoder=te, second=ClipModel(tokenizer=None, text_encoder=te2))
    tensors = {}
    for prefix, module in (("lora_unet_" + ldm, unet.get_submodule(index[ldm])),
                           ("lora_te1_text_model_encoder_layers_0_mlp_fc1", te.get_submodule("encoder.layers.0.mlp.fc1")),
                           ("lora_te2_text_model_encoder_layers_2_mlp_fc2", te2.get_submodule("text_model.encoder.layers.2.mlp.fc2")
                            if hasattr(te2, "text_model") else te2.get_submodule("encoder.layers.2.mlp.fc2"))):
        down, up = lowrank(module.weight.shape[0], module.weight.shape[1], 2, len(tensors))
        tensors |= {f"{prefix}.lora_down.weight": down, f"{prefix}.lora_up.weight": up}
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        lora = read_lora(write(f"{folder}/xl.safetensors", tensors))
    patched, patched_clip = patch_model(model, lora, 1.0), patch_clip(clip, lora, 1.0)
    assert patched.unet is not unet and patched_clip.text_encoder is not te
    assert patched_clip.second.text_encoder is not te2 and patched_clip.second.base_text_encoder is te2
    assert replace(patched_clip, second=None).second is None


def test_a_lora_for_another_model_is_a_clear_error(models, base):
    model, _, _ = base
    path = write(models / "models" / "loras" / "other.safetensors",
                 {"lora_unet_nothing_like_this.lora_down.weight": torch.zeros(2, 8),
                  "lora_unet_nothing_like_this.lora_up.weight": torch.zeros(8, 2)})
    with pytest.raises(CheckpointError, match="none of its 1 UNet layers is in this model"):
        patch_model(model, read_lora(path), 1.0)
    empty = write(models / "models" / "loras" / "empty.safetensors", {"foo": torch.zeros(2)})
    with pytest.raises(CheckpointError, match="holds no LoRA or LyCORIS weights"):
        read_lora(empty)


def test_a_lora_on_one_branch_leaves_the_other_branch_bit_identical(models, base):
    model, clip, _ = base
    kohya_file(models / "models" / "loras" / "branch.safetensors", model.unet.get_submodule(TARGET).weight,
               clip.text_encoder.get_submodule(TEXT_TARGET).weight)

    def graph(with_lora_branch: bool) -> Graph:
        g = Graph(REGISTRY)
        g.add_node("CheckpointLoaderSimple", "1", {"ckpt_name": "tiny.safetensors"})
        g.add_node("EmptyLatentImage", "4", {"width": 64, "height": 64})
        branches = [("1", "plain")] + ([("10", "lora")] if with_lora_branch else [])
        if with_lora_branch:
            g.add_node("LoraLoader", "10", {"lora_name": "branch.safetensors", "strength_model": 1.0,
                                            "strength_clip": 1.0})
            g.connect("1", 0, "10", "model")
            g.connect("1", 1, "10", "clip")
        for src, name in branches:
            p, n, s, d, o = (f"{name}_{k}" for k in "pnsdo")
            g.add_node("CLIPTextEncode", p, {"text": "a red circle"})
            g.add_node("CLIPTextEncode", n, {"text": ""})
            g.add_node("KSampler", s, {"seed": 3, "steps": 3})
            g.add_node("VAEDecode", d)
            g.add_node("PreviewImage", o)
            for a, slot, b, inp in [(src, 1, p, "clip"), (src, 1, n, "clip"), (src, 0, s, "model"), (p, 0, s, "positive"),
                                    (n, 0, s, "negative"), ("4", 0, s, "latent_image"), (s, 0, d, "samples"),
                                    ("1", 2, d, "vae"), (d, 0, o, "images")]:
                g.connect(a, slot, b, inp)
        return g

    env = SDEnvironment(models_dir=models / "models", device="cpu", dtype="fp32")
    alone = Executor(REGISTRY, env=env).run(graph(False))
    both = Executor(REGISTRY, env=env).run(graph(True))
    assert alone.ok and both.ok, (alone.error, both.error)
    assert torch.equal(alone.outputs["plain_d"][0], both.outputs["plain_d"][0])
    assert not torch.equal(both.outputs["plain_d"][0], both.outputs["lora_d"][0])


# -- ComfyUI's own numbers (../shared/fixtures/comfy_ref_nodes, case lora_kohya) --------------------
@pytest.mark.slow
def test_kohya_lora_on_clip_reproduces_comfyuis_conditioning(shared_fixtures):
    """The random SD 1.5 checkpoint's CLIP (built from the manifest up to its last text tensor: CLIP
    comes first, so these are its exact weights) in fp16 as ComfyUI holds it, the kohya LoRA at
    strength_clip 0.6 added in fp32 and rounded to fp16 once, then encoded: ComfyUI's cond tensors."""
    import numpy as np

    from nodes.core.values import ClipModel
    from nodes.models import configs
    from nodes.models.build import empty_text_encoder, fill
    from nodes.models.convert import CLIP_PREFIX, hf_clip_to_module_names
    from nodes.models.loader import _hf_clip
    from nodes.text import encode_text

    ref = shared_fixtures / "comfy_ref_nodes"
    maker = fixture_script("make_random_ckpt.py")
    entries = maker.read_manifest(str(shared_fixtures / "sd15_manifest.tsv"))
    last_clip = max(i for i, (name, _, _) in enumerate(entries) if name.startswith(CLIP_PREFIX))
    assert not any(name.startswith(("model.", "first_stage_model.")) for name, _, _ in entries[:last_clip + 1])
    state, _ = maker.build(entries[:last_clip + 1])
    aux = fixture_script("comfy_ref_nodes/make_aux_models.py")
    lora_sd = aux.build_kohya(aux.read_manifest(str(shared_fixtures / "sd15_manifest.tsv")))
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        lora = read_lora(write(f"{folder}/lora_kohya_sd15.safetensors", lora_sd))

    text, _ = _hf_clip({k: v.half() for k, v in state.items()}, CLIP_PREFIX)
    te = empty_text_encoder(configs.component_config(configs.SD15_DIR, "text_encoder"))
    te = fill(te, hf_clip_to_module_names(text, set(te.state_dict())), what="CLIP", filename="rand", device="cpu")
    plain = ClipModel(configs.clip_tokenizer(), te)
    clip = patch_clip(plain, lora, 0.6)
    import copy

    clip.text_encoder = copy.deepcopy(clip.text_encoder).float()  # fp16 weights, computed in fp32
    plain.text_encoder = copy.deepcopy(plain.text_encoder).float()
    for prompt, name in (("a watercolor painting of a lighthouse at dusk", "cond_pos"), ("blurry, lowres", "cond_neg")):
        ours = encode_text(clip, prompt)[0].cond.numpy()
        reference = np.load(ref / f"lora_kohya.{name}.npy")
        assert ours.shape == reference.shape == (1, 77, 768)
        assert np.abs(ours - reference).max() < 2e-3, (name, float(np.abs(ours - reference).max()))
        without = encode_text(plain, prompt)[0].cond.numpy()
        assert np.abs(without - reference).max() > 0.05  # the LoRA's effect is far above the tolerance
