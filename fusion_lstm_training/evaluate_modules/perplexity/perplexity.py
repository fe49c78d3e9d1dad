"""Perplexity from per-token negative log-likelihoods: exp(mean NLL over the real tokens given).

Shipped with fusion-lstm and loaded by path (`evaluate.load("metrics/perplexity")`), since the Hub is not
reachable everywhere this project runs.
"""

import math

import datasets
import evaluate
import numpy as np


class Perplexity(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description="exp of the mean per-token negative log-likelihood (natural log)",
            citation="",
            inputs_description="nll: one float per predicted token (padding already removed)",
            features=datasets.Features({"nll": datasets.Value("float64")}),
        )

    def _compute(self, nll):
        if len(nll) == 0:
            raise ValueError("perplexity needs at least one token NLL")
        mean = float(np.mean(nll))
        return {"perplexity": math.exp(mean), "mean_nll": mean, "tokens": len(nll)}
