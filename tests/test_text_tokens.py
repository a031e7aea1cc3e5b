"""Prompt -> TOKENS: CLIP ids, weights, chunks of 77 and readable words, as ComfyUI builds them."""

from __future__ import annotations

import os

import pytest

from tests.shared import FIXTURES

os.environ.setdefault("HF_HUB_OFFLINE", "1")

FIXTURES = FIXTURES
SD15_TOKENIZER = FIXTURES / "sd15_diffusers_config" / "tokenizer"
SD21_TOKENIZER = FIXTURES / "sd21v_diffusers_config" / "tokenizer"  # declares pad_token "!"

START, END = 49406, 49407
CAT = 2368  # "cat</w>"

pytestmark = pytest.mark.skipif(not SD15_TOKENIZER.is_dir(), reason="shared tokenizer fixture missing")


@pytest.fixture(scope="module")
def sd1_tokenizer():
    from transformers import CLIPTokenizer

    return CLIPTokenizer.from_pretrained(str(SD15_TOKENIZER), local_files_only=True)


@pytest.fixture(scope="module")
def sd2_tokenizer():
    from transformers import CLIPTokenizer

    if not SD21_TOKENIZER.is_dir():
        pytest.skip("SD2.1 tokenizer fixture missing")
    return CLIPTokenizer.from_pretrained(str(SD21_TOKENIZER), local_files_only=True)


def tok(tokenizer, text, pad_id=END):
    from nodes.text.tokens import tokenize

    return tokenize(tokenizer, text, pad_id=pad_id)


def content(tokens, chunk=0):
    """ids between start and the first end token of a chunk."""
    ids = tokens.ids[chunk]
    return ids[1 : ids.index(END, 1)]


def test_astronaut_prompt_gives_the_reference_ids(sd1_tokenizer):
    t = tok(sd1_tokenizer, "a photograph of an astronaut riding a horse")
    assert t.ids[0][:10] == [START, 320, 8853, 539, 550, 18376, 6765, 320, 4558, END]
    assert t.ids[0][10:] == [END] * 67
    assert len(t.ids) == 1 and t.text == "a photograph of an astronaut riding a horse"


def test_words_line_up_with_ids(sd1_tokenizer):
    t = tok(sd1_tokenizer, "a photograph of an astronaut riding a horse")
    assert t.words[0][:11] == [
        "<start>", "a", "photograph", "of", "an", "astronaut", "riding", "a", "horse", "<end>", "<pad>",
    ]  # fmt: skip
    assert all(len(i) == len(w) == len(ws) == 77 for i, w, ws in zip(t.ids, t.words, t.weights, strict=True))


def test_sub_word_pieces_are_readable(sd1_tokenizer):
    t = tok(sd1_tokenizer, "astronautics, café")
    n = len(content(t))
    words = t.words[0][1 : 1 + n]
    assert "".join(words[:-2]) == "astronautics" and words[-2:] == [",", "café"]
    # each word is its id's vocabulary piece, decoded and without the end-of-word marker
    pieces = sd1_tokenizer.convert_ids_to_tokens(content(t))
    assert [p.replace("</w>", "") for p in pieces[:-1]] == words[:-1]


def test_sd1_pads_with_end_and_sd2_pads_with_zero(sd1_tokenizer, sd2_tokenizer):
    a = tok(sd1_tokenizer, "a watercolor painting of a lighthouse at dusk", pad_id=END)
    b = tok(sd2_tokenizer, "a watercolor painting of a lighthouse at dusk", pad_id=0)
    expected = [START, 320, 14211, 3086, 539, 320, 13717, 536, 19708, END]
    assert a.ids[0] == expected + [END] * 67
    assert b.ids[0] == expected + [0] * 67
    assert a.words[0][10:] == b.words[0][10:] == ["<pad>"] * 67


def test_exclamation_mark_is_text_even_when_the_tokenizer_pads_with_it(sd1_tokenizer, sd2_tokenizer):
    # the SD2 config declares "!" (id 0) as its pad token; ComfyUI still reads "!" as text
    for tokenizer in (sd1_tokenizer, sd2_tokenizer):
        t = tok(tokenizer, "wow! amazing!!", pad_id=0)
        assert t.ids[0][:6] == [START, 2781, 256, 1370, 748, END]
        assert t.words[0][1:5] == ["wow", "!", "amazing", "!!"]


def test_bpe_matches_the_tokenizer_on_ordinary_text(sd1_tokenizer):
    texts = [
        "A Photograph, of 2 astronauts -- riding (horses)!?",
        "  multiple   spaces\tand\nnewlines  ",
        "naïve café déjà vu 東京 😀🎉 it's we'll 1234567",
    ]
    for text in texts:
        t = tok(sd1_tokenizer, text.replace("(", r"\(").replace(")", r"\)"))
        assert content(t) == sd1_tokenizer(text, add_special_tokens=False)["input_ids"]


