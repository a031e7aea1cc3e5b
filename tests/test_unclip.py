"""SD 2.1 unCLIP: a tiny checkpoint in the real layout (LDM UNet with label_emb, OpenCLIP text tower,
OpenCLIP image tower under embedder.model.visual) loads through unCLIPCheckpointLoader and samples;
the UNet's adm input equals an independent computation of ComfyUI's noise augmentation, seeded from
the sampler's seed as ComfyUI seeds it; wrong files and mismatched embeddings are refused by name."""

import json
import math

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from nodegraph import REGISTRY, Executor, Graph, UserError
from nodes.core.env import SDEnvironment
from nodes.core.values import ConditioningEntry, Latent
from nodes.models import CheckpointError
from nodes.models.clip_vision import CONFIG_KEY, ClipVisionOutput, encode_image, preprocess
from nodes.models.testing import TINY_TEXT_CONFIG, TINY_UNET_CONFIG, TINY_VAE_CONFIG
from tests.test_clip_vision import hf_to_openclip_visual, images, tiny_vision

REGISTRY.discover("nodes")
EMBED = 24  # the tiny image tower's projection: the UNet's adm input is 2 × 24


def write_tiny_unclip(path, seed=0):
    """An unCLIP checkpoint in the original layout, tiny, with its configs in the sdgraph metadata."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from nodes.models.convert import (
        OPENCLIP_PREFIX,
        UNET_PREFIX,
        VAE_PREFIX,
        hf_to_openclip,
        unet_to_ldm,
        vae_to_ldm,
    )
    from nodes.models.sdgraph_format import _jsonable

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**TINY_UNET_CONFIG, class_embed_type="projection",
                                projection_class_embeddings_input_dim=2 * EMBED).eval()
    vae = AutoencoderKL(**TINY_VAE_CONFIG).eval()
    te = CLIPTextModel(CLIPTextConfig(**{**TINY_TEXT_CONFIG, "hidden_act": "gelu"})).eval()
    vision = tiny_vision(seed + 1)
    u = unet.state_dict()
    plain = {**dict(unet.config), "class_embed_type": None}
    sd = {UNET_PREFIX + k: v for k, v in unet_to_ldm({k: v for k, v in u.items() if not k.startswith("class_embedding.")},
                                                     plain).items()}
    for i, j in ((1, 0), (2, 2)):  # LDM's label_emb: Sequential(Linear, SiLU, Linear)
        for leaf in ("weight", "bias"):
            sd[f"{UNET_PREFIX}label_emb.0.{j}.{leaf}"] = u[f"class_embedding.linear_{i}.{leaf}"]
    sd |= {VAE_PREFIX + k: v for k, v in vae_to_ldm(vae.state_dict(), vae.config).items()}
    sd |= {OPENCLIP_PREFIX + k: v for k, v in hf_to_openclip(te.state_dict()).items()}
    vis = {k: v for k, v in vision.state_dict().items() if not k.endswith("position_ids")}
    sd |= {"embedder.model.visual." + k: v for k, v in hf_to_openclip_visual(vis).items()}
    sd |= {"noise_augmentor.betas": torch.rand(1000), "noise_augmentor.alphas_cumprod": torch.rand(1000)}
    te_config = te.config.to_dict()
    te_config.pop("dtype", None)
    config = {"version": 1, "unet": _jsonable(unet.config), "vae": _jsonable(vae.config),
              "text_encoder": _jsonable(te_config), "prediction_type": "v_prediction",
              "latent_scale_factor": 0.18215, "clip_pad_id": 0, "clip_layer": -2}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in sd.items()}, str(path),
              metadata={"sdgraph.config": json.dumps(config), CONFIG_KEY: json.dumps(vision.config.to_dict(), default=str)})
    return unet, vision


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("unclip")
    unet, vision = write_tiny_unclip(root / "models" / "checkpoints" / "unclip.safetensors")
    (root / "in").mkdir()
    from PIL import Image

    Image.fromarray((images(n=1, h=64, w=48)[0].numpy() * 255).astype(np.uint8)).save(root / "in" / "img.png")
    return root, unet, vision


# -- an independent computation of ComfyUI's unclip_adm ---------------------------------------------------

def reference_adm(conds, seed, dim=EMBED, merge=0.05):
    """conds: (image_embeds [B, D], strength, noise_augmentation). Written from the description of
    CLIPEmbeddingNoiseAugmentation: squared-cosine ᾱ in numpy float64, one CPU generator reseeded
    with `seed` per embedding, the merge draw following from the same generator."""
    t = np.arange(1001) / 1000
    abar = np.cos((t + 0.008) / 1.008 * np.pi / 2) ** 2
    betas = np.minimum(1 - abar[1:] / abar[:-1], 0.999)
    ac = np.cumprod(1 - betas)

    def emb(level):
        freqs = np.exp(-math.log(10000) * np.arange(dim // 2) / (dim // 2))
        return torch.tensor(np.concatenate([np.cos(level * freqs), np.sin(level * freqs)]), dtype=torch.float32)[None]

    def noised(x, level, gen):
        n = torch.randn(x.shape, generator=gen)
        return float(np.float32(np.sqrt(ac[level]))) * x + float(np.float32(np.sqrt(1 - ac[level]))) * n

    gen = torch.Generator()
    parts = []
    for embeds, strength, aug in conds:
        level = round(999 * aug)
        for e in embeds:
            gen.manual_seed(seed)
            parts.append(torch.cat([noised(e[None], level, gen), emb(level)], 1) * strength)
    if len(parts) == 1:
        return parts[0]
    total = sum(parts)
    level = round(999 * merge)
    return torch.cat([noised(total[:, :dim], level, gen), emb(level)], 1)


def cvo(embeds):
    return ClipVisionOutput(torch.zeros(embeds.shape[0], 5, 32), embeds, torch.zeros(embeds.shape[0], 5, 32))


def unclip_entry(*conds):
    return ConditioningEntry(torch.zeros(1, 77, 32), extras={"unclip_conditioning": [
        {"clip_vision_output": cvo(e), "strength": s, "noise_augmentation": a} for e, s, a in conds]})


class FakeCaller:
    def __init__(self, **config):
        self.unet = type("U", (), {"config": type("C", (), config)()})()


@pytest.mark.parametrize("aug", [0.0, 0.3])
def test_the_adm_vector_is_comfyuis_noise_augmentation_seeded_from_the_sampler_seed(aug):
    from nodes.sampling.adm import SAMPLING_SEED, add_unclip_inputs

    g = torch.Generator().manual_seed(7)
    one, two = torch.randn(1, EMBED, generator=g), torch.randn(2, EMBED, generator=g)
    entries = [(unclip_entry((one, 0.7, aug)), 2), (ConditioningEntry(torch.zeros(1, 77, 32)), 1),
               (unclip_entry((one, 1.0, aug), (two, 0.5, 0.1)), 1)]
    caller = FakeCaller(class_embed_type="projection", projection_class_embeddings_input_dim=2 * EMBED)
    kwargs = {}
    token = SAMPLING_SEED.set(123)
    try:
        add_unclip_inputs(kwargs, caller, entries, "cpu", torch.float32)
    finally:
        SAMPLING_SEED.reset(token)
    labels = kwargs["class_labels"]  # [2 + 1 + 1, 48]
    first = reference_adm([(one, 0.7, aug)], 123 - 10)
    assert torch.allclose(labels[0], first[0], atol=1e-6) and torch.equal(labels[0], labels[1])
    assert torch.equal(labels[2], torch.zeros(2 * EMBED))
    merged = reference_adm([(one, 1.0, aug), (two, 0.5, 0.1)], 123 - 10)
    assert torch.allclose(labels[3], merged[0], atol=1e-5)
    if aug == 0:  # level 0 still draws noise (ᾱ[0] < 1): the embedding moves, slightly
        assert 0 < (labels[0, :EMBED] / 0.7 - one[0]).abs().max() < 0.05
    assert not torch.allclose(reference_adm([(one, 0.7, aug)], 0), first)  # the seed matters


def test_sdxl_revision_gives_the_augmented_embedding_as_pooled_text():
    from nodes.sampling.adm import SAMPLING_SEED, add_unclip_inputs

    width = 16
    embeds = torch.randn(1, width, generator=torch.Generator().manual_seed(2))
    pooled = torch.randn(3, width)
    kwargs = {"added_cond_kwargs": {"text_embeds": pooled.clone(), "time_ids": torch.zeros(3, 6)}}
    token = SAMPLING_SEED.set(40)
    try:
        add_unclip_inputs(kwargs, FakeCaller(class_embed_type=None), [
            (ConditioningEntry(torch.zeros(1, 77, 32), pooled[:1]), 1), (unclip_entry((embeds, 0.75, 0.0)), 2)],
            "cpu", torch.float32)
    finally:
        SAMPLING_SEED.reset(token)
    got = kwargs["added_cond_kwargs"]["text_embeds"]
    assert torch.equal(got[0], pooled[0])
    want = reference_adm([(embeds, 0.75, 0.0)], 30, dim=width, merge=0.0)[0, :width]
    assert torch.allclose(got[1], want, atol=1e-6) and torch.allclose(got[2], want, atol=1e-6)


# -- the checkpoint --------------------------------------------------------------------------------------

def test_the_unclip_checkpoint_loads_its_four_parts(tiny):
    from nodes.models.unclip import load_unclip_checkpoint

    root, unet, vision = tiny
    model, clip, vae, cv = load_unclip_checkpoint(root / "models" / "checkpoints" / "unclip.safetensors")
    assert model.prediction_type == "v_prediction" and clip.layer == -2 and clip.pad_id == 0
    for name, t in unet.state_dict().items():
        assert torch.equal(model.unet.state_dict()[name], t), name
    batch = images(n=1)
    with torch.no_grad():
        want = vision(pixel_values=preprocess(batch, 16, True))
    assert torch.allclose(encode_image(cv, batch).image_embeds, want.image_embeds, atol=1e-5)



def test_checkpoint_loader_simple_loads_an_unclip_file_without_its_image_encoder(tiny):
    from nodes.models.loader import load_checkpoint

    root, unet, _ = tiny
    model, clip, vae = load_checkpoint(root / "models" / "checkpoints" / "unclip.safetensors")
    assert model.prediction_type == "v_prediction"
    for name, t in unet.state_dict().items():
        assert torch.equal(model.unet.state_dict()[name], t), name

def unclip_graph(strength=1.0, aug=0.0, seed=3) -> Graph:
    g = Graph(REGISTRY)
    g.add_node("unCLIPCheckpointLoader", "1", {"ckpt_name": "unclip.safetensors"})
    g.add_node("CLIPTextEncode", "2", {"text": "a red circle"})
    g.add_node("CLIPTextEncode", "3", {"text": ""})
    g.add_node("LoadImage", "4", {"image": "img.png"})
    g.add_node("CLIPVisionEncode", "5", {"crop": "center"})
    g.add_node("unCLIPConditioning", "6", {"strength": strength, "noise_augmentation": aug})
    g.add_node("EmptyLatentImage", "7", {"width": 64, "height": 64})
    g.add_node("KSampler", "8", {"seed": seed, "steps": 3, "cfg": 4.0})
    for src, slot, dst, name in [("1", 1, "2", "clip"), ("1", 1, "3", "clip"), ("1", 3, "5", "clip_vision"),
                                 ("4", 0, "5", "image"), ("2", 0, "6", "conditioning"), ("5", 0, "6", "clip_vision_output"),
                                 ("6", 0, "8", "positive"), ("3", 0, "8", "negative"), ("1", 0, "8", "model"),
                                 ("7", 0, "8", "latent_image")]:
        g.connect(src, slot, dst, name)
    return g


_EXECUTORS = {}


def sample(root, g):
    """Run the graph's KSampler; one executor per models folder, so the loaded nodes are cached."""
    if root not in _EXECUTORS:
        env = SDEnvironment(models_dir=root / "models", input_dir=root / "in", device="cpu", dtype="fp32")
        _EXECUTORS[root] = Executor(REGISTRY, env=env)
    result = _EXECUTORS[root].run(g, outputs=["8"], check=False)
    assert result.ok, result.error
    return result.outputs["8"][0].samples


