"""`hf-icl suite`: several runs that answer one question (a sweep, an ablation, a reproduction).

Each run is an ordinary evaluate / compare / train run in its own sub-folder, so it resumes on
its own; the suite then writes one report that holds every run's report and one figure that
overlays the train runs (loss, unseen-task metric over training, final learning curves).
"""

from __future__ import annotations

import math
import re

from hf_icl.config import to_dict
from hf_icl.jobs.registry import job_module
from hf_icl.jobs.runner import claimed
from hf_icl.jobs.suite_config import SuiteConfig
from hf_icl.report import library_versions, panel_grid, png_bytes
from hf_icl.results import RunFolder, atomic_write
from hf_icl.runtime import JobOptions

Config = SuiteConfig


def prepare(config: SuiteConfig, source: str = "config",
            options: JobOptions | None = None) -> list:
    """Every run's checks, before the suite writes anything; errors name the run."""
    plans = []
    for i, spec in enumerate(config.runs):
        job, run_config = config.run_config(i)
        plans.append(job_module(job).prepare(run_config, f"{source}: runs.{i} ({spec.name})",
                                             options))
    return plans


def run(config: SuiteConfig, folder: RunFolder, options: JobOptions,
        plans: list | None = None) -> dict | None:
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
    summary = {"job": "suite", "config": to_dict(config), "versions": library_versions(),
               "runs": [{"name": spec.name, "job": result["job"], "results": result}
                        for spec, result in zip(config.runs, results)]}
    write_reports(config, folder, summary)
    return summary


def summary(results: dict) -> str:
    parts = []
    for item in results["runs"]:
        parts += [f"== {item['name']} ({item['job']})", job_module(item["job"]).summary(item["results"])]
    return "\n".join(parts)


def _embedded(name: str, report: str) -> str:
    """A run's report inside the suite's: headings two levels down, links into its folder."""
    report = re.sub(r"^(#+) ", lambda m: "##" + m.group(1) + " ", report, flags=re.M)
    return re.sub(r"\]\((?!https?:)([^)]+)\)", lambda m: f"]({name}/{m.group(1)})", report)


def write_reports(config: SuiteConfig, folder: RunFolder, results: dict) -> None:
    folder.write_json("results.json", results)
    lines = [f"# {config.title or 'hf-icl suite'}", ""]
    if config.description:
        lines += [config.description.strip(), ""]
    lines += ["| run | job | final training loss | loss 5% below ln C (left the plateau) at step "
              "| folder |", "|---|---|---|---|---|"]
    metrics = {r["name"]: RunFolder(folder.path / r["name"]).read_jsonl("metrics.jsonl")
               for r in results["runs"] if r["job"] == "train"}
    for i, r in enumerate(results["runs"]):
        loss, step = "—", "—"
        if r["job"] == "train":
            rows = metrics[r["name"]]
            loss = f"{r['results']['final_loss']:.4f}"
            classes = num_classes(config.run_config(i)[1])
            if classes:
                found = plateau_end(rows, math.log(classes))
                step = "not reached" if found is None else str(found)
        lines.append(f"| {r['name']} | {r['job']} | {loss} | {step} | "
                     f"[{r['name']}/]({r['name']}/report.md) |")
    trained = [r for r in results["runs"] if r["job"] == "train"]
    if trained:
        lines += ["", "![train runs overlaid](suite.png)"]
        atomic_write(folder.file("suite.png"), plot_train_runs(trained, metrics))
    for r in results["runs"]:
        report = (folder.path / r["name"] / "report.md").read_text(encoding="utf-8")
        lines += ["", f"## Run `{r['name']}`", "", _embedded(r["name"], report)]
    folder.write_text("report.md", "\n".join(lines) + "\n")


def num_classes(train_config) -> int | None:
    """Classes of the first training task; None for regression or differing counts."""
    from hf_icl.tasks import load_task

    counts = {load_task(ref)[1].episode(0, 1, 0, "train").num_classes for ref in train_config.tasks}
    return counts.pop() if len(counts) == 1 and None not in counts else None


def plateau_end(rows: list[dict], level: float, drop: float = 0.05) -> int | None:
    """First logged step whose training loss is ``drop`` below ``level``.

    With ``level`` = ln C (the loss of guessing from the label frequencies, where GPICL's loss
    plateau sits), this is the step at which a run leaves the plateau, or starts to beat it.
    """
    return next((r["step"] for r in rows
                 if r["kind"] == "train" and r["loss"] <= (1 - drop) * level), None)


BASELINE_STYLES = [":", "--", "-.", (0, (1, 3)), (0, (5, 1))]


def plot_train_runs(runs: list[dict], metrics: dict[str, list[dict]]) -> bytes:
    """Loss and unseen-task metric over training per run; final learning curves per task."""
    keys = list(dict.fromkeys((s["task"], s["split"]) for r in runs
                              for s in r["results"]["summary"]))
    fig, axes = panel_grid(2 + len(keys))
    for r in runs:
        rows = metrics[r["name"]]
        train = [x for x in rows if x["kind"] == "train"]
        line, = axes[0].plot([x["step"] for x in train], [x["loss"] for x in train], label=r["name"])
        for key in keys:
            evals = [x for x in rows if x["kind"] == "eval" and (x["task"], x["split"]) == key]
            if evals and key[1] == "unseen":
                axes[1].plot([x["step"] for x in evals], [x["mean"] for x in evals], marker="o",
                             ms=3, color=line.get_color(), label=f"{r['name']} · {key[0]}")
        for ax, key in zip(axes[2:], keys):
            for s in r["results"]["summary"]:
                if (s["task"], s["split"]) == key:
                    ax.plot(s["after"]["curve"], color=line.get_color(), label=r["name"])
                    ax.set_ylabel(s["metric"])
            for j, b in enumerate(r["results"]["baselines"]):
                if b["task"] == key[0] and key[1] == "unseen" and r is runs[0]:
                    ax.plot(b["curve"], linestyle=BASELINE_STYLES[j % len(BASELINE_STYLES)],
                            color=str(0.2 + 0.5 * (j % 3) / 2), label=b["baseline"])
    axes[0].set(title="training loss", xlabel="step")
    axes[1].set(title="unseen tasks during training", xlabel="step", ylabel="mean over positions")
    for ax, (task, split) in zip(axes[2:], keys):
        ax.set(title=f"after training: {task} ({split})", xlabel="examples before the query")
    for ax in axes:
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=6)
    fig.tight_layout()
    return png_bytes(fig, 110)
