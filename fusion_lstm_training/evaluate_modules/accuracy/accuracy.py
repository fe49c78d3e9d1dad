"""Next-token accuracy: the share of predicted tokens equal to the reference tokens.

Shipped with fusion-lstm and loaded by path (`evaluate.load("metrics/accuracy")`).
"""

import datasets
import evaluate
import numpy as np


class Accuracy(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description="share of predictions equal to the references",
            citation="",
            inputs_description="predictions, references: one token id each (padding already removed)",
            features=datasets.Features({"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}),
        )

    def _compute(self, predictions, references):
        if len(predictions) == 0:
            raise ValueError("accuracy needs at least one prediction")
        return {"accuracy": float(np.mean(np.asarray(predictions) == np.asarray(references)))}
