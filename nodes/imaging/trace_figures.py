"""Pictures of a recorded trace (nodes/sampling/trace.py): the tiles of the editor's trace view and
the figures of the explain viewers (TraceFilmstrip, CrossAttentionMaps, CFGInspector)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from nodes.sampling.trace import (
    ModelCall,
    Trace,
    TraceStep,
    combined_attention,
    decided_steps,
    summed_attention,
    token_span,
)

# -- pictures -------------------------------------------------------------------------------------

ROWS = ("x_t", "denoised", "eps", "update")
ROW_LABELS = {"x_t": "x_t (noisy latent)", "denoised": "x̂₀ (denoised)", "eps": "ε̂ (guided noise)",
              "update": "applied update", "noise": "added noise"}
TILE_SIDE = 128  # tiles are upscaled smoothly to at least this many pixels


def unit_rms(t: torch.Tensor) -> torch.Tensor:
    """t scaled to an RMS of 1, so small and large updates show alike (the caption gives the size)."""
    return t / t.float().pow(2).mean().sqrt().clamp_min(1e-12)


def row_latent(step: TraceStep, row: str) -> torch.Tensor | None:
    """What a row shows for a step, as a sampler-space-like latent [C, h, w] (float32) for the
    latent→RGB map: x_t at unit variance (x_t/√(1+σ²), what the UNet is fed), x̂₀ as it is, ε̂ (unit
    variance by nature), the update and the added noise scaled to unit RMS. None: nothing to show."""
    if row == "x_t":
        return step.x.float() / math.sqrt(1.0 + step.sigma_from**2)
    if row == "denoised":
        return step.denoised.float()
    if row == "eps":
        return step.eps
    if row in ("update", "noise"):
        t = getattr(step, row)
        return None if t is None else unit_rms(t.float())
    raise ValueError(f"unknown trace row {row!r} (choose from {', '.join(ROW_LABELS)})")


def rms(t: torch.Tensor | None) -> float:
    return float("nan") if t is None else float(t.float().pow(2).mean().sqrt())


def factors_of(trace: Trace):
    return getattr(trace.latent_format, "rgb_factors", None)


def preview_tile(latent: torch.Tensor | None, trace: Trace, side: int = TILE_SIDE):
    """The fast latent→RGB picture of one [C, h, w] latent (None: a grey tile)."""
    from PIL import Image

    from nodes.imaging.tiles import latent_tile

    if latent is None:
        h, w = trace.latent_hw
        return Image.new("RGB", (max(side, w), max(side, h * side // max(w, 1))), (200, 200, 200))
    return latent_tile(latent, factors_of(trace), min_side=side)


def decoded_tiles(latents: Sequence[torch.Tensor], trace: Trace, vae: Any, check=None) -> list:
    """Sampler-space latents [C, h, w] through the VAE's decoder: PIL images."""
    from nodes.imaging.tiles import image_to_pils
    from nodes.imaging.vae import decode

    raw = trace.latent_format.from_sampler(torch.stack([t.float() for t in latents]))  # [N, C, h, w]
    return image_to_pils(decode(vae, raw, check=check))


def heat_colours(values: torch.Tensor) -> torch.Tensor:
    """[H, W] in 0..1 → [H, W, 3] uint8 on a magma-like scale (dark → purple → orange → pale yellow)."""
    stops = torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0])
    colours = torch.tensor([(8, 6, 22), (82, 22, 112), (183, 55, 121), (251, 136, 97), (252, 253, 191)],
                           dtype=torch.float32)
    v = values.clamp(0, 1)
    idx = torch.bucketize(v, stops[1:-1])  # which segment
    lo, hi = stops[idx], stops[idx + 1]
    w = ((v - lo) / (hi - lo))[..., None]
    return (colours[idx] * (1 - w) + colours[idx + 1] * w).round().to(torch.uint8)


