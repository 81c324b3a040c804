"""Kendall τ between ICL's attention to demonstration tokens and fine-tuning's to training tokens.

Per example and layer, τ_b over the demonstration tokens (the same tokens are the fine-tuning
data) between two importances: ``icl`` is the softmax attention weight from the scored position
p* to each demonstration token in the ICL prompt (mean over heads); ``ft`` is what Dai et al.'s
dual form calls fine-tuning's attention to a training token, e_j·(x_j^T q): the size of token
j's share of the SGD update to p*'s key and value, |x_j·x_p*| (‖∂ℓ/∂k_j‖ + ‖∂ℓ/∂v_j‖), where
x is the key/value projections' input (see hf_icl.analysis). The baseline replaces ``ft`` with
u ~ U[0,1)^J. τ is undefined (NaN) where either importance is constant.
"""

import datasets
import evaluate
import numpy as np
from scipy.stats import kendalltau

from hf_icl.metrics.vectors import summarise


def _tau(a: np.ndarray, b: np.ndarray) -> float:
    return float(kendalltau(a, b).statistic)


class KendallTau(evaluate.Metric):
    def _info(self):
        weights = datasets.Sequence(datasets.Sequence(datasets.Value("float32")))
        return evaluate.MetricInfo(
            description="Kendall rank correlation (tau-b) per layer between ICL attention to "
            "demonstration tokens and fine-tuning's attention to the same training "
            "tokens, with a random baseline.",
            citation="Dai et al. (2023), Why Can GPT Learn In-Context? arXiv:2212.10559",
            inputs_description="icl, ft: per example, layers × demonstration-token importances; "
            "seed: for the random baseline",
            features=datasets.Features({"icl": weights, "ft": weights}),
        )

    def _compute(self, icl, ft, seed=0):
        rng = np.random.default_rng(seed)
        tau, baseline = [], []
        for a, b in zip(icl, ft):
            a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
            tau.append([_tau(x, y) for x, y in zip(a, b)])
            baseline.append([_tau(x, rng.random(x.shape)) for x in a])
        return {
            **summarise("kendall_tau", np.array(tau)),
            **summarise("kendall_tau_random", np.array(baseline)),
        }
