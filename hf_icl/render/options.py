"""Renderer options: the `render:` section of a task definition (overridable per eval task)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from hf_icl.config import option


@dataclass
class RenderOptions:
    renderer: Literal["text", "embedding"] = option("text", help="how episodes become model inputs")
    delimiter: str = option("\n\n", help="text joining demonstrations (and the query)")
    numeric_template: str = option("Input: {x}\nOutput:", help="template for numeric inputs")
    precision: int = option(1, help="numbers are rendered as integers round(x * 10**precision)")
    label_words: list[str] | None = option(
        None, help="label words for numeric classification (default ' A', ' B', ...)"
    )
    target_bins: int = option(
        10, help="regression: number of single-token target bins (≤10 digits)"
    )
    target_range: list[float] = option(
        default_factory=lambda: [-3.0, 3.0], help="regression: [low, high] covered by the bins"
    )
    length_normalise: bool = option(False, help="score multi-token labels by mean token log-prob")
    calibrate: bool = option(
        False, help="contextual calibration: divide by p(label | content-free)"
    )
    chat_template: bool = option(
        False, help="render prompts with the model's chat template (lm-eval --apply_chat_template)"
    )
    multiturn: bool = option(
        True, help="chat: demonstrations as user/assistant turns (false: one user turn holds them)"
    )
    system: str | None = option(None, help="chat: system message (lm-eval --system_instruction)")

    def __post_init__(self) -> None:
        if not 2 <= self.target_bins <= 10:
            raise ValueError(
                f"target_bins: {self.target_bins} is outside 2..10 (single-token digits)"
            )
        if len(self.target_range) != 2 or self.target_range[0] >= self.target_range[1]:
            raise ValueError(
                f"target_range: expected [low, high] with low < high, got {self.target_range}"
            )
        if self.precision < 0:
            raise ValueError(f"precision: must be ≥ 0, got {self.precision}")
