"""The compare job's config: an evaluate config plus fine-tuning arms and controls."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

from hf_icl.config import option
from hf_icl.finetune_config import FinetuneConfig
from hf_icl.jobs.evaluate_config import EvaluateConfig
from hf_icl.models import ModelSpec


@dataclass
class CompareConfig(EvaluateConfig):
    job: Literal["compare"] = option("compare", help="which job this config runs")
    shots: list[int] = option(
        default_factory=lambda: [16],
        help="demonstrations shown in context and fine-tuned on (≥ 1 each; "
        "zero-shot is always scored)",
    )
    finetune: FinetuneConfig = option(
        default_factory=FinetuneConfig, help="fine-tuning arms and their hyperparameters"
    )
    controls: list[Literal["untrained"]] = option(
        default_factory=list,
        help="untrained: rerun everything on each model's architecture "
        "with random weights (Deutch et al.'s control)",
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if any(k < 1 for k in self.shots):
            raise ValueError(
                f"shots: compare needs shot counts ≥ 1 (zero-shot is always scored), "
                f"got {self.shots}"
            )
        if self.protocol != "queries":
            raise ValueError("protocol: compare uses the queries protocol")
        if self.scoring.method != "loglikelihood":
            raise ValueError(
                "scoring: compare reads label positions (accuracy, SimAOU, SimAM); "
                "method generate is for evaluate"
            )
        if self.baselines:
            raise ValueError("baselines: compare runs models only; use evaluate for baselines")
        if self.metrics:
            raise ValueError(
                "metrics: compare always reports accuracy, rec2ftp, simaou, simam "
                "and kendall_tau; leave metrics empty"
            )

    def all_models(self) -> list[ModelSpec]:
        """The models, then each one's untrained control (same architecture, random weights)."""
        controls = [
            dataclasses.replace(m, init="random", name=f"{m.name} (untrained)" if m.name else None)
            for m in self.models
            if "untrained" in self.controls
        ]
        return self.models + controls
