"""Numeric task families (projected, gaussian_mixture, regression): real numbers, fixed seeds."""

from __future__ import annotations

import time
import tracemalloc

import datasets
import numpy as np
import pytest

from hf_icl.config import from_dict
from hf_icl.errors import ConfigError, HfIclError
from hf_icl.resources import builtin_names
from hf_icl.samplers import FAMILIES, TaskSampler
from hf_icl.samplers.arrays import load_labelled_arrays
from hf_icl.samplers.projected import projection_matrix
from hf_icl.samplers.regression import Curriculum, target_function
from hf_icl.tasks import load_task, load_task_def

NUMERIC_FAMILIES = ("projected", "gaussian_mixture", "regression")


def make(family: str, **params) -> TaskSampler:
    cls = FAMILIES.get(family)
    return cls("t", from_dict(cls.Params, params, source="test", prefix="params"))


def projected(**params) -> TaskSampler:
    return make("projected", **{"proj_dim": 4, **params})


def digits() -> np.ndarray:
    return load_labelled_arrays("sklearn:digits")


def projection_of(episode) -> np.ndarray:
    meta = episode.meta
    return projection_matrix(
        meta["projection_seed"], meta["projection_shape"], meta["projection_std"]
    )


# --- projected -----------------------------------------------------------------------------


def test_projected_labels_are_a_bijective_permutation_of_the_true_classes():
    sampler, data = projected(num_tasks=16), digits()
    permutations = set()
    for index in range(20):
        ep = sampler.episode(index, 10, 5, "train")
        perm = ep.meta["permutation"]
        assert sorted(perm.tolist()) == list(range(10)) and ep.num_classes == 10
        np.testing.assert_array_equal(ep.demo_y, perm[data.y[ep.demo_ids]])
        np.testing.assert_array_equal(ep.query_y, perm[data.y[ep.query_ids]])
        assert not set(ep.demo_ids) & set(ep.query_ids)
        permutations.add(tuple(perm))
    assert len(permutations) > 5


def test_projected_inputs_are_the_task_projection_of_normalised_inputs():
    sampler, data = projected(num_tasks=4, proj_scale="std"), digits()
    by_task: dict[int, tuple] = {}
    for index in range(30):
        ep = sampler.episode(index, 6, 2, "train")
        projection = projection_of(ep)
        assert projection.shape == (4, 64) and ep.meta["projection_std"] == 1 / 64
        np.testing.assert_allclose(ep.demo_x, data.x[ep.demo_ids].astype(np.float64) @ projection.T)
        key = (ep.meta["projection_seed"], tuple(ep.meta["permutation"]))
        assert by_task.setdefault(ep.task_id, key) == key  # a task is the same every time
    assert sorted(by_task) == [0, 1, 2, 3]
    assert len({seed for seed, _ in by_task.values()}) == 4


def test_projected_variance_scale_gives_unit_variance_features():
    ep = projected(proj_dim=None).episode(0, 1500, 0, "test")
    assert ep.meta["projection_shape"] == (64, 64)
    assert ep.meta["projection_std"] == pytest.approx(1 / 8)
    assert abs(ep.demo_x.std() - 1.0) < 0.1


def test_projected_episode_is_a_pure_function_of_params_split_and_index():
    first, second = projected(num_tasks=8, seed=3), projected(num_tasks=8, seed=3)
    for split in ("train", "test"):
        a, b = first.episode(5, 7, 3, split), second.episode(5, 7, 3, split)
        assert a.task_id == b.task_id and a.demo_ids == b.demo_ids
        for field in ("demo_x", "demo_y", "query_x", "query_y"):
            np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
        np.testing.assert_array_equal(first.episodes(5, 1, 7, 3, split)[0].demo_x, a.demo_x)
    reseeded = projected(num_tasks=8, seed=4).episode(5, 7, 3, "train").meta
    assert reseeded["projection_seed"] != first.episode(5, 7, 3, "train").meta["projection_seed"]


def test_projected_test_split_uses_tasks_outside_the_pool():
    sampler = projected(num_tasks=8)
    train = [sampler.episode(i, 2, 1, "train") for i in range(80)]
    test = [sampler.episode(i, 2, 1, "test") for i in range(40)]
    assert {ep.task_id for ep in train} == set(range(8))
    test_ids = [ep.task_id for ep in test]
    assert len(set(test_ids)) == 40 and not set(test_ids) & set(range(8))
    pool_seeds = {ep.meta["projection_seed"] for ep in train}
    assert not pool_seeds & {ep.meta["projection_seed"] for ep in test}


