"""Exact match: fraction of filtered generations equal to the reference answers."""

import datasets
import evaluate
import numpy as np


class ExactMatch(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description="Fraction of generated answers (after the task's filters) equal to the "
            "reference answers, as strings.",
            citation="",
            inputs_description="predictions, references: strings",
            features=datasets.Features(
                {"predictions": datasets.Value("string"), "references": datasets.Value("string")}
            ),
        )

    def _compute(self, predictions, references):
        return {
            "exact_match": float(
                np.mean(
                    np.asarray(predictions, dtype=object) == np.asarray(references, dtype=object)
                )
            )
        }
