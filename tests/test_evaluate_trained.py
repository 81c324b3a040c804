"""A train run's small model in an evaluate run: the trainer's own numbers on the same episodes,
queries after k demonstrations, loop counts chosen at evaluation time, and what is refused."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from hf_icl.cli import main
from hf_icl.models import load_trained
from hf_icl.tasks import load_task

GMM = {
    "name": "gmm",
    "dim": 12,
    "subspace_dim": 2,
    "signal": 1.0,
    "render": {"renderer": "embedding"},
}
REGRESSION = {
    "name": "linear_regression",
    "dim": 3,
    "covariance": "skewed",
    "weight_prior": "inverse_covariance",
    "render": {"renderer": "embedding"},
}
TRAIN = {
    "steps": 20,
    "batch_size": 32,
    "log_every": 10,
    "eval_every": 20,
    "checkpoint_every": 0,
    "scheduler": "constant",
}


def run(folder: Path, data: dict) -> tuple[int, Path]:
    """A job run in-process on a config written to ``folder``; (exit code, results folder)."""
    from accelerate.state import AcceleratorState

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "cfg.yaml"
    path.write_text(yaml.safe_dump(data))
    out = folder / "out"
    try:
        return main([data["job"], str(path), "--out", str(out), "--quiet"]), out
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)


def results(out: Path) -> dict:
    return json.loads((out / "results.json").read_text())


def curves(out: Path, metric: str) -> dict[str, list[float]]:
    """An evaluate run's mean by shots, per model."""
    by_model: dict[str, dict[int, float]] = {}
    for s in results(out)["summary"]:
        if s["metric"] == metric:
            by_model.setdefault(s["model"], {})[s["shots"]] = s["mean"]
    return {m: [c[k] for k in sorted(c)] for m, c in by_model.items()}


@pytest.fixture(scope="module")
def gmm_run(tmp_path_factory) -> Path:
    """Magen & Vardi's bilinear linear attention trained on two-class mixtures (8 examples)."""
    code, out = run(
        tmp_path_factory.mktemp("gmm"),
        {
            "job": "train",
            "small_model": {
                "architecture": "linear_attention",
                "parameterization": "bilinear",
                "init_std": 0.0,
            },
            "tasks": [GMM],
            "baselines": ["oracle_subspace_mle"],
            "train": {
                **TRAIN,
                "num_examples": 8,
                "eval_episodes": 16,
                "optimizer": "sgd",
                "lr": 0.5,
                "max_grad_norm": None,
            },
        },
    )
    assert code == 0
    return out


@pytest.fixture(scope="module")
def looped_run(tmp_path_factory) -> Path:
    """Looped linear attention (2 loops) on regression, also evaluated at 1 and 4 loops."""
    code, out = run(
        tmp_path_factory.mktemp("looped"),
        {
            "job": "train",
            "small_model": {
                "architecture": "looped_linear_attention",
                "parameterization": "bilinear",
                "init_std": 0.0,
                "loops": 2,
                "loss_loops": 1,
                "eval_loops": [1, 4],
            },
            "tasks": [REGRESSION],
            "train": {**TRAIN, "num_examples": 10, "eval_episodes": 32, "lr": 0.02},
        },
    )
    assert code == 0
    return out


def evaluate(tmp_path: Path, models: list, tasks: list, **settings) -> tuple[int, Path]:
    return run(
        tmp_path,
        {"job": "evaluate", "models": models, "tasks": tasks, "bootstrap": 20, **settings},
    )


def trainer_curves(train_out: Path) -> dict[str, list[float]]:
    """The trainer's final curves on unseen tasks, by split, and its baselines'."""
    train = results(train_out)
    found = {s["split"]: s["after"]["curve"] for s in train["summary"]}
    return found | {b["baseline"]: b["curve"] for b in train["baselines"]}


def test_a_trained_linear_attention_model_scores_what_the_trainer_scored(gmm_run, tmp_path):
    code, out = evaluate(
        tmp_path,
        [{"spec": str(gmm_run / "model"), "name": "lsa"}],
        [GMM],
        protocol="sequential",
        shots=list(range(8)),
        num_seeds=16,  # the trainer's 16 unseen evaluation episodes
        baselines=["oracle_subspace_mle"],
    )
    assert code == 0
    got, trained = curves(out, "accuracy"), trainer_curves(gmm_run)
    np.testing.assert_allclose(got["lsa"], trained["unseen"], atol=1e-5)
    oracle = "oracle_subspace_mle (oracle)"
    np.testing.assert_allclose(got[f"baseline:{oracle}"], trained[oracle], atol=1e-5)
    assert 0.6 < got["lsa"][-1] < 1.0  # a weak signal: curves that can differ


