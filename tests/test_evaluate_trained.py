"""A train run's small model in an evaluate run: what is refused, in one line, before anything
is written."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from hf_icl.cli import main

GMM = {
    "name": "gmm",
    "dim": 12,
    "subspace_dim": 2,
    "signal": 1.0,
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


@pytest.mark.parametrize(
    "job, model, task, message",
    [
        ("evaluate", {"eval_loops": [0]}, GMM, "models.0.eval_loops: loop counts must be ≥ 1"),
        ("evaluate", {"eval_loops": [3]}, GMM, "is a trained linear_attention model; eval_loops"),
        ("evaluate", {"dtype": "bfloat16"}, GMM, "remove dtype"),
        ("evaluate", {}, "sentiment", "reads numeric inputs; give the task render"),
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
