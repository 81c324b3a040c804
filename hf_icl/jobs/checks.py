"""The cheap checks of a run config, made before a job's module (torch, sklearn) is imported, so
a misspelt model or task is a one-line error in a fraction of a second.

This module and what it imports must stay free of torch, transformers and sklearn.
"""

from __future__ import annotations

from hf_icl.errors import HfIclError
from hf_icl.jobs.evaluate_config import EvaluateConfig
from hf_icl.jobs.task_runs import TaskRun, prepare_tasks
from hf_icl.models import check_model_spec


def check_models(config: EvaluateConfig, source: str = "config") -> None:
    """Model labels are distinct and every spec is known, present and loadable, checked
    without loading anything."""
    labels = [m.label for m in config.models]
    if len(set(labels)) != len(labels):
        raise HfIclError(
            f"{source}: models: duplicate model label in {labels}; set 'name' to tell them apart"
        )
    for m, spec in enumerate(config.models):
        check_model_spec(spec, f"{source}: models.{m}")


def check_evaluation(config: EvaluateConfig, source: str = "config") -> list[TaskRun]:
    """Models and tasks (names, parameters, renderer options) of an evaluate or compare config;
    returns the prepared tasks."""
    check_models(config, source)
    return prepare_tasks(config, source)
