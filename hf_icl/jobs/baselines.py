"""Baselines inside an evaluation: the same episodes, demonstrations and queries the models saw,
appended to the same samples so they share tables and plots."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np

from hf_icl.baselines import Baseline, Predictions, make_baseline
from hf_icl.baselines.base import is_numeric
from hf_icl.baselines.planning import applies, position_episode, split_spec
from hf_icl.demos import DemoPlan
from hf_icl.episode import Episode
from hf_icl.errors import HfIclError
from hf_icl.jobs.evaluate_config import EvaluateConfig
from hf_icl.jobs.samples import log_probs, position_row, query_row, unit_row
from hf_icl.jobs.task_runs import TaskRun, unit_demos
from hf_icl.jobs.units import Learner, Unit
from hf_icl.tasks import located

TUNE_EPISODES = 32


@dataclass
class BaselineRun:
    baseline: Baseline
    task: int  # index into the prepared tasks

    @property
    def label(self) -> str:
        return f"baseline:{self.baseline.label}"


def plan_baselines(config: EvaluateConfig, example_episodes: list[Episode]) -> list[BaselineRun]:
    """Every (baseline, task) pair that applies; a baseline that applies to no task is an error."""
    runs = []
    for i, spec in enumerate(config.baselines):
        name, params = split_spec(spec, i)
        with located(f"baselines.{i}"):
            make_baseline(name, **params)  # an unknown name or bad params fail here, located
        matched = False
        for t, episode in enumerate(example_episodes):
            if episode is None:  # an lm-eval task: choices vary per document (report notes it)
                continue
            baseline = make_baseline(name, **params)
            if applies(baseline, episode):
                runs.append(BaselineRun(baseline, t))
                matched = True
        if not matched:
            kinds = sorted(
                {
                    "text"
                    if not is_numeric(e.demo_x)
                    else ("regression" if e.is_regression else "classification")
                    for e in example_episodes
                    if e is not None
                }
                | ({"lm-eval"} if None in example_episodes else set())
            )
            raise HfIclError(
                f"baselines.{i}: baseline {name!r} ({make_baseline(name, **params).task_kind}) "
                f"applies to none of the tasks ({', '.join(kinds)})"
            )
    labels = [(r.label, r.task) for r in runs]
    if len(set(labels)) != len(labels):
        raise HfIclError(
            "baselines: the same baseline is listed twice for one task; give different params"
        )
    return runs


def _scores(p: Predictions, q: int) -> list[float] | None:
    return log_probs(None if p.probs is None else p.probs[q])


def _pred(p: Predictions, q: int) -> Any:
    value = p.pred[q]
    return float(value) if np.issubdtype(np.asarray(value).dtype, np.floating) else int(value)


def baseline_rows(
    config: EvaluateConfig, run: BaselineRun, episodes: list[Episode], bases: list[dict]
) -> list[list[dict]]:
    """Rows per unit (one unit per episode), in the same layout as model rows."""
    rows: list[list[dict]] = [[] for _ in episodes]
    for k in config.shots:
        if config.protocol == "sequential":
            preds = run.baseline.predict([position_episode(ep, k) for ep in episodes], k)
            for u, (ep, p) in enumerate(zip(episodes, preds)):
                rows[u].append(
                    {**position_row(bases[u], ep, k), "pred": _pred(p, 0), "scores": _scores(p, 0)}
                )
            continue
        preds = run.baseline.predict(episodes, k)
        for u, (ep, p) in enumerate(zip(episodes, preds)):
            rows[u] += [
                {**query_row(bases[u], ep, k, q), "pred": _pred(p, q), "scores": _scores(p, q)}
                for q in range(ep.num_queries)
            ]
    return rows


def plan_baseline_rows(
    config: EvaluateConfig, run: BaselineRun, plan: DemoPlan, base: dict
) -> list[dict]:
    """A unit whose queries have their own demonstrations: each (query, k) is a one-query
    episode holding exactly that prompt's demonstrations, so the learner sees what the model saw."""
    rows = []
    for k in config.shots:
        queries = range(plan.episode.num_queries)
        preds = run.baseline.predict([plan.episode_for(plan.rows(q, k), [q]) for q in queries], k)
        rows += [
            {
                **query_row(base, plan.episode, k, q),
                "demo_ids": plan.demo_ids(q, k),
                "pred": _pred(p, 0),
                "scores": _scores(p, 0),
            }
            for q, p in zip(queries, preds)
        ]
    return rows


def tune_baseline(config: EvaluateConfig, run: BaselineRun, sampler) -> None:
    """Hyperparameters come from meta-train episodes, never from the test queries."""
    if type(run.baseline).tune is Baseline.tune:
        return
    max_shots = max(config.shots)
    episodes = sampler.episodes(
        0,
        TUNE_EPISODES,
        max_shots + (1 if config.protocol == "sequential" else 0),
        max(1, config.num_queries if config.protocol == "queries" else 1),
        "train",
    )
    run.baseline.tune(episodes)


def baseline_learner(config: EvaluateConfig, tasks: list[TaskRun], run: BaselineRun) -> Learner:
    """A baseline on one task as a learner: tuned once, then all its pending units predicted
    together on the main process (batched linear algebra, no model to shard)."""
    task = tasks[run.task]

    def run_units(units: list[Unit]) -> list[list[dict]]:
        with single_thread():
            tune_baseline(config, run, task.sampler)
            drawn = [unit_demos(config, task, u.seed, u.order) for u in units]
            bases = [unit_row(u, run.label, task.name, ep) for u, (ep, _) in zip(units, drawn)]
            shared = [i for i, (_, plan) in enumerate(drawn) if plan is None]
            rows = dict(
                zip(
                    shared,
                    baseline_rows(
                        config, run, [drawn[i][0] for i in shared], [bases[i] for i in shared]
                    ),
                )
            )
            for i, (_, plan) in enumerate(drawn):
                if plan is not None:
                    rows[i] = plan_baseline_rows(config, run, plan, bases[i])
            return [rows[i] for i in range(len(units))]

    return Learner(run.label, [run.task], run_units, sharded=False)


@contextmanager
def single_thread() -> Iterator[None]:
    """Small per-episode learners run far faster on one thread than contending for two."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
