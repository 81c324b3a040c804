"""The evaluate job's config (also the base of compare configs)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from hf_icl.attention.settings import MomentumConfig
from hf_icl.config import option
from hf_icl.demos.options import DemoOptions
from hf_icl.generation_config import ScoringOptions
from hf_icl.models import ModelSpec


@dataclass
class EvaluateConfig:
    job: Literal["evaluate"] = option("evaluate", help="which job this config runs")
    models: list[ModelSpec] = option(default_factory=list, help="models to evaluate")
    tasks: list[Any] = option(
        default_factory=list,
        help="task names / YAML paths, or {name: ..., <param>: ...} overrides; "
        "an entry's 'models: [label, ...]' limits which models run on it "
        "([] = baselines only)",
    )
    protocol: Literal["queries", "sequential"] = option(
        "queries",
        help="queries: one demo list per seed, all queries after k demos; "
        "sequential: accuracy by position in one sequence",
    )
    shots: list[int] = option(
        default_factory=lambda: [0, 1, 2, 4, 8],
        help="numbers of demonstrations (positions for sequential)",
    )
    num_seeds: int = option(3, help="demo lists (queries) or episodes (sequential) per task")
    num_queries: int = option(100, help="queries per demo list (queries protocol)")
    demos: DemoOptions = option(
        default_factory=DemoOptions,
        help="how each query's demonstrations are selected and "
        "ordered (selection, order, permutations, encoder, ...); a task entry's 'demos:' "
        "overrides keys for that task",
    )
    baselines: list[Any] = option(
        default_factory=list, help="in-context baselines by name or {name: ..., <param>: ...}"
    )
    metrics: list[str] = option(
        default_factory=list, help="default: accuracy, macro_f1 (classification); nse (regression)"
    )
    scoring: ScoringOptions = option(
        default_factory=ScoringOptions,
        help="loglikelihood or generate (+ until, max_new_tokens, "
        "filters); a task entry's 'scoring:' overrides keys for that task",
    )
    pack_tokens: int = option(768, help="tokens per packed scoring forward")
    batch_size: int = option(8, help="sequences per forward (sequential protocol)")
    bootstrap: int = option(1000, help="bootstrap resamples for confidence intervals")
    seed: int = option(0, help="seed for demo orders and bootstrap")
    momentum: MomentumConfig | None = option(
        None, help="momentum attention for every model without its own, e.g. {eta: 0.1}"
    )
    title: str = option("", help="report title")

    moved_keys = {"demo_orders": "demos.permutations"}

    @property
    def demo_orders(self) -> int:
        """Orderings of each demo list: the units' order axis."""
        return self.demos.permutations

    def __post_init__(self) -> None:
        if not self.models and not self.baselines:
            raise ValueError("models: list at least one model (e.g. [smollm2-135m]) or baseline")
        if self.momentum is not None:
            for model in self.models:
                if model.momentum is None:
                    model.momentum = self.momentum
        if not self.tasks:
            raise ValueError("tasks: list at least one task, e.g. [sentiment]")
        for i, ref in enumerate(self.tasks):
            split_task_models(ref, [m.label for m in self.models], f"tasks.{i}")
        if not self.shots or any(k < 0 for k in self.shots):
            raise ValueError(f"shots: expected a non-empty list of integers ≥ 0, got {self.shots}")
        from hf_icl.metrics import PREDICTION_METRICS

        bad = [m for m in self.metrics if m not in PREDICTION_METRICS]
        if bad:
            from hf_icl.errors import did_you_mean

            raise ValueError(
                f"metrics: unknown metric {bad[0]!r}{did_you_mean(bad[0], PREDICTION_METRICS)}; "
                f"allowed: {', '.join(PREDICTION_METRICS)}"
            )
        for name in ("num_seeds", "num_queries", "pack_tokens", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be ≥ 1, got {getattr(self, name)}")


def split_task_models(ref: Any, labels: list[str], where: str) -> tuple[Any, frozenset[int] | None]:
    """A task entry's ``models:`` restriction as model indices, and the entry without it."""
    if not isinstance(ref, dict) or "models" not in ref:
        return ref, None
    ref = dict(ref)
    wanted = ref.pop("models")
    if not isinstance(wanted, list):
        raise ValueError(f"{where}.models: expected a list of model labels, got {wanted!r}")
    for label in wanted:
        if label not in labels:
            from hf_icl.errors import did_you_mean

            raise ValueError(
                f"{where}.models: unknown model {label!r}"
                f"{did_you_mean(str(label), labels)}; models: {', '.join(labels) or 'none'}"
            )
    return ref, frozenset(labels.index(label) for label in wanted)