def heatmap_tile(values: torch.Tensor, under: Any = None, side: int = TILE_SIDE):
    """One token's map [H, W] scaled to its own maximum, coloured; over `under` (a PIL image of the
    picture, shown faintly in grey so the colours stay readable) when given."""
    from PIL import Image

    from nodes.imaging.tiles import upscale

    v = values.float()
    v = v / v.max().clamp_min(1e-12)
    heat = Image.fromarray(heat_colours(v).numpy())
    if under is not None:
        grey = under.convert("L").convert("RGB").resize(heat.size, Image.Resampling.BICUBIC)
        heat = Image.blend(grey, heat, 0.7)
    return upscale(heat, side)


def write_view(trace: Trace, folder: Any, active_scheduler: str) -> dict[str, Any]:
    """The editor's trace view (KSamplerTrace's `ui["trace"]`, read by ui/trace_panel.py): one PNG tile
    per step and row, the attention maps as an .npz ("maps" [steps, tokens, h, w]; "total", the sum
    over "total_steps"), the schedules and the tokens, written under `folder`."""
    import numpy as np

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    # 1. Tiles: the fast preview of every row at every step.
    tiles: dict[str, list[str]] = {row: [] for row in ROWS}
    for step in trace.steps:
        for row in ROWS:
            path = folder / f"{row}_{step.index:04}.png"
            preview_tile(row_latent(step, row), trace).save(path, compress_level=1)
            tiles[row].append(str(path))
    # 2. Attention: the viewed tokens' maps per step (latent resolution) and their sum over the steps
    #    where the layout is decided (σ ≤ DECIDED_SIGMA; "total_steps" names them).
    tokens, span = token_span(trace)
    attention_path = None
    maps = combined_attention(trace)
    if maps is not None:
        maps = maps[:, span]  # [steps, tokens, h, w]
        total = summed_attention(trace, maps)  # [tokens, h, w]
        attention_path = folder / "attention.npz"
        np.savez_compressed(attention_path, maps=maps.numpy().astype(np.float32),
                            total=total.numpy().astype(np.float32),
                            total_steps=np.asarray(decided_steps(trace), dtype=np.int32))
    downscale = getattr(trace.latent_format, "downscale", 8)
    return {
        "steps": [{"index": s.index, "sigma_from": s.sigma_from, "sigma_to": s.sigma_to, "t": s.t}
                  for s in trace.steps],
        "tiles": tiles,
        "row_labels": {row: ROW_LABELS[row] for row in ROWS},
        "schedule": {"active": active_scheduler, "sigmas": dict(trace.schedules)},
        "tokens": [w.replace("</w>", "") for w in tokens],
        "attention": None if attention_path is None else str(attention_path),
        "image_size": [trace.latent_hw[0] * downscale, trace.latent_hw[1] * downscale],
    }


# -- the viewers' figures ---------------------------------------------------------------------------


def _step_label(step: TraceStep) -> str:
    return f"step {step.index + 1}\nσ {step.sigma_from:.3g}"


def _title(trace: Trace) -> str:
    return f"{trace.sampler} · {trace.scheduler} · cfg {trace.cfg:g} · {len(trace.steps)} steps"


def filmstrip(trace: Trace, rows: Sequence[str], every: int = 1, vae: Any = None, check=None):
    """One PIL figure: a column per shown step (every n-th, and the last), a row per quantity.
    With a VAE, x_t and x̂₀ are decoded; the other rows always use the fast preview."""
    from nodes.imaging.tiles import grid

    shown = trace.steps[::every]
    if shown[-1] is not trace.steps[-1]:
        shown.append(trace.steps[-1])
    tiles, captions = [], []
    for row in rows:
        latents = [row_latent(step, row) for step in shown]
        if vae is not None and row in ("x_t", "denoised"):
            tiles.append(decoded_tiles(latents, trace, vae, check))
        else:
            tiles.append([None if t is None else preview_tile(t, trace) for t in latents])
        sizes = [rms(getattr(step, row)) for step in shown] if row in ("update", "noise") else None
        captions.append([f"rms {v:.3g}" if v == v else "—" for v in sizes] if sizes else [""] * len(shown))
    return grid(tiles, col_labels=[_step_label(s) for s in shown], row_labels=[ROW_LABELS[r] for r in rows],
                title=_title(trace), captions=captions, min_side=TILE_SIDE)


