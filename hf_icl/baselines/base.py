"""The baseline contract: learners that see an Episode's demonstrations (and, for oracles, its
metadata) and predict its queries, in the same per-query form the scorer produces.

Episodes with equal shapes are stacked into (B, shots, dim) arrays so that every learner runs as
batched linear algebra; ``Baseline.predict`` does the grouping and un-grouping once for all.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np
import torch

from hf_icl.config import from_dict, to_dict
from hf_icl.episode import Episode
from hf_icl.errors import HfIclError
from hf_icl.registry import Registry

TaskKind = Literal["regression", "classification"]
# "any": the learner reads out either kind (k-NN: mean or vote of the neighbours' labels).
BaselineKind = Literal["regression", "classification", "any"]


@dataclass
class Predictions:
    """One episode's query predictions: classes (int64) or targets (float64), plus class
    probabilities (Q, num_classes) where the learner defines them."""

    pred: np.ndarray
    probs: np.ndarray | None = None


@dataclass
class Batch:
    """Episodes of equal shapes, their first ``shots`` demonstrations stacked.

    ``x``/``query_x`` are (B, shots, dim)/(B, Q, dim) float64 arrays, or None when the inputs
    are text (only learners that never read x accept those).
    """

    episodes: list[Episode]
    x: np.ndarray | None
    y: np.ndarray
    query_x: np.ndarray | None
    num_classes: int | None

    @property
    def task(self) -> str:
        return self.episodes[0].task

    def meta(self, key: str, baseline: str, default: float | None = None) -> np.ndarray:
        """Stack ``meta[key]`` over the episodes (oracles read the task's true parameters);
        episodes without it get ``default``, or an error when there is none."""
        missing = next((ep for ep in self.episodes if key not in ep.meta), None)
        if missing is not None and default is None:
            have = ", ".join(sorted(missing.meta)) or "nothing"
            raise HfIclError(
                f"baseline {baseline!r} needs episode meta {key!r}; task "
                f"{missing.task!r} provides: {have}"
            )
        return np.stack(
            [np.asarray(ep.meta.get(key, default), dtype=np.float64) for ep in self.episodes]
        )


def is_numeric(x: Any) -> bool:
    return isinstance(x, np.ndarray) and x.dtype.kind in "biuf"


def _group_key(ep: Episode) -> tuple:
    dims = np.shape(ep.query_x)[1:] if is_numeric(ep.query_x) else None
    return ep.num_queries, ep.num_classes, dims


def _stack(episodes: list[Episode], shots: int) -> Batch:
    numeric = is_numeric(episodes[0].demo_x)
    x = np.stack([ep.demo_x[:shots] for ep in episodes]).astype(np.float64) if numeric else None
    query_x = np.stack([ep.query_x for ep in episodes]).astype(np.float64) if numeric else None
    dtype = np.float64 if episodes[0].is_regression else np.int64
    y = np.stack([np.asarray(ep.demo_y[:shots], dtype=dtype) for ep in episodes])
    return Batch(episodes, x, y, query_x, episodes[0].num_classes)


def group_batches(episodes: list[Episode], shots: int) -> list[tuple[list[int], Batch]]:
    """Split episodes into stackable groups; each comes with its positions in ``episodes``."""
    groups: dict[tuple, list[int]] = {}
    for i, ep in enumerate(episodes):
        groups.setdefault(_group_key(ep), []).append(i)
    return [(idx, _stack([episodes[i] for i in idx], shots)) for idx in groups.values()]


def for_each_episode(
    batch: Batch, fit_predict: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]
) -> np.ndarray:
    """Run a per-episode learner (sklearn) over a batch: fit_predict(x, y, query_x) → (Q,)."""
    rows = zip(batch.x, batch.y, batch.query_x, strict=True)
    return np.stack([fit_predict(x, y, query_x) for x, y, query_x in rows])


class Baseline(ABC):
    """A learner from demonstrations. Subclasses set the class attributes and ``predict_batch``.

    ``uses_meta`` marks oracles (they read the task's true parameters from the episode meta and
    are labelled as such in reports); read it from instances, a learner may decide it from its
    params. ``defines_probs`` is True where the learner has class probabilities.
    """

    name: ClassVar[str]
    task_kind: ClassVar[BaselineKind]
    uses_meta: bool = False
    defines_probs: ClassVar[bool] = False
    reads_x: ClassVar[bool] = True
    needs_demos: ClassVar[bool] = True  # False: predicts from meta alone, also at 0 shots

    @dataclass
    class Params:
        pass

    def __init__(self, params: Any = None) -> None:
        self.params = params if params is not None else self.Params()

    @property
    def label(self) -> str:
        """Name plus any non-default params, so one config can list a learner twice."""
        defaults = to_dict(self.Params())
        changed = {k: v for k, v in to_dict(self.params).items() if defaults.get(k) != v}
        name = self.name + (
            f"({', '.join(f'{k}={v}' for k, v in changed.items())})" if changed else ""
        )
        return f"{name} (oracle)" if self.uses_meta else name

    def describe(self) -> dict[str, Any]:
        """Name, kind and params for results files."""
        return {
            "name": self.name,
            "task_kind": self.task_kind,
            "uses_meta": self.uses_meta,
            "params": to_dict(self.params),
        }

    def tune(self, episodes: list[Episode]) -> None:  # noqa: B027 (optional hook)
        """Choose hyperparameters on held-out (meta-train) episodes; most learners have none."""

    def params_for(self, shots: int) -> Any:
        """The params used at this shot count (tuned learners override)."""
        return self.params

    def predict(self, episodes: list[Episode], shots: int) -> list[Predictions]:
        """Fit on the first ``shots`` demonstrations of each episode; predict all its queries."""
        return self.predict_with(episodes, shots, self.params_for(shots))

    def predict_with(self, episodes: list[Episode], shots: int, params: Any) -> list[Predictions]:
        """``predict`` with explicit params (grid search tries several)."""
        self._check(episodes, shots)
        out: dict[int, Predictions] = {}
        for idx, batch in group_batches(episodes, shots):
            if shots == 0 and self.needs_demos:
                pred, probs = self._prior(batch)
            else:
                pred, probs = self.predict_batch(batch, params)
            for j, i in enumerate(idx):
                out[i] = Predictions(pred[j], None if probs is None else probs[j])
        return [out[i] for i in range(len(episodes))]

    @abstractmethod
    def predict_batch(self, batch: Batch, params: Any) -> tuple[np.ndarray, np.ndarray | None]:
        """(B, Q) predictions and (B, Q, C) probabilities or None, for shots ≥ 1."""

    def _prior(self, batch: Batch) -> tuple[np.ndarray, np.ndarray | None]:
        """Without demonstrations: target 0, or class 0 (ties go to the lowest class) with
        uniform probabilities."""
        shape = (len(batch.episodes), batch.episodes[0].num_queries)
        if batch.num_classes is None:
            return np.zeros(shape), None
        probs = np.full((*shape, batch.num_classes), 1.0 / batch.num_classes)
        return np.zeros(shape, dtype=np.int64), probs if self.defines_probs else None

    def _check(self, episodes: list[Episode], shots: int) -> None:
        for ep in episodes:
            kind: TaskKind = "regression" if ep.is_regression else "classification"
            check_task(self.name, self.task_kind, ep.task, kind)
            if shots > ep.num_demos:
                raise HfIclError(
                    f"baseline {self.name!r}: shots={shots} but an episode of task "
                    f"{ep.task!r} has only {ep.num_demos} demonstrations"
                )
            if self.reads_x and not is_numeric(ep.demo_x):
                raise HfIclError(
                    f"baseline {self.name!r} needs numeric inputs; task {ep.task!r} has text inputs"
                )


BASELINES: Registry[type[Baseline]] = Registry("baseline")


def register(cls: type[Baseline]) -> type[Baseline]:
    """Class decorator: add a baseline to BASELINES under its ``name``."""
    return BASELINES.register(cls.name)(cls)


def check_task(name: str, baseline_kind: BaselineKind, task: str, task_kind: TaskKind) -> None:
    if baseline_kind not in (task_kind, "any"):
        raise HfIclError(f"baseline {name!r} is for {baseline_kind}; task {task!r} is {task_kind}")


def make_baseline(
    name: str, *, task: str | None = None, task_kind: TaskKind | None = None, **params: Any
) -> Baseline:
    """Build a baseline from its name and params (validated like config keys); given the task's
    name and kind, also check that the baseline applies to it."""
    cls = BASELINES.get(name)
    if params and not dataclasses.fields(cls.Params):
        raise HfIclError(f"baseline {name!r} takes no params; got {', '.join(params)}")
    parsed = from_dict(cls.Params, params, source=f"baseline {name!r}")
    if task_kind is not None:
        check_task(name, cls.task_kind, task or "?", task_kind)
    return cls(parsed)


def with_param(params: Any, field: str, value: Any) -> Any:
    return dataclasses.replace(params, **{field: value})


class BatchedMLP:
    """Independent 2-layer ReLU nets, one per episode, trained together with bmm (float32).

    The loss is a sum of per-episode losses, so each net's gradients, and its SGD or Adam
    updates, are its own. Every net starts from the same seeded initialisation, so an episode's
    predictions do not depend on which batch it is in.
    """

    def __init__(self, batch_size: int, in_dim: int, hidden: int, out_dim: int, seed: int):
        gen = torch.Generator().manual_seed(seed)

        def uniform(*shape: int, fan_in: int) -> torch.Tensor:  # nn.Linear's initialisation
            w = (torch.rand(*shape, generator=gen) * 2 - 1) / fan_in**0.5
            return w.expand(batch_size, *shape).clone().requires_grad_(True)

        self.weights = [
            uniform(in_dim, hidden, fan_in=in_dim),
            uniform(1, hidden, fan_in=in_dim),
            uniform(hidden, out_dim, fan_in=hidden),
            uniform(1, out_dim, fan_in=hidden),
        ]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        w1, b1, w2, b2 = self.weights
        return torch.relu(x @ w1 + b1) @ w2 + b2

    def fit(
        self,
        x: np.ndarray,
        target: torch.Tensor,
        loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        optimizer: Literal["adam", "sgd"],
        steps: int,
        lr: float,
    ) -> BatchedMLP:
        """``loss(outputs (B, k, out), target)`` → per-episode losses (B,), summed."""
        inputs = torch.from_numpy(x).float()
        opt_cls = torch.optim.Adam if optimizer == "adam" else torch.optim.SGD
        opt = opt_cls(self.weights, lr=lr)
        for _ in range(steps):
            opt.zero_grad()
            loss(self(inputs), target).sum().backward()
            opt.step()
        return self

    def outputs(self, x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return self(torch.from_numpy(x).float()).double().numpy()
