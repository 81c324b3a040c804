"""Function-class regression tasks (Garg et al., arXiv 2208.01066).

x ~ N(0, Σ) with Σ diagonal (identity, skewed, or given eigenvalues); the task is a function f
drawn from a prior (linear, noisy linear, sparse linear, 2-layer ReLU net, decision tree) and
y = f(x). Weights follow N(0, I) as in Garg et al., or N(0, Σ^-1) as in Gatmiry et al.

Curriculum (Garg et al.): the trainer passes ``active_dims`` from ``sampler.curriculum_at(step)``
to ``episode``/``episodes`` (the sampler keeps no state, so an episode is a pure function of the
parameters, split, index and these arguments); coordinates beyond it are zero in every x, dense
weights are still drawn in all d dimensions, and functions that pick coordinates (the sparse
support, the tree's splits) pick among the active ones. ``meta['input_cov']`` is Σ itself
(d x d, before zeroing). ``meta['error_scale']`` is E[f(x)^2] under the prior (noise
excluded), so Garg's normalised squared error of predicting 0 is about 1: d for linear and
ReLU tasks, the sparsity for sparse ones, 1 for trees when Σ = I.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from hf_icl.config import option
from hf_icl.episode import Episode
from hf_icl.errors import HfIclError
from hf_icl.samplers.base import FAMILIES, Split
from hf_icl.samplers.pool import Draw, PooledSampler, PoolParams

TaskParams = dict[str, np.ndarray]


def _prior_weights(rng: np.random.Generator, sampler: RegressionSampler) -> np.ndarray:
    z = rng.standard_normal(sampler.params.dim)
    if sampler.params.weight_prior == "inverse_covariance":
        return z / np.sqrt(sampler.eigenvalues)
    return z


def _linear_task(rng: np.random.Generator, sampler: RegressionSampler, active: int) -> TaskParams:
    return {"w": _prior_weights(rng, sampler)}


def _sparse_task(rng: np.random.Generator, sampler: RegressionSampler, active: int) -> TaskParams:
    w = _prior_weights(rng, sampler)
    support = rng.choice(active, size=sampler.params.sparsity, replace=False)
    sparse = np.zeros_like(w)
    sparse[support] = w[support]
    return {"w": sparse}


def _relu_task(rng: np.random.Generator, sampler: RegressionSampler, active: int) -> TaskParams:
    p = sampler.params
    return {"W1": rng.standard_normal((p.hidden, p.dim)), "w2": rng.standard_normal(p.hidden)}


def _tree_task(rng: np.random.Generator, sampler: RegressionSampler, active: int) -> TaskParams:
    """A full binary tree: node i (heap order) splits on the sign of coordinate tree_coords[i]."""
    depth = sampler.params.depth
    return {
        "tree_coords": rng.integers(active, size=2**depth - 1),
        "leaf_values": rng.standard_normal(2**depth),
    }


def _linear_target(task: dict[str, Any], x: np.ndarray) -> np.ndarray:
    return x @ task["w"]


def _relu_target(task: dict[str, Any], x: np.ndarray) -> np.ndarray:
    hidden = len(task["w2"])
    return np.sqrt(2 / hidden) * np.maximum(x @ task["W1"].T, 0.0) @ task["w2"]


def _tree_target(task: dict[str, Any], x: np.ndarray) -> np.ndarray:
    coords, leaves = task["tree_coords"], task["leaf_values"]
    node = np.zeros(len(x), dtype=np.int64)
    rows = np.arange(len(x))
    for _ in range(len(leaves).bit_length() - 1):
        node = 2 * node + 1 + (x[rows, coords[node]] > 0)
    return leaves[node - len(coords)]


def _coordinate_power(sampler: RegressionSampler, active: int) -> np.ndarray:
    """E[w_i^2 x_i^2] per active coordinate: λ_i under N(0, I) weights, 1 under N(0, Σ^-1)."""
    powers = sampler.eigenvalues[:active]
    return powers if sampler.params.weight_prior == "identity" else np.ones_like(powers)


def _linear_scale(sampler: RegressionSampler, active: int) -> float:
    return float(_coordinate_power(sampler, active).sum())


def _sparse_scale(sampler: RegressionSampler, active: int) -> float:
    return _linear_scale(sampler, active) * sampler.params.sparsity / active


def _relu_scale(sampler: RegressionSampler, active: int) -> float:
    """E|x|^2: each of the h units contributes E[relu(g)^2] = E|x|^2 / 2, times 2/h."""
    return float(sampler.eigenvalues[:active].sum())


class FunctionClass(NamedTuple):
    """How a function class draws a task, evaluates it and scales its error; ``active`` is the
    number of leading input coordinates in use (the curriculum stage)."""

    draw: Callable[[np.random.Generator, RegressionSampler, int], TaskParams]
    target: Callable[[dict[str, Any], np.ndarray], np.ndarray]
    error_scale: Callable[[RegressionSampler, int], float]


_LINEAR = FunctionClass(_linear_task, _linear_target, _linear_scale)
FUNCTION_CLASSES: dict[str, FunctionClass] = {
    "linear": _LINEAR,
    "noisy_linear": _LINEAR,  # the noise is added by the sampler
    "sparse_linear": FunctionClass(_sparse_task, _linear_target, _sparse_scale),
    "relu_net": FunctionClass(_relu_task, _relu_target, _relu_scale),
    "decision_tree": FunctionClass(_tree_task, _tree_target, lambda sampler, active: 1.0),
}
LINEAR_FUNCTIONS = ("linear", "noisy_linear", "sparse_linear")


def target_function(meta: dict[str, Any], x: np.ndarray) -> np.ndarray:
    """The noise-free f(x) of the task an episode's ``meta`` describes (for oracles and checks)."""
    return FUNCTION_CLASSES[meta["function"]].target(meta, np.asarray(x, dtype=np.float64))