@pytest.mark.parametrize(("first", "count"), [(0, 10), (10, 7), (100, 64), (3, 1), (7, 2)])
def test_bias_fraction_is_exact_in_every_training_batch(first, count):
    sampler = projected(num_tasks=64, bias_fraction=0.3)
    batch = sampler.episodes(first, count, 3, 1, "train")
    biased = [ep for ep in batch if ep.meta["biased"]]
    assert len(biased) == round(0.3 * count)
    for ep in biased:
        np.testing.assert_array_equal(ep.meta["permutation"], np.arange(10))
    assert not any(ep.meta["biased"] for ep in sampler.episodes(first, count, 3, 1, "test"))


def test_bias_of_single_episodes_is_deterministic_with_the_right_rate():
    sampler = projected(bias_fraction=0.3)
    flags = [sampler.episode(i, 1, 1, "train").meta["biased"] for i in range(300)]
    assert flags == [sampler.episode(i, 1, 1, "train").meta["biased"] for i in range(300)]
    assert abs(np.mean(flags) - 0.3) < 0.07


@pytest.mark.parametrize(
    ("name", "shape"),
    [("digits", (1797, 64)), ("iris", (150, 4)), ("wine", (178, 13)), ("breast_cancer", (569, 30))],
)
def test_datasets_are_flattened_and_z_normalised(name, shape):
    data = load_labelled_arrays(f"sklearn:{name}")
    assert data.x.shape == shape and len(data.y) == shape[0]
    assert abs(data.x.mean()) < 1e-5 and abs(data.x.std() - 1.0) < 1e-5


def test_class_subset_is_relabelled_in_the_given_order():
    sampler, data = projected(classes=[3, 8, 1]), digits()
    assert sampler.num_classes == 3
    ep = sampler.episode(0, 60, 10, "test")
    originals = data.y[ep.demo_ids]
    assert set(originals) == {3, 8, 1}
    position = np.array([[3, 8, 1].index(v) for v in originals])
    np.testing.assert_array_equal(ep.demo_y, ep.meta["permutation"][position])
    capped = projected(max_classes=4).episode(0, 80, 0, "test")
    assert set(data.y[capped.demo_ids]) <= {0, 1, 2, 3} and capped.num_classes == 4
    with pytest.raises(HfIclError, match=r"classes \[99\] are not among its labels"):
        projected(classes=[3, 99])


def test_too_many_examples_and_max_demos():
    sampler = projected(classes=[0, 1])  # 178 + 182 digits
    assert sampler.max_demos() == 360 and sampler.max_demos(10) == 350
    assert sampler.episode(0, 350, 10).num_demos == 350
    with pytest.raises(
        HfIclError, match="361 demos \\+ queries requested but sklearn:digits holds 360 examples"
    ):
        sampler.episode(0, 351, 10)


def test_unseen_base_dataset_is_fitted_to_the_training_input_size():
    sampler = projected(classes=[0, 1, 2], test_dataset="sklearn:iris", proj_dim=8)
    iris = load_labelled_arrays("sklearn:iris")
    ep = sampler.episode(0, 20, 5, "test")
    assert ep.meta["dataset"] == "sklearn:iris" and ep.demo_x.shape == (20, 8)
    padded = np.pad(iris.x[ep.demo_ids].astype(np.float64), ((0, 0), (0, 60))) * 4.0
    np.testing.assert_allclose(ep.demo_x, padded @ projection_of(ep).T)
    np.testing.assert_array_equal(ep.demo_y, ep.meta["permutation"][iris.y[ep.demo_ids]])
    assert sampler.max_demos() == 150
    assert sampler.episode(0, 20, 5, "train").meta["dataset"] == "sklearn:digits"
    wine = projected(classes=[0, 1], test_dataset="sklearn:wine").episode(0, 100, 0, "test")
    assert set(load_labelled_arrays("sklearn:wine").y[wine.demo_ids]) == {0, 1}