def test_an_unclip_graph_samples_and_the_image_embedding_steers_it(tiny):
    root = tiny[0]
    base = sample(root, unclip_graph())
    assert base.shape == (1, 4, 8, 8) and torch.isfinite(base).all()
    assert torch.equal(sample(root, unclip_graph()), base)  # seeded: the same run gives the same latent
    without = sample(root, unclip_graph(strength=0.0))
    assert not torch.allclose(base, without, atol=1e-4)
    assert not torch.allclose(sample(root, unclip_graph(aug=0.5)), base, atol=1e-4)


def test_the_sampler_feeds_the_unet_the_seeded_adm_vectors(tiny):
    from nodes.models.unclip import load_unclip_checkpoint
    from nodes.sampling.ksampler import sample as ksample

    model, clip, _vae, cv = load_unclip_checkpoint(tiny[0] / "models" / "checkpoints" / "unclip.safetensors")
    out = encode_image(cv, images(n=1))
    positive = [unclip_entry((out.image_embeds, 0.8, 0.25))]
    negative = [ConditioningEntry(torch.zeros(1, 77, 32))]
    seen = []
    hook = model.unet.class_embedding.register_forward_hook(lambda m, args, res: seen.append(args[0].clone()))
    try:
        ksample(model, positive, negative, Latent(torch.zeros(1, 4, 8, 8)), seed=55, steps=2, cfg=3.0,
                sampler_name="euler", scheduler="normal")
    finally:
        hook.remove()
    want = reference_adm([(out.image_embeds, 0.8, 0.25)], 55 - 10)
    assert len(seen) == 2  # one batched call per step: positive then negative
    for labels in seen:
        assert labels.shape == (2, 2 * EMBED)
        assert torch.allclose(labels[0], want[0], atol=1e-5) and torch.equal(labels[1], torch.zeros(2 * EMBED))


