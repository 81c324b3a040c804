"""Prompts checked with each model's real tokenizer before any weights load: label words render,
and the longest prompt fits the model's context window (or the error says how many shots fit)."""

from __future__ import annotations

from hf_icl.episode import Episode
from hf_icl.errors import HfIclError
from hf_icl.jobs.evaluate_config import EvaluateConfig
from hf_icl.jobs.task_runs import TaskRun
from hf_icl.models import ModelSpec
from hf_icl.models.spec import trained_small_model
from hf_icl.render import RenderedEpisode, TextRenderer
from hf_icl.tasks import Entry, located


def prompt_length(rendered: RenderedEpisode, shots: int) -> int:
    """Tokens of the longest prompt after ``shots`` demonstrations, label included."""
    return (
        rendered.boundaries[shots]
        + max(len(q) for q in rendered.query_ids)
        + max(len(c) for c in rendered.candidates)
    )


def check_prompt_length(rendered: RenderedEpisode, shots: int, limit: int, where: Entry) -> None:
    """An over-long template and too many shots are different mistakes: say which."""
    if prompt_length(rendered, 0) > limit:
        raise HfIclError(
            f"{where}: template too long: a prompt without demonstrations is "
            f"{prompt_length(rendered, 0)} tokens, over the model's context window "
            f"of {limit}; shorten the template or the inputs"
        )
    if prompt_length(rendered, shots) > limit:
        fit = max(k for k in range(shots + 1) if prompt_length(rendered, k) <= limit)
        raise HfIclError(
            f"{where}: shots: a prompt with {shots} demonstrations is "
            f"{prompt_length(rendered, shots)} tokens, over the model's context "
            f"window of {limit}; at most {fit} fit"
        )


def tokenizer_and_window(spec: ModelSpec):
    """The spec's tokenizer and context window, without loading its weights."""
    from hf_icl import models

    tiny = spec.spec.startswith("tiny-random-")
    source = models.resolve_source("smollm2-135m" if tiny else spec.spec)
    tokenizer = models.load_tokenizer(spec)
    if tiny:
        config = models.tiny_config(spec.spec.removeprefix("tiny-random-"), len(tokenizer))
    else:
        from transformers import AutoConfig

        try:
            config = AutoConfig.from_pretrained(
                source, revision=spec.revision, trust_remote_code=spec.trust_remote_code
            )
        except (OSError, ValueError):
            return tokenizer, None  # loading the model reports it
    return tokenizer, getattr(config.get_text_config(), "max_position_embeddings", None)


def check_prompts(
    config: EvaluateConfig, tasks: list[TaskRun], episodes: list[Episode], source: str
) -> None:
    """Label words and prompt lengths with each model's real tokenizer (weights not loaded)."""
    seen: set[tuple] = set()
    for m, spec in enumerate(config.models):
        if trained_small_model(spec) is not None:  # no tokenizer: jobs/embedding_checks.py
            continue
        key = (
            spec.spec,
            spec.revision,
            spec.trust_remote_code,
            spec.spec.startswith("tiny-random-"),
        )
        if key in seen:
            continue
        seen.add(key)
        with located(f"{source}: models.{m}"):
            tokenizer, limit = tokenizer_and_window(spec)
        for i, (task, episode) in enumerate(zip(tasks, episodes)):
            if task.models is not None and m not in task.models:
                continue
            where = Entry(source, f"tasks.{i}")
            if task.lm_eval is not None:
                from hf_icl.jobs.lm_eval_runs import check_lm_eval_prompts

                check_lm_eval_prompts(tokenizer, limit, task.lm_eval, config.shots, where)
                continue
            renderer = TextRenderer(tokenizer, task.render)
            with located(where):
                if config.protocol == "sequential":
                    sequence = renderer.render_sequence(episode)
                    if limit is not None and len(sequence.ids) > limit:
                        raise HfIclError(
                            f"shots: a sequence of {len(episode.demo_y)} examples "
                            f"is {len(sequence.ids)} tokens, over the model's "
                            f"context window of {limit}; lower shots"
                        )
                    continue
                if task.scoring.method == "generate":
                    check_generation_prompts(renderer, task, episode, max(config.shots), limit)
                    continue
                rendered = renderer.render_episode(episode)
            if limit is not None:
                check_prompt_length(rendered, max(config.shots), limit, where)


def check_generation_prompts(
    renderer: TextRenderer, task: TaskRun, episode: Episode, shots: int, limit: int | None
) -> None:
    """Generation prompts render, and the longest one plus max_new_tokens fits the window."""
    from hf_icl.render.generation import longest_generation, render_generation

    prompts = render_generation(renderer, episode)
    if limit is None:
        return
    new = task.scoring.max_new_tokens
    longest = longest_generation(prompts, shots, new)
    if longest > limit:
        raise HfIclError(
            f"scoring.max_new_tokens: a prompt with {shots} demonstrations plus "
            f"{new} generated tokens is {longest} tokens, over the model's context "
            f"window of {limit}; lower shots or max_new_tokens"
        )
