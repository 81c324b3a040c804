"""Metrics as local `evaluate` modules (the Hub's metric scripts are unreachable offline), plus
the aggregation every report uses: per shot count, mean and std across demo seeds and a
bootstrap confidence interval over (seed, query) samples."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import numpy as np

from hf_icl.registry import Registry

METRICS: Registry[Path] = Registry("metric")
_HERE = Path(__file__).resolve().parent
for _name, _folder in {"accuracy": "accuracy", "macro_f1": "macro_f1", "nse": "nse",
                        "rec2ftp": "rec2ftp", "simaou": "simaou", "simam": "simam",
                        "kendall_tau": "kendall_tau"}.items():
    METRICS.register(_name)(_HERE / _folder / f"{_folder}.py")

PREDICTION_METRICS = ["accuracy", "macro_f1", "nse"]  # computed from (pred, gold) samples
CLASSIFICATION_METRICS = ["accuracy", "macro_f1"]
REGRESSION_METRICS = ["nse"]
HIGHER_IS_BETTER = {"accuracy": True, "macro_f1": True, "nse": False}


@cache
def load_metric(name: str, where: str = "metrics"):
    import evaluate

    return evaluate.load(str(METRICS.get(name, where=where)))


def compute(name: str, predictions, references, **kwargs) -> float:
    """One metric value; `evaluate` does the computing, we keep the float."""
    result = load_metric(name).compute(predictions=list(predictions), references=list(references),
                                       **kwargs)
    return float(result[name])


def bootstrap_ci(name: str, predictions, references, *, resamples: int = 1000, seed: int = 0,
                 level: float = 0.95, **kwargs) -> tuple[float, float]:
    """Percentile bootstrap over samples (vectorised for the built-in metrics)."""
    pred, ref = np.asarray(predictions), np.asarray(references)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(pred), size=(resamples, len(pred)))
    if name == "accuracy":
        stats = (pred[idx] == ref[idx]).mean(1)
    elif name == "nse":
        stats = ((pred[idx] - ref[idx]) ** 2 / kwargs.get("scale", 1.0)).mean(1)
    else:
        stats = np.array([compute(name, pred[i], ref[i], **kwargs) for i in idx[:200]])
    low, high = np.quantile(stats, [(1 - level) / 2, (1 + level) / 2])
    return float(low), float(high)
