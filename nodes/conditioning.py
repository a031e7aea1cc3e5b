"""Conditioning nodes: the tokenizer and the text encoder as two visible stages, the one-node form,
and which CLIP layer to stop at."""

from __future__ import annotations

from nodegraph import Int, Link, Node, NodeInputError, NodeOutput, Output, String, register
from nodegraph import types as T

CLIP_IN = Link("clip", T.CLIP, tooltip="the tokenizer and text encoder (from a checkpoint loader)")
PROMPT = String("text", "", multiline=True, tooltip="the prompt; (word:1.3) weights it")
CONDITIONING_OUT = Output("CONDITIONING", T.CONDITIONING,
                          "the prompt as the text encoder's hidden states, for the sampler's cross-attention")


def tokens_summary(tokens) -> dict:
    """What the editor shows under CLIPTokenize: each chunk's words with ids and weights."""
    rows = []
    for c, (ids, words, weights) in enumerate(zip(tokens.ids, tokens.words, tokens.weights, strict=True)):
        used = [(i, w, wt) for i, w, wt in zip(ids, words, weights, strict=True) if w != "<pad>"]
        rows.append(" ".join(f"{w}({i})" + (f"×{wt:g}" if wt != 1.0 else "") for i, w, wt in used)
                    + f"   [chunk {c + 1}: {len(used) - 2} tokens + padding]")
    return {"text": rows}


@register
class CLIPTokenize(Node):
    """Split a prompt into CLIP's BPE tokens (77 per chunk), with (weights:1.2) parsed — see what the
    text encoder will read."""

    category = "conditioning"
    inputs = [CLIP_IN, PROMPT]
    outputs = [Output("TOKENS", T.TOKENS, "token ids, the words they stand for and their weights")]

    def run(self, ctx, clip, text):
        from nodes.text import tokenize

        tokens = tokenize(clip.tokenizer, text, pad_id=clip.pad_id)
        return NodeOutput((tokens,), tokens_summary(tokens))


@register
class CLIPTextEncodeTokens(Node):
    """Run the text encoder on TOKENS: one hidden-state vector per token position (CONDITIONING)."""

    category = "conditioning"
    inputs = [CLIP_IN, Link("tokens", T.TOKENS, tooltip="the prompt's tokens (from CLIPTokenize)")]
    outputs = [CONDITIONING_OUT]

    def run(self, ctx, clip, tokens):
        from nodes.text import encode_tokens

        return (encode_tokens(clip, tokens),)


@register
class CLIPTextEncode(Node):
    """Tokenize and encode a prompt in one step (ComfyUI's node)."""

    category = "conditioning"
    inputs = [PROMPT, CLIP_IN]
    outputs = [CONDITIONING_OUT]

    def run(self, ctx, text, clip):
        from nodes.text import encode_text

        return (encode_text(clip, text),)


@register
class CLIPSetLastLayer(Node):
    """CLIP skip: take the text encoder's hidden state from an earlier layer (-1 is the last)."""

    category = "conditioning"
    inputs = [CLIP_IN, Int("stop_at_clip_layer", -1, min=-24, max=-1,
                           tooltip="-1: last layer; -2: the one before (\"clip skip 2\")")]
    outputs = [Output("CLIP", T.CLIP, "the same text encoder, stopping at the chosen layer")]

    def run(self, ctx, clip, stop_at_clip_layer):
        from nodes.text import clip_layer_range

        low, high = clip_layer_range(clip.text_encoder)
        if not low <= stop_at_clip_layer <= high:
            raise NodeInputError("stop_at_clip_layer", f"{stop_at_clip_layer} is out of range: this text encoder "
                                 f"has {-low} layers, so use a value from {low} to {high}")
        return (clip.with_layer(stop_at_clip_layer),)
