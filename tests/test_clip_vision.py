"""CLIP vision: files in both layouts load and encode like the transformers model they were written
from; ComfyUI's preprocessing checked against PIL; the shipped configs fit the real towers; style
models append their tokens; wrong files are refused by name."""

import json

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from nodes.models import CheckpointError
from nodes.models.clip_vision import (
    CLIP_MEAN,
    CLIP_STD,
    CONFIG_DIR,
    CONFIG_KEY,
    empty_vision_model,
    encode_image,
    load_clip_vision,
    openclip_visual_to_hf,
    preprocess,
    vision_config_for,
)

TINY_VISION = {"hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 4, "num_hidden_layers": 3,
               "patch_size": 4, "image_size": 16, "projection_dim": 24, "hidden_act": "gelu"}


def tiny_vision(seed=0, config=None):
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(seed)
    return CLIPVisionModelWithProjection(CLIPVisionConfig(**(config or TINY_VISION))).eval()


def hf_to_openclip_visual(sd):
    """transformers image-tower names → OpenCLIP `visual.` names (written independently of the loader:
    q, k, v fused in that order, the projection stored as x @ P)."""
    top = {"vision_model.embeddings.class_embedding": "class_embedding",
           "vision_model.embeddings.patch_embedding.weight": "conv1.weight",
           "vision_model.embeddings.position_embedding.weight": "positional_embedding",
           "vision_model.pre_layrnorm.weight": "ln_pre.weight", "vision_model.pre_layrnorm.bias": "ln_pre.bias",
           "vision_model.post_layernorm.weight": "ln_post.weight", "vision_model.post_layernorm.bias": "ln_post.bias"}
    parts = {"layer_norm1": "ln_1", "layer_norm2": "ln_2", "mlp.fc1": "mlp.c_fc", "mlp.fc2": "mlp.c_proj",
             "self_attn.out_proj": "attn.out_proj"}
    out, layers = {}, {n.split(".")[3] for n in sd if n.startswith("vision_model.encoder.layers.")}
    for name, t in sd.items():
        if name in top:
            out[top[name]] = t
        elif name == "visual_projection.weight":
            out["proj"] = t.T.contiguous()
    for i in layers:
        base = f"vision_model.encoder.layers.{i}."
        for leaf in ("weight", "bias"):
            out[f"transformer.resblocks.{i}.attn.in_proj_{leaf}"] = torch.cat(
                [sd[f"{base}self_attn.{x}_proj.{leaf}"] for x in "qkv"])
            for hf, oc in parts.items():
                out[f"transformer.resblocks.{i}.{oc}.{leaf}"] = sd[f"{base}{hf}.{leaf}"]
    return out


def write_vision(path, model, layout, prefix=""):
    sd = {k: v.contiguous() for k, v in model.state_dict().items() if not k.endswith("position_ids")}
    if layout == "openclip":
        sd = {prefix + "visual." + k: v for k, v in hf_to_openclip_visual(sd).items()}
    else:
        sd = {prefix + k: v for k, v in sd.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(sd, str(path), metadata={CONFIG_KEY: json.dumps(model.config.to_dict(), default=str)})
    return path


def images(seed=1, h=40, w=56, n=2):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand((n, h, w, 3), generator=g) * 255).round() / 255  # 8-bit levels, as loaded images are


# -- preprocessing --------------------------------------------------------------------------------------

def pil_preprocess(image, size, crop):
    """CLIP's preprocessing done with PIL and numpy: bicubic resize per channel ('F' images), centre
    crop, 8-bit rounding, normalisation."""
    h, w = image.shape[:2]
    if crop:
        s = size / min(h, w)
        th, tw = round(s * h), round(s * w)
    else:
        th, tw = size, size
    chans = [np.asarray(Image.fromarray(image[..., c].numpy().astype(np.float32), mode="F")
                        .resize((tw, th), Image.BICUBIC)) for c in range(3)]
    arr = np.stack(chans)  # [3, th, tw]
    top, left = (th - size) // 2, (tw - size) // 2
    arr = arr[:, top:top + size, left:left + size]
    arr = np.clip(arr * 255, 0, 255).round() / 255
    return (arr - np.array(CLIP_MEAN)[:, None, None]) / np.array(CLIP_STD)[:, None, None]