def test_saved_folder_with_integer_labels(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 2, 3))
    datasets.Dataset.from_dict({"pixels": x, "label": np.repeat([5, 7], 20)}).save_to_disk(
        str(tmp_path / "toy")
    )
    sampler = projected(dataset="toy", base_dir=str(tmp_path), proj_dim=2)
    assert sampler.num_classes == 2 and sampler.in_dim == 6
    ep = sampler.episode(0, 10, 4)
    assert set(ep.demo_y) <= {0, 1} and ep.demo_x.shape == (10, 2)


def test_saved_image_dataset_dict_uses_its_splits(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)

    def images(count: int) -> datasets.Dataset:
        pixels = rng.integers(0, 256, size=(count, 5, 5), dtype=np.uint8)
        features = datasets.Features(
            {"img": datasets.Image(), "label": datasets.ClassLabel(names=["a", "b", "c"])}
        )
        return datasets.Dataset.from_dict(
            {"img": [Image.fromarray(p) for p in pixels], "label": np.arange(count) % 3},
            features=features,
        )

    datasets.DatasetDict({"train": images(30), "test": images(12)}).save_to_disk(
        str(tmp_path / "imgs")
    )
    sampler = projected(dataset=str(tmp_path / "imgs"), classes=[2, 0], test_dataset_split="test")
    assert sampler.in_dim == 25 and sampler.num_classes == 2
    assert sampler.max_demos() == 8  # classes 2 and 0 of the 12 test images
    ep = sampler.episode(0, 6, 2, "test")
    test_labels = load_labelled_arrays(str(tmp_path / "imgs"), "test").y
    assert set(test_labels[ep.demo_ids]) <= {0, 2} and max(ep.demo_ids) < 12
    with pytest.raises(HfIclError, match="no split 'valid'; splits: train, test"):
        projected(dataset=str(tmp_path / "imgs"), dataset_split="valid")


def test_bad_label_column_and_features_give_clear_errors(tmp_path):
    with pytest.raises(HfIclError, match="no label column 'target'; columns: features, label"):
        projected(label_column="target")
    x = np.arange(18.0).reshape(6, 3)
    datasets.Dataset.from_dict({"a": x, "b": x, "label": ["u", "v"] * 3}).save_to_disk(
        str(tmp_path / "two")
    )
    with pytest.raises(HfIclError, match=r"several input columns \(a, b\); set feature_column"):
        projected(dataset=str(tmp_path / "two"))
    with pytest.raises(
        HfIclError,
        match="label column 'label' has type .*string.*; expected integer labels or ClassLabel",
    ):
        projected(dataset=str(tmp_path / "two"), feature_column="a")
    datasets.Dataset.from_dict({"words": [["a", "b"]] * 4, "label": [0, 1] * 2}).save_to_disk(
        str(tmp_path / "words")
    )
    with pytest.raises(HfIclError, match="column 'words' is not numeric"):
        projected(dataset=str(tmp_path / "words"))
    x[4, 1] = np.nan
    datasets.Dataset.from_dict({"x": x, "label": [0, 1] * 3}).save_to_disk(str(tmp_path / "nan"))
    with pytest.raises(HfIclError, match="NaN or infinite values in 1 rows \\(first: row 4\\)"):
        projected(dataset=str(tmp_path / "nan"))
    with pytest.raises(
        ConfigError,
        match="dataset: unknown dataset 'sklearn:digit' \\(did you mean 'sklearn:digits'\\?\\)",
    ):
        projected(dataset="sklearn:digit")


def test_a_pool_of_2_to_the_20_tasks_is_never_materialised():
    digits()  # load the dataset outside the measurement
    tracemalloc.start()
    start = time.perf_counter()
    sampler = projected(log2_num_tasks=20)
    ep = sampler.episode(123_456, 50, 50, "train")
    elapsed = time.perf_counter() - start
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert 0 <= ep.task_id < 2**20
    assert elapsed < 1.0
    assert peak < 4 * 2**20  # one 4x64 projection per task would already need 2 GiB


# --- gaussian_mixture ----------------------------------------------------------------------


