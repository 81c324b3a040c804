"""Generation filters and answer parsing on hand-made outputs."""

import pytest

from hf_icl.filters import apply_filters, match_label, parse_filters, parse_number
from hf_icl.generation_config import ScoringOptions


def test_filters_apply_in_order():
    filters = parse_filters(["strip", "first_line", "lowercase"])
    assert apply_filters("  Positive\nReview: next one", filters) == "positive"


def test_regex_filter_selects_a_match_or_falls_back():
    f = parse_filters(
        [{"function": "regex", "regex_pattern": r"answer is (\-?\d+)", "group_select": -1}]
    )
    assert apply_filters("the answer is 3, no, the answer is 12", f) == "12"
    assert apply_filters("no idea", f) == "[invalid]"
    first = parse_filters([{"function": "regex", "regex_pattern": r"(\d+)|(x)", "fallback": "?"}])
    assert apply_filters("x then 7", first) == "x" and apply_filters("none", first) == "?"


def test_numbers_parse_or_say_none():
    assert parse_number(" 14\n\nInput") == 14.0
    assert parse_number("about -3.5 or so") == -3.5
    assert parse_number(".5") == 0.5
    assert parse_number("no number here") is None


def test_label_matching_ignores_whitespace_only():
    words = [" negative", " positive"]
    assert match_label(" positive", words) == 1
    assert match_label("Positive", words) == -1
    assert match_label("positive!", words) == -1


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"max_new_tokens": 0}, "max_new_tokens: must be ≥ 1, got 0"),
        ({"filters": [{"function": "regex", "regex_pattern": "("}]}, "does not compile"),
        ({"filters": ["strp"]}, "unknown filter 'strp' (did you mean 'strip'?)"),
        ({"until": [""]}, "until: expected non-empty strings"),
    ],
)
def test_bad_scoring_settings_name_the_key(settings, message):
    with pytest.raises(
        ValueError, match=message.replace("(", r"\(").replace(")", r"\)").replace("?", r"\?")
    ):
        ScoringOptions(**settings)
