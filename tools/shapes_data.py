"""Synthetic "shapes" data for the bundled offline model (see docs/bundled-model.md).

64x64 RGB images of one or two simple shapes on a plain background, each with an
English caption from a small grammar, e.g.

    "a large red circle at the top left on a white background"
    "a blue square on the left and a yellow triangle on the right"

Everything is deterministic given a ``random.Random`` instance.  A fixed set of
colour x shape x position combinations (``HELD_OUT``) never appears in training
data (``split="train"``); ``split="heldout"`` produces only images that contain
at least one held-out combination, so an eval script can measure generalisation.

The module also has a small rule-based scorer (:func:`analyse_image`) that finds
the shape(s) in an image and reports colour / shape / position / background, so
an eval script can score generated pictures against the spec they were asked for.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw

IMAGE_SIZE = 64
_SS = 4  # super-sampling factor for anti-aliased edges

# ----------------------------------------------------------------- vocabulary
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "orange": (245, 140, 20),
    "yellow": (240, 220, 30),
    "green": (30, 170, 50),
    "cyan": (30, 200, 215),
    "blue": (30, 60, 220),
    "purple": (140, 50, 190),
    "pink": (245, 120, 185),
}
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "white": (245, 245, 245),
    "black": (15, 15, 15),
    "gray": (128, 128, 128),
}
SHAPES = ("circle", "square", "triangle", "star")
# Shapes the bundled model never saw, opt-in everywhere (``shapes=`` arguments): the default data stream,
# and so the bundled model's training pictures for a seed, stay exactly as they were.  The LoRA in
# models/loras/ (tools/train_lora.py) teaches the model one of them.
EXTRA_SHAPES = ("heart",)
ALL_SHAPES = SHAPES + EXTRA_SHAPES
SIZES: dict[str, tuple[float, float]] = {  # half-extent in pixels (min, max)
    "small": (6.5, 8.5),
    "large": (12.5, 14.5),
}
# position name -> (column, row) on a 3x3 grid
POSITIONS: dict[str, tuple[int, int]] = {
    "top left": (0, 0),
    "top": (1, 0),
    "top right": (2, 0),
    "left": (0, 1),
    "centre": (1, 1),
    "right": (2, 1),
    "bottom left": (0, 2),
    "bottom": (1, 2),
    "bottom right": (2, 2),
}
GRID_CENTRES = (16, 32, 48)  # pixel coordinate of grid column/row centres
JITTER = 3  # +- pixels of position jitter

# English phrase for each position ("at the top left", "on the left", "in the centre")
POSITION_PHRASES: dict[str, str] = {
    "top left": "at the top left",
    "top": "at the top",
    "top right": "at the top right",
    "left": "on the left",
    "centre": "in the centre",
    "right": "on the right",
    "bottom left": "at the bottom left",
    "bottom": "at the bottom",
    "bottom right": "at the bottom right",
}
# accepted alternative spellings (used in training captions a fraction of the time)
POSITION_ALIASES: dict[str, list[str]] = {"centre": ["in the center", "in the middle"]}

# Held-out colour x shape x position combinations: never drawn in training images
# (not even when the caption omits the position).  Every colour, shape and
# position still occurs in training in other combinations.
HELD_OUT: frozenset[tuple[str, str, str]] = frozenset(
    {
        ("red", "star", "top left"),
        ("orange", "square", "bottom right"),
        ("yellow", "triangle", "centre"),
        ("green", "circle", "top right"),
        ("cyan", "star", "bottom"),
        ("blue", "triangle", "left"),
        ("purple", "circle", "bottom left"),
        ("pink", "square", "top"),
        ("red", "circle", "right"),
        ("green", "star", "centre"),
        ("blue", "square", "top right"),
        ("yellow", "star", "bottom left"),
    }
)

# Caption grammar probabilities (training)
P_PAIR = 0.3  # two shapes instead of one
P_SIZE_WORD = 0.7
P_POSITION = 0.85
P_BACKGROUND = 0.6
P_ALIAS = 0.2


@dataclass
class ShapeSpec:
    colour: str
    shape: str
    size: str
    position: str
    # actual drawing parameters (filled by sample / render)
    cx: float = 0.0
    cy: float = 0.0
    radius: float = 0.0


@dataclass
class SceneSpec:
    shapes: list[ShapeSpec]
    background: str
    caption: str = ""
    mention_size: bool = True
    mention_position: bool = True
    mention_background: bool = True
    extra: dict = field(default_factory=dict)


# ------------------------------------------------------------------- captions
def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def shape_phrase(s: ShapeSpec, *, size: bool, position: bool, rng: random.Random | None = None) -> str:
    words = []
    if size:
        words.append(s.size)
    words += [s.colour, s.shape]
    text = f"{_article(words[0])} {' '.join(words)}"
    if position:
        phrase = POSITION_PHRASES[s.position]
        if rng is not None and s.position in POSITION_ALIASES and rng.random() < P_ALIAS:
            phrase = rng.choice(POSITION_ALIASES[s.position])
        text += " " + phrase
    return text


def make_caption(scene: SceneSpec, rng: random.Random | None = None) -> str:
    parts = [
        shape_phrase(s, size=scene.mention_size, position=scene.mention_position, rng=rng)
        for s in scene.shapes
    ]
    text = " and ".join(parts)
    if scene.mention_background:
        text += f" on {_article(scene.background)} {scene.background} background"
    return text


# ------------------------------------------------------------------- sampling
def _is_held_out(s: ShapeSpec) -> bool:
    return (s.colour, s.shape, s.position) in HELD_OUT


def _far_enough(p1: str, p2: str) -> bool:
    (c1, r1), (c2, r2) = POSITIONS[p1], POSITIONS[p2]
    return max(abs(c1 - c2), abs(r1 - r2)) >= 2


def _random_shape(rng: random.Random, split: str, *, position: str | None = None,
                  shapes: tuple[str, ...] = SHAPES) -> ShapeSpec:
    while True:
        s = ShapeSpec(
            colour=rng.choice(list(COLOURS)),
            shape=rng.choice(shapes),
            size=rng.choice(list(SIZES)),
            position=position or rng.choice(list(POSITIONS)),
        )
        if split == "train" and _is_held_out(s):
            continue
        return s


def sample_scene(rng: random.Random, split: str = "train", shapes: tuple[str, ...] = SHAPES) -> SceneSpec:
    """Random scene + caption.  split: "train" (no held-out combos) or "heldout"
    (single shape, always a held-out combination, caption mentions position).
    ``shapes``: the shapes to draw from ("train" only), e.g. ``("heart",)`` for LoRA data; with the
    default the random stream, and so every picture for a seed, is the bundled model's."""
    bg = rng.choice(list(BACKGROUNDS))
    if split == "heldout":
        colour, shape, position = rng.choice(sorted(HELD_OUT))
        s = ShapeSpec(colour, shape, rng.choice(list(SIZES)), position)
        scene = SceneSpec([s], bg, mention_size=True, mention_position=True,
                          mention_background=rng.random() < P_BACKGROUND)
    elif rng.random() < P_PAIR:
        a = _random_shape(rng, split, position=rng.choice([p for p in POSITIONS if p != "centre"]), shapes=shapes)
        candidates = [p for p in POSITIONS if _far_enough(a.position, p)]
        b = _random_shape(rng, split, position=rng.choice(candidates), shapes=shapes)
        while (b.colour, b.shape) == (a.colour, a.shape):
            b = _random_shape(rng, split, position=b.position, shapes=shapes)
        scene = SceneSpec([a, b], bg,
                          mention_size=rng.random() < P_SIZE_WORD * 0.6,
                          mention_position=rng.random() < P_POSITION * 0.85,
                          mention_background=rng.random() < P_BACKGROUND)
    else:
        scene = SceneSpec([_random_shape(rng, split, shapes=shapes)], bg,
                          mention_size=rng.random() < P_SIZE_WORD,
                          mention_position=rng.random() < P_POSITION,
                          mention_background=rng.random() < P_BACKGROUND)
    for s in scene.shapes:
        col, row = POSITIONS[s.position]
        s.cx = GRID_CENTRES[col] + rng.uniform(-JITTER, JITTER)
        s.cy = GRID_CENTRES[row] + rng.uniform(-JITTER, JITTER)
        s.radius = rng.uniform(*SIZES[s.size])
    scene.caption = make_caption(scene, rng)
    return scene


