"""Hypernetworks (NovelAI's, as AUTOMATIC1111's webui trains and saves them): small MLPs that nudge
what the UNet's attention layers compute their keys and values from.

A file is a torch pickle (.pt) of a dict:
    {320: (key_net, value_net), 640: (…), 768: (…), 1280: (…),   # by the width of the input they take
     "activation_func": "relu", "is_layer_norm": False, "use_dropout": True, "activate_output": False,
     "last_layer_dropout": False, "layer_structure": [1, 2, 1], "name": …, …}
where each net is a torch.nn.Sequential's state dict (linear.0.weight, linear.0.bias, linear.3.weight…).
It is read with torch.load(weights_only=True): a file that needs Python code to unpickle is refused.

Applied as ComfyUI's HypernetworkLoader applies it, to every transformer's self-attention and
cross-attention (its attn1_patch and attn2_patch): where a net exists for the width of the key/value
input c,
    k_in = c + key_net(c)·strength,    v_in = c + value_net(c)·strength
(queries unchanged), so strength 0 leaves the model as it was.

Each net is rebuilt as ComfyUI rebuilds it, walking the tensors named *.weight in file order: a
Linear, then the activation unless it is the last entry (or activate_output is set), then, with
is_layer_norm, a LayerNorm made of the next *.weight entry. Two consequences, both ComfyUI's:
with is_layer_norm the last Linear is activated too (the LayerNorm after it is the last entry; webui
does not activate it); activations outside ComfyUI's list are refused. Dropout layers are left out:
they act only in training (ComfyUI keeps its nets in training mode, so its results with use_dropout
files vary run to run; here they do not).
"""

from __future__ import annotations

import pickle
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .errors import CheckpointError

ACTIVATIONS = {
    "linear": torch.nn.Identity,
    "relu": torch.nn.ReLU,
    "leakyrelu": torch.nn.LeakyReLU,
    "elu": torch.nn.ELU,
    "swish": torch.nn.Hardswish,  # webui's "swish" is torch's Hardswish
    "tanh": torch.nn.Tanh,
    "sigmoid": torch.nn.Sigmoid,
    "softsign": torch.nn.Softsign,
    "mish": torch.nn.Mish,
}
PICKLE_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin")


@dataclass
class Hypernetwork:
    """Per input width, the (key net, value net) pair."""

    nets: dict[int, tuple[torch.nn.Module, torch.nn.Module]]
    name: str = ""

    def attention_patch(self, strength: float) -> HypernetworkPatch:
        return HypernetworkPatch(self.nets, float(strength))


class HypernetworkPatch:
    """An attn1/attn2 patch (q, k, v, options) -> (q, k, v): the nets' nudges on k and v inputs."""

    def __init__(self, nets: dict[int, tuple[torch.nn.Module, torch.nn.Module]], strength: float):
        self.nets, self.strength = nets, strength

    def __call__(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, options: dict):
        pair = self.nets.get(int(k.shape[-1]))
        if pair is None:
            return q, k, v
        key_net, value_net = pair
        return q, k + key_net(k) * self.strength, v + value_net(v) * self.strength


def read_hypernetwork_file(path: str | Path) -> dict:
    """The file's dict, loaded weights-only (no code runs); one-line CheckpointErrors otherwise."""
    path = Path(path)
    if path.suffix.lower() not in PICKLE_SUFFIXES:
        raise CheckpointError(f'"{path.name}": hypernetworks are .pt files (the webui format), not "{path.suffix}"')
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "Unsupported global" in str(e) or "Unsupported class" in str(e):
            raise CheckpointError(f'"{path.name}" contains pickled Python code, which sdgraph never runs (weights-only '
                                  "loading refused it): use a hypernetwork saved as plain tensors and settings") from None
        raise CheckpointError(f'"{path.name}" is not a readable hypernetwork (corrupt?): {_one_line(e)}') from None
    except (zipfile.BadZipFile, EOFError, RuntimeError, OSError, ValueError) as e:
        raise CheckpointError(f'"{path.name}" is not a readable hypernetwork (corrupt or truncated?): '
                              f"{_one_line(e)}") from None
    if not isinstance(obj, dict):
        raise CheckpointError(f'"{path.name}" holds a {type(obj).__name__}, not a hypernetwork dict')
    return obj


