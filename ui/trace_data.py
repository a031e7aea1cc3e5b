"""What the trace panel computes from a KSamplerTrace view without Qt: the attention maps it
loads, a pixel's token ranking, token shares, heat colours and token look-ups."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

# a token's share at a pixel, from none to all of it (magma-like: dark → purple → orange → pale yellow)
HEAT_STOPS = ((0.0, (8, 6, 22)), (0.25, (82, 22, 112)), (0.5, (183, 55, 121)), (0.75, (251, 136, 97)),
              (1.0, (252, 253, 191)))
TOKEN_RE = re.compile(r"(\S+?)\((\d+)\)(?:×\S+)?(?=\s|$)")


def plain_word(word: str) -> str:
    """A token as people read it: no BPE end-of-word mark, lower case."""
    return word.replace("</w>", "").strip().lower()


def load_attention(path: str | None) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(maps [steps, tokens, H, W], total [tokens, H, W]) from the trace's .npz, or (None, None)."""
    import numpy as np

    if not path or not Path(path).is_file():
        return None, None
    with np.load(path) as data:
        maps = np.asarray(data["maps"], dtype=np.float32) if "maps" in data else None
        total = np.asarray(data["total"], dtype=np.float32) if "total" in data else None
    if total is None and maps is not None:
        total = maps.sum(axis=0)
    return maps, total


def rank_tokens(dist: np.ndarray, tokens: list[str], y: int, x: int, top: int = 5) -> list[tuple[str, float]]:
    """The tokens at pixel (y, x) of `dist` [tokens, H, W], largest share first, shares summing to 1."""
    import numpy as np

    column = np.clip(dist[:, y, x].astype(np.float64), 0.0, None)
    total = column.sum()
    if total <= 0:
        return []
    shares = column / total
    order = np.argsort(-shares, kind="stable")[:top]
    return [(tokens[i] if i < len(tokens) else f"#{i}", float(shares[i])) for i in order]


def format_ranking(ranking: list[tuple[str, float]]) -> str:
    """"circle 0.62, red 0.21, …" (the ellipsis when smaller shares were left out)."""
    text = ", ".join(f"{plain_word(w) or w} {s:.2f}" for w, s in ranking)
    return text + (", …" if ranking and sum(s for _w, s in ranking) < 0.995 else "")


def token_shares(total: np.ndarray | None) -> list[float]:
    """Each token's share of all the attention to the prompt's words, over the picture [tokens]."""
    if total is None:
        return []
    sums = total.reshape(len(total), -1).sum(axis=1).astype(float)
    whole = float(sums.sum())
    return [float(v) / whole for v in sums] if whole > 0 else []


def heat_colours(values: np.ndarray) -> np.ndarray:
    """Values in 0..1 [H, W] → RGB uint8 [H, W, 3] on the heat colour scale."""
    import numpy as np

    xs = [s for s, _c in HEAT_STOPS]
    v = np.clip(values, 0.0, 1.0)
    rgb = [np.interp(v, xs, [c[k] for _s, c in HEAT_STOPS]) for k in range(3)]
    return np.stack(rgb, axis=-1).round().astype(np.uint8)


def token_spans(line: str) -> list[tuple[int, int, str, int]]:
    """Tokens in a line of CLIPTokenize's list ("<start>(49406) a(320) red(736)×1.2 …"):
    (start, end, word, id) per token, as character offsets into the line."""
    return [(m.start(), m.end(), m.group(1), int(m.group(2))) for m in TOKEN_RE.finditer(line)]


def trace_token_index(tokens: list[str], word: str, position: int | None = None) -> int | None:
    """Which of the trace's tokens a clicked token is. `position`: its place in its chunk, counting
    the start token as 0 (the trace drops the start token, so it is tokens[position - 1])."""
    want = plain_word(word)
    if position is not None and 0 < position <= len(tokens) and plain_word(tokens[position - 1]) == want:
        return position - 1
    return next((i for i, t in enumerate(tokens) if plain_word(t) == want), None)
