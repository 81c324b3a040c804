"""`hf-icl train`: meta-train a model for in-context learning (the stack is hf_icl/training/).

`accelerate launch -m hf_icl train CONFIG` runs the same config on several processes or GPUs.
"""

from __future__ import annotations

from hf_icl.models import check_model_spec
from hf_icl.results import RunFolder
from hf_icl.runtime import JobOptions
from hf_icl.tasks import Entry, load_task, located, parse_section
from hf_icl.training.config import TrainConfig

Config = TrainConfig


def check_environment(config: TrainConfig) -> None:
    from hf_icl.training.loop import check_environment

    check_environment(config.train)


def prepare(config: TrainConfig, source: str = "config", options: JobOptions | None = None) -> None:
    """The checks a train run can make before its folder exists: the model spec, every task
    entry (parameters, render options, a first episode) and the baselines."""
    from hf_icl.baselines import make_baseline
    from hf_icl.baselines.planning import split_spec
    from hf_icl.render import RenderOptions

    if config.model is not None:
        check_model_spec(config.model, f"{source}: model")
    entries = [(ref, f"tasks.{i}") for i, ref in enumerate(config.tasks)] + \
        [(ref, f"eval_tasks.{i}") for i, ref in enumerate(config.eval_tasks)]
    for ref, key in entries:
        where = Entry(source, key)
        definition, sampler = load_task(ref, where)
        parse_section(definition, RenderOptions, "render", definition.render, where)
        with located(where):
            sampler.episode(0, config.train.num_examples, 0, "train")
    for i, spec in enumerate(config.baselines):
        with located(source):
            name, params = split_spec(spec, i)
            with located(f"baselines.{i}"):
                make_baseline(name, **params)
    check_environment(config)  # last: it imports torch


def run(config: TrainConfig, folder: RunFolder, options: JobOptions, plan: None = None) -> dict | None:
    from hf_icl.training.loop import train

    folder.file("runs")  # TensorBoard logs, written by accelerate's tracker
    return train(config, folder, options)


def summary(results: dict) -> str:
    from hf_icl.training.report import summary_lines

    lines = [f"{results['model']}: {results['steps']} steps, final loss {results['final_loss']:.4f}"]
    return "\n".join(lines + summary_lines(results))
