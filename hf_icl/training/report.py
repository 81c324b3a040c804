"""The end of a train run: model/ (weights or adapter, tokenizer, read-in/out, model card),
results.json, report.md and curves.png (seen vs unseen over training; learning curves by
position before vs after training, with baselines), and the optional Hub push."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import yaml

from hf_icl.config import to_dict
from hf_icl.hub import push
from hf_icl.models import save_learner
from hf_icl.plots import library_versions, png_bytes
from hf_icl.results import RunFolder, atomic_write
from hf_icl.runtime import JobOptions
from hf_icl.training import diagnostics
from hf_icl.training.config import TrainConfig
from hf_icl.training.evaluation import baseline_curves
from hf_icl.training.setup import learner_info

CURVE_KEYS = ("mean", "final", "slope", "curve")


def tracker_config(config: TrainConfig) -> dict:
    """Flat hyperparameters for TensorBoard."""
    flat = {
        k: v for k, v in to_dict(config.train).items() if isinstance(v, (int, float, str, bool))
    }
    return {**flat, "model": model_name(config)}


def model_name(config: TrainConfig) -> str:
    small = config.small_model
    if small is not None and small.layout == "paired":
        loops = f", {small.loops} loops" if small.architecture.startswith("looped") else ""
        return f"{small.architecture} ({small.parameterization}{loops})"
    if small is not None:
        return f"small {small.architecture} ({small.layers} layers, hidden {small.hidden})"
    if config.model.init == "random" and not config.model.name:
        # trained from a random init: the spec's label would call it the untrained control
        return f"{replace(config.model, init='pretrained').label} (from random init)"
    return config.model.label


def collect(config: TrainConfig, folder: RunFolder, baselines: list[dict]) -> dict:
    """results.json: before/after curves per task × split, the last loss, the baselines."""
    rows = folder.read_jsonl("metrics.jsonl")
    evals = [r for r in rows if r["kind"] == "eval"]
    summary = []
    for key in dict.fromkeys((r["task"], r["split"]) for r in evals):
        mine = sorted((r for r in evals if (r["task"], r["split"]) == key), key=lambda r: r["step"])
        before, after = mine[0], mine[-1]
        summary.append(
            {
                "task": key[0],
                "split": key[1],
                "metric": before["metric"],
                "before": {k: before[k] for k in CURVE_KEYS},
                "after": {k: after[k] for k in CURVE_KEYS},
            }
        )
    losses = [r for r in rows if r["kind"] == "train"]
    return {
        "job": "train",
        "config": to_dict(config),
        "versions": library_versions(),
        "model": model_name(config),
        "steps": config.train.steps,
        "final_loss": losses[-1]["loss"] if losses else None,
        "summary": summary,
        "baselines": baselines,
        "diagnostics": diagnostics.summary(rows),
    }


def plot(results: dict, rows: list[dict]) -> bytes:
    """Loss; seen vs unseen metric over training; per task × split, curves before vs after."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = len(results["summary"]) + 2
    fig, axes = plt.subplots(1, panels, figsize=(4.2 * panels, 3.6), squeeze=False)
    axes = axes[0]
    train = [r for r in rows if r["kind"] == "train"]
    axes[0].plot([r["step"] for r in train], [r["loss"] for r in train])
    axes[0].set(title="training loss", xlabel="step")
    for item in results["summary"]:
        evals = [
            r
            for r in rows
            if r["kind"] == "eval" and r["task"] == item["task"] and r["split"] == item["split"]
        ]
        axes[1].plot(
            [r["step"] for r in evals],
            [r["mean"] for r in evals],
            marker="o",
            ms=3,
            linestyle="-" if item["split"] == "seen" else "--",
            label=f"{item['task']} ({item['split']})",
        )
    axes[1].set(title="seen vs unseen tasks", xlabel="step", ylabel="mean over positions")
    axes[1].legend(fontsize=7)
    for ax, item in zip(axes[2:], results["summary"]):
        for when in ("before", "after"):
            ax.plot(item[when]["curve"], label=f"model {when}")
        for base in results["baselines"]:
            if base["task"] == item["task"] and item["split"] == "unseen":
                ax.plot(base["curve"], linestyle=":", label=base["baseline"])
        ax.set(
            title=f"{item['task']} ({item['split']})",
            xlabel="examples before the query",
            ylabel=item["metric"],
        )
        ax.legend(fontsize=7)
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return png_bytes(fig, 110)


