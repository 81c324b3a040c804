"""Prompts for generation scoring: demonstrations show their answers as text, queries end where
the model starts writing.

Answers are label words (classification), numbers written like the inputs, as integers
``round(y * 10**precision)`` (regression: the alternative to digit bins), or a task's answer
strings joined to the input by one space (lm-eval's default ``target_delimiter``). The prompts keep
the scorer's shape — one demo prefix cut at every shot count, then each query — so generation
reuses the demonstrations' KV cache exactly as label scoring does.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hf_icl.episode import Episode
from hf_icl.render.text import TextRenderer

ANSWER_DELIMITER = " "


@dataclass
class GenerationPrompts:
    prefix_ids: list[int]
    boundaries: list[int]  # boundaries[k]: prefix length covering the first k demos
    query_ids: list[list[int]]  # per query, after k > 0 demonstrations
    query_ids_alone: list[list[int]]  # per query, after none
    until: list[str]  # default stop strings: the demo delimiter (raw prompts)
    targets: list[str]  # each query's answer as text (no leading delimiter)


def text_answers(y) -> bool:
    return len(y) > 0 and isinstance(np.asarray(y, dtype=object)[0], str)


def answer_texts(renderer: TextRenderer, episode: Episode, y) -> list[str]:
    """Each example's answer as it follows its input in a demonstration."""
    if text_answers(y):
        return [a if a[:1].isspace() else ANSWER_DELIMITER + a for a in y]
    if episode.is_regression:
        scale = 10**renderer.options.precision
        return [
            f"{ANSWER_DELIMITER}{int(v)}" for v in np.rint(np.asarray(y, dtype=np.float64) * scale)
        ]
    words = renderer.label_words(episode)
    return [words[int(c)] for c in y]


def longest_generation(prompts, shots: int, max_new_tokens: int) -> int:
    """Tokens of the longest prompt after ``shots`` demonstrations plus its generation."""
    return prompts.boundaries[shots] + max(len(q) for q in prompts.query_ids) + max_new_tokens


def parse_scale(renderer: TextRenderer) -> float:
    """What a number parsed from a regression answer is divided by to get back to y's units."""
    return float(10**renderer.options.precision)


def render_generation(renderer: TextRenderer, episode: Episode) -> GenerationPrompts:
    """Prompt ids for generating every query's answer after 0..num_demos demonstrations."""
    inputs = [renderer.format_x(x) for x in episode.demo_x]
    demos = list(zip(inputs, answer_texts(renderer, episode, episode.demo_y)))
    queries = [renderer.format_x(x) for x in episode.query_x]
    targets = [a.strip() for a in answer_texts(renderer, episode, episode.query_y)]
    if renderer.options.chat_template:
        from hf_icl.render.chat import chat_prompts

        chat = chat_prompts(renderer, demos, queries)
        return GenerationPrompts(
            chat.prefix_ids, chat.boundaries, chat.query_ids, chat.query_ids_alone, [], targets
        )
    prefix, boundaries = renderer.demo_prefix([x + a for x, a in demos], queries[0])
    rendered = [renderer._query(q, []) for q in queries]
    return GenerationPrompts(
        prefix,
        boundaries,
        [r[0] for r in rendered],
        [r[1] for r in rendered],
        [renderer.options.delimiter],
        targets,
    )
