"""The job registry: each job is a module with ``Config`` (a dataclass), ``run`` and ``summary``.

Jobs are imported lazily so `hf-icl models` stays fast and a job's heavy dependencies load only
when it runs.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from types import ModuleType

from hf_icl.registry import Registry

JOBS: Registry[str] = Registry("job")
JOBS.register("evaluate")("hf_icl.jobs.evaluate")
JOBS.register("compare")("hf_icl.jobs.compare")
JOBS.register("train")("hf_icl.jobs.train")
JOBS.register("suite")("hf_icl.jobs.suite")


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
    return importlib.import_module(JOBS.get(name, where=where))
