"""Evaluation metrics: perplexity over real tokens and next-token accuracy, through the evaluate modules shipped in
evaluate_modules/ inside this package (loaded by path: the Hub is not reachable everywhere)."""

from pathlib import Path

import evaluate
import numpy as np
import torch


METRICS_DIR = Path(__file__).resolve().parent / "evaluate_modules"  # shipped inside the package


def preprocess_logits_for_metrics(logits: torch.Tensor, labels: torch.Tensor):
    """Per-token NLL and argmax of the shifted predictions, so that evaluation never keeps vocab-sized logits."""
    if isinstance(logits, tuple):
        logits = logits[0]
    logits, targets = logits[:, :-1], labels[:, 1:]
    # the vocabulary stays the last, contiguous dimension (a transpose to (batch, vocab, seq) is far slower on a CPU)
    nll = torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1), ignore_index=-100, reduction="none"
    ).view(targets.shape)
    return logits.argmax(-1), nll


class LanguageModelMetrics:
    """compute_metrics for the Trainer: `perplexity` = exp(mean token NLL over real tokens), `accuracy`."""

    def __init__(self):
        self.perplexity = evaluate.load(str(METRICS_DIR / "perplexity"))
        self.accuracy = evaluate.load(str(METRICS_DIR / "accuracy"))

    def __call__(self, eval_preds) -> dict:
        (predictions, nll), labels = eval_preds.predictions, eval_preds.label_ids
        targets = labels[:, 1:]
        real = targets != -100
        result = self.perplexity.compute(nll=nll[real].astype(np.float64))
        result.update(self.accuracy.compute(predictions=predictions[real], references=targets[real]))
        return {"perplexity": result["perplexity"], "accuracy": result["accuracy"]}
