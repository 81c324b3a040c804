"""`hf-icl export lm-eval TASK --out DIR`: a task as lm-evaluation-harness tasks over local data.

Each exported task holds its queries (the test split) and its demonstrations in prompt order
(the few-shot split, read by lm-eval's `first_n` sampler), so `lm_eval --include_path DIR
--tasks NAME --num_fewshot K` scores the prompts hf-icl scores at K shots. An hf-icl text
classification task gives one lm-eval task per demo seed, its label words as the choices and
the empty target delimiter (hf-icl's label words carry their own leading space). An lm-eval
task (a ``{lm_eval: ...}`` entry, or its YAML path) gives its documents as lm-eval formats them
(text, choices, answer) with its delimiters and description, and its whole few-shot pool as a
third split; the export is loaded back through lm-eval before anything is written, to check
that it writes the same prompts. A group holds the exported tasks. The data is read by a small
loader next to the YAMLs, so the folder can be moved.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import yaml

from hf_icl.config import apply_overrides, from_dict, option
from hf_icl.demos import DemoOptions
from hf_icl.errors import HfIclError
from hf_icl.render.options import RenderOptions
from hf_icl.tasks import Entry, load_task, parse_section

LOADER = '''"""Reads the exported JSONL files next to this file (written by hf-icl export)."""

from pathlib import Path

import datasets


def load(data: str, splits=("demos", "queries"), **_) -> datasets.DatasetDict:
    folder = Path(__file__).parent
    return datasets.DatasetDict({split: datasets.Dataset.from_json(str(folder / f"{data}_{split}.jsonl"))
                                 for split in splits})
'''
LM_EVAL_METRICS = ("acc", "acc_norm", "acc_mutual_info")  # what hf-icl scores


@dataclass
class ExportConfig:
    num_seeds: int = option(1, help="demo seeds exported, one lm-eval task each")
    num_queries: int = option(100, help="queries per seed (the lm-eval test split)")
    shots: int = option(16, help="demonstrations per seed, in prompt order (the most shots)")
    seed: int = option(0, help="the evaluate config's seed (hf-icl's demo selections)")
    task: dict[str, Any] = option(default_factory=dict, help="task parameter overrides")

    def __post_init__(self) -> None:
        for name in ("num_seeds", "num_queries", "shots"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be ≥ 1, got {getattr(self, name)}")


@dataclass
class ExportedTask:
    """One lm-eval task to write: its splits' rows and how lm-eval formats them."""

    name: str
    splits: dict[str, list[dict]]  # queries, demos (in prompt order), pool
    choices: list[str] | None  # one list for every document, else each row's "choices"
    target_delimiter: str
    fewshot_delimiter: str
    description: str | None = ""  # None: each query row's own "description"
    fewshot: dict[str, str] = field(default_factory=dict)  # fewshot_config's own delimiters
    metrics: tuple[str, ...] = ("acc",)


def _refuse(definition, render: RenderOptions) -> None:
    """What lm-eval cannot express is refused in one line, before anything is written."""
    if definition.family != "text_classification":
        raise HfIclError(
            f"task {definition.name!r}: family {definition.family!r} cannot be "
            "exported to lm-eval: numeric tasks draw a new task per seed and "
            "regression is scored by an expected value; text_classification "
            "tasks export"
        )
    for name in ("calibrate", "length_normalise", "chat_template"):
        if getattr(render, name):
            raise HfIclError(
                f"task {definition.name!r}: render.{name} has no lm-eval "
                "multiple-choice equivalent; export without it"
            )


def _task_yaml(task: ExportedTask, group: str) -> str:
    dump = json.dumps
    fewshot = ", ".join(
        f"{k}: {dump(v)}" for k, v in {"sampler": "first_n", **task.fewshot}.items()
    )
    description = "description" if task.description is None else dump(task.description)
    return "\n".join(
        [
            f"# Exported by hf-icl from task {group!r}: demonstrations in hf-icl's order.",
            f"task: {task.name}",
            "custom_dataset: !function hf_icl_data.load",
            f"dataset_kwargs: {{data: {dump(task.name)}, splits: {dump(list(task.splits))}}}",
            "training_split: demos",
            "fewshot_split: demos",
            "test_split: queries",
            f"fewshot_config: {{{fewshot}}}",
            "output_type: multiple_choice",
            "doc_to_text: text",
            "doc_to_target: label",
            f"doc_to_choice: {'choices' if task.choices is None else dump(task.choices)}",
            f"target_delimiter: {dump(task.target_delimiter)}",
            f"fewshot_delimiter: {dump(task.fewshot_delimiter)}",
            *([f"description: {description}"] if task.description != "" else []),
            "metric_list:",
            *(
                f"  - {{metric: {m}, aggregation: mean, higher_is_better: true}}"
                for m in task.metrics
            ),
            "metadata: {version: 1.0}",
            "",
        ]
    )


