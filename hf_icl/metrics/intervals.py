"""Confidence intervals that cover both sources of ICL variance: demo sets and queries.

A report cell averages a metric over S demo sets (seeds × orders), each scored on n queries.
One-way random effects: a set's metric m_s = μ + b_s + e_s with b_s the demo-set effect
(variance σ_b²) and e_s the query-sampling error (variance σ_w²/n). The variance of the mean
over sets is (σ_b² + σ_w²/n) / S, and the sample variance of the m_s estimates its numerator
without bias, so the interval is mean ± t_{S−1} · sd(m_s)/√S. It is exact for normal effects
at any S ≥ 2, which a bootstrap over 3 sets (10 distinct resamples) cannot be; a two-level
bootstrap would only approximate it at S ≥ 10, so it is not used. The decomposition splits
sd(m_s)² into σ̂_b² = max(0, s² − mean within-set variance) and the within-set (query) part,
estimated by resampling queries inside each set (exact for any metric: accuracy, macro-F1,
NSE). With one set only the query part exists: the interval is the query bootstrap and says so.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from hf_icl.metrics import _resampled_stat

BOTH = "demo sets + queries"
RANGES = {
    "accuracy": (0.0, 1.0),
    "macro_f1": (0.0, 1.0),
    "exact_match": (0.0, 1.0),
    "nse": (0.0, np.inf),
}  # the true mean lies inside, so clipping keeps coverage
QUERIES_ONLY = "queries only (one demo set)"


@dataclass
class Interval:
    mean: float
    low: float
    high: float
    sets: int
    between_var: float  # σ̂_b²: variance of the metric due to the demo set
    within_var: float  # variance of one set's metric due to its queries (σ̂_w²/n)
    covers: str

    @property
    def demo_share(self) -> float | None:
        """Share of one set's metric variance that comes from the choice of demo set."""
        total = self.between_var + self.within_var
        return None if self.sets < 2 or total <= 0 else self.between_var / total


def random_effects_interval(
    per_set: Sequence[float], within_var: Sequence[float], level: float = 0.95
) -> Interval:
    """Mean over demo sets ± t_{S−1} · sd/√S, with the between/within split (S ≥ 2)."""
    from scipy.stats import t

    m = np.asarray(per_set, dtype=np.float64)
    s = len(m)
    if s < 2:
        raise ValueError("a random-effects interval needs at least 2 demo sets")
    spread = float(np.var(m, ddof=1))
    half = float(t.ppf((1 + level) / 2, s - 1)) * np.sqrt(spread / s)
    within = float(np.mean(within_var))
    return Interval(
        float(m.mean()),
        float(m.mean() - half),
        float(m.mean() + half),
        s,
        max(0.0, spread - within),
        within,
        BOTH,
    )


def cell_interval(
    name: str,
    predictions,
    references,
    groups,
    *,
    resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    **kwargs,
) -> Interval:
    """The interval of one report cell: samples of S demo sets (``groups``), metric ``name``."""
    pred, ref, groups = np.asarray(predictions), np.asarray(references), np.asarray(groups)
    rng = np.random.default_rng(seed)
    keys = np.unique(groups)
    per_set, within, boots = [], [], np.zeros(resamples)
    for g in keys:
        members = np.flatnonzero(groups == g)
        per_set.append(
            float(_resampled_stat(name, pred[members][None], ref[members][None], **kwargs)[0])
        )
        idx = members[rng.integers(0, len(members), size=(resamples, len(members)))]
        stats = _resampled_stat(name, pred[idx], ref[idx], **kwargs)
        within.append(float(np.var(stats, ddof=1)))
        boots += stats
    if len(keys) >= 2:
        interval = random_effects_interval(per_set, within, level)
    else:
        low, high = np.quantile(boots, [(1 - level) / 2, (1 + level) / 2])
        interval = Interval(per_set[0], float(low), float(high), 1, 0.0, within[0], QUERIES_ONLY)
    floor, ceiling = RANGES.get(name, (-np.inf, np.inf))
    interval.low, interval.high = max(interval.low, floor), min(interval.high, ceiling)
    return interval
