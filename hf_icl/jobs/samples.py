"""The layout of samples.jsonl rows, shared by model and baseline units so they line up."""

from __future__ import annotations

from typing import Any

import numpy as np

from hf_icl.episode import Episode
from hf_icl.jobs.units import Unit


def gold(episode: Episode, y) -> int | float | str:
    if isinstance(y, str):  # a generation task's answer text
        return y
    return float(y) if episode.is_regression else int(y)


def rounded(scores) -> list[float] | None:
    return None if scores is None else [round(float(v), 6) for v in scores]


def unit_row(unit: Unit, label: str, task: str, episode: Episode | None) -> dict[str, Any]:
    """The fields every row of a unit starts with (regression adds the error scale); an
    lm-eval task has no Episode."""
    row = {"unit": unit.key, "model": label, "task": task, "seed": unit.seed, "order": unit.order}
    if episode is not None and episode.is_regression:
        row["scale"] = float(episode.meta.get("error_scale", 1.0))
    return row


def query_row(base: dict, episode: Episode, shots: int, q: int) -> dict[str, Any]:
    """`queries` protocol: query q after the first `shots` demonstrations."""
    return {
        **base,
        "shots": shots,
        "query": q,
        "query_id": episode.query_ids[q] if episode.query_ids else q,
        "demo_ids": episode.demo_ids[:shots],
        "gold": gold(episode, episode.query_y[q]),
    }


def position_row(base: dict, episode: Episode, shots: int) -> dict[str, Any]:
    """`sequential` protocol: example `shots` predicted from the examples before it."""
    return {**base, "shots": shots, "query": shots, "gold": gold(episode, episode.demo_y[shots])}


def log_probs(probs: np.ndarray | None) -> list[float] | None:
    return None if probs is None else rounded(np.log(np.clip(probs, 1e-300, None)))
