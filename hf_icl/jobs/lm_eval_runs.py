"""lm-eval task entries of evaluate and compare configs: ``{lm_eval: NAME_OR_YAML, ...}``.

An entry becomes one TaskRun per leaf task (a group gives several). lm-eval loads the task and
writes its prompts; hf-icl picks the demonstrations (``demos:``) and scores every document's own
choices after the cached demo prefix. ``num_queries`` is lm-eval's ``--limit`` (the first N
evaluation documents). Deterministic selections (first_n, fixed) run one demo seed whatever
``num_seeds`` says; lm-eval's random sampler runs one per seed, seeded fewshot_seed + seed.

Light on purpose: no torch until a unit is scored.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hf_icl.demos import DemoOptions, check_options
from hf_icl.errors import HfIclError, did_you_mean
from hf_icl.lm_eval_tasks import (
    DEFAULT_FEWSHOT_SEED,
    DemoSelection,
    LmEvalTask,
    McDocument,
    check_shots,
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
    # hf-icl's own selections (balanced, bm25, topk, ...): their options, the shot counts and
    # the config's seed, from which each demo seed's plan is drawn
    planned: DemoOptions | None = None
    shots: tuple[int, ...] = ()
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

    def plan(self, seed: int, where: str = "demos"):
        """hf-icl's demo plan for one seed: the few-shot pool and the documents as text."""
        import numpy as np

        from hf_icl.demos import SelectionContext, plan_demos
        from hf_icl.episode import DemoPool, Episode

        lm = self.task.task
        pool = self.task.fewshot_pool()
        demo_pool = DemoPool(
            x=[lm.doc_to_text(d) for d in pool],
            y=np.array([_label(lm, d) for d in pool], dtype=np.int64),
            ids=list(range(len(pool))),
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
            query_ids=[d.doc_id for d in self.docs],
        )
        ctx = SelectionContext(
            self.task.name, demo_pool, episode, max(self.shots), seed, self.planned, where=where
        )
        return plan_demos(ctx, list(self.shots), base_seed=self.base_seed)

    def num_seeds(self, config_seeds: int) -> int:
        deterministic = self.planned is None and self.selection.shared(self.task)
        return 1 if deterministic else config_seeds


def _label(task, doc: dict) -> int:
    """A pool document's gold choice index (what `balanced` balances)."""
    target = task.doc_to_target(doc)
    if isinstance(target, str):
        choices = task.doc_to_choice(doc)
        return choices.index(target) if target in choices else 0
    return int(target)


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
            source = LmEvalSource(task, docs, selection, selection.selection != "task")
            if selection.selection not in ("task", *LM_EVAL_SELECTIONS):
                if task.output_type != "multiple_choice":
                    raise HfIclError(
                        f"demos.selection {selection.selection!r} applies to "
                        f"multiple-choice lm-eval tasks; {task.name!r} is "
                        f"{task.output_type}"
                    )
                source.planned, source.shots, source.base_seed = (
                    demos,
                    tuple(config.shots),
                    config.seed,
                )
                source.plan(0, where=f"{where}.demos")  # selection errors before the run
            out.append((definition, source))
    return out


def check_lm_eval_prompts(
    tokenizer, limit: int | None, source: LmEvalSource, shots: list[int], where: Entry
) -> None:
    """Every prompt (seed 0) tokenized as lm-eval does; the longest must fit the window."""
    from hf_icl.lm_eval_tasks import LmEvalEncoder
    from hf_icl.multiple_choice import check_window, lm_eval_requests

    if source.task.output_type == "generate_until":
        from hf_icl.jobs.generation_rows import check_lm_eval_generation

        return check_lm_eval_generation(tokenizer, limit, source, shots, where)
    if limit is None:
        return
    encoder = LmEvalEncoder(tokenizer)
    for k in sorted(set(shots)):
        requests = lm_eval_requests(source.task, source.docs, k, source.selection_for(0), encoder)
        check_window(requests, limit, f"{where}: shots {k}")


def lm_eval_unit_rows(
    model,
    tokenizer,
    source: LmEvalSource,
    shots: list[int],
    seed: int,
    base: dict,
    pack_tokens: int,
    scoring=None,
) -> list[dict]:
    """One unit's rows: each document at each shot count, with lm-eval's acc and acc_norm
    predictions and every choice's log-likelihood (generate_until: the filtered answer)."""
    from hf_icl.multiple_choice import predictions, score_lm_eval_task

    if source.task.output_type == "generate_until":
        from hf_icl.jobs.generation_rows import lm_eval_generation_rows

        return lm_eval_generation_rows(model, tokenizer, source, shots, seed, base, scoring)

    curve = score_lm_eval_task(
        model,
        tokenizer,
        source.task,
        source.docs,
        shots,
        source.selection_for(seed),
        pack_tokens=pack_tokens,
    )
    unconditional = None
    if "acc_mutual_info" in source.task.task._metric_fn_list:
        from hf_icl.multiple_choice import unconditional_scores

        unconditional = unconditional_scores(
            model, tokenizer, source.task, source.docs, pack_tokens=pack_tokens
        )
    rows = []
    for k in shots:
        for q, (doc, scores) in enumerate(zip(source.docs, curve[k])):
            pred, pred_norm = predictions(scores, doc.choices)
            row = {
                **base,
                "shots": k,
                "query": q,
                "query_id": doc.doc_id,
                "gold": doc.gold,
                "pred": pred,
                "pred_norm": pred_norm,
                "loglikelihoods": [round(v, 6) for v in scores.loglikelihoods],
                "greedy": scores.greedy,
            }
            if unconditional is not None:  # lm-eval's acc_mutual_info: log p(c|ctx) - log p(c)
                prior = unconditional[q].loglikelihoods
                gain = [a - b for a, b in zip(scores.loglikelihoods, prior)]
                row["pred_mutual_info"] = max(range(len(gain)), key=gain.__getitem__)
                row["loglikelihoods_unconditional"] = [round(v, 6) for v in prior]
            rows.append(row)
    return rows
