"""Final outputs of an evaluation: results.json, report.md and curve.png."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np

from hf_icl import metrics as M
from hf_icl.config import to_dict
from hf_icl.metrics.intervals import Interval, cell_interval
from hf_icl.plots import colours, library_versions, panel_grid, png_bytes, pyplot
from hf_icl.results import Reports


def metric_names(config, is_regression: bool, is_text: bool = False) -> list[str]:
    if config.metrics:
        return list(config.metrics)
    if is_text:
        return ["exact_match"]
    return M.REGRESSION_METRICS if is_regression else M.CLASSIFICATION_METRICS


# lm-eval multiple-choice rows carry lm-eval's two predictions: acc (summed log-likelihood)
# is hf-icl's accuracy; acc_norm is the accuracy of the length-normalised prediction.
LM_EVAL_METRICS = {
    "accuracy": ("accuracy", "pred"),
    "acc_norm": ("accuracy", "pred_norm"),
    "acc_mutual_info": ("accuracy", "pred_mutual_info"),
}


def _metric_field(name: str, rows: list[dict]) -> tuple[str, str]:
    return LM_EVAL_METRICS[name] if "pred_norm" in rows[0] else (name, "pred")


def _seed_values(name: str, rows: list[dict]) -> list[float]:
    metric, field = _metric_field(name, rows)
    by_seed: dict[tuple, list[dict]] = defaultdict(list)
    for r in rows:
        by_seed[(r["seed"], r["order"])].append(r)
    return [
        M.compute(metric, [r[field] for r in rs], [r["gold"] for r in rs], **_kwargs(name, rs))
        for _, rs in sorted(by_seed.items())
    ]


def _seed_groups(rows: list[dict]) -> list[int]:
    """Each sample's demo set (seed × order) as an integer."""
    ids: dict[tuple, int] = {}
    return [ids.setdefault((r["seed"], r["order"]), len(ids)) for r in rows]


def _kwargs(name: str, rows: list[dict]) -> dict[str, Any]:
    return {"scale": rows[0].get("scale", 1.0)} if name == "nse" else {}


def _interval_fields(interval: Interval) -> dict[str, Any]:
    share = interval.demo_share
    return {
        "ci_low": interval.low,
        "ci_high": interval.high,
        "interval": interval.covers,
        "between_var": interval.between_var,
        "within_var": interval.within_var,
        "demo_set_share": None if share is None else float(share),
    }