def results_table(results: dict) -> list[str]:
    lines = [
        "| task | split | metric | before | after | slope before | slope after |",
        "|---|---|---|---|---|---|---|",
    ]
    for s in results["summary"]:
        lines.append(
            f"| {s['task']} | {s['split']} | {s['metric']} | {s['before']['mean']:.3f} "
            f"| {s['after']['mean']:.3f} | {s['before']['slope']:+.4f} "
            f"| {s['after']['slope']:+.4f} |"
        )
    for b in results["baselines"]:
        lines.append(
            f"| {b['task']} | unseen | {b['baseline']} | | {b['mean']:.3f} | | {b['slope']:+.4f} |"
        )
    return lines


def model_card(config: TrainConfig, results: dict, info: dict) -> str:
    library = "peft" if info["kind"] == "adapter" else "transformers"
    header = {"library_name": library, "tags": ["hf-icl", "in-context-learning", "meta-learning"]}
    if (
        config.model is not None
        and "/" in config.model.spec
        and not Path(config.model.spec).exists()
    ):
        header["base_model"] = config.model.spec  # a Hub id (aliases and folders are not)
    tasks = [t if isinstance(t, str) else t.get("name") for t in config.tasks]
    return "\n".join(
        [
            "---",
            yaml.safe_dump(header, sort_keys=False).strip(),
            "---",
            "",
            f"# {config.title or 'hf-icl meta-trained model'}",
            "",
            f"Meta-trained for in-context learning with `hf-icl train` ({config.train.steps} steps "
            f"of {config.train.batch_size} episodes; finetune: `{config.train.finetune}`).",
            "",
            f"- base model: {results['model']}",
            f"- saved: {info['kind']}"
            + (" (with the embedding renderer's read-in/read-out)" if info["read_in"] else ""),
            f"- meta-training tasks: {', '.join(map(str, tasks))}",
            "",
            "## Results",
            "",
            "Mean metric over positions of held-out episodes (seen tasks: "
            "meta-training tasks; unseen: new tasks), before and after training.",
            "",
            *results_table(results),
            "",
            "## How to load",
            "",
            "```python",
            "from hf_icl import load_trained",
            "",
            'model, tokenizer = load_trained("path/to/this/folder")',
            "```",
            "",
            *(
                [
                    f"Or evaluate its in-context learning curves with `hf-icl evaluate`, model spec "
                    f"`{{spec: {config.model.spec}, adapter: path/to/this/folder}}`.",
                    "",
                ]
                if info["kind"] == "adapter"
                else []
            ),
            "## Training config",
            "",
            "```yaml",
            yaml.safe_dump(to_dict(config), sort_keys=False).strip(),
            "```",
            "",
        ]
    )


def push_model(folder: Path, repo_id: str, private: bool) -> str:
    """Upload a run's model/ as it is on disk, in one commit; returns the repo's URL. A failure
    keeps the run and names the `hf-icl push` command that retries without retraining."""
    return push(folder.parent, repo_id, private)


def finish(
    config: TrainConfig,
    folder: RunFolder,
    options: JobOptions,
    accelerator,
    model,
    tokenizer,
    tasks,
) -> dict | None:
    """Save model/ (temp + rename) and the reports; push; the main process returns results."""
    accelerator.wait_for_everyone()
    state = accelerator.get_state_dict(model)  # every process takes part under FSDP
    if not accelerator.is_main_process:
        return None
    learner = accelerator.unwrap_model(model)
    info = {**learner_info(config), "read_in": learner.read_in is not None}
    results = collect(config, folder, baseline_curves(config.baselines, tasks, config.train))
    target = folder.file("model")
    tmp = folder.file("model.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    save_learner(learner, tmp, tokenizer, info, state)
    (tmp / "README.md").write_text(model_card(config, results, info), encoding="utf-8")
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    rows = folder.read_jsonl("metrics.jsonl")
    folder.write_json("results.json", results)
    atomic_write(folder.file("curves.png"), plot(results, rows))
    folder.write_text(
        "report.md",
        "\n".join(
            [
                f"# {config.title or 'hf-icl train'}",
                "",
                f"Model: {results['model']}; final training loss {results['final_loss']:.4f}.",
                "",
                *results_table(results),
                "",
                "![curves](curves.png)",
                "",
                *diagnostics.report_lines(results["diagnostics"]),
            ]
        ),
    )
    if options.push_to_hub:
        print(f"pushed to {push_model(target, options.push_to_hub, options.private)}")
    return results


def summary_lines(results: dict) -> list[str]:
    return [
        f"{s['task']:<24} {s['split']:<7} {s['metric']:<9} "
        f"{s['before']['mean']:.3f} → {s['after']['mean']:.3f} "
        f"(slope {s['before']['slope']:+.4f} → {s['after']['slope']:+.4f})"
        for s in results["summary"]
    ] + [
        f"{b['task']:<24} unseen  {b['baseline']:<9} {b['mean']:.3f}" for b in results["baselines"]
    ]
