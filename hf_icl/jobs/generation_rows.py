"""Evaluate units scored by generation: every query's greedy answer after k demonstrations,
filtered and compared with its answer (label word, answer text or number)."""

from __future__ import annotations

from typing import Any

from hf_icl.episode import Episode
from hf_icl.filters import apply_filters, match_label, parse_number
from hf_icl.generation import generate_queries
from hf_icl.jobs.samples import query_row
from hf_icl.jobs.task_runs import TaskRun
from hf_icl.render import TextRenderer
from hf_icl.render.generation import parse_scale, render_generation, text_answers


def judged(renderer: TextRenderer, episode: Episode, filtered: str, target: str) -> dict[str, Any]:
    """The prediction a filtered output makes: a class index (-1: no label word), the answer
    text (exact match) or a number (0.0 when none parses: the zero predictor, and counted)."""
    if text_answers(episode.query_y):
        return {"pred": filtered, "gold": target}
    if not episode.is_regression:
        return {"pred": match_label(filtered, renderer.label_words(episode))}
    number = parse_number(filtered)
    return {"pred": 0.0 if number is None else number / parse_scale(renderer),
            "parsed": number is not None}


def generate_unit_rows(model, tokenizer, renderer: TextRenderer, shots: list[int], task: TaskRun,
                       episode: Episode, base: dict) -> list[dict]:
    prompts = render_generation(renderer, episode)
    scoring = task.scoring
    until = prompts.until if scoring.until is None else scoring.until
    generations = generate_queries(model, tokenizer, prompts, shots, until=until,
                                   max_new_tokens=scoring.max_new_tokens,
                                   batch_size=scoring.batch_size, where=f"task {task.name!r}")
    filters = scoring.parsed_filters()
    rows = []
    for k in shots:
        for q, gen in enumerate(generations[k]):
            filtered = apply_filters(gen.text, filters)
            rows.append({**query_row(base, episode, k, q), "output": gen.text, "filtered": filtered,
                         **judged(renderer, episode, filtered, prompts.targets[q])})
    return rows
