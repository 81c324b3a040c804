"""lm-eval task entries of evaluate, compare and export: ``{lm_eval: NAME_OR_YAML, ...}``.

An entry becomes one LmEvalSource per leaf task (a group gives several): lm-eval loads the task
and writes its prompts; hf-icl picks the demonstrations (``demos:``). ``num_queries`` is
lm-eval's ``--limit`` (the first N evaluation documents). Deterministic selections (first_n,
fixed) run one demo seed whatever ``num_seeds`` says; lm-eval's random sampler runs one per
seed, seeded fewshot_seed + seed.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any

from hf_icl.demos import DemoOptions, check_options
from hf_icl.errors import HfIclError, did_you_mean
from hf_icl.lm_eval_tasks import (
    DEFAULT_FEWSHOT_SEED,
    DemoSelection,
    LmEvalTask,
    McDocument,
    check_shots,
    demo_example,
    demo_rows,
    load_lm_eval_tasks,
    mc_documents,
)
from hf_icl.tasks import Entry, TaskDef, located

ENTRY_KEYS = ("lm_eval", "include_path", "fewshot_seed")  # models, scoring, demos: as any task
LM_EVAL_SELECTIONS = ("first_n", "fixed", "lm_eval_default")


@dataclass
class LmEvalSource:
    """What a TaskRun of an lm-eval task carries: the task, its documents and demo selection."""

    task: LmEvalTask
    docs: list[McDocument]
    selection: DemoSelection
    override: bool  # demos: chose the selection, not the task's fewshot_config
    shots: tuple[int, ...] = ()
    # hf-icl's own selections (balanced, bm25, topk, ...): their options and the config's seed,
    # from which each demo seed's plan is drawn
    planned: DemoOptions | None = None
    base_seed: int = 0

    @property
    def demos_note(self) -> str:
        """How the demonstrations were chosen, for the report."""
        if self.planned is not None:
            return (
                f"{self.planned.selection} (order {self.planned.order}), hf-icl's selection "
                "over the task's few-shot pool (overrides its fewshot_config)"
            )
        how = (
            "demos.selection (overrides the task's fewshot_config)"
            if self.override
            else "the task's fewshot_config"
        )
        return f"{self.selection.resolved(self.task)}, from {how}"

    def selection_for(self, seed: int) -> DemoSelection:
        if self.planned is not None:
            return DemoSelection(self.planned.selection, seed, rows=self.plan(seed).rows)
        if self.selection.shared(self.task):
            return self.selection
        return DemoSelection(
            self.selection.selection, self.selection.seed + seed, self.selection.indices
        )

    @cached_property
    def pool_examples(self) -> list[tuple[str, list[str], int]]:
        """The few-shot pool as its demonstrations show: text, choices, answer index."""
        return [demo_example(self.task, d) for d in self.task.fewshot_pool()]

    def _pool_and_episode(self):
        """The few-shot pool and the documents as hf-icl's plain data (texts, answer indices),
        for hf-icl's selections and for baselines. An answer outside its choices counts as
        choice 0."""
        import numpy as np

        from hf_icl.episode import DemoPool, Episode

        lm = self.task.task
        pool = DemoPool(
            x=[text for text, _, _ in self.pool_examples],
            y=np.array([max(answer, 0) for _, _, answer in self.pool_examples], dtype=np.int64),
            ids=list(range(len(self.pool_examples))),
            shares_queries=lm.fewshot_cfg.split == lm.config.test_split,
        )
        episode = Episode(
            task=self.task.name,
            family="lm_eval",
            task_id=0,
            demo_x=[],
            demo_y=np.zeros(0, dtype=np.int64),
            query_x=[lm.doc_to_text(d.doc) for d in self.docs],
            query_y=np.array([d.gold for d in self.docs], dtype=np.int64),
            num_classes=max(len(d.choices) for d in self.docs),
            label_words=self.label_set,
            query_ids=[d.doc_id for d in self.docs],
        )
        return pool, episode

    def plan(self, seed: int, where: str = "demos"):
        """hf-icl's demo plan for one seed over the task's few-shot pool."""
        from hf_icl.demos import SelectionContext, plan_demos

        pool, episode = self._pool_and_episode()
        ctx = SelectionContext(
            self.task.name, pool, episode, max(self.shots), seed, self.planned, where=where
        )
        return plan_demos(ctx, list(self.shots), base_seed=self.base_seed)

    @cached_property
    def label_set(self) -> list[str] | None:
        """The one choice list every document and every few-shot example shares, or None (their
        choices vary): baselines that learn labels from demonstrations need one."""
        if self.task.output_type != "multiple_choice":
            return None
        first = self.docs[0].choices
        same = all(d.choices == first for d in self.docs) and all(
            choices == first for _, choices, _ in self.pool_examples
        )
        return list(first) if same else None

    def baseline_episode(self):
        """The documents as an Episode for planning baselines, or None when choices vary."""
        return None if self.label_set is None else self._pool_and_episode()[1]

    def unit_demos(self, seed: int):
        """The documents and, per document and shot count, the pool rows its prompt shows at
        demo seed ``seed`` (`demo_rows`, as the prompts themselves): what baselines learn from."""
        from hf_icl.demos import DemoPlan

        pool, episode = self._pool_and_episode()
        selection, docs = self.selection_for(seed), [d.doc for d in self.docs]
        rows = {k: demo_rows(self.task, docs, k, selection) for k in sorted(set(self.shots))}
        prompts = [{k: shown[q] for k, shown in rows.items()} for q in range(len(docs))]
        return episode, DemoPlan(pool, episode, prompts, shared=False)

    def num_seeds(self, config_seeds: int) -> int:
        deterministic = self.planned is None and self.selection.shared(self.task)
        return 1 if deterministic else config_seeds


def is_lm_eval_entry(ref: Any) -> bool:
    return isinstance(ref, dict) and "lm_eval" in ref


def _selection(options: DemoOptions | None, seed: int, where: Entry) -> DemoSelection:
    """hf-icl's ``demos:`` options as lm-eval demo selection."""
    if options is None or options.default:
        return DemoSelection("task", seed)
    check_options(options, f"{where}.demos")
    if options.permutations != 1:
        raise HfIclError(
            f"{where}.demos.permutations: lm-eval tasks run their demonstrations "
            "in one order; set permutations: 1"
        )
    if options.selection not in LM_EVAL_SELECTIONS:
        return DemoSelection(options.selection, seed)  # planned by hf-icl (LmEvalSource.plan)
    if options.order != "as_selected":
        raise HfIclError(
            f"{where}.demos.order: selection {options.selection!r} on an lm-eval "
            f"task keeps its order (as_selected), got {options.order!r}"
        )
    indices: tuple[int, ...] = ()
    if options.selection == "fixed":
        from hf_icl.demos.selection import read_fixed

        if options.fixed is None:
            raise HfIclError(f"{where}.demos.fixed: selection 'fixed' needs pool row indices")
        indices = tuple(read_fixed(options.fixed, f"{where}.demos"))
    return DemoSelection(options.selection, seed, indices)


