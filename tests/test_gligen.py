"""GLIGEN: a file in the original release's layout loads; GLIGENTextBoxApply puts the phrase's pooled
embedding and its box on the conditioning; while sampling, the position net's grounding tokens reach
every transformer block through its fuser, between self- and cross-attention (ComfyUI's
middle_patch), only on the rows of the conditioning that carries the boxes."""

from __future__ import annotations

import math

import pytest
import torch
from safetensors.torch import save_file

from nodegraph import REGISTRY, Executor, Graph, NodeInputError
from nodes.core.env import SDEnvironment
from nodes.models import CheckpointError
from nodes.models.gligen import FOURIER_FREQS, add_text_box, load_gligen, middle_patch, phrase_embedding
from nodes.sampling.ksampler import UNetCaller
from nodes.sampling.unet_patched import MIDDLE_KWARGS, PatchedUNetCaller, middle_patched, transformer_map
from tests.test_model_patches import prompts, sample

REGISTRY.discover("nodes")

# The tiny UNet's transformers (ComfyUI numbering), their widths, and the release layout's names.
PLACES = {"input_blocks.1": 32, "middle_block.1": 64, "output_blocks.2": 32, "output_blocks.3": 32}
PHRASE_WIDTH = 32  # the tiny CLIP's pooled width
TOKEN_WIDTH = 24  # the grounding tokens' width (768 in the released SD 1.x model)


def write_gligen(path, gate: float = 0.0, seed: int = 0):
    """A GLIGEN file in the original release's layout for the tiny UNet, gates tanh⁻¹-free: α = gate."""
    from diffusers.models.attention import GatedSelfAttentionDense

    from nodes.models.gligen import PositionNet

    torch.manual_seed(seed)
    sd = {}
    net = PositionNet(PHRASE_WIDTH, TOKEN_WIDTH)
    with torch.no_grad():
        net.null_positive_feature.normal_()
        net.null_position_feature.normal_()
    sd.update({f"position_net.{k}": v for k, v in net.state_dict().items()})
    for name, width in PLACES.items():
        fuser = GatedSelfAttentionDense(width, TOKEN_WIDTH, 8, width // 8)
        with torch.no_grad():
            fuser.alpha_attn.fill_(gate)
            fuser.alpha_dense.fill_(gate * 0.5)
        sd.update({f"{name}.1.transformer_blocks.0.fuser.{k}": v for k, v in fuser.state_dict().items()})
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    return sd


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory):
    from nodes.models.testing import write_tiny_checkpoint

    root = tmp_path_factory.mktemp("gligen")
    write_tiny_checkpoint(root / "models" / "checkpoints" / "tiny.safetensors")
    write_gligen(root / "models" / "gligen" / "closed.safetensors", gate=0.0)
    write_gligen(root / "models" / "gligen" / "open.safetensors", gate=0.8)
    return root


@pytest.fixture(scope="module")
def tiny_model(tiny_root):
    from nodes.models.loader import load_checkpoint

    model, clip, _ = load_checkpoint(tiny_root / "models" / "checkpoints" / "tiny.safetensors", device="cpu")
    return model, clip


def test_a_release_layout_file_loads_its_fusers_by_transformer(tiny_root):
    gligen = load_gligen(tiny_root / "models" / "gligen" / "open.safetensors")
    assert set(gligen.fusers) == {("input", 1), ("middle", 0), ("output", 2), ("output", 3)}
    assert gligen.in_dim == PHRASE_WIDTH and gligen.fusers[("middle", 0)].linear.out_features == 64
    assert float(gligen.fusers[("input", 1)].alpha_attn) == pytest.approx(0.8)


