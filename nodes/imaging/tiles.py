"""Labelled image grids for the explain nodes: tiles in rows and columns with text around them.

Everything here is Pillow; torch is imported only by the IMAGE conversions. Small tiles (an 8x8
latent on the bundled model) are upscaled smoothly (bicubic) so that a figure shows shapes, not
pixel blocks. Labels use DejaVu Sans when the system has it (it has the Greek letters and accents of
x̂₀, ε̂, ᾱ, σ) and otherwise Pillow's built-in font, with those symbols spelled out in ASCII.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Any

MIN_TILE_SIDE = 96
BACKGROUND = (255, 255, 255)
INK = (20, 20, 20)
GAP = 6
PAD = 4

# What the labels say when the font has no Greek: readable, if not pretty.
_ASCII = {
    "x̂₀": "x0_hat", "x̂0": "x0_hat", "ε̂": "eps_hat", "ᾱ": "abar", "√": "sqrt", "σ": "sigma",
    "ε": "eps", "₀": "0", "−": "-", "·": "*", "≈": "~", "→": "->", "…": "...",
}


@lru_cache(maxsize=16)
def font(size: int = 13) -> Any:
    """A TrueType font at `size` px: DejaVu Sans if installed (found by Pillow's font search of the
    system font folders), else Pillow's bundled default. Nothing is downloaded."""
    from PIL import ImageFont

    for name in ("DejaVuSans.ttf", "dejavu/DejaVuSans.ttf", "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"):
        try:
            return ImageFont.truetype(name, size)
        except OSError:
            continue
    return ImageFont.load_default(size)


def _has_greek(f: Any) -> bool:
    return "DejaVu" in str(getattr(f, "getname", lambda: ("",))()[0])


def printable(text: str, f: Any = None) -> str:
    """`text` as the font can draw it: unchanged with DejaVu, ASCII spellings otherwise."""
    if _has_greek(f if f is not None else font()):
        return text
    for symbol, spelled in _ASCII.items():
        text = text.replace(symbol, spelled)
    return text


def _text_size(text: str, f: Any) -> tuple[int, int]:
    from PIL import Image, ImageDraw

    if not text:
        return 0, 0
    box = ImageDraw.Draw(Image.new("RGB", (1, 1))).multiline_textbbox((0, 0), text, font=f, spacing=2)
    return box[2] - box[0], box[3] - box[1]


def upscale(image: Any, min_side: int = MIN_TILE_SIDE) -> Any:
    """`image` enlarged smoothly (bicubic) so that its shorter side is at least `min_side` px;
    images already that large are returned as they are."""
    from PIL import Image

    short = min(image.size)
    if short >= min_side or short == 0:
        return image
    scale = min_side / short
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.convert("RGB").resize(size, Image.Resampling.BICUBIC)