def test_gmm_means_lie_in_the_shared_subspace_with_norm_signal():
    sampler = make(
        "gaussian_mixture", dim=12, subspace_dim=3, signal=2.5, num_tasks=5, test_signal=1.5
    )
    basis = sampler.episode(0, 2, 2).meta["U"]
    np.testing.assert_allclose(basis.T @ basis, np.eye(3), atol=1e-12)
    means: dict[int, np.ndarray] = {}
    for split, norm in (("train", 2.5), ("test", 1.5)):
        for index in range(15):
            ep = sampler.episode(index, 4, 2, split)
            mu = ep.meta["mu"]
            assert ep.meta["U"] is basis and ep.num_classes == 2
            assert np.linalg.norm(mu) == pytest.approx(norm)
            np.testing.assert_allclose(mu - basis @ (basis.T @ mu), 0.0, atol=1e-12)
            np.testing.assert_array_equal(means.setdefault(ep.task_id, mu), mu)
    assert sum(task_id >= 0 for task_id in means) <= 5  # the pool
    assert sorted(task_id for task_id in means if task_id < 0) == list(range(-15, 0))


def test_gmm_labels_are_balanced_and_inputs_follow_the_mixture():
    ep = make("gaussian_mixture", dim=4, subspace_dim=1, signal=8.0).episode(0, 3000, 1000)
    y = np.concatenate([ep.demo_y, ep.query_y])
    x = np.concatenate([ep.demo_x, ep.query_x])
    assert abs(y.mean() - 0.5) < 0.03
    noise = x - (2 * y - 1)[:, None] * ep.meta["mu"]
    assert abs(noise.std() - 1.0) < 0.03 and abs(noise.mean()) < 0.03


def test_gmm_flip_rate_matches_label_flip():
    sampler = make("gaussian_mixture", dim=4, subspace_dim=1, signal=8.0, label_flip=0.2)
    flipped = []
    for index in range(5):
        ep = sampler.episode(index, 1000, 0)
        clean = (ep.demo_x @ ep.meta["mu"] > 0).astype(int)  # |x·μ| ≈ 64 ± 8: never wrong
        flipped.append(ep.demo_y != clean)
    assert abs(np.mean(flipped) - 0.2) < 0.02


def test_gmm_subspace_larger_than_dim_is_an_error():
    with pytest.raises(ConfigError, match=r"params.subspace_dim: 5 is outside 1..dim \(dim = 3\)"):
        make("gaussian_mixture", dim=3, subspace_dim=5)
    with pytest.raises(ConfigError, match="gmm.yaml: params.subspace_dim: 50 is outside"):
        load_task({"name": "gmm", "subspace_dim": 50})


# --- regression ----------------------------------------------------------------------------


def regression(**params) -> TaskSampler:
    return make("regression", **params)


def test_linear_targets_are_w_dot_x():
    sampler = regression(function="linear", dim=10)
    for index in range(5):
        ep = sampler.episode(index, 8, 4, "train")
        w = ep.meta["w"]
        np.testing.assert_allclose(ep.demo_y, ep.demo_x @ w, rtol=1e-12)
        np.testing.assert_allclose(ep.query_y, ep.query_x @ w, rtol=1e-12)
        assert ep.meta["noise_std"] == 0.0 and ep.meta["error_scale"] == 10.0
        assert ep.num_classes is None and ep.task_id == index
        np.testing.assert_array_equal(ep.meta["input_cov"], np.eye(10))


def test_sparse_linear_weights_have_exactly_sparsity_non_zeros():
    sampler = regression(function="sparse_linear", dim=20, sparsity=3)
    for index in range(20):
        ep = sampler.episode(index, 5, 5)
        assert np.count_nonzero(ep.meta["w"]) == 3 and ep.meta["error_scale"] == 3.0
        np.testing.assert_allclose(ep.demo_y, ep.demo_x @ ep.meta["w"], rtol=1e-12)


def test_noisy_linear_residuals_have_noise_std():
    ep = regression(function="noisy_linear", dim=5, noise_std=0.5).episode(0, 4000, 0)
    residual = ep.demo_y - ep.demo_x @ ep.meta["w"]
    assert ep.meta["noise_std"] == 0.5
    assert abs(residual.std() - 0.5) < 0.02 and abs(residual.mean()) < 0.03


def test_relu_net_targets():
    ep = regression(function="relu_net", dim=6, hidden=100).episode(3, 20, 5)
    w1, w2 = ep.meta["W1"], ep.meta["w2"]
    assert w1.shape == (100, 6) and w2.shape == (100,)
    expected = np.sqrt(2 / 100) * np.maximum(ep.demo_x @ w1.T, 0.0) @ w2
    np.testing.assert_allclose(ep.demo_y, expected, rtol=1e-12)


