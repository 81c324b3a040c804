"""The sampler contract: a task family instance draws Episodes deterministically from seeds."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar, Literal

import numpy as np

from hf_icl.episode import DemoPool, Episode
from hf_icl.registry import Registry

Split = Literal["train", "test"]
FAMILIES: Registry[type[TaskSampler]] = Registry("task family")


def rng_for(*keys: int | str) -> np.random.Generator:
    """A generator seeded by a tuple of ints/strings, stable across runs and platforms."""
    ints = [
        k if isinstance(k, int) else int.from_bytes(k.encode()[:8].ljust(8, b"\0"), "little")
        for k in keys
    ]
    return np.random.default_rng(np.random.SeedSequence(ints))


class TaskSampler(ABC):
    """One task family with fixed parameters.

    ``episode(index, ...)`` is a pure function of (params, split, index, curriculum arguments):
    episode ``index`` of the split's stream. A family with a curriculum takes its stage as
    keyword arguments (regression: ``active_dims``) rather than holding it, so no caller
    changes a sampler's state. ``split='train'`` draws meta-training tasks, ``'test'`` meta-test tasks
    (e.g. unseen projections); families without such a split use the same tasks for both but
    different examples.
    """

    family: ClassVar[str]
    Params: ClassVar[type]

    def __init__(self, name: str, params: Any) -> None:
        self.name = name
        self.params = params

    @property
    def num_classes(self) -> int | None:
        """Number of classes, or None for regression."""
        return None

    @abstractmethod
    def episode(
        self, index: int, num_demos: int, num_queries: int, split: Split = "test"
    ) -> Episode:
        """Draw episode ``index`` of ``split`` with the given numbers of demos and queries."""

    def episodes(
        self, first: int, count: int, num_demos: int, num_queries: int, split: Split = "test"
    ) -> list[Episode]:
        """A batch of consecutive episodes (families may enforce per-batch properties)."""
        return [self.episode(first + i, num_demos, num_queries, split) for i in range(count)]

    def curriculum_at(self, step: int) -> tuple[int | None, int | None]:
        """(active_dims, examples per sequence) of the curriculum at training step ``step``;
        (None, None) for a family without one. A non-None active_dims goes back to
        ``episode``/``episodes`` as a keyword argument."""
        return None, None

    def max_demos(self) -> int | None:
        """Largest number of demonstrations an episode can have (None: unbounded)."""
        return None

    def demo_pool(self) -> DemoPool | None:
        """The finite set demonstrations are selected from, or None when the family draws
        fresh examples per episode (selections then choose among the episode's own demos)."""
        return None
