"""Does the shape word's cross-attention map point where the shape was drawn?  (docs/bundled-model.md,
"Cross-attention localisation")

Samples the bundled model's eval prompts (tools/eval_bundled_model.py's "seen" split: one large shape,
seed 1000 + i, euler/normal, 20 steps, cfg 5, empty negative prompt) with the trace recorder
(nodes/sampling/trace.py) and, per way of computing the map, prints the share of the shape word's
attention mass that lies in the region where the shape was drawn, per shape and averaged:

    share = Σ_region map / Σ_picture map        (the word's raw softmax(QKᵀ) column, heads averaged)

Ways of computing the map (each row of the table):
  levels    which UNet attention resolutions (and layers) are averaged: 8×8+4×4, 8×8, one layer
  steps     which sampler steps are summed: all, the second half, those with σ ≤ a threshold
  upsample  how an 8×8 (or 4×4) map is brought to the 64×64 picture: nearest (one value per latent
            cell) or bilinear (which spreads each cell's mass into its neighbours)
Regions (both printed, side by side):
  pixels    the drawn shape's pixels (the largest blob far from the border's colour)
  cells     every 8×8-px latent cell the shape touches: the finest region an 8×8 map can name
The "uniform" row is what a flat map gets: the region's share of the picture.

    python tools/measure_attention.py                 # all 32 seen prompts (about a minute on 1 core)
    python tools/measure_attention.py --prompts 8 --per-step
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tools"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import eval_bundled_model as ev  # noqa: E402
import numpy as np  # noqa: E402
import shapes_data as sd  # noqa: E402

SIDE = sd.IMAGE_SIZE
CELL = 8  # pixels per latent cell


def shape_region(image) -> np.ndarray | None:
    """[64, 64] bool: the drawn shape's pixels, the largest blob far (> 60 RGB) from the border's
    median colour; None when nothing of at least 12 pixels was drawn."""
    a = np.asarray(image.convert("RGB"), dtype=np.float32)
    border = np.concatenate([a[0], a[-1], a[:, 0], a[:, -1]])
    fg = np.sqrt(((a - np.median(border, axis=0)) ** 2).sum(-1)) > 60
    blobs = sorted(sd._components(fg), key=lambda b: -b.sum())
    return blobs[0] if blobs and blobs[0].sum() >= 12 else None


def touched_cells(region: np.ndarray, cell: int = CELL) -> np.ndarray:
    """The region grown to every whole latent cell it touches (same [H, W] bool)."""
    h, w = region.shape
    cells = region.reshape(h // cell, cell, w // cell, cell).any(axis=(1, 3))
    return np.kron(cells, np.ones((cell, cell), dtype=bool))


def share_in(total: np.ndarray, region: np.ndarray) -> float:
    """The part of a map's mass [H, W] inside a region."""
    return float(total[region].sum() / total.sum())


def upsample(m: np.ndarray, mode: str, side: int = SIDE) -> np.ndarray:
    """[h, w] -> [side, side]: nearest (each cell's value over its pixels) or bilinear."""
    import torch

    t = torch.from_numpy(np.ascontiguousarray(m, dtype=np.float32))[None, None]
    kw = {"align_corners": False} if mode == "bilinear" else {}
    return torch.nn.functional.interpolate(t, size=(side, side), mode=mode, **kw)[0, 0].numpy()


# -- recording every attention layer on its own --------------------------------------------------


def layer_recorder():
    """A TraceRecorder that also keeps each cross-attention layer's map of the positive prompt, per
    UNet call (the trace itself keeps only each resolution's layer mean)."""
    from nodes.sampling.trace import TraceRecorder

    class LayerRecorder(TraceRecorder):
        def __init__(self, **kw):
            super().__init__(**kw)
            self.names: dict[int, str] = {}
            self.layer_calls: list[dict[str, np.ndarray]] = []  # per cond UNet call: layer -> [q, K]
            self._layers: dict[str, np.ndarray] = {}

        def attention_on(self, unet):
            self.names = {id(m): n for n, m in unet.named_modules() if n.endswith("attn2")}
            return super().attention_on(unet)

        def unet_call_starting(self, chunks, b):
            self._layers = {}
            super().unet_call_starting(chunks, b)

        def _capture(self, attn, hidden_states, context):
            before = {q: acc[0].clone() for q, acc in self._attn_acc.items()}
            super()._capture(attn, hidden_states, context)
            for q, acc in self._attn_acc.items():  # the one query length this layer added to
                if q not in before or not bool((acc[0] == before[q]).all()):
                    self._layers[self.names[id(attn)]] = (acc[0] - before.get(q, 0)).float().numpy()

        def unet_call_done(self, chunks, out):
            if self._attn_row is not None and self._layers:
                self.layer_calls.append(self._layers)
            super().unet_call_done(chunks, out)

    return LayerRecorder


