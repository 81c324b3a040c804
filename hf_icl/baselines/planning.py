"""What the evaluate job and the trainer share about running baselines: reading a baseline entry
of a config, whether a baseline applies to a task's episodes, and the sequential protocol's view
of an episode (the first k examples are the demonstrations, example k is the query)."""

from __future__ import annotations

from typing import Any

from hf_icl.baselines.base import Baseline, is_numeric
from hf_icl.episode import Episode
from hf_icl.errors import HfIclError


def split_spec(spec: Any, index: int) -> tuple[str, dict]:
    """A ``baselines.<index>`` entry (a name or ``{name: ..., <param>: ...}``) → (name, params)."""
    if isinstance(spec, str):
        return spec, {}
    if isinstance(spec, dict) and "name" in spec:
        return spec["name"], {k: v for k, v in spec.items() if k != "name"}
    raise HfIclError(
        f"baselines.{index}: expected a name or {{name: ..., <param>: ...}}, got {spec!r}"
    )


def applies(baseline: Baseline, episode: Episode) -> bool:
    """Whether ``baseline`` can predict episodes like ``episode`` (task kind, numeric inputs)."""
    kind = "regression" if episode.is_regression else "classification"
    if baseline.task_kind not in (kind, "any"):
        return False
    return is_numeric(episode.demo_x) or not baseline.reads_x


def position_episode(ep: Episode, k: int) -> Episode:
    """Sequential protocol: the first k examples are the demos, example k is the query."""
    return Episode(
        task=ep.task,
        family=ep.family,
        task_id=ep.task_id,
        demo_x=ep.demo_x[:k],
        demo_y=ep.demo_y[:k],
        query_x=ep.demo_x[k : k + 1],
        query_y=ep.demo_y[k : k + 1],
        num_classes=ep.num_classes,
        label_words=ep.label_words,
        meta=ep.meta,
    )
