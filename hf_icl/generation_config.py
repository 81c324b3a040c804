"""The ``scoring:`` section: how a task's queries are scored (top level, overridable per task).

Light on purpose (no torch): configs are validated before any model code loads.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from hf_icl.config import option
from hf_icl.filters import Filter, parse_filters


@dataclass
class ScoringOptions:
    method: Literal["loglikelihood", "generate"] = option(
        "loglikelihood",
        help="loglikelihood: rank the label candidates; generate: greedy "
        "generation, filtered and compared with the answer",
    )
    until: list[str] | None = option(
        None,
        help="generate: stop strings (default: the demo delimiter; chat prompts stop at "
        "the model's end-of-turn token)",
    )
    max_new_tokens: int = option(32, help="generate: most tokens generated per query")
    filters: list[Any] = option(
        default_factory=lambda: ["strip"],
        help="generate: filters applied in order (strip, lowercase, "
        "first_line, {function: regex, regex_pattern: ..., group_select: 0})",
    )
    batch_size: int = option(128, help="generate: queries decoded together")

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens: must be ≥ 1, got {self.max_new_tokens}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size: must be ≥ 1, got {self.batch_size}")
        if self.until is not None and any(not isinstance(s, str) or not s for s in self.until):
            raise ValueError(f"until: expected non-empty strings, got {self.until!r}")
        self.parsed_filters()

    def parsed_filters(self) -> list[Filter]:
        return parse_filters(self.filters, "filters")
