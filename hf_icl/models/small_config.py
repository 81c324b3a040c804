"""The `small_model` section of a train config, apart from the models so that checking a
config imports no torch."""

from __future__ import annotations

from dataclasses import dataclass

from hf_icl.attention.settings import MomentumConfig
from hf_icl.config import option

ARCHITECTURE_NAMES = ("llama", "looped", "linear_attention", "looped_linear_attention")
PAIRED_ARCHITECTURES = ("linear_attention", "looped_linear_attention")
LOOPED_ARCHITECTURES = ("looped", "looped_linear_attention")


@dataclass
class SmallModelConfig:
    """The `small_model` section of a train config."""

    architecture: str = option(
        "llama",
        choices=ARCHITECTURE_NAMES,
        help="llama: a stack of layers; looped: one block applied `loops` times; "
        "linear_attention: one linear self-attention layer on the paired layout (theory "
        "papers); looped_linear_attention: that layer applied `loops` times (Gatmiry et al.)",
    )
    layers: int = option(4, help="decoder layers (looped: layers in the looped block)")
    hidden: int = option(128, help="hidden size")
    heads: int = option(4, help="attention heads")
    intermediate: int | None = option(None, help="MLP width; null: 4 × hidden")
    vocab_size: int = option(32, help="label tokens available to classification tasks")
    max_positions: int = option(1024, help="longest sequence (2 positions per example)")
    loops: int = option(12, help="looped kinds: loops b at training and evaluation")
    loss_loops: int | None = option(None, help="looped: last T loops in the loss; null: all b")
    eval_loops: list[int] = option(
        default_factory=list,
        help="looped: extra loop counts at which unseen tasks are "
        "also evaluated (e.g. more loops than in training)",
    )
    parameterization: str = option(
        "full",
        choices=("full", "bilinear"),
        help="linear attention: full: free (d+1)×(d+1) P and Q; bilinear: only the x–x block Γ "
        "of Q (Magen & Vardi's model; Gatmiry et al.'s looped model)",
    )
    init_std: float = option(
        0.01,
        help="linear attention: std of the initial weights (0: zeros, "
        "bilinear only: full weights at 0 get no gradient)",
    )
    momentum: MomentumConfig | None = option(
        None,
        help="llama, looped: momentum attention from initialisation (Dai et al. trained "
        "with it from scratch): {eta: 0.1, layers: all, …}; null: none",
    )

    def __post_init__(self) -> None:
        for name in ("layers", "hidden", "heads", "vocab_size", "max_positions", "loops"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be ≥ 1, got {getattr(self, name)}")
        if self.hidden % self.heads:
            raise ValueError(f"hidden: {self.hidden} is not a multiple of heads ({self.heads})")
        if self.loss_loops is not None and not 1 <= self.loss_loops <= self.loops:
            raise ValueError(f"loss_loops: {self.loss_loops} is outside 1..loops ({self.loops})")
        if self.eval_loops and (
            self.architecture not in LOOPED_ARCHITECTURES or min(self.eval_loops) < 1
        ):
            raise ValueError(
                f"eval_loops: {self.eval_loops} needs a looped architecture "
                f"({', '.join(LOOPED_ARCHITECTURES)}) and loop counts ≥ 1"
            )
        if self.momentum is not None and self.architecture in PAIRED_ARCHITECTURES:
            raise ValueError(
                f"momentum: applies to the softmax architectures (llama, looped), "
                f"not {self.architecture}"
            )
        if self.init_std < 0 or (self.init_std == 0 and self.parameterization == "full"):
            raise ValueError(
                f"init_std: {self.init_std}; allowed: > 0 (≥ 0 with parameterization: bilinear)"
            )

    @property
    def layout(self) -> str:
        """How the embedding renderer lays out examples for this architecture."""
        return "paired" if self.architecture in PAIRED_ARCHITECTURES else "interleaved"
