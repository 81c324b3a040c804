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
for _name, _folder in {
    "accuracy": "accuracy",
    "macro_f1": "macro_f1",
    "nse": "nse",
    "rec2ftp": "rec2ftp",
    "simaou": "simaou",
    "simam": "simam",
    "kendall_tau": "kendall_tau",
    "exact_match": "exact_match",
}.items():
    METRICS.register(_name)(_HERE / _folder / f"{_folder}.py")

PREDICTION_METRICS = ["accuracy", "macro_f1", "nse", "exact_match"]  # from (pred, gold) samples
CLASSIFICATION_METRICS = ["accuracy", "macro_f1"]
REGRESSION_METRICS = ["nse"]
HIGHER_IS_BETTER = {
    "accuracy": True,
    "macro_f1": True,
    "nse": False,
    "exact_match": True,
    "unparsed": False,
}


@cache
def load_metric(name: str, where: str = "metrics"):
    import evaluate

    return evaluate.load(str(METRICS.get(name, where=where)))


def compute(name: str, predictions, references, **kwargs) -> float:
    """One metric value; `evaluate` does the computing, we keep the float."""
    result = load_metric(name).compute(
        predictions=list(predictions), references=list(references), **kwargs
    )
    return float(result[name])


def _resampled_stat(name: str, pred: np.ndarray, ref: np.ndarray, **kwargs) -> np.ndarray:
    """The metric of every row of (resamples, n) arrays, vectorised."""
    if name in ("accuracy", "exact_match"):
        return (pred == ref).mean(1)
    if name == "nse":
        return ((pred - ref) ** 2 / kwargs.get("scale", 1.0)).mean(1)
    if name == "macro_f1":  # F1 averaged over the classes present in pred or ref, per row
        classes = np.union1d(pred, ref)
        one_hot_p = pred[..., None] == classes
        one_hot_r = ref[..., None] == classes
        tp = (one_hot_p & one_hot_r).sum(1)
        denom = one_hot_p.sum(1) + one_hot_r.sum(1)
        f1 = np.where(denom > 0, 2 * tp / np.maximum(denom, 1), 0.0)
        return f1.sum(1) / np.maximum((denom > 0).sum(1), 1)
    return np.array([compute(name, a, b, **kwargs) for a, b in zip(pred, ref)])


def bootstrap_ci(
    name: str,
    predictions,
    references,
    *,
    groups=None,
    resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    **kwargs,
) -> tuple[float, float]:
    """Percentile bootstrap of the mean over groups (demo seeds) of the per-group metric.

    Samples are resampled within their group, so the interval is about the same statistic as
    the reported mean (for macro-F1 a pooled metric would differ from the mean over seeds).
    """
    pred, ref = np.asarray(predictions), np.asarray(references)
    groups = np.zeros(len(pred), int) if groups is None else np.asarray(groups)
    rng = np.random.default_rng(seed)
    stats = np.zeros(resamples)
    keys = np.unique(groups)
    for g in keys:
        members = np.flatnonzero(groups == g)
        idx = members[rng.integers(0, len(members), size=(resamples, len(members)))]
        stats += _resampled_stat(name, pred[idx], ref[idx], **kwargs)
    low, high = np.quantile(stats / len(keys), [(1 - level) / 2, (1 + level) / 2])
    return float(low), float(high)
