"""The job registry: each job is a module with ``Config`` (a dataclass), ``prepare`` (every check
that needs no output folder, returning what the run reuses), ``run`` and ``summary``.

Jobs are imported lazily so `hf-icl models` stays fast and a job's heavy dependencies load only
when it runs; each job's config class lives in a light ``<job>_config`` module and its cheap checks in
a light function, so a config error is reported before torch is imported.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from hf_icl.registry import Registry


@dataclass(frozen=True)
class JobEntry:
    """Where a job lives: its module, its config class and (optionally) its cheap checks, as
    "module:name" paths imported only when needed."""

    module: str
    config: str
    check: str | None = None  # a light function (config, source) run before the module loads


JOBS: Registry[JobEntry] = Registry("job")
JOBS.register("evaluate")(
    JobEntry(
        "hf_icl.jobs.evaluate",
        "hf_icl.jobs.evaluate_config:EvaluateConfig",
        "hf_icl.jobs.checks:check_evaluation",
    )
)
JOBS.register("compare")(
    JobEntry(
        "hf_icl.jobs.compare",
        "hf_icl.jobs.compare_config:CompareConfig",
        "hf_icl.jobs.checks:check_evaluation",
    )
)
JOBS.register("train")(JobEntry("hf_icl.jobs.train", "hf_icl.training.config:TrainConfig"))
JOBS.register("suite")(
    JobEntry(
        "hf_icl.jobs.suite",
        "hf_icl.jobs.suite_config:SuiteConfig",
        "hf_icl.jobs.suite_config:check_runs",
    )
)


def _load(path: str) -> Any:
    module, name = path.split(":")
    return getattr(importlib.import_module(module), name)


def job_module(name: str, where: str = "job") -> ModuleType:
    return importlib.import_module(JOBS.get(name, where=where).module)


def job_config(name: str, where: str = "job") -> type:
    """The job's config class, imported without the job's own (heavy) module."""
    return _load(JOBS.get(name, where=where).config)


def check_config(name: str, config: Any, source: str) -> None:
    """The job's cheap checks (if it has any), without importing the job's module."""
    entry = JOBS.get(name)
    if entry.check is not None:
        _load(entry.check)(config, source)
