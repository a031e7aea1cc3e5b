"""Prompt -> TOKENS: weighted segments, CLIP BPE, 77-token chunks, as ComfyUI builds them.

- Each weighted segment (see `prompt.py`) is tokenized on its own, without start/end tokens, and
  all its tokens carry the segment's weight.
- Segments are packed into chunks of `max_length - 2` (75) tokens. A segment of 8 or more tokens
  may be split across chunks; a shorter one that does not fit closes the current chunk (end token,
  padding) and moves whole to the next chunk.
- Every chunk is `start, tokens..., end, pad...`, exactly `max_length` long. An empty prompt gives
  one chunk: start, end, padding.
- Padding is `pad_id`: 49407 (the end token) for SD1.x CLIP-L, 0 for SD2.x OpenCLIP.

Literal `!` is ordinary text here (ids 256 "!</w>", 748 "!!</w>", ...) even when the tokenizer's
own config declares `"!"` as its pad token (the SD2/SDXL diffusers configs do): we run the
tokenizer's BPE pipeline without its added tokens, so that declaration cannot swallow `!` from a
prompt (diffusers issue #4153; ComfyUI and OpenCLIP read `!` as text). The literal strings
`<|startoftext|>` / `<|endoftext|>` in a prompt still become the start/end ids, as in ComfyUI.

No torch here; `tokenizer` is a transformers CLIPTokenizer (fast or slow) passed in by the caller.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from nodes.core.values import Tokens
from nodes.text.prompt import parse_prompt_weights

__all__ = ["DEFAULT_END_ID", "DEFAULT_START_ID", "SPLIT_MIN_TOKENS", "empty_chunk", "special_ids", "tokenize"]

DEFAULT_START_ID = 49406
DEFAULT_END_ID = 49407
SPLIT_MIN_TOKENS = 8  # a segment this long may be split across chunks; shorter ones move whole

# The id a position holding an embedding vector carries (any real token id would do: the vector
# replaces its embedding; this one, "!", is never the end token the pooled output looks for).
EMBEDDING_ID = 0

START_WORD = "<start>"
END_WORD = "<end>"
PAD_WORD = "<pad>"


def special_ids(tokenizer: Any) -> tuple[int, int]:
    """(start id, end id) of a CLIP tokenizer: its bos/eos ids, else 49406/49407."""
    start = getattr(tokenizer, "bos_token_id", None)
    end = getattr(tokenizer, "eos_token_id", None)
    return (DEFAULT_START_ID if start is None else int(start), DEFAULT_END_ID if end is None else int(end))


def empty_chunk(tokenizer: Any, *, pad_id: int, max_length: int = 77) -> list[int]:
    """The ids of the empty prompt: start, end, then padding up to `max_length`."""
    start, end = special_ids(tokenizer)
    return [start, end] + [pad_id] * (max_length - 2)


def tokenize(tokenizer: Any, text: str, *, pad_id: int, max_length: int = 77,
             embeddings: Callable[[str], Any] | None = None) -> Tokens:
    """Tokenize a prompt with weights into 77-token chunks (ComfyUI's rules, module docstring).

    With `embeddings` (name → nodes.text.embeddings.Embedding or None), `embedding:name` words
    become one position per vector; without it they are tokenized as text."""
    if max_length < 3:
        raise ValueError(f"max_length must be at least 3 (start, one token, end), got {max_length}")
    start_id, end_id = special_ids(tokenizer)
    capacity = max_length - 2  # tokens between start and end

    ids: list[list[int]] = []
    weights: list[list[float]] = []
    words: list[list[str]] = []
    vectors: dict[tuple[int, int], tuple[Any, int]] = {}
    # The chunk being filled; it holds the start token and the content, end and padding come later.
    cur_ids: list[int] = [start_id]
    cur_weights: list[float] = [1.0]
    cur_words: list[str] = [START_WORD]

    def close_chunk() -> None:
        nonlocal cur_ids, cur_weights, cur_words
        fill = max_length - len(cur_ids) - 1
        ids.append(cur_ids + [end_id] + [pad_id] * fill)
        weights.append(cur_weights + [1.0] * (1 + fill))
        words.append(cur_words + [END_WORD] + [PAD_WORD] * fill)
        cur_ids, cur_weights, cur_words = [start_id], [1.0], [START_WORD]

    for segment in parse_prompt_weights(text):
        pieces = _pieces(tokenizer, segment.text, embeddings)
        splittable = len(pieces) >= SPLIT_MIN_TOKENS
        while pieces:
            room = capacity - (len(cur_ids) - 1)
            if len(pieces) <= room:
                taken, pieces = pieces, []
            elif splittable or len(cur_ids) == 1:
                # (a fresh chunk always takes what it can; only reachable for tiny max_length)
                taken, pieces = pieces[:room], pieces[room:]
            else:
                taken = []  # too short to split: the whole segment moves to a fresh chunk
            for token_id, word in taken:
                if isinstance(token_id, tuple):  # an embedding vector: (embedding, row)
                    vectors[(len(ids), len(cur_ids))] = token_id
                    token_id = EMBEDDING_ID
                cur_ids.append(token_id)
                cur_weights.append(segment.weight)
                cur_words.append(word)
            if pieces:
                close_chunk()
    close_chunk()
    return Tokens(ids=ids, weights=weights, words=words, text=text, embeddings=vectors)


def _pieces(tokenizer: Any, text: str, embeddings: Callable[[str], Any] | None) -> list[tuple[Any, str]]:
    """BPE pieces of a segment, with each `embedding:name` word's vectors in its place."""
    if embeddings is None or "embedding:" not in text:
        return _bpe(tokenizer, text)
    from nodes.text.embeddings import split_words

    out: list[tuple[Any, str]] = []
    for kind, part in split_words(text):
        if kind == "text":
            out.extend(_bpe(tokenizer, part))
            continue
        embedding = embeddings(part)
        if embedding is not None:
            out.extend(((embedding, row), f"<{embedding.name}:{row}>") for row in range(embedding.length))
    return out


# --- BPE without added tokens -------------------------------------------------------------------


def _bpe(tokenizer: Any, text: str) -> list[tuple[int, str]]:
    """(id, readable piece) for each BPE token of `text`, no start/end added.

    The literal start/end token strings are kept as their ids; every other added token of the
    tokenizer (such as a `"!"` pad token) is ignored, so its text is tokenized as text.
    """
    start_id, end_id = special_ids(tokenizer)
    literal = {}
    for token, token_id, word in (
        (getattr(tokenizer, "bos_token", None), start_id, START_WORD),
        (getattr(tokenizer, "eos_token", None), end_id, END_WORD),
    ):
        if isinstance(token, str) and token:
            literal[token] = (token_id, word)
    if not literal:
        return _plain_bpe(tokenizer, text)
    pattern = "(" + "|".join(re.escape(t) for t in sorted(literal, key=len, reverse=True)) + ")"
    out: list[tuple[int, str]] = []
    for k, part in enumerate(re.split(pattern, text)):
        if k % 2:
            out.append(literal[part])
        elif part:
            out.extend(_plain_bpe(tokenizer, part))
    return out


def _plain_bpe(tokenizer: Any, text: str) -> list[tuple[int, str]]:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None and getattr(backend, "model", None) is not None:
        # tokenizers' own pipeline, minus the added-token matching step.
        normalized = backend.normalizer.normalize_str(text) if backend.normalizer is not None else text
        if backend.pre_tokenizer is not None:
            words = [w for w, _ in backend.pre_tokenizer.pre_tokenize_str(normalized)]
        else:
            words = [normalized]
        out = []
        for w in words:
            for tok in backend.model.tokenize(w):
                out.append((int(tok.id), _readable(tokenizer, tok.value)))
        return out
    # A slow (pure Python) tokenizer: ask it to treat special tokens as text.
    encoded = tokenizer(text, add_special_tokens=False, split_special_tokens=True)["input_ids"]
    pieces = tokenizer.convert_ids_to_tokens(encoded)
    return [(int(i), _readable(tokenizer, p)) for i, p in zip(encoded, pieces, strict=True)]


def _readable(tokenizer: Any, piece: str) -> str:
    """A BPE piece as text: byte-level symbols decoded, the end-of-word marker dropped."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    decoder = getattr(backend, "decoder", None) if backend is not None else None
    try:
        if decoder is not None:
            text = decoder.decode([piece])
        else:
            text = tokenizer.convert_tokens_to_string([piece])
    except Exception:  # a piece we cannot decode is still worth showing as it is
        text = piece
    if text.endswith("</w>"):
        text = text[: -len("</w>")]
    return text.strip()