def test_other_files_are_not_taken_for_gligen(tmp_path):
    save_file({"input_blocks.1.1.proj_in.weight": torch.zeros(4, 4)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(CheckpointError, match="not a GLIGEN model"):
        load_gligen(tmp_path / "other.safetensors")


def _fourier(b):
    return torch.cat([f(100 ** (k / FOURIER_FREQS) * b) for k in range(FOURIER_FREQS) for f in (torch.sin, torch.cos)],
                     -1)


def _position_mlp(raw, phrase, xyxy):
    h = torch.cat([phrase, xyxy], -1)
    for i in (0, 2):
        h = torch.nn.functional.silu(h @ raw[f"position_net.linears.{i}.weight"].T + raw[f"position_net.linears.{i}.bias"])
    return h @ raw["position_net.linears.4.weight"].T + raw["position_net.linears.4.bias"]


def test_grounding_tokens_are_the_box_in_latent_fractions_and_null_slots_elsewhere(tiny_root):
    path = tiny_root / "models" / "gligen" / "open.safetensors"
    raw = write_gligen(path.with_name("again.safetensors"), gate=0.8)  # the same seed: the same tensors
    gligen = load_gligen(path)
    phrase = torch.randn(1, PHRASE_WIDTH)
    tokens = gligen.grounding_tokens([(phrase, 2, 4, 1, 3)], (8, 16), "cpu")  # h 2, w 4 at y 1, x 3 of 8×16
    assert tokens.shape == (1, 30, TOKEN_WIDTH)
    box = torch.tensor([3 / 16, 1 / 8, 7 / 16, 3 / 8])  # x1, y1, x2, y2
    want = _position_mlp(raw, phrase[0], _fourier(box))
    empty = _position_mlp(raw, raw["position_net.null_positive_feature"], raw["position_net.null_position_feature"])
    assert torch.allclose(tokens[0, 0], want, atol=1e-5)
    assert torch.allclose(tokens[0, 1:], empty.expand(29, -1), atol=1e-5)


def _layer_norm(x, raw, name):
    return torch.nn.functional.layer_norm(x, x.shape[-1:], raw[f"{name}.weight"], raw[f"{name}.bias"])


def _fuse_by_hand(x, objs, raw, heads=8):
    """ComfyUI's GatedSelfAttentionDense from the file's tensors: gated self-attention over
    [visual tokens; projected grounding tokens], then a gated GEGLU feed-forward."""
    def lin(t, name, bias=True):
        return t @ raw[f"{name}.weight"].T + (raw[f"{name}.bias"] if bias else 0)

    n = x.shape[1]
    both = _layer_norm(torch.cat([x, lin(objs, "linear")], 1), raw, "norm1")
    q, k, v = (lin(both, f"attn.to_{c}", bias=False) for c in "qkv")
    b, m, inner = q.shape
    d = inner // heads
    q, k, v = (t.reshape(b, m, heads, d).transpose(1, 2) for t in (q, k, v))
    attended = ((q @ k.transpose(-1, -2)) / math.sqrt(d)).softmax(-1) @ v
    attended = lin(attended.transpose(1, 2).reshape(b, m, inner), "attn.to_out.0")[:, :n]
    x = x + torch.tanh(raw["alpha_attn"]) * attended
    hidden, gate = lin(_layer_norm(x, raw, "norm2"), "ff.net.0.proj").chunk(2, -1)
    return x + torch.tanh(raw["alpha_dense"]) * lin(hidden * torch.nn.functional.gelu(gate), "ff.net.2")


def test_one_transformer_block_fuses_the_boxes_between_self_and_cross_attention(tiny_model, tiny_root):
    model, _ = tiny_model
    path = tiny_root / "models" / "gligen" / "open.safetensors"
    raw = write_gligen(path.with_name("again.safetensors"), gate=0.8)
    gligen = load_gligen(path)
    boxed = add_text_box([_entry()], gligen, torch.randn(1, PHRASE_WIDTH), (4, 4, 0, 2))[0]
    block = transformer_map(model.unet)[("input", 1)].transformer_blocks[0]
    widths = {place: 32 if place[0] != "middle" else 64 for place in transformer_map(model.unet)}
    torch.manual_seed(3)
    x, context = torch.randn(2, 64, 32), torch.randn(2, 77, 32)
    with torch.inference_mode():
        patch = middle_patch([(boxed, 1), (_entry(), 1)], (8, 8), "cpu", widths)  # row 0 boxed, row 1 not
        with middle_patched(model.unet, patch, {}):
            out = block(x, encoder_hidden_states=context, cross_attention_kwargs=MIDDLE_KWARGS)
        plain = block(x, encoder_hidden_states=context)
        # By hand: self-attention added, the fuse (row 0 only), cross-attention added, feed-forward added.
        objs = gligen.grounding_tokens(boxed.extras["gligen"][2], (8, 8), "cpu")
        fuser_raw = {k.split(".fuser.")[1]: v for k, v in raw.items() if k.startswith("input_blocks.1.1.")}
        h = x + block.attn1(block.norm1(x))
        h = torch.cat([_fuse_by_hand(h[:1], objs, fuser_raw), h[1:]])
        h = h + block.attn2(block.norm2(h), encoder_hidden_states=context)
        want = h + block.ff(block.norm3(h))
    assert torch.allclose(out[:1], want[:1], atol=1e-5)
    assert not torch.allclose(out[:1], plain[:1], atol=1e-3)
    assert torch.equal(out[1:], plain[1:])  # the row without boxes is the plain block's, bit for bit
    assert not hasattr(block, "fuser")


def _entry():
    from nodes.core.values import ConditioningEntry

    return ConditioningEntry(cond=torch.zeros(1, 77, 32), pooled=torch.zeros(1, 32))


def test_closed_gates_leave_sampling_bit_identical_and_open_ones_change_it(tiny_model, tiny_root):
    model, clip = tiny_model
    pos, neg = prompts(clip)
    phrase = phrase_embedding(clip, "a red circle")
    plain = sample(model, pos, neg, steps=3)
    for name, same in (("closed", True), ("open", False)):
        gligen = load_gligen(tiny_root / "models" / "gligen" / f"{name}.safetensors")
        boxed = add_text_box(pos, gligen, phrase, (4, 4, 2, 2))
        assert torch.equal(sample(model, boxed, neg, steps=3), plain) is same
    assert "gligen" not in pos[0].extras and model.patches.changes_unet is False


def test_a_batch_shares_one_call_and_each_row_gets_only_its_own_boxes(tiny_model, tiny_root):
    model, clip = tiny_model
    pos, neg = prompts(clip)
    gligen = load_gligen(tiny_root / "models" / "gligen" / "open.safetensors")
    boxed = add_text_box(pos, gligen, phrase_embedding(clip, "a square"), (4, 4, 0, 0))[0]
    torch.manual_seed(4)
    x, t = torch.randn(2, 4, 8, 8), torch.tensor([600.0, 600.0])
    context = torch.cat([boxed.cond, neg[0].cond])
    with torch.inference_mode():
        both = PatchedUNetCaller(model)(x, t, context, [(boxed, 1), (neg[0], 1)], (8, 8), {"sigmas": t})
        alone = PatchedUNetCaller(model)(x[:1], t[:1], boxed.cond, [(boxed, 1)], (8, 8), {"sigmas": t[:1]})
        plain = UNetCaller(model)(x, t, context, [(pos[0], 1), (neg[0], 1)], (8, 8))
    assert torch.allclose(both[:1], alone, atol=1e-5) and torch.equal(both[1:], plain[1:])


def test_phrases_of_another_width_are_refused(tiny_root):
    gligen = load_gligen(tiny_root / "models" / "gligen" / "open.safetensors")
    with pytest.raises(NodeInputError, match="32-wide"):
        add_text_box([_entry()], gligen, torch.zeros(1, 768), (1, 1, 0, 0))


def test_gligen_nodes_place_a_box_and_leave_the_shared_unet_alone(tiny_root):
    g = Graph(REGISTRY)
    g.add_node("CheckpointLoaderSimple", "ckpt", {"ckpt_name": "tiny.safetensors"})
    g.add_node("CLIPTextEncode", "pos", {"text": "a red circle"})
    g.add_node("CLIPTextEncode", "neg", {"text": ""})
    g.add_node("GLIGENLoader", "gl", {"gligen_name": "open.safetensors"})
    g.add_node("GLIGENTextBoxApply", "box", {"text": "a red circle", "width": 32, "height": 32, "x": 16, "y": 8})
    g.add_node("EmptyLatentImage", "lat", {"width": 64, "height": 64, "batch_size": 1})
    for enc in ("pos", "neg", "box"):
        g.connect("ckpt", 1, enc, "clip")
    g.connect("pos", 0, "box", "conditioning_to")
    g.connect("gl", 0, "box", "gligen_textbox_model")
    for name, positive in (("boxed", "box"), ("plain", "pos")):
        g.add_node("KSampler", name, {"seed": 5, "steps": 2, "cfg": 6.0, "sampler_name": "euler"})
        for src, slot in (("ckpt", "model"), (positive, "positive"), ("neg", "negative"), ("lat", "latent_image")):
            g.connect(src, 0, name, slot)
    env = SDEnvironment(models_dir=tiny_root / "models", output_dir=tiny_root / "out", input_dir=tiny_root / "in")
    result = Executor(REGISTRY, env=env).run(g, outputs=["boxed", "plain", "ckpt"], check=False)
    assert result.ok, result.error
    boxed, plain = result.outputs["boxed"][0].samples, result.outputs["plain"][0].samples
    assert not torch.allclose(boxed, plain, atol=1e-4)
    unet = result.outputs["ckpt"][0].unet
    assert not any(hasattr(b, "fuser") for t in transformer_map(unet).values() for b in t.transformer_blocks)
