"""The Episode: plain data passed from samplers to renderers, scorers and baselines.

Samplers know nothing of tokenizers and renderers know nothing of task families; the Episode is
the only thing they share.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class Episode:
    """An ordered list of demonstrations of one task plus query points.

    ``demo_x``/``query_x`` are float arrays of shape (n, dim) for numeric families and lists of
    strings for text families. ``demo_y``/``query_y`` hold class indices (int64) for
    classification and float targets for regression. ``label_words`` maps a class index to the
    word the model must produce (text renderer); numeric families get default words from the
    renderer. ``meta`` holds what only oracle baselines may use (e.g. the pool's subspace ``U``).
    """

    task: str
    family: str
    task_id: int
    demo_x: Any
    demo_y: np.ndarray
    query_x: Any
    query_y: np.ndarray
    num_classes: int | None = None  # None for regression
    label_words: list[str] | None = None
    demo_ids: list[int] = field(default_factory=list)
    query_ids: list[int] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def is_regression(self) -> bool:
        return self.num_classes is None

    @property
    def num_demos(self) -> int:
        return len(self.demo_y)

    @property
    def num_queries(self) -> int:
        return len(self.query_y)

    def with_demos(self, order: list[int]) -> Episode:
        """The same episode with its demonstrations reordered (demo-order permutation axis)."""
        idx = np.asarray(order, dtype=np.int64)
        demo_x = (
            [self.demo_x[i] for i in idx] if isinstance(self.demo_x, list) else self.demo_x[idx]
        )
        demo_ids = [self.demo_ids[i] for i in idx] if self.demo_ids else []
        return Episode(
            task=self.task,
            family=self.family,
            task_id=self.task_id,
            demo_x=demo_x,
            demo_y=self.demo_y[idx],
            query_x=self.query_x,
            query_y=self.query_y,
            num_classes=self.num_classes,
            label_words=self.label_words,
            demo_ids=demo_ids,
            query_ids=self.query_ids,
            meta=self.meta,
        )


@dataclass
class DemoPool:
    """The examples demonstrations are selected from (a task's train split), in source order.

    ``ids`` are the rows' indices in their split; ``shares_queries`` says whether queries come
    from the same rows (pool split = query split), in which case a query must never be chosen
    as its own demonstration. ``of_episode`` marks the fallback pool of families without a
    finite one: the episode's own demonstrations.
    """

    x: Any
    y: np.ndarray
    ids: list[int]
    shares_queries: bool = False
    of_episode: bool = False

    def __len__(self) -> int:
        return len(self.y)