def prepare_lm_eval_entry(
    config, ref: dict, demos: DemoOptions | None, where: Entry
) -> list[tuple[TaskDef, LmEvalSource]]:
    """Load and check an entry (its ``demos:`` already merged over the config's): the task(s),
    the first ``num_queries`` documents, the demo selection and that the pool holds the most
    shots asked for."""
    unknown = [k for k in ref if k not in ENTRY_KEYS]
    if unknown:
        raise HfIclError(
            f"{where}: unknown key {unknown[0]!r} in an lm-eval task entry"
            f"{did_you_mean(unknown[0], ENTRY_KEYS)}; allowed: "
            f"{', '.join(ENTRY_KEYS)}, models, scoring, demos"
        )
    name, include_path = ref["lm_eval"], ref.get("include_path")
    if not isinstance(name, str) or not name:
        raise HfIclError(f"{where}.lm_eval: expected a task name or YAML path, got {name!r}")
    seed = ref.get("fewshot_seed", DEFAULT_FEWSHOT_SEED)
    if not isinstance(seed, int):
        raise HfIclError(f"{where}.fewshot_seed: expected an integer, got {seed!r}")
    selection = _selection(demos, seed, where)
    out = []
    with located(where):
        for task in load_lm_eval_tasks(name, include_path):
            if task.output_type == "generate_until":
                from hf_icl.lm_eval_generation import generation_documents

                docs = generation_documents(task, config.num_queries)
            else:
                docs = mc_documents(task, config.num_queries)
            check_shots(task, selection, max(config.shots))
            definition = TaskDef(
                name=task.name,
                family="lm_eval",
                source=name,
                description=f"lm-eval task {task.name}"
                + (f" (group {task.group})" if task.group else ""),
            )
            source = LmEvalSource(
                task, docs, selection, selection.selection != "task", tuple(config.shots)
            )
            if selection.selection not in ("task", *LM_EVAL_SELECTIONS):
                if task.output_type != "multiple_choice":
                    raise HfIclError(
                        f"demos.selection {selection.selection!r} applies to "
                        f"multiple-choice lm-eval tasks; {task.name!r} is "
                        f"{task.output_type}"
                    )
                source.planned, source.base_seed = demos, config.seed
                source.plan(0, where=f"{where}.demos")  # selection errors before the run
            out.append((definition, source))
    return out
