"""The suite job's config: several evaluate / compare / train runs that answer one question."""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from typing import Any, Literal

from hf_icl.config import from_dict, option, set_path
from hf_icl.errors import ConfigError

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.=,^+-]*$")


@dataclass
class SuiteRun:
    name: str = option(help="the run's label and sub-folder (letters, digits, _ . = , ^ + -)")
    config: dict[str, Any] = option(
        default_factory=dict,
        help="a job config (job: evaluate, compare or train) merged over the suite's base",
    )
    set: dict[str, Any] = option(
        default_factory=dict, help="dotted overrides applied last, e.g. {train.steps: 500}"
    )


@dataclass
class SuiteConfig:
    job: Literal["suite"] = option("suite", help="which job this config runs")
    title: str = option("", help="report title")
    description: str = option("", help="a paragraph for the report: the question and the setting")
    base: dict[str, Any] = option(
        default_factory=dict,
        help="config shared by the runs of its job (each run's config overrides it)",
    )
    runs: list[SuiteRun] = option(default_factory=list, help="the runs, in order")

    def __post_init__(self) -> None:
        if not self.runs:
            raise ValueError("runs: list at least one run, e.g. [{name: a, set: {...}}]")
        names = [r.name for r in self.runs]
        bad = [n for n in names if not _NAME.match(n)]
        if bad:
            raise ValueError(
                f"runs: name {bad[0]!r} is not a folder name; allowed: letters, "
                "digits, _ . = , ^ + - (not first)"
            )
        if len(set(names)) != len(names):
            raise ValueError(f"runs: duplicate run name in {names}")
        for i in range(len(self.runs)):
            self.run_config(i)  # fail before anything runs

    def run_data(self, i: int) -> dict[str, Any]:
        """Run i's job config as a plain mapping: base (if the jobs match), its config, its set."""
        run = self.runs[i]
        base_job = self.base.get("job", "evaluate")
        same_job = run.config.get("job", base_job) == base_job
        data = (
            deep_merge(copy.deepcopy(self.base), run.config)
            if same_job
            else copy.deepcopy(run.config)
        )
        for path, value in run.set.items():
            set_path(data, path, copy.deepcopy(value), source=f"runs.{i}.set")
        job = data.setdefault("job", "evaluate")
        if job == "suite":
            raise ConfigError(f"runs.{i}: a suite cannot contain a suite")
        return data

    def run_config(self, i: int):
        """Run i's job name and its validated config."""
        from hf_icl.jobs.registry import job_config

        data = self.run_data(i)
        cls = job_config(data["job"], where=f"runs.{i}.config.job")
        return data["job"], from_dict(cls, data, source=f"runs.{i} ({self.runs[i].name})")


def deep_merge(base: dict, update: dict) -> dict:
    """``update`` over ``base``; mappings merge, everything else (lists included) replaces."""
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def check_runs(config: SuiteConfig, source: str = "config") -> None:
    """Every run's cheap checks, before any job module is imported; errors name the run."""
    from hf_icl.jobs.registry import check_config

    for i, spec in enumerate(config.runs):
        job, run_config = config.run_config(i)
        check_config(job, run_config, f"{source}: runs.{i} ({spec.name})")
