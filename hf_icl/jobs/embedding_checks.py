"""Which tasks each model of an evaluate run can read, checked before anything loads: a train
run's small model reads numeric tasks through the embedding renderer (its paired layout: two
classes or a regression target, inputs of the size it was trained on), a pretrained model reads
text prompts."""

from __future__ import annotations

import numpy as np

from hf_icl.episode import Episode
from hf_icl.errors import HfIclError
from hf_icl.jobs.evaluate_config import EvaluateConfig
from hf_icl.jobs.task_runs import TaskRun
from hf_icl.models.spec import TrainedSmallModel, trained_small_model


def check_model_tasks(
    config: EvaluateConfig, tasks: list[TaskRun], episodes: list[Episode | None], source: str
) -> None:
    """Every model against every task it runs (each task's first episode shows its inputs)."""
    for m, spec in enumerate(config.models):
        small = trained_small_model(spec)
        if small is not None and config.job != "evaluate":
            raise HfIclError(
                f"{source}: models.{m}: {config.job} fine-tunes pretrained language models; "
                f"evaluate the trained small model {spec.spec!r} with job: evaluate"
            )
        for i, (task, episode) in enumerate(zip(tasks, episodes)):
            if task.models is not None and m not in task.models:
                continue
            where = f"{source}: tasks.{i}"
            embedding = task.render.renderer == "embedding"
            if small is None and embedding:
                raise HfIclError(
                    f"{where}: render.renderer 'embedding' needs a trained read-in, and model "
                    f"{spec.label!r} reads text; evaluate pretrained LLMs with renderer: text"
                )
            if small is not None and not embedding:
                raise HfIclError(
                    f"{where}: model {spec.label!r} is a trained "
                    f"{small.config.architecture} model, which reads numeric inputs; give "
                    "the task render: {renderer: embedding}"
                )
            if small is not None:
                _check_reads(small, spec.label, episode, where)


def _check_reads(small: TrainedSmallModel, label: str, episode: Episode, where: str) -> None:
    """Inputs, classes and input size the small model can take."""
    x = np.asarray(episode.demo_x if episode.num_demos else episode.query_x)
    what = f"{where}: model {label!r}"
    if x.ndim != 2 or not np.issubdtype(x.dtype, np.number):
        raise HfIclError(f"{what} reads numeric inputs; task {episode.task!r} has none")
    if small.dim is not None and x.shape[1] != small.dim:
        raise HfIclError(
            f"{what} reads inputs of size {small.dim}; task {episode.task!r} has size {x.shape[1]}"
        )
    if episode.is_regression:
        return
    if small.config.layout == "paired" and episode.num_classes != 2:
        raise HfIclError(
            f"{what} reads the paired layout, where a class is y = ±1: two-class tasks "
            f"only, and task {episode.task!r} has {episode.num_classes}"
        )
    if episode.num_classes > small.config.vocab_size:
        raise HfIclError(
            f"{what} has {small.config.vocab_size} label tokens; task {episode.task!r} has "
            f"{episode.num_classes} classes"
        )
