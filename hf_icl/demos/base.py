"""The selection contract: a registered selection ranks pool rows for each query.

A selection returns, per query (or once for all queries), ``shots`` pool indices in its own
rank order; the k-shot demonstration set is always the first k of that list, so a curve over
shot counts grows one set. How each k-shot prompt arranges its k demonstrations is the
`order`'s business (hf_icl.demos.plan). Register a new selection with::

    @SELECTIONS.register("my_selection")
    def my_selection(ctx: SelectionContext) -> Selection: ...

and add its name to EMBEDDING_SELECTIONS when it ranks by an encoder's embeddings (then
`encoder:`, including `encoder: model`, applies to it).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from hf_icl.episode import DemoPool, Episode
from hf_icl.errors import HfIclError
from hf_icl.registry import Registry

if TYPE_CHECKING:
    from hf_icl.demos.options import DemoOptions

TextEncoder = Callable[[list[str]], np.ndarray]  # texts → one vector per text (N, D)


@dataclass
class SelectionContext:
    """What a selection may look at for one unit (task × demo seed)."""

    task: str
    pool: DemoPool
    episode: Episode  # the sampler's draw for this seed: the queries (and its random demos)
    shots: int  # the largest shot count: every ranked list has this many rows
    seed: int  # the demo seed of the unit
    options: DemoOptions
    where: str = "demos"  # config location, for error messages
    # encoder: model: texts → the evaluated model's mean-pooled states (hf_icl.demos.model_states)
    encode: TextEncoder | None = None

    def allowed(self, query: int | None = None) -> np.ndarray:
        """Pool indices a query may use: never itself when pool and queries share rows; for a
        list shared by all queries (``query=None``) none of the queries."""
        mask = np.ones(len(self.pool), dtype=bool)
        if self.pool.shares_queries:
            ids = self.episode.query_ids if query is None else [self.episode.query_ids[query]]
            mask &= ~np.isin(np.asarray(self.pool.ids), np.asarray(ids, dtype=np.int64))
        return np.flatnonzero(mask)

    def query_id(self, q: int) -> int:
        """Query q's row id (its index when the sampler gives no ids)."""
        return int(self.episode.query_ids[q]) if self.episode.query_ids else q

    def pool_note(self) -> str:
        """Why a numeric family's pool is small: it is the episode's own draw."""
        return (
            (
                f" (task {self.task!r} draws fresh examples per episode, so the pool is the "
                f"episode's own {len(self.pool)})"
            )
            if self.pool.of_episode
            else ""
        )

    def need(self, available: int, what: str = "") -> None:
        if available < self.shots:
            raise HfIclError(
                f"{self.where}: {self.shots} shots need {self.shots} demonstrations "
                f"but the pool of task {self.task!r} has {available}"
                f"{what}{self.pool_note()}; lower shots"
            )


@dataclass
class Selection:
    """Ranked pool indices: (Q, shots), or (1, shots) when ``shared`` by every query;
    ``similarity`` (same shape) is each demonstration's similarity to its query, where the
    selection measures one (retrieval)."""

    ranked: np.ndarray
    shared: bool
    similarity: np.ndarray | None = None


SelectionFn = Callable[[SelectionContext], Selection]
SELECTIONS: Registry[SelectionFn] = Registry("demo selection")
EMBEDDING_SELECTIONS: set[str] = set()  # selections that rank by embeddings: `encoder:` applies