@dataclass
class Curriculum:
    """Garg et al.'s schedule: each value grows by its increment every ``interval`` steps."""

    dims_start: int = option(5, help="active dimensions at step 0")
    dims_end: int = option(20, help="active dimensions at the end (<= dim)")
    dims_inc: int = option(1, help="active dimensions added every interval")
    points_start: int = option(11, help="points per sequence at step 0")
    points_end: int = option(41, help="points per sequence at the end")
    points_inc: int = option(2, help="points added every interval")
    interval: int = option(2000, help="training steps between increments")

    def check(self, dim: int) -> None:
        """Raise ValueError naming the bad field (called by RegressionParams, which knows d)."""
        for kind in ("dims", "points"):
            start, end, inc = (getattr(self, f"{kind}_{k}") for k in ("start", "end", "inc"))
            if not 1 <= start <= end or inc < 0:
                raise ValueError(
                    f"curriculum.{kind}_start/_end/_inc: {start}/{end}/{inc}; "
                    "allowed: 1 <= start <= end and inc >= 0"
                )
        if self.dims_end > dim:
            raise ValueError(
                f"curriculum.dims_end: {self.dims_end} exceeds dim ({dim}); allowed: <= dim"
            )
        if self.interval < 1:
            raise ValueError(f"curriculum.interval: {self.interval} is not positive; allowed: >= 1")

    def at(self, step: int) -> tuple[int, int]:
        """(active_dims, num_points) at training step ``step``."""
        stage = step // self.interval
        return (
            min(self.dims_start + self.dims_inc * stage, self.dims_end),
            min(self.points_start + self.points_inc * stage, self.points_end),
        )


