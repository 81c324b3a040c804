"""Gaussian-mixture classification tasks whose means share a low-dimensional subspace.

Magen & Vardi (arXiv 2510.19797): a pool-wide orthonormal U (d x k); task mean mu = R U z with z
uniform on the unit sphere of R^k; y uniform in {-1, +1}; x = y mu + N(0, I_d); the stored
label is flipped with probability p. Labels are stored as class indices: 0 for -1, 1 for +1.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hf_icl.config import option
from hf_icl.samplers.base import FAMILIES, Split, rng_for
from hf_icl.samplers.pool import Draw, PooledSampler, PoolParams


@dataclass
class GaussianMixtureParams(PoolParams):
    dim: int = option(20, help="input dimension d")
    subspace_dim: int = option(
        2, help="dimension k of the subspace holding every task mean (k <= d)"
    )
    signal: float = option(2.0, help="R: the norm of every task mean")
    test_signal: float | None = option(
        None, help="signal strength of split='test' tasks (the paper's R tilde); null: signal"
    )
    label_flip: float = option(0.0, help="probability p that a stored label is flipped")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.dim < 1:
            raise ValueError(f"dim: {self.dim} is not positive; allowed: an integer >= 1")
        if not 1 <= self.subspace_dim <= self.dim:
            raise ValueError(
                f"subspace_dim: {self.subspace_dim} is outside 1..dim "
                f"(dim = {self.dim}); allowed: 1 <= subspace_dim <= dim"
            )
        for name in ("signal", "test_signal"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"{name}: {value} is negative; allowed: a number >= 0")
        if not 0.0 <= self.label_flip <= 1.0:
            raise ValueError(f"label_flip: {self.label_flip} is outside [0, 1]")


def orthonormal_basis(rng: np.random.Generator, dim: int, rank: int) -> np.ndarray:
    """A Haar-random d x k matrix with orthonormal columns (QR with the sign fix)."""
    q, r = np.linalg.qr(rng.standard_normal((dim, rank)))
    return q * np.where(np.diag(r) < 0, -1.0, 1.0)


def unit_vector(rng: np.random.Generator, size: int) -> np.ndarray:
    z = rng.standard_normal(size)
    return z / np.linalg.norm(z)


@FAMILIES.register("gaussian_mixture")
class GaussianMixtureSampler(PooledSampler):
    """Two-class episodes; ``meta`` carries ``U`` and ``mu`` for oracle baselines only."""

    family = "gaussian_mixture"
    Params = GaussianMixtureParams

    def __init__(self, name: str, params: GaussianMixtureParams) -> None:
        super().__init__(name, params)
        self.subspace = orthonormal_basis(
            rng_for(params.seed, "subspace"), params.dim, params.subspace_dim
        )
        self.subspace.flags.writeable = False

    @property
    def num_classes(self) -> int:
        return 2

    def signal(self, split: Split) -> float:
        test_signal = self.params.test_signal
        return test_signal if split == "test" and test_signal is not None else self.params.signal

    def draw(self, task_id: int, split: Split, rng: np.random.Generator, count: int) -> Draw:
        p = self.params
        mean = (
            self.signal(split)
            * self.subspace
            @ unit_vector(self.pool.task_rng(task_id), p.subspace_dim)
        )
        sign = rng.choice([-1.0, 1.0], size=count)
        x = sign[:, None] * mean + rng.standard_normal((count, p.dim))
        flipped = rng.random(count) < p.label_flip
        labels = (sign > 0) ^ flipped
        meta = {
            "U": self.subspace,
            "mu": mean,
            "signal": self.signal(split),
            "label_flip": p.label_flip,
        }
        return Draw(x=x, y=labels.astype(np.int64), meta=meta)
