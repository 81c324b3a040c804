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
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from hf_icl.config import from_dict, option, read_yaml
from hf_icl.errors import ConfigError, HfIclError, unknown_name
from hf_icl.resources import builtin_dir, builtin_names
from hf_icl.samplers import FAMILIES, TaskSampler

T = TypeVar("T")


@dataclass
class TaskDef:
    name: str = option(help="task name used in results")
    family: str = option(
        help="task family: projected, gaussian_mixture, regression, text_classification"
    )
    params: dict[str, Any] = option(default_factory=dict, help="family parameters")
    render: dict[str, Any] = option(default_factory=dict, help="renderer name and options")
    description: str = option("", help="one line shown in dataset cards and reports")
    citation: str = option("", help="BibTeX or reference for the task's source")
    source: str = option("", help="file the definition was read from")
    # Set by the loader: the file's own sections and the keys a config entry overrode, so an
    # error names the file or the entry, whichever wrote the bad value.
    file_sections: dict[str, dict[str, Any]] = field(default_factory=dict, init=False, repr=False)
    overridden: dict[str, set[str]] = field(default_factory=dict, init=False, repr=False)


@dataclass(frozen=True)
class Entry:
    """Where a task reference was written: a config file and its key (``tasks.1``)."""

    source: str
    key: str

    def __str__(self) -> str:
        return f"{self.source}: {self.key}" if self.source else self.key


@contextmanager
def located(where: Entry | str) -> Iterator[None]:
    """Prefix an error with the entry it concerns, unless it already names the config file."""
    try:
        yield
    except HfIclError as err:
        text = str(err)
        source = where.source if isinstance(where, Entry) else str(where)
        if source and text.startswith(source):
            raise
        raise HfIclError(f"{where}: {text}") from None


def find_task_file(name_or_path: str, where: Entry | str = "") -> Path:
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise ConfigError(
                f"{where}: task file {name_or_path!r}: no such file"
                if str(where)
                else f"task file {name_or_path!r}: no such file"
            )
        return path
    candidate = builtin_dir("tasks") / f"{name_or_path}.yaml"
    if not candidate.is_file():
        raise unknown_name("task", name_or_path, builtin_names("tasks"), where=str(where))
    return candidate


def load_task_def(ref: str | dict[str, Any], where: Entry | str = "tasks") -> TaskDef:
    """Read a task by name/path; a mapping ref ``{name: X, key: value, render: {...}}`` overrides."""
    overrides: dict[str, Any] = {}
    if isinstance(ref, dict):
        if "name" not in ref:
            raise ConfigError(f"{where}: a task entry needs 'name' (a built-in task or YAML path)")
        overrides = {k: v for k, v in ref.items() if k != "name"}
        ref = ref["name"]
    if not isinstance(ref, str):
        raise ConfigError(f"{where}: expected a task name, YAML path or mapping, got {ref!r}")
    path = find_task_file(ref, where)
    data = read_yaml(path)
    data.setdefault("name", path.stem)
    data["source"] = str(path)
    task = from_dict(TaskDef, data, source=str(path))
    task.file_sections = {"params": copy.deepcopy(task.params), "render": dict(task.render)}
    render = overrides.pop("render", {})
    if not isinstance(render, dict):
        raise ConfigError(f"{where}.render: expected a mapping, got {render!r}")
    task.params = copy.deepcopy(task.params)
    task.render = {**task.render, **render}
    if "as" in overrides:
        task.name = overrides.pop("as")
    task.params.update(overrides)
    task.overridden = {"params": set(overrides), "render": set(render)}
    task.params["_base_dir"] = str(path.parent)
    return task


def parse_section(
    task: TaskDef, cls: type[T], section: str, values: dict[str, Any], where: Entry | None = None
) -> T:
    """Validate a task's ``params`` or ``render`` section into ``cls``.

    An error names the config entry when the entry overrode a value of that section and the
    task file's own values pass; otherwise it names the task file.
    """
    source = task.source or task.name
    if where is None or not task.overridden.get(section):
        return from_dict(cls, values, source=source, prefix=section)
    prefix = where.key if section == "params" else f"{where.key}.{section}"  # params sit flat
    try:
        return from_dict(cls, values, source=where.source, prefix=prefix)
    except ConfigError as err:
        own = {k: v for k, v in values.items() if k not in task.overridden[section]}
        own.update(
            {
                k: v
                for k, v in task.file_sections.get(section, {}).items()
                if k in task.overridden[section]
            }
        )
        try:
            from_dict(cls, own, source=source, prefix=section)
        except ConfigError as file_err:
            if "missing required key" not in str(file_err):
                raise file_err from None
        raise err from None


def build_sampler(task: TaskDef, where: Entry | None = None) -> TaskSampler:
    """Validate the family parameters and instantiate the sampler."""
    family = FAMILIES.get(task.family, where=f"{task.source}: family")
    params = {k: v for k, v in task.params.items() if k != "_base_dir"}
    if "_base_dir" in task.params and "base_dir" in family.Params.__dataclass_fields__:
        params.setdefault("base_dir", task.params["_base_dir"])
    parsed = parse_section(task, family.Params, "params", params, where)
    with located(where or ""):
        return family(task.name, parsed)


def load_task(
    ref: str | dict[str, Any], where: Entry | str = "tasks"
) -> tuple[TaskDef, TaskSampler]:
    task = load_task_def(ref, where)
    return task, build_sampler(task, where if isinstance(where, Entry) else None)