@pytest.mark.parametrize("crop", [True, False])
def test_preprocessing_resizes_crops_and_normalises_as_pil_does(crop):
    batch = images()
    ours = preprocess(batch, 16, crop)
    assert ours.shape == (2, 3, 16, 16)
    for i in range(2):
        ref = torch.from_numpy(pil_preprocess(batch[i], 16, crop)).float()
        # PIL and torch round the resampled values apart by at most one 8-bit level now and then
        assert (ours[i] - ref).abs().max() < 1.5 / 255 / min(CLIP_STD)
        assert (ours[i] - ref).abs().mean() < 0.2 / 255 / min(CLIP_STD)


def test_an_image_already_at_the_input_size_is_only_normalised():
    batch = images(h=16, w=16, n=1)
    want = (batch.movedim(-1, 1) - torch.tensor(CLIP_MEAN).view(3, 1, 1)) / torch.tensor(CLIP_STD).view(3, 1, 1)
    assert torch.allclose(preprocess(batch, 16, True), want, atol=1e-6)


# -- loading and encoding -------------------------------------------------------------------------------

@pytest.mark.parametrize("layout", ["hf", "openclip"])
def test_both_file_layouts_encode_like_the_transformers_model(tmp_path, layout):
    model = tiny_vision()
    path = write_vision(tmp_path / f"{layout}.safetensors", model, layout)
    vision = load_clip_vision(path)
    assert vision.image_size == 16
    batch = images()
    out = encode_image(vision, batch, crop=True)
    with torch.no_grad():
        ref = model(pixel_values=torch.from_numpy(np.stack([pil_preprocess(b, 16, True) for b in batch])).float(),
                    output_hidden_states=True)
        exact = model(pixel_values=preprocess(batch, 16, True), output_hidden_states=True)
    assert out.last_hidden_state.shape == (2, 17, 32) and out.image_embeds.shape == (2, 24)
    assert torch.allclose(out.last_hidden_state, exact.last_hidden_state, atol=1e-5)
    assert torch.allclose(out.image_embeds, exact.image_embeds, atol=1e-5)
    assert torch.allclose(out.penultimate_hidden_states, exact.hidden_states[-2], atol=1e-5)
    assert not torch.allclose(out.penultimate_hidden_states, out.last_hidden_state)
    assert torch.allclose(out.image_embeds, ref.image_embeds, atol=0.05)  # PIL's pixels give nearly the same


def test_the_nodes_load_and_encode_a_loaded_image(tmp_path):
    from nodegraph import REGISTRY, Executor, Graph
    from nodes.core.env import SDEnvironment

    REGISTRY.discover("nodes")
    model = tiny_vision()
    write_vision(tmp_path / "models" / "clip_vision" / "tiny.safetensors", model, "hf")
    (tmp_path / "in").mkdir()
    pixels = (images(n=1)[0].numpy() * 255).astype(np.uint8)
    Image.fromarray(pixels).save(tmp_path / "in" / "img.png")
    g = Graph(REGISTRY)
    g.add_node("CLIPVisionLoader", "1", {"clip_name": "tiny.safetensors"})
    g.add_node("LoadImage", "2", {"image": "img.png"})
    g.add_node("CLIPVisionEncode", "3", {"crop": "none"})
    g.connect("1", 0, "3", "clip_vision")
    g.connect("2", 0, "3", "image")
    env = SDEnvironment(models_dir=tmp_path / "models", input_dir=tmp_path / "in", device="cpu", dtype="fp32")
    result = Executor(REGISTRY, env=env).run(g, outputs=["3"], check=False)
    assert result.ok, result.error
    out = result.outputs["3"][0]
    with torch.no_grad():
        want = model(pixel_values=preprocess(torch.from_numpy(pixels)[None].float() / 255, 16, False)).image_embeds
    assert torch.allclose(out.image_embeds, want, atol=1e-5)


@pytest.mark.parametrize(("file", "layers", "width", "dim"),
                         [("vit_l.json", 24, 1024, 768), ("vit_h.json", 32, 1280, 1024), ("vit_g.json", 48, 1664, 1280)])
def test_the_shipped_configs_are_chosen_by_depth_and_fit_both_layouts(file, layers, width, dim):
    config = json.loads((CONFIG_DIR / file).read_text())
    model = empty_vision_model(config)  # meta: no memory
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    chosen = vision_config_for(shapes, None, "x.safetensors")
    assert (chosen["num_hidden_layers"], chosen["hidden_size"], chosen["projection_dim"]) == (layers, width, dim)
    assert chosen["image_size"] == 224
    back = openclip_visual_to_hf(hf_to_openclip_visual(model.state_dict()))
    assert {k: tuple(v.shape) for k, v in back.items()} == shapes


