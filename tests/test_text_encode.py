"""TOKENS -> CONDITIONING on a tiny random CLIP text encoder: shapes, CLIP skip, weights, pooled."""

from __future__ import annotations

import copy
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from nodes.core.values import ClipModel  # noqa: E402
from nodes.text.encode import clip_layer_range, encode_text, encode_tokens  # noqa: E402
from nodes.text.tokens import tokenize  # noqa: E402

# the CLIP tokenizer the SD nodes ship (the same files as the fixtures' sd15_diffusers_config/tokenizer)
TOKENIZER_DIR = Path(__file__).resolve().parents[1] / "nodes" / "configs" / "clip_tokenizer"
START, END = 49406, 49407
N_LAYERS = 3
DIM = 32

pytestmark = pytest.mark.skipif(not TOKENIZER_DIR.is_dir(), reason="shared tokenizer fixture missing")


def _config(**extra):
    return transformers.CLIPTextConfig(
        vocab_size=49408,
        hidden_size=DIM,
        intermediate_size=48,
        num_hidden_layers=N_LAYERS,
        num_attention_heads=4,
        max_position_embeddings=77,
        bos_token_id=START,
        eos_token_id=END,
        pad_token_id=1,
        **extra,
    )


@pytest.fixture(scope="module")
def tokenizer():
    return transformers.CLIPTokenizer.from_pretrained(str(TOKENIZER_DIR), local_files_only=True)


@pytest.fixture(scope="module")
def encoder():
    torch.manual_seed(0)
    model = transformers.CLIPTextModel(_config()).eval()
    with torch.no_grad():  # non-trivial LayerNorm parameters, so "with / without final LN" differ
        model.final_layer_norm.weight.uniform_(0.5, 1.5)
        model.final_layer_norm.bias.uniform_(-0.5, 0.5)
    return model


@pytest.fixture(scope="module")
def projected_encoder():
    torch.manual_seed(1)
    return transformers.CLIPTextModelWithProjection(_config(projection_dim=16)).eval()


def make_clip(tokenizer, encoder, **kw) -> ClipModel:
    return ClipModel(tokenizer=tokenizer, text_encoder=encoder, **kw)


def run(encoder, ids, **kw):
    """The encoder's own forward on a list of chunks, for reference values."""
    with torch.no_grad():
        return encoder(input_ids=torch.tensor(ids), **kw)


LONG = "a photograph of an astronaut riding a horse on the moon, " * 8  # > 75 tokens


def test_output_is_one_entry_of_77_tokens_per_chunk(tokenizer, encoder):
    clip = make_clip(tokenizer, encoder)
    (short,) = encode_text(clip, "a photograph of an astronaut riding a horse")
    assert short.cond.shape == (1, 77, DIM) and short.pooled.shape == (1, DIM)
    assert short.cond.dtype == torch.float32 and short.cond.device.type == "cpu"
    (long,) = encode_text(clip, LONG)
    n = len(tokenize(tokenizer, LONG, pad_id=END).ids)
    assert n == 2 and long.cond.shape == (1, 77 * n, DIM)


def test_last_layer_is_the_encoders_last_hidden_state(tokenizer, encoder):
    tokens = tokenize(tokenizer, LONG, pad_id=END)
    (entry,) = encode_tokens(make_clip(tokenizer, encoder), tokens)
    expected = run(encoder, tokens.ids).last_hidden_state  # [N, 77, dim]
    torch.testing.assert_close(entry.cond, expected.reshape(1, -1, DIM), rtol=0, atol=1e-6)
    # chunks are joined along the token axis in order
    torch.testing.assert_close(
        entry.cond[:, 77:], run(encoder, tokens.ids[1:]).last_hidden_state, rtol=0, atol=1e-6
    )


def test_clip_skip_2_is_layer_n_minus_1_through_final_layer_norm(tokenizer, encoder):
    tokens = tokenize(tokenizer, "a photograph of an astronaut riding a horse", pad_id=END)
    (entry,) = encode_tokens(make_clip(tokenizer, encoder, layer=-2), tokens)
    # independent: the same model with its last layer removed; its forward applies the final LN
    shorter = copy.deepcopy(encoder)
    shorter.encoder.layers = shorter.encoder.layers[:-1]
    expected = run(shorter, tokens.ids).last_hidden_state
    torch.testing.assert_close(entry.cond, expected, rtol=0, atol=1e-6)
    assert not torch.allclose(entry.cond, run(encoder, tokens.ids).last_hidden_state, atol=1e-3)


def test_without_final_layer_norm_the_raw_hidden_state_is_used(tokenizer, encoder):
    tokens = tokenize(tokenizer, "a red cat", pad_id=END)
    (entry,) = encode_tokens(make_clip(tokenizer, encoder, layer=-2, final_layer_norm=False), tokens)
    shorter = copy.deepcopy(encoder)
    shorter.encoder.layers = shorter.encoder.layers[:-1]
    ln = shorter.final_layer_norm
    normed = run(shorter, tokens.ids).last_hidden_state
    # what we return, put through the final LN, is what the truncated model outputs
    raw = entry.cond
    torch.testing.assert_close(ln(raw).detach(), normed, rtol=0, atol=1e-5)
    assert not torch.allclose(raw, normed, atol=1e-3)


