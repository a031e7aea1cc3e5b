"""LoRA and LyCORIS files applied to a MODEL or CLIP the way ComfyUI applies them.

A file is a set of per-layer weight deltas. Formats read (key names below the tower prefix):
  kohya      `lora_unet_<module path with _>`, `lora_te_…` (SDXL: `lora_te1_…` CLIP-L, `lora_te2_…`
             bigG): `.lora_down.weight`, `.lora_up.weight`, optional `.alpha`
  diffusers  `unet.<module path>` (attention processors spelled `.processor.to_q…`), with
             `_lora.down/up.weight`, `.lora.down/up.weight` or `.lora_A/.lora_B.weight`;
             `text_encoder.…` / `text_encoder_2.…` for the text towers
  LyCORIS    LoHa (`hada_w1_a/b`, `hada_w2_a/b`) and LoKr (`lokr_w1[_a/_b]`, `lokr_w2[_a/_b]`)

Each delta is ΔW = scale · (up @ down) (LoHa: (w1a@w1b) ⊙ (w2a@w2b); LoKr: w1 ⊗ w2), with scale =
alpha / rank when the file has an alpha and 1 otherwise, computed in float32 and added to a float32
copy of the weight, then cast back to its dtype (ComfyUI's rounding). Stacked LoRAs add their deltas
one after another, in order.

Never in place: `apply` returns a copy of the module tree that shares every tensor with the
original except the patched weights, so the MODEL/CLIP other branches hold (and the cache) stay
untouched and memory grows only by the patched layers.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .errors import CheckpointError
from .files import TensorFile

_LORA_SUFFIXES = (
    (".lora_down.weight", ".lora_up.weight"),
    ("_lora.down.weight", "_lora.up.weight"),
    (".lora.down.weight", ".lora.up.weight"),
    (".lora_A.weight", ".lora_B.weight"),
)
_HADA = ("hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b")


@dataclass
class Delta:
    """One layer's change: a function of the weight's shape giving ΔW (float32), and where it came from."""

    kind: str  # "lora", "loha", "lokr"
    tensors: dict[str, torch.Tensor]
    alpha: float | None = None

    def compute(self, shape: torch.Size) -> torch.Tensor:
        t = {k: v.float() for k, v in self.tensors.items()}
        if self.kind == "lora":
            up, down = t["up"], t["down"]
            rank = down.shape[0]
            delta = up.flatten(1) @ down.flatten(1)
        elif self.kind == "loha":
            rank = t["w1b"].shape[0]
            delta = (t["w1a"] @ t["w1b"]) * (t["w2a"] @ t["w2b"])
        else:  # lokr
            w1 = t["w1"] if "w1" in t else t["w1a"] @ t["w1b"]
            w2 = t["w2"] if "w2" in t else t["w2a"].flatten(1) @ t["w2b"].flatten(1)
            rank = t["w1b"].shape[0] if "w1b" in t else (t["w2b"].shape[0] if "w2b" in t else None)
            delta = torch.kron(w1, w2.reshape(w2.shape[0], -1))
            if rank is None:  # full-rank factors: ComfyUI ignores alpha
                return delta.reshape(shape)
        scale = self.alpha / rank if self.alpha is not None else 1.0
        return (delta * scale).reshape(shape)


@dataclass
class LoraFile:
    """The deltas of one file, grouped by tower ("unet", "te1", "te2") and keyed by the file's own
    module name (underscored kohya names or dotted diffusers paths)."""

    name: str
    towers: dict[str, dict[str, Delta]] = field(default_factory=dict)
    unknown: list[str] = field(default_factory=list)


def read_lora(path: str | Path) -> LoraFile:
    """Read a LoRA/LyCORIS file into deltas; a file that holds none is a one-line CheckpointError."""
    path = Path(path)
    with TensorFile(path) as f:
        sd = f.read(list(f.shapes))
    out = LoraFile(path.name)
    used: set[str] = set()
    for key in sd:
        for down_suffix, up_suffix in _LORA_SUFFIXES:
            if key.endswith(down_suffix) and key[: -len(down_suffix)] + up_suffix in sd:
                module = key[: -len(down_suffix)]
                _add(out, module, Delta("lora", {"down": sd[key], "up": sd[module + up_suffix]}, _alpha(sd, module)))
                used |= {key, module + up_suffix, module + ".alpha"}
        if key.endswith(".hada_w1_a"):
            module = key[: -len(".hada_w1_a")]
            parts = {name: sd.get(f"{module}.{name}") for name in _HADA}
            if all(v is not None for v in parts.values()):
                tensors = {"w1a": parts["hada_w1_a"], "w1b": parts["hada_w1_b"],
                           "w2a": parts["hada_w2_a"], "w2b": parts["hada_w2_b"]}
                _add(out, module, Delta("loha", tensors, _alpha(sd, module)))
                used |= {f"{module}.{n}" for n in _HADA} | {module + ".alpha"}
        if re.search(r"\.lokr_w1(_a)?$", key):
            module = key.rsplit(".", 1)[0]
            tensors = {short: sd[f"{module}.lokr_{long}"] for short, long in
                       (("w1", "w1"), ("w1a", "w1_a"), ("w1b", "w1_b"), ("w2", "w2"), ("w2a", "w2_a"), ("w2b", "w2_b"))
                       if f"{module}.lokr_{long}" in sd}
            _add(out, module, Delta("lokr", tensors, _alpha(sd, module)))
            used |= {f"{module}.lokr_{n}" for n in ("w1", "w1_a", "w1_b", "w2", "w2_a", "w2_b")} | {module + ".alpha"}
    out.unknown = sorted(k for k in sd if k not in used)
    if not out.towers:
        raise CheckpointError(f'"{path.name}" holds no LoRA or LyCORIS weights (found e.g. {next(iter(sd), "nothing")})')
    return out


def _alpha(sd: Mapping[str, torch.Tensor], module: str) -> float | None:
    t = sd.get(module + ".alpha")
    return float(t) if t is not None else None


def _add(out: LoraFile, module: str, delta: Delta) -> None:
    for prefix, tower in (("lora_unet_", "unet"), ("lora_te1_", "te1"), ("lora_te2_", "te2"), ("lora_te_", "te1"),
                          ("unet.", "unet"), ("text_encoder_2.", "te2"), ("text_encoder.", "te1")):
        if module.startswith(prefix):
            out.towers.setdefault(tower, {})[module[len(prefix):]] = delta
            return
    out.towers.setdefault("unet", {})[module] = delta  # bare diffusers UNet names


# -- matching file names to modules ------------------------------------------------------------------
def _aliases(module_name: str, ldm_names: Mapping[str, str]) -> Iterable[str]:
    """The names a file may use for one module: dotted, underscored, LDM-style, diffusers processors."""
    bare = module_name.removeprefix("text_model.")
    names = {module_name, bare, "text_model." + bare}  # transformers 5 has no text_model level
    if module_name in ldm_names:
        names.add(ldm_names[module_name])
    for name in list(names):
        names.add(name.replace(".", "_"))
        for proj in ("to_q", "to_k", "to_v"):
            names.add(name.replace(f".{proj}", f".processor.{proj}"))
        names.add(name.replace(".to_out.0", ".processor.to_out"))
    return names


def module_index(module: torch.nn.Module, ldm_names: Mapping[str, str] | None = None) -> dict[str, str]:
    """File module name → this module tree's name, for every Linear/Conv2d."""
    index: dict[str, str] = {}
    for name, sub in module.named_modules():
        if isinstance(sub, torch.nn.Linear | torch.nn.Conv2d):
            for alias in _aliases(name, ldm_names or {}):
                index.setdefault(alias, name)
    return index


