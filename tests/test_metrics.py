import numpy as np
import pytest

from hf_icl.metrics import _resampled_stat, bootstrap_ci, compute


@pytest.mark.parametrize("name", ["accuracy", "macro_f1"])
def test_vectorised_resample_stats_equal_the_evaluate_modules(name):
    rng = np.random.default_rng(0)
    pred, ref = rng.integers(0, 4, (20, 15)), rng.integers(0, 3, (20, 15))
    pred[0] = 1  # a row where one class is never predicted
    expected = [compute(name, p, r) for p, r in zip(pred, ref)]
    np.testing.assert_allclose(_resampled_stat(name, pred, ref), expected, rtol=1e-12)


def test_bootstrap_is_stratified_by_seed_and_brackets_the_mean_over_seeds():
    # Two demo seeds, each predicting a single class: per-seed macro-F1 is low, pooled is not.
    pred = np.array([0] * 40 + [1] * 40)
    gold = np.array([0, 1] * 20 + [0, 1] * 20)
    groups = [0] * 40 + [1] * 40
    per_seed = np.mean(
        [compute("macro_f1", pred[:40], gold[:40]), compute("macro_f1", pred[40:], gold[40:])]
    )
    pooled = compute("macro_f1", pred, gold)
    low, high = bootstrap_ci("macro_f1", pred, gold, groups=groups, resamples=300)
    assert low <= per_seed <= high < pooled
    low, high = bootstrap_ci("accuracy", pred, gold, groups=groups, resamples=300, seed=1)
    assert low < 0.5 < high and high - low < 0.3
