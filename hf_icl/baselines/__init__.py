"""Baselines: learners that predict an Episode's queries from its demonstrations (no tokens).

Importing this package registers every baseline in ``BASELINES``.
"""

from hf_icl.baselines import classification, regression
from hf_icl.baselines.base import (
    BASELINES,
    Baseline,
    Predictions,
    make_baseline,
)
from hf_icl.baselines.regression import normalised_squared_error, squared_prediction_difference

__all__ = [
    "BASELINES",
    "Baseline",
    "Predictions",
    "classification",
    "make_baseline",
    "normalised_squared_error",
    "regression",
    "squared_prediction_difference",
]
