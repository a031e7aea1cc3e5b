"""TOKENS -> CONDITIONING with a CLIP text encoder, the way ComfyUI's CLIPTextEncode does it.

- All chunks go through the encoder as one batch. The hidden state after layer `clip.layer`
  (-1 the last, -2 the one before, ... as CLIPSetLastLayer counts) is taken, with the encoder's
  final LayerNorm applied when `clip.final_layer_norm` (SD1.x, SD2.x), and the chunks are joined
  along the token axis: [1, 77·N, dim].
- If any weight is not 1, the empty prompt (start, end, padding) is encoded in the same batch and
  each position with weight w != 1 becomes `z_empty + (z - z_empty)·w`; positions with weight 1
  are left untouched (as ComfyUI leaves them).
- The pooled output comes from the first chunk: the last layer's output after the final
  LayerNorm, at the first end token, times the text projection when the model has one.

The encoder is a transformers `CLIPTextModel` or `CLIPTextModelWithProjection` (4.x layout with
`.text_model` inside, or 5.x layout with `final_layer_norm` on the model itself). It runs in
`clip.dtype` on `clip.device` (the encoder's own when those are None; the encoder is moved there
if it is not already); the results are float32 on the CPU.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any

import torch

from nodes.core.values import ClipModel, ConditioningEntry, Tokens
from nodes.text.tokens import PAD_WORD, special_ids, tokenize

__all__ = ["clip_layer_range", "encode_sdxl_texts", "encode_text", "encode_tokens"]


def _transformer(text_encoder: Any) -> Any:
    """The module holding embeddings, encoder layers and final_layer_norm."""
    if hasattr(text_encoder, "final_layer_norm"):
        return text_encoder  # transformers 5.x CLIPTextModel
    inner = getattr(text_encoder, "text_model", None)
    if inner is not None and hasattr(inner, "final_layer_norm"):
        return inner  # CLIPTextModelWithProjection, or 4.x CLIPTextModel
    raise TypeError(
        f"text encoder {type(text_encoder).__name__} is not a CLIP text model "
        "(expected transformers CLIPTextModel or CLIPTextModelWithProjection)"
    )


def _num_layers(text_encoder: Any) -> int:
    config = getattr(text_encoder, "config", None)
    n = getattr(config, "num_hidden_layers", None)
    if n is None:
        n = len(_transformer(text_encoder).encoder.layers)
    return int(n)


def clip_layer_range(text_encoder: Any) -> tuple[int, int]:
    """(lowest, highest) valid CLIP layer for this encoder: (-num_layers, -1)."""
    return -_num_layers(text_encoder), -1


def _check_layer(layer: Any, text_encoder: Any) -> int:
    low, high = clip_layer_range(text_encoder)
    if isinstance(layer, bool) or not isinstance(layer, int) or not low <= layer <= high:
        raise ValueError(
            f"CLIP layer {layer!r} is out of range: this text encoder has {-low} layers, so the "
            f"layer must be between {low} and {high} (-1 is the last layer, -2 the one before it)"
        )
    return layer


def _check_tokens(tokens: Tokens, max_positions: int | None) -> int:
    if not tokens.ids:
        raise ValueError("TOKENS has no chunks; tokenize the prompt first (an empty prompt gives one chunk)")
    length = len(tokens.ids[0])
    for k, (ids, weights) in enumerate(zip(tokens.ids, tokens.weights, strict=True)):
        if len(ids) != length or len(weights) != length:
            raise ValueError(
                f"TOKENS chunk {k} has {len(ids)} ids and {len(weights)} weights; every chunk must have {length}"
            )
    if max_positions is not None and length > max_positions:
        raise ValueError(f"TOKENS chunks have {length} positions, more than the encoder's {max_positions}")
    return length


def encode_tokens(clip: ClipModel, tokens: Tokens) -> list[ConditioningEntry]:
    """Encode TOKENS into CONDITIONING (one entry: cond [1, 77·N, dim] and pooled [1, dim']).

    With a second tower (SDXL base), both encode the same tokens (the second re-padded with its own
    pad id) and their hidden states are joined: [1, 77·N, 768 + 1280]; the pooled embedding is the
    second tower's (bigG's projection), as ComfyUI and diffusers build SDXL's conditioning.
    """
    cond, pooled = _encode_tower(clip, tokens)
    if clip.second is not None:
        cond_g, pooled = _encode_tower(clip.second, _repadded(tokens, clip.second.pad_id))
        cond = torch.cat([cond, cond_g], dim=-1)
    # Leave inference mode with ordinary tensors, so later nodes may modify them in place.
    return [ConditioningEntry(cond=cond.clone(), pooled=pooled.clone())]


def encode_sdxl_texts(clip: ClipModel, text_g: str, text_l: str, embeddings: Any = None) -> list[ConditioningEntry]:
    """CLIPTextEncodeSDXL: a separate prompt for each SDXL tower (text_l for CLIP-L, text_g for bigG),
    the shorter padded with empty chunks so both have as many tokens (as ComfyUI pads them)."""
    if clip.second is None:
        raise ValueError("this CLIP has one text encoder; CLIPTextEncodeSDXL needs SDXL base's two")
    tokens_l = tokenize(clip.tokenizer, text_l, pad_id=clip.pad_id, embeddings=embeddings)
    tokens_g = tokenize(clip.second.tokenizer, text_g, pad_id=clip.second.pad_id, embeddings=embeddings)
    n = max(len(tokens_l.ids), len(tokens_g.ids))
    tokens_l = _padded_to(tokens_l, n, clip)
    tokens_g = _padded_to(tokens_g, n, clip.second)
    cond_l, _ = _encode_tower(clip, tokens_l)
    cond_g, pooled = _encode_tower(clip.second, tokens_g)
    return [ConditioningEntry(cond=torch.cat([cond_l, cond_g], dim=-1).clone(), pooled=pooled.clone())]


def _padded_to(tokens: Tokens, n_chunks: int, clip: ClipModel) -> Tokens:
    """Append empty chunks (start, end, padding) up to `n_chunks`."""
    missing = n_chunks - len(tokens.ids)
    if missing <= 0:
        return tokens
    empty = tokenize(clip.tokenizer, "", pad_id=clip.pad_id)
    return Tokens(tokens.ids + empty.ids * missing, tokens.weights + empty.weights * missing,
                  tokens.words + empty.words * missing, tokens.text, tokens.embeddings)


def _repadded(tokens: Tokens, pad_id: int) -> Tokens:
    ids = [[pad_id if word == PAD_WORD else i for i, word in zip(chunk, words, strict=True)]
           for chunk, words in zip(tokens.ids, tokens.words, strict=True)]
    return Tokens(ids, tokens.weights, tokens.words, tokens.text, tokens.embeddings)


def _encode_tower(clip: ClipModel, tokens: Tokens):
    """One text encoder: (cond [1, 77·N, dim], pooled [1, dim']), float32 on the CPU."""
    encoder = clip.text_encoder
    transformer = _transformer(encoder)
    layer = _check_layer(clip.layer, encoder)
    if len(tokens.weights) != len(tokens.ids):
        raise ValueError(f"TOKENS has {len(tokens.ids)} id chunks but {len(tokens.weights)} weight chunks")
    config = getattr(encoder, "config", None)
    length = _check_tokens(tokens, getattr(config, "max_position_embeddings", None))

    first_param = next(encoder.parameters())
    device = torch.device(clip.device) if clip.device is not None else first_param.device
    dtype = clip.dtype if clip.dtype is not None else first_param.dtype
    if first_param.device != device or first_param.dtype != dtype:
        encoder.to(device=device, dtype=dtype)  # the CLIP value says where it runs; usually a no-op

    start_id, end_id = special_ids(clip.tokenizer)
    rows = [list(chunk) for chunk in tokens.ids]
    weighted = tokens.has_weights
    if weighted:
        rows.append([start_id, end_id] + [clip.pad_id] * (length - 2))
    n_chunks = len(tokens.ids)

    projection = getattr(encoder, "text_projection", None)
    with torch.inference_mode(), _embedding_vectors(transformer, tokens):
        input_ids = torch.tensor(rows, dtype=torch.long, device=device)
        out = transformer(input_ids=input_ids, output_hidden_states=True)
        last = out.last_hidden_state  # after the final LayerNorm
        if layer == -1 and clip.final_layer_norm:
            z = last
        else:
            z = out.hidden_states[layer]  # [0] is the embeddings, [-k] the output of layer n-k+1
            if clip.final_layer_norm:
                z = transformer.final_layer_norm(z)
        z = z.float()

        if weighted:
            z_empty = z[-1:]
            z = z[:n_chunks]
            w = torch.tensor(tokens.weights, dtype=torch.float32, device=z.device).unsqueeze(-1)
            z = torch.where(w != 1.0, z_empty + (z - z_empty) * w, z)

        # Pooled: first chunk, last layer, at the first end token (the last position if none).
        first = input_ids[0]
        hits = (first == end_id).nonzero()
        pos = int(hits[0, 0]) if hits.numel() else first.shape[0] - 1
        pooled = last[0:1, pos]
        if projection is not None:
            pooled = projection(pooled)
        pooled = pooled.float()

        cond = z.reshape(1, n_chunks * length, z.shape[-1]).to("cpu")
        pooled = pooled.to("cpu")
    return cond, pooled


@contextmanager
def _embedding_vectors(transformer: Any, tokens: Tokens):
    """While encoding, the token-embedding layer's output takes each embedding vector at its
    position (textual inversion: the vectors stand where words' embeddings would)."""
    if not tokens.embeddings:
        yield
        return
    layer = transformer.embeddings.token_embedding
    width = layer.embedding_dim
    rows = [(c, p, embedding.for_width(width)[row]) for (c, p), (embedding, row) in tokens.embeddings.items()]

    def replace_rows(_module, _inputs, output):
        output = output.clone()
        for c, p, vector in rows:
            if c < output.shape[0]:  # the weighted path's extra empty row holds none
                output[c, p] = vector.to(output.device, output.dtype)
        return output

    handle = layer.register_forward_hook(replace_rows)
    try:
        yield
    finally:
        handle.remove()


def encode_text(clip: ClipModel, text: str, embeddings: Any = None) -> list[ConditioningEntry]:
    """Tokenize and encode a prompt in one go (the one-node CLIPTextEncode form). `embeddings`
    (name → Embedding) turns `embedding:name` words into their vectors."""
    return encode_tokens(clip, tokenize(clip.tokenizer, text, pad_id=clip.pad_id, embeddings=embeddings))