def scene_from_parts(objects: list[tuple[str, str, str, str]], background: str = "white") -> SceneSpec:
    """Build a centred (no jitter) scene from (size, colour, shape, position) tuples
    -- used by eval scripts to get the reference spec / caption of a prompt."""
    shapes = []
    for size, colour, shape, position in objects:
        col, row = POSITIONS[position]
        lo, hi = SIZES[size]
        shapes.append(ShapeSpec(colour, shape, size, position, GRID_CENTRES[col], GRID_CENTRES[row], (lo + hi) / 2))
    scene = SceneSpec(shapes, background)
    scene.caption = make_caption(scene)
    return scene


# ------------------------------------------------------------------ rendering
def _shape_polygon(shape: str, cx: float, cy: float, r: float) -> list[tuple[float, float]] | None:
    if shape == "square":
        h = r * 0.9
        return [(cx - h, cy - h), (cx + h, cy - h), (cx + h, cy + h), (cx - h, cy + h)]
    if shape == "triangle":
        return [(cx, cy - r), (cx + r, cy + r * 0.8), (cx - r, cy + r * 0.8)]
    if shape == "star":
        pts = []
        for i in range(10):
            ang = -math.pi / 2 + i * math.pi / 5
            rad = r * 1.1 if i % 2 == 0 else r * 0.45
            pts.append((cx + rad * math.cos(ang), cy + rad * math.sin(ang) + r * 0.1))
        return pts
    if shape == "heart":
        # the classic parametric heart, x in [-16, 16], y in about [-12, 17] (y down), scaled so it spans
        # about 2r like the other shapes: two lobes at the top, a notch between them, a point at the bottom
        pts = []
        for i in range(64):
            t = 2 * math.pi * i / 64
            x = 16 * math.sin(t) ** 3
            y = -(13 * math.cos(t) - 5 * math.cos(2 * t) - 2 * math.cos(3 * t) - math.cos(4 * t))
            pts.append((cx + x / 16 * r, cy + (y - 2.5) / 15 * r))
        return pts
    return None  # circle


