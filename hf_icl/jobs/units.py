"""The resumable, sharded unit runner shared by every job that writes samples.jsonl.

A job describes its learners (a model, a baseline on one task, …): the label that names their
units, the tasks they run and how to run a list of units. A unit is learner × task × seed × demo
order; its rows are appended to the results folder in one write when it finishes, so a rerun
skips it, and a unit with fewer rows than expected (a crash mid-write) is redone. With several
processes each runs every world-th pending unit of the sharded learners into its own log; the
main process runs the others, merges the logs and sorts the samples, so files equal a
one-process run.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tqdm.auto import tqdm

from hf_icl.results import RunFolder
from hf_icl.runtime import Shard

if TYPE_CHECKING:
    from hf_icl.models import ModelSpec


@dataclass(frozen=True)
class Unit:
    learner: int  # index into the job's learners
    task: int  # index into the job's prepared tasks
    seed: int
    order: int
    key: str  # how samples.jsonl names the unit: "label|task|seed|order"


def unit_key(label: str, task: str, seed: int, order: int) -> str:
    return f"{label}|{task}|{seed}|{order}"


@dataclass
class Learner:
    """What runs units: ``run`` gets this process's pending units of the learner (in plan
    order) and yields each one's rows in turn, loading what it needs first."""

    label: str
    tasks: list[int]
    run: Callable[[list[Unit]], Iterable[list[dict]]]
    sharded: bool = True  # False: the main process runs all its units (cheap batched learners)


@dataclass
class UnitPlan:
    """A job's units: every learner × task it runs × seed × demo order, and rows per unit."""

    learners: list[Learner]
    task_names: list[str]
    num_seeds: int
    demo_orders: int
    rows_per_unit: int
    # Per task index: (seeds, demo orders, rows per unit) where a task differs from the job's
    # (an lm-eval task with a deterministic demo selection runs once, over its own documents).
    task_shapes: dict[int, tuple[int, int, int]] = field(default_factory=dict)

    def shape(self, task: int) -> tuple[int, int, int]:
        return self.task_shapes.get(task, (self.num_seeds, self.demo_orders, self.rows_per_unit))

    @property
    def units(self) -> list[Unit]:
        """Every unit in report order: learner, task, seed, order."""
        return [
            Unit(i, t, s, o, unit_key(learner.label, self.task_names[t], s, o))
            for i, learner in enumerate(self.learners)
            for t in learner.tasks
            for s in range(self.shape(t)[0])
            for o in range(self.shape(t)[1])
        ]


def model_learner(
    spec: ModelSpec,
    tasks: list[int],
    setup: Callable[[ModelSpec, Any, Any], Callable[[Unit], list[dict]]],
) -> Learner:
    """A model as a learner: loaded once per process that has units for it, freed afterwards.
    ``setup(spec, model, tokenizer)`` returns the function that gives one unit's rows. While it
    runs, demo selection with `encoder: model` embeds with it instead of loading a copy."""

    def run(units: list[Unit]) -> Iterator[list[dict]]:
        from hf_icl.demos.model_states import lend_model
        from hf_icl.models import load_model

        model, tokenizer = load_model(spec)
        run_unit = setup(spec, model, tokenizer)
        with lend_model(spec, model, tokenizer):
            for unit in units:
                yield run_unit(unit)
        del run_unit, model, tokenizer
        gc.collect()

    return Learner(spec.label, tasks, run)


def run_units(
    plan: UnitPlan, folder: RunFolder, shard: Shard | None = None, progress: bool = True
) -> list[dict] | None:
    """Run (or resume) every unit not yet in samples.jsonl; the main process returns all
    samples in unit order (other processes None)."""
    shard = shard or Shard()
    units = plan.units
    expected = {u.key: plan.shape(u.task)[2] for u in units}
    if shard.rank == 0:
        merge_parts(folder, shard)
        drop_partial(folder, done_units(folder, expected))
    shard.barrier()
    done = done_units(folder, expected)
    todo = [u for u in units if u.key not in done]
    mine = shard.mine([u for u in todo if plan.learners[u.learner].sharded])
    if shard.rank == 0:
        mine += [u for u in todo if not plan.learners[u.learner].sharded]
    _run(plan.learners, mine, folder, shard.log, progress and shard.rank == 0)
    shard.barrier()
    if shard.rank != 0:
        return None
    merge_parts(folder)
    return sort_samples(folder, [u.key for u in units])


def _run(
    learners: list[Learner], todo: list[Unit], folder: RunFolder, log: str, progress: bool
) -> None:
    """Each learner's units in turn, appending each unit's rows as it finishes."""
    bar = tqdm(total=len(todo), desc="units", disable=not progress or not todo, unit="unit")
    for i, learner in enumerate(learners):
        mine = [u for u in todo if u.learner == i]
        if not mine:
            continue
        bar.set_postfix_str(learner.label)
        for rows in learner.run(mine):
            folder.append_jsonl(log, rows)
            bar.update()
    bar.close()


def merge_parts(folder: RunFolder, shard: Shard | None = None) -> None:
    """Fold the per-process logs of a sharded run into samples.jsonl (complete lines only).

    Given the shard, every part log is first recorded as the run's own (the other processes
    write them without touching the run marker)."""
    if shard is not None:
        for rank in range(shard.world):
            folder.file(Shard(rank, shard.world).log)
    parts = sorted(folder.path.glob("samples.part-*.jsonl"))
    if not parts:
        return
    rows = folder.read_jsonl("samples.jsonl")
    for part in parts:
        rows += folder.read_jsonl(part.name)
    folder.write_jsonl("samples.jsonl", rows)
    for part in parts:
        part.unlink()


def done_units(folder: RunFolder, expected: dict[str, int]) -> set[str]:
    """Units whose every sample is in samples.jsonl (a torn unit is redone)."""
    counts: dict[str, int] = {}
    for row in folder.read_jsonl("samples.jsonl"):
        counts[row["unit"]] = counts.get(row["unit"], 0) + 1
    return {u for u, n in counts.items() if expected.get(u) == n}


def drop_partial(folder: RunFolder, done: set[str]) -> None:
    """Keep only finished units, so appends after a crash start from a clean log."""
    folder.truncate_torn("samples.jsonl")
    rows = folder.read_jsonl("samples.jsonl")
    kept = [r for r in rows if r["unit"] in done]
    if len(kept) != len(rows):
        folder.write_jsonl("samples.jsonl", kept)


def sort_samples(folder: RunFolder, unit_order: list[str]) -> list[dict]:
    """Rewrite samples.jsonl in unit order so resumed and sharded runs give identical files."""
    rank = {u: i for i, u in enumerate(unit_order)}
    rows = folder.read_jsonl("samples.jsonl")
    rows.sort(key=lambda r: (rank.get(r["unit"], len(rank)), r["shots"], r["query"]))
    folder.write_jsonl("samples.jsonl", rows)
    return rows