@dataclass
class RegressionParams(PoolParams):
    function: str = option("linear", choices=tuple(FUNCTION_CLASSES), help="function class")
    dim: int = option(20, help="input dimension d")
    noise_std: float = option(1.0, help="std of the label noise (noisy_linear only)")
    sparsity: int = option(3, help="non-zero weights (sparse_linear only)")
    hidden: int = option(100, help="hidden units (relu_net only)")
    depth: int = option(4, help="tree depth (decision_tree only)")
    covariance: str | list[float] = option(
        "identity",
        help="diagonal input covariance: identity, skewed (eigenvalues ∝ "
        "i^-skew_power, normalised to trace d) or a list of d eigenvalues, used as given",
    )
    skew_power: float = option(1.0, help="decay power of the skewed covariance's eigenvalues")
    weight_prior: str = option(
        "identity",
        choices=("identity", "inverse_covariance"),
        help="linear weights ~ N(0, I) (Garg) or N(0, Σ^-1) (Gatmiry)",
    )
    curriculum: Curriculum | None = option(None, help="dims/points schedule; null: none")

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("dim", "sparsity", "hidden", "depth"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: {getattr(self, name)} is not positive; allowed: >= 1")
        if self.curriculum is not None:
            self.curriculum.check(self.dim)
        if self.noise_std < 0:
            raise ValueError(f"noise_std: {self.noise_std} is negative; allowed: >= 0")
        if self.function == "sparse_linear" and self.sparsity > self.min_active_dims:
            raise ValueError(
                f"sparsity: {self.sparsity} exceeds the {self.min_active_dims} "
                "dimensions that can be active; allowed: <= dim (and <= "
                "curriculum.dims_start)"
            )
        if self.weight_prior != "identity" and self.function not in LINEAR_FUNCTIONS:
            raise ValueError(
                f"weight_prior: {self.weight_prior!r} applies to "
                f"{', '.join(LINEAR_FUNCTIONS)} only, not {self.function!r}"
            )
        self._check_covariance()

    @property
    def min_active_dims(self) -> int:
        return self.curriculum.dims_start if self.curriculum else self.dim

    def _check_covariance(self) -> None:
        if isinstance(self.covariance, str):
            if self.covariance not in ("identity", "skewed"):
                raise ValueError(
                    f"covariance: {self.covariance!r}; allowed: identity, skewed "
                    "or a list of eigenvalues"
                )
            if self.skew_power < 0:
                raise ValueError(f"skew_power: {self.skew_power} is negative; allowed: >= 0")
        elif len(self.covariance) != self.dim or not all(0 < v < np.inf for v in self.covariance):
            raise ValueError(
                f"covariance: {self.covariance} must list {self.dim} (= dim) "
                "positive finite eigenvalues"
            )


def covariance_eigenvalues(params: RegressionParams) -> np.ndarray:
    """The diagonal of Σ."""
    if not isinstance(params.covariance, str):
        return np.asarray(params.covariance, dtype=np.float64)
    if params.covariance == "identity":
        return np.ones(params.dim)
    raw = np.arange(1, params.dim + 1, dtype=np.float64) ** -params.skew_power
    return raw * params.dim / raw.sum()


@FAMILIES.register("regression")
class RegressionSampler(PooledSampler):
    """Episodes of (x, f(x)) pairs; ``meta`` carries the task's function parameters."""

    family = "regression"
    Params = RegressionParams

    def __init__(self, name: str, params: RegressionParams) -> None:
        super().__init__(name, params)
        self.function = FUNCTION_CLASSES[params.function]
        self.eigenvalues = covariance_eigenvalues(params)
        self.eigenvalues.flags.writeable = False
        self.input_cov = np.diag(self.eigenvalues)
        self.input_cov.flags.writeable = False

    def _active(self, active_dims: int | None) -> int:
        """Leading coordinates that are non-zero in x: all of them unless a curriculum says."""
        if active_dims is None:
            return self.params.dim
        lowest = self.params.sparsity if self.params.function == "sparse_linear" else 1
        if not lowest <= active_dims <= self.params.dim:
            raise HfIclError(
                f"task {self.name!r}: active_dims {active_dims} is outside "
                f"{lowest}..{self.params.dim}"
            )
        return active_dims

    def episode(
        self,
        index: int,
        num_demos: int,
        num_queries: int,
        split: Split = "test",
        active_dims: int | None = None,
    ) -> Episode:
        """Episode ``index`` of ``split`` with only the first ``active_dims`` coordinates of x
        in use (the curriculum stage; None: all d)."""
        return self.make_episode(
            index, num_demos, num_queries, split, active_dims=self._active(active_dims)
        )

    def episodes(
        self,
        first: int,
        count: int,
        num_demos: int,
        num_queries: int,
        split: Split = "test",
        active_dims: int | None = None,
    ) -> list[Episode]:
        return [
            self.episode(first + i, num_demos, num_queries, split, active_dims)
            for i in range(count)
        ]

    def curriculum_at(self, step: int) -> tuple[int, int | None]:
        """(active_dims, num_points) at ``step``; (dim, None) without a curriculum."""
        curriculum = self.params.curriculum
        return curriculum.at(step) if curriculum else (self.params.dim, None)

    def draw(
        self,
        task_id: int,
        split: Split,
        rng: np.random.Generator,
        count: int,
        active_dims: int | None = None,
    ) -> Draw:
        p = self.params
        active = self._active(active_dims)
        task = self.function.draw(self.pool.task_rng(task_id), self, active)
        x = rng.standard_normal((count, p.dim)) * np.sqrt(self.eigenvalues)
        x[:, active:] = 0.0
        noise_std = p.noise_std if p.function == "noisy_linear" else 0.0
        y = self.function.target(task, x) + noise_std * rng.standard_normal(count)
        meta = {
            "function": p.function,
            **task,
            "noise_std": noise_std,
            "error_scale": self.function.error_scale(self, active),
            "active_dims": active,
            "input_cov": self.input_cov,
        }
        return Draw(x=x, y=y, meta=meta)