def test_layer_out_of_range_names_the_allowed_range(tokenizer, encoder):
    assert clip_layer_range(encoder) == (-N_LAYERS, -1)
    encode_text(make_clip(tokenizer, encoder, layer=-N_LAYERS), "cat")  # the first layer's output: fine
    for bad in (-N_LAYERS - 1, 0, 1, -24):
        with pytest.raises(ValueError, match=rf"between -{N_LAYERS} and -1"):
            encode_text(make_clip(tokenizer, encoder, layer=bad), "cat")


def _reference_weighted(encoder, tokens, pad_id):
    z = run(encoder, tokens.ids).last_hidden_state
    empty = [START, END] + [pad_id] * 75
    z_empty = run(encoder, [empty]).last_hidden_state
    w = torch.tensor(tokens.weights).unsqueeze(-1)
    expected = torch.where(w != 1.0, z_empty + (z - z_empty) * w, z)
    return expected.reshape(1, -1, DIM)


@pytest.mark.parametrize("pad_id", [END, 0])
def test_weights_pull_positions_away_from_the_empty_prompt(tokenizer, encoder, pad_id):
    tokens = tokenize(tokenizer, "a (red:1.5) cat on a ((mat)), " + LONG, pad_id=pad_id)
    assert tokens.has_weights and len(tokens.ids) == 2
    (entry,) = encode_tokens(make_clip(tokenizer, encoder, pad_id=pad_id), tokens)
    torch.testing.assert_close(entry.cond, _reference_weighted(encoder, tokens, pad_id), rtol=0, atol=1e-5)
    # positions of weight 1 keep their plain hidden state
    plain = run(encoder, tokens.ids).last_hidden_state.reshape(1, -1, DIM)
    w = torch.tensor(tokens.weights).reshape(1, -1)
    torch.testing.assert_close(entry.cond[w == 1.0], plain[w == 1.0], rtol=0, atol=1e-6)
    assert not torch.allclose(entry.cond[w != 1.0], plain[w != 1.0], atol=1e-4)


def test_weight_one_everywhere_equals_the_unweighted_path(tokenizer, encoder):
    clip = make_clip(tokenizer, encoder)
    (explicit_one,) = encode_text(clip, "(cat:1.0) (on:1) a mat")
    (plain,) = encode_text(clip, "cat on a mat")
    assert torch.equal(explicit_one.cond, plain.cond)
    assert torch.equal(explicit_one.pooled, plain.pooled)


def test_weight_zero_gives_the_empty_prompt_state(tokenizer, encoder):
    tokens = tokenize(tokenizer, "(cat:0)", pad_id=END)
    (entry,) = encode_tokens(make_clip(tokenizer, encoder), tokens)
    z_empty = run(encoder, [[START, END] + [END] * 75]).last_hidden_state
    torch.testing.assert_close(entry.cond[0, 1], z_empty[0, 1], rtol=0, atol=1e-6)


def test_pooled_comes_from_the_first_chunk_at_its_first_end_token(tokenizer, encoder):
    tokens = tokenize(tokenizer, LONG, pad_id=END)
    (entry,) = encode_tokens(make_clip(tokenizer, encoder, layer=-2), tokens)  # pooled ignores CLIP skip
    first_end = tokens.ids[0].index(END)
    expected = run(encoder, tokens.ids[:1]).last_hidden_state[:, first_end]
    torch.testing.assert_close(entry.pooled, expected, rtol=0, atol=1e-6)
    # the encoder's own pooler agrees (its config has eos_token_id 49407)
    torch.testing.assert_close(entry.pooled, run(encoder, tokens.ids[:1]).pooler_output, rtol=0, atol=1e-6)


def test_pooled_is_projected_when_the_model_has_a_projection(tokenizer, projected_encoder):
    clip = make_clip(tokenizer, projected_encoder, layer=-2)
    tokens = tokenize(tokenizer, "a watercolor painting of a lighthouse at dusk", pad_id=0)
    (entry,) = encode_tokens(clip, tokens)
    assert entry.cond.shape == (1, 77, DIM) and entry.pooled.shape == (1, 16)
    torch.testing.assert_close(
        entry.pooled, run(projected_encoder, tokens.ids).text_embeds, rtol=0, atol=1e-6
    )


def test_outputs_are_ordinary_tensors_later_nodes_may_modify(tokenizer, encoder):
    (entry,) = encode_text(make_clip(tokenizer, encoder), "cat")
    assert not entry.cond.is_inference() and not entry.pooled.is_inference()
    entry.cond.mul_(2.0)  # must not raise


def test_ragged_tokens_are_rejected_with_a_clear_message(tokenizer, encoder):
    tokens = tokenize(tokenizer, "cat", pad_id=END)
    tokens.ids[0] = tokens.ids[0][:-1]
    with pytest.raises(ValueError, match="chunk 0 has 76 ids and 77 weights"):
        encode_tokens(make_clip(tokenizer, encoder), tokens)
