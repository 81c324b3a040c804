"""The learner a train run optimises, built from the config: the model (pretrained or a small
one from scratch), its adapters, and the embedding renderer's read-in/read-out."""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import nn

from hf_icl.config import to_dict
from hf_icl.models import ICLModel
from hf_icl.render.embedding import ReadIn
from hf_icl.training.config import TrainConfig
from hf_icl.training.tasks import PreparedTasks, TrainTask, prepare_tasks


def load_lm(config: TrainConfig, dim: int = 1) -> nn.Module:
    """The spec's model (pretrained, or ``init: random`` drawn from train.seed), or a freshly
    initialised small model for ``dim``-sized inputs (the tokenizer comes with the tasks)."""
    if config.small_model is not None:
        from hf_icl.models import build_small_model

        return build_small_model(config.small_model, config.train.seed, dim)
    from hf_icl.models import load_model

    return load_model(config.model, config.train.seed)[0]


def _adapt(lm: nn.Module, config: TrainConfig) -> nn.Module:
    """Freeze or wrap the model as train.finetune says; enable gradient checkpointing."""
    section = config.train
    if section.finetune == "lora":
        from peft import LoraConfig, prepare_model_for_kbit_training

        from hf_icl.models import add_lora

        if config.model.quantization:
            lm = prepare_model_for_kbit_training(lm, use_gradient_checkpointing=False)
        lora = section.lora
        lm = add_lora(
            lm,
            LoraConfig(
                r=lora.rank,
                lora_alpha=lora.alpha,
                lora_dropout=lora.dropout,
                target_modules=lora.target_modules,
                task_type="CAUSAL_LM",
            ),
        )
    elif section.finetune == "read_in":
        lm.requires_grad_(False)
    if section.gradient_checkpointing:
        # non-reentrant: works when the embeddings are frozen (LoRA) without input grads
        lm.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    return lm


def build_learner(
    config: TrainConfig, prepared: PreparedTasks | None = None
) -> tuple[ICLModel, object | None, list[TrainTask]]:
    """The model to train (seeded, so every process builds the same one), tokenizer, tasks;
    ``prepared``: the tasks the train job's prepare built (else they are built here)."""
    prepared = prepared or prepare_tasks(config)
    tasks, kind = prepared.tasks, prepared.kind
    example = tasks[0].sampler.episode(0, 1, 0, "train")
    lm = load_lm(config, getattr(example.demo_x, "shape", (0, 1))[1])
    text_config = lm.config.get_text_config()
    torch.manual_seed(config.train.seed)
    lm = _adapt(lm, config)
    read_in = read_out = None
    if kind == "embedding" and not getattr(lm, "paired_layout", False):
        dtype = next(p for p in lm.parameters() if p.is_floating_point()).dtype
        read_in = ReadIn(
            example.demo_x.shape[1], text_config.hidden_size, example.is_regression
        ).to(dtype)
        if example.is_regression:
            read_out = nn.Linear(text_config.hidden_size, 1).to(dtype)
            # Targets enter through the read-in and leave through the read-out: token
            # embeddings and the LM head go unused (and DDP refuses unused trainable weights).
            base = lm.get_base_model() if hasattr(lm, "get_base_model") else lm
            base.get_input_embeddings().requires_grad_(False)
            base.get_output_embeddings().requires_grad_(False)
    model = ICLModel(lm, read_in, read_out)
    model.train()
    return model, prepared.tokenizer, tasks


def learner_info(config: TrainConfig) -> dict:
    """What ``load_trained`` needs to rebuild the saved learner."""
    if config.small_model is not None:
        return {"kind": "small", "small_model": to_dict(config.small_model)}
    kind = {"lora": "adapter", "full": "full", "read_in": "frozen"}[config.train.finetune]
    base = to_dict(replace(config.model, adapter=None))
    return {"kind": kind, "base_model": base}
