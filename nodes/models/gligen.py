"""GLIGEN (Li et al. 2023, "Open-Set Grounded Text-to-Image Generation", arXiv:2301.07093): objects
described in words, each placed in a box of the image, through gated self-attention layers added
beside a frozen SD UNet's transformers.

A file in the original release's layout (the one ComfyUI's GLIGENLoader reads):
    position_net.null_positive_feature [D], .null_position_feature [64],
    position_net.linears.{0,2,4}.{weight,bias}            the grounding-token MLP
    input_blocks.N.1.transformer_blocks.0.fuser.*         one gated self-attention ("fuser") per UNet
    middle_block.1.transformer_blocks.0.fuser.*           transformer, named by ComfyUI's block numbers
    output_blocks.N.1.transformer_blocks.0.fuser.*
(a fuser: linear, attn.to_q/k/v, attn.to_out.0, ff.net.0.proj, ff.net.2, norm1, norm2, alpha_attn,
alpha_dense — diffusers' GatedSelfAttentionDense has the same names, so it is used as is).

How it acts (ComfyUI's comfy/gligen.py, and samplers.get_area_and_mult):
1. GLIGENTextBoxApply encodes the phrase; its pooled CLIP embedding (before any text projection)
   and the box in latent cells go on the conditioning: extras["gligen"] = ("position", GLIGEN,
   [(pooled [1, D], h, w, y, x), …]).
2. For each UNet call, every conditioning with boxes gets grounding tokens from the position net:
   boxes become (x1, y1, x2, y2) divided by the latent's (crop's) width and height, are Fourier-
   embedded and joined to the phrase embedding; the unused of the 30 slots take the learnt null
   features; an MLP maps each slot to a token [B, 30, D'].
3. In each transformer block, after self-attention is added and before cross-attention (ComfyUI's
   middle_patch), the fuser of that transformer updates the visual tokens x [B, N, C]:
       x = x + tanh(α_attn)·Attn(LN1([x; linear(objs)]))[:, :N]
       x = x + tanh(α_dense)·FF(LN2(x))
   With both gates at 0 (an untrained fuser) x passes unchanged.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from nodegraph import NodeInputError, UserError

from .build import fill
from .detect import describe_keys
from .errors import CheckpointError
from .files import TensorFile

MAX_OBJECTS = 30  # grounding slots per conditioning (ComfyUI's max_objs)
FOURIER_FREQS = 8
FOURIER_TEMPERATURE = 100
POSITION_DIM = FOURIER_FREQS * 2 * 4  # sin and cos of x1, y1, x2, y2 at each frequency

_FUSER_KEY = re.compile(r"(input_blocks|middle_block|output_blocks)\.(\d+)\.1\.transformer_blocks\.(\d+)\.fuser\.(.+)$")
_POSITION_KEY = re.compile(r"(?:^|\.)position_net\.(.+)$")
_BLOCK_NAMES = {"input_blocks": "input", "middle_block": "middle", "output_blocks": "output"}


def fourier_embedding(boxes: torch.Tensor) -> torch.Tensor:
    """[..., 4] -> [..., 64]: for each frequency f_k = 100^(k/8), sin(f_k·box) then cos(f_k·box)."""
    freqs = FOURIER_TEMPERATURE ** (torch.arange(FOURIER_FREQS) / FOURIER_FREQS)  # float32, as ComfyUI's
    parts = []
    for f in freqs:
        parts += [torch.sin(f * boxes), torch.cos(f * boxes)]
    return torch.cat(parts, dim=-1)


class PositionNet(torch.nn.Module):
    """Grounding tokens from (phrase embedding, box) slots; empty slots take learnt null features."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.null_positive_feature = torch.nn.Parameter(torch.zeros([in_dim]))
        self.null_position_feature = torch.nn.Parameter(torch.zeros([POSITION_DIM]))
        self.linears = torch.nn.Sequential(torch.nn.Linear(in_dim + POSITION_DIM, 512), torch.nn.SiLU(),
                                           torch.nn.Linear(512, 512), torch.nn.SiLU(), torch.nn.Linear(512, out_dim))

    def forward(self, boxes: torch.Tensor, masks: torch.Tensor, phrases: torch.Tensor) -> torch.Tensor:
        masks = masks.unsqueeze(-1)  # [B, 30, 1]
        xyxy = fourier_embedding(boxes)  # [B, 30, 64]
        null_phrase = self.null_positive_feature.to(boxes.device, boxes.dtype).view(1, 1, -1)
        null_xyxy = self.null_position_feature.to(boxes.device, boxes.dtype).view(1, 1, -1)
        phrases = phrases * masks + (1 - masks) * null_phrase
        xyxy = xyxy * masks + (1 - masks) * null_xyxy
        return self.linears(torch.cat([phrases, xyxy], dim=-1))  # [B, 30, D']