def test_wrong_files_and_embeddings_are_refused_by_name(tiny, tmp_path):
    from nodes.models.testing import write_tiny_checkpoint
    from nodes.models.unclip import load_unclip_checkpoint

    plain = write_tiny_checkpoint(tmp_path / "plain.safetensors")
    with pytest.raises(CheckpointError, match='"plain.safetensors" is not an unCLIP checkpoint.*CheckpointLoaderSimple'):
        load_unclip_checkpoint(plain)
    root = tiny[0]
    g = unclip_graph()
    g.add_node("CLIPVisionLoader", "9", {"clip_name": "other.safetensors"})
    from tests.test_clip_vision import TINY_VISION, write_vision

    write_vision(root / "models" / "clip_vision" / "other.safetensors",
                 tiny_vision(config={**TINY_VISION, "projection_dim": 8}), "hf")
    g.connect("9", 0, "5", "clip_vision")
    env = SDEnvironment(models_dir=root / "models", input_dir=root / "in", device="cpu", dtype="fp32")
    result = Executor(REGISTRY, env=env).run(g, outputs=["8"], check=False)
    assert not result.ok and "takes 24-number image embeddings" in str(result.error)
    with pytest.raises(UserError, match="8"):
        from nodes.models.unclip import unclip_adm

        unclip_adm([{"clip_vision_output": cvo(torch.zeros(1, 8)), "strength": 1.0, "noise_augmentation": 0.0}], 24, 0)