def run_prompt(model, clip, vae, negative, text: str, seed: int, steps: int, cfg: float):
    """Sample one prompt as the eval does; (image, words, sigmas, layer maps {name: [steps, q, K]},
    the trace's default summed map [K, h, w] from nodes.sampling.trace, each step's x̂₀ decoded)."""
    import torch

    import nodes.sampling.trace as trace_mod
    from nodes.core.values import Latent
    from nodes.imaging.tiles import image_to_pils
    from nodes.imaging.vae import decode
    from nodes.text import encode_tokens, tokenize

    tokens = tokenize(clip.tokenizer, text, pad_id=clip.pad_id)
    words = [w for chunk in tokens.words for w in chunk]
    made = []
    recorder_class = layer_recorder()
    original = trace_mod.TraceRecorder
    trace_mod.TraceRecorder = lambda **kw: made.append(recorder_class(**kw)) or made[-1]
    try:
        samples, trace = trace_mod.record_sampling(
            model, encode_tokens(clip, tokens), negative, Latent(torch.zeros(1, 4, SIDE // CELL, SIDE // CELL)),
            seed=seed, steps=steps, cfg=cfg, sampler_name="euler", scheduler="normal", record_attention=True,
            words=words)
    finally:
        trace_mod.TraceRecorder = original
    rec = made[-1]
    layers = {n: np.stack([call[n] for call in rec.layer_calls]) for n in rec.layer_calls[0]}
    default = trace_mod.summed_attention(trace).numpy()  # [K, h, w]
    image = image_to_pils(decode(vae, samples))[0]
    x0 = trace.latent_format.from_sampler(torch.stack([s.denoised.float() for s in trace.steps]))  # [steps, C, h, w]
    return image, words, list(trace.sigmas), layers, default, image_to_pils(decode(vae, x0))


# -- the variants ------------------------------------------------------------------------------------

DOWN8, UP8A, UP8B = ("down_blocks.0.attentions.0", "up_blocks.3.attentions.0", "up_blocks.3.attentions.1")
DOWN4, UP4A, UP4B = ("down_blocks.1.attentions.0", "up_blocks.2.attentions.0", "up_blocks.2.attentions.1")
LEVELS = {
    "8×8+4×4": [[DOWN8, UP8A, UP8B], [DOWN4, UP4A, UP4B]],  # each level's layer mean, levels averaged
    "8×8": [[DOWN8, UP8A, UP8B]],
    "8×8 down.0": [[DOWN8]],
    "8×8 up.3.0": [[UP8A]],
    "8×8 up.3.1": [[UP8B]],
}


def step_sets(sigmas: list[float]) -> dict[str, list[int]]:
    n = len(sigmas) - 1
    return {"all": list(range(n)), "2nd half": list(range(n // 2, n)),
            **{f"σ≤{t:g}": [i for i in range(n) if sigmas[i] <= t] for t in (2.0, 1.0, 0.5)}}


def variant_map(layers: dict[str, np.ndarray], word: int, level_sets, steps: list[int], mode: str) -> np.ndarray:
    """The word's map [64, 64]: per step, each level's layer mean upsampled, levels averaged; summed."""
    total = np.zeros((SIDE, SIDE))
    for i in steps:
        per_level = []
        for names in level_sets:
            m = np.mean([layers[_full(layers, n)][i][:, word] for n in names], axis=0)  # [q]
            s = int(round(len(m) ** 0.5))
            per_level.append(upsample(m.reshape(s, s), mode))
        total += np.mean(per_level, axis=0)
    return total


def _full(layers, short: str) -> str:
    return next(n for n in layers if n.startswith(short))


# The rows of the table: (levels, steps, upsampling). The first block crosses the three choices; the
# second shows the single layers of the 8×8 level; the third sweeps the σ threshold.
ROWS = ([(lv, st, up) for lv in ("8×8+4×4", "8×8") for st in ("all", "2nd half", "σ≤1") for up in ("bilinear", "nearest")]
        + [(lv, st, "nearest") for lv in ("8×8 down.0", "8×8 up.3.0", "8×8 up.3.1") for st in ("all", "σ≤1")]
        + [("8×8", st, "nearest") for st in ("σ≤2", "σ≤0.5")])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompts", type=int, default=0, help="only the first N seen prompts (0: all 32)")
    parser.add_argument("--steps", type=int, default=20, help="sampler steps (the eval's: 20)")
    parser.add_argument("--cfg", type=float, default=5.0, help="guidance scale (the eval's gated one: 5)")
    parser.add_argument("--per-step", action="store_true", help="also print each step's share (8×8, nearest)")
    args = parser.parse_args(argv)

    from nodes.models.loader import load_checkpoint
    from nodes.text import encode_tokens, tokenize

    model, clip, vae = load_checkpoint(REPO / "models" / "checkpoints" / ev.BUNDLED, device="cpu")
    negative = encode_tokens(clip, tokenize(clip.tokenizer, "", pad_id=clip.pad_id))
    specs = ev.prompt_list()["seen"]
    specs = specs[:args.prompts] if args.prompts else specs
    started = time.perf_counter()
    results: dict[tuple[str, str, str, str], list[tuple[str, float]]] = {}  # (lv, st, up, region) -> [(shape, share)]
    per_step: list[tuple[str, list[float]]] = []
    sigmas: list[float] = []
    skipped = []
    for i, spec in enumerate(specs):
        text, shape = ev.caption(spec), spec[0][0][2]
        image, words, sigmas, layers, default, x0_images = run_prompt(model, clip, vae, negative, text, 1000 + i, args.steps,
                                                           args.cfg)
        pixels = shape_region(image)
        if pixels is None:
            skipped.append(text)
            continue
        regions = {"pixels": pixels, "cells": touched_cells(pixels)}
        word = words.index(shape)
        sets = step_sets(sigmas)
        for name, region in regions.items():
            results.setdefault(("uniform", "", "", name), []).append((shape, float(region.mean())))
            from_trace = upsample(default[word], "nearest")
            results.setdefault(("default", "", "", name), []).append((shape, share_in(from_trace, region)))
            for lv, st, up in ROWS:
                total = variant_map(layers, word, LEVELS[lv], sets[st], up)
                results.setdefault((lv, st, up, name), []).append((shape, share_in(total, region)))
        if args.per_step:  # each step's share, and how far its x̂₀'s shape is from the final one (IoU)
            shares = [share_in(variant_map(layers, word, LEVELS["8×8"], [s], "nearest"), pixels)
                      for s in range(len(sigmas) - 1)]
            ious = [0.0 if r is None else float((r & pixels).sum() / (r | pixels).sum())
                    for r in map(shape_region, x0_images)]
            per_step.append((shape, list(zip(shares, ious, strict=True))))
    seconds = time.perf_counter() - started

    n = len(specs) - len(skipped)
    print(f"shape word's attention mass in the drawn shape: bundled model, {n} seen prompts "
          f"(seed 1000+i, euler/normal, {args.steps} steps, cfg {args.cfg:g}; {seconds:.0f} s)")
    for text in skipped:
        print(f"  skipped (no shape drawn): {text}")
    shapes = list(sd.SHAPES)
    head = " ".join(f"{s:>8}" for s in shapes)
    print(f"\n{'levels':<12} {'steps':<9} {'upsample':<9} | pixels: {head}     mean   min | cells: {head}     mean")
    keys = [("uniform", "", "")] + [("default", "", "")] + list(ROWS)
    for lv, st, up in keys:
        cols = []
        for name in ("pixels", "cells"):
            rows = results[(lv, st, up, name)]
            by_shape = [np.mean([v for s, v in rows if s == shape]) for shape in shapes]
            values = [v for _s, v in rows]
            tail = f" {np.mean(values):>7.3f} {min(values):>5.2f}" if name == "pixels" else f" {np.mean(values):>7.3f}"
            cols.append(" ".join(f"{v:>8.3f}" for v in by_shape) + tail)
        label = {"uniform": "uniform map (= region's area)",
                 "default": "default (trace.summed_attention)"}.get(lv)
        if label:
            print(f"{label:<32} | pixels: {cols[0]} | cells: {cols[1]}")
        else:
            print(f"{lv:<12} {st:<9} {up:<9} | pixels: {cols[0]} | cells: {cols[1]}")
    if per_step:
        print("\nper step: the 8×8 map's share in the drawn pixels (nearest), and the IoU of the step's x̂₀ shape"
              " with the final one (mean, lowest)")
        for j in range(len(sigmas) - 1):
            shares = [curve[j][0] for _s, curve in per_step]
            ious = [curve[j][1] for _s, curve in per_step]
            print(f"  step {j + 1:>2}  σ {sigmas[j]:>6.3f}  share {np.mean(shares):.3f}  "
                  f"x̂₀ IoU {np.mean(ious):.2f} (lowest {min(ious):.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