def grid(rows: Sequence[Sequence[Any]], col_labels: Sequence[str] | None = None,
         row_labels: Sequence[str] | None = None, title: str | None = None,
         captions: Sequence[Sequence[str]] | None = None, min_side: int = MIN_TILE_SIDE,
         font_size: int = 13) -> Any:
    """Tiles laid out as `rows` (a list of rows, each a list of PIL images; None leaves a cell
    blank) with `col_labels` over the columns, `row_labels` left of the rows, an optional `title`
    on top and optional `captions[r][c]` under each tile. Labels may hold newlines. Tiles smaller
    than `min_side` are upscaled smoothly; each column is as wide as its widest tile and each row
    as tall as its tallest, tiles centred in their cells. Returns one RGB PIL image."""
    from PIL import Image, ImageDraw

    f = font(font_size)
    title_font = font(font_size + 3)
    tiles = [[upscale(t, min_side) if t is not None else None for t in row] for row in rows]
    n_cols = max((len(row) for row in tiles), default=0)
    if n_cols == 0:
        raise ValueError("grid needs at least one tile")
    col_labels = [printable(s, f) for s in (col_labels or [])]
    row_labels = [printable(s, f) for s in (row_labels or [])]
    captions = [[printable(s, f) for s in row] for row in (captions or [])]

    # 1. Cell sizes: columns fit their widest tile or label, rows their tallest tile + caption.
    col_w = [0] * n_cols
    for c in range(n_cols):
        for row in tiles:
            if c < len(row) and row[c] is not None:
                col_w[c] = max(col_w[c], row[c].width)
        if c < len(col_labels):  # labels keep a little air between neighbours
            col_w[c] = max(col_w[c], _text_size(col_labels[c], f)[0] + 2 * PAD)
        for row in captions:
            if c < len(row):
                col_w[c] = max(col_w[c], _text_size(row[c], f)[0] + 2 * PAD)
    caption_h = [max((_text_size(s, f)[1] for s in row), default=0) for row in captions]
    row_h = []
    for r, row in enumerate(tiles):
        h = max((t.height for t in row if t is not None), default=min_side)
        row_h.append(h + (caption_h[r] + PAD if r < len(caption_h) and caption_h[r] else 0))
    label_w = max((_text_size(s, f)[0] for s in row_labels), default=0)
    label_w = label_w + GAP if label_w else 0
    head_h = max((_text_size(s, f)[1] for s in col_labels), default=0)
    head_h = head_h + PAD if head_h else 0
    title_h = _text_size(printable(title, title_font), title_font)[1] + GAP if title else 0

    # 2. Canvas, then title, column labels, row labels, tiles and captions.
    width = GAP + label_w + sum(col_w) + GAP * n_cols
    row_gap = GAP + (2 * GAP if captions else 0)  # captions must read as under their tile, not over the next
    height = GAP + title_h + head_h + sum(row_h) + row_gap * len(tiles)
    canvas = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    if title:
        draw.multiline_text((GAP, GAP), printable(title, title_font), fill=INK, font=title_font, spacing=2)
    x0 = GAP + label_w
    y = GAP + title_h
    x = x0
    for c in range(n_cols):
        if c < len(col_labels):
            tw, th = _text_size(col_labels[c], f)
            draw.multiline_text((x + (col_w[c] - tw) // 2, y + head_h - PAD - th), col_labels[c],
                                fill=INK, font=f, spacing=2, align="center")
        x += col_w[c] + GAP
    y += head_h
    for r, row in enumerate(tiles):
        tile_h = row_h[r] - (caption_h[r] + PAD if r < len(caption_h) and caption_h[r] else 0)
        if r < len(row_labels):
            tw, th = _text_size(row_labels[r], f)
            draw.multiline_text((GAP, y + (tile_h - th) // 2), row_labels[r], fill=INK, font=f, spacing=2)
        x = x0
        for c in range(n_cols):
            tile = row[c] if c < len(row) else None
            if tile is not None:
                canvas.paste(tile.convert("RGB"), (x + (col_w[c] - tile.width) // 2, y + (tile_h - tile.height) // 2))
            if r < len(captions) and c < len(captions[r]) and captions[r][c]:
                tw, _ = _text_size(captions[r][c], f)
                draw.multiline_text((x + (col_w[c] - tw) // 2, y + tile_h + PAD), captions[r][c],
                                    fill=INK, font=f, spacing=2, align="center")
            x += col_w[c] + GAP
        y += row_h[r] + row_gap
    return canvas


def latent_tile(latent: Any, factors=None, min_side: int = 128) -> Any:
    """One sampler-space latent [C, h, w] (or [1, C, h, w]) as a smooth RGB PIL tile through the
    fast latent→RGB map of nodes.imaging.preview (SD's table unless `factors` are given). Values
    out of range are clipped, as in the live preview."""
    import torch
    from PIL import Image

    from nodes.imaging.preview import SD_LATENT_RGB

    x = latent.detach().float().cpu()
    x = x[0] if x.dim() == 4 else x  # [C, h, w]
    table = torch.tensor(factors or (*SD_LATENT_RGB, (0.0, 0.0, 0.0)), dtype=torch.float32)
    if x.shape[0] != table.shape[0] - 1:
        raise ValueError(f"latent has {x.shape[0]} channels; the RGB map expects {table.shape[0] - 1}")
    rgb = torch.einsum("chw,cr->hwr", x, table[:-1]) + table[-1]  # [h, w, 3] in about -1..1
    array = ((rgb + 1.0) * 127.5).clamp(0, 255).to(torch.uint8).numpy()
    return upscale(Image.fromarray(array), min_side)


def image_to_pils(image: Any) -> list:
    """IMAGE tensor [B, H, W, 3] (or one [H, W, 3]) float 0..1 → list of PIL RGB images."""
    import numpy as np
    import torch
    from PIL import Image

    batch = image if image.dim() == 4 else image[None]
    arrays = (batch.detach().float().cpu().clamp(0, 1) * 255.0).round().to(torch.uint8).numpy()
    return [Image.fromarray(np.ascontiguousarray(a[..., :3])) for a in arrays]


def pils_to_image(images: Any) -> Any:
    """One PIL image or a list of same-size PIL images → IMAGE tensor [B, H, W, 3] float 0..1."""
    import numpy as np
    import torch

    images = [images] if not isinstance(images, (list, tuple)) else list(images)
    if len({im.size for im in images}) > 1:
        raise ValueError(f"images differ in size: {sorted({im.size for im in images})}")
    arrays = [np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0 for im in images]
    return torch.from_numpy(np.stack(arrays))  # [B, H, W, 3]


# Distinct, print-safe colours for plot lines (Okabe–Ito, then greys); the highlighted one is drawn
# thick and in its colour, the others thin.
PALETTE = [(0, 114, 178), (230, 159, 0), (0, 158, 115), (204, 121, 167), (86, 180, 233), (213, 94, 0),
           (160, 145, 0), (120, 120, 120), (0, 0, 0), (170, 60, 60), (60, 60, 170)]


def _nice_ticks(lo: float, hi: float, count: int = 6) -> list[float]:
    import math

    if hi <= lo:
        return [lo]
    raw = (hi - lo) / max(1, count - 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = min((m * mag for m in (1, 2, 5, 10) if m * mag >= raw), default=raw)
    first = math.ceil(lo / step) * step
    return [first + i * step for i in range(int((hi - first) / step + 1e-9) + 1)]


def line_plot(series: Sequence[tuple[str, Sequence[float], Sequence[float], bool]], title: str = "",
              xlabel: str = "", ylabel: str = "", log_y: bool = False, size: tuple[int, int] = (560, 400),
              font_size: int = 12) -> Any:
    """A small line chart in Pillow: `series` = (name, xs, ys, highlighted) each, a legend on the
    right, decade ticks on a log y axis (values ≤ 0 are left out there). Returns an RGB PIL image."""
    import math

    from PIL import Image, ImageDraw

    f = font(font_size)
    title_font = font(font_size + 1)
    legend_w = max((_text_size(printable(name, f), f)[0] for name, *_ in series), default=0) + 34
    width, height = size[0] + legend_w, size[1]
    img = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(img)
    left, right, top, bottom = 64, size[0] - 12, 28, height - 42

    # 1. Data range (log10 of y on a log axis).
    def ty(v: float) -> float | None:
        return (math.log10(v) if v > 0 else None) if log_y else v

    xs_all = [x for _, xs, _, _ in series for x in xs]
    ys_all = [y for _, _, ys, _ in series for y in (ty(v) for v in ys) if y is not None]
    if not xs_all or not ys_all:
        raise ValueError("line_plot needs at least one point")
    x_lo, x_hi = min(xs_all), max(xs_all)
    y_lo, y_hi = min(ys_all), max(ys_all)
    if log_y:
        y_lo, y_hi = math.floor(y_lo), math.ceil(y_hi)
    if x_hi == x_lo:
        x_hi = x_lo + 1
    if y_hi == y_lo:
        y_hi = y_lo + 1

    def px(x: float, y: float) -> tuple[float, float]:
        return (left + (x - x_lo) / (x_hi - x_lo) * (right - left), bottom - (y - y_lo) / (y_hi - y_lo) * (bottom - top))

    # 2. Axes, grid lines and tick labels.
    grey = (225, 225, 225)
    y_ticks = list(range(int(y_lo), int(y_hi) + 1)) if log_y else _nice_ticks(y_lo, y_hi)
    if log_y and len(y_ticks) > 8:
        y_ticks = y_ticks[:: math.ceil(len(y_ticks) / 8)]
    for yt in y_ticks:
        _, yy = px(x_lo, yt)
        draw.line([(left, yy), (right, yy)], fill=grey)
        label = (f"1e{yt:d}" if abs(yt) > 2 else f"{10.0 ** yt:g}") if log_y else f"{yt:g}"
        tw, th = _text_size(label, f)
        draw.text((left - 6 - tw, yy - th / 2 - 1), label, fill=INK, font=f)
    for xt in _nice_ticks(x_lo, x_hi, 8):
        xx, _ = px(xt, y_lo)
        draw.line([(xx, top), (xx, bottom)], fill=grey)
        label = f"{xt:g}"
        tw, _ = _text_size(label, f)
        draw.text((xx - tw / 2, bottom + 4), label, fill=INK, font=f)
    draw.rectangle([left, top, right, bottom], outline=INK)
    if title:
        tw, _ = _text_size(printable(title, title_font), title_font)
        draw.text(((left + right - tw) / 2, 6), printable(title, title_font), fill=INK, font=title_font)
    if xlabel:
        tw, _ = _text_size(printable(xlabel, f), f)
        draw.text(((left + right - tw) / 2, height - 18), printable(xlabel, f), fill=INK, font=f)
    if ylabel:
        lw, lh = _text_size(printable(ylabel, f), f)
        label_img = Image.new("RGB", (lw + 2, lh + 4), BACKGROUND)
        ImageDraw.Draw(label_img).text((0, 0), printable(ylabel, f), fill=INK, font=f)
        rotated = label_img.rotate(90, expand=True)
        img.paste(rotated, (4, int((top + bottom - rotated.height) / 2)))

    # 3. Lines (highlighted last, on top) with a legend entry each.
    order = sorted(range(len(series)), key=lambda i: series[i][3])
    for i in order:
        name, xs, ys, highlighted = series[i]
        colour = PALETTE[i % len(PALETTE)]
        points = [px(x, y) for x, y in ((x, ty(v)) for x, v in zip(xs, ys, strict=False)) if y is not None]
        if len(points) > 1:
            draw.line(points, fill=colour, width=4 if highlighted else 2, joint="curve")
        if highlighted:
            for xx, yy in points:
                draw.ellipse([xx - 3, yy - 3, xx + 3, yy + 3], fill=colour)
    for i, (name, *_rest, highlighted) in enumerate(series):
        colour = PALETTE[i % len(PALETTE)]
        ly = top + 4 + i * (font_size + 7)
        draw.line([(size[0] + 2, ly + font_size // 2 + 1), (size[0] + 24, ly + font_size // 2 + 1)], fill=colour,
                  width=4 if highlighted else 2)
        label = printable(name, f) + (" (active)" if highlighted else "")
        draw.text((size[0] + 28, ly), label, fill=INK, font=f)
    return img
