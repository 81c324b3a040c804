"""The report's interval covers demo-set and query variance; a query-only interval does not."""

from __future__ import annotations

import numpy as np
import pytest

from hf_icl.metrics import bootstrap_ci
from hf_icl.metrics.intervals import QUERIES_ONLY, cell_interval, random_effects_interval

TRUE_ACCURACY = 0.7
SET_SD = 0.1  # between demo sets: accuracy moves ±0.1 with the demonstrations
QUERIES = 40


def simulate(rng: np.random.Generator, sets: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Correctness of QUERIES queries under each of `sets` demo sets with known variances."""
    p = np.clip(TRUE_ACCURACY + rng.normal(0, SET_SD, sets), 0.01, 0.99)
    correct = rng.random((sets, QUERIES)) < p[:, None]
    pred = correct.astype(np.int64).ravel()
    return pred, np.ones_like(pred), np.repeat(np.arange(sets), QUERIES)


@pytest.mark.parametrize("sets", [3, 10])
def test_random_effects_interval_covers_the_true_mean(sets):
    rng = np.random.default_rng(sets)
    covered = covered_query_only = 0
    replicates = 500
    for r in range(replicates):
        pred, ref, groups = simulate(rng, sets)
        interval = cell_interval("accuracy", pred, ref, groups, resamples=100, seed=r)
        covered += interval.low <= TRUE_ACCURACY <= interval.high
        low, high = bootstrap_ci("accuracy", pred, ref, groups=groups, resamples=100, seed=r)
        covered_query_only += low <= TRUE_ACCURACY <= high
    assert covered / replicates >= 0.90
    assert covered_query_only / replicates < 0.85


def test_decomposition_recovers_known_variances():
    rng = np.random.default_rng(0)
    sets, queries = 400, 200
    effect = rng.normal(0, 0.3, sets)
    scores = effect[:, None] + rng.normal(0, 1.0, (sets, queries))
    per_set = scores.mean(1)
    within = scores.var(1, ddof=1) / queries
    interval = random_effects_interval(per_set, within)
    assert interval.between_var == pytest.approx(0.09, rel=0.2)
    assert interval.within_var == pytest.approx(1 / queries, rel=0.05)
    assert interval.demo_share == pytest.approx(0.09 / (0.09 + 1 / queries), abs=0.05)


def test_one_demo_set_says_it_covers_queries_only():
    pred = np.array([1, 0, 1, 1, 0, 1, 1, 1])
    interval = cell_interval("accuracy", pred, np.ones_like(pred), np.zeros(8, int), resamples=200)
    assert interval.covers == QUERIES_ONLY and interval.demo_share is None
    assert interval.low < 0.75 < interval.high


def test_macro_f1_and_nse_get_intervals_of_the_same_meaning():
    rng = np.random.default_rng(1)
    pred, ref = rng.integers(0, 3, 120), rng.integers(0, 3, 120)
    groups = np.repeat(np.arange(3), 40)
    f1 = cell_interval("macro_f1", pred, ref, groups, resamples=200)
    assert f1.sets == 3 and f1.low < f1.mean < f1.high
    err = cell_interval(
        "nse", rng.normal(size=120), rng.normal(size=120), groups, resamples=200, scale=2.0
    )
    assert err.low < err.mean < err.high and err.mean == pytest.approx(1.0, abs=0.4)
