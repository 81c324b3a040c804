"""Rec2FTP (Dai et al.): the share of fine-tuning's recoveries that ICL also makes.

Rec2FTP = 100 · |{ZS wrong ∧ FT right ∧ ICL right}| / |{ZS wrong ∧ FT right}|. With no
example that fine-tuning recovers, the ratio is undefined: None, never 0, so that an empty
denominator is not read as "ICL recovers nothing".
"""

import datasets
import evaluate
import numpy as np


class Rec2FTP(evaluate.Metric):
    def _info(self):
        label = datasets.Value("int64")
        return evaluate.MetricInfo(
            description="Percentage of examples fixed by fine-tuning (zero-shot wrong, fine-tuned "
            "right) that in-context learning also gets right.",
            citation="Dai et al. (2023), Why Can GPT Learn In-Context? arXiv:2212.10559",
            inputs_description="zs, icl, ft: predicted class indices of the zero-shot, in-context "
            "and fine-tuned model; references: gold class indices",
            features=datasets.Features(
                {"zs": label, "icl": label, "ft": label, "references": label}
            ),
        )

    def _compute(self, zs, icl, ft, references):
        gold = np.asarray(references)
        recovered = (np.asarray(zs) != gold) & (np.asarray(ft) == gold)
        both = recovered & (np.asarray(icl) == gold)
        denominator = int(recovered.sum())
        return {
            "rec2ftp": 100.0 * int(both.sum()) / denominator if denominator else None,
            "numerator": int(both.sum()),
            "denominator": denominator,
        }