@dataclass
class Gligen:
    """GLIGEN: the position net and the fusers by ComfyUI's (block, number) of their transformer."""

    position_net: Any
    fusers: dict[tuple[str, int], Any] = field(default_factory=dict)
    dtype: Any = None
    device: Any = None
    name: str = ""

    @property
    def in_dim(self) -> int:
        """The width of the phrase embeddings it reads (768: CLIP ViT-L, SD 1.x)."""
        return int(self.position_net.null_positive_feature.shape[0])

    def cache_nbytes(self) -> int:
        modules = [self.position_net, *self.fusers.values()]
        return int(sum(p.numel() * p.element_size() for m in modules for p in m.parameters()))

    def grounding_tokens(self, boxes: Sequence[tuple], latent_hw: tuple[int, int], device: Any) -> torch.Tensor:
        """[1, 30, D'] float32 tokens for boxes (pooled, h, w, y, x) in latent cells of a latent (h, w)."""
        lh, lw = latent_hw
        # 1. Slots: (x1, y1, x2, y2) in 0..1 of the latent, the phrase, a 1 in the mask; the rest 0.
        masks = torch.zeros([MAX_OBJECTS])
        xyxy = torch.zeros([MAX_OBJECTS, 4])
        phrases = torch.zeros([MAX_OBJECTS, self.in_dim])
        for i, (pooled, h, w, y, x) in enumerate(boxes[:MAX_OBJECTS]):
            xyxy[i] = torch.tensor((x / lw, y / lh, (x + w) / lw, (y + h) / lh))
            phrases[i] = pooled.reshape(-1).float()
            masks[i] = 1.0
        # 2. The position net, in float32 (ComfyUI casts the tokens to the UNet's dtype where used).
        with torch.no_grad():
            return self.position_net(xyxy[None].to(device), masks[None].to(device), phrases[None].to(device))

    def check_fits(self, widths: dict[tuple[str, int], int]) -> None:
        """Raise unless each fuser has a transformer of its width in the UNet ((block, number) → width)."""
        for place, fuser in self.fusers.items():
            width = widths.get(place)
            if width != fuser.linear.out_features:
                there = "no transformer" if width is None else f"a {width}-wide transformer"
                raise UserError(f'the GLIGEN model "{self.name}" does not fit this UNet: it has a '
                                f"{fuser.linear.out_features}-wide fuser for {place[0]} block {place[1]}, the UNet "
                                f"{there} there (GLIGEN models are made for one model family, e.g. SD 1.x)")


def _heads(query_dim: int, key_dim: int) -> tuple[int, int]:
    """(heads, head width) of a fuser's attention, as ComfyUI picks them: SD 1.x's 8 heads for
    768-wide grounding tokens, else 64-wide heads (SD 2.x); 8 heads too where 64 does not divide the
    width (only tiny test models)."""
    if key_dim == 768 or query_dim % 64:
        return 8, query_dim // 8
    return query_dim // 64, 64


def load_gligen(path: str | Path, *, device: Any = "cpu", dtype: Any = torch.float32) -> Gligen:
    """A GLIGEN file (original release layout, any prefix before the names above) as a Gligen.
    The fusers run in `dtype`; the small position net stays in float32."""
    from diffusers.models.attention import GatedSelfAttentionDense

    path = Path(path)
    with TensorFile(path) as f:
        names = list(f.shapes)
        # 1. Sort the names: fuser tensors by their transformer, position-net tensors.
        fuser_names: dict[tuple[str, int], dict[str, str]] = {}
        depths: set[str] = set()
        position_names: dict[str, str] = {}
        for name in names:
            m = _FUSER_KEY.search(name)
            if m:
                block, number, depth, rest = m.groups()
                place = (_BLOCK_NAMES[block], 0 if block == "middle_block" else int(number))
                fuser_names.setdefault(place, {})[rest] = name
                depths.add(depth)
                continue
            m = _POSITION_KEY.search(name)
            if m:
                position_names[m.group(1)] = name
        if not fuser_names or "null_positive_feature" not in position_names:
            raise CheckpointError(f'"{path.name}" is not a GLIGEN model (no position_net and fusers: '
                                  f"{describe_keys(names)})")
        if depths != {"0"}:
            raise CheckpointError(f'"{path.name}": a GLIGEN with fusers in transformer blocks {sorted(depths)}; '
                                  "only one per transformer (block 0) is supported")
        # 2. The position net, float32.
        position_sd = {k: t for k, t in zip(position_names, f.read(position_names.values(), dtype=torch.float32,
                                                                   device=device).values(), strict=True)}
        in_dim = int(position_sd["null_positive_feature"].shape[0])
        out_dim = int(position_sd["linears.4.weight"].shape[0]) if "linears.4.weight" in position_sd else 0
        with torch.device("meta"):
            position_net = PositionNet(in_dim, out_dim)
        fill(position_net, position_sd, what="GLIGEN position net", filename=path.name, device=device)
        # 3. The fusers, in the run's dtype.
        fusers = {}
        for place, parts in fuser_names.items():
            sd = dict(zip(parts, f.read(parts.values(), dtype=dtype, device=device).values(), strict=True))
            if "linear.weight" not in sd:
                raise CheckpointError(f'"{path.name}": the GLIGEN fuser of {place[0]} block {place[1]} has no linear.weight')
            query_dim, key_dim = (int(n) for n in sd["linear.weight"].shape)
            heads, head_dim = _heads(query_dim, key_dim)
            with torch.device("meta"):
                fuser = GatedSelfAttentionDense(query_dim, key_dim, heads, head_dim)
            fusers[place] = fill(fuser, sd, what="GLIGEN fuser", filename=path.name, device=device)
    return Gligen(position_net, fusers, dtype, torch.device(device), path.stem)


