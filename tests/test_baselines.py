"""Baselines: known answers on hand-built episodes (fixed seeds), batching, 0 shots, errors."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression

from hf_icl.baselines import (
    BASELINES,
    make_baseline,
    normalised_squared_error,
    squared_prediction_difference,
)
from hf_icl.episode import Episode
from hf_icl.errors import HfIclError


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """The batched MLPs and L-BFGS run many tiny ops: on shared cores extra threads only wait."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def regression_episodes(
    count: int, dim: int, demos: int, queries: int = 20, noise_std: float = 0.0, seed: int = 0
) -> list[Episode]:
    """Garg's linear tasks: w ~ N(0, I), x ~ N(0, I), y = w·x + N(0, σ²)."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(count):
        w = rng.normal(size=dim)
        x = rng.normal(size=(demos + queries, dim))
        y = x @ w + noise_std * rng.normal(size=len(x))
        out.append(
            Episode(
                task="linear",
                family="regression",
                task_id=i,
                demo_x=x[:demos],
                demo_y=y[:demos],
                query_x=x[demos:],
                query_y=y[demos:],
                meta={"w": w, "noise_std": noise_std, "error_scale": dim},
            )
        )
    return out


def gmm_episodes(
    count: int,
    dim: int,
    subspace_dim: int,
    signal: float,
    demos: int,
    queries: int = 50,
    seed: int = 0,
) -> list[Episode]:
    """Magen & Vardi's tasks: U (d × k) orthonormal and shared, μ = R·Uz with z on the unit
    sphere, y = ±1 uniform (class 0 ↔ −1), x = yμ + N(0, I)."""
    rng = np.random.default_rng(seed)
    basis, _ = np.linalg.qr(rng.normal(size=(dim, subspace_dim)))
    out = []
    for i in range(count):
        z = rng.normal(size=subspace_dim)
        mu = signal * basis @ (z / np.linalg.norm(z))
        cls = rng.integers(0, 2, size=demos + queries)
        x = (2 * cls - 1)[:, None] * mu + rng.normal(size=(demos + queries, dim))
        out.append(
            Episode(
                task="gmm",
                family="gaussian_mixture",
                task_id=i,
                demo_x=x[:demos],
                demo_y=cls[:demos],
                query_x=x[demos:],
                query_y=cls[demos:],
                num_classes=2,
                meta={"U": basis, "mu": mu},
            )
        )
    return out


def multiclass_episodes(
    count: int, dim: int, num_classes: int, demos: int, queries: int = 10, seed: int = 0
) -> list[Episode]:
    """Isotropic Gaussian classes around random means (a projected-family stand-in)."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(count):
        means = 1.5 * rng.normal(size=(num_classes, dim))
        cls = rng.integers(0, num_classes, size=demos + queries)
        x = means[cls] + rng.normal(size=(demos + queries, dim))
        out.append(
            Episode(
                task="blobs",
                family="projected",
                task_id=i,
                demo_x=x[:demos],
                demo_y=cls[:demos],
                query_x=x[demos:],
                query_y=cls[demos:],
                num_classes=num_classes,
            )
        )
    return out


def text_episode(labels: list[int], num_classes: int) -> Episode:
    return Episode(
        task="sentiment",
        family="text_classification",
        task_id=0,
        demo_x=[f"review {i}" for i in range(len(labels))],
        demo_y=np.array(labels),
        query_x=["a query", "another"],
        query_y=np.array([0, 1]),
        num_classes=num_classes,
    )


def preds(name: str, episodes: list[Episode], shots: int, **params) -> np.ndarray:
    return np.stack([p.pred for p in make_baseline(name, **params).predict(episodes, shots)])


def mse(name: str, episodes: list[Episode], shots: int, **params) -> float:
    return float(
        np.mean(
            (preds(name, episodes, shots, **params) - np.stack([ep.query_y for ep in episodes]))
            ** 2
        )
    )


def accuracy(name: str, episodes: list[Episode], shots: int) -> float:
    return float(np.mean(preds(name, episodes, shots) == np.stack([e.query_y for e in episodes])))


