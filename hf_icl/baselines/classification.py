"""Classification learners: the baselines of Magen & Vardi (SVM, MLE, MLE in the true subspace)
and GPICL (SGD-trained MLP), plus logistic regression, k-NN, majority and a Bayes oracle.

Labels are class indices; binary tasks read class 0 as y = −1 and class 1 as y = +1. Ties go to
the lowest class index.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.svm import LinearSVC

from hf_icl.baselines.base import Baseline, Batch, BatchedMLP, for_each_episode, register
from hf_icl.baselines.regression import mean_label_weighted_input
from hf_icl.config import option
from hf_icl.errors import HfIclError


def one_hot(y: np.ndarray, num_classes: int) -> np.ndarray:
    return (y[..., None] == np.arange(num_classes)).astype(np.float64)


def signed_labels(y: np.ndarray) -> np.ndarray:
    return 2.0 * y - 1.0


def nearest_neighbours(x: np.ndarray, query_x: np.ndarray, count: int) -> np.ndarray:
    """(B, Q, count) indices of each query's nearest demos (Euclidean; ties: earlier demo)."""
    dist2 = (
        (query_x**2).sum(-1)[:, :, None]
        - 2 * query_x @ np.swapaxes(x, 1, 2)
        + (x**2).sum(-1)[:, None, :]
    )
    return np.argsort(dist2, axis=-1, kind="stable")[..., :count]


def class_mean_scores(
    x: np.ndarray, y: np.ndarray, query_x: np.ndarray, num_classes: int
) -> np.ndarray:
    """(B, Q) MLE decision scores for binary tasks, (B, Q, C) for multi-class ones.

    Binary (symmetric mixture x = yμ + noise): μ̂ = (1/k) Σ y_i x_i, score μ̂·x. Multi-class:
    nearest class mean, m_c·x − ||m_c||²/2; classes absent from the demos score −∞.
    """
    if num_classes == 2:
        return np.einsum("bqd,bd->bq", query_x, mean_label_weighted_input(x, signed_labels(y)))
    onehot = one_hot(y, num_classes)
    counts = onehot.sum(axis=1)
    means = np.einsum("bkc,bkd->bcd", onehot, x) / np.maximum(counts, 1)[:, :, None]
    scores = query_x @ np.swapaxes(means, 1, 2) - 0.5 * (means**2).sum(-1)[:, None, :]
    return np.where(counts[:, None, :] > 0, scores, -np.inf)


def decide(scores: np.ndarray) -> np.ndarray:
    """Binary scores → class 1 iff positive; multi-class scores → argmax."""
    return (scores > 0).astype(np.int64) if scores.ndim == 2 else scores.argmax(-1)


@register
class Logistic(Baseline):
    """Multinomial logistic regression with an L2 penalty, batched L-BFGS in torch.

    Minimises Σ_i CE + (l2_penalty/2)·||W||² per episode (sklearn's C = 1/l2_penalty); the bias
    is penalised too, so demos of a single class still give finite probabilities.
    """

    name = "logistic"
    task_kind = "classification"
    defines_probs = True

    @dataclass
    class Params:
        l2_penalty: float = option(1.0, help="L2 penalty on weights and bias (1/C in sklearn)")
        max_iter: int = option(500, help="L-BFGS iterations")

    def predict_batch(self, batch: Batch, params: Params) -> tuple[np.ndarray, np.ndarray]:
        x = torch.from_numpy(_with_bias(batch.x))
        y = torch.from_numpy(batch.y)
        weights = torch.zeros(
            x.shape[0], x.shape[2], batch.num_classes, dtype=torch.float64, requires_grad=True
        )
        opt = torch.optim.LBFGS(
            [weights],
            lr=1,
            max_iter=params.max_iter,
            tolerance_grad=1e-10,
            tolerance_change=1e-14,
            line_search_fn="strong_wolfe",
        )

        def closure() -> torch.Tensor:
            opt.zero_grad()
            logits = x @ weights
            loss = (
                F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="sum")
                + 0.5 * params.l2_penalty * (weights**2).sum()
            )
            loss.backward()
            return loss

        opt.step(closure)
        with torch.no_grad():
            probs = torch.softmax(torch.from_numpy(_with_bias(batch.query_x)) @ weights, -1)
        return probs.argmax(-1).numpy(), probs.numpy()


def _with_bias(x: np.ndarray) -> np.ndarray:
    return np.concatenate([x, np.ones((*x.shape[:-1], 1))], axis=-1)


@register
class SVM(Baseline):
    """Linear SVM (sklearn LinearSVC, one-vs-rest, per episode); accuracy only."""

    name = "svm"
    task_kind = "classification"

    @dataclass
    class Params:
        svm_c: float = option(1.0, help="inverse regularisation C (large: hard margin)")

    def predict_batch(self, batch: Batch, params: Params) -> tuple[np.ndarray, None]:
        def fit_predict(x: np.ndarray, y: np.ndarray, query_x: np.ndarray) -> np.ndarray:
            if len(np.unique(y)) == 1:  # sklearn cannot fit one class; every rule predicts it
                return np.full(len(query_x), y[0])
            return LinearSVC(C=params.svm_c, random_state=0).fit(x, y).predict(query_x)

        return for_each_episode(batch, fit_predict), None