def ldm_module_names(unet: torch.nn.Module) -> dict[str, str]:
    """diffusers UNet module name → its original LDM name (kohya's SDXL files use those)."""
    from .convert import LayoutError, unet_to_ldm

    names = {n for n, m in unet.named_modules() if isinstance(m, torch.nn.Linear | torch.nn.Conv2d)}
    out = {}
    for name in names:
        try:
            [ldm] = unet_to_ldm({name + ".weight": None}, dict(unet.config))
        except (LayoutError, ValueError, AttributeError):
            continue
        out[name] = ldm.removesuffix(".weight")
    return out


def patch_model(model: Any, lora: LoraFile, strength: float) -> Any:
    """MODEL with this LoRA's UNet deltas added at `strength` (ComfyUI's LoraLoader, model side)."""
    from dataclasses import replace

    deltas = lora.towers.get("unet")
    if strength == 0.0 or not deltas:
        return model
    base = model.base_unet if model.base_unet is not None else model.unet
    patches = (*model.weight_patches, (deltas, strength))
    unet = _patched(base, patches, module_index(base, ldm_module_names(base)), lora.name, "UNet")
    return replace(model, unet=unet, base_unet=base, weight_patches=patches)


def patch_clip(clip: Any, lora: LoraFile, strength: float) -> Any:
    """CLIP with the LoRA's text-encoder deltas (te1: CLIP-L / the only tower; te2: SDXL's bigG)."""
    from dataclasses import replace

    if strength == 0.0:
        return clip
    out = clip
    for tower, attr in (("te1", None), ("te2", "second")):
        deltas = lora.towers.get(tower)
        target = out if attr is None else getattr(out, attr)
        if not deltas or target is None:
            continue
        base = target.base_text_encoder if target.base_text_encoder is not None else target.text_encoder
        patches = (*target.weight_patches, (deltas, strength))
        te = _patched(base, patches, module_index(base), lora.name, "text encoder")
        patched = replace(target, text_encoder=te, base_text_encoder=base, weight_patches=patches)
        out = patched if attr is None else replace(out, second=patched)
    return out


