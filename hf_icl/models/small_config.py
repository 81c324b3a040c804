"""The `small_model` section of a train config, apart from the models so that checking a
config imports no torch."""

from __future__ import annotations

from dataclasses import dataclass

from hf_icl.config import option


@dataclass
class SmallModelConfig:
    """The `small_model` section of a train config."""

    architecture: str = option("llama", choices=("llama", "looped"),
                               help="llama: a stack of layers; looped: one block applied `loops` times")
    layers: int = option(4, help="decoder layers (looped: layers in the looped block)")
    hidden: int = option(128, help="hidden size")
    heads: int = option(4, help="attention heads")
    intermediate: int | None = option(None, help="MLP width; null: 4 × hidden")
    vocab_size: int = option(32, help="label tokens available to classification tasks")
    max_positions: int = option(1024, help="longest sequence (2 positions per example)")
    loops: int = option(12, help="looped: loops b at training and evaluation")
    loss_loops: int | None = option(None, help="looped: last T loops in the loss; null: all b")
    eval_loops: list[int] = option(default_factory=list,
                                   help="looped: extra loop counts at which unseen tasks are "
                                   "also evaluated (e.g. more loops than in training)")

    def __post_init__(self) -> None:
        for name in ("layers", "hidden", "heads", "vocab_size", "max_positions", "loops"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be ≥ 1, got {getattr(self, name)}")
        if self.hidden % self.heads:
            raise ValueError(f"hidden: {self.hidden} is not a multiple of heads ({self.heads})")
        if self.loss_loops is not None and not 1 <= self.loss_loops <= self.loops:
            raise ValueError(f"loss_loops: {self.loss_loops} is outside 1..loops ({self.loops})")
        if self.eval_loops and (self.architecture != "looped" or min(self.eval_loops) < 1):
            raise ValueError(f"eval_loops: {self.eval_loops} needs architecture: looped and "
                             "loop counts ≥ 1")