def aggregate(config, rows: list[dict]) -> list[dict]:
    """Per model × task × shots × metric: mean and std across demo sets, and an interval that
    covers both demo-set and query sampling (hf_icl.metrics.intervals)."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in rows:
        groups[(r["model"], r["task"], r["shots"])].append(r)
    out = []
    for (model, task, shots), rs in groups.items():
        regression = isinstance(rs[0]["gold"], float)
        names = (
            [m for m, (_, f) in LM_EVAL_METRICS.items() if f in rs[0]]
            if "pred_norm" in rs[0]
            else metric_names(config, regression, isinstance(rs[0]["gold"], str))
        )
        for name in names:
            per_seed = _seed_values(name, rs)
            metric, field = _metric_field(name, rs)
            interval = cell_interval(
                metric,
                [r[field] for r in rs],
                [r["gold"] for r in rs],
                _seed_groups(rs),
                resamples=config.bootstrap,
                seed=config.seed,
                **_kwargs(name, rs),
            )
            out.append(
                {
                    "model": model,
                    "task": task,
                    "shots": shots,
                    "metric": name,
                    "mean": float(np.mean(per_seed)),
                    "std": float(np.std(per_seed)),
                    **_interval_fields(interval),
                    "n": len(rs),
                    "num_seeds": len(per_seed),
                }
            )
        if "parsed" in rs[0]:
            out.append(unparsed_summary(config, model, task, shots, rs))
    return out


def unparsed_summary(config, model: str, task: str, shots: int, rows: list[dict]) -> dict:
    """Generations with no number in them: their fraction, so a low error is never bought by
    outputs that were not answers (they are scored as the zero predictor)."""
    flags = [not r["parsed"] for r in rows]
    by_seed: dict[tuple, list[bool]] = defaultdict(list)
    for r, flag in zip(rows, flags):
        by_seed[(r["seed"], r["order"])].append(flag)
    per_seed = [float(np.mean(v)) for _, v in sorted(by_seed.items())]
    interval = cell_interval(
        "accuracy",
        flags,
        [True] * len(flags),
        _seed_groups(rows),
        resamples=config.bootstrap,
        seed=config.seed,
    )
    return {
        "model": model,
        "task": task,
        "shots": shots,
        "metric": "unparsed",
        "mean": float(np.mean(per_seed)),
        "std": float(np.std(per_seed)),
        **_interval_fields(interval),
        "n": len(rows),
        "num_seeds": len(per_seed),
        "count": int(sum(flags)),
    }


def markdown_report(config, summary: list[dict], title: str) -> str:
    lines = [
        f"# {title}",
        "",
        f"Protocol `{config.protocol}`; {config.num_seeds} seed(s)"
        + (f", {config.num_queries} queries per seed" if config.protocol == "queries" else "")
        + ". Cells: mean ± std across demo sets (seeds × orders) [95% interval of that "
        "mean over both demo sets and queries: one-way random effects, t quantile on "
        "S − 1 degrees of freedom; ‡: one demo set, the interval covers query sampling "
        "only].",
        "",
    ]
    by_task: dict[tuple, list[dict]] = defaultdict(list)
    for s in summary:
        by_task[(s["task"], s["metric"])].append(s)
    for (task, metric), items in by_task.items():
        shots = sorted({s["shots"] for s in items})
        lines += [
            f"## {task} — {metric}",
            "",
            "| model | " + " | ".join(f"{k}-shot" for k in shots) + " |",
            "|---|" + "---|" * len(shots),
        ]
        models = list(dict.fromkeys(s["model"] for s in items))
        cell = {(s["model"], s["shots"]): s for s in items}
        for model in models:
            cells = []
            for k in shots:
                s = cell.get((model, k))
                mark = "‡" if s is not None and s.get("num_seeds") == 1 else ""
                cells.append(
                    ""
                    if s is None
                    else f"{s['mean']:.3f} ± {s['std']:.3f} [{s['ci_low']:.2f}, "
                    f"{s['ci_high']:.2f}]{mark}"
                )
            lines.append(f"| {model} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += variance_table(summary)
    lines += ["![learning curves](curve.png)", ""]
    return "\n".join(lines)


def variance_table(summary: list[dict]) -> list[str]:
    """Per task (first metric), the share of a demo set's score variance that comes from which
    demonstrations it holds rather than which queries it is scored on."""
    first: dict[str, str] = {}
    for s in summary:
        first.setdefault(s["task"], s["metric"])
    cells = [
        s
        for s in summary
        if s.get("demo_set_share") is not None and first[s["task"]] == s["metric"]
    ]
    if not cells:
        return []
    lines = [
        "## Variance from the demo set",
        "",
        "Share of the variance of one demo set's score due to the choice of demonstrations "
        "(σ̂²_between / (σ̂²_between + σ̂²_queries)); the rest is query sampling.",
        "",
    ]
    for task in dict.fromkeys(s["task"] for s in cells):
        items = [s for s in cells if s["task"] == task]
        shots = sorted({s["shots"] for s in items})
        cell = {(s["model"], s["shots"]): s for s in items}
        lines += [
            f"**{task} — {first[task]}**",
            "",
            "| model | " + " | ".join(f"{k}-shot" for k in shots) + " |",
            "|---|" + "---|" * len(shots),
        ]
        for model in dict.fromkeys(s["model"] for s in items):
            lines.append(
                f"| {model} | "
                + " | ".join(
                    f"{cell[(model, k)]['demo_set_share']:.0%}" if (model, k) in cell else ""
                    for k in shots
                )
                + " |"
            )
        lines.append("")
    return lines


def plot_curves(summary: list[dict], columns: int = 3) -> bytes:
    """One panel per task (its first metric); a line per learner with its CI band; ★ = zero-shot."""
    plt = pyplot()
    first = {}
    for s in summary:
        first.setdefault(s["task"], s["metric"])
    panels = list(first.items())
    learners = list(dict.fromkeys(s["model"] for s in summary))
    colour = colours(learners)
    legend = 0.28 * -(-len(learners) // 4) + 0.15  # inches below the panels
    fig, axes = panel_grid(len(panels), columns, extra_height=legend)
    height = fig.get_figheight()
    for ax, (task, metric) in zip(axes, panels):
        items = [s for s in summary if s["task"] == task and s["metric"] == metric]
        for model in dict.fromkeys(s["model"] for s in items):
            pts = sorted((s for s in items if s["model"] == model), key=lambda s: s["shots"])
            x = np.array([s["shots"] for s in pts])
            y = np.array([s["mean"] for s in pts])
            ax.plot(x, y, marker="o", ms=3, label=model, color=colour[model])
            ax.fill_between(
                x,
                [s["ci_low"] for s in pts],
                [s["ci_high"] for s in pts],
                color=colour[model],
                alpha=0.12,
            )
            if 0 in x:
                ax.scatter([0], y[x == 0], marker="*", s=120, color=colour[model], zorder=3)
        ax.set_xscale("symlog", linthresh=1)
        if not M.HIGHER_IS_BETTER.get(metric, True):
            ax.set_yscale("log")  # errors span decades (an interpolation peak, exact fits)
            ax.set_ylim(bottom=max(ax.get_ylim()[0], 1e-3))  # exact fits sit on the floor
        ax.set_xlabel("shots (demonstrations; ★ = zero-shot)")
        ax.set_ylabel(metric + (" (log scale)" if ax.get_yscale() == "log" else ""))
        ax.set_title(task)
        ax.grid(alpha=0.3)
    handles = [plt.Line2D([], [], color=colour[m], marker="o", ms=3) for m in learners]
    fig.legend(
        handles, learners, loc="lower center", ncol=min(4, len(learners)), fontsize=8, frameon=False
    )
    fig.tight_layout(rect=(0, legend / height, 1, 1))
    return png_bytes(fig, 110)


def reports(config, tasks, rows: list[dict]) -> Reports:
    """Summary per model × task × shots × metric, its tables and the learning-curve figure."""
    summary = aggregate(config, rows)
    title = config.title or f"hf-icl {config.job}"
    results = {
        "job": config.job,
        "config": to_dict(config),
        "versions": library_versions(),
        "tasks": {
            t.name: {
                "family": t.definition.family,
                "source": t.definition.source,
                **lm_eval_facts(t),
            }
            for t in tasks
        },
        "summary": summary,
    }
    notes = lm_eval_notes(config, tasks)
    return Reports(
        results,
        markdown_report(config, summary, title) + notes,
        {"curve.png": plot_curves(summary)},
    )


def lm_eval_facts(task) -> dict[str, Any]:
    source = task.lm_eval
    if source is None:
        return {}
    return {
        "lm_eval_group": source.task.group,
        "documents": len(source.docs),
        "demos": source.demos_note,
    }


def lm_eval_notes(config, tasks) -> str:
    """How each lm-eval task ran: its documents, whose demonstrations, what was skipped."""
    lines = []
    for task in tasks:
        facts = lm_eval_facts(task)
        if not facts:
            continue
        group = f" (group {facts['lm_eval_group']})" if facts["lm_eval_group"] else ""
        lines.append(
            f"- `{task.name}`: lm-eval task{group}, its first {facts['documents']} "
            f"documents (query_id = lm-eval's doc_id); demonstrations: "
            f"{facts['demos']}; accuracy is lm-eval's acc, acc_norm its "
            "length-normalised acc"
            + ("; baselines not run (choices vary per document)" if config.baselines else "")
        )
    return "\n".join(["", "## lm-eval tasks", "", *lines, ""]) if lines else ""