def draw_shape(draw: ImageDraw.ImageDraw, shape: str, cx: float, cy: float, r: float, fill, scale: float = 1.0):
    cx, cy, r = cx * scale, cy * scale, r * scale
    poly = _shape_polygon(shape, cx, cy, r)
    if poly is None:
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
    else:
        draw.polygon(poly, fill=fill)


def render(scene: SceneSpec, rng: random.Random | None = None) -> Image.Image:
    """Render a scene to a 64x64 RGB PIL image (anti-aliased by super-sampling).
    With ``rng``, colours get a small jitter (+-8 per channel)."""
    def jitter(c):
        if rng is None:
            return tuple(c)
        return tuple(int(min(255, max(0, v + rng.randint(-8, 8)))) for v in c)

    big = IMAGE_SIZE * _SS
    img = Image.new("RGB", (big, big), jitter(BACKGROUNDS[scene.background]))
    d = ImageDraw.Draw(img)
    for s in scene.shapes:
        draw_shape(d, s.shape, s.cx, s.cy, s.radius, jitter(COLOURS[s.colour]), scale=_SS)
    return img.reduce(_SS)


def sample(rng: random.Random, split: str = "train", shapes: tuple[str, ...] = SHAPES) -> tuple[Image.Image, SceneSpec]:
    scene = sample_scene(rng, split, shapes)
    return render(scene, rng), scene


def image_to_array(img: Image.Image) -> np.ndarray:
    """PIL -> float32 HWC in [-1, 1]."""
    return np.asarray(img, dtype=np.float32) / 127.5 - 1.0


# -------------------------------------------------------------------- scoring
def _nearest(rgb, table: dict[str, tuple[int, int, int]]) -> str:
    rgb = np.asarray(rgb, dtype=np.float32)
    return min(table, key=lambda k: float(np.sum((rgb - np.asarray(table[k], np.float32)) ** 2)))


def position_of(cx: float, cy: float) -> str:
    """Nearest 3x3 grid cell name for a pixel centroid."""
    col = min(range(3), key=lambda i: abs(GRID_CENTRES[i] - cx))
    row = min(range(3), key=lambda i: abs(GRID_CENTRES[i] - cy))
    return next(k for k, v in POSITIONS.items() if v == (col, row))


def _template_iou(mask: np.ndarray, shape: str, cx: float, cy: float, r: float) -> float:
    t = Image.new("L", (IMAGE_SIZE, IMAGE_SIZE), 0)
    draw_shape(ImageDraw.Draw(t), shape, cx, cy, r, 255)
    tm = np.asarray(t) > 127
    inter = np.logical_and(mask, tm).sum()
    union = np.logical_or(mask, tm).sum()
    return float(inter) / max(1, union)


