"""The `demos:` section: how each query's demonstrations are selected and ordered.

It sits at the top level of an evaluate/compare config and may be overridden per task entry;
the model and the baselines see the demonstrations it picks.
"""

from __future__ import annotations

from dataclasses import dataclass

from hf_icl.config import option

DEFAULT_ENCODER = "all-minilm-l6-v2"
MODEL_ENCODER = "model"  # the evaluated LM's own mean-pooled last hidden states


@dataclass
class DemoOptions:
    selection: str = option(
        "random",
        help="random (one list per seed) | first_n | balanced | fixed | "
        "per_query_random | bm25 | topk | dpp, or a name another module registered",
    )
    order: str = option(
        "as_selected",
        help="as_selected | nearest_first | nearest_last (most similar next to "
        "the query) | random: how each k-shot prompt arranges its k demonstrations",
    )
    permutations: int = option(
        1, help="orderings of each demo list, applied after order (Shen et al.); 1: none"
    )
    encoder: str = option(
        DEFAULT_ENCODER,
        help="topk, dpp: a sentence-transformers model: 'all-minilm-l6-v2' (the "
        "packaged offline copy), a local folder or a Hub id (online); or 'model': the "
        "evaluated model's own mean-pooled last hidden states",
    )
    candidates: int | None = option(
        None,
        help="dpp: the nearest pool rows each query's diverse set is chosen from "
        "(default: 4 × the largest shot count)",
    )
    fixed: list[int] | str | None = option(
        None, help="fixed: pool row indices in prompt order, or a file with one index per line"
    )
    label_order: list[int] | None = option(
        None, help="balanced: the class cycle, e.g. [1, 0]; default: class indices ascending"
    )

    def __post_init__(self) -> None:
        if self.permutations < 1:
            raise ValueError(f"permutations: must be ≥ 1, got {self.permutations}")
        if not isinstance(self.encoder, str) or not self.encoder.strip():
            raise ValueError(f"encoder: expected a model name or folder, got {self.encoder!r}")
        if self.candidates is not None and self.candidates < 1:
            raise ValueError(f"candidates: must be ≥ 1, got {self.candidates}")

    @property
    def uses_model_states(self) -> bool:
        """Selection embeds with the evaluated model, so it needs that model loaded."""
        return self.encoder == MODEL_ENCODER

    @property
    def default(self) -> bool:
        """Today's behaviour: the sampler's own random list per seed, as drawn."""
        return self.selection == "random" and self.order == "as_selected"
