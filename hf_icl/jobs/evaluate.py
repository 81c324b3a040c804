"""`hf-icl evaluate`: whole k-shot learning curves in one run, resumable and shardable.

A unit is learner × task × seed × demo order with all shot counts (see jobs/units.py); models
score each unit's episode with the scorer, baselines predict the same episode's queries.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

import numpy as np

from hf_icl.demo_scoring import score_plan
from hf_icl.demos import DemoPlan
from hf_icl.episode import Episode
from hf_icl.jobs.baselines import BaselineRun, baseline_learner, plan_baselines
from hf_icl.jobs.checks import check_evaluation
from hf_icl.jobs.embedding_checks import check_model_tasks
from hf_icl.jobs.embedding_rows import embedding_unit_rows
from hf_icl.jobs.evaluate_config import EvaluateConfig
from hf_icl.jobs.evaluate_report import reports
from hf_icl.jobs.prompt_checks import check_prompts
from hf_icl.jobs.samples import position_row, query_row, rounded, unit_row
from hf_icl.jobs.task_runs import TaskRun, first_episodes, unit_demos
from hf_icl.jobs.units import Learner, Unit, UnitPlan, model_learner, run_units
from hf_icl.models import ICLModel, ModelSpec
from hf_icl.render import TextRenderer
from hf_icl.results import RunFolder, write_reports
from hf_icl.runtime import JobOptions, Shard
from hf_icl.scoring import score_queries, score_sequences
from hf_icl.tasks import located

Config = EvaluateConfig


@dataclass
class EvaluatePlan:
    """What validation built, reused by the run so nothing is loaded twice."""

    tasks: list[TaskRun]
    baselines: list[BaselineRun]


def prepare(
    config: EvaluateConfig, source: str = "config", options: JobOptions | None = None
) -> EvaluatePlan:
    """Every check an evaluation needs before its folder exists: models, tasks, shots against
    each pool, which tasks each model reads, baselines, label words and prompt lengths with
    each model's tokenizer."""
    tasks = check_evaluation(config, source)
    episodes = first_episodes(config, tasks, source)
    check_model_tasks(config, tasks, episodes, source)
    with located(source):
        baselines = plan_baselines(config, episodes)
    check_prompts(config, tasks, episodes, source)
    return EvaluatePlan(tasks, baselines)


def _prediction(renderer: TextRenderer, episode: Episode, scores: np.ndarray) -> dict[str, Any]:
    """Turn one row of candidate scores into a prediction (expected value for regression)."""
    if not episode.is_regression:
        return {"pred": int(np.argmax(scores))}
    probs = np.exp(scores - np.logaddexp.reduce(scores))
    centres = renderer.bin_centres()
    return {"pred": float(probs @ centres), "pred_argmax": float(centres[int(np.argmax(scores))])}


def score_unit_queries(
    model,
    renderer: TextRenderer,
    config: EvaluateConfig,
    task: TaskRun,
    episode: Episode,
    base: dict,
) -> list[dict]:
    rendered = renderer.render_episode(episode)
    scores = score_queries(
        model,
        rendered,
        config.shots,
        pack_tokens=config.pack_tokens,
        length_normalise=task.render.length_normalise,
        calibrate=task.render.calibrate,
        where=f"task {task.name!r}",
    )
    return [
        {
            **query_row(base, episode, k, q),
            **_prediction(renderer, episode, scores[k][q]),
            "scores": rounded(scores[k][q]),
        }
        for k in config.shots
        for q in range(episode.num_queries)
    ]


def score_unit_plan(
    model, renderer: TextRenderer, config: EvaluateConfig, task: TaskRun, plan: DemoPlan, base: dict
) -> list[dict]:
    """Queries with their own demonstrations (retrieval, per-query draws, broken prefixes)."""
    scores = score_plan(
        model,
        renderer,
        plan,
        config.shots,
        pack_tokens=config.pack_tokens,
        length_normalise=task.render.length_normalise,
        calibrate=task.render.calibrate,
        where=f"task {task.name!r}",
    )
    episode = plan.episode
    return [
        {
            **query_row(base, episode, k, q),
            "demo_ids": plan.demo_ids(q, k),
            **_prediction(renderer, episode, scores[k][q]),
            "scores": rounded(scores[k][q]),
        }
        for k in config.shots
        for q in range(episode.num_queries)
    ]


def score_unit_sequential(
    model,
    renderer: TextRenderer,
    config: EvaluateConfig,
    task: TaskRun,
    episode: Episode,
    base: dict,
) -> list[dict]:
    sequence = renderer.render_sequence(episode)
    scores = score_sequences(model, [sequence], batch_size=1)[0]
    return [
        {
            **position_row(base, episode, k),
            **_prediction(renderer, episode, scores[k]),
            "scores": rounded(scores[k]),
        }
        for k in config.shots
    ]


