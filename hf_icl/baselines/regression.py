"""Regression learners to compare in-context regression against (Garg et al. 2022; Akyürek et al.
2022; GD and preconditioned GD for looped transformers), and the comparison metrics."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import Lasso as SkLasso

from hf_icl.baselines.base import (
    Baseline,
    Batch,
    BatchedMLP,
    for_each_episode,
    register,
    with_param,
)
from hf_icl.config import option
from hf_icl.episode import Episode
from hf_icl.errors import HfIclError


def ridge_operator(x: np.ndarray, lam: np.ndarray | float) -> np.ndarray:
    """(B, k, d) demos → (B, d, k) map from targets to ridge weights, V·diag(s/(s²+λ))·Uᵀ.

    λ may differ per episode; at λ = 0 it is the pseudo-inverse (min-norm least squares).
    """
    u, s, vt = np.linalg.svd(x, full_matrices=False)
    cutoff = np.finfo(x.dtype).eps * max(x.shape[1:]) * s.max(axis=-1, initial=0.0, keepdims=True)
    lam = np.broadcast_to(np.asarray(lam, dtype=np.float64), (x.shape[0],))[:, None]
    keep = s > cutoff
    gain = np.divide(s, s**2 + lam, out=np.zeros_like(s), where=keep)
    return np.swapaxes(vt, 1, 2) @ (gain[:, :, None] * np.swapaxes(u, 1, 2))


def apply_weights(operator: np.ndarray, y: np.ndarray) -> np.ndarray:
    return np.einsum("bdk,bk->bd", operator, y)


def linear_predict(w: np.ndarray, query_x: np.ndarray) -> np.ndarray:
    return np.einsum("bqd,bd->bq", query_x, w)


def mean_label_weighted_input(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """(1/k) Σ y_i x_i: Garg's averaging estimator, one GD step from 0, the class-mean MLE."""
    return np.einsum("bkd,bk->bd", x, y.astype(np.float64)) / x.shape[1]


def gradient_descent(
    x: np.ndarray, y: np.ndarray, step_matrix: np.ndarray, steps: int, lr: float
) -> np.ndarray:
    """``steps`` updates w ← w − lr·M(Xw − y) from w = 0; M = Xᵀ/k is plain GD on
    L(w) = (1/2k)Σ(w·x_i − y_i)², so the first step is w₁ = (lr/k) Σ y_i x_i."""
    w = np.zeros((x.shape[0], x.shape[2]))
    for _ in range(steps):
        w = w - lr * apply_weights(step_matrix, np.einsum("bkd,bd->bk", x, w) - y)
    return w


@register
class OLS(Baseline):
    """Min-norm least squares (pseudo-inverse): what trained transformers match (Garg)."""

    name = "ols"
    task_kind = "regression"

    def predict_batch(self, batch: Batch, params: Any) -> tuple[np.ndarray, None]:
        w = apply_weights(ridge_operator(batch.x, 0.0), batch.y)
        return linear_predict(w, batch.query_x), None


@register
class Ridge(Baseline):
    """Ridge regression; ``lam: bayes`` is the posterior mean under w ~ N(0, τ²I) and noise σ
    from the episode meta (λ = σ²/τ²), the Bayes-optimal predictor for Gaussian linear tasks."""

    name = "ridge"
    task_kind = "regression"

    @dataclass
    class Params:
        lam: float | Literal["bayes"] = option(
            "bayes", help="penalty λ on ||w||², or 'bayes': noise_std²/prior_var per episode"
        )
        prior_var: float = option(1.0, help="τ², the prior variance of each weight ('bayes')")

    @property
    def uses_meta(self) -> bool:
        return self.params.lam == "bayes"

    def predict_batch(self, batch: Batch, params: Params) -> tuple[np.ndarray, None]:
        lam = params.lam
        if lam == "bayes":
            lam = batch.meta("noise_std", self.name) ** 2 / params.prior_var
        w = apply_weights(ridge_operator(batch.x, lam), batch.y)
        return linear_predict(w, batch.query_x), None