# A small episode set per task kind on which every baseline runs (params keep it fast).
FAST = {"mlp": {"train_steps": 100}, "sgd_mlp": {"train_steps": 50}}
GMM_ONLY = {"oracle_subspace_mle", "known_mean_oracle"}
META_GMM = gmm_episodes(4, dim=6, subspace_dim=2, signal=2.0, demos=12, queries=5)


def episodes_for(name: str) -> list[Episode]:
    if BASELINES.get(name).task_kind in ("regression", "any"):
        return regression_episodes(4, dim=6, demos=12, queries=5)
    if name in GMM_ONLY:
        return META_GMM
    return multiclass_episodes(4, dim=6, num_classes=3, demos=12, queries=5)


# --- regression: known answers ------------------------------------------------------------


@pytest.mark.parametrize("demos", [12, 30])
def test_ols_is_exact_on_noiseless_overdetermined_problems(demos):
    episodes = regression_episodes(8, dim=10, demos=demos)
    assert (
        np.abs(preds("ols", episodes, demos) - np.stack([e.query_y for e in episodes])).max()
        <= 1e-8
    )


def test_ols_interpolates_with_fewer_examples_than_dimensions():
    episodes = regression_episodes(3, dim=10, demos=4)
    fitted = make_baseline("ols").predict(
        [dataclasses.replace(ep, query_x=ep.demo_x, query_y=ep.demo_y) for ep in episodes], 4
    )
    for p, ep in zip(fitted, episodes, strict=True):
        np.testing.assert_allclose(p.pred, ep.demo_y, atol=1e-10)


def test_one_gd_step_equals_its_closed_form():
    """w₁ = (η/k) Σ y_i x_i for GD on (1/2k)Σ(w·x_i − y_i)² from w = 0."""
    episodes, shots, lr = regression_episodes(5, dim=7, demos=9, noise_std=0.3), 6, 0.37
    expected = [
        ep.query_x @ (lr / shots * ep.demo_x[:shots].T @ ep.demo_y[:shots]) for ep in episodes
    ]
    np.testing.assert_allclose(
        preds("gd", episodes, shots, gd_steps=1, lr=lr), expected, rtol=1e-12
    )
    np.testing.assert_allclose(
        preds("averaging", episodes, shots), np.stack(expected) / lr, rtol=1e-12
    )


def test_two_gd_steps_follow_the_update_rule():
    episodes, shots, lr = regression_episodes(3, dim=4, demos=6), 6, 0.2
    for p, ep in zip(preds("gd", episodes, shots, gd_steps=2, lr=lr), episodes, strict=True):
        x, y, w = ep.demo_x, ep.demo_y, np.zeros(4)
        for _ in range(2):
            w = w - lr * x.T @ (x @ w - y) / shots
        np.testing.assert_allclose(p, ep.query_x @ w, rtol=1e-12)


@pytest.mark.parametrize("demos", [5, 15])
def test_preconditioned_gd_one_full_step_is_least_squares(demos):
    """With P = Σ̂⁺ (cov_reg = 0) one step at lr = 1 is the min-norm least-squares fit."""
    episodes = regression_episodes(4, dim=10, demos=demos, noise_std=0.5)
    np.testing.assert_allclose(
        preds("preconditioned_gd", episodes, demos, lr=1.0),
        preds("ols", episodes, demos),
        atol=1e-9,
    )


def test_preconditioned_gd_with_meta_covariance_is_an_oracle():
    episodes = regression_episodes(3, dim=5, demos=8)
    for ep in episodes:
        ep.meta["input_cov"] = np.eye(5)
    oracle = make_baseline("preconditioned_gd", preconditioner="input_cov", gd_steps=3)
    assert oracle.uses_meta
    assert oracle.label == "preconditioned_gd(gd_steps=3, preconditioner=input_cov) (oracle)"
    np.testing.assert_allclose(
        np.stack([p.pred for p in oracle.predict(episodes, 8)]),
        preds("gd", episodes, 8, gd_steps=3),
        rtol=1e-12,
    )


@pytest.mark.parametrize("demos", [4, 20])
def test_ridge_approaches_ols_as_lambda_vanishes(demos):
    episodes = regression_episodes(6, dim=10, demos=demos, noise_std=0.5)
    np.testing.assert_allclose(
        preds("ridge", episodes, demos, lam=1e-9), preds("ols", episodes, demos), atol=1e-6
    )


