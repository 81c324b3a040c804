"""Task pools shared by the numeric families: which task an episode uses and how it is seeded.

GPICL, Magen & Vardi and Garg et al. all meta-train on tasks drawn from a prior. A finite pool
(``num_tasks``) fixes the meta-training tasks, so the pool size can be studied as a variable; the
'test' split always draws tasks outside the pool, so meta-test measures generalisation to unseen
tasks. Task ids: pool tasks are ``0 .. num_tasks-1`` (an unbounded stream uses the episode
index), unseen test tasks are negative (``-1 - index``), so the two never collide.
"""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple

import numpy as np

from hf_icl.config import option
from hf_icl.episode import Episode
from hf_icl.errors import HfIclError
from hf_icl.samplers.base import Split, TaskSampler, rng_for

SPLITS = ("train", "test")


@dataclass
class PoolParams:
    """Parameters every numeric family shares: the meta-training pool and the seed."""

    num_tasks: int | None = option(
        None, help="meta-training pool size; null or 0: a fresh task for every episode"
    )
    log2_num_tasks: int | None = option(
        None, help="pool size as a power of two (instead of num_tasks), e.g. 14 for 2^14 tasks"
    )
    seed: int = option(0, help="seed of the tasks and the examples")

    def __post_init__(self) -> None:
        if self.num_tasks is not None and self.num_tasks < 0:
            raise ValueError(
                f"num_tasks: {self.num_tasks} is negative; allowed: a positive "
                "integer, or 0/null for a fresh task per episode"
            )
        if self.log2_num_tasks is not None and not 0 <= self.log2_num_tasks <= 62:
            raise ValueError(
                f"log2_num_tasks: {self.log2_num_tasks} is out of range; allowed: 0..62"
            )
        if self.num_tasks is not None and self.log2_num_tasks is not None:
            raise ValueError(
                f"num_tasks ({self.num_tasks}) and log2_num_tasks "
                f"({self.log2_num_tasks}) are both set; set one of them"
            )
        if self.seed < 0:
            raise ValueError(f"seed: {self.seed} is negative; allowed: a non-negative integer")

    @property
    def pool_size(self) -> int | None:
        """Number of meta-training tasks, None for an unbounded stream."""
        if self.log2_num_tasks is not None:
            return 2**self.log2_num_tasks
        return self.num_tasks or None


@dataclass(frozen=True)
class TaskPool:
    """Maps (split, episode index) to a task id and task ids to generators; holds no tasks.

    Tasks are regenerated from their seed on demand, so a pool of 2^24 tasks costs nothing.
    """

    seed: int
    size: int | None

    def task_id(self, split: Split, index: int) -> int:
        if split == "test":
            return -1 - index
        if self.size is None:
            return index
        return int(rng_for(self.seed, "pick", index).integers(self.size))

    def task_rng(self, task_id: int) -> np.random.Generator:
        """The generator of one task's parameters (projection, weights, mean...)."""
        if task_id >= 0:
            return rng_for(self.seed, "task", task_id)
        return rng_for(self.seed, "unseen", -1 - task_id)

    def example_rng(self, split: Split, index: int) -> np.random.Generator:
        """The generator of one episode's examples, independent of which task it uses."""
        return rng_for(self.seed, "examples", split, index)


class Draw(NamedTuple):
    """The examples of one episode (demos first, then queries) and the task's metadata."""

    x: np.ndarray
    y: np.ndarray
    meta: dict[str, Any]
    ids: list[int] | None = None


def check_request(index: int, num_demos: int, num_queries: int, split: str) -> None:
    """Reject impossible episode requests with one-line errors."""
    if split not in SPLITS:
        raise HfIclError(f"split {split!r} is not one of: {', '.join(SPLITS)}")
    if index < 0:
        raise HfIclError(f"episode index {index} is negative")
    if num_demos < 0 or num_queries < 0 or num_demos + num_queries == 0:
        raise HfIclError(
            f"an episode needs num_demos >= 0 and num_queries >= 0, not both 0 "
            f"(got {num_demos} and {num_queries})"
        )


class PooledSampler(TaskSampler):
    """A family whose tasks come from a ``TaskPool``; subclasses only draw examples of a task."""

    Params: ClassVar[type[PoolParams]]

    def __init__(self, name: str, params: PoolParams) -> None:
        super().__init__(name, params)
        self.pool = TaskPool(params.seed, params.pool_size)

    @abstractmethod
    def draw(
        self, task_id: int, split: Split, rng: np.random.Generator, count: int, **options: Any
    ) -> Draw:
        """Draw ``count`` examples of task ``task_id`` using ``rng`` for the examples."""

    def episode(
        self, index: int, num_demos: int, num_queries: int, split: Split = "test"
    ) -> Episode:
        return self.make_episode(index, num_demos, num_queries, split)

    def make_episode(
        self, index: int, num_demos: int, num_queries: int, split: Split, **options: Any
    ) -> Episode:
        """Episode ``index`` of ``split``; ``options`` go to ``draw`` (e.g. a batch's choices)."""
        check_request(index, num_demos, num_queries, split)
        task_id = self.pool.task_id(split, index)
        rng = self.pool.example_rng(split, index)
        drawn = self.draw(task_id, split, rng, num_demos + num_queries, **options)
        ids = drawn.ids or []
        return Episode(
            task=self.name,
            family=self.family,
            task_id=task_id,
            demo_x=drawn.x[:num_demos],
            demo_y=drawn.y[:num_demos],
            query_x=drawn.x[num_demos:],
            query_y=drawn.y[num_demos:],
            num_classes=self.num_classes,
            demo_ids=ids[:num_demos],
            query_ids=ids[num_demos:],
            meta=drawn.meta,
        )
