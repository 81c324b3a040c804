"""The suite's report: a table of its runs (final loss, the step a train run left the ln C
plateau), one figure overlaying the train runs (loss, unseen-task metric over training, final
learning curves), then every run's own report with its links pointing into the run's folder."""

from __future__ import annotations

import math
import re

from hf_icl.jobs.suite_config import SuiteConfig
from hf_icl.plots import panel_grid, png_bytes
from hf_icl.results import Reports, RunFolder


def _embedded(name: str, report: str) -> str:
    """A run's report inside the suite's: headings two levels down, links into its folder."""
    report = re.sub(r"^(#+) ", lambda m: "##" + m.group(1) + " ", report, flags=re.M)
    return re.sub(r"\]\((?!https?:)([^)]+)\)", lambda m: f"]({name}/{m.group(1)})", report)


def reports(config: SuiteConfig, folder: RunFolder, results: dict) -> Reports:
    """A table of the runs, the train runs overlaid in one figure, then every run's report."""
    figures = {}
    lines = [f"# {config.title or 'hf-icl suite'}", ""]
    if config.description:
        lines += [config.description.strip(), ""]
    metrics = {
        r["name"]: RunFolder(folder.path / r["name"]).read_jsonl("metrics.jsonl")
        for r in results["runs"]
        if r["job"] == "train"
    }
    # Training columns only where some run trains: an evaluation suite gets a plain index.
    head = ["run", "job"]
    if metrics:
        head += ["final training loss", "loss 5% below ln C (left the plateau) at step"]
    lines += ["| " + " | ".join([*head, "folder"]) + " |", "|---" * (len(head) + 1) + "|"]
    for i, r in enumerate(results["runs"]):
        cells = [r["name"], r["job"]]
        if metrics:
            loss, step = "—", "—"
            if r["job"] == "train":
                loss = f"{r['results']['final_loss']:.4f}"
                classes = num_classes(config.run_config(i)[1])
                if classes:
                    found = plateau_end(metrics[r["name"]], math.log(classes))
                    step = "not reached" if found is None else str(found)
            cells += [loss, step]
        cells.append(f"[{r['name']}/]({r['name']}/report.md)")
        lines.append("| " + " | ".join(cells) + " |")
    trained = [r for r in results["runs"] if r["job"] == "train"]
    if trained:
        lines += ["", "![train runs overlaid](suite.png)"]
        figures["suite.png"] = plot_train_runs(trained, metrics)
    for r in results["runs"]:
        report = (folder.path / r["name"] / "report.md").read_text(encoding="utf-8")
        lines += ["", f"## Run `{r['name']}`", "", _embedded(r["name"], report)]
    return Reports(results, "\n".join(lines) + "\n", figures)


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
    return next(
        (r["step"] for r in rows if r["kind"] == "train" and r["loss"] <= (1 - drop) * level), None
    )


BASELINE_STYLES = [":", "--", "-.", (0, (1, 3)), (0, (5, 1))]


SEED = re.compile(r",?\bseed=\d+")


def seed_groups(runs: list[dict]) -> dict[str, list[dict]]:
    """Runs whose names differ only in a ``seed=N`` part form one group (in order)."""
    groups: dict[str, list[dict]] = {}
    for r in runs:
        groups.setdefault(SEED.sub("", r["name"]).strip(",") or r["name"], []).append(r)
    return groups


def _band(ax, x, ys: list[list[float]], color=None, label: str = "", **style):
    """The mean of ``ys`` as a line with a ± 1 std band when there are several; its colour."""
    import numpy as np

    width = min(len(y) for y in ys)
    values = np.array([y[:width] for y in ys], dtype=float)
    mean = values.mean(0)
    (line,) = ax.plot(x[:width], mean, color=color, label=label, **style)
    if len(ys) > 1:
        ax.fill_between(
            x[:width],
            mean - values.std(0),
            mean + values.std(0),
            color=line.get_color(),
            alpha=0.2,
            linewidth=0,
        )
    return line.get_color()


def plot_train_runs(runs: list[dict], metrics: dict[str, list[dict]]) -> bytes:
    """Loss and unseen-task metric over training per run; final learning curves per task. Runs
    that differ only in their seed are drawn as one mean line with a ± 1 std band."""
    keys = list(
        dict.fromkeys((s["task"], s["split"]) for r in runs for s in r["results"]["summary"])
    )
    fig, axes = panel_grid(2 + len(keys))
    for name, group in seed_groups(runs).items():
        label = name + (f" ({len(group)} seeds)" if len(group) > 1 else "")
        train = [[x for x in metrics[r["name"]] if x["kind"] == "train"] for r in group]
        color = _band(
            axes[0],
            [x["step"] for x in train[0]],
            [[x["loss"] for x in t] for t in train],
            label=label,
        )
        for key in keys:
            evals = [
                [
                    x
                    for x in metrics[r["name"]]
                    if x["kind"] == "eval" and (x["task"], x["split"]) == key
                ]
                for r in group
            ]
            if evals[0] and key[1] == "unseen":
                _band(
                    axes[1],
                    [x["step"] for x in evals[0]],
                    [[x["mean"] for x in e] for e in evals],
                    color=color,
                    label=f"{label} · {key[0]}",
                    marker="o",
                    ms=3,
                )
        for ax, key in zip(axes[2:], keys):
            found = [
                s for r in group for s in r["results"]["summary"] if (s["task"], s["split"]) == key
            ]
            if found:
                curves = [s["after"]["curve"] for s in found]
                _band(ax, list(range(len(curves[0]))), curves, color=color, label=label)
                ax.set_ylabel(found[0]["metric"])
                if found[0]["metric"] == "nse" and max(map(max, curves)) > 100:
                    ax.set_yscale("log")  # a diverging learner (e.g. GD run past its step size)
            for j, b in enumerate(group[0]["results"]["baselines"]):
                if b["task"] == key[0] and key[1] == "unseen" and group[0] is runs[0]:
                    ax.plot(
                        b["curve"],
                        linestyle=BASELINE_STYLES[j % len(BASELINE_STYLES)],
                        color=str(0.2 + 0.5 * (j % 3) / 2),
                        label=b["baseline"],
                    )
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
