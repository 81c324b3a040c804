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

    @property
    def demos_note(self) -> str:
        """How the demonstrations were chosen, for the report."""
        how = ("demos.selection (overrides the task's fewshot_config)" if self.override
               else "the task's fewshot_config")
        return f"{self.selection.resolved(self.task)}, from {how}"

    def selection_for(self, seed: int) -> DemoSelection:
        if self.selection.shared(self.task):
            return self.selection
        return DemoSelection(self.selection.selection, self.selection.seed + seed,
                             self.selection.indices)

    def num_seeds(self, config_seeds: int) -> int:
        return 1 if self.selection.shared(self.task) else config_seeds


def is_lm_eval_entry(ref: Any) -> bool:
    return isinstance(ref, dict) and "lm_eval" in ref


def _selection(options: DemoOptions | None, seed: int, where: Entry) -> DemoSelection:
    """hf-icl's ``demos:`` options as lm-eval demo selection."""
    if options is None or options.default:
        return DemoSelection("task", seed)
    check_options(options, f"{where}.demos")
    if options.selection not in LM_EVAL_SELECTIONS or options.order != "as_selected" \
            or options.permutations != 1:
        raise HfIclError(f"{where}.demos: lm-eval tasks support selection "
                         f"{', '.join(LM_EVAL_SELECTIONS)} (order as_selected, permutations 1), "
                         f"got selection {options.selection!r}, order {options.order!r}")
    indices: tuple[int, ...] = ()
    if options.selection == "fixed":
        from hf_icl.demos.selection import read_fixed

        if options.fixed is None:
            raise HfIclError(f"{where}.demos.fixed: selection 'fixed' needs pool row indices")
        indices = tuple(read_fixed(options.fixed, f"{where}.demos"))
    return DemoSelection(options.selection, seed, indices)


def prepare_lm_eval_entry(config, ref: dict, demos: DemoOptions | None,
                          where: Entry) -> list[tuple[TaskDef, LmEvalSource]]:
    """Load and check an entry (its ``demos:`` already merged over the config's): the task(s),
    the first ``num_queries`` documents, the demo selection and that the pool holds the most
    shots asked for."""
    unknown = [k for k in ref if k not in ENTRY_KEYS]
    if unknown:
        raise HfIclError(f"{where}: unknown key {unknown[0]!r} in an lm-eval task entry"
                         f"{did_you_mean(unknown[0], ENTRY_KEYS)}; allowed: "
                         f"{', '.join(ENTRY_KEYS)}, models, scoring, demos")
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
            definition = TaskDef(name=task.name, family="lm_eval", source=name,
                                 description=f"lm-eval task {task.name}"
                                 + (f" (group {task.group})" if task.group else ""))
            out.append((definition, LmEvalSource(task, docs, selection,
                                                 selection.selection != "task")))
    return out


def check_lm_eval_prompts(tokenizer, limit: int | None, source: LmEvalSource, shots: list[int],
                          where: Entry) -> None:
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


def lm_eval_unit_rows(model, tokenizer, source: LmEvalSource, shots: list[int], seed: int,
                      base: dict, pack_tokens: int, scoring=None) -> list[dict]:
    """One unit's rows: each document at each shot count, with lm-eval's acc and acc_norm
    predictions and every choice's log-likelihood (generate_until: the filtered answer)."""
    from hf_icl.multiple_choice import predictions, score_lm_eval_task

    if source.task.output_type == "generate_until":
        from hf_icl.jobs.generation_rows import lm_eval_generation_rows

        return lm_eval_generation_rows(model, tokenizer, source, shots, seed, base, scoring)

    curve = score_lm_eval_task(model, tokenizer, source.task, source.docs, shots,
                               source.selection_for(seed), pack_tokens=pack_tokens)
    rows = []
    for k in shots:
        for q, (doc, scores) in enumerate(zip(source.docs, curve[k])):
            pred, pred_norm = predictions(scores, doc.choices)
            rows.append({**base, "shots": k, "query": q, "query_id": doc.doc_id,
                         "gold": doc.gold, "pred": pred, "pred_norm": pred_norm,
                         "loglikelihoods": [round(v, 6) for v in scores.loglikelihoods],
                         "greedy": scores.greedy})
    return rows
