"""Row-wise vector helpers shared by the similarity metrics (SimAOU, SimAM)."""

from __future__ import annotations

import warnings

import numpy as np


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity along the last axis; NaN where either vector is zero (undefined)."""
    norms = np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(norms > 0, np.sum(a * b, axis=-1) / norms, np.nan)


def difference(a: np.ndarray, b: np.ndarray, rtol: float = 1e-4) -> np.ndarray:
    """a − b, with rows at float rounding level (‖a − b‖ ≤ rtol·max(‖a‖, ‖b‖)) set to zero,
    so that their cosine is undefined rather than the angle of rounding noise (e.g. layer 0's
    scores over the query's own tokens are the same with and without demonstrations)."""
    diff = a - b
    scale = np.maximum(np.linalg.norm(a, axis=-1), np.linalg.norm(b, axis=-1))
    return np.where((np.linalg.norm(diff, axis=-1) > rtol * scale)[..., None], diff, 0.0)


def nanmean(values: np.ndarray, axis: int | None = None) -> np.ndarray | float:
    """Mean that skips undefined (NaN) entries; NaN only when every entry is undefined."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(values, axis=axis)


def summarise(name: str, per_example: np.ndarray) -> dict:
    """`name` (mean over layers of the per-layer means), per layer, and per example × layer."""
    per_layer = nanmean(per_example, axis=0)
    return {
        name: float(nanmean(per_layer)),
        f"{name}_per_layer": per_layer.tolist(),
        f"{name}_per_example": per_example.tolist(),
    }
