"""GPICL projected tasks (Kirsch et al., arXiv 2212.04458): random projections of a real dataset.

Task n projects the z-normalised inputs with A_n (entries N(0, 1/N_x)) and relabels the classes
with a uniformly random permutation; both come from the task's seed, so a pool of 2^24 tasks
is never materialised. Meta-test ('test' split) uses unseen projections and, optionally, an
unseen base dataset (``test_dataset``), whose inputs are fitted to the training input size:
truncated when longer; zero-padded when shorter and scaled by sqrt(N_x / N_test) so that, as
for training data, E|x|^2 = N_x and projected features keep unit variance. Its first C classes
are used (C = the training class count); with fewer classes only those labels occur.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hf_icl.config import option
from hf_icl.episode import Episode
from hf_icl.errors import HfIclError
from hf_icl.samplers.arrays import LabelledArrays, check_spec, load_labelled_arrays
from hf_icl.samplers.base import FAMILIES, Split, rng_for
from hf_icl.samplers.pool import Draw, PooledSampler, PoolParams


@dataclass
class ProjectedParams(PoolParams):
    dataset: str = option(
        "sklearn:digits",
        help="base dataset: sklearn:digits|iris|wine|"
        "breast_cancer, a save_to_disk folder, or a Hub dataset name",
    )
    dataset_split: str = option("train", help="split of a Hub dataset or saved DatasetDict")
    feature_column: str | None = option(
        None, help="input column; null: the one image/array/sequence column"
    )
    label_column: str = option("label", help="integer or ClassLabel column")
    test_dataset: str | None = option(
        None, help="base dataset of split='test' (an unseen base dataset); null: dataset"
    )
    test_dataset_split: str | None = option(None, help="split of test_dataset; null: dataset_split")
    test_feature_column: str | None = option(
        None, help="input column of test_dataset; null: feature_column"
    )
    proj_dim: int | None = option(
        8, help="output dimension of the projection; null: the input size N_x (square, as in GPICL)"
    )
    proj_scale: str = option(
        "variance",
        choices=("variance", "std"),
        help="whether 1/N_x is the variance or the std of A's entries",
    )
    classes: list[int] | None = option(
        None, help="label values to keep, relabelled 0..C-1 in this order; null: all"
    )
    max_classes: int | None = option(None, help="keep only the first max_classes classes")
    bias_fraction: float = option(
        0.0,
        help="fraction of every training batch that uses one "
        "fixed (identity) label permutation (GPICL's biased data)",
    )
    base_dir: str = option(
        "",
        help="folder that relative dataset paths resolve against "
        "(set by the task loader to the task file's folder)",
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        check_spec(self.dataset, "dataset")
        if self.test_dataset is not None:
            check_spec(self.test_dataset, "test_dataset")
        if self.proj_dim is not None and self.proj_dim < 1:
            raise ValueError(
                f"proj_dim: {self.proj_dim} is not positive; allowed: an integer "
                ">= 1 or null (square projection)"
            )
        if self.classes is not None and (
            len(set(self.classes)) != len(self.classes) or len(self.classes) < 2
        ):
            raise ValueError(f"classes: {self.classes} must list at least 2 distinct labels")
        if self.max_classes is not None and self.max_classes < 2:
            raise ValueError(f"max_classes: {self.max_classes} is below 2; allowed: >= 2 or null")
        if not 0.0 <= self.bias_fraction <= 1.0:
            raise ValueError(f"bias_fraction: {self.bias_fraction} is outside [0, 1]")


@dataclass(frozen=True)
class BaseData:
    """The examples of the kept classes: rows of ``source`` and their class index 0..C-1."""

    source: LabelledArrays
    rows: np.ndarray
    y: np.ndarray

    def inputs(self, pick: np.ndarray, width: int) -> np.ndarray:
        return fit_width(self.source.x[self.rows[pick]].astype(np.float64), width)


def fit_width(x: np.ndarray, width: int) -> np.ndarray:
    """Truncate, or zero-pad keeping E|x|^2 = width (see the module docstring)."""
    have = x.shape[1]
    if have >= width:
        return x[:, :width]
    return np.pad(x, ((0, 0), (0, width - have))) * np.sqrt(width / have)


def select_classes(
    data: LabelledArrays, wanted: list[int] | tuple[int, ...] | None, max_classes: int | None
) -> tuple[int, ...]:
    chosen = tuple(wanted) if wanted is not None else data.labels
    missing = [c for c in chosen if c not in data.labels]
    if missing:
        raise HfIclError(
            f"dataset {data.name!r}: classes {missing} are not among its labels {list(data.labels)}"
        )
    chosen = chosen[:max_classes]
    if len(chosen) < 2:
        raise HfIclError(f"dataset {data.name!r}: needs at least 2 classes, has {list(chosen)}")
    return chosen


def restrict(data: LabelledArrays, classes: tuple[int, ...]) -> BaseData:
    """Keep the examples of ``classes``, relabelled to their position in ``classes``."""
    lookup = {label: i for i, label in enumerate(classes)}
    rows = np.flatnonzero(np.isin(data.y, classes))
    y = np.fromiter((lookup[v] for v in data.y[rows].tolist()), dtype=np.int64, count=len(rows))
    return BaseData(source=data, rows=rows, y=y)


def projection_matrix(projection_seed: int, shape: tuple[int, int], std: float) -> np.ndarray:
    """A task's projection, rebuilt from its meta's ``projection_seed/_shape/_std``."""
    return np.random.default_rng(projection_seed).normal(0.0, std, size=shape)


@FAMILIES.register("projected")
class ProjectedSampler(PooledSampler):
    """Episodes of GPICL tasks: demos and queries are distinct examples of the base dataset."""

    family = "projected"
    Params = ProjectedParams

    def __init__(self, name: str, params: ProjectedParams) -> None:
        super().__init__(name, params)
        train = self._load(params.dataset, params.dataset_split, params.feature_column)
        self.classes = select_classes(train, params.classes, params.max_classes)
        self.in_dim = train.x.shape[1]
        out_dim = params.proj_dim or self.in_dim
        self.projection_shape = (out_dim, self.in_dim)
        variance_scale = params.proj_scale == "variance"
        self.projection_std = self.in_dim**-0.5 if variance_scale else 1 / self.in_dim
        base = restrict(train, self.classes)
        self.data = {"train": base, "test": self._test_data(base)}

    def _load(self, spec: str, split: str, feature_column: str | None) -> LabelledArrays:
        p = self.params
        return load_labelled_arrays(spec, split, feature_column, p.label_column, p.base_dir)

    def _test_data(self, train: BaseData) -> BaseData:
        """Examples of split='test': another split or dataset if configured (module docstring)."""
        p = self.params
        spec = p.test_dataset or p.dataset
        split = p.test_dataset_split or p.dataset_split
        if (spec, split) == (p.dataset, p.dataset_split):
            return train
        test = self._load(spec, split, p.test_feature_column or p.feature_column)
        same_labels = spec == p.dataset
        classes = self.classes if same_labels else test.labels[: len(self.classes)]
        return restrict(test, select_classes(test, classes, None))

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def max_demos(self, num_queries: int = 0) -> int:
        """Examples available to one episode (in the smaller split) minus its queries."""
        return min(len(d.y) for d in self.data.values()) - num_queries

    def episode(
        self, index: int, num_demos: int, num_queries: int, split: Split = "test"
    ) -> Episode:
        return self.make_episode(
            index, num_demos, num_queries, split, biased=self._biased(split, index)
        )

    def episodes(
        self, first: int, count: int, num_demos: int, num_queries: int, split: Split = "test"
    ) -> list[Episode]:
        """Exactly round(bias_fraction * count) training episodes of the batch are biased."""
        biased = self._biased_batch(split, first, count)
        return [
            self.make_episode(first + i, num_demos, num_queries, split, biased=bool(b))
            for i, b in enumerate(biased)
        ]

    def _biased(self, split: Split, index: int) -> bool:
        """A single episode is biased with probability bias_fraction (deterministic per index)."""
        draw = rng_for(self.params.seed, "bias", index).random()
        return split == "train" and draw < self.params.bias_fraction

    def _biased_batch(self, split: Split, first: int, count: int) -> np.ndarray:
        flags = np.zeros(count, dtype=bool)
        if split == "train":
            rng = rng_for(self.params.seed, "biasbat", first, count)
            biased = round(self.params.bias_fraction * count)
            flags[rng.choice(count, size=biased, replace=False)] = True
        return flags

    def draw(
        self, task_id: int, split: Split, rng: np.random.Generator, count: int, biased: bool = False
    ) -> Draw:
        data = self.data[split]
        if count > len(data.y):
            raise HfIclError(
                f"task {self.name!r}: {count} demos + queries requested but {data.source.name} "
                f"holds {len(data.y)} examples of the chosen classes"
            )
        pick = rng.choice(len(data.y), size=count, replace=False)
        task_rng = self.pool.task_rng(task_id)
        projection_seed = int(task_rng.integers(2**63))
        classes = self.num_classes
        permutation = np.arange(classes) if biased else task_rng.permutation(classes)
        projection = projection_matrix(projection_seed, self.projection_shape, self.projection_std)
        meta = {
            "projection_seed": projection_seed,
            "projection_shape": self.projection_shape,
            "projection_std": self.projection_std,
            "permutation": permutation,
            "biased": biased,
            "dataset": data.source.name,
        }
        return Draw(
            x=data.inputs(pick, self.in_dim) @ projection.T,
            y=permutation[data.y[pick]],
            meta=meta,
            ids=data.rows[pick].tolist(),
        )
