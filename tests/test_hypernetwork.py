"""HypernetworkLoader: a webui hypernetwork (.pt, read weights-only) nudges the key and value inputs
of every attention layer (ComfyUI's attn1_patch and attn2_patch), scaled by strength, on a new MODEL
that leaves the loaded one as it was."""

from __future__ import annotations

import math

import pytest
import torch

from nodegraph import REGISTRY, Executor
from nodes.core.env import SDEnvironment
from nodes.models import CheckpointError
from nodes.models.hypernetwork import load_hypernetwork
from nodes.sampling.ksampler import UNetCaller
from nodes.sampling.unet_patched import PatchedUNetCaller, attention_inputs_patched, transformer_map
from tests.test_model_patches import _branch_graph, prompts, sample

REGISTRY.discover("nodes")


class _WebuiNet(torch.nn.Module):
    """The webui's HypernetworkModule layout: its layers in a Sequential named `linear`."""

    def __init__(self, width: int, activation: str, layer_norm: bool, dropout: bool):
        super().__init__()
        acts = {"relu": torch.nn.ReLU, "tanh": torch.nn.Tanh, "linear": None}
        layers: list[torch.nn.Module] = []
        structure = (1, 2, 1)
        for i in range(len(structure) - 1):
            layers.append(torch.nn.Linear(width * structure[i], width * structure[i + 1]))
            if acts[activation] is not None and i < len(structure) - 2:
                layers.append(acts[activation]())
            if layer_norm:
                layers.append(torch.nn.LayerNorm(width * structure[i + 1]))
            if dropout and i < len(structure) - 2:
                layers.append(torch.nn.Dropout(p=0.3))
        self.linear = torch.nn.Sequential(*layers)
        with torch.no_grad():
            for p in self.parameters():
                p.normal_(0, 0.3)


def write_hypernetwork(path, widths=(32, 64), activation="relu", layer_norm=False, dropout=True, seed=0):
    """A webui-format hypernetwork file: {width: (key net state, value net state), settings…}."""
    torch.manual_seed(seed)
    sd: dict = {w: tuple(_WebuiNet(w, activation, layer_norm, dropout).state_dict() for _ in range(2)) for w in widths}
    sd.update({"activation_func": activation, "is_layer_norm": layer_norm, "use_dropout": dropout,
               "activate_output": False, "last_layer_dropout": False, "layer_structure": [1, 2, 1],
               "name": path.stem, "step": 1000, "sd_checkpoint": "abcdef12", "weight_initialization": "Normal"})
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(sd, path)
    return sd


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory):
    from nodes.models.testing import write_tiny_checkpoint

    root = tmp_path_factory.mktemp("hn")
    write_tiny_checkpoint(root / "models" / "checkpoints" / "tiny.safetensors")
    write_hypernetwork(root / "models" / "hypernetworks" / "tiny.pt")
    return root


@pytest.fixture(scope="module")
def tiny_model(tiny_root):
    from nodes.models.loader import load_checkpoint

    model, clip, _ = load_checkpoint(tiny_root / "models" / "checkpoints" / "tiny.safetensors", device="cpu")
    return model, clip


def test_a_webui_file_becomes_comfyuis_layers_without_dropout(tmp_path):
    write_hypernetwork(tmp_path / "plain.pt")
    net = load_hypernetwork(tmp_path / "plain.pt")
    assert sorted(net.nets) == [32, 64]
    assert [type(m).__name__ for m in net.nets[32][0]] == ["Linear", "ReLU", "Linear"]  # dropout acts only in training
    write_hypernetwork(tmp_path / "normed.pt", layer_norm=True)
    normed = load_hypernetwork(tmp_path / "normed.pt")
    # ComfyUI counts the last LayerNorm as the last layer, so the last Linear is activated too
    assert [type(m).__name__ for m in normed.nets[64][1]] == ["Linear", "ReLU", "LayerNorm", "Linear", "ReLU",
                                                              "LayerNorm"]


def test_strength_zero_leaves_the_prediction_bit_identical_and_one_changes_it(tiny_model, tiny_root):
    model, clip = tiny_model
    net = load_hypernetwork(tiny_root / "models" / "hypernetworks" / "tiny.pt")
    pos, _ = prompts(clip)
    torch.manual_seed(1)
    x, t = torch.randn(1, 4, 8, 8), torch.tensor([500.0])
    entries = [(pos[0], 1)]
    with torch.inference_mode():
        plain = UNetCaller(model)(x, t, pos[0].cond, entries, (8, 8))
        results = {}
        for strength in (0.0, 1.0):
            patch = net.attention_patch(strength)
            patched = model.patched(attn1_patch=patch, attn2_patch=patch)
            results[strength] = PatchedUNetCaller(patched)(x, t, pos[0].cond, entries, (8, 8), {"sigmas": t})
    assert torch.equal(results[0.0], plain)
    assert not torch.allclose(results[1.0], plain, atol=1e-4)


