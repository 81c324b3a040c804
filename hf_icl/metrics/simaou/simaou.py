"""SimAOU (Dai et al.): does ICL move each layer's attention output the way fine-tuning does?

Per example and layer, cos(â_ICL − â_ZS, â_FT − â_ZS) with â = a/‖a‖, where a is the
self-attention output (after o_proj, before the residual) at the scored position. The random
baselines replace the fine-tuning update by u ~ U[0,1)^d (Dai et al.) or u ~ N(0, I); a
similarity is only evidence where it clearly exceeds them. An update within float rounding is
no update: its cosine is undefined (NaN) and left out of the means.
"""

import datasets
import evaluate
import numpy as np

from hf_icl.metrics.vectors import cosine, difference, summarise


def _unit(a: np.ndarray) -> np.ndarray:
    return a / np.linalg.norm(a, axis=-1, keepdims=True)


class SimAOU(evaluate.Metric):
    def _info(self):
        vectors = datasets.Sequence(datasets.Sequence(datasets.Value("float32")))
        return evaluate.MetricInfo(
            description="Cosine between the ICL and the fine-tuning updates of the normalised "
            "attention output, per layer, with random-direction baselines.",
            citation="Dai et al. (2023), Why Can GPT Learn In-Context? arXiv:2212.10559",
            inputs_description="icl, ft, zs: per example, one attention-output vector per layer "
            "(layers × hidden); seed: for the random baselines",
            features=datasets.Features({"icl": vectors, "ft": vectors, "zs": vectors}),
        )

    def _compute(self, icl, ft, zs, seed=0):
        icl, ft, zs = (np.asarray(v, dtype=np.float64) for v in (icl, ft, zs))
        update = difference(_unit(icl), _unit(zs))
        rng = np.random.default_rng(seed)
        return {
            **summarise("simaou", cosine(update, difference(_unit(ft), _unit(zs)))),
            **summarise("simaou_uniform", cosine(update, rng.random(update.shape))),
            **summarise("simaou_normal", cosine(update, rng.standard_normal(update.shape))),
        }
