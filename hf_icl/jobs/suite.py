"""`hf-icl suite`: several runs that answer one question (a sweep, an ablation, a reproduction).

Each run is an ordinary evaluate / compare / train run in its own sub-folder, so it resumes on
its own; the suite then writes one report that holds every run's report (jobs/suite_report.py).
"""

from __future__ import annotations

from hf_icl.config import to_dict
from hf_icl.jobs.registry import job_module
from hf_icl.jobs.runner import claimed
from hf_icl.jobs.suite_config import SuiteConfig
from hf_icl.jobs.suite_report import reports
from hf_icl.plots import library_versions
from hf_icl.results import RunFolder, write_reports
from hf_icl.runtime import JobOptions

Config = SuiteConfig


def prepare(config: SuiteConfig, source: str = "config", options: JobOptions | None = None) -> list:
    """Every run's checks, before the suite writes anything; errors name the run."""
    plans = []
    for i, spec in enumerate(config.runs):
        job, run_config = config.run_config(i)
        plans.append(
            job_module(job).prepare(run_config, f"{source}: runs.{i} ({spec.name})", options)
        )
    return plans


def run(
    config: SuiteConfig, folder: RunFolder, options: JobOptions, plans: list | None = None
) -> dict | None:
    plans = plans or prepare(config, options=options)
    results = []
    for i, (spec, plan) in enumerate(zip(config.runs, plans)):
        job, run_config = config.run_config(i)
        sub = RunFolder(folder.file(spec.name))
        if options.shard.rank == 0:
            print(f"\n== suite run {i + 1}/{len(config.runs)}: {spec.name} ({job}) ==")
        with claimed(sub, job, to_dict(run_config), False, options.shard):
            results.append(job_module(job).run(run_config, sub, options, plan))
    if options.shard.rank != 0:
        return None
    summary = {
        "job": "suite",
        "config": to_dict(config),
        "versions": library_versions(),
        "runs": [
            {"name": spec.name, "job": result["job"], "results": result}
            for spec, result in zip(config.runs, results)
        ],
    }
    write_reports(folder, reports(config, folder, summary))
    return summary


def summary(results: dict) -> str:
    parts = []
    for item in results["runs"]:
        parts += [
            f"== {item['name']} ({item['job']})",
            job_module(item["job"]).summary(item["results"]),
        ]
    return "\n".join(parts)