def test_bayes_ridge_beats_ols_on_noisy_few_shot_problems():
    episodes = regression_episodes(300, dim=10, demos=10, noise_std=1.0, seed=1)
    bayes, ols = mse("ridge", episodes, 8, lam="bayes"), mse("ols", episodes, 8)
    assert bayes < 0.5 * ols  # OLS near the interpolation threshold (k ≈ d) blows up
    assert make_baseline("ridge").uses_meta


def test_knn_regression_averages_the_nearest_targets():
    ep = Episode(
        task="t",
        family="regression",
        task_id=0,
        demo_x=np.array([[0.0], [1.0], [2.0], [10.0]]),
        demo_y=np.array([1.0, 2.0, 3.0, 100.0]),
        query_x=np.array([[0.9], [9.0]]),
        query_y=np.zeros(2),
    )
    np.testing.assert_allclose(preds("knn", [ep], 4, knn_neighbors=2), [[1.5, 51.5]])


def test_gd_tune_picks_the_optimal_one_step_size():
    """For x ~ N(0, I), w ~ N(0, I) the best single step is η* = k/(k + d + 1) = 0.45 here."""
    gd = make_baseline("gd", lr_grid=[0.1, 0.45, 1.5])
    gd.tune(regression_episodes(200, dim=10, demos=9, seed=2))
    gd.predict(regression_episodes(2, dim=10, demos=9, seed=3), 9)
    assert gd.tuned == {9: 0.45}


def test_lasso_tune_prefers_small_alpha_on_noiseless_sparse_tasks():
    rng = np.random.default_rng(4)
    episodes = regression_episodes(40, dim=12, demos=10, seed=4)
    for ep in episodes:  # 2 non-zero weights out of 12
        w = np.zeros(12)
        w[rng.choice(12, 2, replace=False)] = rng.normal(size=2)
        ep.demo_y, ep.query_y = ep.demo_x @ w, ep.query_x @ w
    lasso = make_baseline("lasso", alpha_grid=[1e-3, 1.0])
    lasso.tune(episodes[:20])
    assert mse("lasso", episodes[20:], 10, alpha=1e-3) < 0.1 * mse("ols", episodes[20:], 10)
    lasso.predict(episodes[20:], 10)
    assert lasso.tuned == {10: 1e-3}


def test_mlp_learns_a_linear_task():
    episodes = regression_episodes(8, dim=3, demos=40, seed=5)
    zero_predictor = mse("ridge", episodes, 0)
    assert mse("mlp", episodes, 40, train_steps=200) < 0.01 * zero_predictor


def test_normalised_squared_error_and_spd():
    episodes = regression_episodes(400, dim=8, demos=1)
    zero = np.stack(
        [
            normalised_squared_error(np.zeros(20), ep.query_y, ep.meta["error_scale"])
            for ep in episodes
        ]
    )
    assert abs(zero.mean() - 1.0) < 0.05
    np.testing.assert_allclose(squared_prediction_difference([1.0, 2.0], [0.0, 4.0]), [1.0, 4.0])


# --- classification: known answers --------------------------------------------------------


def test_subspace_oracle_needs_far_fewer_examples_than_mle():
    """d = 200, k = 5, R = 2 (Bayes accuracy Φ(2) ≈ 0.977). Expected accuracy Φ(μ·μ̂/|μ̂|):
    the oracle ≈ 0.96 at 5 shots, plain MLE ≈ 0.73 at 5, ≈ 0.86 at 20 shots and ≈ 0.95 only at
    100. Tolerance: the oracle reaches 0.93 at 5 shots; MLE stays below 0.8 at 5 and 0.9 at 20
    (estimates over 200 tasks × 50 queries, standard error < 0.01)."""
    episodes = gmm_episodes(200, dim=200, subspace_dim=5, signal=2.0, demos=100)
    assert accuracy("oracle_subspace_mle", episodes, 5) >= 0.93
    assert accuracy("mle", episodes, 5) < 0.8
    assert accuracy("mle", episodes, 20) < 0.9
    assert accuracy("mle", episodes, 100) >= 0.93
    assert abs(accuracy("known_mean_oracle", episodes, 0) - 0.977) < 0.01


