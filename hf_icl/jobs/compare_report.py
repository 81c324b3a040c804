"""Final outputs of a comparison: results.json, report.md and per-layer figures.

Accuracies and similarities are means over queries, ± the std across demo seeds; Rec2FTP pools
every query of every seed (its denominator is small per seed) and shows that denominator.
"""

from __future__ import annotations

import re
from collections import defaultdict
from typing import Any

import numpy as np

from hf_icl.config import to_dict
from hf_icl.metrics import load_metric
from hf_icl.metrics.vectors import nanmean
from hf_icl.plots import library_versions, png_bytes, pyplot
from hf_icl.results import Reports

# Per-layer similarities on FT rows: (name, column header), in table order.
SIMILARITIES = [
    ("simaou", "SimAOU"),
    ("simaou_uniform", "U[0,1)"),
    ("simaou_normal", "N(0,I)"),
    ("simam", "SimAM"),
    ("simam_before", "before FT"),
    ("simam_difference", "difference"),
    ("kendall_tau", "Kendall τ"),
    ("kendall_tau_random", "random"),
]


def _none_if_nan(value: float) -> float | None:
    return None if np.isnan(value) else float(value)


def _per_seed(rows: list[dict]) -> dict[tuple, list[dict]]:
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in rows:
        groups[(r["seed"], r["order"])].append(r)
    return groups


def _accuracy(rows: list[dict]) -> tuple[float, float]:
    """Mean over queries of each seed, then mean and std across seeds."""
    per_seed = [np.mean([r["pred"] == r["gold"] for r in rs]) for rs in _per_seed(rows).values()]
    return float(np.mean(per_seed)), float(np.std(per_seed))


def _layers(rows: list[dict], name: str) -> np.ndarray:
    return np.array([[np.nan if v is None else v for v in r[name]] for r in rows], dtype=float)


def _similarity(rows: list[dict], name: str) -> dict:
    if name not in rows[0]:
        return {name: None, f"{name}_std": None, f"{name}_per_layer": None}
    per_layer = nanmean(_layers(rows, name), axis=0)
    per_seed = [nanmean(nanmean(_layers(rs, name), axis=0)) for rs in _per_seed(rows).values()]
    return {
        name: _none_if_nan(nanmean(per_layer)),
        f"{name}_std": _none_if_nan(np.nanstd(per_seed)),
        f"{name}_per_layer": [_none_if_nan(v) for v in per_layer],
    }


def _rec2ftp(zs: list[dict], icl: list[dict], ft: list[dict]) -> dict:
    zs_pred = {(r["unit"], r["query"]): r["pred"] for r in zs}
    icl_pred = {(r["unit"], r["query"]): r["pred"] for r in icl}
    result = load_metric("rec2ftp").compute(
        zs=[zs_pred[(r["unit"], r["query"])] for r in ft],
        icl=[icl_pred[(r["unit"], r["query"])] for r in ft],
        ft=[r["pred"] for r in ft],
        references=[r["gold"] for r in ft],
    )
    return {"rec2ftp": result["rec2ftp"], "rec2ftp_denominator": result["denominator"]}


def order_sensitivity(rows: list[dict]) -> dict:
    """Shen et al.'s question: how much do predictions depend on the order of the same demos?

    ``order_std``: std of accuracy across orders of one demo list, averaged over lists;
    ``order_flips``: share of queries whose prediction is not the same under every order.
    """
    by_seed: dict[int, dict[int, dict[int, Any]]] = defaultdict(lambda: defaultdict(dict))
    gold: dict[tuple[int, int], Any] = {}
    for r in rows:
        by_seed[r["seed"]][r["order"]][r["query"]] = r["pred"]
        gold[(r["seed"], r["query"])] = r["gold"]
    if all(len(orders) < 2 for orders in by_seed.values()):
        return {"order_std": None, "order_flips": None}
    stds, flips = [], []
    for seed, orders in by_seed.items():
        stds.append(
            np.std(
                [
                    np.mean([p == gold[(seed, q)] for q, p in preds.items()])
                    for preds in orders.values()
                ]
            )
        )
        queries = set.intersection(*(set(preds) for preds in orders.values()))
        flips += [len({orders[o][q] for o in orders}) > 1 for q in queries]
    return {"order_std": float(np.mean(stds)), "order_flips": float(np.mean(flips))}


