"""`hf-icl export lm-eval TASK_OR_YAML --out DIR`: an hf-icl task as lm-evaluation-harness tasks.

Each demo seed becomes one lm-eval task over local data: its queries (the test split) and its
demonstrations in prompt order (the few-shot split, read by lm-eval's `first_n` sampler), with
the task's label words as the choices, the empty target delimiter (hf-icl's label words carry
their own leading space) and hf-icl's delimiter between demonstrations. A group named after the
task holds the seeds. `lm_eval --include_path DIR --tasks NAME --num_fewshot K` then scores the
same prompts hf-icl's evaluate scores at K shots. The data is read by a small loader next to the
YAMLs, so the folder can be moved.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hf_icl.config import apply_overrides, from_dict, option
from hf_icl.errors import HfIclError
from hf_icl.render.options import RenderOptions
from hf_icl.tasks import load_task, parse_section

LOADER = '''"""Reads the exported JSONL files next to this file (written by hf-icl export)."""

from pathlib import Path

import datasets


def load(data: str, **_) -> datasets.DatasetDict:
    folder = Path(__file__).parent
    return datasets.DatasetDict({split: datasets.Dataset.from_json(str(folder / f"{data}_{split}.jsonl"))
                                 for split in ("demos", "queries")})
'''


@dataclass
class ExportConfig:
    num_seeds: int = option(1, help="demo seeds exported, one lm-eval task each")
    num_queries: int = option(100, help="queries per seed (the lm-eval test split)")
    shots: int = option(16, help="demonstrations per seed, in prompt order (the most shots)")
    task: dict[str, Any] = option(default_factory=dict, help="task parameter overrides")

    def __post_init__(self) -> None:
        for name in ("num_seeds", "num_queries", "shots"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be ≥ 1, got {getattr(self, name)}")


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


def _task_yaml(name: str, data: str, words: list[str], delimiter: str, group: str) -> str:
    dump = json.dumps
    return "\n".join(
        [
            f"# Exported by hf-icl from task {group!r}: demonstrations in hf-icl's order.",
            f"task: {name}",
            "custom_dataset: !function hf_icl_data.load",
            f"dataset_kwargs: {{data: {dump(data)}}}",
            "training_split: demos",
            "fewshot_split: demos",
            "test_split: queries",
            "fewshot_config: {sampler: first_n}",
            "output_type: multiple_choice",
            "doc_to_text: text",
            "doc_to_target: label",
            f"doc_to_choice: {dump(words)}",
            'target_delimiter: ""',
            f"fewshot_delimiter: {dump(delimiter)}",
            "metric_list:",
            "  - {metric: acc, aggregation: mean, higher_is_better: true}",
            "metadata: {version: 1.0}",
            "",
        ]
    )


def _jsonl(path: Path, xs, ys, ids) -> None:
    path.write_text(
        "".join(
            json.dumps({"text": x, "label": int(y), "id": int(i)}) + "\n"
            for x, y, i in zip(xs, ys, ids)
        ),
        encoding="utf-8",
    )


def export_lm_eval(ref: str, config: ExportConfig, out: Path) -> list[str]:
    """Write the lm-eval tasks of ``ref`` (one per seed, and their group) into ``out``."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise HfIclError(f"--out {str(out)!r} exists and is not an empty folder")
    entry = {"name": ref, **config.task} if config.task else ref
    definition, sampler = load_task(entry)
    render = parse_section(definition, RenderOptions, "render", definition.render)
    _refuse(definition, render)
    group = definition.name
    names = []
    with tempfile.TemporaryDirectory(dir=out.parent if out.parent.is_dir() else None) as tmp:
        folder = Path(tmp)
        for seed in range(config.num_seeds):
            episode = sampler.episode(seed, config.shots, config.num_queries, split="test")
            words = list(episode.label_words or render.label_words or [])
            if len(words) < episode.num_classes:
                raise HfIclError(
                    f"task {group!r}: {episode.num_classes} classes but label words {words}"
                )
            name = f"{group}_seed{seed}"
            _jsonl(
                folder / f"{name}_demos.jsonl",
                episode.demo_x,
                episode.demo_y,
                episode.demo_ids or range(episode.num_demos),
            )
            _jsonl(
                folder / f"{name}_queries.jsonl",
                episode.query_x,
                episode.query_y,
                episode.query_ids or range(episode.num_queries),
            )
            (folder / f"{name}.yaml").write_text(
                _task_yaml(name, name, words, render.delimiter, group), encoding="utf-8"
            )
            names.append(name)
        (folder / "hf_icl_data.py").write_text(LOADER, encoding="utf-8")
        (folder / f"{group}.yaml").write_text(
            f"group: {group}\ntask: {json.dumps(names)}\naggregate_metric_list:\n"
            "  - {metric: acc, aggregation: mean, weight_by_size: true}\n"
            "metadata: {version: 1.0}\n",
            encoding="utf-8",
        )
        if out.exists():
            out.rmdir()
        shutil.copytree(folder, out)
    return names


def cmd_export(args) -> None:
    """The CLI's `export lm-eval` command."""
    data: dict[str, Any] = {}
    apply_overrides(data, args.set)
    keys = {"num_seeds", "num_queries", "shots"}
    config = from_dict(
        ExportConfig,
        {
            **{k: v for k, v in data.items() if k in keys},
            "task": {k: v for k, v in data.items() if k not in keys},
        },
        source="--set",
    )
    names = export_lm_eval(args.task, config, Path(args.out))
    group = names[0].rsplit("_seed", 1)[0]
    print(f"lm-eval tasks: {', '.join(names)} (group {group}) in {args.out}/")
    print(f"run: lm_eval run --include_path {args.out} --tasks {group} --num_fewshot K ...")