@register
class Averaging(Baseline):
    """Garg's averaging: w = (1/k) Σ y_i x_i, predict w·x."""

    name = "averaging"
    task_kind = "regression"

    def predict_batch(self, batch: Batch, params: Any) -> tuple[np.ndarray, None]:
        return linear_predict(mean_label_weighted_input(batch.x, batch.y), batch.query_x), None


class GridTuned(Baseline):
    """A learner with one hyperparameter chosen on held-out episodes, separately per shot count.

    ``tune`` keeps the episodes; the first prediction at a shot count picks the grid value with
    the lowest mean squared query error on them (ties: the first value) and records it in
    ``tuned[shots]``. Untuned, the default value is used.
    """

    tuned_param: ClassVar[str]

    def __init__(self, params: Any = None) -> None:
        super().__init__(params)
        self.tuned: dict[int, float] = {}
        self._tuning: list[Episode] = []

    def tune(self, episodes: list[Episode]) -> None:
        if any(len(ep.query_y) == 0 for ep in episodes):
            raise HfIclError(
                f"baseline {self.name!r}: tuning episodes need queries to score each grid value on"
            )
        self._tuning = list(episodes)
        self.tuned = {}

    def params_for(self, shots: int) -> Any:
        if not self._tuning or shots == 0:
            return self.params
        if shots not in self.tuned:
            self.tuned[shots] = self._best_value(shots)
        return with_param(self.params, self.tuned_param, self.tuned[shots])

    def _best_value(self, shots: int) -> float:
        grid = getattr(self.params, f"{self.tuned_param}_grid")
        if not grid:
            raise HfIclError(f"baseline {self.name!r}: {self.tuned_param}_grid is empty")
        errors = [self._tuning_error(shots, value) for value in grid]
        return grid[int(np.argmin(errors))]

    def _tuning_error(self, shots: int, value: float) -> float:
        params = with_param(self.params, self.tuned_param, value)
        preds = self.predict_with(self._tuning, shots, params)
        return float(
            np.mean(
                [
                    np.mean((p.pred - ep.query_y) ** 2)
                    for p, ep in zip(preds, self._tuning, strict=True)
                ]
            )
        )


@register
class Lasso(GridTuned):
    """L1-penalised least squares (sklearn, per episode): suited to sparse linear tasks."""

    name = "lasso"
    task_kind = "regression"
    tuned_param = "alpha"

    @dataclass
    class Params:
        alpha: float = option(0.01, help="L1 penalty α of sklearn's Lasso (used until tuned)")
        alpha_grid: list[float] = option(
            default_factory=lambda: [1e-4, 1e-3, 1e-2, 1e-1, 1.0], help="values of α tried by tune"
        )

    def predict_batch(self, batch: Batch, params: Params) -> tuple[np.ndarray, None]:
        model = SkLasso(alpha=params.alpha, fit_intercept=False, max_iter=10_000)

        def fit_predict(x: np.ndarray, y: np.ndarray, query_x: np.ndarray) -> np.ndarray:
            return model.fit(x, y).predict(query_x)

        # Tiny α on k < d demos converges slowly; the grid search judges the result anyway.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            return for_each_episode(batch, fit_predict), None


@register
class GD(GridTuned):
    """``gd_steps`` steps of gradient descent on (1/2k)Σ(w·x_i − y_i)² from w = 0; one step is
    (lr × averaging), the learner one linear-attention layer implements (von Oswald et al.)."""

    name = "gd"
    task_kind = "regression"
    tuned_param = "lr"

    @dataclass
    class Params:
        gd_steps: int = option(1, help="number of full-batch GD steps")
        lr: float = option(0.1, help="step size (used until tuned)")
        lr_grid: list[float] = option(
            default_factory=lambda: [0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0],
            help="step sizes tried by tune",
        )

    def step_matrix(self, batch: Batch, params: Any) -> np.ndarray:
        """M in w ← w − lr·M(Xw − y): (B, d, k)."""
        return np.swapaxes(batch.x, 1, 2) / batch.x.shape[1]

    def predict_batch(self, batch: Batch, params: Params) -> tuple[np.ndarray, None]:
        w = gradient_descent(
            batch.x, batch.y, self.step_matrix(batch, params), params.gd_steps, params.lr
        )
        return linear_predict(w, batch.query_x), None