def aggregate(rows: list[dict]) -> list[dict]:
    """One entry per model × task × shots × FT arm."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in rows:
        groups[(r["model"], r["task"], r["shots"], r["arm"])].append(r)
    out = []
    for (model, task, shots, arm), ft in groups.items():
        if arm in ("zs", "icl"):
            continue
        zs, icl = groups[(model, task, 0, "zs")], groups[(model, task, shots, "icl")]
        entry = {
            "model": model,
            "task": task,
            "shots": shots,
            "arm": arm,
            "lr": sorted({r["lr"] for r in ft}),
            "n": len(ft),
        }
        for name, part in (("zs", zs), ("icl", icl), ("ft", ft)):
            entry[name], entry[f"{name}_std"] = _accuracy(part)
        entry.update(_rec2ftp(zs, icl, ft))
        for name, part in (("icl", icl), ("ft", ft)):
            entry.update({f"{name}_{k}": v for k, v in order_sensitivity(part).items()})
        for name, _ in SIMILARITIES:
            entry.update(_similarity(ft, name))
        out.append(entry)
    return out


def _cell(entry: dict, name: str) -> str:
    value, std = entry[name], entry.get(f"{name}_std")
    if value is None:
        return "—"
    return f"{value:.3f}" if std is None else f"{value:.3f} ± {std:.3f}"


def slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def markdown_report(config, summary: list[dict], title: str) -> str:
    lines = [
        f"# {title}",
        "",
        f"{config.num_seeds} seed(s) × {config.demo_orders} demo order(s), "
        f"{config.num_queries} test queries each. ZS: no demonstrations; ICL: k "
        "demonstrations in the prompt; FT: fine-tuned on the same k demonstrations, then "
        "zero-shot. Cells: mean ± std across seeds; Rec2FTP pools all queries (n: queries "
        "FT recovers). Similarities are means over layers; U[0,1), N(0,I) and 'random' are "
        "random baselines, 'before FT' is cos(s_ICL, s_ZS), 'difference' is "
        "cos(s_ICL − s_ZS, s_FT − s_ZS).",
        "",
    ]
    header = ["model", "k", "arm", "lr", "ZS", "ICL", "FT", "Rec2FTP (n)"] + [
        h for _, h in SIMILARITIES
    ]
    for task in dict.fromkeys(s["task"] for s in summary):
        lines += [f"## {task}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for s in (s for s in summary if s["task"] == task):
            rec = "—" if s["rec2ftp"] is None else f"{s['rec2ftp']:.1f}"
            cells = [
                s["model"],
                str(s["shots"]),
                s["arm"],
                ", ".join(f"{v:g}" for v in s["lr"]),
                _cell(s, "zs"),
                _cell(s, "icl"),
                _cell(s, "ft"),
                f"{rec} ({s['rec2ftp_denominator']})",
            ] + [_cell(s, n) for n, _ in SIMILARITIES]
            lines.append("| " + " | ".join(cells) + " |")
        lines += ["", f"![per-layer similarities: {task}](layers-{slug(task)}.png)", ""]
    if config.demo_orders > 1:
        lines += [
            "## Demonstration order",
            "",
            f"Each demo list is shown in {config.demo_orders} orders (to ICL in the prompt, "
            "to FT as the order of its updates). Order std: std of accuracy across the "
            "orders of one list, averaged over lists; flips: share of queries whose "
            "prediction changes with the order.",
            "",
            "| task | model | k | arm | ICL order std | ICL flips | FT order std | FT flips |",
            "|---|---|---|---|---|---|---|---|",
        ]
        fmt = lambda v: "—" if v is None else f"{v:.3f}"  # noqa: E731
        for s in summary:
            lines.append(
                f"| {s['task']} | {s['model']} | {s['shots']} | {s['arm']} | "
                f"{fmt(s['icl_order_std'])} | {fmt(s['icl_order_flips'])} | "
                f"{fmt(s['ft_order_std'])} | {fmt(s['ft_order_flips'])} |"
            )
        lines.append("")
    return "\n".join(lines)


PANELS = [
    ("simaou", "SimAOU", "simaou_uniform"),
    ("simam", "SimAM (after FT)", "simam_before"),
    ("simam_difference", "SimAM difference form", None),
    ("kendall_tau", "Kendall τ", "kendall_tau_random"),
]


def plot_layers(entries: list[dict], task: str) -> bytes:
    """Per-layer similarity of every model × arm × shots; dashed: its baseline."""
    fig, axes = pyplot().subplots(1, len(PANELS), figsize=(4.2 * len(PANELS), 4.2), squeeze=False)
    for ax, (name, title, baseline) in zip(axes[0], PANELS):
        for s in entries:
            if s[f"{name}_per_layer"] is None:
                continue
            values = np.array(s[f"{name}_per_layer"], dtype=float)
            (line,) = ax.plot(
                np.arange(len(values)),
                values,
                marker="o",
                ms=2,
                label=f"{s['model']} · {s['arm']} · k={s['shots']}",
            )
            if baseline:
                ax.plot(
                    np.array(s[f"{baseline}_per_layer"], dtype=float),
                    ls="--",
                    color=line.get_color(),
                    alpha=0.6,
                )
        ax.axhline(0, color="grey", lw=0.5)
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.set_xlabel("layer")
        ax.set_title(title + (" (dashed: baseline)" if baseline else ""), fontsize=9)
        ax.grid(alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(4, len(labels)), fontsize=7)
    fig.suptitle(task)
    fig.tight_layout(rect=(0, 0.06 * (1 + (len(labels) - 1) // 4), 1, 1))
    return png_bytes(fig, 100)


def reports(config, tasks, rows: list[dict]) -> Reports:
    """Summary per model × task × shots × FT arm, its tables and one layer figure per task."""
    summary = aggregate(rows)
    results = {
        "job": config.job,
        "config": to_dict(config),
        "versions": library_versions(),
        "tasks": {
            t.name: {"family": t.definition.family, "source": t.definition.source} for t in tasks
        },
        "summary": summary,
    }
    figures = {
        f"layers-{slug(task)}.png": plot_layers([s for s in summary if s["task"] == task], task)
        for task in dict.fromkeys(s["task"] for s in summary)
    }
    return Reports(
        results, markdown_report(config, summary, config.title or "hf-icl compare"), figures
    )
