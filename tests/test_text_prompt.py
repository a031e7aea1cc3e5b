"""Prompt weight parsing follows ComfyUI's rules, including its handling of malformed brackets."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nodes.text.prompt import Segment, parse_prompt_weights


def parsed(text: str) -> list[tuple[str, float]]:
    return [(s.text, s.weight) for s in parse_prompt_weights(text)]


def test_plain_text_is_one_segment_of_weight_one():
    assert parse_prompt_weights("a photograph of an astronaut") == [
        Segment("a photograph of an astronaut", 1.0)
    ]


def test_empty_prompt_gives_no_segments():
    assert parse_prompt_weights("") == []


def test_group_multiplies_by_1_1_and_groups_nest():
    assert parsed("(foo)") == [("foo", 1.1)]
    assert parsed("(foo)(bar)") == [("foo", 1.1), ("bar", 1.1)]
    # 1.1 * 1.1 in floating point, exactly as ComfyUI computes it
    assert parsed("((foo))") == [("foo", 1.1 * 1.1)]
    assert parsed("a ((b) c) d") == [("a ", 1.0), ("b", 1.1 * 1.1), (" c", 1.1), (" d", 1.0)]


def test_explicit_weight_replaces_the_group_factor():
    assert parsed("(foo:2.0)") == [("foo", 2.0)]
    assert parsed("(foo:0.0)") == [("foo", 0.0)]
    assert parsed("((foo:1.1))") == [("foo", 1.1)]  # the inner number wins over the outer 1.1
    assert parsed("((foo):1.1)") == [("foo", 1.1 * 1.1)]  # the outer number, then the inner 1.1
    assert parsed("((foo:1.0):0.0)") == [("foo", 1.0)]
    assert parsed("(red fox: 1.5 )") == [("red fox", 1.5)]  # float() accepts surrounding spaces


def test_comfyui_documented_nesting_examples():
    assert parsed("foo ((((lol (cat:666) attack:100)))) baz") == [
        ("foo ", 1.0),
        ("lol ", 100.0),
        ("cat", 666.0),
        (" attack", 100.0),
        (" baz", 1.0),
    ]
    got = parsed("foo ((((lol (cat:666) attack):100))) baz")
    assert [t for t, _ in got] == ["foo ", "lol ", "cat", " attack", " baz"]
    assert [w for _, w in got] == pytest.approx([1.0, 110.0, 666.0, 110.0, 1.0])


def test_only_the_last_colon_counts_and_must_be_followed_by_a_number():
    assert parsed("(a:1.2:1.5)") == [("a:1.2", 1.5)]
    assert parsed("(a:b)") == [("a:b", 1.1)]
    assert parsed("(time 10:30)") == [("time 10", 30.0)]  # ComfyUI reads this as a weight too
    assert parsed("(:1.5)") == [(":1.5", 1.1)]  # a colon in first place is not a weight


def test_escaped_brackets_are_literal_text():
    assert parsed(r"\(foo\)") == [("(foo)", 1.0)]
    assert parsed(r"(a\):1.2)") == [("a)", 1.2)]
    assert parsed(r"(a:1.2\))") == [("a:1.2)", 1.1)]  # an escaped bracket is not part of a number
    assert parsed("\\\\(a)") == [("\\(a)", 1.0)]  # backslash-backslash-( : the second one escapes
    assert parsed(r"a\b") == [(r"a\b", 1.0)]  # other backslashes stay


def test_square_brackets_are_plain_text():
    assert parsed("[cat] [dog:0.5]") == [("[cat] [dog:0.5]", 1.0)]


def test_unclosed_bracket_stays_literal():
    assert parsed("(a b") == [("(a b", 1.0)]
    assert parsed("x (a b") == [("x ", 1.0), ("(a b", 1.0)]
    # an inner group that closes at the very end makes the whole tail look like a group
    assert parsed("(a (b)") == [("a ", 1.1), ("(b", 1.1)]
    assert parsed("((a)") == [("(a", 1.1)]


def test_stray_closing_bracket_shifts_later_pairing():
    assert parsed("a) (b)") == [("a) (b)", 1.0)]
    assert parsed("a)(b(c)") == [("a)(b", 1.0), ("c", 1.1)]
    assert parsed(")") == [(")", 1.0)]


def test_empty_group_contributes_nothing():
    assert parsed("a () b") == [("a ", 1.0), (" b", 1.0)]


def test_deep_nesting_does_not_hit_the_recursion_limit():
    depth = 1500  # deeper than Python's default recursion limit
    got = parse_prompt_weights("(" * depth + "x" + ")" * depth)
    assert len(got) == 1 and got[0].text == "x"
    assert got[0].weight == pytest.approx(1.1**depth, rel=1e-9)


_PROMPT_CHARS = st.sampled_from(list("ab :()\\[]1.5-e") + ["\n", "é", "!"])


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=_PROMPT_CHARS, max_size=40) | st.text(max_size=40))
def test_any_text_parses_without_raising(text):
    segments = parse_prompt_weights(text)
    for seg in segments:
        assert isinstance(seg.text, str) and seg.text
        assert isinstance(seg.weight, float)
        assert set(seg.text) <= set(text)


@settings(max_examples=100, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_characters="()"), max_size=40))
def test_text_without_brackets_is_returned_whole(text):
    assert parse_prompt_weights(text) == ([Segment(text, 1.0)] if text else [])