# -- on a conditioning ------------------------------------------------------------------------------


def phrase_embedding(clip: Any, text: str, embeddings: Any = None) -> torch.Tensor:
    """The text's pooled CLIP embedding [1, D] before any text projection (ComfyUI's
    return_pooled="unprojected"): the last layer's output at the end token, after the final LayerNorm."""
    from nodes.text import encode_text

    if clip.second is not None:
        raise NodeInputError("clip", "GLIGEN models are for SD 1.x/2.x; this is SDXL's pair of text encoders")
    encoder = clip.text_encoder
    if getattr(encoder, "text_projection", None) is not None:
        clip = replace(clip, text_encoder=encoder.text_model)  # the transformer without the projection
    return encode_text(clip, text, embeddings)[0].pooled


def add_text_box(conditioning: Sequence[Any], gligen: Gligen, pooled: torch.Tensor,
                 box: tuple[int, int, int, int]) -> list[Any]:
    """Each entry with one more (phrase, box (h, w, y, x) in latent cells) for this GLIGEN model;
    the boxes already there are kept (ComfyUI's GLIGENTextBoxApply)."""
    if pooled.shape[-1] != gligen.in_dim:
        raise NodeInputError("gligen_textbox_model", f"this GLIGEN model reads {gligen.in_dim}-wide text embeddings; "
                             f"this CLIP gives {pooled.shape[-1]}-wide ones: use a GLIGEN model for this checkpoint")
    out = []
    for entry in conditioning:
        previous = entry.extras.get("gligen")
        boxes = list(previous[2]) if previous is not None else []
        if len(boxes) >= MAX_OBJECTS:
            raise NodeInputError("conditioning_to", f"GLIGEN places at most {MAX_OBJECTS} boxes per conditioning")
        out.append(replace(entry, extras={**entry.extras, "gligen": ("position", gligen, [*boxes, (pooled, *box)])}))
    return out


def middle_patch(entries: Sequence[tuple[Any, int]], latent_hw: tuple[int, int], device: Any,
                 widths: dict[tuple[str, int], int]) -> Callable | None:
    """ComfyUI's middle_patch for one UNet call whose batch is `entries` ((entry, rows) in order):
    x [B, N, C] -> x with each GLIGEN conditioning's fuser applied to its own rows (others are left
    as they are, as ComfyUI runs them in calls of their own). options["block"] names the transformer.
    None when no entry has boxes."""
    groups = []
    row = 0
    for entry, n in entries:
        spec = entry.extras.get("gligen")
        if spec is not None:
            _kind, gligen, boxes = spec
            gligen.check_fits(widths)
            groups.append((gligen, row, row + n, gligen.grounding_tokens(boxes, latent_hw, device)))
        row += n
    if not groups:
        return None

    def patch(x: torch.Tensor, options: dict) -> torch.Tensor:
        out = x
        for gligen, start, end, objs in groups:
            fuser = gligen.fusers.get(options["block"])
            if fuser is None:
                continue
            objs = objs.to(x.dtype).expand(end - start, -1, -1)  # [rows, 30, D']
            if start == 0 and end == x.shape[0]:
                out = fuser(out, objs)
                continue
            if out is x:
                out = x.clone()
            out[start:end] = fuser(x[start:end], objs)
        return out

    return patch