@register
class KNN(Baseline):
    """k-nearest neighbours (Euclidean): majority vote for classes, mean for targets."""

    name = "knn"
    task_kind = "any"

    @dataclass
    class Params:
        knn_neighbors: int = option(3, help="number of neighbours (fewer if fewer demos)")

    def predict_batch(self, batch: Batch, params: Params) -> tuple[np.ndarray, None]:
        idx = nearest_neighbours(
            batch.x, batch.query_x, min(params.knn_neighbors, batch.x.shape[1])
        )
        labels = np.take_along_axis(batch.y[:, None, :], idx, axis=-1)  # (B, Q, neighbours)
        if batch.num_classes is None:
            return labels.mean(-1), None
        return one_hot(labels, batch.num_classes).sum(-2).argmax(-1), None


@register
class MLE(Baseline):
    """Class-mean "MLE" (Magen & Vardi): sign(μ̂·x) with μ̂ = mean of y_i x_i for binary tasks,
    nearest class mean for multi-class ones. A point estimate, compared on accuracy: no probs."""

    name = "mle"
    task_kind = "classification"

    def predict_batch(self, batch: Batch, params: Any) -> tuple[np.ndarray, None]:
        scores = class_mean_scores(batch.x, batch.y, batch.query_x, batch.num_classes)
        return decide(scores), None


@register
class OracleSubspaceMLE(Baseline):
    """MLE after projecting onto the pool's true subspace U (meta ``U``, d × k): the optimal
    learner that knows the subspace, which needs Õ(k) rather than Ω(d) examples."""

    name = "oracle_subspace_mle"
    task_kind = "classification"
    uses_meta = True

    def predict_batch(self, batch: Batch, params: Any) -> tuple[np.ndarray, None]:
        basis = batch.meta("U", self.name)
        scores = class_mean_scores(
            batch.x @ basis, batch.y, batch.query_x @ basis, batch.num_classes
        )
        return decide(scores), None


@register
class KnownMeanOracle(Baseline):
    """Bayes classifier of the binary Gaussian mixture x = yμ + N(0, I) given the task's μ (meta
    ``mu``): predicts sign(μ·x) with posterior P(y = +1 | x) = σ(2μ·x), mixed with its
    complement when stored labels are flipped with probability p (meta ``label_flip``, default
    0). An upper bound."""

    name = "known_mean_oracle"
    task_kind = "classification"
    uses_meta = True
    defines_probs = True
    needs_demos = False

    def predict_batch(self, batch: Batch, params: Any) -> tuple[np.ndarray, np.ndarray]:
        if batch.num_classes != 2:
            raise HfIclError(
                f"baseline {self.name!r} is for binary tasks; task {batch.task!r} "
                f"has {batch.num_classes} classes"
            )
        scores = np.einsum("bqd,bd->bq", batch.query_x, batch.meta("mu", self.name))
        clean = 1.0 / (1.0 + np.exp(-2.0 * scores))
        flip = batch.meta("label_flip", self.name, default=0.0)[:, None]
        positive = (1.0 - flip) * clean + flip * (1.0 - clean)
        return decide(scores), np.stack([1.0 - positive, positive], axis=-1)


@register
class SGDMLP(Baseline):
    """GPICL's SGD baseline: a small ReLU MLP trained by full-batch SGD (no momentum) on the
    demos' cross-entropy, with fixed steps and learning rate; probs are its softmax."""

    name = "sgd_mlp"
    task_kind = "classification"
    defines_probs = True

    @dataclass
    class Params:
        hidden_units: int = option(32, help="width of the hidden layer")
        train_steps: int = option(100, help="SGD steps on the demos")
        lr: float = option(0.1, help="SGD learning rate")
        seed: int = option(0, help="seed of the (shared) initialisation")

    def predict_batch(self, batch: Batch, params: Params) -> tuple[np.ndarray, np.ndarray]:
        b, _, d = batch.x.shape
        net = BatchedMLP(b, d, params.hidden_units, batch.num_classes, params.seed)

        def loss(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
            return F.cross_entropy(out.transpose(1, 2), target, reduction="none").mean(-1)

        net.fit(batch.x, torch.from_numpy(batch.y), loss, "sgd", params.train_steps, params.lr)
        probs = torch.softmax(torch.from_numpy(net.outputs(batch.query_x)), -1).numpy()
        return probs.argmax(-1), probs


@register
class Majority(Baseline):
    """The demos' most frequent class, probs = add-one-smoothed class frequencies. Never reads
    x, so it applies to every classification family, text included."""

    name = "majority"
    task_kind = "classification"
    defines_probs = True
    reads_x = False

    def predict_batch(self, batch: Batch, params: Any) -> tuple[np.ndarray, np.ndarray]:
        counts = one_hot(batch.y, batch.num_classes).sum(axis=1) + 1.0
        probs = counts / counts.sum(-1, keepdims=True)
        num_queries = batch.episodes[0].num_queries
        probs = np.repeat(probs[:, None, :], num_queries, axis=1)
        return probs.argmax(-1), probs
