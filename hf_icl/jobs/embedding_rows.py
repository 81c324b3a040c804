"""Evaluate units of a train run's small model: the unit's episode through the embedding renderer
and the trained learner, as the trainer's own evaluation reads them (models/learner.py).

Sequential protocol: one sequence, the prediction at every position. Queries protocol: each
query after its first k demonstrations is a sequence of k + 1 examples whose last one is the
query, so the prediction is read where the trainer reads it.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from hf_icl.demos import DemoPlan
from hf_icl.episode import Episode
from hf_icl.jobs.evaluate_config import EvaluateConfig
from hf_icl.jobs.samples import position_row, query_row, rounded
from hf_icl.models.learner import ICLModel, embedding_batch, label_outputs, small_model_renderer


def embedding_unit_rows(
    model: ICLModel,
    config: EvaluateConfig,
    episode: Episode,
    plan: DemoPlan | None,
    base: dict,
) -> list[dict]:
    """The unit's rows in the layout of every other learner's (jobs/samples.py)."""
    if config.protocol == "sequential":
        outputs = _outputs(model, [episode], final_only=False)
        return [{**position_row(base, episode, k), **_prediction(outputs[k])} for k in config.shots]
    rows = []
    for k in config.shots:
        queries = range(episode.num_queries)
        outputs = _outputs(model, [_prompt(episode, plan, q, k) for q in queries], final_only=True)
        for q in queries:
            row = query_row(base, episode, k, q)
            if plan is not None:
                row["demo_ids"] = plan.demo_ids(q, k)
            rows.append({**row, **_prediction(outputs[q])})
    return rows


def _prompt(episode: Episode, plan: DemoPlan | None, q: int, k: int) -> Episode:
    """Query q after its first k demonstrations (its own, with a demo plan) as one sequence."""
    if plan is not None:
        episode, q = plan.episode_for(plan.rows(q, k), [q]), 0
    return dataclasses.replace(
        episode,
        demo_x=np.concatenate([episode.demo_x[:k], episode.query_x[q : q + 1]]),
        demo_y=np.concatenate([episode.demo_y[:k], episode.query_y[q : q + 1]]),
        query_x=episode.query_x[:0],
        query_y=episode.query_y[:0],
        demo_ids=[],
        query_ids=[],
    )


def _outputs(model: ICLModel, episodes: list[Episode], final_only: bool) -> np.ndarray:
    batch = embedding_batch(small_model_renderer(model, episodes[0]), episodes, final_only)
    return label_outputs(model, batch).numpy()


def _prediction(output: np.ndarray) -> dict[str, Any]:
    """A predicted target, or the class with the highest logit and every class's log-prob."""
    if output.ndim == 0:
        return {"pred": float(output), "scores": None}
    return {"pred": int(np.argmax(output)), "scores": rounded(output - np.logaddexp.reduce(output))}
