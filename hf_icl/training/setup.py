"""Everything the training loop needs that is built from the config: the task streams with their
renderers, and the learner (model, adapters, read-in/read-out) with its trainable parameters."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial

import torch
from torch import nn

from hf_icl.config import from_dict, to_dict
from hf_icl.episode import Episode
from hf_icl.errors import HfIclError
from hf_icl.icl_model import ICLModel, LabelBatch, embedding_batch, text_batch
from hf_icl.render import RenderOptions, TextRenderer
from hf_icl.render.embedding import EmbeddingRenderer, ReadIn
from hf_icl.samplers import TaskSampler
from hf_icl.tasks import load_task
from hf_icl.training.config import TrainConfig

EVAL_OFFSET = 2 ** 40  # seen-task evaluation episodes: far past any training episode index


@dataclass
class TrainTask:
    """One task's episode stream and how its episodes become a LabelBatch."""

    name: str
    sampler: TaskSampler
    render: Callable[[list[Episode], bool], LabelBatch]  # (episodes, final_only) → batch
    metric: str  # accuracy (label tokens; text-rendered regression: bin tokens) or nse (read-out)
    eval_only: bool

    def stage(self, step: int, section) -> tuple[int | None, int]:
        """(active dims, examples per sequence) at ``step``: the task's curriculum, if it has
        one and train.curriculum follows it; else all dims and train.num_examples."""
        dims, num_examples = self.sampler.curriculum_at(step)
        if section.curriculum and num_examples is not None:
            return dims, num_examples
        return None, section.num_examples

    def draw(self, first: int, count: int, num_examples: int, split: str,
             active_dims: int | None = None) -> list[Episode]:
        """Episodes first..first+count-1 of a split (the sampler keeps per-batch properties);
        the curriculum stage goes to the sampler as an argument."""
        stage = {} if active_dims is None else {"active_dims": active_dims}
        return self.sampler.episodes(first, count, num_examples, 0, split, **stage)

    def eval_episodes(self, split: str, count: int, num_examples: int) -> list[Episode]:
        """Fixed evaluation episodes; the curriculum's last stage (Garg et al. evaluate there)."""
        dims = self.sampler.curriculum_at(2 ** 62)[0]
        first = EVAL_OFFSET if split == "train" else 0
        return self.draw(first, count, num_examples, split, dims)


def _renderer_kind(options: list[RenderOptions], config: TrainConfig) -> str:
    kinds = {o.renderer for o in options}
    if len(kinds) > 1:
        raise HfIclError("tasks: every task of a train run needs the same render.renderer; "
                         f"got {', '.join(sorted(kinds))}")
    kind = kinds.pop()
    if config.small_model is not None and kind != "embedding":
        raise HfIclError("small_model: a small model reads its tasks through the embedding "
                         "renderer; add render: {renderer: embedding} to each task")
    if kind == "text" and config.train.finetune == "read_in":
        raise HfIclError("train.finetune: read_in needs tasks with render: {renderer: embedding}")
    return kind


def _label_tokens(tokenizer, options: RenderOptions, episode: Episode, vocab: int) -> list[int] | None:
    """Token ids of the label words; a small model's labels are simply tokens 0..C-1."""
    if episode.is_regression:
        return None
    if tokenizer is None:
        if episode.num_classes > vocab:
            raise HfIclError(f"task {episode.task!r}: {episode.num_classes} classes but the small "
                             f"model has {vocab} label tokens; raise small_model.vocab_size")
        return list(range(vocab))
    ids = []
    for word in TextRenderer(tokenizer, options).label_words(episode):
        tokens = tokenizer(word, add_special_tokens=False).input_ids
        if len(tokens) != 1:
            raise HfIclError(f"task {episode.task!r}: label word {word!r} is {len(tokens)} tokens; "
                             "the embedding renderer needs single-token label words")
        ids.append(tokens[0])
    return ids


