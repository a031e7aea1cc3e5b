"""The text stages: prompt weights -> TOKENS -> CONDITIONING.

`prompt` and `tokens` are pure Python (cheap to import); `encode` imports torch and is loaded
only when one of its names is first used.
"""

from __future__ import annotations

from typing import Any

from nodes.text.prompt import Segment, parse_prompt_weights
from nodes.text.tokens import empty_chunk, special_ids, tokenize

__all__ = [
    "Segment",
    "clip_layer_range",
    "encode_sdxl_texts",
    "empty_chunk",
    "encode_text",
    "encode_tokens",
    "parse_prompt_weights",
    "special_ids",
    "tokenize",
]

_LAZY = {"clip_layer_range", "encode_sdxl_texts", "encode_text", "encode_tokens"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from nodes.text import encode

        return getattr(encode, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
