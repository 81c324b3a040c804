"""Shared job plumbing: validate the config, prepare and lock the results folder, run, summarise."""

from __future__ import annotations

from pathlib import Path

from hf_icl.config import from_dict, to_dict
from hf_icl.results import RunFolder, default_out


def _summary_table(results: dict) -> str:
    lines = []
    rows = [s for s in results["summary"] if s["metric"] in ("accuracy", "nse")]
    for (model, task, metric) in dict.fromkeys((s["model"], s["task"], s["metric"]) for s in rows):
        items = sorted((s for s in rows if (s["model"], s["task"], s["metric"]) == (model, task, metric)),
                       key=lambda s: s["shots"])
        curve = "  ".join(f"{s['shots']}:{s['mean']:.3f}" for s in items)
        lines.append(f"{model:<22} {task:<22} {metric:<9} {curve}")
    return "\n".join(lines)


def run_job(job: str, data: dict, path: Path, *, out: str | None, overwrite: bool,
            progress: bool = True) -> dict:
    from hf_icl.jobs.evaluate import evaluate
    from hf_icl.jobs.evaluate_config import EvaluateConfig

    config = from_dict(EvaluateConfig, data, source=str(path))
    resolved = to_dict(config)
    folder = RunFolder(out or default_out(path, resolved))
    folder.prepare(resolved, overwrite)
    with folder.lock():
        results = evaluate(config, folder, progress=progress)
    print(_summary_table(results))
    print(f"\nresults: {folder.path}/ (results.json, samples.jsonl, report.md, curve.png)")
    return results