@register
class PreconditionedGD(GD):
    """GD preconditioned by an inverse input covariance, the learner looped linear attention
    converges to (Gatmiry et al.).

    ``empirical``: P = (Σ̂ + cov_reg·I)⁻¹ with Σ̂ = XᵀX/k of the demos (pseudo-inverse when
    cov_reg = 0: gradients lie in the demos' span, where Σ̂ is invertible), so one step at
    lr = 1 and cov_reg = 0 is min-norm least squares. ``input_cov``: P = Σ⁻¹ from the episode
    meta ``input_cov`` (d × d), the population covariance; that makes it an oracle.
    """

    name = "preconditioned_gd"

    @dataclass
    class Params(GD.Params):
        preconditioner: Literal["empirical", "input_cov"] = option(
            "empirical", help="inverse of the demos' covariance, or of meta 'input_cov' (oracle)"
        )
        cov_reg: float = option(0.0, help="added to the empirical covariance's diagonal")

    @property
    def uses_meta(self) -> bool:
        return self.params.preconditioner == "input_cov"

    def step_matrix(self, batch: Batch, params: Params) -> np.ndarray:
        shots = batch.x.shape[1]
        if params.preconditioner == "input_cov":
            cov = batch.meta("input_cov", self.name)
            return np.linalg.solve(cov, np.swapaxes(batch.x, 1, 2)) / shots
        # (XᵀX/k + εI)⁻¹ Xᵀ/k = (XᵀX + kεI)⁻¹ Xᵀ: the ridge operator at λ = kε.
        return ridge_operator(batch.x, shots * params.cov_reg)


@register
class MLP(Baseline):
    """Garg's 2-layer ReLU network trained by full-batch Adam on the demos' squared error."""

    name = "mlp"
    task_kind = "regression"

    @dataclass
    class Params:
        hidden_units: int = option(100, help="width of the hidden layer")
        train_steps: int = option(500, help="Adam steps on the demos")
        lr: float = option(0.01, help="Adam learning rate")
        seed: int = option(0, help="seed of the (shared) initialisation")

    def predict_batch(self, batch: Batch, params: Params) -> tuple[np.ndarray, None]:
        b, _, d = batch.x.shape
        net = BatchedMLP(b, d, params.hidden_units, 1, params.seed)
        target = torch.from_numpy(batch.y).float()[:, :, None]
        net.fit(
            batch.x,
            target,
            lambda out, t: ((out - t) ** 2).mean(dim=(1, 2)),
            "adam",
            params.train_steps,
            params.lr,
        )
        return net.outputs(batch.query_x)[:, :, 0], None


def normalised_squared_error(
    pred: np.ndarray, y: np.ndarray, scale: float | np.ndarray
) -> np.ndarray:
    """Per-query (pred − y)²/scale; with scale = dim (or the sparsity, Garg et al.) the zero
    predictor scores ≈ 1 on w ~ N(0, I), x ~ N(0, I). Average or bootstrap it yourself."""
    return (np.asarray(pred, dtype=np.float64) - y) ** 2 / scale


def squared_prediction_difference(pred_a: np.ndarray, pred_b: np.ndarray) -> np.ndarray:
    """Per-query (A₁(D)(x) − A₂(D)(x))², whose mean is Akyürek et al.'s SPD."""
    return (np.asarray(pred_a, dtype=np.float64) - np.asarray(pred_b, dtype=np.float64)) ** 2
