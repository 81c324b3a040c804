"""Declarative task definitions (tasks/*.yaml) → task samplers.

A task file names a family, its parameters and how to render it::

    name: sentiment
    family: text_classification
    params: {train_file: data/sentiment/train.jsonl, template: "Review: {text}\\nSentiment:"}
    render: {renderer: text}

Eval configs refer to tasks by built-in name or YAML path, with overrides of ``params`` keys
(``{name: digits_projected, proj_dim: 4}``) or ``render`` keys (``render: {precision: 1}``).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hf_icl.config import from_dict, option, read_yaml
from hf_icl.errors import ConfigError, unknown_name
from hf_icl.resources import builtin_dir, builtin_names
from hf_icl.samplers import FAMILIES, TaskSampler


@dataclass
class TaskDef:
    name: str = option(help="task name used in results")
    family: str = option(help="task family: projected, gaussian_mixture, regression, text_classification")
    params: dict[str, Any] = option(default_factory=dict, help="family parameters")
    render: dict[str, Any] = option(default_factory=dict, help="renderer name and options")
    description: str = option("", help="one line shown in dataset cards and reports")
    citation: str = option("", help="BibTeX or reference for the task's source")
    source: str = option("", help="file the definition was read from")


def find_task_file(name_or_path: str) -> Path:
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise ConfigError(f"task file {name_or_path!r}: no such file")
        return path
    candidate = builtin_dir("tasks") / f"{name_or_path}.yaml"
    if not candidate.is_file():
        raise unknown_name("task", name_or_path, builtin_names("tasks"))
    return candidate


def load_task_def(ref: str | dict[str, Any], where: str = "tasks") -> TaskDef:
    """Read a task by name/path; a mapping ref ``{name: X, key: value, render: {...}}`` overrides."""
    overrides: dict[str, Any] = {}
    if isinstance(ref, dict):
        if "name" not in ref:
            raise ConfigError(f"{where}: a task entry needs 'name' (a built-in task or YAML path)")
        overrides = {k: v for k, v in ref.items() if k != "name"}
        ref = ref["name"]
    path = find_task_file(str(ref))
    data = read_yaml(path)
    data.setdefault("name", path.stem)
    data["source"] = str(path)
    task = from_dict(TaskDef, data, source=str(path))
    task.params = copy.deepcopy(task.params)
    task.render = {**task.render, **overrides.pop("render", {})}
    if "as" in overrides:
        task.name = overrides.pop("as")
    task.params.update(overrides)
    task.params["_base_dir"] = str(path.parent)
    return task


def build_sampler(task: TaskDef) -> TaskSampler:
    """Validate the family parameters and instantiate the sampler."""
    family = FAMILIES.get(task.family, where=f"{task.source}: family")
    params = {k: v for k, v in task.params.items() if k != "_base_dir"}
    if "_base_dir" in task.params and "base_dir" in family.Params.__dataclass_fields__:
        params.setdefault("base_dir", task.params["_base_dir"])
    parsed = from_dict(family.Params, params, source=task.source or task.name, prefix="params")
    return family(task.name, parsed)


def load_task(ref: str | dict[str, Any], where: str = "tasks") -> tuple[TaskDef, TaskSampler]:
    task = load_task_def(ref, where)
    return task, build_sampler(task)