def analyse_image(img: Image.Image, n_objects: int = 1, shapes: tuple[str, ...] = SHAPES) -> dict:
    """Rule-based reading of a (generated) 64x64 image.

    Background = nearest background colour of the border pixels' median.
    Foreground = pixels far from that background; split into up to ``n_objects``
    connected blobs (largest first).  For each blob: colour (nearest palette
    colour of the median foreground pixel), position (3x3 cell of the centroid),
    size (small/large by area), shape (best IoU against rendered templates of ``shapes``; pass
    ``ALL_SHAPES`` to also consider the shapes only a LoRA draws).
    """
    a = np.asarray(img.convert("RGB").resize((IMAGE_SIZE, IMAGE_SIZE)), dtype=np.float32)
    border = np.concatenate([a[0], a[-1], a[:, 0], a[:, -1]])
    bg_rgb = np.median(border, axis=0)
    bg = _nearest(bg_rgb, BACKGROUNDS)
    dist = np.sqrt(((a - bg_rgb) ** 2).sum(-1))
    fg = dist > 60
    blobs = _components(fg)
    blobs = sorted(blobs, key=lambda m: -m.sum())[:n_objects]
    objects = []
    for m in blobs:
        if m.sum() < 12:
            continue
        ys, xs = np.nonzero(m)
        cx, cy = xs.mean(), ys.mean()
        rgb = np.median(a[m], axis=0)
        area = m.sum()
        r_est = math.sqrt(area / math.pi)  # rough radius
        half_extent = max(xs.max() - xs.min(), ys.max() - ys.min()) / 2 + 0.5
        # each template at a few radii around the bbox half-size
        iou_by_shape = {
            shape: max(_template_iou(m, shape, (xs.min() + xs.max()) / 2, (ys.min() + ys.max()) / 2 + dy, rr)
                       for rr in (half_extent * 0.9, half_extent, half_extent * 1.1) for dy in (-1.0, 0.0, 1.0))
            for shape in shapes}
        best = max(iou_by_shape, key=iou_by_shape.get)
        objects.append({
            "colour": _nearest(rgb, COLOURS),
            "shape": best,
            "shape_iou": round(iou_by_shape[best], 3),
            "iou_by_shape": {k: round(v, 3) for k, v in iou_by_shape.items()},
            "rgb": tuple(float(c) for c in rgb),
            "position": position_of(cx, cy),
            "size": "large" if half_extent > 10.5 else "small",
            "centroid": (round(float(cx), 1), round(float(cy), 1)),
            "area": int(area),
            "r_est": round(r_est, 1),
        })
    return {"background": bg, "background_rgb": tuple(float(c) for c in bg_rgb), "objects": objects}


def _components(mask: np.ndarray) -> list[np.ndarray]:
    """4-connected components of a boolean mask (small images only)."""
    h, w = mask.shape
    labels = np.zeros((h, w), np.int32)
    out = []
    n = 0
    for y0 in range(h):
        for x0 in range(w):
            if mask[y0, x0] and labels[y0, x0] == 0:
                n += 1
                stack = [(y0, x0)]
                labels[y0, x0] = n
                while stack:
                    y, x = stack.pop()
                    for yy, xx in ((y - 1, x), (y + 1, x), (y, x - 1), (y, x + 1)):
                        if 0 <= yy < h and 0 <= xx < w and mask[yy, xx] and labels[yy, xx] == 0:
                            labels[yy, xx] = n
                            stack.append((yy, xx))
                out.append(labels == n)
    return out


if __name__ == "__main__":  # quick look: write a grid of samples + captions
    import sys

    rng = random.Random(0)
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 16
    split = sys.argv[2] if len(sys.argv) > 2 else "train"
    grid = Image.new("RGB", (IMAGE_SIZE * 4, IMAGE_SIZE * ((n + 3) // 4)))
    for i in range(n):
        img, scene = sample(rng, split)
        grid.paste(img, ((i % 4) * IMAGE_SIZE, (i // 4) * IMAGE_SIZE))
        print(i, scene.caption, "|", analyse_image(img, len(scene.shapes)))
    grid.save(sys.argv[3] if len(sys.argv) > 3 else "shapes_grid.png")