def walk_tree(coords: np.ndarray, leaves: np.ndarray, x: np.ndarray) -> tuple[float, int]:
    """Reference traversal: (leaf value, number of splits taken)."""
    node, splits = 0, 0
    while node < len(coords):
        node = 2 * node + (2 if x[coords[node]] > 0 else 1)
        splits += 1
    return leaves[node - len(coords)], splits


@pytest.mark.parametrize("depth", [2, 4])
def test_decision_tree_has_the_requested_depth(depth):
    ep = regression(function="decision_tree", dim=8, depth=depth).episode(1, 300, 0)
    coords, leaves = ep.meta["tree_coords"], ep.meta["leaf_values"]
    assert len(coords) == 2**depth - 1 and len(leaves) == 2**depth
    walked = [walk_tree(coords, leaves, x) for x in ep.demo_x]
    assert {splits for _, splits in walked} == {depth}
    np.testing.assert_array_equal(ep.demo_y, [value for value, _ in walked])


@pytest.mark.parametrize("function", ["linear", "sparse_linear", "relu_net", "decision_tree"])
def test_target_function_recomputes_targets_from_meta(function):
    ep = regression(function=function, dim=6).episode(2, 10, 5)
    np.testing.assert_allclose(target_function(ep.meta, ep.query_x), ep.query_y, rtol=1e-12)


@pytest.mark.parametrize("function", ["linear", "sparse_linear", "relu_net", "decision_tree"])
def test_error_scale_is_the_mean_squared_target(function):
    """Garg's normalisation: predicting 0 scores ≈ 1 (d, sparsity, d and 1 here)."""
    sampler = regression(function=function, dim=10)
    episodes = [sampler.episode(i, 5, 0) for i in range(600)]
    mean_square = np.mean([ep.demo_y**2 for ep in episodes])
    assert mean_square / episodes[0].meta["error_scale"] == pytest.approx(1.0, abs=0.12)


def test_skewed_and_explicit_covariance_eigenvalues():
    sampler = regression(dim=5, covariance="skewed", skew_power=1.0)
    raw = 1 / np.arange(1, 6)
    np.testing.assert_allclose(sampler.eigenvalues, raw * 5 / raw.sum())
    x = sampler.episode(0, 20000, 0).demo_x
    np.testing.assert_allclose(x.var(axis=0), sampler.eigenvalues, rtol=0.05)
    explicit = regression(dim=3, covariance=[4, 1, 0.25])
    np.testing.assert_array_equal(
        explicit.episode(0, 1, 1).meta["input_cov"], np.diag([4.0, 1.0, 0.25])
    )
    with pytest.raises(ConfigError, match=r"covariance: \[4.0, 1.0\] must list 3 \(= dim\)"):
        regression(dim=3, covariance=[4, 1])


def test_inverse_covariance_prior():
    sampler = regression(dim=3, covariance=[4, 1, 0.25], weight_prior="inverse_covariance")
    weights = np.stack([sampler.episode(i, 1, 0).meta["w"] for i in range(1500)])
    np.testing.assert_allclose(weights.var(axis=0), [0.25, 1.0, 4.0], rtol=0.12)
    assert sampler.episode(0, 1, 0).meta["error_scale"] == 3.0
    with pytest.raises(ConfigError, match="weight_prior: 'inverse_covariance' applies to"):
        regression(function="relu_net", weight_prior="inverse_covariance")


