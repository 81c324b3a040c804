"""Momentum attention settings: a config section checked when the run config loads (no torch).

Only the range of ``layers`` waits for the model, whose layer count ``check_layers`` needs.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar, Literal

from hf_icl.config import option
from hf_icl.errors import HfIclError, did_you_mean

VARIANTS = ("additive", "recursive")
CONFIG_KEY = "hf_icl_momentum"


@dataclass
class MomentumConfig:
    """Momentum attention settings, saved as ``model.config.hf_icl_momentum``."""

    # Resolved configs keep the keys a config wrote (as when this section was a free mapping),
    # so a run folder written with `momentum: {eta: 0.1}` still matches its config.
    resolved_as_written: ClassVar[bool] = True

    eta: float = option(help="decay η in [0, 1): a value k positions back weighs η^k")
    layers: str | list[int] = option("all", help='"all" or a list of layer indices')
    include_current: bool = option(False, help="also add the query's own value (additive variant)")
    variant: Literal["additive", "recursive"] = option(
        "additive",
        help="additive: Attn_t + Σ η^(t−i) v_i; recursive: (1−η)·Attn_t + η·MoAttn_(t−1)",
    )

    def __post_init__(self) -> None:
        eta = self.eta
        if isinstance(eta, bool) or not isinstance(eta, (int, float)) or not 0 <= eta < 1:
            raise ValueError(f"eta: must be a number in [0, 1), got {eta!r}")
        if self.variant not in VARIANTS:
            raise ValueError(
                f"variant: unknown momentum variant {self.variant!r}"
                f"{did_you_mean(self.variant, VARIANTS)}; allowed: {', '.join(VARIANTS)}"
            )
        if self.include_current and self.variant != "additive":
            raise ValueError("include_current: applies to the additive variant only")
        if self.layers == "all":
            return
        layers = [] if isinstance(self.layers, str) else self.layers
        try:
            layers = list(layers)
        except TypeError:
            layers = []
        valid = all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in layers)
        if not layers or not valid:
            raise ValueError(
                f"layers: must be 'all' or a non-empty list of layer indices ≥ 0, "
                f"got {self.layers!r}"
            )
        self.layers = layers

    def check_layers(self, num_layers: int) -> None:
        """Raise a one-line HfIclError when a layer index is past the model's last layer."""
        if self.layers != "all" and max(self.layers) >= num_layers:
            raise HfIclError(
                f"momentum layers must be 'all' or indices in [0, {num_layers}), got {self.layers!r}"
            )

    def applies_to(self, layer_idx: int) -> bool:
        return self.layers == "all" or layer_idx in self.layers

    def to_dict(self) -> dict:
        """Every setting, JSON-ready, as the model config records it."""
        return dataclasses.asdict(self)
