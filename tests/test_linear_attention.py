"""Linear self-attention models: the reference formula, the hand-set GD constructions, the
paired layout, the diagnostics on constructed cases, training, and the save/load round trip."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hf_icl.config import ConfigError, from_dict
from hf_icl.models import ICLModel, SmallModelConfig, build_small_model, load_trained, save_learner
from hf_icl.render.embedding import paired_tokens
from hf_icl.training import diagnostics

D = 4


def lsa(architecture: str = "linear_attention", **settings) -> torch.nn.Module:
    config = SmallModelConfig(architecture=architecture, **settings)
    return build_small_model(config, seed=0, dim=D).eval()


def reference(p: torch.Tensor, q: torch.Tensor, tokens: torch.Tensor, loops: int) -> torch.Tensor:
    """The textbook update Z ← Z − (1/n) P Z M Zᵀ Q Z on [z_1 … z_i, [x_i; 0]], one query at a
    time; ŷ_i = −Z[d+1, query]."""
    out = torch.zeros(tokens.shape[:2], dtype=torch.float64)
    for b in range(tokens.shape[0]):
        for i in range(tokens.shape[1]):
            query = torch.cat([tokens[b, i, :D], torch.zeros(1)])
            z = torch.cat([tokens[b, :i], query[None]]).T.double()
            mask = torch.diag(torch.tensor([1.0] * i + [0.0], dtype=torch.float64))
            for _ in range(loops):
                z = z - p.double() @ z @ mask @ z.T @ q.double() @ z / max(i, 1)
            out[b, i] = -z[D, -1]
    return out


def gd_construction(model: torch.nn.Module, gamma: torch.Tensor) -> None:
    """P = [[0, 0], [0, 1]], Q = [[Γ, 0], [0, 0]]: the weights of preconditioned GD."""
    with torch.no_grad():
        model.p.zero_()
        model.p[D, D] = 1.0
        model.q.zero_()
        model.q[:D, :D] = gamma


def test_one_layer_equals_the_reference_formula_on_random_weights():
    model = lsa(init_std=0.5)
    tokens = torch.randn(3, 7, D + 1)
    with torch.no_grad():
        out = model(tokens)
    assert out.shape == (1, 3, 7)
    torch.testing.assert_close(
        out[0].double(), reference(model.p, model.q, tokens, 1), rtol=1e-5, atol=1e-5
    )


def test_looped_layer_equals_the_reference_formula_and_reads_the_last_loops_in_training():
    model = lsa("looped_linear_attention", loops=3, loss_loops=2, init_std=0.3)
    tokens = torch.randn(2, 6, D + 1)
    with torch.no_grad():
        out = model(tokens)
    torch.testing.assert_close(
        out[0].double(), reference(model.p, model.q, tokens, 3), rtol=1e-4, atol=1e-4
    )
    model.train()
    both = model(tokens)
    assert both.shape == (2, 2, 6)
    torch.testing.assert_close(
        both[0].double(), reference(model.p, model.q, tokens, 2), rtol=1e-4, atol=1e-4
    )
    subset = model(tokens, torch.tensor([1, 5]))  # only the queries asked for are computed
    torch.testing.assert_close(subset, both[:, :, [1, 5]])


def test_hand_set_weights_give_one_gd_step():
    model = lsa()
    gamma = torch.randn(D, D)
    gd_construction(model, gamma)
    x, y = torch.randn(2, 9, D), torch.randn(2, 9)
    with torch.no_grad():
        out = model(paired_tokens(x, y))[0]
    for i in range(1, 9):  # ŷ_i = x_iᵀ Γᵀ (1/i) Σ_{j<i} y_j x_j
        mean = (y[:, :i, None] * x[:, :i]).mean(1)
        torch.testing.assert_close(
            out[:, i], torch.einsum("bd,ed,be->b", x[:, i], gamma, mean), rtol=1e-5, atol=1e-5
        )
    assert torch.all(out[:, 0] == 0)
    diag = diagnostics.agreement(
        out[:, 1:].numpy(),
        diagnostics.preconditioned_gd_curve(
            x.double().numpy(), y.double().numpy(), gamma.T.double().numpy(), 1
        ),
    )
    assert diag["cosine"] == pytest.approx(1.0, abs=1e-6)
    assert diag["relative_difference"] == pytest.approx(0.0, abs=1e-5)


@pytest.mark.parametrize("parameterization", ["full", "bilinear"])
def test_looped_hand_set_weights_give_l_steps_of_preconditioned_gd(parameterization):
    model = lsa("looped_linear_attention", loops=5, parameterization=parameterization)
    a = torch.diag(torch.tensor([0.5, 0.3, 0.2, 0.1]))  # A = Γᵀ
    if parameterization == "bilinear":
        with torch.no_grad():
            model.gamma.copy_(a.T)
    else:
        gd_construction(model, a.T)
    torch.testing.assert_close(model.preconditioner(), a)
    x, y = torch.randn(3, 8, D).double(), torch.randn(3, 8).double()
    for loops in (1, 2, 5, 9):  # also more loops than configured
        predicted = diagnostics.model_curve(model, x.numpy(), y.numpy(), loops)
        expected = diagnostics.preconditioned_gd_curve(
            x.numpy(), y.numpy(), a.double().numpy(), loops
        )
        np.testing.assert_allclose(predicted, expected, rtol=1e-4, atol=1e-5)
    assert model.config.loops == 5  # restored


def test_bilinear_model_is_magen_vardi_prediction_and_classes_enter_as_plus_minus_one():
    model = lsa(parameterization="bilinear", init_std=0.2)
    x, labels = torch.randn(2, 5, D), torch.randint(0, 2, (2, 5))
    tokens = paired_tokens(x, labels)
    assert set(tokens[..., D].unique().tolist()) <= {-1.0, 1.0}
    with torch.no_grad():
        out = model(tokens)[0]
    signs = 2.0 * labels - 1.0
    mean = (signs[:, :4, None] * x[:, :4]).mean(1)  # ŷ = x_qᵀ Wᵀ (1/n) Σ y_i x_i at query 4
    torch.testing.assert_close(out[:, 4], torch.einsum("bd,ed,be->b", x[:, 4], model.gamma, mean))
    learner = ICLModel(model)
    with torch.no_grad():
        logits = learner(torch.tensor([0, 1]), torch.tensor([4, 4]), x=x, labels=labels)
    assert logits.shape == (1, 2, 2)  # [0, ŷ]: cross-entropy is the logistic loss
    torch.testing.assert_close(logits[0, :, 1], out[:, 4])
    assert torch.all(logits[0, :, 0] == 0)


def test_diagnostics_are_one_and_zero_on_constructed_cases():
    rng = np.random.default_rng(0)
    basis = np.linalg.qr(rng.standard_normal((10, 3)))[0]
    aligned = diagnostics.subspace_alignment(2.5 * basis @ basis.T, basis)
    assert aligned["value"] == pytest.approx(1.0)
    assert aligned["principal_cosines"] == pytest.approx([1.0] * 3)
    complement = np.eye(10) - basis @ basis.T
    orthogonal = diagnostics.subspace_alignment(complement[:, :3] @ complement[:3], basis)
    assert orthogonal["value"] == pytest.approx(0.0, abs=1e-12)
    assert orthogonal["principal_cosines"] == pytest.approx([0.0] * 3, abs=1e-6)
    cov = np.diag([3.0, 1.0, 0.5])
    exact = diagnostics.preconditioner_error(0.7 * np.linalg.inv(cov), cov)
    assert exact["value"] == pytest.approx(0.0, abs=1e-12) and exact["scale"] == pytest.approx(
        1 / 0.7
    )
    assert diagnostics.preconditioner_error(np.zeros((3, 3)), cov)["value"] == pytest.approx(1.0)
    same = diagnostics.agreement(np.arange(1.0, 5.0), np.arange(1.0, 5.0))
    assert same == pytest.approx({"cosine": 1.0, "relative_difference": 0.0})
    assert diagnostics.agreement(np.array([1.0, 0.0]), np.array([0.0, 1.0]))["cosine"] == 0.0


def test_save_and_load_round_trip(tmp_path):
    model = lsa("looped_linear_attention", loops=4, loss_loops=2, eval_loops=[8], init_std=0.2)
    info = {
        "kind": "small",
        "small_model": {"architecture": "looped_linear_attention"},
        "read_in": False,
    }
    save_learner(ICLModel(model), tmp_path, None, info)
    loaded, tokenizer = load_trained(tmp_path)
    assert tokenizer is None and loaded.read_in is None
    assert loaded.lm.config.loops == 4 and loaded.lm.config.eval_loops == [8]
    x, y = torch.randn(2, 6, D), torch.randn(2, 6)
    rows, cols = torch.tensor([0, 1, 1]), torch.tensor([5, 2, 5])
    with torch.no_grad():
        torch.testing.assert_close(
            loaded(rows, cols, x=x, labels=y), ICLModel(model)(rows, cols, x=x, labels=y)
        )


@pytest.mark.parametrize(
    "data, message",
    [
        ({"architecture": "looped_linear_attention", "loops": 0}, "loops: must be ≥ 1"),
        (
            {"architecture": "looped_linear_attention", "loops": 3, "loss_loops": 4},
            "outside 1..loops",
        ),
        ({"architecture": "linear_attention", "eval_loops": [4]}, "needs a looped architecture"),
        ({"architecture": "linear_attention", "init_std": 0.0}, "init_std"),
        ({"architecture": "linear_attention", "parameterization": "bilnear"}, "did you mean"),
    ],
)
def test_config_errors(data, message):
    with pytest.raises(ConfigError, match=message):
        from_dict(SmallModelConfig, data, source="cfg.yaml", prefix="small_model")


GMM = {
    "name": "gmm",
    "dim": 12,
    "subspace_dim": 2,
    "signal": 3.0,
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
    "steps": 30,
    "batch_size": 32,
    "num_examples": 10,
    "log_every": 10,
    "eval_every": 30,
    "eval_episodes": 32,
    "checkpoint_every": 0,
    "scheduler": "constant",
}


@pytest.fixture(autouse=True)
def fresh_accelerate():
    yield
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)


def train(tmp_path, data: dict) -> tuple[int, dict | None]:
    import json

    import yaml

    from hf_icl.cli import main

    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump({"job": "train", **data}))
    out = tmp_path / "run"
    code = main(["train", str(path), "--out", str(out), "--quiet"])
    results = out / "results.json"
    return code, json.loads(results.read_text()) if results.is_file() else None


def test_gradient_descent_on_the_logistic_loss_aligns_w_with_the_subspace(tmp_path):
    code, results = train(
        tmp_path,
        {
            "small_model": {
                "architecture": "linear_attention",
                "parameterization": "bilinear",
                "init_std": 0.0,
            },
            "tasks": [GMM],
            "baselines": ["oracle_subspace_mle"],
            "train": {
                **TRAIN,
                "optimizer": "sgd",
                "lr": 0.5,
                "max_grad_norm": None,
                "diagnostics": ["subspace_alignment"],
            },
        },
    )
    assert code == 0
    (diag,) = results["diagnostics"]
    assert diag["history"][0] == [0, 0.0] and diag["value"] > 0.8
    unseen = next(s for s in results["summary"] if s["split"] == "unseen")
    assert unseen["after"]["curve"][-1] > 0.8  # two classes, signal 3
    assert "Parameter-level diagnostics" in (tmp_path / "run" / "report.md").read_text()
    loaded, _ = load_trained(tmp_path / "run" / "model")
    assert loaded.lm.config.parameterization == "bilinear"


def test_looped_model_learns_a_preconditioner_close_to_the_inverse_covariance(tmp_path):
    code, results = train(
        tmp_path,
        {
            "small_model": {
                "architecture": "looped_linear_attention",
                "parameterization": "bilinear",
                "init_std": 0.0,
                "loops": 2,
                "loss_loops": 1,
                "eval_loops": [4],
            },
            "tasks": [REGRESSION],
            "train": {**TRAIN, "lr": 0.02, "loss_on": "final", "diagnostics": ["preconditioner"]},
        },
    )
    assert code == 0
    (diag,) = results["diagnostics"]
    assert diag["value"] < 0.5 and set(diag["loops"]) == {"1", "2", "4"}
    assert all(v["cosine"] > 0.9999 for v in diag["loops"].values())
    assert {s["split"] for s in results["summary"]} == {"seen", "unseen", "unseen, 4 loops"}


@pytest.mark.parametrize(
    "data, message",
    [
        (
            {
                "small_model": {"architecture": "linear_attention"},
                "tasks": [
                    {
                        "name": "digits_projected",
                        "classes": [0, 1, 2],
                        "proj_dim": 4,
                        "render": {"renderer": "embedding"},
                    }
                ],
            },
            "two classes only, not 3",
        ),
        (
            {
                "small_model": {"architecture": "linear_attention"},
                "tasks": [REGRESSION],
                "train": {"diagnostics": ["subspace_alignment"]},
            },
            "needs a first training task with a shared subspace",
        ),
        (
            {
                "small_model": {"architecture": "linear_attention"},
                "tasks": [GMM],
                "train": {"diagnostics": ["preconditioner"]},
            },
            "needs a first training task with an input",
        ),
        (
            {
                "small_model": {"layers": 1, "hidden": 16, "heads": 2},
                "tasks": [REGRESSION],
                "train": {"diagnostics": ["gd_step"]},
            },
            "read linear-attention weights",
        ),
        (
            {
                "small_model": {"architecture": "looped_linear_attention"},
                "tasks": [REGRESSION],
                "train": {"diagnostics": ["gd_step"]},
            },
            "set small_model.architecture to linear_attention",
        ),
        (
            {
                "small_model": {"architecture": "linear_attention"},
                "tasks": [REGRESSION],
                "train": {"diagnostics": ["alignment"]},
            },
            "'alignment' is unknown",
        ),
    ],
)
def test_bad_input_is_one_line_before_anything_is_written(tmp_path, capsys, data, message):
    code, _ = train(tmp_path, data)
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("hf-icl: error: ") and message in err
    assert err.count("\n") == 1 and not (tmp_path / "run").exists()


def test_every_configurable_architecture_has_a_builder():
    from hf_icl.models.small import ARCHITECTURES
    from hf_icl.models.small_config import ARCHITECTURE_NAMES

    assert ARCHITECTURES.names() == sorted(ARCHITECTURE_NAMES)