def test_the_sd21_unclip_h_layout_maps_every_tensor(caplog):
    """SD 2.1 768-v's tensors plus unCLIP-H's adm input (2048) and ViT-H/14 image tower (OpenCLIP
    names under embedder.model.visual.), on the meta device: every tensor finds its place."""
    from nodes.models.clip_vision import CONFIG_DIR, empty_vision_model
    from nodes.models.detect import CheckpointInfo, ignored_on_purpose
    from nodes.models.testing import manifest_state_dict
    from nodes.models.unclip import check_unclip_names, unclip_from_state_dict
    from tests.shared import FIXTURES

    sd = manifest_state_dict(FIXTURES / "sd21v_manifest.tsv")
    sd = {k: v for k, v in sd.items() if not ignored_on_purpose(k)}
    with torch.device("meta"):
        sd["model.diffusion_model.label_emb.0.0.weight"] = torch.empty(1280, 2048)
        sd["model.diffusion_model.label_emb.0.0.bias"] = torch.empty(1280)
        sd["model.diffusion_model.label_emb.0.2.weight"] = torch.empty(1280, 1280)
        sd["model.diffusion_model.label_emb.0.2.bias"] = torch.empty(1280)
    vit_h = empty_vision_model(json.loads((CONFIG_DIR / "vit_h.json").read_text()))
    sd |= {"embedder.model.visual." + k: v for k, v in hf_to_openclip_visual(vit_h.state_dict()).items()}
    check_unclip_names(list(sd), "sd21-unclip-h.ckpt")
    info = CheckpointInfo("sd2", "v_prediction", "SD 2.1 unCLIP", context_dim=1024)
    with caplog.at_level("WARNING"):
        model, clip, vae, cv = unclip_from_state_dict(sd, info, {}, "sd21-unclip-h.ckpt", device="meta",
                                                      dtype=torch.float16)
    assert not [r for r in caplog.records if "not used" in r.getMessage()]
    assert model.unet.config.projection_class_embeddings_input_dim == 2048
    assert model.unet.class_embedding.linear_1.weight.shape == (1280, 2048)
    assert cv.model.config.hidden_size == 1280 and cv.model.config.projection_dim == 1024 and cv.image_size == 224
    assert clip.layer == -2 and model.prediction_type == "v_prediction"
    total = sum(v.numel() for v in sd.values())
    built = sum(p.numel() for m in (model.unet, vae.vae, clip.text_encoder, cv.model) for p in m.parameters())
    assert built == total