def build_hypernetwork(sd: Mapping, filename: str, *, device: Any = "cpu", dtype: Any = torch.float32) -> Hypernetwork:
    """The nets of a webui hypernetwork dict, in eval mode on `device` in `dtype`."""
    activation = sd.get("activation_func") or "linear"
    if activation not in ACTIVATIONS:
        raise CheckpointError(f'"{filename}": activation "{activation}" is not one ComfyUI reads '
                              f"({', '.join(ACTIVATIONS)})")
    is_layer_norm = bool(sd.get("is_layer_norm", False))
    activate_output = bool(sd.get("activate_output", False))
    nets = {}
    for key, pair in sd.items():
        try:
            width = int(key)  # the webui writes ints; a string of digits is read too
        except (TypeError, ValueError):
            continue
        if not isinstance(pair, (tuple, list)) or len(pair) != 2 or not all(isinstance(p, Mapping) for p in pair):
            raise CheckpointError(f'"{filename}": entry {key!r} is not a (key net, value net) pair of state dicts')
        pair = tuple(_net(p, activation, is_layer_norm, activate_output, f"{filename} [{key}]") for p in pair)
        for net in pair:  # each maps a width-wide input to a width-wide nudge
            try:
                out_shape = tuple(net(torch.zeros(1, width)).shape)
            except RuntimeError:
                out_shape = None
            if out_shape != (1, width):
                raise CheckpointError(f'"{filename}": the nets for width {width} do not map {width} features to {width}')
        nets[width] = tuple(net.to(device=device, dtype=dtype) for net in pair)
    if not nets:
        raise CheckpointError(f'"{filename}" is not a hypernetwork: no nets by input width (keys: '
                              f"{', '.join(str(k) for k in list(sd)[:6])})")
    return Hypernetwork(nets, Path(filename).stem)


def load_hypernetwork(path: str | Path, *, device: Any = "cpu", dtype: Any = torch.float32) -> Hypernetwork:
    path = Path(path)
    return build_hypernetwork(read_hypernetwork_file(path), path.name, device=device, dtype=dtype)


def _net(state: Mapping, activation: str, is_layer_norm: bool, activate_output: bool, where: str) -> torch.nn.Module:
    """One net rebuilt from its Sequential state dict, ComfyUI's way (see the module docstring)."""
    layers_with_weights = [k[:-len(".weight")] for k in state if isinstance(k, str) and k.endswith(".weight")]
    layers: list[torch.nn.Module] = []
    i = 0
    while i < len(layers_with_weights):
        last = i == len(layers_with_weights) - 1
        weight, bias = _pair(state, layers_with_weights[i], where)
        if weight.ndim != 2 or bias.shape != weight.shape[:1]:
            raise CheckpointError(f'"{where}": {layers_with_weights[i]} is not a linear layer ({list(weight.shape)})')
        linear = torch.nn.Linear(weight.shape[1], weight.shape[0])
        linear.load_state_dict({"weight": weight, "bias": bias})
        layers.append(linear)
        if activation != "linear" and (not last or activate_output):
            layers.append(ACTIVATIONS[activation]())
        if is_layer_norm:
            i += 1
            if i >= len(layers_with_weights):
                raise CheckpointError(f'"{where}": is_layer_norm is set but the last linear layer has no LayerNorm')
            weight, bias = _pair(state, layers_with_weights[i], where)
            if weight.ndim != 1 or bias.shape != weight.shape:
                raise CheckpointError(f'"{where}": {layers_with_weights[i]} is not a LayerNorm ({list(weight.shape)})')
            norm = torch.nn.LayerNorm(weight.shape[0])
            norm.load_state_dict({"weight": weight, "bias": bias})
            layers.append(norm)
        i += 1
    if not layers:
        raise CheckpointError(f'"{where}": a net without layers')
    return torch.nn.Sequential(*layers).eval().requires_grad_(False)


def _pair(state: Mapping, name: str, where: str) -> tuple[torch.Tensor, torch.Tensor]:
    weight, bias = state.get(f"{name}.weight"), state.get(f"{name}.bias")
    if not isinstance(weight, torch.Tensor) or not isinstance(bias, torch.Tensor):
        raise CheckpointError(f'"{where}": layer {name} needs a weight and a bias tensor')
    return weight.float(), bias.float()


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return (text[0] if text else type(e).__name__)[:200]