def _patched(base: torch.nn.Module, patches, index, file_name: str, what: str) -> torch.nn.Module:
    import logging

    module, missed, _ = apply(base, list(patches), index)
    last = patches[-1][0]
    if missed and len([m for m in missed if m in last]) == len(last):
        raise CheckpointError(f'"{file_name}": none of its {len(last)} {what} layers is in this model '
                              "(a LoRA for another model family?)")
    if missed:
        logging.getLogger(__name__).warning("%s: %d %s LoRA layers not loaded (e.g. %s)", file_name, len(missed),
                                            what, missed[0])
    return module


def apply(module: torch.nn.Module, patches: list[tuple[dict[str, Delta], float]],
          index: Mapping[str, str]) -> tuple[torch.nn.Module, list[str], int]:
    """A copy of `module` with each (deltas, strength) added in order; shares every untouched tensor.

    Returns (copy, file names that matched no layer, bytes of the new weights).
    """
    targets: dict[str, list[tuple[Delta, float]]] = {}
    missed: list[str] = []
    for deltas, strength in patches:
        for file_name, delta in deltas.items():
            target = index.get(file_name)
            if target is None:
                missed.append(file_name)
            elif strength != 0.0:
                targets.setdefault(target, []).append((delta, strength))
    # Share every parameter and buffer: deepcopy then copies only the module objects.
    memo = {id(t): t for t in (*module.parameters(), *module.buffers())}
    patched = copy.deepcopy(module, memo)
    new_bytes = 0
    with torch.no_grad():
        for name, changes in targets.items():
            layer = patched.get_submodule(name)
            weight = layer.weight
            w = weight.detach().float().clone()
            for delta, strength in changes:  # stacked loaders: separate fp32 adds, in order
                w += strength * delta.compute(w.shape).to(w.device)
            layer.weight = torch.nn.Parameter(w.to(weight.dtype), requires_grad=False)
            new_bytes += layer.weight.numel() * layer.weight.element_size()
    return patched, missed, new_bytes
