"""The tasks of an evaluate or compare run: config entries loaded into samplers and renderer
options, and the episodes every learner of a unit shares."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, replace
from typing import Any

from hf_icl.config import from_dict, to_dict
from hf_icl.demos import (
    DemoOptions,
    DemoPlan,
    SelectionContext,
    check_options,
    demo_pool,
    plan_demos,
)
from hf_icl.demos.base import TextEncoder
from hf_icl.demos.model_states import model_states, placeholder_states
from hf_icl.episode import Episode
from hf_icl.errors import HfIclError
from hf_icl.generation_config import ScoringOptions
from hf_icl.jobs.evaluate_config import EvaluateConfig, split_task_models
from hf_icl.lm_eval_entries import is_lm_eval_entry, prepare_lm_eval_entry
from hf_icl.render import RenderOptions
from hf_icl.samplers import TaskSampler, rng_for
from hf_icl.tasks import Entry, TaskDef, load_task, located, parse_section


@dataclass
class TaskRun:
    """A task ready to evaluate: definition, sampler and renderer options."""

    definition: TaskDef
    sampler: TaskSampler
    render: RenderOptions
    models: frozenset[int] | None = None  # indices into config.models; None = all
    scoring: ScoringOptions = field(default_factory=ScoringOptions)
    lm_eval: Any = None  # lm_eval_entries.LmEvalSource for an lm-eval task entry
    demos: DemoOptions = field(default_factory=DemoOptions)
    where: str = "tasks"  # the config entry, for errors found while running

    @property
    def name(self) -> str:
        return self.definition.name


def prepare_tasks(config: EvaluateConfig, source: str = "config") -> list[TaskRun]:
    """Every task entry loaded and checked; errors name ``source`` and the entry (tasks.i)."""
    runs = []
    for i, ref in enumerate(config.tasks):
        where = Entry(source, f"tasks.{i}")
        ref, models = split_task_models(ref, [m.label for m in config.models], where.key)
        ref, scoring = task_scoring(config, ref, where)
        ref, demos = task_demos(config, ref, where)
        if is_lm_eval_entry(ref):
            if demos.uses_model_states:
                raise HfIclError(
                    f"{where}.demos.encoder: 'model' is not available for lm-eval task "
                    "entries; use a sentence-transformers encoder"
                )
            if config.protocol != "queries":  # output_type decides loglikelihood / generation
                raise HfIclError(f"{where}: lm-eval tasks need protocol: queries")
            runs += [
                TaskRun(definition, None, RenderOptions(), models, scoring, source)
                for definition, source in prepare_lm_eval_entry(config, ref, demos, where)
            ]
            continue
        definition, sampler = load_task(ref, where)
        render = parse_section(definition, RenderOptions, "render", definition.render, where)
        if scoring.method == "generate" and config.protocol != "queries":
            raise HfIclError(f"{where}: scoring.method generate needs protocol: queries")
        check_demos(config, demos, scoring, where)
        run = TaskRun(definition, sampler, render, models, scoring, demos=demos, where=str(where))
        runs += per_model_runs(config, run)
    names = [t.name for t in runs]
    if len(set(names)) != len(names):
        raise HfIclError(
            f"{source}: tasks: duplicate task name in {names}; give one an alias with 'as:'"
        )
    return runs


def task_scoring(config: EvaluateConfig, ref, where: Entry) -> tuple[object, ScoringOptions]:
    """The config's ``scoring:`` with the entry's own ``scoring:`` keys over it."""
    if not isinstance(ref, dict) or "scoring" not in ref:
        return ref, config.scoring
    ref = dict(ref)
    own = ref.pop("scoring")
    if not isinstance(own, dict):
        raise HfIclError(f"{where}.scoring: expected a mapping, got {own!r}")
    merged = {**to_dict(config.scoring), **own}
    return ref, from_dict(
        ScoringOptions, merged, source=where.source, prefix=f"{where.key}.scoring"
    )


def task_demos(config: EvaluateConfig, ref, where: Entry) -> tuple[object, DemoOptions]:
    """The config's ``demos:`` with the entry's own ``demos:`` keys over it."""
    if not isinstance(ref, dict) or "demos" not in ref:
        return ref, config.demos
    ref = dict(ref)
    own = ref.pop("demos")
    if not isinstance(own, dict):
        raise HfIclError(f"{where}.demos: expected a mapping, got {own!r}")
    if own.get("permutations", config.demos.permutations) != config.demos.permutations:
        raise HfIclError(
            f"{where}.demos.permutations: the number of orders is one axis of the "
            "whole run; set it in the top-level demos: section"
        )
    merged = {**to_dict(config.demos), **own}
    return ref, from_dict(DemoOptions, merged, source=where.source, prefix=f"{where.key}.demos")


def check_demos(
    config: EvaluateConfig, demos: DemoOptions, scoring: ScoringOptions, where: Entry
) -> None:
    """Names known, and a selection only where a protocol and scoring method can use it."""
    check_options(demos, f"{where}.demos")
    if demos.default:
        return
    if config.protocol == "sequential":
        raise HfIclError(
            f"{where}.demos: the sequential protocol predicts each example from the "
            "ones before it; demos.selection and demos.order need protocol: queries"
        )


def task_models(config: EvaluateConfig, task: TaskRun) -> list[int]:
    """Indices of the models that run a task."""
    return [m for m in range(len(config.models)) if task.models is None or m in task.models]


def per_model_runs(config: EvaluateConfig, run: TaskRun) -> list[TaskRun]:
    """`encoder: model`: each model selects with its own states, so a task that several models
    run becomes one task per model, named ``task@model``; its baselines then see that model's
    demonstrations, and the name says whose."""
    if not run.demos.uses_model_states:
        return [run]
    models = task_models(config, run)
    if not models:
        raise HfIclError(
            f"{run.where}.demos.encoder: 'model' selects with the evaluated model's states, "
            f"but no model runs task {run.name!r}; use a sentence-transformers encoder"
        )
    if len(models) == 1:
        return [run]
    runs = []
    for m in models:
        definition = copy.copy(run.definition)
        definition.name = f"{run.name}@{config.models[m].label}"
        runs.append(replace(run, definition=definition, models=frozenset({m})))
    return runs


def selection_encoder(config: EvaluateConfig, task: TaskRun, preview: bool) -> TextEncoder | None:
    """The evaluated model's states for `encoder: model` (its one model, per per_model_runs);
    a placeholder in ``preview``, when no weights may load yet."""
    if not task.demos.uses_model_states:
        return None
    if preview:
        return placeholder_states
    (model,) = task_models(config, task)
    return model_states(config.models[model])


def draw_episode(config: EvaluateConfig, task: TaskRun, seed: int, order: int) -> Episode:
    """The same episode for every learner: it depends only on task, seed and order."""
    max_shots = max(config.shots)
    if config.protocol == "sequential":
        episode = task.sampler.episode(seed, max_shots + 1, 0, split="test")
    else:
        episode = task.sampler.episode(seed, max_shots, config.num_queries, split="test")
    if order == 0:
        return episode
    perm = rng_for(config.seed, "order", task.name, seed, order).permutation(episode.num_demos)
    return episode.with_demos([int(i) for i in perm])


def unit_demos(
    config: EvaluateConfig, task: TaskRun, seed: int, order: int, preview: bool = False
) -> tuple[Episode, DemoPlan | None]:
    """A unit's episode and, when its queries see different demonstrations (per-query
    selections, orders that break prefixes), its demo plan. A plan shared by every query whose
    prompts extend one another is folded into the episode, so every scorer handles it.
    ``preview``: for checks before any model loads (`encoder: model` gets placeholder states,
    so the plan's shape and errors are real but not its rows)."""
    if task.lm_eval is not None:  # the demonstrations lm-eval's prompts show each document
        return task.lm_eval.unit_demos(seed)
    if task.demos.default or config.protocol == "sequential":
        return draw_episode(config, task, seed, order), None
    episode = draw_episode(config, task, seed, 0)
    shots = max(config.shots)
    ctx = SelectionContext(
        task.name,
        demo_pool(task.sampler, episode),
        episode,
        shots,
        seed,
        task.demos,
        where=f"{task.where}.demos",
        encode=selection_encoder(config, task, preview),
    )
    plan = plan_demos(ctx, config.shots, permutation=order, base_seed=config.seed)
    if plan.shared and plan.prefix_consistent():
        rows = plan.rows(0, max(config.shots))
        return plan.episode_for(rows, list(range(episode.num_queries))), None
    return episode, plan


def first_episodes(
    config: EvaluateConfig, tasks: list[TaskRun], source: str
) -> list[Episode | None]:
    """Each task's first episode (seed 0, order 0), after checking shots against its pool."""
    needed = max(config.shots) + (1 if config.protocol == "sequential" else 0)
    episodes = []
    for i, task in enumerate(tasks):
        where = Entry(source, f"tasks.{i}")
        if task.lm_eval is not None:  # lm-eval writes its prompts; None: choices vary
            episodes.append(task.lm_eval.baseline_episode())
            continue
        pool = task.sampler.max_demos()
        if pool is not None and needed > pool:
            raise HfIclError(
                f"{where}: shots: {max(config.shots)} demonstrations requested but "
                f"task {task.name!r} has {pool} examples to draw them from; "
                "lower shots"
            )
        with located(where):
            episode, plan = unit_demos(config, task, 0, 0, preview=True)
        if plan is not None and task.scoring.method == "generate":
            raise HfIclError(
                f"{where}.demos: generation scores one demo list per unit; "
                f"selection {task.demos.selection!r} with order "
                f"{task.demos.order!r} gives queries their own lists"
            )
        episodes.append(episode if plan is None else longest_prompts(plan, max(config.shots)))
    return episodes


def longest_prompts(plan: DemoPlan, shots: int) -> Episode:
    """The episode whose demonstrations are the longest any query sees (by characters), for the
    context-window check before the run; the scorer checks every prompt again (and is the only
    check of `encoder: model` prompts, whose rows are known once the model has loaded)."""

    def size(q: int) -> int:
        return sum(len(str(plan.pool.x[r])) for r in plan.rows(q, shots))

    longest = max(range(plan.episode.num_queries), key=size)
    return plan.episode_for(plan.rows(longest, shots), list(range(plan.episode.num_queries)))
