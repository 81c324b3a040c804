"""Evaluate units scored by generation: every query's greedy answer after k demonstrations,
filtered and compared with its answer (label word, answer text or number)."""

from __future__ import annotations

from typing import Any

from hf_icl.episode import Episode
from hf_icl.errors import HfIclError
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
    return {
        "pred": 0.0 if number is None else number / parse_scale(renderer),
        "parsed": number is not None,
    }


def generate_unit_rows(
    model,
    tokenizer,
    renderer: TextRenderer,
    shots: list[int],
    task: TaskRun,
    episode: Episode,
    base: dict,
) -> list[dict]:
    prompts = render_generation(renderer, episode)
    scoring = task.scoring
    until = prompts.until if scoring.until is None else scoring.until
    generations = generate_queries(
        model,
        tokenizer,
        prompts,
        shots,
        until=until,
        max_new_tokens=scoring.max_new_tokens,
        batch_size=scoring.batch_size,
        where=f"task {task.name!r}",
    )
    filters = scoring.parsed_filters()
    rows = []
    for k in shots:
        for q, gen in enumerate(generations[k]):
            filtered = apply_filters(gen.text, filters)
            rows.append(
                {
                    **query_row(base, episode, k, q),
                    "output": gen.text,
                    "filtered": filtered,
                    **judged(renderer, episode, filtered, prompts.targets[q]),
                }
            )
    return rows


def check_lm_eval_generation(tokenizer, limit: int | None, source, shots: list[int], where) -> None:
    """An lm-eval generate_until task's prompts cut into a shared prefix (seed 0), and the
    longest prompt plus the task's max_gen_toks within the context window."""
    from hf_icl.lm_eval_generation import generation_settings, lm_eval_generation_prompts
    from hf_icl.render.generation import longest_generation

    prompts = lm_eval_generation_prompts(
        TextRenderer(tokenizer), source.task, source.docs, max(shots), source.selection_for(0)
    )
    _, new = generation_settings(source.task)
    if limit is not None and longest_generation(prompts, max(shots), new) > limit:
        raise HfIclError(
            f"{where}: a prompt with {max(shots)} demonstrations plus max_gen_toks "
            f"{new} is {longest_generation(prompts, max(shots), new)} tokens, over "
            f"the model's context window of {limit}; lower shots"
        )


def lm_eval_generation_rows(
    model, tokenizer, source, shots: list[int], seed: int, base: dict, scoring
) -> list[dict]:
    """Each document's greedy answer at each shot count (the task's until and max_gen_toks),
    filtered by the scoring section's filters and compared with the document's target."""
    from hf_icl.lm_eval_generation import generation_settings, lm_eval_generation_prompts

    prompts = lm_eval_generation_prompts(
        TextRenderer(tokenizer), source.task, source.docs, max(shots), source.selection_for(seed)
    )
    until, new = generation_settings(source.task)
    generations = generate_queries(
        model,
        tokenizer,
        prompts,
        shots,
        until=until,
        max_new_tokens=new,
        batch_size=scoring.batch_size,
        where=f"lm-eval task {source.task.name!r}",
    )
    filters = scoring.parsed_filters()
    rows = []
    for k in shots:
        for q, (doc, gen) in enumerate(zip(source.docs, generations[k])):
            filtered = apply_filters(gen.text, filters)
            rows.append(
                {
                    **base,
                    "shots": k,
                    "query": q,
                    "query_id": doc.doc_id,
                    "output": gen.text,
                    "filtered": filtered,
                    "pred": filtered,
                    "gold": doc.target,
                }
            )
    return rows