def test_known_mean_oracle_probs_are_the_gmm_posterior():
    ep = gmm_episodes(1, dim=4, subspace_dim=2, signal=1.0, demos=3, queries=6)[0]
    out = make_baseline("known_mean_oracle").predict([ep], 3)[0]
    posterior = 1 / (1 + np.exp(-2 * ep.query_x @ ep.meta["mu"]))
    np.testing.assert_allclose(out.probs[:, 1], posterior, rtol=1e-12)
    np.testing.assert_array_equal(out.pred, (posterior > 0.5).astype(int))
    ep.meta["label_flip"] = 0.1
    flipped = make_baseline("known_mean_oracle").predict([ep], 3)[0]
    np.testing.assert_allclose(flipped.probs[:, 1], 0.9 * posterior + 0.1 * (1 - posterior))


def test_logistic_matches_sklearn():
    """Same objective as sklearn with C = 1/l2_penalty when sklearn's bias is a penalised
    constant feature."""
    episodes = multiclass_episodes(3, dim=4, num_classes=3, demos=15, seed=6)
    ours = make_baseline("logistic", l2_penalty=0.5).predict(episodes, 15)
    for p, ep in zip(ours, episodes, strict=True):

        def bias(x):
            return np.hstack([x, np.ones((len(x), 1))])

        ref = LogisticRegression(C=2.0, fit_intercept=False, tol=1e-10, max_iter=10_000)
        ref.fit(bias(ep.demo_x), ep.demo_y)
        np.testing.assert_allclose(p.probs, ref.predict_proba(bias(ep.query_x)), atol=1e-5)


def test_logistic_with_one_class_of_demos_stays_finite():
    ep = multiclass_episodes(1, dim=3, num_classes=3, demos=2, seed=7)[0]
    ep.demo_y, ep.query_x, ep.query_y = np.array([2, 2]), ep.demo_x, np.array([2, 2])
    out = make_baseline("logistic").predict([ep], 2)[0]
    assert np.all(out.pred == 2) and np.all(out.probs < 0.999) and np.all(out.probs > 1e-3)


def test_multiclass_learners_beat_chance():
    episodes = multiclass_episodes(10, dim=5, num_classes=3, demos=30, queries=20, seed=8)
    for name in ["mle", "logistic", "svm", "knn", "sgd_mlp"]:
        assert accuracy(name, episodes, 30) > 0.7, name


def test_knn_vote_and_majority_ties_go_to_the_lowest_class():
    ep = Episode(
        task="t",
        family="projected",
        task_id=0,
        demo_x=np.array([[0.0], [1.0], [5.0], [6.0]]),
        demo_y=np.array([2, 1, 1, 2]),
        query_x=np.array([[0.4], [5.4]]),
        query_y=np.zeros(2, dtype=int),
        num_classes=3,
    )
    np.testing.assert_array_equal(preds("knn", [ep], 4, knn_neighbors=2), [[1, 1]])
    np.testing.assert_array_equal(preds("knn", [ep], 4, knn_neighbors=1), [[2, 1]])
    np.testing.assert_array_equal(preds("majority", [ep], 4), [[1, 1]])


def test_majority_on_text_inputs_uses_smoothed_frequencies():
    out = make_baseline("majority").predict([text_episode([1, 1, 0, 1], 3)], 4)[0]
    np.testing.assert_array_equal(out.pred, [1, 1])
    np.testing.assert_allclose(out.probs, [[2 / 7, 4 / 7, 1 / 7]] * 2)


# --- every baseline: batching and 0 shots --------------------------------------------------


