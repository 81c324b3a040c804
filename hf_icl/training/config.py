"""The train job's config: which learner, which tasks, and the `train` section (optimisation,
evaluation, checkpoints)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from hf_icl.config import option
from hf_icl.models import ModelSpec, SmallModelConfig

DIAGNOSTICS = ("subspace_alignment", "preconditioner", "gd_step")
SCHEDULERS = (
    "linear",
    "cosine",
    "cosine_with_restarts",
    "polynomial",
    "constant",
    "constant_with_warmup",
    "inverse_sqrt",
)


@dataclass
class LoraSettings:
    rank: int = option(8, help="adapter rank r")
    alpha: float = option(16.0, help="scaling numerator (scale = alpha / rank)")
    dropout: float = option(0.0, help="dropout on the adapter input")
    target_modules: list[str] = option(
        default_factory=lambda: ["q_proj", "v_proj"], help="module names that get an adapter"
    )


@dataclass
class TrainSection:
    """Optimisation, data stream, evaluation and checkpoint settings."""

    steps: int = option(1000, help="optimizer steps")
    batch_size: int = option(
        16,
        help="episodes per optimizer step, over all processes and "
        "accumulation steps (so any number of processes sees the same data)",
    )
    gradient_accumulation_steps: int = option(1, help="forward/backward passes per step")
    num_examples: int = option(
        16, help="examples per training sequence (a regression curriculum overrides it)"
    )
    loss_on: Literal["all", "final"] = option(
        "all", help="all: every example is a query given its prefix; final: the last one only"
    )
    finetune: Literal["full", "lora", "read_in"] = option(
        "full",
        help="full: every weight; lora: PEFT LoRA (QLoRA with model.quantization: 4bit); "
        "read_in: only the embedding renderer's read-in/read-out",
    )
    lora: LoraSettings = option(default_factory=LoraSettings, help="finetune: lora settings")
    optimizer: Literal["adamw", "sgd"] = option(
        "adamw",
        help="adamw; sgd: plain gradient descent (no momentum) with step lr, as the "
        "theory papers train (a fixed step: scheduler constant)",
    )
    lr: float = option(1e-4, help="peak learning rate")
    adam_epsilon: float = option(1e-8, help="AdamW ε (GPICL: a small ε shortens the plateau)")
    adam_betas: list[float] = option(default_factory=lambda: [0.9, 0.999], help="AdamW betas")
    weight_decay: float = option(0.0, help="AdamW weight decay")
    scheduler: str = option("cosine", choices=SCHEDULERS, help="transformers.get_scheduler name")
    warmup_steps: int = option(0, help="linear warmup steps")
    max_grad_norm: float | None = option(1.0, help="gradient clipping; null: none")
    mixed_precision: Literal["no", "bf16", "fp16"] = option(
        "no", help="autocast precision (bf16 also on CPU)"
    )
    gradient_checkpointing: bool = option(False, help="recompute activations in backward")
    curriculum: bool = option(True, help="follow the regression tasks' curriculum, if any")
    seed: int = option(
        0, help="seed of the initialisation (adapters, read-in, small model, model.init: random)"
    )
    log_every: int = option(10, help="steps between metrics.jsonl lines")
    eval_every: int = option(100, help="steps between evaluations (also before and after)")
    eval_episodes: int = option(32, help="episodes per task and split in each evaluation")
    eval_examples: int | None = option(
        None, help="examples per evaluation sequence; null: num_examples"
    )
    eval_batch_size: int = option(8, help="episodes per evaluation forward")
    checkpoint_every: int = option(100, help="steps between checkpoints; 0: none")
    keep_checkpoints: int = option(2, help="newest complete checkpoints kept")
    diagnostics: list[str] = option(
        default_factory=list,
        help="linear-attention weights read at every evaluation (first "
        "training task): subspace_alignment (Gaussian mixtures), preconditioner (looped, "
        "regression: vs Σ⁻¹ and L-step preconditioned GD), gd_step (one layer, regression: vs "
        "one GD step)",
    )

    def __post_init__(self) -> None:
        for name in (
            "steps",
            "batch_size",
            "gradient_accumulation_steps",
            "num_examples",
            "log_every",
            "eval_every",
            "eval_episodes",
            "eval_batch_size",
            "keep_checkpoints",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be ≥ 1, got {getattr(self, name)}")
        if self.batch_size % self.gradient_accumulation_steps:
            raise ValueError(
                f"batch_size: {self.batch_size} is not a multiple of "
                f"gradient_accumulation_steps ({self.gradient_accumulation_steps})"
            )
        if self.lr <= 0 or self.adam_epsilon <= 0:
            raise ValueError(
                f"lr and adam_epsilon: must be > 0, got {self.lr}, {self.adam_epsilon}"
            )
        if len(self.adam_betas) != 2 or not all(0 <= b < 1 for b in self.adam_betas):
            raise ValueError(f"adam_betas: expected two numbers in [0, 1), got {self.adam_betas}")
        unknown = [name for name in self.diagnostics if name not in DIAGNOSTICS]
        if unknown:
            raise ValueError(
                f"diagnostics: {unknown[0]!r} is unknown; allowed: {', '.join(DIAGNOSTICS)}"
            )
        if self.checkpoint_every < 0 or self.warmup_steps < 0:
            raise ValueError("checkpoint_every, warmup_steps: must be ≥ 0")

    @property
    def eval_length(self) -> int:
        return self.eval_examples or self.num_examples


@dataclass
class TrainConfig:
    job: Literal["train"] = option("train", help="which job this config runs")
    model: ModelSpec | None = option(None, help="pretrained model spec (see `hf-icl models`)")
    small_model: SmallModelConfig | None = option(
        None, help="a from-scratch small transformer instead of `model` (embedding renderer)"
    )
    tasks: list[Any] = option(
        default_factory=list,
        help="meta-training tasks (split 'train'); "
        "also evaluated on their unseen tasks (split 'test')",
    )
    eval_tasks: list[Any] = option(
        default_factory=list,
        help="tasks evaluated on split 'test' only, e.g. an unseen base dataset",
    )
    baselines: list[Any] = option(
        default_factory=list,
        help="baselines drawn with the final learning curves of numeric tasks, e.g. [ols, ridge]",
    )
    train: TrainSection = option(default_factory=TrainSection, help="optimisation settings")
    title: str = option("", help="report and model card title")

    def __post_init__(self) -> None:
        if (self.model is None) == (self.small_model is None):
            raise ValueError("set exactly one of model (a pretrained spec) and small_model")
        if not self.tasks:
            raise ValueError("tasks: list at least one meta-training task")
        if self.small_model is not None and self.train.finetune != "full":
            raise ValueError(
                f"train.finetune: {self.train.finetune!r} applies to pretrained "
                "models; a small model trains fully"
            )
        if self.model is not None and self.model.init == "random" and self.train.finetune != "full":
            why = {
                "lora": "there is nothing pretrained to adapt",
                "read_in": "only a read-in would train, into a frozen random model",
            }[self.train.finetune]
            raise ValueError(
                f"train.finetune: {self.train.finetune!r} with model.init: random: {why}; "
                "use finetune: full"
            )
        if self.model is not None and self.model.quantization and self.train.finetune == "full":
            raise ValueError(
                "train.finetune: a quantized model cannot be fully fine-tuned; "
                "use lora (QLoRA) or read_in"
            )