def prepare_tasks(config: TrainConfig, tokenizer, vocab: int) -> tuple[list[TrainTask], str]:
    """Training tasks first, then evaluation-only tasks; and the renderer kind they share."""
    refs = [(ref, f"tasks.{i}", False) for i, ref in enumerate(config.tasks)] + \
        [(ref, f"eval_tasks.{i}", True) for i, ref in enumerate(config.eval_tasks)]
    loaded = []
    for ref, where, eval_only in refs:
        definition, sampler = load_task(ref, where=where)
        options = from_dict(RenderOptions, definition.render, source=definition.source,
                            prefix="render")
        loaded.append((definition, sampler, options, eval_only))
    kind = _renderer_kind([o for _, _, o, _ in loaded], config)
    tasks, shapes = [], set()
    for definition, sampler, options, eval_only in loaded:
        example = sampler.episode(0, 1, 0, "train")
        metric = "nse" if kind == "embedding" and example.is_regression else "accuracy"
        if kind == "text":
            render = partial(text_batch, TextRenderer(tokenizer, options),
                             pad_id=tokenizer.pad_token_id)
        else:
            dim = getattr(example.demo_x, "shape", (0, 0))[1]
            shapes.add((dim, example.is_regression))
            renderer = EmbeddingRenderer(dim, _label_tokens(tokenizer, options, example, vocab))
            render = partial(embedding_batch, renderer)
        tasks.append(TrainTask(definition.name, sampler, render, metric, eval_only))
    if len(shapes) > 1:
        raise HfIclError("tasks: the embedding renderer's read-in is shared, so every task needs "
                         f"the same input size and kind; got (dim, regression) = {sorted(shapes)}")
    names = [t.name for t in tasks]
    if len(set(names)) != len(names):
        raise HfIclError(f"tasks: duplicate task name in {names}; give one an alias with 'as:'")
    return tasks, kind


def load_lm(config: TrainConfig):
    """(model, tokenizer): the pretrained spec, or a freshly initialised small model."""
    if config.small_model is not None:
        from hf_icl.small_models import build_small_model

        return build_small_model(config.small_model, config.train.seed), None
    from hf_icl.models import load_model

    return load_model(config.model)


def _adapt(lm: nn.Module, config: TrainConfig) -> nn.Module:
    """Freeze or wrap the model as train.finetune says; enable gradient checkpointing."""
    section = config.train
    if section.finetune == "lora":
        from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

        if config.model.quantization:
            lm = prepare_model_for_kbit_training(lm, use_gradient_checkpointing=False)
        lora = section.lora
        lm = get_peft_model(lm, LoraConfig(r=lora.rank, lora_alpha=lora.alpha,
                                           lora_dropout=lora.dropout,
                                           target_modules=lora.target_modules,
                                           task_type="CAUSAL_LM"))
    elif section.finetune == "read_in":
        lm.requires_grad_(False)
    if section.gradient_checkpointing:
        # non-reentrant: works when the embeddings are frozen (LoRA) without input grads
        lm.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    return lm


def build_learner(config: TrainConfig) -> tuple[ICLModel, object | None, list[TrainTask]]:
    """The model to train (seeded, so every process builds the same one), tokenizer, tasks."""
    lm, tokenizer = load_lm(config)
    text_config = lm.config.get_text_config()
    tasks, kind = prepare_tasks(config, tokenizer, text_config.vocab_size)
    torch.manual_seed(config.train.seed)
    lm = _adapt(lm, config)
    read_in = read_out = None
    if kind == "embedding":
        example = tasks[0].sampler.episode(0, 1, 0, "train")
        dtype = next(p for p in lm.parameters() if p.is_floating_point()).dtype
        read_in = ReadIn(example.demo_x.shape[1], text_config.hidden_size,
                         example.is_regression).to(dtype)
        if example.is_regression:
            read_out = nn.Linear(text_config.hidden_size, 1).to(dtype)
            # Targets enter through the read-in and leave through the read-out: token
            # embeddings and the LM head go unused (and DDP refuses unused trainable weights).
            base = lm.get_base_model() if hasattr(lm, "get_base_model") else lm
            base.get_input_embeddings().requires_grad_(False)
            base.get_output_embeddings().requires_grad_(False)
    model = ICLModel(lm, read_in, read_out)
    model.train()
    return model, tokenizer, tasks


def learner_info(config: TrainConfig) -> dict:
    """What ``load_trained`` needs to rebuild the saved learner."""
    if config.small_model is not None:
        return {"kind": "small", "small_model": to_dict(config.small_model)}
    kind = {"lora": "adapter", "full": "full", "read_in": "frozen"}[config.train.finetune]
    base = to_dict(replace(config.model, adapter=None))
    return {"kind": kind, "base_model": base}