def model_unit(
    config: EvaluateConfig, tasks: list[TaskRun], label: str, model, tokenizer, unit: Unit
) -> list[dict]:
    """One model unit: the episode's queries (or positions) scored at every shot count."""
    task = tasks[unit.task]
    if task.lm_eval is not None:
        from hf_icl.jobs.lm_eval_runs import lm_eval_unit_rows

        return lm_eval_unit_rows(
            model,
            tokenizer,
            task.lm_eval,
            config.shots,
            unit.seed,
            unit_row(unit, label, task.name, None),
            config.pack_tokens,
            task.scoring,
        )
    episode, plan = unit_demos(config, task, unit.seed, unit.order)
    base = unit_row(unit, label, task.name, episode)
    if isinstance(model, ICLModel):  # a train run's small model: the embedding renderer
        return embedding_unit_rows(model, config, episode, plan, base)
    renderer = TextRenderer(tokenizer, task.render)
    if plan is not None:
        return score_unit_plan(model, renderer, config, task, plan, base)
    if task.scoring.method == "generate":
        from hf_icl.jobs.generation_rows import generate_unit_rows

        return generate_unit_rows(model, tokenizer, renderer, config.shots, task, episode, base)
    score = score_unit_sequential if config.protocol == "sequential" else score_unit_queries
    return score(model, renderer, config, task, episode, base)


def loop_runs(spec: ModelSpec) -> list[tuple[ModelSpec, int | None]]:
    """The model as trained, then at each of its ``eval_loops`` counts under its own label."""
    return [(spec, None)] + [
        (replace(spec, name=f"{spec.label}, {loops} loops"), loops) for loops in spec.eval_loops
    ]


def unit_plan(config: EvaluateConfig, plan: EvaluatePlan) -> UnitPlan:
    """The models (on the tasks each may run), then every baseline × task it applies to."""
    tasks = plan.tasks

    def setup(
        spec: ModelSpec, model, tokenizer, loops: int | None = None
    ) -> Callable[[Unit], list[dict]]:
        if loops is not None:  # a looped model run with another number of loops
            model.lm.config.loops = loops
        return lambda unit: model_unit(config, tasks, spec.label, model, tokenizer, unit)

    learners: list[Learner] = []
    for m, spec in enumerate(config.models):
        on = [t for t, task in enumerate(tasks) if task.models is None or m in task.models]
        learners += [
            model_learner(s, on, partial(setup, loops=loops)) for s, loops in loop_runs(spec)
        ]
    learners += [baseline_learner(config, tasks, run) for run in plan.baselines]
    per_shot = 1 if config.protocol == "sequential" else config.num_queries
    shapes = {
        t: (task.lm_eval.num_seeds(config.num_seeds), 1, len(task.lm_eval.docs) * len(config.shots))
        for t, task in enumerate(tasks)
        if task.lm_eval is not None
    }
    return UnitPlan(
        learners,
        [t.name for t in tasks],
        config.num_seeds,
        config.demo_orders,
        per_shot * len(config.shots),
        shapes,
    )


def evaluate(
    config: EvaluateConfig,
    folder: RunFolder,
    progress: bool = True,
    shard: Shard | None = None,
    plan: EvaluatePlan | None = None,
) -> dict | None:
    """Run (or resume) an evaluation into ``folder``; the main process returns the results."""
    plan = plan or prepare(config)
    rows = run_units(unit_plan(config, plan), folder, shard, progress)
    return None if rows is None else write_reports(folder, reports(config, plan.tasks, rows))


def run(
    config: EvaluateConfig, folder: RunFolder, options: JobOptions, plan: EvaluatePlan | None = None
) -> dict | None:
    return evaluate(config, folder, options.progress, options.shard, plan)


def summary(results: dict) -> str:
    """Console summary: one learning curve per model × task."""
    lines = []
    rows = [
        s
        for s in results["summary"]
        if s["metric"] in ("accuracy", "nse", "exact_match", "unparsed")
    ]
    for key in dict.fromkeys((s["model"], s["task"], s["metric"]) for s in rows):
        items = sorted(
            (s for s in rows if (s["model"], s["task"], s["metric"]) == key),
            key=lambda s: s["shots"],
        )
        curve = "  ".join(f"{s['shots']}:{s['mean']:.3f}" for s in items)
        lines.append(f"{key[0]:<22} {key[1]:<22} {key[2]:<9} {curve}")
    return "\n".join(lines)
