"""Labelled numeric datasets as z-normalised arrays.

A dataset spec is ``sklearn:NAME`` (bundled with scikit-learn, so it works offline), a folder
written by ``datasets.Dataset.save_to_disk`` (relative paths resolve against the task file's
folder), or a Hugging Face Hub dataset name. Inputs are flattened and z-normalised with one
mean and one std over all examples and features, as GPICL does per dataset.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import datasets
import numpy as np

from hf_icl.errors import HfIclError, did_you_mean
from hf_icl.hub import hub_reason, one_line

SKLEARN_DATASETS = ("digits", "iris", "wine", "breast_cancer")
_SKLEARN_PREFIX = "sklearn:"
_ARRAY_FEATURES = (
    datasets.Image,
    datasets.List,
    datasets.LargeList,
    datasets.Array2D,
    datasets.Array3D,
    datasets.Array4D,
    datasets.Array5D,
)


@dataclass(frozen=True)
class LabelledArrays:
    """One split of a dataset: ``x`` (n, features) float32 z-normalised, ``y`` raw int labels."""

    name: str
    x: np.ndarray
    y: np.ndarray
    labels: tuple[int, ...]  # the label values in class order


def check_spec(spec: str, field: str) -> None:
    """Raise ValueError (naming ``field``) for a ``sklearn:`` spec naming no bundled dataset."""
    name = spec.removeprefix(_SKLEARN_PREFIX)
    if spec.startswith(_SKLEARN_PREFIX) and name not in SKLEARN_DATASETS:
        allowed = [_SKLEARN_PREFIX + n for n in SKLEARN_DATASETS]
        raise ValueError(
            f"{field}: unknown dataset {spec!r}{did_you_mean(spec, allowed)}; "
            f"allowed: {', '.join(allowed)}, a save_to_disk folder or a Hub name"
        )


def load_labelled_arrays(
    spec: str,
    split: str = "train",
    feature_column: str | None = None,
    label_column: str = "label",
    base_dir: str = "",
) -> LabelledArrays:
    """Load, flatten and z-normalise a labelled dataset (cached; the arrays are read-only)."""
    return _load(spec, split, feature_column, label_column, base_dir)


@functools.lru_cache(maxsize=8)
def _load(
    spec: str, split: str, feature_column: str | None, label_column: str, base_dir: str
) -> LabelledArrays:
    dataset = open_dataset(spec, split, base_dir)
    if label_column not in dataset.column_names:
        raise HfIclError(
            f"dataset {spec!r}: no label column {label_column!r}; columns: "
            f"{', '.join(dataset.column_names)} (set label_column)"
        )
    column = feature_column or detect_feature_column(dataset, label_column, spec)
    if column not in dataset.column_names:
        raise HfIclError(
            f"dataset {spec!r}: no feature column {column!r}; columns: "
            f"{', '.join(dataset.column_names)}"
        )
    columns = dataset.with_format("numpy")[:]
    x = z_normalise(flatten(columns[column], spec, column), spec)
    y, labels = class_labels(dataset, columns[label_column], label_column, spec)
    x.flags.writeable = False
    y.flags.writeable = False
    return LabelledArrays(name=spec, x=x, y=y, labels=labels)


def open_dataset(spec: str, split: str, base_dir: str = "") -> datasets.Dataset:
    """A ``datasets.Dataset`` from a sklearn name, a saved folder or the Hub."""
    if spec.startswith(_SKLEARN_PREFIX):
        check_spec(spec, "dataset")
        return sklearn_dataset(spec.removeprefix(_SKLEARN_PREFIX))
    folder = Path(base_dir, spec) if base_dir else Path(spec)
    if folder.is_dir():
        return pick_split(datasets.load_from_disk(str(folder)), split, spec)
    try:
        return datasets.load_dataset(spec, split=split)
    except Exception as err:  # offline, unknown repo, missing split...: all reported the same way
        reason = hub_reason(err) or one_line(err)
        raise HfIclError(
            f"dataset {spec!r} is neither sklearn:NAME nor a folder, and loading "
            f"it from the Hub failed: {reason}"
        ) from None


def sklearn_dataset(name: str) -> datasets.Dataset:
    """A bundled scikit-learn dataset; digits keep their 8x8 image shape (flattened later)."""
    import sklearn.datasets

    bunch = getattr(sklearn.datasets, f"load_{name}")()
    inputs = bunch.images if name == "digits" else bunch.data
    feature: datasets.List = datasets.List(datasets.Value("float64"))
    for _ in range(inputs.ndim - 2):
        feature = datasets.List(feature)
    features = datasets.Features(
        {
            "features": feature,
            "label": datasets.ClassLabel(names=[str(n) for n in bunch.target_names]),
        }
    )
    return datasets.Dataset.from_dict(
        {"features": inputs, "label": bunch.target}, features=features
    )


def pick_split(
    loaded: datasets.Dataset | datasets.DatasetDict, split: str, spec: str
) -> datasets.Dataset:
    if isinstance(loaded, datasets.Dataset):
        return loaded
    if split not in loaded:
        raise HfIclError(f"dataset {spec!r}: no split {split!r}; splits: {', '.join(loaded)}")
    return loaded[split]


def detect_feature_column(dataset: datasets.Dataset, label_column: str, spec: str) -> str:
    """The single image/array/sequence column other than the label."""
    found = [
        name
        for name, feature in dataset.features.items()
        if name != label_column and isinstance(feature, _ARRAY_FEATURES)
    ]
    if len(found) != 1:
        what = (
            f"several input columns ({', '.join(found)})"
            if found
            else "no image/array/sequence column"
        )
        raise HfIclError(
            f"dataset {spec!r}: {what}; set feature_column to one of: "
            f"{', '.join(c for c in dataset.column_names if c != label_column)}"
        )
    return found[0]


def flatten(values: np.ndarray, spec: str, column: str) -> np.ndarray:
    """(n, ...) inputs → (n, features) float64; ragged rows are an error."""
    if values.dtype == object:
        sizes = {np.size(v) for v in values}
        if len(sizes) > 1:
            shown = ", ".join(map(str, sorted(sizes)[:5]))
            raise HfIclError(
                f"dataset {spec!r}: column {column!r} has rows of different sizes "
                f"({shown}); inputs must have one size"
            )
        values = np.stack([np.asarray(v) for v in values])
    try:
        x = values.reshape(len(values), -1).astype(np.float64)
    except (TypeError, ValueError):
        raise HfIclError(
            f"dataset {spec!r}: column {column!r} is not numeric "
            f"(dtype {values.dtype}); set feature_column"
        ) from None
    if not np.isfinite(x).all():
        rows = np.unique(np.nonzero(~np.isfinite(x))[0])
        raise HfIclError(
            f"dataset {spec!r}: column {column!r} has NaN or infinite values in "
            f"{len(rows)} rows (first: row {rows[0]}); clean the data first"
        )
    return x


def z_normalise(x: np.ndarray, spec: str) -> np.ndarray:
    """One mean and std over all examples and features (GPICL), stored as float32."""
    std = x.std()
    if std == 0:
        raise HfIclError(f"dataset {spec!r}: all input values are equal; cannot z-normalise")
    return ((x - x.mean()) / std).astype(np.float32)


def class_labels(
    dataset: datasets.Dataset, values: np.ndarray, column: str, spec: str
) -> tuple[np.ndarray, tuple[int, ...]]:
    """Integer labels and the label values in class order (ClassLabel order or sorted)."""
    feature = dataset.features[column]
    if isinstance(feature, datasets.ClassLabel):
        return values.astype(np.int64), tuple(range(feature.num_classes))
    if not (isinstance(feature, datasets.Value) and feature.dtype.startswith(("int", "uint"))):
        raise HfIclError(
            f"dataset {spec!r}: label column {column!r} has type {feature}; "
            "expected integer labels or ClassLabel"
        )
    y = values.astype(np.int64)
    return y, tuple(int(v) for v in np.unique(y))
