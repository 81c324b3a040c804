"""The job registry: each job is a module with ``Config`` (a dataclass), ``prepare`` (every check
that needs no output folder, returning what the run reuses), ``run`` and ``summary``.

Jobs are imported lazily so `hf-icl models` stays fast and a job's heavy dependencies load only
when it runs; each job's config class lives in a light ``<job>_config`` module, so a config error
is reported before torch is imported.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from types import ModuleType

from hf_icl.registry import Registry

JOBS: Registry[tuple[str, str]] = Registry("job")  # name → (job module, config class path)
JOBS.register("evaluate")(("hf_icl.jobs.evaluate", "hf_icl.jobs.evaluate_config:EvaluateConfig"))
JOBS.register("compare")(("hf_icl.jobs.compare", "hf_icl.jobs.compare_config:CompareConfig"))
JOBS.register("train")(("hf_icl.jobs.train", "hf_icl.jobs.train_config:TrainConfig"))
JOBS.register("suite")(("hf_icl.jobs.suite", "hf_icl.jobs.suite_config:SuiteConfig"))


@dataclass
class Shard:
    """This process's share of a (possibly multi-process) run."""

    rank: int = 0
    world: int = 1
    barrier: Callable[[], None] = lambda: None

    @property
    def log(self) -> str:
        return "samples.jsonl" if self.world == 1 else f"samples.part-{self.rank}.jsonl"

    def mine(self, items: list) -> list:
        return items[self.rank::self.world]


@dataclass
class JobOptions:
    """Command-line options that are not part of the config (they do not change results)."""

    progress: bool = True
    shard: Shard = field(default_factory=Shard)
    push_to_hub: str | None = None
    private: bool = False


def job_module(name: str, where: str = "job") -> ModuleType:
    return importlib.import_module(JOBS.get(name, where=where)[0])


def job_config(name: str, where: str = "job") -> type:
    """The job's config class, imported without the job's own (heavy) module."""
    module, cls = JOBS.get(name, where=where)[1].split(":")
    return getattr(importlib.import_module(module), cls)