def _mlp(x, state, prefix="linear."):
    """The file's Linear → ReLU → Linear net, from its raw tensors (dropout is inactive at inference)."""
    h = torch.relu(x @ state[f"{prefix}0.weight"].T + state[f"{prefix}0.bias"])
    return h @ state[f"{prefix}3.weight"].T + state[f"{prefix}3.bias"]


def _attention(attn, q_in, k_in, v_in):
    """Multi-head softmax attention of one diffusers Attention from its projections, by hand."""
    q, k, v = attn.to_q(q_in), attn.to_k(k_in), attn.to_v(v_in)  # [B, N, inner]
    b, heads = q.shape[0], attn.heads
    d = q.shape[-1] // heads
    q, k, v = (t.reshape(b, -1, heads, d).transpose(1, 2) for t in (q, k, v))  # [B, heads, N, d]
    weights = (q @ k.transpose(-1, -2) / math.sqrt(d)).softmax(-1)
    out = (weights @ v).transpose(1, 2).reshape(b, -1, heads * d)
    return attn.to_out[0](out)


def test_strength_one_is_the_hand_computed_key_value_nudge_on_one_attention_layer(tiny_model, tiny_root):
    model, _ = tiny_model
    path = tiny_root / "models" / "hypernetworks" / "tiny.pt"
    raw = torch.load(path, weights_only=True)
    net = load_hypernetwork(path)
    patch = net.attention_patch(0.7)
    patched = model.patched(attn1_patch=patch, attn2_patch=patch)
    block = transformer_map(model.unet)[("input", 1)].transformer_blocks[0]
    torch.manual_seed(2)
    n, context = torch.randn(2, 64, 32), torch.randn(2, 77, 32)  # normed tokens, text (both 32 wide)
    with torch.inference_mode():
        with attention_inputs_patched(model.unet, patched.patches, {}):
            self_out = block.attn1(n)
            cross_out = block.attn2(n, encoder_hidden_states=context)
        key_net, value_net = raw[32]
        want_self = _attention(block.attn1, n, n + _mlp(n, key_net) * 0.7, n + _mlp(n, value_net) * 0.7)
        want_cross = _attention(block.attn2, n, context + _mlp(context, key_net) * 0.7,
                                context + _mlp(context, value_net) * 0.7)
        unpatched = block.attn2(n, encoder_hidden_states=context)
    assert torch.allclose(self_out, want_self, atol=1e-5) and torch.allclose(cross_out, want_cross, atol=1e-5)
    assert not torch.allclose(unpatched, cross_out, atol=1e-3)  # outside the call the layer is itself again


class Payload:
    """Something only code can rebuild: weights-only loading refuses it."""


def test_a_pickle_that_needs_code_is_refused_with_a_clear_error(tmp_path):
    torch.save({32: ({}, {}), "extra": Payload()}, tmp_path / "unsafe.pt")
    with pytest.raises(CheckpointError, match="pickled Python code"):
        load_hypernetwork(tmp_path / "unsafe.pt")
    torch.save({"name": "nothing here"}, tmp_path / "empty.pt")
    with pytest.raises(CheckpointError, match="not a hypernetwork"):
        load_hypernetwork(tmp_path / "empty.pt")
    write_hypernetwork(tmp_path / "odd.pt", activation="tanh")
    sd = torch.load(tmp_path / "odd.pt", weights_only=True)
    torch.save({**sd, "activation_func": "gelu"}, tmp_path / "odd.pt")
    with pytest.raises(CheckpointError, match='activation "gelu"'):
        load_hypernetwork(tmp_path / "odd.pt")


def test_the_hypernetwork_branch_leaves_the_other_branch_and_the_unet_untouched(tiny_root, tiny_model):
    env = SDEnvironment(models_dir=tiny_root / "models", output_dir=tiny_root / "out", input_dir=tiny_root / "in")
    graph = _branch_graph("HypernetworkLoader", {"hypernetwork_name": "tiny.pt", "strength": 1.0})
    alone = Executor(REGISTRY, env=env).run(graph, outputs=["plain"])
    both = Executor(REGISTRY, env=env).run(graph, outputs=["p", "plain"])
    assert alone.ok and both.ok, (alone.error, both.error)
    assert torch.equal(alone.outputs["plain"][0].samples, both.outputs["plain"][0].samples)
    assert not torch.allclose(both.outputs["p"][0].samples, both.outputs["plain"][0].samples, atol=1e-4)
    model, clip = tiny_model
    attn = model.unet.down_blocks[0].attentions[0].transformer_blocks[0].attn2
    before = attn.processor
    patch = load_hypernetwork(tiny_root / "models" / "hypernetworks" / "tiny.pt").attention_patch(1.0)
    pos, neg = prompts(clip)
    sample(model.patched(attn1_patch=patch, attn2_patch=patch), pos, neg, steps=2)
    assert attn.processor is before and not attn.to_k._forward_pre_hooks