def test_queries_are_scored_after_their_first_k_demonstrations(gmm_run, tmp_path):
    code, out = evaluate(
        tmp_path,
        [{"spec": str(gmm_run / "model"), "name": "lsa"}],
        [GMM],
        shots=[0, 2, 5],
        num_seeds=2,
        num_queries=6,
    )
    assert code == 0
    gamma = load_trained(gmm_run / "model")[0].lm.gamma.detach().double().numpy()
    sampler = load_task(GMM)[1]
    rows = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert len(rows) == 2 * 3 * 6
    for row in rows:
        ep = sampler.episode(row["seed"], 5, 6, split="test")
        k, x = row["shots"], ep.query_x[row["query"]]
        signs = 2.0 * ep.demo_y[:k] - 1.0
        context = (signs[:, None] * ep.demo_x[:k]).mean(0) if k else np.zeros(12)
        y_hat = x @ gamma.T @ context  # Magen & Vardi: ŷ = x_qᵀ W (1/k) Σ y_i x_i
        expected = [-np.logaddexp(0.0, y_hat), y_hat - np.logaddexp(0.0, y_hat)]
        np.testing.assert_allclose(row["scores"], expected, atol=2e-5)
        assert row["pred"] == int(y_hat > 0) and row["gold"] == int(ep.query_y[row["query"]])


def test_a_looped_model_runs_at_every_loop_count_it_is_given(looped_run, tmp_path):
    code, out = evaluate(
        tmp_path,
        [{"spec": str(looped_run / "model"), "name": "lsa", "eval_loops": [4, 1]}],
        [REGRESSION],
        protocol="sequential",
        shots=list(range(10)),
        num_seeds=32,
        baselines=["ols"],
    )
    assert code == 0
    got, trained = curves(out, "nse"), trainer_curves(looped_run)
    assert list(got) == ["lsa", "lsa, 4 loops", "lsa, 1 loops", "baseline:ols"]
    for label, split in [("lsa", "unseen"), ("lsa, 4 loops", "unseen, 4 loops")]:
        np.testing.assert_allclose(got[label], trained[split], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got["lsa, 1 loops"], trained["unseen, 1 loops"], rtol=1e-4)
    assert got["lsa, 4 loops"][-1] < got["lsa"][-1] < got["lsa, 1 loops"][-1]


THREE_DIGITS = {
    "name": "digits_projected",
    "classes": [0, 1, 2],
    "proj_dim": 12,
    "render": {"renderer": "embedding"},
}


@pytest.mark.parametrize(
    "job, model, task, message",
    [
        ("evaluate", {"eval_loops": [0]}, GMM, "models.0.eval_loops: loop counts must be ≥ 1"),
        ("evaluate", {"eval_loops": [3]}, GMM, "is a trained linear_attention model; eval_loops"),
        ("evaluate", {"dtype": "bfloat16"}, GMM, "remove dtype"),
        ("evaluate", {}, THREE_DIGITS, "two-class tasks only, and task 'digits_projected' has 3"),
        ("evaluate", {}, "sentiment", "reads numeric inputs; give the task render"),
        ("evaluate", {}, {**GMM, "dim": 6}, "reads inputs of size 12; task 'gmm' has size 6"),
        ("evaluate", "tiny-random-llama", GMM, "needs a trained read-in"),
        ("compare", {}, "sentiment", "evaluate the trained small model"),
    ],
)
def test_bad_input_is_one_line_before_anything_is_written(
    gmm_run, tmp_path, capsys, job, model, task, message
):
    if isinstance(model, dict):
        model = {"spec": str(gmm_run / "model"), **model}
    code, out = run(
        tmp_path, {"job": job, "models": [model], "tasks": [task], "shots": [1], "num_queries": 2}
    )
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("hf-icl: error: ") and message in err
    assert err.count("\n") == 1 and not out.exists()
