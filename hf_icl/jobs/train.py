"""`hf-icl train`: meta-train a model for in-context learning (see hf_icl/train.py).

`accelerate launch -m hf_icl train CONFIG` runs the same config on several processes or GPUs.
"""

from __future__ import annotations

from hf_icl.jobs.registry import JobOptions
from hf_icl.jobs.train_config import TrainConfig
from hf_icl.results import RunFolder

Config = TrainConfig


def check_environment(config: TrainConfig) -> None:
    from hf_icl.train import check_environment

    check_environment(config.train)


def run(config: TrainConfig, folder: RunFolder, options: JobOptions) -> dict | None:
    from hf_icl.train import train

    return train(config, folder, options)


def summary(results: dict) -> str:
    from hf_icl.train_report import summary_lines

    lines = [f"{results['model']}: {results['steps']} steps, final loss {results['final_loss']:.4f}"]
    return "\n".join(lines + summary_lines(results))