def test_literal_end_token_in_a_prompt_is_the_end_id(sd1_tokenizer):
    t = tok(sd1_tokenizer, "cat <|endoftext|> cat")
    assert t.ids[0][:5] == [START, CAT, END, CAT, END]
    assert t.words[0][:5] == ["<start>", "cat", "<end>", "cat", "<end>"]


def test_empty_prompt_gives_one_chunk(sd1_tokenizer, sd2_tokenizer):
    assert tok(sd1_tokenizer, "").ids == [[START, END] + [END] * 75]
    t = tok(sd2_tokenizer, "   ", pad_id=0)
    assert t.ids == [[START, END] + [0] * 75]
    assert t.words == [["<start>", "<end>"] + ["<pad>"] * 75]
    assert t.weights == [[1.0] * 77]


def test_weights_follow_segments_and_special_positions_weigh_one(sd1_tokenizer):
    t = tok(sd1_tokenizer, "a (red:1.3) ((cat))")
    assert t.ids[0][:5] == [START, 320, 736, CAT, END]
    assert t.weights[0][:5] == [1.0, 1.0, 1.3, 1.1 * 1.1, 1.0]
    assert set(t.weights[0][5:]) == {1.0}
    assert t.has_weights
    assert not tok(sd1_tokenizer, "a red cat").has_weights


def test_a_100_token_prompt_gives_two_chunks(sd1_tokenizer):
    t = tok(sd1_tokenizer, "cat " * 100)
    assert len(t.ids) == 2
    assert t.ids[0] == [START] + [CAT] * 75 + [END]  # one long segment: split, the chunk is full
    assert t.ids[1] == [START] + [CAT] * 25 + [END] + [END] * 50


def test_exactly_75_tokens_fit_in_one_chunk(sd1_tokenizer):
    t = tok(sd1_tokenizer, "cat " * 75)
    assert t.ids == [[START] + [CAT] * 75 + [END]]


def test_short_segment_straddling_the_boundary_moves_whole(sd1_tokenizer):
    t = tok(sd1_tokenizer, "cat " * 73 + "(red fox jumping:1.2)")
    assert len(t.ids) == 2
    assert t.ids[0] == [START] + [CAT] * 73 + [END, END, END]  # closed early and padded
    assert t.words[0][-3:] == ["<end>", "<pad>", "<pad>"]
    assert t.ids[1][:5] == [START, 736, 3240, 11476, END]
    assert t.weights[1][:5] == [1.0, 1.2, 1.2, 1.2, 1.0]


def test_seven_tokens_move_whole_but_eight_may_split(sd1_tokenizer):
    seven = "(a b c d e f g:1.2)"
    eight = "(a b c d e f g h:1.2)"
    moved = tok(sd1_tokenizer, "cat " * 70 + seven)
    assert moved.ids[0][71] == END and len(content(moved, 1)) == 7
    split = tok(sd1_tokenizer, "cat " * 70 + eight)
    assert split.ids[0][71:] == [320, 321, 322, 323, 324, END]  # a..e fill the chunk
    assert split.weights[0][71:76] == [1.2] * 5
    assert content(split, 1) == [325, 326, 327]  # f g h


def test_long_weighted_segment_splits_across_chunks(sd1_tokenizer):
    t = tok(sd1_tokenizer, "cat " * 73 + "(a b c d e f g h i j:1.2)")
    assert t.ids[0][74:] == [320, 321, END]
    assert content(t, 1) == [322, 323, 324, 325, 326, 327, 328, 329]
    assert t.weights[1][1:9] == [1.2] * 8


def test_segments_are_tokenized_separately(sd1_tokenizer):
    # "astronaut" whole is one token; cut by a weight boundary it is tokenized in two parts
    whole = tok(sd1_tokenizer, "astronaut")
    cut = tok(sd1_tokenizer, "astro(naut:1.2)")
    assert content(whole) == [18376]
    assert (
        content(cut)
        == sd1_tokenizer("astro", add_special_tokens=False)["input_ids"]
        + sd1_tokenizer("naut", add_special_tokens=False)["input_ids"]
    )


def test_every_chunk_is_exactly_77_long_for_many_lengths(sd1_tokenizer):
    for n in (0, 1, 74, 75, 76, 149, 150, 151, 226):
        t = tok(sd1_tokenizer, "(red cat:1.1) " * (n // 2) + "dog " * (n % 2))
        assert all(len(c) == 77 and c[0] == START and END in c for c in t.ids)
        assert sum(len(content(t, k)) for k in range(len(t.ids))) == n
