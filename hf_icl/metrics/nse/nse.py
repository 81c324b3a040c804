"""Normalised squared error (Garg et al.): squared error divided by a per-task scale (e.g. the
input dimension), so that predicting zero scores about 1."""

import datasets
import evaluate
import numpy as np


class NormalisedSquaredError(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description="Mean of (prediction - reference)^2 / scale.",
            citation="Garg, Tsipras, Liang, Valiant (2022), arXiv:2208.01066",
            inputs_description="predictions, references: floats; scale: float (default 1)",
            features=datasets.Features(
                {"predictions": datasets.Value("float64"), "references": datasets.Value("float64")}
            ),
        )

    def _compute(self, predictions, references, scale=1.0):
        err = (np.asarray(predictions) - np.asarray(references)) ** 2 / scale
        return {"nse": float(np.mean(err))}
