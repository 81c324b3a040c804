"""The `finetune` section of a compare config: which arms, with which settings.

Kept apart from the arms themselves (hf_icl.finetune, which needs torch) so a compare config is
validated without importing torch; `FT_ARM_NAMES` lists the arms that module registers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

from hf_icl.config import option
from hf_icl.errors import unknown_name

FT_ARM_NAMES = ("dai", "full", "layer_causal", "lora")

Optimizer = Literal["sgd", "adam", "adamw"]


@dataclass
class ArmSpec:
    """One arm and the settings it overrides; a bare string means ``{name: <string>}``."""

    string_field: ClassVar[str] = "name"

    name: str = option(help="fine-tuning arm: dai, lora, full, layer_causal")
    lr: float | None = option(None, help="learning rate (default: finetune.lr)")
    epochs: int | None = option(
        None, help="passes over the demonstrations (default: finetune.epochs)"
    )
    optimizer: Optimizer | None = option(
        None, help="sgd, adam or adamw (default: finetune.optimizer)"
    )
    lr_sweep: list[float] | None = option(
        None, help="candidate learning rates (default: finetune.lr_sweep)"
    )


@dataclass
class FinetuneConfig:
    """The `finetune` section of a compare config."""

    arms: list[ArmSpec] = option(
        default_factory=lambda: [ArmSpec("dai")], help="arms by name or {name: ..., lr: ..., ...}"
    )
    lr: float = option(0.01, help="learning rate of every arm without its own")
    epochs: int = option(1, help="passes over the demonstrations (Dai et al.: 1)")
    optimizer: Optimizer = option("sgd", help="sgd (no momentum, no weight decay), adam, adamw")
    lr_sweep: list[float] = option(
        default_factory=list,
        help="candidate learning rates chosen on held-out episodes of the "
        "task (meta-train split, never the test queries); empty: use lr",
    )
    sweep_episodes: int = option(2, help="held-out episodes per learning-rate candidate")
    sweep_queries: int = option(20, help="held-out queries per sweep episode")
    target_modules: list[str] = option(
        default_factory=lambda: ["q_proj", "v_proj"], help="lora: modules that get an adapter"
    )
    lora_rank: int = option(8, help="lora: adapter rank")
    lora_alpha: float = option(16.0, help="lora: scaling numerator (scale = alpha / rank)")

    def __post_init__(self) -> None:
        names = [arm.name for arm in self.arms]
        unknown = [(i, name) for i, name in enumerate(names) if name not in FT_ARM_NAMES]
        if unknown:
            i, name = unknown[0]
            raise ValueError(str(unknown_name("fine-tuning arm", name, FT_ARM_NAMES, f"arms.{i}")))
        if not names or len(set(names)) != len(names):
            raise ValueError(f"arms: list each arm once, at least one, got {names}")
        rates = [self.lr, *self.lr_sweep] + [
            r for a in self.arms for r in [a.lr, *(a.lr_sweep or [])] if r is not None
        ]
        if any(r <= 0 for r in rates):
            raise ValueError(f"lr: learning rates must be > 0, got {rates}")
        epochs = [self.epochs] + [a.epochs for a in self.arms if a.epochs is not None]
        counts = epochs + [self.sweep_episodes, self.sweep_queries, self.lora_rank]
        if any(n < 1 for n in counts):
            raise ValueError("epochs, sweep_episodes, sweep_queries, lora_rank: must be ≥ 1")

    def settings(self, arm: ArmSpec) -> ArmSettings:
        """The arm's hyperparameters: its own where given, else the section's."""
        return ArmSettings(
            arm.name,
            _own_or(arm.lr, self.lr),
            _own_or(arm.epochs, self.epochs),
            _own_or(arm.optimizer, self.optimizer),
            _own_or(arm.lr_sweep, self.lr_sweep),
            self.target_modules,
            self.lora_rank,
            self.lora_alpha,
        )


def _own_or(own, default):
    return default if own is None else own


@dataclass
class ArmSettings:
    name: str
    lr: float
    epochs: int
    optimizer: Optimizer
    lr_sweep: list[float]
    target_modules: list[str]
    lora_rank: int
    lora_alpha: float