def _rows(xs, ys, ids) -> list[dict]:
    return [{"text": x, "label": int(y), "id": int(i)} for x, y, i in zip(xs, ys, ids)]


def _text_task_exports(entry, config: ExportConfig) -> tuple[str, list[ExportedTask]]:
    """An hf-icl text classification task: one lm-eval task per demo seed."""
    definition, sampler = load_task(entry)
    render = parse_section(definition, RenderOptions, "render", definition.render)
    _refuse(definition, render)
    exports = []
    for seed in range(config.num_seeds):
        episode = sampler.episode(seed, config.shots, config.num_queries, split="test")
        words = list(episode.label_words or render.label_words or [])
        if len(words) < episode.num_classes:
            raise HfIclError(
                f"task {definition.name!r}: {episode.num_classes} classes but label words {words}"
            )
        splits = {
            "demos": _rows(
                episode.demo_x, episode.demo_y, episode.demo_ids or range(episode.num_demos)
            ),
            "queries": _rows(
                episode.query_x, episode.query_y, episode.query_ids or range(episode.num_queries)
            ),
        }
        name = f"{definition.name}_seed{seed}"
        exports.append(ExportedTask(name, splits, words, "", render.delimiter))
    return definition.name, exports


def _shared_rows(source, seed: int, shots: int) -> list[int]:
    """The one demo list every document's prompts show at every shot count up to ``shots``."""
    from hf_icl.lm_eval_tasks import demo_rows

    selection, docs = source.selection_for(seed), [d.doc for d in source.docs]
    longest = demo_rows(source.task, docs, shots, selection)[0]
    for k in range(1, shots + 1):
        if any(rows != longest[:k] for rows in demo_rows(source.task, docs, k, selection)):
            raise HfIclError(
                f"lm-eval task {source.task.name!r}: demonstrations differ between documents "
                f"or shot counts ({source.demos_note}); an export holds one demo list, read by "
                "lm-eval's first_n sampler: set demos.selection: first_n or fixed"
            )
    return longest


def _lm_eval_export(source, seed: int, shots: int) -> ExportedTask:
    """One lm-eval task at one demo seed: its documents and pool, formatted as lm-eval does."""
    lm, task = source.task.task, source.task
    if task.output_type != "multiple_choice":
        raise HfIclError(
            f"lm-eval task {task.name!r}: output_type {task.output_type!r} does not "
            "export; multiple_choice tasks do"
        )
    pool = [
        {"text": text, "choices": choices, "label": answer, "id": i}
        for i, (text, choices, answer) in enumerate(source.pool_examples)
    ]
    demos = [pool[r] for r in _shared_rows(source, seed, shots)]
    bad = next((d["id"] for d in demos if d["label"] < 0), None)
    if bad is not None:
        raise HfIclError(
            f"lm-eval task {task.name!r}: few-shot document {bad}'s answer is not one of "
            "its choices; an export names the answer by its index"
        )
    queries = [
        {"text": lm.doc_to_text(d.doc), "choices": d.choices, "label": d.gold, "id": d.doc_id}
        for d in source.docs
    ]
    descriptions = [lm.resolve_field(d.doc, lm.config.description) or "" for d in source.docs]
    description: str | None = descriptions[0]
    if len(set(descriptions)) > 1:
        description = None
        for row, text in zip(queries, descriptions):
            row["description"] = text
    fewshot = {
        key: getattr(lm.fewshot_cfg, key)
        for key in ("target_delimiter", "fewshot_delimiter")
        if getattr(lm.fewshot_cfg, key) != getattr(lm.config, key)
    }
    return ExportedTask(
        f"{task.name}_seed{seed}",
        {"queries": queries, "demos": demos, "pool": pool},
        source.label_set,
        task.target_delimiter,
        task.fewshot_delimiter,
        description,
        fewshot,
        tuple(m for m in LM_EVAL_METRICS if m in lm._metric_fn_list),
    )


def _lm_eval_exports(entry: dict, config: ExportConfig) -> tuple[str, list, list[ExportedTask]]:
    """Every leaf task of an lm-eval entry, at each demo seed its selection runs."""
    from hf_icl.lm_eval_entries import prepare_lm_eval_entry

    entry = dict(entry)
    demos = entry.pop("demos", None)
    where = Entry("", "task")
    options = None if demos is None else from_dict(DemoOptions, demos, "task", "demos")
    # what the entry reads of a run's config: every shot count up to the most
    settings = SimpleNamespace(
        num_queries=config.num_queries, shots=list(range(config.shots + 1)), seed=config.seed
    )
    sources = [s for _, s in prepare_lm_eval_entry(settings, entry, options, where)]
    exports, pairs = [], []
    for source in sources:
        for seed in range(source.num_seeds(config.num_seeds)):
            exports.append(_lm_eval_export(source, seed, config.shots))
            pairs.append((source, source.selection_for(seed)))
    groups = {s.task.group for s in sources}
    if len(sources) == 1:
        group = sources[0].task.name
    elif len(groups) == 1 and None not in groups:
        group = groups.pop()
    else:
        group = Path(entry["lm_eval"]).stem
    return group, pairs, exports