def test_curriculum_schedule_and_active_dims():
    curriculum = Curriculum()
    assert [curriculum.at(s) for s in (0, 1999, 2000, 4000, 30_000, 10**6)] == [
        (5, 11),
        (5, 11),
        (6, 13),
        (7, 15),
        (20, 41),
        (20, 41),
    ]
    sampler = regression(function="sparse_linear", dim=20, curriculum={"interval": 100})
    assert sampler.curriculum_at(250) == (7, 15)
    assert regression(dim=20).curriculum_at(250) == (20, None)
    ep = sampler.episode(0, 50, 0, active_dims=sampler.curriculum_at(0)[0])
    assert not ep.demo_x[:, 5:].any() and ep.demo_x[:, :5].all()
    assert not ep.meta["w"][5:].any() and ep.meta["active_dims"] == 5
    tree = regression(function="decision_tree", dim=20)
    assert tree.episode(0, 1, 0, active_dims=5).meta["tree_coords"].max() < 5
    with pytest.raises(HfIclError, match="active_dims 2 is outside 3..20"):
        sampler.episode(0, 1, 0, active_dims=2)
    with pytest.raises(ConfigError, match="params.curriculum.dims_end: 30 exceeds dim"):
        regression(dim=20, curriculum={"dims_end": 30})
    with pytest.raises(ConfigError, match="curriculum.points_start/_end/_inc: 50/41/2"):
        regression(dim=20, curriculum={"points_start": 50})


def test_curriculum_arguments_leave_the_sampler_unchanged():
    """An episode is a pure function of (params, split, index, curriculum arguments)."""
    sampler = regression(
        function="sparse_linear", dim=8, curriculum={"dims_start": 3, "dims_end": 8}
    )
    before = {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in vars(sampler).items()}
    full = sampler.episode(4, 6, 2, "train")
    staged = sampler.episodes(4, 3, 6, 2, "train", active_dims=3)
    assert all(not ep.demo_x[:, 3:].any() and ep.meta["active_dims"] == 3 for ep in staged)
    assert sampler.episode(4, 6, 2, "train").meta["active_dims"] == 8  # no stage left behind
    again = sampler.episode(4, 6, 2, "train", active_dims=3)
    for a, b in ((staged[0], again), (full, sampler.episode(4, 6, 2, "train"))):
        np.testing.assert_array_equal(a.demo_x, b.demo_x)
        np.testing.assert_array_equal(a.query_y, b.query_y)
        np.testing.assert_array_equal(a.meta["w"], b.meta["w"])
    assert vars(sampler).keys() == before.keys()
    for key, value in vars(sampler).items():
        if isinstance(value, np.ndarray):
            np.testing.assert_array_equal(value, before[key])
        else:
            assert value is before[key]
    assert projected().curriculum_at(100) == (None, None)


def test_regression_config_errors():
    with pytest.raises(
        ConfigError, match="function: invalid value 'lineer' \\(did you mean 'linear'\\?\\)"
    ):
        regression(function="lineer")
    with pytest.raises(ConfigError, match="num_tasks \\(4\\) and log2_num_tasks \\(2\\) are both"):
        regression(num_tasks=4, log2_num_tasks=2)


# --- all numeric families ------------------------------------------------------------------


@pytest.mark.parametrize("family", ["gaussian_mixture", "regression"])
def test_synthetic_episodes_are_pure_and_pools_are_finite(family):
    first, second = make(family, num_tasks=3, seed=9), make(family, num_tasks=3, seed=9)
    ids = set()
    for index in range(20):
        a, b = first.episode(index, 4, 2, "train"), second.episode(index, 4, 2, "train")
        np.testing.assert_array_equal(a.demo_x, b.demo_x)
        np.testing.assert_array_equal(a.query_y, b.query_y)
        ids.add(a.task_id)
    assert ids == {0, 1, 2}
    assert first.episode(0, 4, 2, "test").task_id == -1
    with pytest.raises(HfIclError, match="split 'valid' is not one of: train, test"):
        first.episode(0, 4, 2, "valid")


def test_every_shipped_numeric_task_yields_episodes():
    numeric = [
        name for name in builtin_names("tasks") if load_task_def(name).family in NUMERIC_FAMILIES
    ]
    assert {
        "digits_projected",
        "iris_projected",
        "gmm",
        "linear_regression",
        "noisy_linear_regression",
        "sparse_linear_regression",
        "relu_net_regression",
        "decision_tree_regression",
    } <= set(numeric)
    for name in numeric:
        task, sampler = load_task(name)
        assert task.description and task.citation and task.render["renderer"] == "text"
        for split in ("train", "test"):
            ep = sampler.episode(2, 4, 3, split)
            assert ep.demo_x.shape[0] == 4 and ep.query_x.shape[0] == 3
            assert np.isfinite(ep.demo_x).all() and np.isfinite(ep.query_y).all()
            assert ep.num_classes == sampler.num_classes and ep.label_words is None