def attention_figure(trace: Trace, step: int, max_tokens: int, image: Any = None):
    """One PIL figure: a heatmap per prompt token (the start token left out), for step `step`
    (1-based) or summed over decided_steps (0), over the picture when `image` (IMAGE) is given. The
    cells are drawn as blocks (nearest): a latent cell's value says nothing finer than the cell."""
    from nodes.imaging.tiles import grid, image_to_pils

    maps = combined_attention(trace)  # [steps, K, h, w]
    summed = decided_steps(trace)
    chosen = summed_attention(trace, maps) if step == 0 else maps[step - 1]  # [K, h, w]
    tokens, span = token_span(trace)
    chosen = chosen[span][:max_tokens]  # [T, h, w]
    tokens = tokens[:max_tokens]
    h, w = trace.latent_hw
    side = max(TILE_SIDE, 2 * max(h, w))
    size = (side * h // max(h, w), side * w // max(h, w))
    big = torch.nn.functional.interpolate(chosen[None], size=size, mode="nearest")[0]
    under = image_to_pils(image[:1])[0] if image is not None else None
    shares = [float(m.mean() / (len(summed) if step == 0 else 1)) for m in chosen]
    cells = [heatmap_tile(m, under) for m in big]
    words = [f"{t.replace('</w>', '')}\n{s:.0%}" for t, s in zip(tokens, shares, strict=True)]
    per_row = 8
    rows = [cells[i:i + per_row] for i in range(0, len(cells), per_row)]
    captions = [words[i:i + per_row] for i in range(0, len(words), per_row)]
    when = (f"step {step} (σ {trace.steps[step - 1].sigma_from:.3g})" if step
            else f"summed over the {len(summed)} steps from σ {trace.steps[summed[0]].sigma_from:.3g}")
    return grid(rows, title=f"cross-attention per token, {when}; % = the token's mean share", captions=captions,
                min_side=TILE_SIDE)


def _cfg_view(call: ModelCall, x0: torch.Tensor | None, show: str) -> torch.Tensor | None:
    """A prediction as CFGInspector shows it: x̂₀ itself, or the noise it implies, (x − x̂₀)/σ."""
    if x0 is None:
        return None
    return x0.float() if show == "x0" else (call.x.float() - x0.float()) / call.sigma


def cfg_figure(trace: Trace, indices: Sequence[int], show: str = "x0", vae: Any = None):
    """One PIL figure: per chosen step (0-based indices) the uncond prediction, the cond one, their
    difference (scaled to unit RMS; the caption gives its size) and the guided result."""
    from nodes.imaging.tiles import grid

    rows, captions, labels = [], [], []
    for i in indices:
        step = trace.steps[i]
        call = step.main
        if call is None:
            continue

        uncond, cond, guided = (_cfg_view(call, x0, show) for x0 in (call.uncond_x0, call.cond_x0, call.denoised))
        diff = None if uncond is None or cond is None else cond - uncond
        if vae is not None and show == "x0":
            pics = decoded_tiles([t for t in (uncond, cond, guided) if t is not None], trace, vae)
            uncond_pic = pics.pop(0) if uncond is not None else None
            cond_pic, guided_pic = pics
        else:
            uncond_pic, cond_pic, guided_pic = (None if t is None else preview_tile(t, trace)
                                                for t in (uncond, cond, guided))
        diff_pic = None if diff is None else preview_tile(unit_rms(diff), trace)
        rows.append([uncond_pic, cond_pic, diff_pic, guided_pic])
        captions.append(["skipped (cfg 1)" if uncond is None else "", "",
                         "" if diff is None else f"rms {rms(diff):.3g}", ""])
        labels.append(_step_label(step))
    what = "x̂₀" if show == "x0" else "ε̂"
    return grid(rows, col_labels=[f"uncond {what}", f"cond {what}", "cond − uncond", f"guided (cfg {trace.cfg:g})"],
                row_labels=labels, title=f"classifier-free guidance: {what} = uncond + cfg·(cond − uncond)",
                captions=captions, min_side=TILE_SIDE)