def test_vit_l_at_336_pixels_is_told_by_its_position_embeddings():
    config = {**json.loads((CONFIG_DIR / "vit_l.json").read_text()), "image_size": 336}
    shapes = {k: tuple(v.shape) for k, v in empty_vision_model(config).state_dict().items()}
    assert shapes["vision_model.embeddings.position_embedding.weight"][0] == 577
    assert vision_config_for(shapes, None, "x")["image_size"] == 336


def test_wrong_files_are_refused_by_name(tmp_path):
    lora = tmp_path / "lora.safetensors"
    save_file({"lora_unet_x.lora_down.weight": torch.zeros(2, 2)}, str(lora))
    with pytest.raises(CheckpointError, match='"lora.safetensors" is not a CLIP vision model: it looks like a LoRA'):
        load_clip_vision(lora)
    unknown = tmp_path / "odd.safetensors"
    sd = {k: v.contiguous() for k, v in tiny_vision().state_dict().items()}
    save_file(sd, str(unknown))  # no config in the metadata and a depth no CLIP tower has
    with pytest.raises(CheckpointError, match="a CLIP image encoder with 3 layers"):
        load_clip_vision(unknown)
    broken = tmp_path / "broken.safetensors"
    meta = {CONFIG_KEY: json.dumps({**TINY_VISION})}  # says 24 but the file's projection gives 8
    save_file({k: v.contiguous() for k, v in tiny_vision(config={**TINY_VISION, "projection_dim": 8}).state_dict().items()},
              str(broken), metadata=meta)
    with pytest.raises(CheckpointError, match="CLIP vision weights do not fit"):
        load_clip_vision(broken)


# -- style models -----------------------------------------------------------------------------------------

def write_style_model(path, width=32, context=16, tokens=3, layers=2, seed=0):
    g = torch.Generator().manual_seed(seed)

    def r(*shape, scale=0.2):
        return (torch.randn(shape, generator=g) * scale).contiguous()

    sd = {"style_embedding": r(1, tokens, width), "proj": r(width, context), "ln_pre.weight": 1 + r(width),
          "ln_pre.bias": r(width), "ln_post.weight": 1 + r(width), "ln_post.bias": r(width)}
    for i in range(layers):
        b = f"transformer_layes.{i}."
        sd |= {b + "attn.in_proj_weight": r(3 * width, width), b + "attn.in_proj_bias": r(3 * width),
               b + "attn.out_proj.weight": r(width, width), b + "attn.out_proj.bias": r(width),
               b + "ln_1.weight": 1 + r(width), b + "ln_1.bias": r(width), b + "ln_2.weight": 1 + r(width),
               b + "ln_2.bias": r(width), b + "mlp.c_fc.weight": r(4 * width, width), b + "mlp.c_fc.bias": r(4 * width),
               b + "mlp.c_proj.weight": r(width, 4 * width), b + "mlp.c_proj.bias": r(width)}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(sd, str(path))
    return sd


