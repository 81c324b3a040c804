"""What a pretrained model must offer a train run's tasks, read from its config (no weights)
before the run folder exists: the embedding renderer's read-in enters through the decoder's
``inputs_embeds``; a text-rendered sequence must fit the context window at the longest number
of examples the run trains or evaluates with."""

from __future__ import annotations

import inspect

from hf_icl.errors import HfIclError
from hf_icl.models import ModelSpec
from hf_icl.training.config import TrainConfig, TrainSection
from hf_icl.training.tasks import PreparedTasks, TrainTask


def check_model_fits(config: TrainConfig, prepared: PreparedTasks) -> None:
    """Refuse, in one line, a model the tasks cannot run on (small models are built for them)."""
    if config.model is None:
        return
    from hf_icl.models.loading import model_config

    lm_config = model_config(config.model, len(prepared.tokenizer))
    if prepared.kind == "embedding":
        check_inputs_embeds(config.model, lm_config)
        return
    limit = getattr(lm_config.get_text_config(), "max_position_embeddings", None)
    if limit is not None:
        for task in prepared.tasks:
            check_context_window(task, config.train, limit)


def check_inputs_embeds(spec: ModelSpec, lm_config) -> None:
    """The read-in's embeddings go to the decoder as ``inputs_embeds``; the model is built on
    the meta device (no memory, no weights) to read its decoder's signature."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        lm = AutoModelForCausalLM.from_config(lm_config, trust_remote_code=spec.trust_remote_code)
    decoder = lm.get_decoder()
    if "inputs_embeds" not in inspect.signature(decoder.forward).parameters:
        raise HfIclError(
            f"model {spec.spec!r}: its decoder ({type(decoder).__name__}) takes no "
            "inputs_embeds, which the embedding renderer's read-in needs; render the tasks "
            "as text"
        )


def check_context_window(task: TrainTask, section: TrainSection, limit: int) -> None:
    """The task's evaluation episodes, rendered at the longest sequence the run uses, fit."""
    trained = 0 if task.eval_only else task.stage(2**62, section)[1]
    examples = max(trained, section.eval_length)
    split = "test" if task.eval_only else "train"
    batch = task.render(task.eval_episodes(split, section.eval_episodes, examples), False)
    length = batch.inputs["input_ids"].shape[1]
    if length <= limit:
        return
    # a label at position p is read at p - 1: the examples whose label fits in every sequence
    fit = min(
        int(((batch.cols + 1 < limit) & (batch.rows == row)).sum())
        for row in range(int(batch.rows.max()) + 1)
    )
    key = "train.num_examples" if trained >= section.eval_length else "train.eval_examples"
    raise HfIclError(
        f"task {task.name!r}: {key}: a sequence of {examples} examples is {length} tokens, "
        f"over the model's context window of {limit}; at most {fit} examples fit"
    )
