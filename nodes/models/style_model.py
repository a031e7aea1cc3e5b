"""Style models (STYLE_MODEL): TencentARC's T2I-Adapter "style" model, as ComfyUI's load_style_model and
StyleModelApply use it.

The style adapter reads a CLIP ViT-L/14 image encoding (CLIP_VISION_OUTPUT's last hidden state,
[B, 257, 1024]), appends its learned query tokens, runs three transformer blocks, and returns its
query tokens projected into CLIP-L's text width: 8 extra "words" per image [B, 8, 768], which
StyleModelApply appends to the prompt's tokens (SD 1.x).

Files: `style_embedding` [1, tokens, width], `ln_pre`, `ln_post`, `proj` [width, context] and
`transformer_layes.N.…` (sic) blocks of torch's MultiheadAttention. Flux Redux files
(`redux_down.weight`) are recognised and refused: they are for Flux, which sdgraph does not run.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..core.values import ConditioningEntry
from .errors import CheckpointError
from .files import TensorFile

NUM_HEADS = 8  # ComfyUI builds every style adapter with 8 heads (the file does not say)


class _QuickGELU(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class _Block(nn.Module):
    """A pre-LayerNorm transformer block with OpenAI CLIP's names (ln_1, attn, ln_2, mlp.c_fc/c_proj)."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.attn = nn.MultiheadAttention(width, heads)
        self.ln_1 = nn.LayerNorm(width)
        self.mlp = nn.Sequential()
        self.mlp.add_module("c_fc", nn.Linear(width, width * 4))
        self.mlp.add_module("gelu", _QuickGELU())
        self.mlp.add_module("c_proj", nn.Linear(width * 4, width))
        self.ln_2 = nn.LayerNorm(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: [L, N, W] (sequence first)
        h = self.ln_1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.mlp(self.ln_2(x))


class StyleAdapter(nn.Module):
    """The T2I style adapter: image tokens + learned queries → transformer → the queries, projected."""

    def __init__(self, width: int = 1024, context_dim: int = 768, heads: int = NUM_HEADS, layers: int = 3,
                 num_token: int = 8):
        super().__init__()
        self.transformer_layes = nn.Sequential(*[_Block(width, heads) for _ in range(layers)])
        self.num_token = num_token
        self.style_embedding = nn.Parameter(torch.zeros(1, num_token, width))
        self.ln_post = nn.LayerNorm(width)
        self.ln_pre = nn.LayerNorm(width)
        self.proj = nn.Parameter(torch.zeros(width, context_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # 1. The learned queries after the image's tokens: [B, T + q, W].
        queries = self.style_embedding.expand(x.shape[0], -1, -1).to(x.dtype)
        h = self.ln_pre(torch.cat([x, queries], dim=1))
        # 2. The transformer works sequence-first: [T + q, B, W].
        h = self.transformer_layes(h.permute(1, 0, 2)).permute(1, 0, 2)
        # 3. Only the queries come out, normalised and projected: [B, q, context].
        return self.ln_post(h[:, -self.num_token:, :]) @ self.proj


@dataclass
class StyleModel:
    """STYLE_MODEL: the adapter and the image width it reads."""

    model: StyleAdapter
    name: str = ""

    @property
    def width(self) -> int:
        return int(self.model.style_embedding.shape[-1])

    @property
    def context_dim(self) -> int:
        return int(self.model.proj.shape[-1])

    def cache_nbytes(self) -> int:
        return int(sum(p.numel() * p.element_size() for p in self.model.parameters()))


def load_style_model(path: str | Path) -> StyleModel:
    """StyleModelLoader: a T2I-Adapter style model (float32, CPU: it is small and runs once per image)."""
    from .detect import describe_keys, sniff_other_kind

    with TensorFile(path) as f:
        names = list(f.shapes)
        if "redux_down.weight" in f.shapes:
            raise CheckpointError(f'"{f.name}" is a Flux Redux style model: it is for Flux, which sdgraph does not '
                                  "run; the style models for SD 1.x are T2I-Adapter style files (t2iadapter_style)")
        if "style_embedding" not in f.shapes or "proj" not in f.shapes:
            other = sniff_other_kind(names)
            why = f"it looks like {other}" if other else f"found {describe_keys(names)}"
            raise CheckpointError(f'"{f.name}" is not a style model (no style_embedding): {why}')
        sd = f.read(names, dtype=torch.float32)
    _, num_token, width = (int(d) for d in sd["style_embedding"].shape)
    layers = len({n.split(".")[1] for n in sd if n.startswith("transformer_layes.")})
    model = StyleAdapter(width, int(sd["proj"].shape[-1]), NUM_HEADS, layers, num_token)
    try:
        model.load_state_dict(sd, strict=True)
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0][:200]
        raise CheckpointError(f'"{Path(path).name}": the style model weights do not fit: {first}') from None
    return StyleModel(model.eval().requires_grad_(False), Path(path).stem)


def style_tokens(style: StyleModel, clip_vision_output: Any) -> torch.Tensor:
    """The style tokens of every image, all in one row: [1, B·q, context] (ComfyUI's get_cond, flattened)."""
    hidden = clip_vision_output.last_hidden_state
    if hidden.shape[-1] != style.width:
        raise ValueError(f"the style model reads {style.width}-wide image tokens (CLIP ViT-L/14: 1024); this "
                         f"CLIP vision output has {hidden.shape[-1]}")
    with torch.inference_mode():
        cond = style.model(hidden.float().cpu())  # [B, q, context]
    return cond.flatten(start_dim=0, end_dim=1).unsqueeze(0)


def apply_style(conditioning: Sequence[ConditioningEntry], tokens: torch.Tensor, strength: float,
                strength_type: str) -> list[ConditioningEntry]:
    """Every entry with the style tokens appended to its own (ComfyUI's StyleModelApply).

    "multiply" scales the tokens by `strength`. "attn_bias" leaves them as they are and records an
    attention bias of log(strength) from every other token to them in the entry's `attention_mask`
    (ComfyUI's keys); as in ComfyUI, SD UNets do not read that mask, so there it changes nothing.
    """
    if strength_type == "multiply":
        tokens = tokens * strength
    n = tokens.shape[1]
    out = []
    for e in conditioning:
        extras = dict(e.extras)
        if strength_type == "attn_bias" and strength != 1.0:
            extras.update(_attention_bias(e.cond, extras, n, strength))
        out.append(replace(e, cond=torch.cat((e.cond, tokens.to(e.cond.dtype)), dim=1), extras=extras))
    return out


def _attention_bias(txt: torch.Tensor, extras: dict[str, Any], n: int, strength: float) -> dict[str, Any]:
    """ComfyUI's mask for joint attention: text tokens, then the n new ones, then any reference-image
    tokens; the new ones are reached with bias log(strength) (-inf for 0), the rest keep theirs."""
    bias = math.log(strength) if strength > 0 else float("-inf")
    ref_h, ref_w = extras.get("attention_mask_img_shape", (1, 1))
    n_ref, n_txt = ref_h * ref_w, txt.shape[1]
    mask = extras.get("attention_mask")
    if mask is None:
        mask = torch.zeros((txt.shape[0], n_txt + n_ref, n_txt + n_ref), dtype=torch.float16)
    if mask.dtype == torch.bool:
        mask = torch.log(mask.to(dtype=torch.float16))
    size = n_txt + n + n_ref
    new = torch.zeros((txt.shape[0], size, size), dtype=torch.float16)  # [B, all, all]
    new[:, :n_txt, :n_txt] = mask[:, :n_txt, :n_txt]
    new[:, :n_txt, n_txt + n:] = mask[:, :n_txt, n_txt:]
    new[:, n_txt + n:, :n_txt] = mask[:, n_txt:, :n_txt]
    new[:, n_txt + n:, n_txt + n:] = mask[:, n_txt:, n_txt:]
    new[:, :n_txt, n_txt:n_txt + n] = bias
    new[:, n_txt + n:, n_txt:n_txt + n] = bias
    return {"attention_mask": new, "attention_mask_img_shape": (ref_h, ref_w)}
