"""Text nodes: the tokenizer and the text encoder as two visible stages, and the one-node form."""

from __future__ import annotations

from nodegraph import Link, Node, NodeOutput, Output, String, register
from nodegraph import types as T


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
    inputs = [Link("clip", T.CLIP), String("text", "", multiline=True, tooltip="the prompt; (word:1.3) weights it")]
    outputs = [Output("TOKENS", T.TOKENS)]

    def run(self, ctx, clip, text):
        from nodes.text import tokenize

        tokens = tokenize(clip.tokenizer, text, pad_id=clip.pad_id)
        return NodeOutput((tokens,), tokens_summary(tokens))


@register
class CLIPTextEncodeTokens(Node):
    """Run the text encoder on TOKENS: one hidden-state vector per token position (CONDITIONING)."""

    category = "conditioning"
    inputs = [Link("clip", T.CLIP), Link("tokens", T.TOKENS)]
    outputs = [Output("CONDITIONING", T.CONDITIONING)]

    def run(self, ctx, clip, tokens):
        from nodes.text import encode_tokens

        return (encode_tokens(clip, tokens),)


@register
class CLIPTextEncode(Node):
    """Tokenize and encode a prompt in one step (ComfyUI's node)."""

    category = "conditioning"
    inputs = [String("text", "", multiline=True, tooltip="the prompt; (word:1.3) weights it"), Link("clip", T.CLIP)]
    outputs = [Output("CONDITIONING", T.CONDITIONING)]

    def run(self, ctx, text, clip):
        from nodes.text import encode_text

        return (encode_text(clip, text),)
