"""The job registry: each job is a module with ``Config`` (a dataclass), ``prepare`` (every check
that needs no output folder, returning what the run reuses), ``run`` and ``summary``.

Jobs are imported lazily so `hf-icl models` stays fast and a job's heavy dependencies load only
when it runs; each job's config class lives in a light ``<job>_config`` module, so a config error
is reported before torch is imported.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from hf_icl.registry import Registry

JOBS: Registry[tuple[str, str]] = Registry("job")  # name → (job module, config class path)
JOBS.register("evaluate")(("hf_icl.jobs.evaluate", "hf_icl.jobs.evaluate_config:EvaluateConfig"))
JOBS.register("compare")(("hf_icl.jobs.compare", "hf_icl.jobs.compare_config:CompareConfig"))
JOBS.register("train")(("hf_icl.jobs.train", "hf_icl.training.config:TrainConfig"))
JOBS.register("suite")(("hf_icl.jobs.suite", "hf_icl.jobs.suite_config:SuiteConfig"))


def job_module(name: str, where: str = "job") -> ModuleType:
    return importlib.import_module(JOBS.get(name, where=where)[0])


def job_config(name: str, where: str = "job") -> type:
    """The job's config class, imported without the job's own (heavy) module."""
    module, cls = JOBS.get(name, where=where)[1].split(":")
    return getattr(importlib.import_module(module), cls)
