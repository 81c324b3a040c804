"""Selections that need no similarity: random, first_n, balanced, fixed, per_query_random.

Every draw is a pure function of (task, demo seed, query id), so a rerun, another process or a
baseline gets the same demonstrations as the model.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hf_icl.demos.base import SELECTIONS, Selection, SelectionContext
from hf_icl.errors import HfIclError
from hf_icl.samplers.base import rng_for


def _shared(ranked) -> Selection:
    return Selection(np.asarray(ranked, dtype=np.int64)[None], shared=True)


@SELECTIONS.register("random")
def random_list(ctx: SelectionContext) -> Selection:
    """The sampler's own random list for this seed (hf-icl's behaviour before `demos:`)."""
    if ctx.pool.of_episode:
        return _shared(np.arange(ctx.shots))
    where = {pool_id: i for i, pool_id in enumerate(ctx.pool.ids)}
    return _shared([where[i] for i in ctx.episode.demo_ids[: ctx.shots]])


@SELECTIONS.register("first_n")
def first_n(ctx: SelectionContext) -> Selection:
    """The pool's first rows in order (lm-eval's `first_n` sampler), skipping queries."""
    allowed = ctx.allowed()
    ctx.need(len(allowed), " that are not queries")
    return _shared(allowed[: ctx.shots])


def balanced_cycle(shots: int, cycle: list[int]) -> list[int]:
    """The class of each demo position: round-robin over ``cycle``, so at every k the class
    counts differ by at most one."""
    return [cycle[i % len(cycle)] for i in range(shots)]


@SELECTIONS.register("balanced")
def balanced(ctx: SelectionContext) -> Selection:
    """Equal class counts at every k (round-robin over the classes), rows drawn per seed.

    A class with too few rows is an error rather than a silent fill, so every curve point
    really is balanced."""
    allowed = ctx.allowed()
    labels = ctx.pool.y[allowed]
    classes = sorted({int(c) for c in np.unique(ctx.pool.y)})
    cycle = ctx.options.label_order if ctx.options.label_order is not None else classes
    bad = [c for c in cycle if c not in classes]
    if bad or len(set(cycle)) != len(cycle):
        raise HfIclError(
            f"{ctx.where}.label_order: {cycle} must list distinct classes of "
            f"task {ctx.task!r}: {classes}"
        )
    wanted = balanced_cycle(ctx.shots, cycle)
    rng = rng_for(ctx.seed, "balanced", ctx.task)
    rows = {}
    for c in cycle:
        members = allowed[labels == c]
        count = wanted.count(c)
        if count > len(members):
            raise HfIclError(
                f"{ctx.where}: balanced: {ctx.shots} shots need {count} examples "
                f"of class {c} but task {ctx.task!r}'s pool has {len(members)}"
                f"{ctx.pool_note()}; lower shots"
            )
        rows[c] = list(rng.permutation(members)[:count])
    return _shared([rows[c].pop(0) for c in wanted])


def read_fixed(spec: list[int] | str, where: str) -> list[int]:
    """`fixed:` as a list of indices, or a file with one index per line."""
    if isinstance(spec, list):
        return [int(i) for i in spec]
    path = Path(spec)
    if not path.is_file():
        raise HfIclError(f"{where}.fixed: {spec!r}: no such file")
    ids = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                ids.append(int(line))
            except ValueError:
                raise HfIclError(
                    f"{path}:{n}: expected a pool row index, got {line.strip()!r}"
                ) from None
    return ids


@SELECTIONS.register("fixed")
def fixed(ctx: SelectionContext) -> Selection:
    """The given pool rows, in the given order, for every query and seed."""
    if ctx.options.fixed is None:
        raise HfIclError(
            f"{ctx.where}.fixed: selection 'fixed' needs a list of pool row indices "
            "or a file of them"
        )
    ids = read_fixed(ctx.options.fixed, ctx.where)
    position = {pool_id: i for i, pool_id in enumerate(ctx.pool.ids)}
    for i in ids:
        if i not in position:
            raise HfIclError(
                f"{ctx.where}.fixed: index {i} is out of range; task {ctx.task!r}'s "
                f"pool has rows 0..{len(ctx.pool) - 1}"
            )
    dup = next((i for i in ids if ids.count(i) > 1), None)
    if dup is not None:
        raise HfIclError(f"{ctx.where}.fixed: index {dup} is listed twice")
    if ctx.pool.shares_queries:
        clash = sorted(set(ids) & set(ctx.episode.query_ids))
        if clash:
            raise HfIclError(
                f"{ctx.where}.fixed: row {clash[0]} is also a query (the pool and "
                "the queries come from the same split)"
            )
    if len(ids) < ctx.shots:
        raise HfIclError(
            f"{ctx.where}.fixed: {len(ids)} indices given but shots go up to {ctx.shots}"
        )
    return _shared([position[i] for i in ids[: ctx.shots]])


@SELECTIONS.register("per_query_random")
def per_query_random(ctx: SelectionContext) -> Selection:
    """A fresh random list per query, seeded by (task, seed, query id); its first k rows are
    the k-shot set, so every query's prompts share one growing prefix."""
    ranked = []
    for q in range(ctx.episode.num_queries):
        allowed = ctx.allowed(q)
        ctx.need(len(allowed))
        rng = rng_for(ctx.seed, "per_query", ctx.task, ctx.query_id(q))
        ranked.append(rng.choice(allowed, ctx.shots, replace=False))
    return Selection(np.asarray(ranked, dtype=np.int64).reshape(-1, ctx.shots), shared=False)


@SELECTIONS.register("lm_eval_default")
def lm_eval_default(ctx: SelectionContext) -> Selection:
    """lm-eval's default sampler, replayed exactly: it applies to lm-eval task entries, whose
    prompts lm-eval itself writes (hf_icl.lm_eval_tasks), and to nothing else."""
    raise HfIclError(
        f"{ctx.where}.selection: lm_eval_default replays lm-eval's own sampler and "
        "applies only to lm-eval task entries ({lm_eval: ...}); use random or "
        "per_query_random here"
    )