def _check_prompts(folder: Path, pairs: list, exports: list[ExportedTask], shots: int) -> None:
    """lm-eval reads the export back: every prompt and continuation must be the source's."""
    from hf_icl.lm_eval_tasks import (
        DemoSelection,
        fewshot_contexts,
        load_lm_eval_tasks,
        mc_continuations,
        mc_documents,
    )

    for (source, selection), export in zip(pairs, exports):
        [copy] = load_lm_eval_tasks(str(folder / f"{export.name}.yaml"))
        docs = mc_documents(copy)
        ours = [d.doc for d in source.docs]
        for k in (0, shots):
            theirs = fewshot_contexts(copy, [d.doc for d in docs], k, DemoSelection("first_n"))
            mine = fewshot_contexts(source.task, ours, k, selection)
            for a, b, x, y in zip(theirs, mine, docs, source.docs):
                if a != b or mc_continuations(copy, x) != mc_continuations(source.task, y):
                    raise HfIclError(
                        f"lm-eval task {source.task.name!r}: the exported task's prompt for "
                        f"document {y.doc_id} at {k} shots differs from the task's own; "
                        "its formatting (e.g. gen_prefix, fewshot_config's own doc_to_*) "
                        "does not export"
                    )


def _entry(ref: str, overrides: dict[str, Any]) -> Any:
    """The task reference as a config's task entry: a mapping written inline, an lm-eval task
    YAML (one without hf-icl's ``family:``), or an hf-icl task name or YAML."""
    if ref.lstrip().startswith("{"):
        try:
            entry = yaml.safe_load(ref)
        except yaml.YAMLError:
            entry = None
        if not isinstance(entry, dict):
            raise HfIclError(
                f"task {ref!r}: not a task entry; write e.g. "
                "'{lm_eval: NAME_OR_YAML, include_path: DIR}' or '{name: TASK, ...}'"
            )
        return {**entry, **overrides}
    path = Path(ref)
    if path.suffix in (".yaml", ".yml") and path.is_file():
        if not re.search(r"^family\s*:", path.read_text(encoding="utf-8"), re.MULTILINE):
            return {"lm_eval": ref, **overrides}
    return {"name": ref, **overrides} if overrides else ref


def _write(folder: Path, exports: list[ExportedTask], group: str) -> None:
    for task in exports:
        for split, rows in task.splits.items():
            (folder / f"{task.name}_{split}.jsonl").write_text(
                "".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8"
            )
        (folder / f"{task.name}.yaml").write_text(_task_yaml(task, group), encoding="utf-8")
    (folder / "hf_icl_data.py").write_text(LOADER, encoding="utf-8")
    (folder / f"{group}.yaml").write_text(
        f"group: {group}\ntask: {json.dumps([t.name for t in exports])}\n"
        "aggregate_metric_list:\n"
        "  - {metric: acc, aggregation: mean, weight_by_size: true}\n"
        "metadata: {version: 1.0}\n",
        encoding="utf-8",
    )


def export_lm_eval(ref: str, config: ExportConfig, out: Path) -> tuple[str, list[str]]:
    """Write ``ref`` as lm-eval tasks (and their group) into ``out``: (group, task names)."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise HfIclError(f"--out {str(out)!r} exists and is not an empty folder")
    entry = _entry(ref, config.task)
    pairs: list = []
    if isinstance(entry, dict) and "lm_eval" in entry:
        group, pairs, exports = _lm_eval_exports(entry, config)
    else:
        group, exports = _text_task_exports(entry, config)
    with tempfile.TemporaryDirectory(dir=out.parent if out.parent.is_dir() else None) as tmp:
        folder = Path(tmp)
        _write(folder, exports, group)
        if pairs:
            _check_prompts(folder, pairs, exports, config.shots)
        if out.exists():
            out.rmdir()
        shutil.copytree(folder, out)
    return group, [t.name for t in exports]


def cmd_export(args) -> None:
    """The CLI's `export lm-eval` command."""
    data: dict[str, Any] = {}
    apply_overrides(data, args.set)
    keys = {"num_seeds", "num_queries", "shots", "seed"}
    config = from_dict(
        ExportConfig,
        {
            **{k: v for k, v in data.items() if k in keys},
            "task": {k: v for k, v in data.items() if k not in keys},
        },
        source="--set",
    )
    group, names = export_lm_eval(args.task, config, Path(args.out))
    print(f"lm-eval tasks: {', '.join(names)} (group {group}) in {args.out}/")
    print(f"run: lm_eval run --include_path {args.out} --tasks {group} --num_fewshot K ...")