def direct_style(sd, x, heads=8):
    """The T2I style adapter written out with plain tensor operations (sequence-first attention)."""
    def ln(t, p):
        return torch.nn.functional.layer_norm(t, t.shape[-1:], sd[p + ".weight"], sd[p + ".bias"])

    q = sd["style_embedding"].expand(x.shape[0], -1, -1)
    h = ln(torch.cat([x, q], 1), "ln_pre")  # [B, T, W]
    width = h.shape[-1]
    for i in sorted({k.split(".")[1] for k in sd if k.startswith("transformer_layes.")}):
        b = f"transformer_layes.{i}."
        a = ln(h, b + "ln_1")
        qkv = a @ sd[b + "attn.in_proj_weight"].T + sd[b + "attn.in_proj_bias"]
        qq, kk, vv = (t.reshape(t.shape[0], t.shape[1], heads, width // heads).transpose(1, 2) for t in qkv.chunk(3, -1))
        att = torch.softmax(qq @ kk.transpose(-1, -2) / (width // heads) ** 0.5, -1) @ vv
        att = att.transpose(1, 2).reshape(h.shape)
        h = h + att @ sd[b + "attn.out_proj.weight"].T + sd[b + "attn.out_proj.bias"]
        m = ln(h, b + "ln_2") @ sd[b + "mlp.c_fc.weight"].T + sd[b + "mlp.c_fc.bias"]
        m = m * torch.sigmoid(1.702 * m)
        h = h + m @ sd[b + "mlp.c_proj.weight"].T + sd[b + "mlp.c_proj.bias"]
    n = sd["style_embedding"].shape[1]
    return ln(h[:, -n:], "ln_post") @ sd["proj"]


def test_the_style_model_appends_its_tokens_to_every_entry(tmp_path):
    from nodes.conditioning import StyleModelApply
    from nodes.core.values import ConditioningEntry
    from nodes.models.clip_vision import ClipVisionOutput
    from nodes.models.style_model import load_style_model

    sd = write_style_model(tmp_path / "style.safetensors")
    style = load_style_model(tmp_path / "style.safetensors")
    hidden = torch.randn(2, 5, 32, generator=torch.Generator().manual_seed(3))  # two images, 5 tokens each
    cvo = ClipVisionOutput(hidden, torch.zeros(2, 24), hidden)
    prompt = [ConditioningEntry(torch.randn(1, 77, 16), extras={"strength": 0.5}),
              ConditioningEntry(torch.randn(1, 154, 16))]
    want = direct_style(sd, hidden).reshape(1, 6, 16)  # the two images' 3 tokens, in a row
    (out,) = StyleModelApply().run(None, prompt, style, cvo, 0.5, "multiply")
    assert [e.cond.shape for e in out] == [(1, 83, 16), (1, 160, 16)]
    for before, after in zip(prompt, out, strict=True):
        assert torch.equal(after.cond[:, :before.cond.shape[1]], before.cond)
        assert torch.allclose(after.cond[:, before.cond.shape[1]:], want * 0.5, atol=1e-5)
    assert out[0].extras == {"strength": 0.5} and prompt[0].cond.shape[1] == 77
    # attn_bias keeps the tokens and records log(strength) on them, as ComfyUI's mask
    (biased,) = StyleModelApply().run(None, prompt[:1], style, cvo, 0.5, "attn_bias")
    assert torch.allclose(biased[0].cond[:, 77:], want, atol=1e-5)
    mask = biased[0].extras["attention_mask"]
    assert mask.shape == (1, 84, 84) and float(mask[0, 0, 77]) == pytest.approx(np.log(0.5), abs=1e-3)
    assert float(mask[0, 0, 0]) == 0 and float(mask[0, 83, 80]) == pytest.approx(np.log(0.5), abs=1e-3)


def test_style_models_refuse_wrong_files_and_widths(tmp_path):
    from nodegraph import NodeInputError
    from nodes.conditioning import StyleModelApply
    from nodes.core.values import ConditioningEntry
    from nodes.models.clip_vision import ClipVisionOutput
    from nodes.models.style_model import load_style_model

    redux = tmp_path / "redux.safetensors"
    save_file({"redux_down.weight": torch.zeros(2, 2), "redux_up.weight": torch.zeros(2, 2)}, str(redux))
    with pytest.raises(CheckpointError, match="Flux Redux"):
        load_style_model(redux)
    vision = tmp_path / "vision.safetensors"
    write_vision(vision, tiny_vision(), "hf")
    with pytest.raises(CheckpointError, match='"vision.safetensors" is not a style model'):
        load_style_model(vision)
    write_style_model(tmp_path / "style.safetensors")
    style = load_style_model(tmp_path / "style.safetensors")
    prompt = [ConditioningEntry(torch.zeros(1, 77, 16))]
    with pytest.raises(NodeInputError, match="1024"):  # a ViT-H output (wrong width) for the style model
        StyleModelApply().run(None, prompt, style, ClipVisionOutput(torch.zeros(1, 5, 48), torch.zeros(1, 8),
                                                                    torch.zeros(1, 5, 48)), 1.0, "multiply")
    wide = [ConditioningEntry(torch.zeros(1, 77, 1024))]
    with pytest.raises(NodeInputError, match="SD 1.x"):
        StyleModelApply().run(None, wide, style, ClipVisionOutput(torch.zeros(1, 5, 32), torch.zeros(1, 8),
                                                                  torch.zeros(1, 5, 32)), 1.0, "multiply")
