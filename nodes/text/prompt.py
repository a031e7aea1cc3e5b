"""Prompt weight syntax, parsed the way ComfyUI's CLIPTextEncode reads it.

Rules (ComfyUI 0.3.64, see ../shared/fixtures/README.md "Text encoding conventions"):

- ``\\(`` and ``\\)`` are literal brackets; a backslash before anything else is a plain backslash.
- Each ``( ... )`` group multiplies the weight of what it holds by 1.1; groups nest, so
  ``((word))`` is 1.1 * 1.1.
- A group whose text ends in ``:number`` sets the weight to that number instead: ``(word:1.3)`` is
  1.3, and the number is whatever Python's ``float()`` accepts. The colon must not be the group's
  first character, and only the last colon counts; if what follows it is not a number the text is
  kept as written and the group weighs 1.1.
- There is no ``[ ... ]`` de-emphasis: square brackets are ordinary text.

Malformed input never raises; it falls out of the same scan ComfyUI does:

- An unclosed ``(`` leaves the rest of the text as literal text at the current weight
  (``"(a b"`` -> ``[("(a b", 1.0)]``), unless a nested group inside it happens to close it at the end.
- A stray ``)`` sends the nesting count below zero; from there on brackets pair up one level off,
  so ``"a) (b)"`` stays one literal segment ``"a) (b)"`` at weight 1.0.

Pure Python, no imports beyond the standard library: the node registry may import it.
"""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["Segment", "parse_prompt_weights"]


class Segment(NamedTuple):
    """A run of prompt text and the weight its tokens carry."""

    text: str
    weight: float


# A parsed prompt is a list of units: a one-character string for text (escaped brackets are text
# too), or one of these two markers for a bracket that takes part in weighting.
_OPEN = object()
_CLOSE = object()


def _units(text: str) -> list:
    units: list = []
    i = 0
    n = len(text)
    while i < n:
        ch = text[i]
        if ch == "\\" and i + 1 < n and text[i + 1] in "()":
            units.append(text[i + 1])  # escaped: a literal bracket
            i += 2
            continue
        if ch == "(":
            units.append(_OPEN)
        elif ch == ")":
            units.append(_CLOSE)
        else:
            units.append(ch)
        i += 1
    return units


def _render(units: list) -> str:
    return "".join("(" if u is _OPEN else ")" if u is _CLOSE else u for u in units)


def _top_level_parts(units: list) -> list[list]:
    """Cut `units` at its top-level groups: text runs and `( ... )` groups, in order.

    A part is closed when the depth returns to exactly zero at a `)`; a `)` with no group open
    drives the depth negative and is kept as text, which shifts the pairing of later brackets.
    """
    parts: list[list] = []
    current: list = []
    depth = 0
    for u in units:
        if u is _OPEN:
            if depth == 0 and current:
                parts.append(current)
                current = []
            current.append(u)
            depth += 1
        elif u is _CLOSE:
            depth -= 1
            current.append(u)
            if depth == 0:
                parts.append(current)
                current = []
        else:
            current.append(u)
    if current:
        parts.append(current)
    return parts


def _explicit_weight(inner: list) -> tuple[list, float] | None:
    """`(text:1.3)` -> (text units, 1.3); None when the group carries no usable number."""
    colon = -1
    for k in range(len(inner) - 1, -1, -1):
        if inner[k] == ":":  # the markers never compare equal to ":"
            colon = k
            break
    if colon <= 0:
        return None
    try:
        value = float(_render(inner[colon + 1 :]))
    except ValueError:
        return None
    return inner[:colon], value


def parse_prompt_weights(text: str) -> list[Segment]:
    """Split a prompt into weighted segments, exactly as ComfyUI does.

    For example ``a (red:1.3) ((cat))`` gives ``("a ", 1.0), ("red", 1.3), (" ", 1.0),
    ("cat", 1.1 * 1.1)``.

    Adjacent segments with equal weights are not merged (each is tokenized on its own, which is
    what ComfyUI does too). Never raises on any string.
    """
    out: list[Segment] = []
    # Depth-first walk with an explicit stack, so deeply nested brackets cannot hit the
    # interpreter's recursion limit.
    stack = [(iter(_top_level_parts(_units(text))), 1.0)]
    while stack:
        parts, weight = stack[-1]
        part = next(parts, None)
        if part is None:
            stack.pop()
            continue
        if len(part) >= 2 and part[0] is _OPEN and part[-1] is _CLOSE:
            inner = part[1:-1]
            group_weight = weight * 1.1
            explicit = _explicit_weight(inner)
            if explicit is not None:
                inner, group_weight = explicit
            stack.append((iter(_top_level_parts(inner)), group_weight))
        else:
            out.append(Segment(_render(part), weight))
    return out