@pytest.mark.parametrize("name", BASELINES.names())
def test_batched_predictions_equal_per_episode_predictions(name):
    episodes = episodes_for(name)
    first = episodes[0]  # fewer queries: a second group in the same call
    episodes = [
        *episodes,
        dataclasses.replace(first, query_x=first.query_x[:2], query_y=first.query_y[:2]),
    ]
    baseline = make_baseline(name, **FAST.get(name, {}))
    batched = baseline.predict(episodes, 9)
    for ep, together in zip(episodes, batched, strict=True):
        alone = baseline.predict([ep], 9)[0]
        np.testing.assert_allclose(together.pred, alone.pred, atol=1e-6)
        assert (together.probs is None) == (alone.probs is None) == (not baseline.defines_probs)
        if alone.probs is not None:
            np.testing.assert_allclose(together.probs, alone.probs, atol=1e-6)
            np.testing.assert_allclose(alone.probs.sum(-1), 1.0, rtol=1e-12)


@pytest.mark.parametrize("name", BASELINES.names())
def test_zero_shots_gives_the_prior(name):
    episodes = episodes_for(name)
    baseline = make_baseline(name)
    out = baseline.predict(episodes, 0)
    if name == "known_mean_oracle":  # needs no demos: its Bayes rule
        assert out[0].pred.tolist() == baseline.predict(episodes, 5)[0].pred.tolist()
        return
    for p in out:
        assert np.all(p.pred == 0) and p.pred.shape == (5,)
        if baseline.defines_probs:
            np.testing.assert_allclose(p.probs, 1.0 / episodes[0].num_classes)


# --- errors ---------------------------------------------------------------------------------


def test_unknown_baseline_suggests_a_name():
    with pytest.raises(HfIclError, match=r"unknown baseline 'olss' \(did you mean 'ols'\?\)"):
        make_baseline("olss")


def test_unknown_param_suggests_a_name():
    with pytest.raises(
        HfIclError,
        match=r"unknown key 'knn_neighbours' \(did you mean "
        r"'knn_neighbors'\?\)",
    ):
        make_baseline("knn", knn_neighbours=5)
    with pytest.raises(HfIclError, match=r"baseline 'ridge': lam: expected float or"):
        make_baseline("ridge", lam="bayse")
    with pytest.raises(HfIclError, match=r"baseline 'ols' takes no params; got lam"):
        make_baseline("ols", lam=1.0)


def test_wrong_task_kind_is_one_line():
    message = "baseline 'ols' is for regression; task 'gmm' is classification"
    with pytest.raises(HfIclError, match=message):
        make_baseline("ols", task="gmm", task_kind="classification")
    with pytest.raises(HfIclError, match=message):
        make_baseline("ols").predict(META_GMM, 3)
    make_baseline("knn", task="linear", task_kind="regression")


def test_too_many_shots_text_inputs_and_missing_meta_are_errors():
    with pytest.raises(HfIclError, match="shots=13 but an episode of task 'gmm' has only 12"):
        make_baseline("mle").predict(META_GMM, 13)
    with pytest.raises(HfIclError, match="'svm' needs numeric inputs; task 'sentiment' has text"):
        make_baseline("svm").predict([text_episode([0, 1], 2)], 2)
    with pytest.raises(HfIclError, match="needs episode meta 'U'; task 'blobs' provides: nothing"):
        make_baseline("oracle_subspace_mle").predict(multiclass_episodes(1, 3, 2, 4), 2)
    tuned = make_baseline("gd")
    tuned.tune(regression_episodes(2, dim=3, demos=4))
    with pytest.raises(HfIclError, match="shots=6 but an episode of task 'linear' has only 4"):
        tuned.predict(regression_episodes(2, dim=3, demos=8), 6)


def test_labels_name_non_default_params_so_a_learner_can_be_listed_twice():
    assert make_baseline("ols").label == "ols"
    assert make_baseline("gd", gd_steps=5).label == "gd(gd_steps=5)"
    assert make_baseline("ridge", lam=1.0).label == "ridge(lam=1.0)"
    assert make_baseline("ridge").label == "ridge (oracle)"  # λ = σ²/τ² reads the task's σ


def test_tuning_needs_episodes_with_queries():
    from hf_icl.samplers import FAMILIES
    from hf_icl.samplers.regression import RegressionParams

    sampler = FAMILIES.get("regression")("lin", RegressionParams(dim=3))
    with pytest.raises(HfIclError, match="tuning episodes need queries"):
        make_baseline("gd").tune(sampler.episodes(0, 2, 6, 0, "train"))
