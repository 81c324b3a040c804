"""SimAM (Dai et al.): does ICL attend over the query's own tokens like the fine-tuned model?

Inputs are raw pre-softmax scores from the scored position to the query's own tokens, per layer
and head. Per example, layer and head the rows are left-padded with zeros to equal length (they
end at the same token: the scored position), the cosine is taken, and heads are averaged:
``simam`` = cos(s_ICL, s_FT) (after fine-tuning), ``simam_before`` = cos(s_ICL, s_ZS) (its
baseline), ``simam_difference`` = cos(s_ICL − s_ZS, s_FT − s_ZS) (Deutch et al.'s form, which
discounts what both share with the zero-shot model; undefined, NaN, where a difference is
within float rounding, as at layer 0, which has not seen the demonstrations yet).
"""

import datasets
import evaluate
import numpy as np

from hf_icl.metrics.vectors import cosine, difference, nanmean, summarise


def _left_pad(rows: list[np.ndarray]) -> list[np.ndarray]:
    width = max(r.shape[-1] for r in rows)
    return [np.pad(r, [(0, 0)] * (r.ndim - 1) + [(width - r.shape[-1], 0)]) for r in rows]


class SimAM(evaluate.Metric):
    def _info(self):
        scores = datasets.Sequence(datasets.Sequence(datasets.Sequence(datasets.Value("float32"))))
        return evaluate.MetricInfo(
            description="Cosine between ICL and fine-tuned attention scores over the query's "
            "tokens, per layer (mean over heads), with the before-fine-tuning "
            "baseline and the difference form.",
            citation="Dai et al. (2023), arXiv:2212.10559; Deutch et al. (2024), arXiv:2311.07772",
            inputs_description="icl, ft, zs: per example, raw scores layers × heads × query "
            "tokens (token counts may differ between the three)",
            features=datasets.Features({"icl": scores, "ft": scores, "zs": scores}),
        )

    def _compute(self, icl, ft, zs):
        forms: dict[str, list[np.ndarray]] = {
            "simam": [],
            "simam_before": [],
            "simam_difference": [],
        }
        for example in zip(icl, ft, zs):
            s_icl, s_ft, s_zs = _left_pad([np.asarray(s, dtype=np.float64) for s in example])
            pairs = {
                "simam": (s_icl, s_ft),
                "simam_before": (s_icl, s_zs),
                "simam_difference": (difference(s_icl, s_zs), difference(s_ft, s_zs)),
            }
            for name, (a, b) in pairs.items():
                forms[name].append(nanmean(cosine(a, b), axis=-1))  # mean over heads
        out: dict = {}
        for name, per_example in forms.items():
            out.update(summarise(name, np.array(per_example)))
        return out
