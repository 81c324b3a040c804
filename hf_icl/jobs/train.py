"""`hf-icl train`: meta-train a model for in-context learning (the stack is hf_icl/training/).

`accelerate launch -m hf_icl train CONFIG` runs the same config on several processes or GPUs.
"""

from __future__ import annotations

from hf_icl.models import check_model_spec
from hf_icl.results import RunFolder
from hf_icl.runtime import JobOptions
from hf_icl.tasks import located
from hf_icl.training.config import TrainConfig
from hf_icl.training.tasks import PreparedTasks, build_tasks, load_entries

Config = TrainConfig


def prepare(
    config: TrainConfig, source: str = "config", options: JobOptions | None = None
) -> PreparedTasks:
    """Every check a train run can make before its folder exists: the model spec, every task
    entry (parameters, render options, a first episode), the baselines, the machine, and what
    the tokenizer decides (one renderer kind, single-token label words, one read-in size).
    Returns the task streams, which the trainer reuses."""
    from hf_icl.baselines import make_baseline
    from hf_icl.baselines.planning import split_spec

    if config.model is not None:
        check_model_spec(config.model, f"{source}: model")
    entries = load_entries(config, source)
    for i, spec in enumerate(config.baselines):
        with located(source):
            name, params = split_spec(spec, i)
            with located(f"baselines.{i}"):
                make_baseline(name, **params)
    from hf_icl.training.diagnostics import check_diagnostics  # imports torch: after the
    from hf_icl.training.loop import check_environment  # cheap checks

    check_environment(config.train)
    with located(source):
        prepared = build_tasks(config, entries)
        check_diagnostics(config, prepared.tasks)
    return prepared


def run(
    config: TrainConfig, folder: RunFolder, options: JobOptions, plan: PreparedTasks | None = None
) -> dict | None:
    from hf_icl.training.loop import train

    folder.file("runs")  # TensorBoard logs, written by accelerate's tracker
    return train(config, folder, options, plan)


def summary(results: dict) -> str:
    from hf_icl.training.report import summary_lines

    lines = [
        f"{results['model']}: {results['steps']} steps, final loss {results['final_loss']:.4f}"
    ]
    return "\n".join(lines + summary_lines(results))
