"""Orders and the demo plan: which pool rows, in which order, each k-shot prompt shows.

The k-shot set is the first k rows of the selection's ranked list; the order arranges them:
``as_selected`` keeps the rank order (every prompt is a prefix of the largest one, so the
scorer encodes the largest once), ``nearest_first`` sorts by similarity to the query,
``nearest_last`` puts the most similar next to the query (prompts no longer share a prefix),
``random`` shuffles each prompt (seeded by seed, query and k). Permutation ``o > 0`` (Shen et
al.) reorders a list shared by all queries before the prompts are cut from it, exactly as
`demo_orders` did (prompts still extend one another; compare fine-tunes in that order), and
shuffles each prompt of a per-query list on its own, so the k nearest stay the k nearest.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from hf_icl.demos.base import EMBEDDING_SELECTIONS, SELECTIONS, Selection, SelectionContext
from hf_icl.demos.options import DemoOptions
from hf_icl.episode import DemoPool, Episode
from hf_icl.errors import HfIclError
from hf_icl.registry import Registry
from hf_icl.samplers.base import rng_for

# (ranked rows, their similarities or None, k, generator) → the k rows in prompt order
OrderFn = Callable[
    [np.ndarray, np.ndarray | None, int, Callable[[], np.random.Generator]], list[int]
]
ORDERS: Registry[OrderFn] = Registry("demo order")
PREFIX_ORDERS = {"as_selected", "nearest_first"}  # every k-shot prompt is a prefix of the next


def _by_similarity(rows: np.ndarray, sims: np.ndarray | None, k: int) -> list[int]:
    if sims is None:
        raise HfIclError(
            "needs each demonstration's similarity to its query: use selection bm25 or topk"
        )
    keep = np.lexsort((np.arange(k), -sims[:k]))  # stable: equal similarity keeps rank order
    return [int(r) for r in rows[:k][keep]]


ORDERS.register("as_selected")(lambda rows, sims, k, rng: [int(r) for r in rows[:k]])
ORDERS.register("nearest_first")(lambda rows, sims, k, rng: _by_similarity(rows, sims, k))
ORDERS.register("nearest_last")(lambda rows, sims, k, rng: _by_similarity(rows, sims, k)[::-1])
ORDERS.register("random")(lambda rows, sims, k, rng: [int(r) for r in rng().permutation(rows[:k])])


@dataclass
class DemoPlan:
    """Per query (one entry when ``shared``): shot count → pool rows in prompt order."""

    pool: DemoPool
    episode: Episode
    prompts: list[dict[int, list[int]]]
    shared: bool

    def rows(self, query: int, shots: int) -> list[int]:
        return self.prompts[0 if self.shared else query][shots]

    def demo_ids(self, query: int, shots: int) -> list[int]:
        return [int(self.pool.ids[r]) for r in self.rows(query, shots)]

    def prefix_consistent(self) -> bool:
        """Every prompt's demonstrations start with those of every smaller shot count."""
        for lists in self.prompts:
            longest = lists[max(lists)]
            if any(rows != longest[: len(rows)] for rows in lists.values()):
                return False
        return True

    def episode_for(self, rows: list[int], queries: list[int]) -> Episode:
        """An Episode whose demonstrations are the given pool rows, with the given queries."""
        ep, pool = self.episode, self.pool
        idx = np.asarray(rows, dtype=np.int64)
        q = np.asarray(queries, dtype=np.int64)
        return Episode(
            task=ep.task,
            family=ep.family,
            task_id=ep.task_id,
            demo_x=[pool.x[i] for i in idx] if isinstance(pool.x, list) else pool.x[idx],
            demo_y=pool.y[idx],
            query_x=[ep.query_x[i] for i in q] if isinstance(ep.query_x, list) else ep.query_x[q],
            query_y=ep.query_y[q],
            num_classes=ep.num_classes,
            label_words=ep.label_words,
            demo_ids=[int(pool.ids[i]) for i in idx],
            query_ids=[int(ep.query_ids[i]) for i in q] if ep.query_ids else [int(i) for i in q],
            meta=ep.meta,
        )


def demo_pool(sampler, episode: Episode) -> DemoPool:
    """The sampler's pool, or the episode's own demonstrations for families without one."""
    pool = sampler.demo_pool()
    if pool is not None:
        return pool
    return DemoPool(
        x=episode.demo_x,
        y=np.asarray(episode.demo_y),
        ids=list(range(episode.num_demos)),
        of_episode=True,
    )


def plan_demos(
    ctx: SelectionContext, shots: list[int], permutation: int = 0, base_seed: int = 0
) -> DemoPlan:
    """Select, order and permute the demonstrations of one unit."""
    options = ctx.options
    selection: Selection = SELECTIONS.get(options.selection, where=f"{ctx.where}.selection")(ctx)
    order = ORDERS.get(options.order, where=f"{ctx.where}.order")
    ranked = selection.ranked
    if permutation and selection.shared:  # the seed's list reordered, as demo_orders did
        perm = rng_for(base_seed, "order", ctx.task, ctx.seed, permutation).permutation(ctx.shots)
        ranked = ranked[:, perm]
    prompts = []
    for i, rows in enumerate(ranked):
        sims = None if selection.similarity is None else selection.similarity[i]
        query = "all" if selection.shared else ctx.query_id(i)
        lists = {}
        for k in sorted(set(shots)):

            def rng(k=k, query=query):
                return rng_for(base_seed, "demo_order", ctx.task, ctx.seed, query, k)

            try:
                prompt = order(rows, sims, k, rng)
            except HfIclError as err:
                raise HfIclError(f"{ctx.where}.order: {options.order!r} {err}") from None
            if permutation and not selection.shared:
                prompt = [
                    int(r)
                    for r in rng_for(
                        base_seed, "demo_permutation", ctx.task, ctx.seed, query, k, permutation
                    ).permutation(prompt)
                ]
            lists[k] = prompt
        prompts.append(lists)
    return DemoPlan(ctx.pool, ctx.episode, prompts, selection.shared)


def check_options(options: DemoOptions, where: str) -> None:
    """Unknown selection or order names fail with the allowed names and a did-you-mean; the
    model's states select only where a selection embeds."""
    SELECTIONS.get(options.selection, where=f"{where}.selection")
    ORDERS.get(options.order, where=f"{where}.order")
    if options.uses_model_states and options.selection not in EMBEDDING_SELECTIONS:
        raise HfIclError(
            f"{where}.encoder: 'model' applies to the selections that embed "
            f"({', '.join(sorted(EMBEDDING_SELECTIONS))}), not to {options.selection!r}"
        )
