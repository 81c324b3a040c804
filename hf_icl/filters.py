"""Filters and answer parsing for generation scoring, in the spirit of lm-eval's ``filter_list``.

A generation is cut at its stop string, then passed through the task's filters in order
(``strip``, ``lowercase``, ``first_line``, ``regex``) and compared with the answer: a label word
(classification), the answer text (exact match) or a number (regression, scored by normalised
squared error). An output with no number is counted as unparsed and reported, never dropped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from hf_icl.errors import did_you_mean

FUNCTIONS = ("strip", "lowercase", "first_line", "regex")
NUMBER = re.compile(r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)")


@dataclass(frozen=True)
class Filter:
    function: str
    regex_pattern: str = ""
    group_select: int = 0  # which match of the pattern (lm-eval's RegexFilter; -1: last)
    fallback: str = "[invalid]"  # what an output without a match becomes


def parse_filters(specs: list[Any], where: str = "scoring.filters") -> list[Filter]:
    """``[strip, {function: regex, regex_pattern: ...}, ...]`` → filters; errors name the entry."""
    if not isinstance(specs, list):
        raise ValueError(f"{where}: expected a list of filters, got {specs!r}")
    out = []
    for i, spec in enumerate(specs):
        spec = {"function": spec} if isinstance(spec, str) else spec
        if not isinstance(spec, dict) or "function" not in spec:
            raise ValueError(
                f"{where}.{i}: expected a filter name or {{function: ...}}, got {spec!r}"
            )
        name = spec["function"]
        if name not in FUNCTIONS:
            raise ValueError(
                f"{where}.{i}.function: unknown filter {name!r}"
                f"{did_you_mean(str(name), FUNCTIONS)}; allowed: {', '.join(FUNCTIONS)}"
            )
        unknown = set(spec) - {"function", "regex_pattern", "group_select", "fallback"}
        if unknown:
            raise ValueError(f"{where}.{i}: unknown key {sorted(unknown)[0]!r}")
        if name == "regex":
            try:
                re.compile(spec.get("regex_pattern", ""))
            except re.error as err:
                raise ValueError(
                    f"{where}.{i}.regex_pattern: {spec.get('regex_pattern')!r} does "
                    f"not compile: {err}"
                ) from None
            if not spec.get("regex_pattern"):
                raise ValueError(f"{where}.{i}.regex_pattern: the regex filter needs a pattern")
        out.append(Filter(**spec))
    return out


def _regex(text: str, f: Filter) -> str:
    matches = re.findall(f.regex_pattern, text)
    if not matches:
        return f.fallback
    match = (
        matches[f.group_select] if -len(matches) <= f.group_select < len(matches) else matches[0]
    )
    if isinstance(match, tuple):  # several groups: the first that matched
        match = next((m for m in match if m), f.fallback)
    return match


def apply_filters(text: str, filters: list[Filter]) -> str:
    for f in filters:
        if f.function == "strip":
            text = text.strip()
        elif f.function == "lowercase":
            text = text.lower()
        elif f.function == "first_line":
            text = text.split("\n", 1)[0]
        else:
            text = _regex(text, f)
    return text


def parse_number(text: str) -> float | None:
    """The first number in the text, or None."""
    match = NUMBER.search(text)
    return float(match.group()) if match else None


def match_label(text: str, words: list[str]) -> int:
    """Index of the label word the output is (whitespace aside), or -1 (counted wrong)."""
    stripped = [w.strip() for w in words]
    return stripped.index(text.strip()) if text.strip() in stripped else -1
